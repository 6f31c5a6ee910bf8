"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


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
