"""Cross-neuron prediction (contract section 3): hand-worked tiles, brute force, fast vs mask path."""

from __future__ import annotations

import pytest
import torch
from bruteforce import brute_force, random_activation

from pipeline.prediction import PATTERNS, Predictor, TilePredictor, build_predictor


def as_map(rows: list[list[float]]) -> torch.Tensor:
    """A single (1, 1, H, W) channel map from rows."""
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def fast(predictor: TilePredictor, activation: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """TilePredictor's fast path on a copy: (output, [zero_diag, pred_hit, pred_miss])."""
    copy = activation.clone()
    output, counts = predictor.apply(copy, copy == 0)
    return output, counts.tolist()


def generic(predictor: TilePredictor, activation: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The generic mask-based Predictor.apply (the reference any fast path must agree with)."""
    copy = activation.clone()
    output, counts = Predictor.apply(predictor, copy, copy == 0)
    return output, counts.tolist()


# 4x4 map, k = 2: four full tiles; diagonal of tile (r, c) is (r, c), (r+1, c+1).
MAP_4x4 = [
    [0, 5, 0, 0],
    [0, 0, 0, 0],
    [1, 0, 0, 3],
    [0, 0, 4, 0],
]


def test_4x4_window_2_by_hand() -> None:
    # tile (0,0): diag (0,0)=0,(1,1)=0 fires -> (0,1)=5 miss, (1,0)=0 hit
    # tile (0,2): diag (0,2)=0,(1,3)=0 fires -> (0,3)=0 hit, (1,2)=0 hit
    # tile (2,0): diag (2,0)=1             no fire
    # tile (2,2): diag (2,2)=0,(3,3)=0 fires -> (2,3)=3 miss, (3,2)=4 miss
    # zero_diag = 2+2+2 = 6, pred_hit = 1+2+0 = 3, pred_miss = 1+0+2 = 3
    expected_output = as_map([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    predictor = TilePredictor(2)
    fire = predictor.fire(as_map(MAP_4x4) == 0)
    assert fire.tolist() == [[[[True, True], [False, True]]]]  # (1, 1, 2, 2)
    for path in (fast, generic):
        output, counts = path(predictor, as_map(MAP_4x4))
        assert counts == [6, 3, 3]
        assert torch.equal(output, expected_output)


def test_4x4_window_2_anti_diagonal_by_hand() -> None:
    # anti-diagonal of tile (r, c): (r, c+1), (r+1, c)
    # tile (0,0): (0,1)=5                  no fire
    # tile (0,2): (0,3)=0,(1,2)=0  fires -> (0,2)=0 hit, (1,3)=0 hit
    # tile (2,0): (2,1)=0,(3,0)=0  fires -> (2,0)=1 miss, (3,1)=0 hit
    # tile (2,2): (2,3)=3                  no fire
    # zero_diag = 4, pred_hit = 3, pred_miss = 1
    expected_output = as_map([[0, 5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3], [0, 0, 4, 0]])
    predictor = TilePredictor(2, "anti_diagonal")
    for path in (fast, generic):
        output, counts = path(predictor, as_map(MAP_4x4))
        assert counts == [4, 3, 1]
        assert torch.equal(output, expected_output)


# 5x5 map, k = 3: tiles at rows/cols {0, 3}; the right and bottom tiles are cut by the border.
MAP_5x5 = [
    [0, 7, 0, 0, 0],
    [2, 0, 0, 0, 0],
    [0, 0, 0, 9, 0],
    [0, 0, 0, 1, 0],
    [5, 0, 6, 0, 0],
]


def test_5x5_window_3_edge_tiles_cut_by_hand() -> None:
    # tile (0,0) 3x3: diag (0,0),(1,1),(2,2) all 0, fires;
    #   others (0,1)=7 m, (0,2)=0 h, (1,0)=2 m, (1,2)=0 h, (2,0)=0 h, (2,1)=0 h -> zd 3, h 4, m 2
    # tile (0,3) 3x2: in-bounds diag (0,3)=0,(1,4)=0 ((2,5) is padding, never blocks), fires;
    #   others (0,4)=0 h, (1,3)=0 h, (2,3)=9 m, (2,4)=0 h                          -> zd 2, h 3, m 1
    # tile (3,0) 2x3: in-bounds diag (3,0)=0,(4,1)=0, fires;
    #   others (3,1)=0 h, (3,2)=0 h, (4,0)=5 m, (4,2)=6 m                          -> zd 2, h 2, m 2
    # tile (3,3) 2x2: diag (3,3)=1, no fire
    # zero_diag 7, pred_hit 9, pred_miss 5: 14 predicted cells, all in bounds (padding never counts)
    expected_output = as_map([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    predictor = TilePredictor(3)
    assert predictor.fire(as_map(MAP_5x5) == 0).tolist() == [[[[True, True], [True, False]]]]
    for path in (fast, generic):
        output, counts = path(predictor, as_map(MAP_5x5))
        assert counts == [7, 9, 5]
        assert torch.equal(output, expected_output)


@pytest.mark.parametrize("transpose", [False, True], ids=["1xn", "nx1"])
def test_1_by_n_map_window_3_by_hand(transpose: bool) -> None:
    # 1x7 map, k = 3: tiles at cols 0, 3, 6, each one row high, so only the diagonal cell
    # (top, left) of each tile is in bounds.
    # tile 0: (0,0)=0 fires -> (0,1)=3 miss, (0,2)=0 hit
    # tile 3: (0,3)=4 no fire
    # tile 6: (0,6)=0 fires, but has no in-bounds non-diagonal cell
    # zero_diag 2, pred_hit 1, pred_miss 1. The 7x1 map is the same by symmetry of the diagonal.
    activation = as_map([[0, 3, 0, 4, 0, 0, 0]])
    expected_output = as_map([[0, 0, 0, 4, 0, 0, 0]])
    if transpose:
        activation, expected_output = activation.transpose(2, 3), expected_output.transpose(2, 3)
    for path in (fast, generic):
        output, counts = path(TilePredictor(3), activation)
        assert counts == [2, 1, 1]
        assert torch.equal(output, expected_output)


def test_map_smaller_than_window_by_hand() -> None:
    # 2x3 map, k = 5: one tile, cut to 2x3; in-bounds diagonal (0,0)=0,(1,1)=0 fires;
    # others (0,1)=8 miss, (0,2)=1 miss, (1,0)=0 hit, (1,2)=0 hit -> zd 2, hit 2, miss 2
    activation = as_map([[0, 8, 1], [0, 0, 0]])
    for path in (fast, generic):
        output, counts = path(TilePredictor(5), activation)
        assert counts == [2, 2, 2]
        assert torch.equal(output, torch.zeros_like(activation))
    # 1x1 map, any k: the single cell is the diagonal; nothing to predict
    for k in (2, 3, 6):
        for value, zero_diag in ((0.0, 1), (2.0, 0)):
            output, counts = fast(TilePredictor(k), as_map([[value]]))
            assert counts == [zero_diag, 0, 0]
            assert output.item() == value


def test_window_1_predicts_nothing() -> None:
    # k = 1: every cell is diagonal, so no cell is ever predicted; the map is unchanged.
    activation = as_map(MAP_5x5)
    for path in (fast, generic):
        output, counts = path(TilePredictor(1), activation)
        assert counts[1:] == [0, 0]  # pred_hit, pred_miss
        assert torch.equal(output, activation)


def test_window_1_zero_diag_is_every_zero_cell() -> None:
    # Contract section 3: with k = 1 every cell is a tile and its own diagonal; a tile fires when
    # its diagonal cell is 0, and section 4 counts zero_diag = diagonal cells of firing tiles.
    # MAP_5x5 has 25 cells, 6 nonzero (7, 2, 9, 1, 5, 6): zero_diag = 19 = zeros.
    # (Regression: the fast path's k = 1 shortcut used to return zero_diag 0; fixed in dfa5195.)
    activation = as_map(MAP_5x5)
    assert generic(TilePredictor(1), activation)[1] == [19, 0, 0]
    assert fast(TilePredictor(1), activation)[1] == [19, 0, 0]


def test_anti_diagonal_tile_without_in_bounds_pattern_cell_does_not_fire() -> None:
    # 3x3 map without zeros, k = 2: the corner tile (2,2) is cut to the single cell (2,2); its
    # anti-diagonal cells (2,3) and (3,2) are both padding. Nothing was computed as zero, so
    # nothing is predicted (a tile with no in-bounds pattern cell never fires).
    activation = as_map([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    output, counts = fast(TilePredictor(2, "anti_diagonal"), activation)
    assert counts == [0, 0, 0]
    assert torch.equal(output, activation)


def test_fire_and_masks_shapes() -> None:
    predictor = TilePredictor(3)
    zero = torch.zeros(2, 4, 7, 11, dtype=torch.bool)
    assert predictor.fire(zero).shape == (2, 4, 3, 4)  # ceil(7/3), ceil(11/3)
    basis, predicted = predictor.masks(zero)
    assert basis.shape == predicted.shape == zero.shape
    assert not (basis & predicted).any()


def test_bad_window_and_pattern_fail_loudly() -> None:
    with pytest.raises(ValueError, match="window"):
        TilePredictor(0)
    with pytest.raises(ValueError, match="diagonal"):  # lists the known patterns
        TilePredictor(2, "spiral")
    with pytest.raises(ValueError, match="anti_diagonal"):
        build_predictor("spiral", 2)
    assert isinstance(build_predictor("diagonal", 3), TilePredictor)
    assert build_predictor("anti_diagonal", 3).pattern_name == "anti_diagonal"


# --- random inputs of awkward sizes -------------------------------------------------------------

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


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_fast_apply_equals_mask_path(shape: tuple[int, ...], window: int, pattern: str) -> None:
    activation = random_activation(shape, seed=window * 100 + len(shape_id(shape)))
    predictor = TilePredictor(window, pattern)
    fast_output, fast_counts = fast(predictor, activation)
    mask_output, mask_counts = generic(predictor, activation)
    assert torch.equal(fast_output, mask_output)
    assert fast_counts == mask_counts


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_mask_path_equals_brute_force(shape: tuple[int, ...], window: int, pattern: str) -> None:
    activation = random_activation(shape, seed=7 + window)
    expected, expected_output = brute_force(activation, window, pattern)
    output, counts = generic(TilePredictor(window, pattern), activation)
    assert counts == [expected["zero_diag"], expected["pred_hit"], expected["pred_miss"]]
    assert torch.equal(output, expected_output)
    # the masks themselves: basis = diagonal cells of firing tiles, predicted = the rest of them
    basis, predicted = TilePredictor(window, pattern).masks(activation == 0)
    assert int(basis.sum()) == expected["zero_diag"]
    assert int(predicted.sum()) == expected["pred_hit"] + expected["pred_miss"]
    assert torch.equal(predicted & (activation != 0), activation != expected_output)  # the misses


def test_fast_apply_on_non_contiguous_activation() -> None:
    # channels_last and transposed views take the masked_fill path; results are unchanged
    for shape, window in (((2, 3, 6, 6), 3), ((2, 3, 7, 5), 2)):
        activation = random_activation(shape, seed=3)
        expected, expected_output = brute_force(activation, window)
        for variant in (
            activation.contiguous(memory_format=torch.channels_last),
            activation.transpose(2, 3).contiguous().transpose(2, 3),
        ):
            assert not variant.is_contiguous()
            output, counts = fast(TilePredictor(window), variant)
            assert counts == [expected["zero_diag"], expected["pred_hit"], expected["pred_miss"]]
            assert torch.equal(output, expected_output)


def test_apply_zeroes_in_place() -> None:
    # the output may be the activation itself, modified in place; counts come from `zero`
    activation = as_map(MAP_4x4)
    output, _ = TilePredictor(2).apply(activation, activation == 0)
    assert output.data_ptr() == activation.data_ptr()
    assert activation[0, 0, 0, 1] == 0  # the 5 was predicted
