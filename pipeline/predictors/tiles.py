"""Cutting channel maps into k x k tiles (contract sections 3.1 and 7), shared by the tile kinds.

Tiles are non-overlapping, start at (0, 0) and are cut by the map border: cells outside the map are
never counted and never block a tile from firing, and a tile with no in-bounds pattern cell never
fires. These are the pure-torch reference functions; the fused CPU kernel must agree with them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.predictors.patterns import pattern_mask


def tile_grid(h: int, w: int, k: int) -> tuple[int, int]:
    """Tiles per column and per row: (ceil(H/k), ceil(W/k))."""
    return math.ceil(h / k), math.ceil(w / k)


@lru_cache(maxsize=256)
def has_pattern_cell(h: int, w: int, k: int, pattern: str, device: torch.device) -> Tensor:
    """(th, tw) bool: whether each tile position has an in-bounds pattern cell."""
    th, tw = tile_grid(h, w, k)
    inside = (torch.arange(th * k) < h)[:, None] & (torch.arange(tw * k) < w)[None, :]  # (th*k, tw*k)
    basis = inside.view(th, k, tw, k) & pattern_mask(pattern, k)[None, :, None, :]
    return basis.any(3).any(1).to(device)


def fire_where_all(ok: Tensor, k: int, pattern: str) -> Tensor:
    """Which tiles fire when every in-bounds cell of the tile counts (the tile oracle): all of them are
    ``ok``, and the tile has a pattern cell (the rule on pattern cells alone: :func:`pattern_rule`).

    ``ok``: (N, C, H, W) bool. Returns (N, C, th, tw) bool. Tiles are pooled with ``ceil_mode``, so
    border tiles are cut by the map and nothing is padded (memory stays that of the map, whatever k).
    """
    n, c, h, w = ok.shape
    blocked = ~ok
    size = (min(k, h), min(k, w))  # k past the map: the map is one tile along that side
    any_blocked = F.max_pool2d(blocked.to(torch.float32), size, stride=size, ceil_mode=True)  # (N, C, th, tw)
    return (any_blocked == 0) & has_pattern_cell(h, w, k, pattern, ok.device)


def pattern_rule(values: Tensor, k: int, pattern: str, ok) -> Tensor:
    """(N, C, th, tw) bool: the tiles whose every in-bounds pattern cell is ``ok`` (and that have one).

    ``ok`` maps a strided view of ``values`` (N, C, H, W) to bool: only the pattern cells are read, one
    view per pattern cell of the k x k pattern (the cells past the map never block a tile)."""
    n, c, h, w = values.shape
    th, tw = tile_grid(h, w, k)
    fire = has_pattern_cell(h, w, k, pattern, values.device).expand(n, c, th, tw).clone()
    for i, j in pattern_mask(pattern, k).nonzero().tolist():
        cells = values[:, :, i::k, j::k]  # the (i, j) cell of every tile that has it in bounds
        fire[:, :, : cells.shape[2], : cells.shape[3]] &= ok(cells)
    return fire


def basis_map(pattern: str, k: int, h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """(H, W) bool: the pattern cells of an H x W map cut into k x k tiles (the cells computed first)."""
    th, tw = tile_grid(h, w, k)
    return pattern_mask(pattern, k).to(device).repeat(th, tw)[:h, :w]


def cell_masks(fire: Tensor, k: int, pattern: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Per-cell (basis, predicted) of firing tiles: their in-bounds pattern cells and the others."""
    n, c, h, w = shape
    rows = torch.arange(h, device=fire.device) // k  # each cell's tile
    cols = torch.arange(w, device=fire.device) // k
    cells = fire[:, :, rows][:, :, :, cols]  # (N, C, th, tw) -> (N, C, H, W)
    basis = basis_map(pattern, k, h, w, fire.device)
    return cells & basis, cells & ~basis
