"""Per-layer counts (contract section 4) and model-level rates (section 5): by hand and brute force."""

from __future__ import annotations

import math
import os

import pytest
import torch
from bruteforce import brute_force, random_activation

from pipeline.measurement import kernels
from pipeline.measurement.counts import (
    CSV_COLUMNS,
    MASS_KEYS,
    MEASURED_KEYS,
    WINDOW_SIZES,
    LayerCounts,
    independent_windows,
    measure,
    measure_torch,
    rate_metrics,
    skip_cell_counts,
    window_totals,
    zero_window_counts,
)
from pipeline.predictors import make_predictor
from pipeline.tracking.keys import SETTING_COLUMNS
from tests.conftest import HAVE_KERNEL

# 5x5 map (same as in test_prediction): 6 nonzero cells, 19 zeros.
MAP_5x5 = torch.tensor(
    [
        [0, 7, 0, 0, 0],
        [2, 0, 0, 0, 0],
        [0, 0, 0, 9, 0],
        [0, 0, 0, 1, 0],
        [5, 0, 6, 0, 0],
    ],
    dtype=torch.float32,
)[None, None]


COUNT_KEYS = MEASURED_KEYS[:-1]  # all but predictor_macs (0 for the rules)


def as_dict(counts: torch.Tensor) -> dict[str, int]:
    assert counts.dtype == torch.int64
    assert counts.shape == (len(MEASURED_KEYS),)
    values = dict(zip(MEASURED_KEYS, counts.tolist(), strict=True))
    assert values.pop("predictor_macs") == 0
    return values


def run(activation: torch.Tensor, predictor) -> tuple[torch.Tensor, torch.Tensor]:
    result = measure(activation, predictor)
    return result.output, result.counts


def test_measure_5x5_window_3_by_hand(path: str) -> None:
    # prediction (worked in test_prediction): zero_diag 7, pred_hit 9, pred_miss 5
    # all-zero 2x2 windows, by top-left corner: (0,2) (0,3) (1,1) (2,0) (2,1) -> 5
    # every 3x3 window holds one of 7 (row 0), 2 (1,0), 9 (2,3), 5 (4,0), 6 (4,2) -> 0; so 4x4, 5x5: 0
    # windows: 5*5=25, 4*4=16, 3*3=9, 2*2=4, 1*1=1
    output, counts = run(MAP_5x5.clone(), make_predictor("tile", 3))
    assert as_dict(counts) == {
        "acts": 25,
        "zeros": 19,
        "zero_diag": 7,
        "pred_hit": 9,
        "pred_miss": 5,
        "zero_windows_1": 19,
        "zero_windows_2": 5,
        "zero_windows_3": 0,
        "zero_windows_4": 0,
        "zero_windows_5": 0,
        "windows_1": 25,
        "windows_2": 16,
        "windows_3": 9,
        "windows_4": 4,
        "windows_5": 1,
        # one channel: every group is that channel, so each g skips the 14 predicted cells
        **{f"skip_cells_g{g}": 14 for g in (1, 2, 4, 8, 16, 32)},
    }
    assert output.count_nonzero() == 1 and output[0, 0, 3, 3] == 1  # only tile (3,3) kept its values
    layer = LayerCounts(0, "conv", ("conv",), macs_per_act=10)
    layer.add(counts.tolist())
    assert layer.others == 25 - 7 - 9 - 5 == 4  # the 2x2 corner tile that did not fire
    assert layer.macs_saved == (9 + 5) * 10


def test_measure_counts_before_prediction_and_without_predictor(path: str) -> None:
    # counts are taken before the layer's own prediction: zeros and windows do not change with k
    baseline_output, baseline = run(MAP_5x5.clone(), None)
    assert torch.equal(baseline_output, MAP_5x5)
    base = as_dict(baseline)
    assert (base["zero_diag"], base["pred_hit"], base["pred_miss"]) == (0, 0, 0)
    for k in (2, 3, 4):
        _, counts = run(MAP_5x5.clone(), make_predictor("tile", k))
        predicted = as_dict(counts)
        for key in COUNT_KEYS:
            if key not in ("zero_diag", "pred_hit", "pred_miss") and not key.startswith("skip_cells"):
                assert predicted[key] == base[key], key


