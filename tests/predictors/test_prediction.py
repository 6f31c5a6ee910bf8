"""The predictor family (contract sections 3 and 7): hand-worked tiles for every kind, pattern,
threshold and edge tile; brute-force cross-checks of every kind; the kernel equal to the torch
reference. Every case runs through both counting paths (the ``path`` fixture, tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from bruteforce import PATTERN_NAMES, brute_force, random_activation, rule_fired_tiles
from torch._subclasses.fake_tensor import FakeTensorMode

from pipeline.measurement import counts as counts_module
from pipeline.measurement import kernels
from pipeline.measurement.counts import MASS_KEYS, MEASURED_KEYS, measure
from pipeline.predictors import KINDS, PATTERNS, LayerInput, make_predictor, pattern_mask, register
from pipeline.predictors.base import Predictor, PredictorConfig
from pipeline.predictors.random_tiles import image_seed, reference_fire
from tests.conftest import HAVE_KERNEL


def _not_the_kernel(*_args):
    raise AssertionError("measure() took the torch path: the kernel did not run")


def as_map(rows: list[list[float]]) -> torch.Tensor:
    """A single (1, 1, H, W) channel map from rows."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def run(predictor: Predictor | None, activation: torch.Tensor, first_image: int = 0):
    """measure() on a copy: (output, {zero_diag, pred_hit, pred_miss, miss_mass, ...})."""
    result = measure(activation.clone(), predictor, first_image)
    counts = dict(zip(MEASURED_KEYS, result.counts.tolist(), strict=True))
    counts.update(zip(MASS_KEYS, result.masses.tolist(), strict=True))
    return result.output, counts


def prediction(counts: dict) -> list[int]:
    return [counts["zero_diag"], counts["pred_hit"], counts["pred_miss"]]


# --- patterns, by hand -----------------------------------------------------------------------------

PATTERN_3x3 = {
    "diagonal": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "anti_diagonal": [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    "checkerboard": [[1, 0, 1], [0, 1, 0], [1, 0, 1]],
    "corners": [[1, 0, 1], [0, 0, 0], [1, 0, 1]],
    "center": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "cross": [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
}
PATTERN_4x4 = {
    "diagonal": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
    "anti_diagonal": [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]],
    "checkerboard": [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]],
    "corners": [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]],
    "center": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    "cross": [[0, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]],
}


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_pattern_cells_by_hand(name: str) -> None:
    assert sorted(PATTERNS) == sorted(PATTERN_NAMES)
    assert pattern_mask(name, 3).int().tolist() == PATTERN_3x3[name]
    assert pattern_mask(name, 4).int().tolist() == PATTERN_4x4[name]
    assert pattern_mask(name, 1).tolist() == [[True]]  # k = 1: the one cell, nothing to predict
    assert make_predictor("tile", 1, pattern=name).predicts_nothing


def test_checkerboard_at_2_is_the_diagonal_and_corners_at_2_cover_the_tile() -> None:
    assert torch.equal(pattern_mask("checkerboard", 2), pattern_mask("diagonal", 2))
    assert pattern_mask("corners", 2).all() and make_predictor("tile", 2, pattern="corners").predicts_nothing
    assert not make_predictor("tile", 3, pattern="corners").predicts_nothing


# --- the paper's rule and the tile kinds, by hand ------------------------------------------------

# 4x4 map, k = 2: four full tiles; diagonal of tile (r, c) is (r, c), (r+1, c+1).
MAP_4x4 = [
    [0, 5, 0, 0],
    [0, 0, 0, 0],
    [1, 0, 0, 3],
    [0, 0, 4, 0],
]


