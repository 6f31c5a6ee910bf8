"""The CUDA path (pure torch) gives the same counts as the CPU kernel. Runs wherever a GPU is present."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pipeline.measurement.counts import measure
from pipeline.measurement.instrument import instrument
from pipeline.predictors import make_predictor, uniform
from tests.bruteforce import random_activation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("window", [None, 1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 3, 13, 17), (1, 4, 224, 224), (3, 2, 1, 9)])
def test_measure_on_cuda_equals_the_cpu_kernel(shape, window):
    activation = random_activation(shape, seed=sum(shape))
    predictor = make_predictor("tile", window) if window else None
    cpu, gpu = measure(activation.clone(), predictor), measure(activation.cuda(), predictor)
    assert torch.equal(cpu.counts, gpu.counts.cpu())
    assert torch.allclose(cpu.masses, gpu.masses.cpu(), rtol=1e-9)
    assert torch.equal(cpu.output, gpu.output.cpu())


@pytest.mark.parametrize("kind", ["tile_oracle", "oracle", "random", "none"])
def test_every_kind_on_cuda_equals_the_cpu_path(kind):
    activation = random_activation((3, 4, 15, 13), seed=9)
    predictor = make_predictor(kind, 3, seed=1)
    cpu = measure(activation.clone(), predictor)
    gpu = measure(activation.cuda(), predictor.cuda())
    assert torch.equal(cpu.counts, gpu.counts.cpu())
    assert torch.allclose(cpu.masses, gpu.masses.cpu(), rtol=1e-9)
    assert torch.equal(cpu.output, gpu.output.cpu())


def test_instrumented_resnet18_counts_equal_on_cpu_and_cuda():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for device in ("cpu", "cuda"):
        model.to(device)
        with torch.inference_mode(), instrument(model, uniform("tile", window=3)) as net:
            net(x.to(device))
            results.append([c.row() for c in net.layer_counts()])
    # convolutions differ in the last bits between devices (TF32 too): counts agree closely
    for cpu_row, gpu_row in zip(results[0], results[1], strict=True):
        assert cpu_row["acts"] == gpu_row["acts"]
        assert abs(cpu_row["zeros"] - gpu_row["zeros"]) <= 0.01 * cpu_row["acts"]
