"""Fast checks of the Fashion-MNIST model factories (no training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.networks.fmnist import (
    FMNIST_INPUT_SIZE,
    FMNIST_MEAN,
    FMNIST_MODELS,
    FMNIST_STD,
    alexnet_fmnist,
    resnet18_fmnist,
    vgg16_fmnist,
)

NAMES = ["alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist"]

# Names of the convs that feed each predictable layer (main branch), in forward order,
# matching torchvision's alexnet / vgg16 / resnet18 (measurement contract, section 1).
EXPECTED_CONVS = {
    "alexnet_fmnist": ["features.0", "features.3", "features.6", "features.8", "features.10"],
    "vgg16_fmnist": [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)],
    "resnet18_fmnist": ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)],
}


def test_registry_and_constants():
    assert FMNIST_MODELS == {
        "alexnet_fmnist": alexnet_fmnist,
        "vgg16_fmnist": vgg16_fmnist,
        "resnet18_fmnist": resnet18_fmnist,
    }
    assert FMNIST_INPUT_SIZE == (1, 28, 28)
    assert FMNIST_MEAN[0] == pytest.approx(0.2860, abs=1e-3)
    assert FMNIST_STD[0] == pytest.approx(0.3530, abs=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    torch.manual_seed(0)
    model = FMNIST_MODELS[name]().eval()
    with torch.no_grad():
        out = model(torch.randn(2, *FMNIST_INPUT_SIZE))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_num_classes(name):
    model = FMNIST_MODELS[name](num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, *FMNIST_INPUT_SIZE)).shape == (1, 7)


@pytest.mark.parametrize("name", NAMES)
def test_small(name):
    model = FMNIST_MODELS[name]()
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 1_250_000  # < 5 MB as float32


@pytest.mark.parametrize("name", NAMES)
def test_conv_names_follow_torchvision(name):
    model = FMNIST_MODELS[name]()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n]
    assert convs == EXPECTED_CONVS[name]
    # every predictable layer's map stays >= 3x3 at 28x28 input
    sizes = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:])))
        for n, m in model.named_modules()
        if n in EXPECTED_CONVS[name]
    ]
    with torch.no_grad():
        model.eval()(torch.randn(1, *FMNIST_INPUT_SIZE))
    for h in hooks:
        h.remove()
    assert all(h >= 3 and w >= 3 for h, w in sizes.values()), sizes


def test_alexnet_vgg_conv_relu_pairs():
    for model in (alexnet_fmnist(), vgg16_fmnist()):
        feats = list(model.features)
        for i, m in enumerate(feats):
            if isinstance(m, nn.Conv2d):
                assert isinstance(feats[i + 1], nn.ReLU)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_resnet_uses_torchvision_blocks():
    from torchvision.models.resnet import BasicBlock

    model = resnet18_fmnist()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    assert [n for n, _ in model.named_children()] == [
        "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc",
    ]  # fmt: skip
    downsampled = [n for n, m in model.named_modules() if n.endswith("downsample")]
    assert downsampled == ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]


def test_resnet_relu_calls():
    """17 ReLU applications: the stem's plus two per BasicBlock (one module called twice)."""
    model = resnet18_fmnist().eval()
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(torch.randn(1, *FMNIST_INPUT_SIZE))
    for h in hooks:
        h.remove()
    assert len(calls) == 17


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = FMNIST_MODELS[name]().eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    assert path.stat().st_size < 5_000_000
    state = torch.load(path, weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    fresh = FMNIST_MODELS[name]().eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, *FMNIST_INPUT_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
