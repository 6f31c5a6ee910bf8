"""The instrumented forward: predicted zeros propagate, counts are exact, the model is untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from bruteforce import KEYS, brute_force
from torch import nn
from torch.nn.modules import module as module_globals

from pipeline.measurement.counts import LayerCounts
from pipeline.measurement.instrument import instrument
from pipeline.predictors import uniform
from pipeline.tracking.keys import COUNT_COLUMNS, INDEPENDENT_COLUMNS, SETTING_COLUMNS, SKIP_COLUMNS
from tests.conftest import use_counting_path


def as_dict(counts: LayerCounts) -> dict[str, int]:
    """A LayerCounts as the brute-force keys."""
    values = {key: getattr(counts, key) for key in ("acts", "zeros", "zero_diag", "pred_hit", "pred_miss")}
    values.update({f"zero_windows_{s}": v for s, v in counts.zero_windows.items()})
    values.update({f"windows_{s}": v for s, v in counts.windows.items()})
    values.update({f"skip_cells_g{g}": v for g, v in counts.skip_cells.items()})
    return values


def one_channel(predicted: int) -> dict[str, int]:
    """skip_cells_g<g> of a one-channel layer: every group is that channel (contract section 10)."""
    return {f"skip_cells_g{g}": predicted for g in (1, 2, 4, 8, 16, 32)}


def without_others(counts: dict[str, int]) -> dict[str, int]:
    return {key: counts[key] for key in KEYS}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# --- (a) hand-worked propagation through a 2-conv net -------------------------------------------


class TwoConv(nn.Module):
    """conv1 (1x1, weight 1: identity) -> relu -> conv2 (3x3 all-ones sum, pad 1) -> relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)  # called twice: two layers
        with torch.no_grad():
            self.conv1.weight.fill_(1.0)
            self.conv2.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))))


X = torch.tensor(
    [
        [0, 5, 0, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 3],
        [0, 0, 4, 0],
    ],
    dtype=torch.float32,
)[None, None]


def test_predicted_zeros_propagate_to_the_next_layer_by_hand(path: str) -> None:
    # Layer 0 = relu(conv1(X)) = X. k = 2 (worked in test_prediction): tiles (0,0), (0,2), (2,2)
    # fire; zero_diag 6, pred_hit 3, pred_miss 3; zeros 12.
    # all-zero 2x2 windows of X at (0,2) and (1,1) -> 2; every 3x3 and 4x4 window holds a nonzero.
    # Predicted layer-0 output P keeps only the 1 at (2,0): the 5, 3 and 4 were predicted zero.
    # Layer 1 = relu(3x3 sum of P) = 1 on rows 1..3, cols 0..1, else 0:
    #     0 0 0 0
    #     1 1 0 0
    #     1 1 0 0
    #     1 1 0 0
    # zeros 10. Tiles: (0,0) diag (0,0)=0,(1,1)=1 no; (0,2) diag 0,0 fires -> (0,3),(1,2) hits;
    # (2,0) diag (2,0)=1 no; (2,2) diag 0,0 fires -> (2,3),(3,2) hits.
    # zero_diag 4, pred_hit 4, pred_miss 0. All-zero 2x2 windows at (0,2), (1,2), (2,2) -> 3; 3x3: 0.
    model = TwoConv().eval()
    with torch.no_grad(), instrument(model, uniform("tile", window=2)) as net:
        output = net(X.clone())
    layer0, layer1 = net.layer_counts()
    windows = {"windows_1": 16, "windows_2": 9, "windows_3": 4, "windows_4": 1, "windows_5": 0}
    assert as_dict(layer0) == {
        "acts": 16, "zeros": 12, "zero_diag": 6, "pred_hit": 3, "pred_miss": 3,
        "zero_windows_1": 12, "zero_windows_2": 2, "zero_windows_3": 0, "zero_windows_4": 0,
        "zero_windows_5": 0, **windows, **one_channel(6),
    }  # fmt: skip
    assert as_dict(layer1) == {
        "acts": 16, "zeros": 10, "zero_diag": 4, "pred_hit": 4, "pred_miss": 0,
        "zero_windows_1": 10, "zero_windows_2": 3, "zero_windows_3": 0, "zero_windows_4": 0,
        "zero_windows_5": 0, **windows, **one_channel(4),
    }  # fmt: skip
    assert (layer0.others, layer1.others) == (16 - 12, 16 - 8)
    assert (layer0.macs_saved, layer1.macs_saved) == (6 * 1, 4 * 9)
    expected_layer1 = torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(output, expected_layer1[None, None])  # its predicted cells were zero already

    # the same, by brute force on the *predicted* layer-0 output
    counts0, predicted0 = brute_force(X, 2)
    assert as_dict(layer0) == without_others(counts0)
    layer1_input = F.relu(F.conv2d(predicted0, model.conv2.weight, padding=1))
    counts1, predicted1 = brute_force(layer1_input, 2)
    assert as_dict(layer1) == without_others(counts1)
    assert torch.equal(output, predicted1)


