"""Reference counts for one activation tensor, written straight from the measurement contract.

Sections 3, 4 and 7 of the measurement contract as plain Python loops over images, channels,
tiles and cells, on nested lists (no tensor ops), so that each line can be read against the
contract text. It is slow and obviously correct; the fast code must agree with it.

    counts, predicted = brute_force(activation, window=3)                         # the paper's rule
    counts, predicted = brute_force(activation, 3, "cross", kind="tile", threshold=0.1)
    counts, predicted = brute_force(activation, None, kind="oracle")

``counts`` maps every key of section 4 (plus ``others``, ``mass`` and ``miss_mass``) to a Python
number; ``predicted`` is the tensor the rest of the network receives (a new tensor; ``activation``
is not modified).
"""

from __future__ import annotations

import torch
from torch import Tensor

WINDOW_SIZES = (1, 2, 3, 4, 5)
GROUP_SIZES = (1, 2, 4, 8, 16, 32)  # section 10
INDEPENDENT_SIZES = (2, 3, 4, 5)
KEYS = (
    "acts",
    "zeros",
    "zero_diag",
    "pred_hit",
    "pred_miss",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
    *(f"skip_cells_g{g}" for g in GROUP_SIZES),
)
PATTERN_NAMES = ("diagonal", "anti_diagonal", "checkerboard", "corners", "center", "cross")


def in_pattern(i: int, j: int, k: int, pattern: str) -> bool:
    """Is offset (i, j) inside a k x k tile a pattern cell? (the table of contract section 7)"""
    if pattern == "diagonal":
        return i == j
    if pattern == "anti_diagonal":
        return i + j == k - 1
    if pattern == "checkerboard":
        return (i + j) % 2 == 0
    if pattern == "corners":
        return i in (0, k - 1) and j in (0, k - 1)
    if pattern == "center":
        return i == k // 2 and j == k // 2
    if pattern == "cross":
        return i == k // 2 or j == k // 2
    raise ValueError(f"unknown pattern {pattern!r}")


def tile_cells(top: int, left: int, k: int, height: int, width: int, pattern: str):
    """The in-bounds cells of the tile at (top, left): (pattern cells, other cells)."""
    pattern_cells, other_cells = [], []
    for i in range(k):
        for j in range(k):
            row, col = top + i, left + j
            if row >= height or col >= width:
                continue  # padded cell: never counted
            (pattern_cells if in_pattern(i, j, k, pattern) else other_cells).append((row, col))
    return pattern_cells, other_cells


def fires(a, pattern_cells, other_cells, kind: str, threshold: float) -> bool:
    """Contract section 7: whether one tile fires, for the deterministic tile kinds."""
    if not pattern_cells:
        return False  # a tile with no in-bounds pattern cell never fires
    if kind == "tile":  # every in-bounds pattern cell has value <= t (equals 0 for t = 0)
        return all((a[r][c] == 0) if threshold == 0 else (a[r][c] <= threshold) for r, c in pattern_cells)
    if kind == "tile_oracle":  # every in-bounds cell of the tile is 0
        return all(a[r][c] == 0 for r, c in pattern_cells + other_cells)
    raise ValueError(kind)


def rule_fired_tiles(activation: Tensor, window: int, pattern: str) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """The tiles the tile rule (threshold 0) fires, per (image, channel): [(top, left), ...]."""
    n_images, n_channels, height, width = activation.shape
    values = activation.tolist()
    fired = {}
    for n in range(n_images):
        for c in range(n_channels):
            fired[n, c] = []
            for top in range(0, height, window):
                for left in range(0, width, window):
                    cells = tile_cells(top, left, window, height, width, pattern)
                    if fires(values[n][c], *cells, "tile", 0.0):
                        fired[n, c].append((top, left))
    return fired


