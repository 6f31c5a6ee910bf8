"""Reference counts for one activation tensor, written straight from the measurement contract.

Sections 3 and 4 of ``/work/shared/docs/measurement-contract.md`` as plain Python loops over
images, channels, tiles and cells, on nested lists (no tensor ops), so that each line can be read
against the contract text. It is slow and obviously correct; the fast code must agree with it.

    counts, predicted = brute_force(activation, window=3)

``counts`` maps every key of section 4 (plus ``others``) to a Python int; ``predicted`` is the
tensor the rest of the network receives (a new tensor; ``activation`` is not modified).
"""

from __future__ import annotations

import torch
from torch import Tensor

WINDOW_SIZES = (1, 2, 3, 4, 5)
KEYS = (
    "acts",
    "zeros",
    "zero_diag",
    "pred_hit",
    "pred_miss",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
)


def in_pattern(i: int, j: int, k: int, pattern: str) -> bool:
    """Is offset (i, j) inside a k x k tile a pattern cell? The contract's diagonal is (i, i)."""
    if pattern == "diagonal":
        return i == j
    if pattern == "anti_diagonal":
        return j == k - 1 - i
    raise ValueError(f"unknown pattern {pattern!r}")


def brute_force(activation: Tensor, window: int | None, pattern: str = "diagonal") -> tuple[dict[str, int], Tensor]:
    """Section-4 counts of one ReLU output ``activation`` (N, C, H, W) and its predicted tensor.

    ``window`` is k of section 3, or None for a layer outside the scope (no prediction at all).
    Besides the section-4 keys, ``others`` is counted directly: cells that are neither a
    diagonal cell of a firing tile nor predicted.
    """
    n_images, n_channels, height, width = activation.shape
    values = activation.tolist()  # nested lists [n][c][row][col] of Python numbers
    out = activation.tolist()  # what the rest of the network receives
    counts = dict.fromkeys(KEYS, 0)
    counts["others"] = 0

    for n in range(n_images):
        for c in range(n_channels):
            a = values[n][c]

            # acts and zeros: every cell of the map.
            for row in range(height):
                for col in range(width):
                    counts["acts"] += 1
                    if a[row][col] == 0:
                        counts["zeros"] += 1

            # zero_windows_s, windows_s: stride-1, unpadded s x s windows of this channel.
            for s in WINDOW_SIZES:
                for top in range(height - s + 1):
                    for left in range(width - s + 1):
                        counts[f"windows_{s}"] += 1
                        all_zero = True
                        for i in range(s):
                            for j in range(s):
                                if a[top + i][left + j] != 0:
                                    all_zero = False
                        if all_zero:
                            counts[f"zero_windows_{s}"] += 1

            # Section 3: non-overlapping k x k tiles from (0, 0), cut by the map border.
            counted = [[False] * width for _ in range(height)]  # diagonal-of-firing or predicted
            if window is not None:
                k = window
                for top in range(0, height, k):
                    for left in range(0, width, k):
                        # the in-bounds cells of this tile, and which of them are diagonal
                        diagonal_cells = []
                        other_cells = []
                        for i in range(k):
                            for j in range(k):
                                row, col = top + i, left + j
                                if row >= height or col >= width:
                                    continue  # padded cell: never counted
                                if in_pattern(i, j, k, pattern):
                                    diagonal_cells.append((row, col))
                                else:
                                    other_cells.append((row, col))
                        # the tile fires when every (in-bounds) diagonal cell equals 0; a tile with
                        # no in-bounds pattern cell (possible for anti_diagonal) has no evidence
                        fires = bool(diagonal_cells)
                        for row, col in diagonal_cells:
                            if a[row][col] != 0:
                                fires = False
                        if not fires:
                            continue
                        for row, col in diagonal_cells:
                            counts["zero_diag"] += 1
                            counted[row][col] = True
                        for row, col in other_cells:  # predicted: set to 0 downstream
                            if a[row][col] == 0:
                                counts["pred_hit"] += 1
                            elif a[row][col] > 0:
                                counts["pred_miss"] += 1
                            else:
                                raise ValueError("a ReLU output cannot be negative")
                            out[n][c][row][col] = 0
                            counted[row][col] = True
            for row in range(height):
                for col in range(width):
                    if not counted[row][col]:
                        counts["others"] += 1

    predicted = torch.tensor(out, dtype=activation.dtype).reshape(activation.shape)
    return counts, predicted


def random_activation(shape: tuple[int, int, int, int], seed: int, blocks: int = 3) -> Tensor:
    """A ReLU-like activation: relu(randn) with zero blocks injected, so that tiles really fire.

    Each (image, channel) map gets ``blocks`` zeroed rectangles of random size and position, and
    every third map a zeroed diagonal stripe (zero diagonal, nonzero neighbours: pred_miss).
    """
    generator = torch.Generator().manual_seed(seed)
    n_images, n_channels, height, width = shape
    activation = torch.randn(shape, generator=generator).relu()  # (N, C, H, W), ~half zeros

    def randint(high: int) -> int:
        return int(torch.randint(high, (1,), generator=generator))

    for n in range(n_images):
        for c in range(n_channels):
            for _ in range(blocks):
                top, left = randint(height), randint(width)
                block_h, block_w = 1 + randint(5), 1 + randint(5)
                activation[n, c, top : top + block_h, left : left + block_w] = 0
            if (n * n_channels + c) % 3 == 0:
                for i in range(min(height, width)):
                    activation[n, c, i, i] = 0
                    activation[n, c, i, (i + 1) % width] += 1.0  # a nonzero neighbour
    return activation
