"""Layer discovery, MAC accounting and layer scope (contract sections 1 and 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.networks.layers import conv_macs_per_act, discover_layers, model_conv_macs, resolve_scope

ALEXNET = ["features.0", "features.3", "features.6", "features.8", "features.10"]
VGG16 = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
RESNET18 = ["conv1"] + [f"layer{x}.{y}.conv{z}" for x in (1, 2, 3, 4) for y in (0, 1) for z in (1, 2)]


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return torchvision.models.alexnet(weights=None).eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    return torchvision.models.vgg16(weights=None).eval()


# --- torchvision architectures ------------------------------------------------------------------


def test_alexnet_layers_and_macs(alexnet: nn.Module) -> None:
    layers = discover_layers(alexnet)
    assert [spec.name for spec in layers] == ALEXNET
    assert [spec.index for spec in layers] == list(range(5))
    assert all(spec.convs == (spec.name,) for spec in layers)
    # features.0: 3*11*11 = 363; features.3: 64*5*5 = 1600; features.6: 192*3*3 = 1728;
    # features.8: 384*3*3 = 3456; features.10: 256*3*3 = 2304
    assert [spec.macs_per_act for spec in layers] == [363, 1600, 1728, 3456, 2304]
    assert model_conv_macs(alexnet, (3, 224, 224)) == 655_566_528


def test_vgg16_layers_and_macs(vgg16: nn.Module) -> None:
    layers = discover_layers(vgg16)
    assert len(layers) == 13
    assert [spec.name for spec in layers] == VGG16
    # features.0: 3*3*3 = 27; features.2: 64*3*3 = 576; features.28: 512*3*3 = 4608
    assert (layers[0].macs_per_act, layers[1].macs_per_act, layers[-1].macs_per_act) == (27, 576, 4608)
    assert model_conv_macs(vgg16, (3, 224, 224)) == 15_346_630_656


def test_resnet18_layers_and_macs(resnet18: nn.Module) -> None:
    layers = discover_layers(resnet18)
    assert len(layers) == 17
    assert [spec.name for spec in layers] == RESNET18
    by_name = {spec.name: spec for spec in layers}
    for x, channels in ((2, 128), (3, 256), (4, 512)):  # the blocks with a downsample path
        layer = by_name[f"layer{x}.0.conv2"]
        assert layer.convs == (f"layer{x}.0.conv2", f"layer{x}.0.downsample.0")  # main branch first
        # conv2: channels*3*3; downsample: (channels/2)*1*1
        assert layer.macs_per_act == channels * 9 + channels // 2
    assert by_name["layer2.0.conv2"].macs_per_act == 128 * 3 * 3 + 64 * 1 * 1 == 1216
    assert by_name["conv1"].macs_per_act == 3 * 7 * 7
    assert by_name["layer1.0.conv2"].convs == ("layer1.0.conv2",)  # identity shortcut: no conv
    assert by_name["layer2.0.conv1"].macs_per_act == 64 * 3 * 3
    assert sum(1 for spec in layers if len(spec.convs) == 2) == 3
    # the shared BasicBlock.relu gives two distinct graph nodes per block
    assert len({spec.node for spec in layers}) == 17
    assert model_conv_macs(resnet18, (3, 224, 224)) == 1_813_561_344


def test_model_conv_macs_leaves_model_as_it_was(resnet18: nn.Module) -> None:
    resnet18.train()
    try:
        model_conv_macs(resnet18, (3, 32, 32))
        assert resnet18.training
        assert all(not m._forward_hooks for m in resnet18.modules())
    finally:
        resnet18.eval()


# --- tiny edge-case nets ------------------------------------------------------------------------


class RepeatedRelu(nn.Module):
    """One ReLU module called twice (like torchvision's BasicBlock.relu): two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 5, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))))


class FunctionalRelus(nn.Module):
    """Every functional spelling of ReLU, in place or not, directly after a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 1) for _ in range(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.convs[0](x))
        x = torch.relu(self.convs[1](x))
        x = self.convs[2](x).relu()
        x = F.relu(self.convs[3](x), inplace=True)
        x = torch.relu_(self.convs[4](x))
        x = self.convs[5](x).relu_()
        x = nn.functional.relu(input=self.convs[6](x))
        return x


class NotLayers(nn.Module):
    """ReLUs fed by Linear, pooling, another ReLU, a non-add op: none is a predictable layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.pool(self.conv(x)))  # conv -> pool -> relu: not a layer
        x = F.relu(x)  # relu -> relu: not a layer
        x = F.relu(self.conv(x[:, :1]) * 2)  # conv -> mul -> relu: not a layer
        x = x.sum(1, keepdim=True)
        return self.relu(self.fc(x.flatten(1)))  # linear -> relu: not a layer


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a conv-bn shortcut, summed, then ReLU (a downsample block)."""

    def __init__(self, add: str = "iadd") -> None:
        super().__init__()
        self.add = add
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = self.shortcut(x)
        if self.add == "iadd":
            out += identity
        elif self.add == "add":
            out = out + identity
        elif self.add == "torch.add":
            out = torch.add(out, identity)
        elif self.add == "shortcut_first":
            out = identity + out
        return self.relu(out)


def test_relu_module_called_twice_gives_two_layers() -> None:
    layers = discover_layers(RepeatedRelu())
    assert [(spec.index, spec.name, spec.convs) for spec in layers] == [
        (0, "conv1", ("conv1",)),
        (1, "conv2", ("conv2",)),
    ]
    assert [spec.macs_per_act for spec in layers] == [3 * 3 * 3, 4 * 1 * 1]
    assert layers[0].node != layers[1].node


def test_every_relu_spelling_after_conv_is_found() -> None:
    layers = discover_layers(FunctionalRelus())
    assert [spec.name for spec in layers] == [f"convs.{i}" for i in range(7)]
    assert all(spec.macs_per_act == 2 for spec in layers)


def test_relus_not_fed_by_conv_are_not_layers() -> None:
    model = NotLayers()
    model(torch.randn(1, 1, 8, 8))  # the net runs
    assert discover_layers(model) == []


@pytest.mark.parametrize("add", ["iadd", "add", "torch.add"])
def test_relu_through_batchnorm_and_residual_add_with_conv_shortcut(add: str) -> None:
    layers = discover_layers(ResidualBlock(add))
    assert [(spec.name, spec.convs) for spec in layers] == [
        ("conv1", ("conv1",)),
        ("conv2", ("conv2", "shortcut.0")),  # main branch (first add operand) first
    ]
    assert layers[1].macs_per_act == 8 * 3 * 3 + 4 * 1 * 1


def test_main_branch_is_the_first_add_operand() -> None:
    layers = discover_layers(ResidualBlock("shortcut_first"))
    assert layers[1].name == "shortcut.0"
    assert layers[1].convs == ("shortcut.0", "conv2")


def test_grouped_and_rectangular_conv_macs_per_act() -> None:
    assert conv_macs_per_act(nn.Conv2d(8, 16, 3, groups=4)) == (8 // 4) * 3 * 3 == 18
    assert conv_macs_per_act(nn.Conv2d(8, 8, 3, groups=8)) == 9  # depthwise
    assert conv_macs_per_act(nn.Conv2d(6, 4, (3, 5), groups=2)) == 3 * 15
    model = nn.Sequential(nn.Conv2d(8, 16, 3, groups=4), nn.ReLU())
    assert discover_layers(model)[0].macs_per_act == 18


def test_model_conv_macs_counts_every_conv_call() -> None:
    # conv1 3->4, 3x3, pad 1 on 8x8: 4*8*8 = 256 outputs * 3*3*3 = 27      ->  6912
    # conv2 4->2, 3x3, stride 2, pad 1, feeds no ReLU: 2*4*4 = 32 * 4*3*3 = 36 -> 1152
    # grouped conv3 2->4, 1x1, groups 2: 4*4*4 = 64 * 1*1*1                 ->    64
    # the Linear after it is not a conv MAC
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, stride=2, padding=1),
        nn.Conv2d(2, 4, 1, groups=2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    assert model_conv_macs(model, (3, 8, 8)) == 6912 + 1152 + 64
    assert [spec.name for spec in discover_layers(model)] == ["0"]


# --- layer scope --------------------------------------------------------------------------------


def test_resolve_scope(resnet18: nn.Module) -> None:
    layers = discover_layers(resnet18)
    assert resolve_scope(layers, "all") == set(range(17))
    assert resolve_scope(layers, "layer2.0.conv2") == {6}
    assert resolve_scope(layers, "conv1") == {0}
    assert resolve_scope(layers, 3) == {3}
    assert resolve_scope(layers, "16") == {16}
    assert resolve_scope(layers, 0) == {0}


@pytest.mark.parametrize("bad", ["layer9.conv1", "layer2.0.downsample.0", 17, "17", -1, "-1"])
def test_resolve_scope_rejects_unknown_layers_listing_valid_ones(resnet18: nn.Module, bad: str | int) -> None:
    layers = discover_layers(resnet18)
    with pytest.raises(ValueError) as error:
        resolve_scope(layers, bad)
    message = str(error.value)
    assert "conv1" in message and "layer2.0.conv2" in message and "layer4.1.conv2" in message


@pytest.mark.parametrize("leaf", ["gate", "Gate", "tests.nets.Gate"])
def test_model_leaf_modules_keep_an_untraceable_module_whole(leaf: str) -> None:
    """``model.leaf_modules``: a submodule with data-dependent control flow, named or by class, is one
    call in the traced graph; the layer before it is found, the ReLU inside it is not a layer."""
    from pipeline.networks.layers import TraceError, keep_as_leaves, trace
    from pipeline.networks.models import ModelConfig, build_model
    from tests.nets import gated

    with pytest.raises(TraceError, match=r"model\.leaf_modules"):  # the advice names the option
        trace(gated())
    model = build_model(ModelConfig(name="custom", target="tests.nets:gated", leaf_modules=[leaf]))
    graph = trace(model)
    assert [n.target for n in graph.graph.nodes if n.op == "call_module"] == ["conv", "gate", "fc"]
    assert [(spec.index, spec.name) for spec in discover_layers(model, graph)] == [(0, "conv")]
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(graph(x), model(x))  # the leaf runs its real forward, branch included
    with pytest.raises(TraceError, match="'gat' is neither a submodule name nor a module class"):
        keep_as_leaves(gated(), ["gat"])


def test_a_job_identity_without_leaf_modules_is_the_one_recorded_before_the_key_existed(monkeypatch) -> None:
    """``model.leaf_modules`` at its default stays out of the identity: runs recorded before the key
    existed are reused. The hashes are those the release before the key computed for the same configs
    (at its measurement version, 2), with the twins' weights it shipped: the digests of today's twins are
    replaced by those, so the pin survives retraining them."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from pipeline.job import identity
    from pipeline.job.config import register
    from pipeline.job.plan import prepare

    monkeypatch.setattr(identity, "MEASUREMENT_VERSION", 2)
    released = {  # sha256 of the twins that release shipped
        "alexnet_fmnist.pt": "34b5daec01c4dbe34a4262d138544335465b230c18b2ddf317f4b2fde10e597f",
        "resnet18_fmnist.pt": "936731c1e5f5fa2506e5255b9b02bc95e5f27cc9821a878467c1d0e945c4f279",
    }
    digest = identity.file_digest
    monkeypatch.setattr(identity, "file_digest", lambda path: released.get(Path(path).name) or digest(path))
    register()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert prepare(compose("config", overrides=["window=2"])).identity == "8aa4ead1341cff4a1e5f"
        assert prepare(compose("config", overrides=["model=resnet18_fmnist", "predictor=oracle"])).identity == (
            "5e2932b2b64982c6e43b"
        )
        leaves = compose("config", overrides=["model=custom", "model.target=tests.nets:gated", "window=2"])
        leaves.model.leaf_modules = ["gate"]
        plain = prepare(leaves)
        leaves.model.leaf_modules = ["tests.nets.Gate"]
        assert prepare(leaves).identity != plain.identity  # set, it is part of the identity
