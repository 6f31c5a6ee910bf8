"""Recovery (contract section 9): what it changes, on which images, and what a recovered run records."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.fitting.recover import (
    BatchNormRecoverConfig,
    FinetuneRecoverConfig,
    RecoverError,
    batchnorms,
    check,
    recover,
)
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks import data as data_module
from pipeline.networks.data import DataConfig
from pipeline.networks.models import ModelConfig, build_model
from pipeline.predictors import uniform
from tests.cli import client, run_pipeline, runs

CPU = torch.device("cpu")


def twin(name: str):
    return build_model(ModelConfig(name=name, checkpoint=f"{name}.pt", input_size=[1, 28, 28], num_classes=10))


@pytest.fixture
def train_split_only(tmp_path, monkeypatch):
    """A data root holding only Fashion-MNIST's training files, and no system copy to fall back on:
    anything that reads an evaluation image fails (recovery reads the training split's train part)."""
    root = tmp_path / "train-only"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.symlink(data_module.DEBIAN_FASHION_MNIST / name, root / name)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    data_module._CACHE.clear()
    yield DataConfig(name="fashion_mnist", root=str(root), download=False)
    data_module._CACHE.clear()


def bn_statistics(window: int, data: DataConfig) -> dict[str, torch.Tensor]:
    model = twin("resnet18_fmnist")
    net = InstrumentedModel(model, uniform("tile", window=window))
    recover(net, model, BatchNormRecoverConfig(images=300, batch_size=100), data, 0, CPU)
    return {k: v for k, v in model.state_dict().items() if k.endswith("running_mean")}


def test_bn_recovery_sees_the_predicted_activations(train_split_only):
    # the prediction is active during the pass: the statistics differ from those without prediction
    predicted, plain = bn_statistics(3, train_split_only), bn_statistics(1, train_split_only)
    first = "bn1.running_mean"  # before any prediction: the same
    assert torch.equal(predicted[first], plain[first])
    assert not torch.equal(predicted["layer1.0.bn2.running_mean"], plain["layer1.0.bn2.running_mean"])


def test_bn_recovery_reestimates_batchnorm_statistics_only_on_training_images(train_split_only):
    model = twin("resnet18_fmnist")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = [m.momentum for m in batchnorms(model)]
    net = InstrumentedModel(model, uniform("tile", window=3))
    logged = recover(net, model, BatchNormRecoverConfig(images=300, batch_size=100), train_split_only, 0, CPU)
    assert logged["recover/images"] == 300
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    statistics = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert changed and changed <= statistics  # only BatchNorm statistics move; no weight does
    assert [m.momentum for m in batchnorms(model)] == momenta and not model.training
    assert net.forwards == 0 and all(p.total is None for p in net.probes)  # the recovery pass is not counted
    with pytest.raises(data_module.DataError):  # and the evaluation images were indeed out of reach
        data_module.load_eval_data(train_split_only)


def test_bn_recovery_of_a_model_without_batchnorm_is_refused():
    with pytest.raises(
        RecoverError, match="no BatchNorm layer: recover=bn would change nothing; use recover=finetune"
    ):
        check(BatchNormRecoverConfig(), twin("alexnet_fmnist"), "alexnet_fmnist")


def test_finetune_changes_the_weights_with_the_prediction_active_and_is_seeded(train_split_only):
    results = []
    for _ in range(2):
        model = twin("alexnet_fmnist")
        before = model.features[0].weight.clone()
        net = InstrumentedModel(model, uniform("tile", window=3))
        logged = recover(net, model, FinetuneRecoverConfig(images=256, steps=4, batch_size=64, lr=0.01),
                         train_split_only, 0, CPU)  # fmt: skip
        assert logged["recover/steps"] == 4 and logged["recover/images"] == 256
        assert not torch.equal(before, model.features[0].weight) and not model.training
        results.append(model.features[0].weight.clone())
    assert torch.equal(results[0], results[1])


def test_a_recovered_run_records_what_was_done(tmp_path):
    result = run_pipeline(
        tmp_path, "model=resnet18_fmnist", "predictor=none", "recover=bn", "recover.images=200", "data.limit=100"
    )
    assert result.returncode == 0, result.stderr
    assert "recover=bn" in result.stdout
    (run,) = runs(tmp_path)
    assert run.data.params["recover"] == "bn" and run.data.params["recover.images"] == "200"
    assert run.data.metrics["recover/images"] == 200
    assert run.data.tags["baseline"] == "false"  # a recovered network is not the baseline
    path = client(tmp_path).download_artifacts(run.info.run_id, "recovered_model.pt", str(tmp_path / "dl"))
    state = torch.load(path, weights_only=True)
    assert set(state) == set(twin("resnet18_fmnist").state_dict())