def test_zero_window_counts_by_hand() -> None:
    # MAP_5x5: see test_measure_5x5_window_3_by_hand
    assert zero_window_counts(MAP_5x5 == 0).tolist() == [19, 5, 0, 0, 0]
    # all-zero 3x4 map, two channels: every window is all zero
    zero = torch.ones(1, 2, 3, 4, dtype=torch.bool)
    assert zero_window_counts(zero).tolist() == [2 * 12, 2 * 6, 2 * 2, 0, 0]
    # a subset of sizes, in the order given
    assert zero_window_counts(torch.ones(1, 1, 5, 5, dtype=torch.bool), (2, 4)).tolist() == [16, 4]
    # one nonzero in the middle of a 5x5 zero map kills every window of size >= 3
    zero = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    zero[0, 0, 2, 2] = False
    # s=2: 16 windows, 4 contain (2,2) -> 12; s=3: all 9 contain it -> 0
    assert zero_window_counts(zero).tolist() == [24, 12, 0, 0, 0]


def test_window_totals_formula() -> None:
    # N*C*(H-s+1)*(W-s+1), 0 when H or W < s
    assert window_totals(torch.Size((2, 3, 7, 4))) == [168, 108, 60, 24, 0]
    assert window_totals(torch.Size((1, 1, 1, 9))) == [9, 0, 0, 0, 0]
    assert window_totals(torch.Size((1, 1, 5, 5))) == [25, 16, 9, 4, 1]


SHAPES = [
    (1, 1, 4, 4),
    (1, 1, 5, 5),
    (2, 3, 7, 11),
    (1, 1, 1, 9),
    (1, 2, 9, 1),
    (2, 2, 2, 3),
    (1, 1, 1, 1),
    (3, 2, 6, 6),
    (1, 2, 13, 8),
    (2, 1, 3, 17),
    (1, 1, 4, 5),
]


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


PREDICTORS = [(None, "diagonal")] + [(k, p) for k in range(1, 7) for p in ("diagonal", "anti_diagonal")]


@pytest.mark.parametrize("window, pattern", PREDICTORS, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_measure_equals_brute_force(
    shape: tuple[int, int, int, int], window: int | None, pattern: str, path: str
) -> None:
    activation = random_activation(shape, seed=1000 + 10 * (window or 0) + sum(shape))
    expected, expected_output = brute_force(activation, window, pattern)
    predictor = None if window is None else make_predictor("tile", window, pattern=pattern)
    output, counts = run(activation.clone(), predictor)
    got = as_dict(counts)
    if window == 1:
        assert got["zero_diag"] == got["zeros"]  # k = 1: every zero cell is a zero diagonal
    assert got == {key: expected[key] for key in COUNT_KEYS}
    assert torch.equal(output, expected_output)

    n, c, h, w = shape
    for s in WINDOW_SIZES:  # windows_s = N*C*(H-s+1)*(W-s+1), or 0 when H or W < s
        assert got[f"windows_{s}"] == (n * c * (h - s + 1) * (w - s + 1) if h >= s and w >= s else 0)
    layer = LayerCounts(0, "conv", ("conv",), macs_per_act=7)
    layer.add(counts.tolist())
    # others = acts - zero_diag - pred_hit - pred_miss = cells neither diagonal nor predicted
    assert layer.others == expected["others"]
    assert layer.others == layer.acts - layer.zero_diag - layer.pred_hit - layer.pred_miss
    assert layer.macs_saved == 7 * (expected["pred_hit"] + expected["pred_miss"])


@pytest.mark.parametrize("window", [None, 1, 3])
def test_measure_on_other_layouts_and_dtypes(window: int | None) -> None:
    # non-contiguous, float64, float16 and autograd tensors go through the torch path; same counts
    activation = random_activation((2, 3, 7, 9), seed=5)
    expected, expected_output = brute_force(activation, window)
    predictor = None if window is None else make_predictor("tile", window)
    variants = {
        "channels_last": activation.contiguous(memory_format=torch.channels_last),
        "transposed": activation.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": torch.cat([activation, activation], dim=3)[..., :9],
        "float64": activation.double(),
        "float16": activation.half(),  # randn values survive the cast; zeros stay zeros
        "offset": torch.cat([activation, activation])[2:],  # contiguous view with a storage offset
    }
    for name, variant in variants.items():
        output, counts = run(variant, predictor)
        assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}, name
        assert torch.equal(output, expected_output.to(variant.dtype)), name
    leaf = activation.clone().requires_grad_()  # a tensor autograd tracks: the torch path
    with torch.no_grad():
        output, counts = run(leaf, predictor)
    assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}
    assert torch.equal(output, expected_output)


