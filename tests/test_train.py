"""The training entry point: seeded (same seed, same weights), logs one FINISHED MLflow run, writes to
outputs/ unless told to replace a shipped checkpoint, and answers --help without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.train import SHIPPED_DIR, main, parse_args
from tests.cli import REPO


def test_training_is_seeded_and_logged(tmp_path, monkeypatch):
    common = ["--model", "alexnet_fmnist", "--epochs", "1", "--train-limit", "512", "--batch-size", "128"]
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts", str(tmp_path / "art")]
    main([*common, "--out", str(tmp_path / "a.pt"), *store])
    shipped = (SHIPPED_DIR / "alexnet_fmnist.pt").read_bytes()
    monkeypatch.chdir(tmp_path)
    main([*common, "--no-mlflow"])  # the default: outputs/checkpoints/ of the working directory
    assert (SHIPPED_DIR / "alexnet_fmnist.pt").read_bytes() == shipped  # the shipped checkpoint is untouched
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "outputs" / "checkpoints" / "alexnet_fmnist.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    (run,) = client.search_runs([client.get_experiment_by_name("fmnist-training").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "0" and "final_test_top1" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["a.pt"]


def test_only_replace_shipped_targets_the_shipped_checkpoint(capsys):
    assert parse_args(["--model", "vgg16_fmnist"]).out == Path("outputs/checkpoints/vgg16_fmnist.pt")
    assert parse_args(["--model", "vgg16_fmnist", "--replace-shipped"]).out == SHIPPED_DIR / "vgg16_fmnist.pt"
    assert SHIPPED_DIR == REPO / "pipeline" / "checkpoints"
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--model", "vgg16_fmnist", "--replace-shipped", "--out", "x.pt"])
    assert stopped.value.code == 2
    assert "error: argument --out: not allowed with argument --replace-shipped" in capsys.readouterr().err


def test_help_imports_neither_torch_nor_mlflow():
    """--help answers at once: the heavy modules are imported only after the arguments are parsed."""
    probe = (
        "import runpy, sys\n"
        "try:\n    runpy.run_module('pipeline.train', run_name='__main__')\n"
        "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
        "print('heavy:', [m for m in ('torch', 'mlflow', 'numpy') if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--replace-shipped" in done.stdout and "usage: python -m pipeline.train" in done.stdout
    assert done.stdout.strip().endswith("heavy: []")
