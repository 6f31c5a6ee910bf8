"""Cutting channel maps into k x k tiles (contract sections 3.1 and 7), shared by the tile kinds.

Tiles are non-overlapping, start at (0, 0) and are cut by the map border: padded cells are never
counted and never block a tile from firing, and a tile with no in-bounds pattern cell never fires.
These are the pure-torch reference functions; the fused CPU kernel must agree with them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from pipeline.predictors.patterns import pattern_mask


def tile_grid(h: int, w: int, k: int) -> tuple[int, int]:
    """Tiles per column and per row: (ceil(H/k), ceil(W/k))."""
    return math.ceil(h / k), math.ceil(w / k)


def as_tiles(cells: Tensor, k: int, fill: bool) -> Tensor:
    """(N, C, H, W) bool -> (N, C, th, k, tw, k), padded with ``fill`` to a multiple of k."""
    n, c, h, w = cells.shape
    th, tw = tile_grid(h, w, k)
    if (th * k, tw * k) != (h, w):
        padded = cells.new_full((n, c, th * k, tw * k), fill)
        padded[:, :, :h, :w] = cells
        cells = padded
    return cells.view(n, c, th, k, tw, k)


@lru_cache(maxsize=256)
def has_pattern_cell(h: int, w: int, k: int, pattern: str, device: torch.device) -> Tensor:
    """(th, tw) bool: whether each tile position has an in-bounds pattern cell."""
    th, tw = tile_grid(h, w, k)
    inside = (torch.arange(th * k) < h)[:, None] & (torch.arange(tw * k) < w)[None, :]  # (th*k, tw*k)
    basis = inside.view(th, k, tw, k) & pattern_mask(pattern, k)[None, :, None, :]
    return basis.any(3).any(1).to(device)


def fire_where_all(ok: Tensor, k: int, pattern: str, required: Tensor | None) -> Tensor:
    """Which tiles fire: every in-bounds ``required`` cell is ``ok``, and the tile has a pattern cell.

    ``ok``: (N, C, H, W) bool. ``required``: (k, k) bool cells that must be ok (None: every cell).
    Returns (N, C, th, tw) bool.
    """
    n, c, h, w = ok.shape
    tiles = as_tiles(ok, k, fill=True)  # out-of-bounds cells never block
    if required is not None:
        tiles = tiles | ~required.to(ok.device)[None, None, None, :, None, :]
    fire = tiles.all(5).all(3)  # (N, C, th, k, tw, k) -> (N, C, th, tw)
    return fire & has_pattern_cell(h, w, k, pattern, ok.device)


def basis_map(pattern: str, k: int, h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """(H, W) bool: the pattern cells of an H x W map cut into k x k tiles (the cells computed first)."""
    th, tw = tile_grid(h, w, k)
    return pattern_mask(pattern, k).to(device).repeat(th, tw)[:h, :w]


def cell_masks(fire: Tensor, k: int, pattern: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Per-cell (basis, predicted) of firing tiles: their in-bounds pattern cells and the others."""
    n, c, h, w = shape
    th, tw = fire.shape[-2:]
    cells = fire[:, :, :, None, :, None].expand(n, c, th, k, tw, k).reshape(n, c, th * k, tw * k)[:, :, :h, :w]
    basis = basis_map(pattern, k, h, w, fire.device)
    return cells & basis, cells & ~basis