@pytest.mark.skipif(not HAVE_KERNEL, reason="no C++ compiler or ninja: the counting kernel cannot be built")
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_kernel_counts_do_not_depend_on_threads(threads: int) -> None:
    # 2 x 3 = 6 planes split over 1..7 threads (more threads than planes too); and 60 planes of
    # 40 x 40 (10 chunks of 6 planes): the float sums are added in chunk order, bit for bit the same
    activation = random_activation((2, 3, 11, 10), seed=11)
    expected, expected_output = brute_force(activation, 3)
    many = random_activation((6, 10, 40, 40), seed=12)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = measure(many.clone(), make_predictor("tile", 3)).masses
        torch.set_num_threads(threads)
        output, counts = run(activation.clone(), make_predictor("tile", 3))
        masses = measure(many.clone(), make_predictor("tile", 3)).masses
    finally:
        torch.set_num_threads(before)
    assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}
    assert torch.equal(output, expected_output)
    assert masses.tolist() == single.tolist()


@pytest.mark.parametrize("window", [2, 3, 5])
def test_measure_on_a_wide_map(window: int, path: str) -> None:
    # rows much wider than the small cases above (the kernel's row buffers and tile loops)
    activation = random_activation((1, 2, 33, 70), seed=window, blocks=12)
    expected, expected_output = brute_force(activation, window)
    output, counts = run(activation.clone(), make_predictor("tile", window))
    assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}
    assert torch.equal(output, expected_output)


def test_measure_with_a_large_window(path: str) -> None:
    # k = 65: one tile covers the whole 66 x 70 map but the last row/column
    activation = random_activation((1, 1, 66, 70), seed=4, blocks=0)
    activation[0, 0].diagonal().zero_()  # every diagonal cell of tile (0, 0) is zero: it fires
    expected, expected_output = brute_force(activation, 65)
    assert expected["zero_diag"] >= 65 and expected["pred_miss"] > 0
    output, counts = run(activation.clone(), make_predictor("tile", 65))
    assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}
    assert torch.equal(output, expected_output)


def test_measure_torch_is_the_reference() -> None:
    # the pure-torch path alone, on one awkward shape, against brute force
    activation = random_activation((2, 2, 5, 7), seed=2)
    for window in (None, 1, 2, 3):
        expected, expected_output = brute_force(activation, window)
        result = measure_torch(activation.clone(), None if window is None else make_predictor("tile", window))
        output, counts = result.output, result.counts
        assert as_dict(counts) == {key: expected[key] for key in COUNT_KEYS}
        assert torch.equal(output, expected_output)


