"""The training entry point: seeded (same seed, same weights), logs one FINISHED MLflow run, writes to
outputs/ unless told to replace a shipped checkpoint, takes Hydra keys and the earlier flags alike, and
answers --help without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipeline.fitting.twins import SHIPPED_DIR, register, training_part, validate
from pipeline.networks.data import DataConfig, split_indices
from pipeline.train import FlagError, cli, overrides
from tests.cli import REPO


def test_training_is_seeded_and_logged(tmp_path, monkeypatch, capsys):
    hydra_dir = f"hydra.run.dir={tmp_path}/hydra"
    common = ["--epochs", "1", "--train-limit", "512", "--batch-size", "128", hydra_dir]  # flags and keys mixed
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts", str(tmp_path / "art")]
    assert cli(["--model", "alexnet_fmnist", *common, "--out", str(tmp_path / "a.pt"), *store]) == 0
    shipped = (SHIPPED_DIR / "alexnet_fmnist.pt").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert cli(["model=alexnet_fmnist", *common, "log_run=false"]) == 0  # the default: outputs/checkpoints/
    assert (SHIPPED_DIR / "alexnet_fmnist.pt").read_bytes() == shipped  # the shipped checkpoint is untouched
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "outputs" / "checkpoints" / "alexnet_fmnist.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    (run,) = client.search_runs([client.get_experiment_by_name("fmnist-training").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "0" and "final_test_top1" in run.data.metrics
    assert run.data.params["train_part"] == "train" and run.data.params["calibration_images"] == "10000"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["a.pt"]
    assert "final test top-1" in capsys.readouterr().out


def test_only_replace_shipped_targets_the_shipped_checkpoint(capsys):
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        plain = validate(compose("train", overrides=["model=vgg16_fmnist"]))
        shipped = validate(compose("train", overrides=["model=vgg16_fmnist", "replace_shipped=true"]))
    assert str(plain.destination) == "outputs/checkpoints/vgg16_fmnist.pt" and plain.epochs == 15
    assert shipped.destination == SHIPPED_DIR / "vgg16_fmnist.pt" == REPO / "pipeline/checkpoints/vgg16_fmnist.pt"
    assert cli(["--model", "vgg16_fmnist", "--replace-shipped", "--out", "x.pt"]) == 2
    assert capsys.readouterr().err.strip() == "error: out= and replace_shipped=true name two destinations: keep one"
    assert cli(["model=vgg16"]) == 2  # not a twin
    assert "pipeline.train trains the Fashion-MNIST twins" in capsys.readouterr().err


def test_the_earlier_flags_mean_the_same_keys():
    assert overrides(["--model", "vgg16_fmnist", "--epochs=3", "--no-mlflow", "--data-root", "/d", "seed=2"]) == [
        "model=vgg16_fmnist", "epochs=3", "log_run=false", "data.root=/d", "seed=2"
    ]  # fmt: skip
    with pytest.raises(FlagError, match="--epochs needs a value"):
        overrides(["--epochs"])
    with pytest.raises(FlagError, match="unknown flag --epoch: use a key of conf/train.yaml"):
        overrides(["--epoch", "3"])


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


@pytest.mark.parametrize("split", ["test", "calibration", "train"])
def test_a_twin_trains_on_the_train_part_only(split):
    """12 images, 3 held out for calibration (every 4th: 0, 4, 8): the twin fits the other 9, whatever
    data.split says, and the calibration part a search reads is exactly the 3 it never saw."""
    x, y = torch.arange(12 * 4).reshape(12, 2, 2), torch.arange(12) % 10
    data = DataConfig(name="fashion_mnist", split=split, calibration_images=3, limit=2)
    x_part, y_part = training_part(x, y, data)
    assert x_part[:, 0, 0].div(4).tolist() == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert y_part.tolist() == [1, 2, 3, 5, 6, 7, 9, 0, 1]
    calibration = DataConfig(name="fashion_mnist", split="calibration", calibration_images=3)
    assert split_indices(12, calibration, "x") == [0, 4, 8]