def test_4x4_window_2_by_hand(path: str) -> None:
    # tile (0,0): diag (0,0)=0,(1,1)=0 fires -> (0,1)=5 miss, (1,0)=0 hit
    # tile (0,2): diag (0,2)=0,(1,3)=0 fires -> (0,3)=0 hit, (1,2)=0 hit
    # tile (2,0): diag (2,0)=1             no fire
    # tile (2,2): diag (2,2)=0,(3,3)=0 fires -> (2,3)=3 miss, (3,2)=4 miss
    # zero_diag = 2+2+2 = 6, pred_hit = 1+2+0 = 3, pred_miss = 1+0+2 = 3; miss mass 5+3+4 = 12
    output, counts = run(make_predictor("tile", 2), as_map(MAP_4x4))
    assert prediction(counts) == [6, 3, 3]
    assert counts["miss_mass"] == 12.0 and counts["mass"] == 13.0
    assert torch.equal(output, as_map([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))


def test_4x4_window_2_anti_diagonal_by_hand(path: str) -> None:
    # anti-diagonal of tile (r, c): (r, c+1), (r+1, c)
    # tile (0,0): (0,1)=5                  no fire
    # tile (0,2): (0,3)=0,(1,2)=0  fires -> (0,2)=0 hit, (1,3)=0 hit
    # tile (2,0): (2,1)=0,(3,0)=0  fires -> (2,0)=1 miss, (3,1)=0 hit
    # tile (2,2): (2,3)=3                  no fire
    output, counts = run(make_predictor("tile", 2, pattern="anti_diagonal"), as_map(MAP_4x4))
    assert prediction(counts) == [4, 3, 1]
    assert torch.equal(output, as_map([[0, 5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3], [0, 0, 4, 0]]))


def test_4x4_tile_oracle_never_misses_by_hand(path: str) -> None:
    # only tile (0,2) is all zero: it fires, zero_diag (0,2),(1,3); hits (0,3),(1,2); nothing else
    output, counts = run(make_predictor("tile_oracle", 2), as_map(MAP_4x4))
    assert prediction(counts) == [2, 2, 0]
    assert counts["miss_mass"] == 0.0
    assert torch.equal(output, as_map(MAP_4x4))  # only zeros were predicted


# 5x5 map, k = 3: tiles at rows/cols {0, 3}; the right and bottom tiles are cut by the border.
MAP_5x5 = [
    [0, 7, 0, 0, 0],
    [2, 0, 0, 0, 0],
    [0, 0, 0, 9, 0],
    [0, 0, 0, 1, 0],
    [5, 0, 6, 0, 0],
]
OUT_5x5 = {  # what the network receives after the prediction, per pattern (k = 3)
    "diagonal": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]],
    "corners": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 9, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]],
    "checkerboard": [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 9, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]],
    "center": [[0] * 5] * 5,
    "cross": [[0, 7, 0, 0, 0], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [5, 0, 6, 0, 0]],
}
COUNTS_5x5 = {  # (zero_diag, pred_hit, pred_miss, miss_mass), worked out below
    # tile (0,0) 3x3: diag (0,0),(1,1),(2,2) all 0, fires;
    #   others (0,1)=7 m, (0,2)=0 h, (1,0)=2 m, (1,2)=0 h, (2,0)=0 h, (2,1)=0 h -> zd 3, h 4, m 2
    # tile (0,3) 3x2: in-bounds diag (0,3)=0,(1,4)=0 ((2,5) is padding, never blocks), fires;
    #   others (0,4)=0 h, (1,3)=0 h, (2,3)=9 m, (2,4)=0 h                          -> zd 2, h 3, m 1
    # tile (3,0) 2x3: in-bounds diag (3,0)=0,(4,1)=0, fires;
    #   others (3,1)=0 h, (3,2)=0 h, (4,0)=5 m, (4,2)=6 m                          -> zd 2, h 2, m 2
    # tile (3,3) 2x2: diag (3,3)=1, no fire
    "diagonal": (7, 9, 5, 7 + 2 + 9 + 5 + 6),
    # corners (0,0),(0,2),(2,0),(2,2) of each tile:
    # tile (0,0): corners all 0, fires; others (0,1)=7 m,(1,0)=2 m,(1,1),(1,2),(2,1) h -> zd 4, h 3, m 2
    # tile (0,3): in-bounds corners (0,3)=0,(2,3)=9: no fire
    # tile (3,0): in-bounds corners (3,0)=0,(3,2)=0 fire; others (3,1) h,(4,0)=5 m,(4,1) h,(4,2)=6 m
    #                                                                                   -> zd 2, h 2, m 2
    # tile (3,3): in-bounds corner (3,3)=1: no fire
    "corners": (6, 5, 4, 7 + 2 + 5 + 6),
    # (i + j) even: (0,0),(0,2),(1,1),(2,0),(2,2)
    # tile (0,0): all 0, fires; others (0,1)=7 m,(1,0)=2 m,(1,2) h,(2,1) h             -> zd 5, h 2, m 2
    # tile (0,3): (2,3)=9 among them: no fire; tile (3,3): (3,3)=1: no fire
    # tile (3,0): in-bounds (3,0),(3,2),(4,1) all 0, fire; others (3,1) h,(4,0) m,(4,2) m -> zd 3, h 1, m 2
    "checkerboard": (8, 3, 4, 7 + 2 + 5 + 6),
    # the center (1,1) of each tile: (1,1), (1,4), (4,1), (4,4), all 0 and in bounds: every tile fires
    # tile (0,0): 8 others, 7 at (0,1) and 2 at (1,0) miss                               -> zd 1, h 6, m 2
    # tile (0,3): 5 others, 9 at (2,3) misses; tile (3,0): 5 others, 5 and 6 miss; tile (3,3): 3 others, 1
    "center": (4, 6 + 4 + 3 + 2, 2 + 1 + 2 + 1, 7 + 2 + 9 + 5 + 6 + 1),
    # the middle row and column of each tile: (0,1),(1,0),(1,1),(1,2),(2,1) in tile (0,0)
    # tile (0,0): (0,1)=7: no fire; tile (3,0): (4,0)=5: no fire
    # tile (0,3): in-bounds (0,4),(1,3),(1,4),(2,4) all 0, fire; others (0,3) h,(2,3)=9 m -> zd 4, h 1, m 1
    # tile (3,3): in-bounds (3,4),(4,3),(4,4) all 0, fire; other (3,3)=1 m               -> zd 3, h 0, m 1
    "cross": (7, 1, 2, 9 + 1),
}