def brute_force(
    activation: Tensor,
    window: int | None,
    pattern: str = "diagonal",
    kind: str = "tile",
    threshold: float = 0.0,
    fired_tiles: dict[tuple[int, int], list[tuple[int, int]]] | None = None,
    group: int = 1,
) -> tuple[dict[str, float], Tensor]:
    """Counts of one ReLU output ``activation`` (N, C, H, W) and its predicted tensor.

    ``kind``: none, tile, tile_oracle, oracle, random (``fired_tiles`` then gives the tiles that
    fire, per (image, channel)). ``window`` None is a layer outside the scope (kind none).
    Besides the section-4 keys, ``others`` is counted directly: cells that are neither a pattern
    cell of a firing tile nor predicted; and the section-10 keys ``skip_cells_g<g>`` and
    ``zero_windows_indep_<s>`` (a float). ``group`` g (section 10): the channels c // g share one decision,
    a tile (or for ``oracle`` a cell) fires in all of them when it fires in every one of them alone.
    """
    if window is None:
        kind = "none"
    n_images, n_channels, height, width = activation.shape
    values = activation.tolist()  # nested lists [n][c][row][col] of Python numbers
    out = activation.tolist()  # what the rest of the network receives
    counts: dict[str, float] = dict.fromkeys(KEYS, 0)
    counts.update(others=0, mass=0.0, miss_mass=0.0)
    counts.update({f"zero_windows_indep_{s}": 0.0 for s in INDEPENDENT_SIZES})
    marked = [[[[False] * width for _ in range(height)] for _ in range(n_channels)] for _ in range(n_images)]

    def members(c: int) -> range:
        """The channels of c's group: g consecutive channels, the last group cut at C."""
        first = c // group * group
        return range(first, min(first + group, n_channels))

    def alone(n: int, c: int, top: int, left: int) -> bool:
        """Whether the tile at (top, left) of map (n, c) fires on its own (kinds with tiles)."""
        cells = tile_cells(top, left, window, height, width, pattern)
        if kind == "random":
            return (top, left) in fired_tiles[n, c]
        return fires(values[n][c], *cells, kind, threshold)

    for n in range(n_images):
        for c in range(n_channels):
            a = values[n][c]

            # acts, zeros and mass: every cell of the map.
            for row in range(height):
                for col in range(width):
                    counts["acts"] += 1
                    counts["mass"] += a[row][col]
                    if a[row][col] == 0:
                        counts["zeros"] += 1

            # zero_windows_indep_s: each of the map's windows all zero with probability
            # C(z, s*s) / C(H*W, s*s), z the map's zeros (drawn without replacement)
            z = sum(a[row][col] == 0 for row in range(height) for col in range(width))
            for s in INDEPENDENT_SIZES:
                probability = 1.0
                for i in range(s * s):
                    probability *= max(z - i, 0) / (height * width - i) if height * width > i else 0.0
                windows = max(height - s + 1, 0) * max(width - s + 1, 0)
                counts[f"zero_windows_indep_{s}"] += probability * windows

            # zero_windows_s, windows_s: stride-1, unpadded s x s windows of this channel.
            for s in WINDOW_SIZES:
                for top in range(height - s + 1):
                    for left in range(width - s + 1):
                        counts[f"windows_{s}"] += 1
                        if all(a[top + i][left + j] == 0 for i in range(s) for j in range(s)):
                            counts[f"zero_windows_{s}"] += 1

            counted = [[False] * width for _ in range(height)]  # pattern cell of a firing tile, or predicted

            def predict(row: int, col: int, a=a, n=n, c=c, counted=counted) -> None:
                if a[row][col] == 0:
                    counts["pred_hit"] += 1
                elif a[row][col] > 0:
                    counts["pred_miss"] += 1
                    counts["miss_mass"] += a[row][col]
                else:
                    raise ValueError("a ReLU output cannot be negative")
                out[n][c][row][col] = 0  # set to 0 downstream
                counted[row][col] = True
                marked[n][c][row][col] = True

            if kind == "oracle":  # every zero cell is predicted (in each channel of the group); no pattern cell
                for row in range(height):
                    for col in range(width):
                        if all(values[n][other][row][col] == 0 for other in members(c)):
                            predict(row, col)
            elif kind in ("tile", "tile_oracle", "random"):
                k = window
                for top in range(0, height, k):
                    for left in range(0, width, k):
                        pattern_cells, other_cells = tile_cells(top, left, k, height, width, pattern)
                        if kind == "random":  # the draws are made per group already
                            fire = (top, left) in fired_tiles[n, c]
                        else:
                            fire = all(alone(n, other, top, left) for other in members(c))
                        if not fire:
                            continue
                        for row, col in pattern_cells:  # computed: counted, kept as they are
                            counts["zero_diag"] += 1
                            counted[row][col] = True
                        for row, col in other_cells:
                            predict(row, col)
            elif kind != "none":
                raise ValueError(f"unknown kind {kind!r}")
            for row in range(height):
                for col in range(width):
                    if not counted[row][col]:
                        counts["others"] += 1

    # skip_cells_g: a position of a group of g consecutive channels (the last may be smaller) is
    # skippable when every channel of the group has it predicted; it counts the group's channels
    for g in GROUP_SIZES:
        for n in range(n_images):
            for first in range(0, n_channels, g):
                group = range(first, min(first + g, n_channels))
                for row in range(height):
                    for col in range(width):
                        if all(marked[n][c][row][col] for c in group):
                            counts[f"skip_cells_g{g}"] += len(group)

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