def test_without_layer0_prediction_layer1_sees_a_different_input(path: str) -> None:
    # scope = layer 1 only: layer 1 now receives the unpredicted X (the 5, 3 and 4 survive), so
    # its counts differ from the hand-worked ones above, and equal brute force on relu(conv2(X)).
    model = TwoConv().eval()
    with torch.no_grad(), instrument(model, uniform("tile", window=2), layer=1) as net:
        output = net(X.clone())
    layer0, layer1 = net.layer_counts()
    assert (layer0.zero_diag, layer0.pred_hit, layer0.pred_miss) == (0, 0, 0)
    assert (layer0.acts, layer0.zeros) == (16, 12)
    counts1, predicted1 = brute_force(F.relu(F.conv2d(X, model.conv2.weight, padding=1)), 2)
    assert as_dict(layer1) == without_others(counts1)
    assert layer1.zeros < 10  # fewer zeros than with layer-0 prediction
    assert torch.equal(output, predicted1)


# --- (b) the original model is left untouched ---------------------------------------------------


def hook_state(model: nn.Module) -> list[int]:
    """How many hooks of every kind are registered on each module, and globally."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    per_module = [len(getattr(m, kind)) for m in model.modules() for kind in kinds]
    global_hooks = [
        len(module_globals._global_forward_hooks),
        len(module_globals._global_forward_pre_hooks),
        len(module_globals._global_backward_hooks),
    ]
    return per_module + global_hooks


def test_instrumenting_leaves_the_model_untouched(resnet18: nn.Module, images: torch.Tensor) -> None:
    model = resnet18
    x = images[:1]
    names_before = [name for name, _ in model.named_modules()]
    params_before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    hooks_before = hook_state(model)
    assert sum(hooks_before) == 0
    with torch.no_grad():
        plain = model(x)
        with instrument(model, uniform("tile", window=3)) as net:
            assert hook_state(model) == hooks_before
            predicted = net(x)
            assert hook_state(model) == hooks_before
        after = model(x)
    assert not torch.equal(predicted, plain)  # the prediction did change the network's output
    assert torch.equal(after, plain)
    assert hook_state(model) == hooks_before
    assert [name for name, _ in model.named_modules()] == names_before
    assert "forward" not in vars(model)
    for name, value in model.state_dict().items():
        assert torch.equal(value, params_before[name]), name
    assert len(net.layer_counts()) == 17  # the counts stay readable after the block
    with pytest.raises(RuntimeError, match="outside"):
        net(x)


def test_instrumented_net_shares_the_parameters(resnet18: nn.Module) -> None:
    with instrument(resnet18, uniform("tile", window=2)) as net:
        shared = {p.data_ptr() for p in net.parameters()}
    assert shared == {p.data_ptr() for p in resnet18.parameters()}


# --- (c) layer scope ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(resnet18: nn.Module, images: torch.Tensor) -> list[LayerCounts]:
    with torch.no_grad(), instrument(resnet18, None) as net:
        net(images)
    return net.layer_counts()


@pytest.mark.parametrize("layer, index", [(0, 0), ("layer2.0.conv2", 6), ("16", 16), (9, 9)])
def test_only_the_scoped_layer_predicts(
    resnet18: nn.Module, images: torch.Tensor, baseline: list[LayerCounts], layer: str | int, index: int
) -> None:
    with torch.no_grad(), instrument(resnet18, uniform("tile", window=2), layer=layer) as net:
        net(images)
    counts = net.layer_counts()
    assert net.scope == {index}
    for got, base in zip(counts, baseline, strict=True):
        assert (got.index, got.name) == (base.index, base.name)
        assert got.acts == base.acts  # every layer is still measured
        if got.index != index:
            assert (got.zero_diag, got.pred_hit, got.pred_miss) == (0, 0, 0), got.name
        else:
            assert got.zero_diag > 0 and got.pred_hit + got.pred_miss > 0
        if got.index <= index:  # layers up to the scoped one see the unpredicted network
            assert (got.zeros, got.zero_windows, got.windows) == (base.zeros, base.zero_windows, base.windows)
        if got.index > index:
            assert got.zeros > 0 and got.windows == base.windows
    if index < len(counts) - 1:  # the prediction changed what later layers receive
        assert any(
            got.zeros != base.zeros for got, base in zip(counts[index + 1 :], baseline[index + 1 :], strict=True)
        )


def test_unknown_layer_fails_listing_valid_ones(resnet18: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1.*layer4\.1\.conv2"):
        with instrument(resnet18, uniform("tile", window=2), layer="layer5.0.conv1"):
            pass
    with pytest.raises(ValueError, match="0..16"):
        with instrument(resnet18, uniform("tile", window=2), layer=17):
            pass


def test_model_without_predictable_layers_fails() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match="no predictable layer"):
        with instrument(model, uniform("tile", window=2)):
            pass


def test_probe_call_mismatch_is_noticed() -> None:
    with torch.no_grad(), instrument(TwoConv().eval(), uniform("tile", window=2)) as net:
        net(X.clone())
        net.graph_module(X.clone())  # probes run without a counted forward
        with pytest.raises(RuntimeError, match="ran 2 times in 1 forward"):
            net.layer_counts()


# --- (d) window 1 is the unmodified network; counts accumulate over batches ---------------------


def test_window_1_output_equals_plain_model(resnet18: nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        plain = resnet18(images)
        with instrument(resnet18, uniform("tile", window=1)) as net:
            instrumented = net(images)
    assert torch.equal(instrumented, plain)
    for counts in net.layer_counts():
        assert (counts.pred_hit, counts.pred_miss) == (0, 0)
        assert counts.zero_diag == counts.zeros > 0  # k = 1: every zero cell is a zero diagonal
        assert counts.others == counts.acts - counts.zeros


def test_counts_accumulate_across_batches(resnet18: nn.Module, images: torch.Tensor) -> None:
    first, second = images[:1], images[1:]
    rows = []
    for batches in ([first], [second], [first, second]):
        with torch.no_grad(), instrument(resnet18, uniform("tile", window=3)) as net:
            for batch in batches:
                net(batch)
        rows.append([counts.row() for counts in net.layer_counts()])
    counted = [*COUNT_COLUMNS, "predictor_macs", *SKIP_COLUMNS]
    for one, two, both in zip(*rows, strict=True):
        for key in counted:
            assert both[key] == one[key] + two[key], (both["name"], key)
        for key in ("mass", "miss_mass", *INDEPENDENT_COLUMNS):  # float sums: equal up to rounding
            assert both[key] == pytest.approx(one[key] + two[key], rel=1e-6), (both["name"], key)
        assert [both[key] for key in SETTING_COLUMNS] == ["tile", 3, "diagonal", 0.0, 1]
    # and the two-image batch gives the same sums as two one-image batches
    with torch.no_grad(), instrument(resnet18, uniform("tile", window=3)) as net:
        net(images)
    for whole, split in zip(net.layer_counts(), rows[2], strict=True):
        assert {key: whole.row()[key] for key in counted} == {key: split[key] for key in counted}


# --- (e) cross-check on resnet18 against brute force, propagated by plain forward hooks ---------


def reference_forward(
    model: nn.Module, x: torch.Tensor, window: int, scope: set[int], table: dict[int, dict] | None = None
) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """Run ``model`` with forward hooks on its ReLU modules that replace each ReLU output by the
    brute-force prediction (layer index = order in which ReLUs run). Hooks are removed after.

    ``table``: per-layer brute_force keyword arguments (window, pattern, kind, threshold) that
    replace the uniform ``window`` at those layers."""
    records: list[dict[str, int]] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        index = len(records)
        settings = (table or {}).get(index, {"window": window})
        counts, predicted = brute_force(output, **settings) if index in scope else brute_force(output, None)
        records.append(counts)
        return predicted

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, records


@pytest.mark.parametrize("scope, path", [("all", "kernel"), ("all", "torch"), (5, "kernel")])
def test_resnet18_counts_equal_brute_force(
    resnet18: nn.Module, images: torch.Tensor, scope: str | int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every ReLU module of resnet18 feeds a predictable layer, so hook order = layer order
    use_counting_path(path, monkeypatch)
    x = images[:1]
    with torch.no_grad(), instrument(resnet18, uniform("tile", window=3), layer=scope) as net:
        logits = net(x)
    counts = net.layer_counts()
    expected_logits, expected = reference_forward(resnet18, x, 3, net.scope)
    assert len(expected) == len(counts) == 17
    for got, want in zip(counts, expected, strict=True):
        assert as_dict(got) == without_others(want), got.name
        assert got.others == want["others"], got.name
    assert sum(c.pred_hit + c.pred_miss for c in counts) > 0
    assert torch.equal(logits, expected_logits)


def test_per_layer_table_equals_brute_force_layer_by_layer(
    resnet18: nn.Module, images: torch.Tensor, path: str
) -> None:
    # a preset-style table: by index and by name, another kind, another pattern and threshold, one layer off
    from pipeline.predictors import factory

    table = {
        "0": {"window": 2, "group": 2},
        "layer1.0.conv2": {"pattern": "checkerboard", "threshold": 0.05},
        "5": {"kind": "none"},
        "7": {"kind": "tile_oracle", "window": 4, "pattern": "cross", "group": 8},
        "layer4.1.conv2": {"kind": "oracle", "group": 3},
    }
    reference = {
        0: {"window": 2, "group": 2},
        2: {"window": 3, "pattern": "checkerboard", "threshold": 0.05},
        5: {"window": None},
        7: {"window": 4, "pattern": "cross", "kind": "tile_oracle", "group": 8},
        16: {"window": 1, "kind": "oracle", "group": 3},
    }
    x = images[:1]
    predictors = factory({"kind": "tile", "layers": table}, window=3)
    with torch.no_grad(), instrument(resnet18, predictors) as net:
        logits = net(x)
    counts = net.layer_counts()
    expected_logits, expected = reference_forward(resnet18, x, 3, net.scope, reference)
    for got, want in zip(counts, expected, strict=True):
        assert as_dict(got) == without_others(want), got.name
        assert got.miss_mass == pytest.approx(want["miss_mass"], rel=1e-6), got.name
    assert torch.equal(logits, expected_logits)
    settings = [c.setting for c in counts]
    assert settings[0] == {"predictor": "tile", "window": 2, "pattern": "diagonal", "threshold": 0.0, "group": 2}
    assert settings[2] == {"predictor": "tile", "window": 3, "pattern": "checkerboard", "threshold": 0.05, "group": 1}
    assert settings[5] == {"predictor": "none", "window": "", "pattern": "", "threshold": "", "group": ""}
    assert settings[7] == {"predictor": "tile_oracle", "window": 4, "pattern": "cross", "threshold": "", "group": 8}
    assert settings[16] == {"predictor": "oracle", "window": "", "pattern": "", "threshold": "", "group": 3}
    assert settings[1] == {"predictor": "tile", "window": 3, "pattern": "diagonal", "threshold": 0.0, "group": 1}
    assert counts[0].skip_cells[2] == counts[0].pred_hit + counts[0].pred_miss > 0  # a decision of 2 survives at 2
    assert counts[7].skip_cells[8] == counts[7].pred_hit


def test_each_layer_owns_its_predictor_module(resnet18: nn.Module) -> None:
    with instrument(resnet18, uniform("random", window=3)) as net:
        predictors = net.predictors()
        assert len({id(p) for p in predictors}) == len(predictors) == 17
        probes = [name for name, _ in net.named_modules() if name.endswith(".predictor")]
        assert len(probes) == 17  # submodules: they follow .to() and state_dict
