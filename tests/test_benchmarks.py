"""Every benchmark script answers --help (usage, exit 0) without running its benchmark."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli import REPO

BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))


def test_the_benchmarks_are_found():
    assert {path.name for path in BENCHMARKS} >= {"instrumentation.py", "sweep.py"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_help(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"usage: {script.name}")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing ran: no store, no sweep folder