@pytest.mark.parametrize("pattern", sorted(COUNTS_5x5))
def test_5x5_window_3_every_pattern_with_edge_tiles_by_hand(pattern: str, path: str) -> None:
    output, counts = run(make_predictor("tile", 3, pattern=pattern), as_map(MAP_5x5))
    zero_diag, hit, miss, lost = COUNTS_5x5[pattern]
    assert prediction(counts) == [zero_diag, hit, miss]
    assert counts["miss_mass"] == lost
    assert counts["mass"] == 7 + 2 + 9 + 1 + 5 + 6
    assert torch.equal(output, as_map(OUT_5x5[pattern]))


# 4x4 map with small values for the threshold: (0,0)=0.05 and (1,1)=0.1 are near zero.
MAP_NEAR_ZERO = [
    [0.05, 5, 0, 0],
    [0, 0.1, 0, 0],
    [1, 0, 0.2, 3],
    [0, 0, 4, 0],
]


@pytest.mark.parametrize(
    "threshold, expected",
    [
        # t = 0: the paper's rule; (0,0) = 0.05 blocks tile (0,0), (2,2) = 0.2 blocks (2,2)
        # only tile (0,2) fires: zd (0,2),(1,3); hits (0,3),(1,2)
        (0.0, ([2, 2, 0], 0.0, [[0.05, 5, 0, 0], [0, 0.1, 0, 0], [1, 0, 0.2, 3], [0, 0, 4, 0]])),
        # t = 0.1 (a value equal to t counts as near zero): tile (0,0) fires too, its pattern cells
        # 0.05 and 0.1 are zero_diag and keep their values; (0,1)=5 miss, (1,0)=0 hit
        (0.1, ([4, 3, 1], 5.0, [[0.05, 0, 0, 0], [0, 0.1, 0, 0], [1, 0, 0.2, 3], [0, 0, 4, 0]])),
        # t = 0.25: tile (2,2) fires as well: (2,3)=3 and (3,2)=4 miss
        (0.25, ([6, 3, 3], 12.0, [[0.05, 0, 0, 0], [0, 0.1, 0, 0], [1, 0, 0.2, 0], [0, 0, 0, 0]])),
        # t = 2: tile (2,0) with (2,0)=1 and (3,1)=0 fires; (2,1)=0 and (3,0)=0 are hits
        (2.0, ([8, 5, 3], 12.0, [[0.05, 0, 0, 0], [0, 0.1, 0, 0], [1, 0, 0.2, 0], [0, 0, 0, 0]])),
    ],
)
def test_threshold_by_hand(threshold: float, expected: tuple, path: str) -> None:
    counts_expected, lost, out = expected
    output, counts = run(make_predictor("tile", 2, threshold=threshold), as_map(MAP_NEAR_ZERO))
    assert prediction(counts) == counts_expected
    assert counts["miss_mass"] == pytest.approx(lost)
    assert torch.equal(output, as_map(out))


def test_threshold_at_window_1_counts_near_zero_cells_as_zero_diag(path: str) -> None:
    # k = 1: each cell is its own tile and pattern cell; cells <= t are zero_diag, nothing predicted
    output, counts = run(make_predictor("tile", 1, threshold=0.1), as_map(MAP_NEAR_ZERO))
    assert prediction(counts) == [9 + 2, 0, 0]  # 9 zeros, and 0.05, 0.1
    assert torch.equal(output, as_map(MAP_NEAR_ZERO))


