"""Tile patterns: the cells of a k x k tile that are computed first (contract section 7).

A pattern is a function ``k -> (k, k) bool tensor``; cell (i, j) is True when it belongs to the
pattern (the *basis*: computed, and read to decide the rest of the tile). A new pattern is one
function decorated with :func:`pattern`. With k = 1 every pattern is the tile's single cell.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from functools import lru_cache

import torch
from torch import Tensor

PATTERNS: dict[str, Callable[[int], Tensor]] = {}


def pattern(function: Callable[[int], Tensor]) -> Callable[[int], Tensor]:
    """Register ``function`` under its name as a tile pattern; a name is registered once."""
    if function.__name__ in PATTERNS:
        raise ValueError(f"tile pattern {function.__name__!r} is registered twice")
    PATTERNS[function.__name__] = function
    return function


def _offsets(k: int) -> tuple[Tensor, Tensor]:
    """Row and column offsets (i, j) of every cell of a k x k tile, each (k, k)."""
    index = torch.arange(k)
    return index[:, None].expand(k, k), index[None, :].expand(k, k)


@pattern
def diagonal(k: int) -> Tensor:
    """The paper's pattern: cells (i, i)."""
    i, j = _offsets(k)
    return i == j


@pattern
def anti_diagonal(k: int) -> Tensor:
    """Cells (i, k-1-i)."""
    i, j = _offsets(k)
    return i + j == k - 1


@pattern
def checkerboard(k: int) -> Tensor:
    """Cells with i + j even (the diagonal at k = 2)."""
    i, j = _offsets(k)
    return (i + j) % 2 == 0


@pattern
def corners(k: int) -> Tensor:
    """The four corner cells (every cell at k <= 2)."""
    i, j = _offsets(k)
    return ((i == 0) | (i == k - 1)) & ((j == 0) | (j == k - 1))


@pattern
def center(k: int) -> Tensor:
    """The one cell (k // 2, k // 2)."""
    i, j = _offsets(k)
    return (i == k // 2) & (j == k // 2)


@pattern
def cross(k: int) -> Tensor:
    """The middle row and the middle column (k // 2)."""
    i, j = _offsets(k)
    return (i == k // 2) | (j == k // 2)


@lru_cache(maxsize=512)
def pattern_mask(name: str, k: int) -> Tensor:
    """The (k, k) bool mask of pattern ``name`` (cached; do not modify it)."""
    if name not in PATTERNS:
        raise ValueError(f"unknown tile pattern {name!r}; known: {', '.join(PATTERNS)}")
    if k < 1:
        raise ValueError(f"window must be an integer >= 1, got {k}")
    return PATTERNS[name](k).contiguous()


# The config type of ``pattern`` keys: OmegaConf checks a value against it when the config is composed
# and lists the allowed names in its message.
Pattern = Enum("Pattern", {name: name for name in PATTERNS}, type=str)
