"""Shared fixtures: the two counting paths (fused C kernel, pure torch) every count is checked on."""

from __future__ import annotations

import pytest

from pipeline import counts as counts_module
from pipeline import kernels

HAVE_KERNEL = kernels.load() is not None


def use_counting_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every count go through the fused C kernel ("kernel"), or the pure-torch path ("torch")."""
    if path == "kernel":
        if not HAVE_KERNEL:
            pytest.skip("no C compiler here: the counting kernel cannot be built")
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