def test_center_edge_tiles_without_an_in_bounds_pattern_cell_never_fire(path: str) -> None:
    # all-zero 4x4 map, k = 3, center: tile (0,0) has its center (1,1) and fires (8 hits);
    # tiles (0,3), (3,0), (3,3) have their centers (1,4), (4,1), (4,4) outside the map: they never
    # fire although every cell they have is zero. The same for the tile oracle.
    zeros = torch.zeros(1, 1, 4, 4)
    for kind in ("tile", "tile_oracle"):
        _, counts = run(make_predictor(kind, 3, pattern="center"), zeros)
        assert prediction(counts) == [1, 8, 0], kind


def test_anti_diagonal_tile_without_in_bounds_pattern_cell_does_not_fire(path: str) -> None:
    # 3x3 map without zeros, k = 2: the corner tile (2,2) is cut to the single cell (2,2); its
    # anti-diagonal cells (2,3) and (3,2) are both padding: no evidence, no firing.
    activation = as_map([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    output, counts = run(make_predictor("tile", 2, pattern="anti_diagonal", threshold=100.0), activation)
    # with t = 100 every in-bounds pattern cell qualifies: tiles (0,0), (0,2), (2,0) fire, (2,2) does not
    # tile (0,0): pattern (0,1),(1,0), predicted (0,0),(1,1); tile (0,2): pattern (1,2), predicted (0,2);
    # tile (2,0): pattern (2,1), predicted (2,0)
    assert prediction(counts) == [4, 0, 4]
    assert torch.equal(output, as_map([[0, 2, 0], [4, 0, 6], [0, 8, 9]]))


@pytest.mark.parametrize("transpose", [False, True], ids=["1xn", "nx1"])
def test_1_by_n_map_window_3_by_hand(transpose: bool, path: str) -> None:
    # 1x7 map, k = 3: tiles at cols 0, 3, 6, each one row high, so only the diagonal cell
    # (top, left) of each tile is in bounds.
    # tile 0: (0,0)=0 fires -> (0,1)=3 miss, (0,2)=0 hit; tile 3: (0,3)=4 no fire;
    # tile 6: (0,6)=0 fires, but has no in-bounds non-diagonal cell
    activation = as_map([[0, 3, 0, 4, 0, 0, 0]])
    expected_output = as_map([[0, 0, 0, 4, 0, 0, 0]])
    if transpose:
        activation, expected_output = activation.transpose(2, 3).contiguous(), expected_output.transpose(2, 3)
    output, counts = run(make_predictor("tile", 3), activation)
    assert prediction(counts) == [2, 1, 1]
    assert torch.equal(output, expected_output)


def test_map_smaller_than_window_by_hand(path: str) -> None:
    # 2x3 map, k = 5: one tile, cut to 2x3; in-bounds diagonal (0,0)=0,(1,1)=0 fires;
    # others (0,1)=8 miss, (0,2)=1 miss, (1,0)=0 hit, (1,2)=0 hit -> zd 2, hit 2, miss 2
    activation = as_map([[0, 8, 1], [0, 0, 0]])
    output, counts = run(make_predictor("tile", 5), activation)
    assert prediction(counts) == [2, 2, 2]
    assert torch.equal(output, torch.zeros_like(activation))
    for k in (2, 3, 6):  # 1x1 map, any k: the single cell is the diagonal; nothing to predict
        for value, zero_diag in ((0.0, 1), (2.0, 0)):
            output, counts = run(make_predictor("tile", k), as_map([[value]]))
            assert prediction(counts) == [zero_diag, 0, 0]
            assert output.item() == value


def test_window_1_predicts_nothing_and_zero_diag_is_every_zero_cell(path: str) -> None:
    # Contract section 3: with k = 1 every cell is a tile and its own diagonal; a tile fires when
    # its diagonal cell is 0. MAP_5x5 has 25 cells, 6 nonzero: zero_diag = 19 = zeros.
    for kind in ("tile", "tile_oracle"):
        output, counts = run(make_predictor(kind, 1), as_map(MAP_5x5))
        assert prediction(counts) == [19, 0, 0]
        assert torch.equal(output, as_map(MAP_5x5))


def test_oracle_and_none_by_hand(path: str) -> None:
    # oracle: every zero cell is predicted (19 hits, nothing missed), no pattern cell; the map is unchanged
    output, counts = run(make_predictor("oracle"), as_map(MAP_5x5))
    assert prediction(counts) == [0, 19, 0] and counts["miss_mass"] == 0.0
    assert torch.equal(output, as_map(MAP_5x5))
    for predictor in (make_predictor("none"), None):
        output, counts = run(predictor, as_map(MAP_5x5))
        assert prediction(counts) == [0, 0, 0] and counts["zeros"] == 19
        assert torch.equal(output, as_map(MAP_5x5))


# --- the random control --------------------------------------------------------------------------


def fired_tiles(predictor, activation: torch.Tensor, first_image: int = 0) -> dict:
    """The random predictor's firing tiles per (image, channel), as brute_force takes them."""
    fire = predictor.fire(LayerInput(activation, activation == 0, first_image))
    k = predictor.window
    return {
        (n, c): [(r * k, q * k) for r, q in fire[n, c].nonzero().tolist()]
        for n in range(fire.shape[0])
        for c in range(fire.shape[1])
    }


@pytest.mark.parametrize("pattern", ["diagonal", "center", "anti_diagonal"])
@pytest.mark.parametrize("window", [2, 3, 4])
def test_random_fires_as_many_tiles_per_map_as_the_rule_among_eligible_tiles(
    window: int, pattern: str, path: str
) -> None:
    activation = random_activation((3, 4, 11, 9), seed=window)
    predictor = make_predictor("random", window, pattern=pattern, seed=5)
    chosen = fired_tiles(predictor, activation)
    rule = rule_fired_tiles(activation, window, pattern)
    for key, tiles in chosen.items():
        assert len(tiles) == len(rule[key]), key  # the same budget in every channel map
        for top, left in tiles:  # only tiles with an in-bounds pattern cell
            assert any(top + i < 11 and left + j < 9 for i, j in pattern_mask(pattern, window).nonzero().tolist())
    # counts as the tile rule would take them on those tiles (contract section 7: "as tile")
    expected, expected_output = brute_force(activation, window, pattern, kind="random", fired_tiles=chosen)
    output, counts = run(predictor, activation)
    assert {key: counts[key] for key in MEASURED_KEYS if key != "predictor_macs"} == {
        key: expected[key] for key in MEASURED_KEYS if key != "predictor_macs"
    }
    assert counts["miss_mass"] == pytest.approx(expected["miss_mass"])
    assert torch.equal(output, expected_output)


def test_random_is_seeded_and_does_not_depend_on_the_batch_split() -> None:
    activation = random_activation((6, 3, 10, 10), seed=1)
    predictor = make_predictor("random", 3, seed=7)
    whole = fired_tiles(predictor, activation)
    first, second = fired_tiles(predictor, activation[:2]), fired_tiles(predictor, activation[2:], first_image=2)
    split = {**first, **{(n + 2, c): tiles for (n, c), tiles in second.items()}}
    assert whole == split
    assert whole == fired_tiles(make_predictor("random", 3, seed=7), activation)  # the same seed, the same draw
    assert whole != fired_tiles(make_predictor("random", 3, seed=8), activation)  # another seed, another draw


def test_random_control_hits_less_often_than_the_rule_on_real_activations() -> None:
    # the shipped AlexNet twin on 200 Fashion-MNIST test images, diagonal 3x3 in every layer
    from pipeline.measurement.instrument import instrument
    from pipeline.networks.data import DataConfig, load_eval_data
    from pipeline.networks.models import ModelConfig, build_model
    from pipeline.predictors import uniform

    model = build_model(ModelConfig(name="alexnet_fmnist", checkpoint="alexnet_fmnist.pt", input_size=[1, 28, 28],
                                    num_classes=10))  # fmt: skip
    images = load_eval_data(DataConfig(name="fashion_mnist", limit=200)).images
    measured = {}
    for kind in ("tile", "random"):
        with torch.inference_mode(), instrument(model, uniform(kind, window=3, seed=0)) as net:
            net(images)
            measured[kind] = net.layer_counts()
    for rule, control in zip(measured["tile"], measured["random"], strict=True):
        rule_rate = rule.pred_hit / (rule.pred_hit + rule.pred_miss)
        control_rate = control.pred_hit / (control.pred_hit + control.pred_miss)
        assert control_rate < rule_rate, rule.name  # hits less often
        assert control.miss_mass > rule.miss_mass, rule.name  # destroys more activation mass


@pytest.mark.skipif(not HAVE_KERNEL, reason="no C++ compiler or ninja: the counting kernel cannot be built")
def test_the_random_kernel_draws_the_reference_tiles_ties_included() -> None:
    """``cnp::random_tiles`` takes the tiles of :func:`reference_fire` (torch's generator, a stable argsort).
    Keys are multiples of 2^-24, so maps of 12,544 tiles have ties; with the job seed 198 (found by a search)
    a tie straddles a map's budget, so the rule 'a tie goes to the lower tile index' is exercised."""
    activation = random_activation((1, 8, 224, 224), seed=9, blocks=16)
    seeds = [image_seed(198, 1, 0)]
    pattern = pattern_mask("diagonal", 2).to(torch.uint8).contiguous()
    fast = kernels.random_tiles_op(activation, pattern, torch.tensor(seeds), 2)
    reference = reference_fire(activation, 2, "diagonal", seeds)
    assert fast.dtype == torch.uint8 and torch.equal(fast.bool(), reference)
    keys = torch.rand((8, 112 * 112), generator=torch.Generator().manual_seed(seeds[0]))
    fired = reference[0].flatten(1)
    last = torch.where(fired, keys, -1.0).max(1).values  # the highest key that fires, per map
    assert (torch.where(fired, 2.0, keys) == last[:, None]).any()  # ... ties one that does not, in some map
    small = (activation[:, :2, :9, :7].contiguous(), pattern, torch.tensor(seeds), 2, 2)
    torch.library.opcheck(torch.ops.cnp.random_tiles.default, small)
    with FakeTensorMode() as fake:
        shape = torch.ops.cnp.random_tiles(*[fake.from_tensor(t) for t in small[:3]], 2, 2).shape
    assert tuple(shape) == (1, 2, 5, 4)


# --- brute force and kernel cross-checks on random inputs of awkward sizes ------------------------

SHAPES = [
    (1, 1, 4, 4),
    (1, 1, 5, 5),
    (2, 3, 7, 11),  # H, W not multiples of k
    (1, 1, 1, 9),  # 1 x n
    (1, 2, 9, 1),  # n x 1
    (2, 2, 2, 3),  # smaller than most windows
    (1, 1, 1, 1),
    (3, 2, 6, 6),
    (1, 2, 13, 8),
    (2, 1, 3, 17),
]
WINDOWS = [1, 2, 3, 4, 5, 6]


def near_zero_values(activation: torch.Tensor) -> torch.Tensor:
    """Some small positive values, so that thresholds matter."""
    return torch.where((activation > 0) & (activation < 0.4), activation * 0.25, activation)


CASES = [("tile", pattern, 0.0) for pattern in PATTERN_NAMES]
CASES += [("tile", "diagonal", 0.05), ("tile", "checkerboard", 0.1), ("tile", "cross", 0.3)]
CASES += [("tile_oracle", pattern, 0.0) for pattern in ("diagonal", "corners", "center")]
# the kinds whose decision is handed to the kernel made (random: per tile) or as a rule on cells (oracle)
KERNEL_CASES = [*CASES, ("random", "diagonal", 0.0), ("random", "checkerboard", 0.0), ("oracle", None, 0.0)]


@pytest.mark.parametrize("kind, pattern, threshold", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("window", WINDOWS)
def test_every_tile_kind_equals_brute_force(
    kind: str, pattern: str, threshold: float, window: int, path: str
) -> None:
    params = {"pattern": pattern, **({"threshold": threshold} if kind == "tile" else {})}
    predictor = make_predictor(kind, window, **params)
    for number, shape in enumerate(SHAPES):
        activation = near_zero_values(random_activation(shape, seed=100 * window + number))
        expected, expected_output = brute_force(activation, window, pattern, kind=kind, threshold=threshold)
        output, counts = run(predictor, activation)
        assert {key: counts[key] for key in MEASURED_KEYS[:-1]} == {key: expected[key] for key in MEASURED_KEYS[:-1]}
        assert counts["mass"] == pytest.approx(expected["mass"], rel=1e-6)
        assert counts["miss_mass"] == pytest.approx(expected["miss_mass"], rel=1e-6, abs=1e-6)
        assert torch.equal(output, expected_output), shape
        if kind == "tile_oracle":
            assert counts["pred_miss"] == 0


@pytest.mark.parametrize("kind", ["oracle", "none"])
def test_oracle_and_none_equal_brute_force(kind: str, path: str) -> None:
    predictor = make_predictor(kind)
    for number, shape in enumerate(SHAPES):
        activation = random_activation(shape, seed=number)
        expected, expected_output = brute_force(activation, None if kind == "none" else 1, kind=kind)
        output, counts = run(predictor, activation)
        assert {key: counts[key] for key in MEASURED_KEYS[:-1]} == {key: expected[key] for key in MEASURED_KEYS[:-1]}
        assert torch.equal(output, expected_output)
        if kind == "oracle":
            assert counts["pred_hit"] == counts["zeros"] and counts["pred_miss"] == counts["zero_diag"] == 0


@pytest.mark.skipif(not HAVE_KERNEL, reason="no C++ compiler or ninja: the counting kernel cannot be built")
@pytest.mark.parametrize("kind, pattern, threshold", KERNEL_CASES, ids=lambda v: str(v))
def test_kernel_equals_the_torch_reference(kind: str, pattern: str, threshold: float, monkeypatch) -> None:
    # a larger map with many planes: the kernel's chunking, against the masks of the reference
    activation = near_zero_values(random_activation((4, 9, 30, 23), seed=3, blocks=8))
    params = {"pattern": pattern, **({"threshold": threshold} if kind == "tile" else {})} if pattern else {}
    params |= {"seed": 4} if kind == "random" else {}
    reference_path = counts_module.measure_torch
    for window in (1, 2, 3, 5, 7):
        predictor = make_predictor(kind, window, **params)
        reference = reference_path(activation.clone(), predictor)
        monkeypatch.setattr(counts_module, "measure_torch", _not_the_kernel)  # the kernel must really run
        fast = measure(activation.clone(), predictor)
        monkeypatch.undo()
        assert fast.counts.tolist() == reference.counts.tolist(), window
        assert torch.allclose(fast.masses, reference.masses, rtol=1e-6, atol=1e-6)
        assert torch.equal(fast.output, reference.output)


def test_masks_shapes_and_disjoint() -> None:
    zero = torch.rand(2, 4, 7, 11) < 0.6
    activation = torch.where(zero, 0.0, 1.0)
    for kind in sorted(set(KINDS) - {"learned"}):  # the learned kind needs a checkpoint: test_learned.py
        predictor = make_predictor(kind, 3)
        basis, predicted = predictor.masks(LayerInput(activation, zero))
        assert basis.shape == predicted.shape == zero.shape, kind
        assert not (basis & predicted).any(), kind


# --- registry and errors ---------------------------------------------------------------------------


def test_kinds_are_registered_once_and_unknown_names_list_the_known_ones() -> None:
    from pipeline.tracking.keys import PREDICTOR_KINDS

    assert set(KINDS) == set(PREDICTOR_KINDS)  # the torch-free list the analysis orders by
    with pytest.raises(ValueError, match="registered twice"):
        register("tile", PredictorConfig)(type("Again", (Predictor,), {}))
    with pytest.raises(ValueError, match="tile_oracle"):
        make_predictor("spiral")
    with pytest.raises(ValueError, match="window"):
        make_predictor("tile", 0)
    with pytest.raises(Exception, match="checkerboard"):  # lists the known patterns
        make_predictor("tile", 2, pattern="spiral")
    with pytest.raises(ValueError, match="threshold"):
        make_predictor("tile", 2, threshold=-0.1)


def test_apply_zeroes_in_place_but_not_under_autograd() -> None:
    activation = as_map(MAP_4x4)
    result = measure(activation, make_predictor("tile", 2))
    assert result.output.data_ptr() == activation.data_ptr() and activation[0, 0, 0, 1] == 0
    leaf = as_map(MAP_4x4).requires_grad_()
    result = measure(leaf * 1.0, make_predictor("tile", 2))
    assert leaf[0, 0, 0, 1] == 5  # the input is untouched
    result.output.sum().backward()  # gradients flow through the cells that are kept, not the predicted ones
    assert leaf.grad[0, 0, 0, 1] == 0 and leaf.grad[0, 0, 2, 0] == 1


def test_every_kind_says_what_fires_so_the_kernel_counts_it() -> None:
    """No kind falls back to counting its masks in torch on the CPU (the learned kind: test_learned.py)."""
    from pipeline.predictors import FIRING_RULES, Firing

    activation = random_activation((2, 3, 8, 7), seed=2)
    for kind in sorted(set(KINDS) - {"learned"}):
        firing = make_predictor(kind, 3, seed=1).firing(LayerInput(activation))
        assert isinstance(firing, Firing) and firing.rule in FIRING_RULES, kind
    with pytest.raises(ValueError, match="unknown firing rule 'some'"):
        Firing("some")
    with pytest.raises(ValueError, match="given_tiles: `given` is missing"):
        Firing("given_tiles", 3)
    wrong = Firing("given_tiles", 3, pattern_mask("diagonal", 3), given=torch.zeros(2, 3, 8, 7, dtype=torch.bool))
    if HAVE_KERNEL:  # a decision of the wrong shape never reaches the kernel
        with pytest.raises(ValueError, match=r"given has shape \(2, 3, 8, 7\), expected \(2, 3, 3, 3\)"):
            fixed = type("Fixed", (), {"firing": lambda self, x: wrong, "macs": lambda self, shape: 0})
            measure(activation.clone(), fixed())


# --- decision granularity: predictor.group (contract section 10) ---------------------------------


def test_share_by_hand() -> None:
    """5 channels, g = 2: groups {0, 1}, {2, 3}, {4}; a cell is kept where every channel of its group has it."""
    from pipeline.predictors.base import share

    decision = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [0, 1, 0]], dtype=torch.bool)[None]
    assert share(decision, 2)[0].int().tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 1], [0, 1, 0]]
    assert share(decision, 1) is decision
    assert share(decision, 64)[0].int().tolist() == [[0, 0, 0]] * 5  # wider than the layer: the whole layer