def test_layer_counts_accumulate_and_row(path: str) -> None:
    layer = LayerCounts(3, "layer2.0.conv2", ("layer2.0.conv2", "layer2.0.downsample.0"), 1216)
    first = measure(MAP_5x5.clone(), make_predictor("tile", 3))
    second = measure(MAP_5x5.clone(), make_predictor("tile", 2))
    layer.add(first.counts.tolist(), first.masses.tolist())
    layer.add(second.counts.tolist(), second.masses.tolist())
    summed = [a + b for a, b in zip(first.counts.tolist(), second.counts.tolist(), strict=True)]
    assert [getattr(layer, key) for key in MEASURED_KEYS[:5]] == summed[:5]
    assert [layer.zero_windows[s] for s in WINDOW_SIZES] == summed[5:10]
    assert [layer.windows[s] for s in WINDOW_SIZES] == summed[10:15]
    assert [layer.skip_cells[g] for g in (1, 2, 4, 8, 16, 32)] == summed[15:21]
    assert layer.predictor_macs == summed[21] == 0
    assert layer.mass == 2 * (7 + 2 + 9 + 1 + 5 + 6)
    # miss mass at k = 3: 7, 2, 9, 5 and 6 are predicted (test_prediction works it out by hand)
    assert first.masses[1] == 7 + 2 + 9 + 5 + 6
    assert layer.miss_mass == float(first.masses[1] + second.masses[1])
    row = layer.row()
    assert tuple(row) == CSV_COLUMNS
    assert row["convs"] == "layer2.0.conv2;layer2.0.downsample.0"
    assert row["others"] == layer.acts - layer.zero_diag - layer.pred_hit - layer.pred_miss
    assert row["macs_saved"] == (layer.pred_hit + layer.pred_miss) * 1216
    assert row["predictor"] == "none" and row["window"] == row["pattern"] == row["threshold"] == ""
    floats = ("mass", "miss_mass", *(f"zero_windows_indep_{s}" for s in (2, 3, 4, 5)))
    integers = [key for key in CSV_COLUMNS if key not in ("name", "convs", *SETTING_COLUMNS, *floats)]
    assert all(isinstance(row[key], int) for key in integers)
    assert all(isinstance(row[key], float) for key in floats)


def test_rate_metrics_by_hand() -> None:
    first = LayerCounts(0, "a", ("a",), macs_per_act=9, acts=100, zeros=60, zero_diag=10, pred_hit=20,
                        pred_miss=5)  # fmt: skip
    first.zero_windows = {1: 60, 2: 30, 3: 10, 4: 0, 5: 0}
    first.windows = {1: 100, 2: 81, 3: 64, 4: 49, 5: 36}
    second = LayerCounts(1, "b", ("b",), macs_per_act=100, acts=50, zeros=20, zero_diag=4, pred_hit=6,
                         pred_miss=2)  # fmt: skip
    second.zero_windows = {1: 20, 2: 5, 3: 1, 4: 0, 5: 0}
    second.windows = {1: 50, 2: 36, 3: 25, 4: 16, 5: 0}
    metrics = rate_metrics([first, second], conv_macs=10_000)
    # sums: acts 150, zeros 80; others (100-35) + (50-12) = 103; macs_saved 25*9 + 8*100 = 1025
    assert metrics["sparsity"] == pytest.approx(80 / 150)
    assert metrics["zero_window/1"] == pytest.approx(80 / 150)
    assert metrics["zero_window/2"] == pytest.approx(35 / 117)
    assert metrics["zero_window/3"] == pytest.approx(11 / 89)
    assert metrics["zero_window/5"] == 0.0
    assert metrics["frac/pred_hit"] == pytest.approx(26 / 150)
    assert metrics["frac/pred_miss"] == pytest.approx(7 / 150)
    assert metrics["frac/zero_diag"] == pytest.approx(14 / 150)
    assert metrics["frac/others"] == pytest.approx(103 / 150)
    assert metrics["mac_saving"] == pytest.approx(1025 / 10_000)
    fracs = ("frac/pred_hit", "frac/pred_miss", "frac/zero_diag", "frac/others")
    assert sum(metrics[key] for key in fracs) == pytest.approx(1.0)
    # empty denominators give 0.0, not a ZeroDivisionError
    assert rate_metrics([], conv_macs=0)["sparsity"] == 0.0


