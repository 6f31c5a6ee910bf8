"""The shipped Fashion-MNIST checkpoints reach >= 91 % top-1 on all 10,000 test images (window 1)."""

from __future__ import annotations

import pytest
import torch

from pipeline.measurement.evaluate import evaluate
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.data import DataConfig, load_eval_data
from pipeline.networks.models import ModelConfig
from pipeline.predictors import uniform

LAYERS = {"alexnet_fmnist": 5, "vgg16_fmnist": 13, "resnet18_fmnist": 17}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_shipped_checkpoint_accuracy_on_the_full_test_set(name):
    from pipeline.networks.models import build_model

    model = build_model(ModelConfig(name=name, checkpoint=f"{name}.pt", input_size=[1, 28, 28], num_classes=10))
    data = load_eval_data(DataConfig(name="fashion_mnist"))
    assert data.size == 10_000
    net = InstrumentedModel(model, uniform("tile", window=1))
    result = evaluate(net, data, torch.device("cpu"), batch_size=1000, progress=False)
    assert result.images == 10_000
    assert result.top1 >= 0.91, f"{name}: top-1 {result.top1:.4f} < 0.91"
    assert len(result.layers) == LAYERS[name]
    # window 1 predicts nothing: every zero cell is a zero diagonal, nothing is skipped
    assert all(c.pred_hit == c.pred_miss == 0 and c.zero_diag == c.zeros for c in result.layers)