def test_a_tile_fires_for_a_group_only_when_it_fires_in_every_channel_by_hand(path: str) -> None:
    """Two channels of a 2 x 2 map, window 2, diagonal: channel 0 has its diagonal zero (it fires alone),
    channel 1 has (1, 1) = 4 (it does not). g = 1: channel 0 predicts its 2 off-diagonal cells (a hit and
    a miss of 3). g = 2: the group does not fire, nothing is predicted. With channel 1's diagonal zero too
    both fire, and all four off-diagonal cells are predicted (zero_diag 4)."""
    activation = torch.tensor([[[[0.0, 0.0], [3.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]]])
    _, alone = run(make_predictor("tile", 2), activation)
    assert prediction(alone) == [2, 1, 1]
    _, grouped = run(make_predictor("tile", 2, group=2), activation)
    assert prediction(grouped) == [0, 0, 0] and grouped["skip_cells_g2"] == 0
    both = activation.clone()
    both[0, 1, 1, 1] = 0.0
    output, together = run(make_predictor("tile", 2, group=2), both)
    assert prediction(together) == [4, 2, 2] and together["skip_cells_g2"] == 4
    assert output.count_nonzero() == 0  # the 3 and the 2 were predicted


GROUP_CASES = [("tile", "diagonal", 0.0), ("tile", "checkerboard", 0.1), ("tile_oracle", "diagonal", 0.0),
               ("oracle", None, 0.0)]  # fmt: skip


@pytest.mark.parametrize("group", [2, 3, 4, 16])
@pytest.mark.parametrize("kind, pattern, threshold", GROUP_CASES, ids=lambda v: str(v))
def test_grouped_kinds_equal_brute_force(kind: str, pattern: str | None, threshold: float, group: int,
                                         path: str) -> None:  # fmt: skip
    params = {"pattern": pattern} if pattern else {}
    params |= {"threshold": threshold} if kind == "tile" else {}
    for number, shape in enumerate([(2, 5, 7, 9), (1, 3, 6, 6), (2, 17, 5, 4), (1, 1, 4, 4)]):
        activation = near_zero_values(random_activation(shape, seed=31 * group + number, blocks=6))
        window = 1 if kind == "oracle" else 2 + number % 2
        predictor = make_predictor(kind, window, group=group, **params)
        expected, expected_output = brute_force(activation, window, pattern or "diagonal", kind=kind,
                                                threshold=threshold, group=group)  # fmt: skip
        output, counts = run(predictor, activation)
        assert {key: counts[key] for key in MEASURED_KEYS[:-1]} == {key: expected[key] for key in MEASURED_KEYS[:-1]}
        assert torch.equal(output, expected_output), shape
        if group in (2, 4, 16):  # a decision shared by g channels survives at g whole
            assert counts[f"skip_cells_g{group}"] == counts["pred_hit"] + counts["pred_miss"]


@pytest.mark.parametrize("group", [2, 4])
def test_random_draws_once_per_group_as_many_tiles_as_the_grouped_rule(group: int) -> None:
    from pipeline.predictors.random_tiles import image_seed, reference_fire
    from pipeline.predictors.tiles import pattern_rule

    activation = random_activation((3, 6, 9, 9), seed=group, blocks=6)
    seeds = [image_seed(5, 0, i) for i in range(3)]
    fire = reference_fire(activation, 3, "diagonal", seeds, group)
    rule = pattern_rule(activation, 3, "diagonal", lambda cells: cells == 0)
    for first in range(0, 6, group):
        members = fire[:, first : first + group]
        assert (members == members[:, :1]).all()  # every channel of a group fires the same tiles
        budget = rule[:, first : first + group].all(dim=1).sum((1, 2))
        assert members[:, 0].sum((1, 2)).tolist() == budget.tolist()
    assert torch.equal(reference_fire(activation, 3, "diagonal", seeds, 1), reference_fire(activation, 3, "diagonal",
                                                                                             seeds))  # fmt: skip
    # the job's path gives the same draws, counted as given tiles by either backend
    predictor = make_predictor("random", 3, seed=5, group=group)
    _, counts = run(predictor, activation)
    assert counts["pred_hit"] + counts["pred_miss"] == counts[f"skip_cells_g{group}"]


@pytest.mark.parametrize("value", [0, -1])
def test_a_group_below_one_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="predictor.group must be an integer >= 1"):
        make_predictor("tile", 3, group=value)
