"""Cross-neuron prediction as pure tensor functions (measurement contract, section 3).

A predictor looks at one ReLU output ``A`` (N, C, H, W), decides which cells are *predicted*
zero, sets them to zero in place, and returns the integer counts of section 4 that depend on
the prediction: ``zero_diag``, ``pred_hit`` and ``pred_miss``.

The paper's heuristic is :class:`TilePredictor` with the diagonal pattern: cut each map into
non-overlapping k x k tiles from (0, 0), compute the pattern cells (the diagonal), and when all of
them are zero predict the rest of the tile zero. Other tile patterns are a new ``pattern``
function and a line in :data:`PATTERNS`; other predictor kinds subclass :class:`Predictor`
(its generic mask-based counting is the reference any fast path must agree with).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

PREDICTION_KEYS = ("zero_diag", "pred_hit", "pred_miss")


class Predictor(ABC):
    """Decides which cells of a ReLU output are predicted zero."""

    @abstractmethod
    def masks(self, zero: Tensor) -> tuple[Tensor, Tensor]:
        """(basis, predicted) boolean masks shaped like ``zero``.

        ``basis``: the computed cells whose zeros triggered a prediction (the paper's zero-diag);
        ``predicted``: the cells predicted zero, whose computation is skipped.
        """

    def apply(self, activation: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the prediction to ``activation``; returns (output, counts).

        ``zero`` is ``activation == 0``. ``counts`` is an int64 tensor of
        (zero_diag, pred_hit, pred_miss). ``output`` may be ``activation`` modified in place.
        """
        basis, predicted = self.masks(zero)
        pred_hit = (predicted & zero).sum()
        counts = torch.stack([basis.sum(), pred_hit, predicted.sum() - pred_hit])
        return activation.masked_fill_(predicted, 0), counts


def diagonal(k: int) -> Tensor:
    """The paper's pattern: cells (i, i) of a k x k tile."""
    return torch.eye(k, dtype=torch.bool)


def anti_diagonal(k: int) -> Tensor:
    """Cells (i, k-1-i) of a k x k tile."""
    return torch.eye(k, dtype=torch.bool).flip(1)


PATTERNS: dict[str, Callable[[int], Tensor]] = {"diagonal": diagonal, "anti_diagonal": anti_diagonal}


class TilePredictor(Predictor):
    """Non-overlapping k x k tiles; a tile fires when all its in-bounds pattern cells are zero.

    Edge tiles are cut by the map border: padded cells are never counted, an out-of-bounds pattern
    cell never blocks a tile from firing, and a tile with no in-bounds pattern cell never fires.
    In a firing tile every in-bounds non-pattern cell is predicted zero.
    """

    def __init__(self, window: int, pattern: str = "diagonal") -> None:
        if window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window}")
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
        self.window = window
        self.pattern_name = pattern
        self.pattern = PATTERNS[pattern](window)  # (k, k) bool
        self.pattern_bytes = self.pattern.to(torch.uint8).contiguous()  # for the C kernel
        self.rows, self.cols = self.pattern.nonzero(as_tuple=True)
        self.predicts_nothing = bool(self.pattern.all())  # k = 1: the baseline

    def __repr__(self) -> str:
        return f"TilePredictor(window={self.window}, pattern={self.pattern_name!r})"

    def fire(self, zero: Tensor) -> Tensor:
        """Which tiles fire: (N, C, H, W) bool -> (N, C, ceil(H/k), ceil(W/k)) bool."""
        k = self.window
        n, c, h, w = zero.shape
        th, tw = math.ceil(h / k), math.ceil(w / k)
        padded = zero
        if (th * k, tw * k) != (h, w):  # out-of-bounds cells read as zero: they never block
            padded = zero.new_ones((n, c, th * k, tw * k))
            padded[:, :, :h, :w] = zero
        tiles = padded.view(n, c, th, k, tw, k)
        if self.pattern_name == "diagonal":  # a tile's top-left cell is always in bounds
            return tiles.diagonal(dim1=3, dim2=5).all(-1)  # (N, C, th, tw, k) -> (N, C, th, tw)
        picked = tiles[:, :, :, self.rows, :, self.cols]  # (P, N, C, th, tw)
        _, basis_in = _inbound_counts(h, w, k, self.pattern_name, zero.device)
        return picked.all(0) & (basis_in > 0)  # no in-bounds pattern cell: no evidence, no firing

    def masks(self, zero: Tensor) -> tuple[Tensor, Tensor]:
        """Per-cell (basis, predicted) masks from the firing tiles."""
        k = self.window
        n, c, h, w = zero.shape
        fire = self.fire(zero)
        th, tw = fire.shape[-2:]
        cells = fire[:, :, :, None, :, None].expand(n, c, th, k, tw, k).reshape(n, c, th * k, tw * k)
        pattern = self.pattern.to(zero.device).repeat(th, tw)  # (th*k, tw*k)
        cells = cells[:, :, :h, :w]
        pattern = pattern[:h, :w]
        return cells & pattern, cells & ~pattern

    def apply(self, activation: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
        """Fast path: counts from per-tile sums, and whole firing tiles zeroed.

        Zeroing the whole tile equals zeroing its non-pattern cells, since a firing tile's
        pattern cells are zero already.
        """
        if self.predicts_nothing:  # k = 1: every zero cell is a firing tile's diagonal
            none = torch.zeros((), dtype=torch.int64, device=activation.device)
            return activation, torch.stack([zero.sum(), none, none])
        k = self.window
        n, c, h, w = zero.shape
        fire = self.fire(zero)  # (N, C, th, tw)
        th, tw = fire.shape[-2:]
        cells_in, basis_in = _inbound_counts(h, w, k, self.pattern_name, activation.device)
        fired = fire.sum((0, 1))  # (th, tw) firing tiles per tile position
        zero_diag = (fired * basis_in).sum()
        predicted = (fired * (cells_in - basis_in)).sum()
        zeros_in_fired = (_zeros_per_tile(zero, k, th, tw) * fire).sum()  # in-bounds zeros
        pred_hit = zeros_in_fired - zero_diag
        counts = torch.stack([zero_diag, pred_hit, predicted - pred_hit])
        mask = fire[:, :, :, None, :, None]
        if (th * k, tw * k) == (h, w) and activation.is_contiguous():
            activation.view(n, c, th, k, tw, k).masked_fill_(mask, 0)
            return activation, counts
        cells = mask.expand(n, c, th, k, tw, k).reshape(n, c, th * k, tw * k)[:, :, :h, :w]
        return activation.masked_fill_(cells, 0), counts


def _zeros_per_tile(zero: Tensor, k: int, th: int, tw: int) -> Tensor:
    """In-bounds zero cells per tile: (N, C, H, W) bool -> (N, C, th, tw) int64."""
    n, c, h, w = zero.shape
    padded = zero
    if (th * k, tw * k) != (h, w):
        padded = zero.new_zeros((n, c, th * k, tw * k))
        padded[:, :, :h, :w] = zero
    return padded.view(n, c, th, k, tw, k).sum((3, 5))


@lru_cache(maxsize=256)
def _inbound_counts(h: int, w: int, k: int, pattern: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per tile position: in-bounds cells and in-bounds pattern cells, each (th, tw) int64."""
    th, tw = math.ceil(h / k), math.ceil(w / k)
    inside = (torch.arange(th * k) < h)[:, None] & (torch.arange(tw * k) < w)[None, :]
    tiles = inside.view(th, k, tw, k)
    basis = tiles & PATTERNS[pattern](k)[None, :, None, :]
    return tiles.sum((1, 3)).to(device), basis.sum((1, 3)).to(device)


def build_predictor(name: str, window: int) -> Predictor:
    """A predictor by config name: a tile pattern from :data:`PATTERNS`."""
    if name in PATTERNS:
        return TilePredictor(window, name)
    raise ValueError(f"unknown predictor {name!r}; known: {', '.join(PATTERNS)}")