def test_miss_mass_predictor_cost_and_net_saving_by_hand() -> None:
    # contract sections 7-8: frac/miss_mass = sum miss_mass / sum mass; predictor_mac_cost =
    # sum predictor_macs / conv MACs; net_mac_saving = mac_saving - predictor_mac_cost
    first = LayerCounts(0, "a", ("a",), macs_per_act=9, acts=100, pred_hit=20, pred_miss=5, predictor_macs=300,
                        mass=40.0, miss_mass=2.0)  # fmt: skip
    second = LayerCounts(1, "b", ("b",), macs_per_act=100, acts=50, pred_hit=6, pred_miss=2, predictor_macs=0,
                         mass=10.0, miss_mass=3.0)  # fmt: skip
    metrics = rate_metrics([first, second], conv_macs=10_000)
    assert metrics["frac/miss_mass"] == pytest.approx(5.0 / 50.0)
    assert metrics["mac_saving"] == pytest.approx((25 * 9 + 8 * 100) / 10_000)
    assert metrics["predictor_mac_cost"] == pytest.approx(300 / 10_000)
    assert metrics["net_mac_saving"] == pytest.approx((1025 - 300) / 10_000)
    one = rate_metrics([first], conv_macs=10_000)  # a layer alone keeps the model's denominator
    assert one["net_mac_saving"] == pytest.approx((225 - 300) / 10_000)  # a predictor can cost more than it saves


def test_a_window_past_the_map_pads_nothing() -> None:
    # the torch reference pools tiles in place: a 2000-wide window on 7 x 7 maps costs the map, not
    # 2000 x 2000 cells per map (2,048 maps here: 8 GB if tiles were padded); and it measures what one
    # tile of the whole map measures (k = 7, the diagonal)
    activation = random_activation((32, 64, 7, 7), seed=6)
    big, exact = (
        measure_torch(activation.clone(), make_predictor("tile", 2000)),
        measure_torch(activation.clone(), make_predictor("tile", 7)),
    )
    assert big.counts.tolist() == exact.counts.tolist()
    assert torch.equal(big.output, exact.output)


