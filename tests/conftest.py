"""Shared fixtures: the two counting paths (fused C kernel, pure torch) every count is checked on,
a read-only folder, an empty store."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.measurement import counts as counts_module
from pipeline.measurement import kernels

HAVE_KERNEL = kernels.load() is not None


def use_counting_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every count go through the fused C kernel ("kernel"), or the pure-torch path ("torch")."""
    if path == "kernel":
        if not HAVE_KERNEL:
            pytest.skip("no C++ compiler or ninja here: the counting kernel cannot be built")
        # the kernel must really run: the torch path may not be reached for float32 CPU tensors
        monkeypatch.setattr(counts_module, "measure_torch", _must_not_run)
    else:
        monkeypatch.setattr(kernels, "load", lambda: None)


@pytest.fixture(params=["kernel", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the fused C kernel, then through the pure-torch path (no compiler)."""
    use_counting_path(request.param, monkeypatch)
    return request.param


def _must_not_run(*_args: object) -> None:
    raise AssertionError("measure() fell back to the torch path for a contiguous float32 CPU tensor")


@pytest.fixture()
def read_only(tmp_path):
    """A folder nobody can write into, root included (chattr +i); skipped where that is impossible."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An SQLite file holding MLflow's schema and nothing else: copying it into a test's folder is a
    new store without the seconds MLflow spends creating its tables."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def store_in(empty_store):
    """``store_in(folder)``: a new store at folder/mlflow.db (where tests/cli.py's store_args point)."""

    def make(folder: Path) -> Path:
        shutil.copy(empty_store, folder / "mlflow.db")
        return folder

    return make