@pytest.mark.skipif(kernels.load() is None, reason="no C++ compiler or ninja: the counting kernel cannot be built")
def test_the_kernel_is_a_torch_operator_with_a_fake_kernel():
    """``cnp::measure`` passes torch's operator checks (schema and the in-place mutation it declares, the
    fake kernel, AOT dispatch) in every mode, and its fake kernel gives the real one's shapes and dtypes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    activation = torch.relu(torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0)))
    pattern = torch.eye(3, dtype=torch.uint8)
    tiles = torch.rand(2, 3, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    cells = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(2)) < 0.5
    for mode, window, given in [(0, 1, None), (1, 3, None), (2, 3, None), (3, 1, None), (4, 3, tiles), (5, 3, cells)]:
        given = None if given is None else given.to(torch.uint8)
        op = kernels.load().default
        for predicted in (None, torch.zeros(activation.shape, dtype=torch.uint8)):
            arguments = (activation.clone(), pattern, given, predicted, window, mode, 0.0, True, True, 2)
            torch.library.opcheck(op, arguments)
        counts, masses = op(activation.clone(), pattern, given, None, window, mode, 0.0, True, True, 2)
        with FakeTensorMode() as fake:
            inputs = [None if t is None else fake.from_tensor(t) for t in (activation, pattern, given, None)]
            shapes = op(*inputs, window, mode, 0.0, True, True, 2)
        assert [(t.shape, t.dtype) for t in shapes] == [(counts.shape, counts.dtype), (masses.shape, masses.dtype)]
        assert counts[0] == int((activation == 0).sum()), mode  # the zeros, whatever the mode


@pytest.mark.skipif(kernels.load() is None, reason="no C++ compiler or ninja: the counting kernel cannot be built")
def test_given_cells_predicts_only_non_pattern_cells_by_hand():
    """A 1 x 1 x 2 x 2 map, window 2, diagonal pattern (cells (0, 0) and (1, 1)); every cell given. Only the
    two off-diagonal cells are predicted: (0, 1) = 0 a hit, (1, 0) = 3 a miss of mass 3; the pattern cells
    are computed whatever `given` says, and the zero one, (0, 0), is zero_diag."""
    activation = torch.tensor([[[[0.0, 0.0], [3.0, 5.0]]]])
    given = torch.ones(1, 1, 2, 2, dtype=torch.uint8)
    predicted = torch.full((1, 1, 2, 2), 7, dtype=torch.uint8)  # overwritten: 1 where predicted, else 0
    counts, masses = kernels.measure_op(
        activation, torch.eye(2, dtype=torch.uint8), given, 2, 5, 0.0, True, predicted
    )
    assert counts.tolist()[:4] == [2, 1, 1, 1]  # zeros, zero_diag, pred_hit, pred_miss
    assert predicted.tolist() == [[[[0, 1], [1, 0]]]]
    assert masses.tolist() == [8.0, 3.0, 0.0, 0.0, 0.0, 0.0]  # 2 zeros: no 2 x 2 window is all zero by chance
    assert counts.tolist()[9:] == [2] * 6  # one channel: every g skips both predicted cells
    assert activation.flatten().tolist() == [0.0, 0.0, 0.0, 5.0]  # the pattern cell 5 kept


def test_the_kernel_is_built_where_the_set_up_ran():
    """CI (CI=true) has the set-up's g++ and ninja: there the kernel must build, or every kernel test would
    skip and the suite would count on the torch path alone."""
    if os.environ.get("CI", "").lower() in ("", "0", "false"):
        pytest.skip("outside CI a machine without a C++ compiler falls back to the torch path")
    assert kernels.load() is not None, "the counting kernel did not build: see the warning above"


def test_skip_cells_at_each_group_size_by_hand() -> None:
    """Contract section 10 on 5 channels of one image, one row of 3 cells, predicted (1) or not (0):
        channel 0: 1 1 0      channel 1: 1 0 0      channel 2: 1 1 1      channel 3: 1 1 0      channel 4: 0 1 1
    g = 1: every predicted cell, 2 + 1 + 3 + 2 + 2 = 10.
    g = 2: groups {0, 1}, {2, 3}, {4}: column 0 in both of {0, 1} (2 cells); columns 0, 1 of {2, 3} (4);
           columns 1, 2 of the one-channel group {4} (2): 8.
    g = 4: groups {0..3}, {4}: column 0 of {0..3} (4 cells); {4} as before (2): 6.
    g >= 8: one group of all 5: no column is predicted in every channel (channel 4 computes column 0): 0."""
    rows = [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 1, 1]]
    predicted = torch.tensor(rows, dtype=torch.bool)[None, :, None, :]  # (1, 5, 1, 3)
    assert skip_cell_counts(predicted).tolist() == [10, 8, 6, 0, 0, 0]
    # two images add; a layer with no prediction skips nothing
    assert skip_cell_counts(predicted.repeat(2, 1, 1, 1)).tolist() == [20, 16, 12, 0, 0, 0]
    assert skip_cell_counts(torch.zeros(2, 5, 3, 3, dtype=torch.bool)).tolist() == [0] * 6
    # everything predicted: every g keeps every cell (the last, smaller groups count their own channels)
    assert skip_cell_counts(torch.ones(1, 37, 2, 2, dtype=torch.bool)).tolist() == [37 * 4] * 6


def test_skip_cells_equal_brute_force_on_random_masks_and_channel_counts() -> None:
    generator = torch.Generator().manual_seed(3)
    for channels in (1, 3, 8, 17, 33, 64):
        predicted = torch.rand(2, channels, 3, 4, generator=generator) < 0.85
        expected = []
        for g in (1, 2, 4, 8, 16, 32):
            total = 0
            for first in range(0, channels, g):
                group = predicted[:, first : first + g]
                total += int(group.all(dim=1).sum()) * group.shape[1]
            expected.append(total)
        assert skip_cell_counts(predicted).tolist() == expected, channels


def test_independent_windows_by_hand() -> None:
    """A 3 x 3 map with z = 5 zeros: a 2 x 2 window is all zero with probability 5*4*3*2 / (9*8*7*6) = 120 / 3024
    and the map has 4 such windows: 480 / 3024; a 3 x 3 window needs 9 zeros (z < 9): 0; 4 x 4 does not fit.
    A map with 9 zeros: every window all zero for sure (4 and 1)."""
    expected = 4 * (5 * 4 * 3 * 2) / (9 * 8 * 7 * 6)
    assert independent_windows(torch.tensor([5]), 3, 3).tolist() == pytest.approx([expected, 0.0, 0.0, 0.0])
    assert independent_windows(torch.tensor([[5, 9]]), 3, 3).tolist() == pytest.approx([expected + 4, 1.0, 0, 0])
    assert independent_windows(torch.tensor([3, 0]), 3, 3).tolist() == [0.0, 0.0, 0.0, 0.0]  # fewer than 4 zeros


@pytest.mark.parametrize("window", [None, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 7, 11), (1, 2, 5, 5), (3, 2, 6, 6), (1, 1, 1, 9)], ids=shape_id)
def test_independent_windows_equal_brute_force(shape, window, path: str) -> None:
    # on the layer's output before its own prediction, whatever the layer predicts
    activation = random_activation(shape, seed=77 + sum(shape))
    expected, _ = brute_force(activation, window)
    predictor = None if window is None else make_predictor("tile", window)
    result = measure(activation.clone(), predictor)
    got = dict(zip(MASS_KEYS, result.masses.tolist(), strict=True))
    for s in (2, 3, 4, 5):
        assert got[f"zero_windows_indep_{s}"] == pytest.approx(
            expected[f"zero_windows_indep_{s}"], rel=1e-12, abs=1e-12
        )


def test_skip_and_correlation_rates_by_hand() -> None:
    """skip/g<g> = sum skip_cells_g * macs_per_act / conv MACs; skip/g1 is mac_saving exactly;
    zero_window_corr/<s> = sum zero_windows_s / sum zero_windows_indep_s, NaN with nothing expected."""
    first = LayerCounts(0, "a", ("a",), macs_per_act=9, acts=100, pred_hit=20, pred_miss=5)
    first.skip_cells = {1: 25, 2: 20, 4: 12, 8: 4, 16: 0, 32: 0}
    first.zero_windows = {1: 60, 2: 30, 3: 10, 4: 0, 5: 0}
    first.zero_windows_indep = {2: 12.0, 3: 0.5, 4: 0.0, 5: 0.0}
    second = LayerCounts(1, "b", ("b",), macs_per_act=100, acts=50, pred_hit=6, pred_miss=2)
    second.skip_cells = {1: 8, 2: 8, 4: 6, 8: 6, 16: 6, 32: 0}
    second.zero_windows = {1: 20, 2: 5, 3: 1, 4: 0, 5: 0}
    second.zero_windows_indep = {2: 3.0, 3: 1.5, 4: 0.0, 5: 0.0}
    metrics = rate_metrics([first, second], conv_macs=10_000)
    assert metrics["skip/g1"] == metrics["mac_saving"] == (25 * 9 + 8 * 100) / 10_000
    assert metrics["skip/g2"] == pytest.approx((20 * 9 + 8 * 100) / 10_000)
    assert metrics["skip/g8"] == pytest.approx((4 * 9 + 6 * 100) / 10_000)
    assert metrics["skip/g16"] == pytest.approx(600 / 10_000) and metrics["skip/g32"] == 0.0
    assert metrics["zero_window_corr/2"] == pytest.approx(35 / 15.0)
    assert metrics["zero_window_corr/3"] == pytest.approx(11 / 2.0)
    assert math.isnan(metrics["zero_window_corr/4"]) and math.isnan(metrics["zero_window_corr/5"])
    row = first.row()
    assert row["skip_cells_g8"] == 4 and row["zero_windows_indep_3"] == 0.5
