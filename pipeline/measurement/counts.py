"""Per-layer counts (measurement contract, sections 4, 7, 8, 10) and the model-level metrics of sections 5, 7,
8, 10.

:func:`measure` reduces one ReLU output to a vector of integer counts and a vector of float sums
(no per-batch tensors are kept, so memory does not grow with the data set) and applies the layer's
prediction; :class:`LayerCounts` holds the sums of one layer over a whole evaluation and derives
``others`` and ``macs_saved``.

The statistics that do not depend on the predictor (acts, zeros, all-zero windows, mass) are
taken apart from it. The prediction is counted from the predictor's masks (any kind, any device:
the reference), or, for the kinds the fused C kernel knows, inside the kernel in the same pass, the
decision-granularity counts (``skip_cells_g<g>``: what survives when g consecutive channels must agree)
and the chance level of the all-zero windows included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline.measurement import kernels
from pipeline.predictors import NOT_APPLICABLE, NOTHING, Firing, LayerInput, Predictor
from pipeline.tracking.keys import (
    CSV_COLUMNS,
    GROUP_SIZES,
    INDEPENDENT_COLUMNS,
    INDEPENDENT_SIZES,
    SKIP_COLUMNS,
    WINDOW_SIZES,
    layer_metric,
)

MEASURED_KEYS = (
    "acts",
    "zeros",
    "zero_diag",
    "pred_hit",
    "pred_miss",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
    *SKIP_COLUMNS,
    "predictor_macs",  # last: a predictor's cost is added at counts[-1]
)
MASS_KEYS = ("mass", "miss_mass", *INDEPENDENT_COLUMNS)  # float sums
_PREDICTION = slice(2, 5)  # zero_diag, pred_hit, pred_miss in MEASURED_KEYS
_SKIP = slice(MEASURED_KEYS.index(SKIP_COLUMNS[0]), MEASURED_KEYS.index(SKIP_COLUMNS[-1]) + 1)
_INDEPENDENT = slice(2, 2 + len(INDEPENDENT_SIZES))  # in MASS_KEYS

__all__ = [
    "CSV_COLUMNS", "MASS_KEYS", "MEASURED_KEYS", "WINDOW_SIZES", "LayerCounts", "Measurement", "independent_windows",
    "measure", "measure_torch", "predict", "rate_metrics", "ratio", "skip_cell_counts", "window_totals",
    "zero_window_counts",
]  # fmt: skip


@dataclass
class Measurement:
    """What :func:`measure` returns for one batch of one layer."""

    output: Tensor  # what the rest of the network receives (the activation, modified in place where allowed)
    counts: Tensor  # int64 (len(MEASURED_KEYS),)
    masses: Tensor  # float64 (len(MASS_KEYS),)


def zero_window_counts(zero: Tensor, sizes: tuple[int, ...] = WINDOW_SIZES) -> Tensor:
    """All-zero stride-1, unpadded s x s windows per channel, for s = 1..max(sizes).

    (N, C, H, W) bool -> int64 (len(sizes),). An s x s window at (r, c) is all zero when the four
    (s-1) x (s-1) windows at (r, c), (r+1, c), (r, c+1), (r+1, c+1) are.
    """
    counts = torch.zeros(len(sizes), dtype=torch.int64, device=zero.device)
    window = zero
    for s in range(1, max(sizes) + 1):
        if s > 1:
            if window.shape[-2] < 2 or window.shape[-1] < 2:
                break  # H or W < s: no windows of this size or larger
            window = window[..., :-1, :-1] & window[..., 1:, :-1] & window[..., :-1, 1:] & window[..., 1:, 1:]
        if s in sizes:
            counts[sizes.index(s)] = window.sum()
    return counts


def skip_cell_counts(predicted: Tensor, groups: tuple[int, ...] = GROUP_SIZES) -> Tensor:
    """``skip_cells_g<g>`` of one layer's predicted cells (contract section 10), for each g of ``groups``.

    (N, C, H, W) bool -> int64 (len(groups),). Channels are cut into groups of g consecutive channels (the
    last holds C mod g when g does not divide C); a position (n, group, y, x) is skippable when every
    channel of its group has (y, x) predicted, and counts as many cells as its group has channels. The
    channels are padded with predicted cells to a multiple of the largest g (padding never blocks a
    group and counts nothing), so the groups of 2g are pairs of groups of g: one AND per doubling.
    """
    n, c, h, w = predicted.shape
    counts = torch.zeros(len(groups), dtype=torch.int64, device=predicted.device)
    if predicted.numel() == 0:
        return counts
    widest = max(groups)
    if any(widest % g for g in groups) or any(g & (g - 1) for g in groups):
        raise ValueError(f"group sizes must be powers of two, got {groups}")
    padded = -(-c // widest) * widest
    level = predicted
    if padded != c:
        level = torch.cat([predicted, predicted.new_ones((n, padded - c, h, w))], dim=1)
    g = 1
    while True:
        if g in groups:
            skippable = level.sum(dim=(0, 2, 3))  # per group: its skippable positions
            width = (c - torch.arange(0, padded, g, device=predicted.device)).clamp(0, g)  # its real channels
            counts[groups.index(g)] = (skippable * width).sum()
        if g >= widest:
            return counts
        level = level[:, 0::2] & level[:, 1::2]
        g *= 2


def independent_windows(zeros_per_map: Tensor, h: int, w: int, sizes: tuple[int, ...] = INDEPENDENT_SIZES) -> Tensor:
    """``zero_windows_indep_<s>`` (contract section 10): the all-zero s x s windows (stride 1, unpadded)
    expected if each map's zeros lay at random, summed over maps. ``zeros_per_map``: the zero count z of
    every H x W map. A window is all zero with probability prod_{i < s*s} (z - i) / (H*W - i) (0 when
    z < s*s); a map has (H-s+1)(W-s+1) windows. float64 (len(sizes),), 0 where H or W < s."""
    cells = h * w
    tally = torch.bincount(zeros_per_map.reshape(-1).to(device="cpu", dtype=torch.int64), minlength=cells + 1)
    tally = tally.to(torch.float64)
    out = torch.zeros(len(sizes), dtype=torch.float64)
    for position, s in enumerate(sizes):
        if s <= h and s <= w:
            out[position] = (tally * _all_zero_probability(cells, s * s)).sum() * ((h - s + 1) * (w - s + 1))
    return out


_PROBABILITY: dict[tuple[int, int], Tensor] = {}


def _all_zero_probability(cells: int, need: int) -> Tensor:
    """P(``need`` given cells of a map are all zero | z zeros among ``cells``), for z = 0..cells (float64)."""
    if (cells, need) not in _PROBABILITY:
        z = torch.arange(cells + 1, dtype=torch.float64)
        probability = torch.ones(cells + 1, dtype=torch.float64)
        for i in range(need):
            probability *= ((z - i) / (cells - i)).clamp(min=0)
        _PROBABILITY[cells, need] = probability
    return _PROBABILITY[cells, need]


def window_totals(shape: torch.Size | tuple[int, ...], sizes: tuple[int, ...] = WINDOW_SIZES) -> list[int]:
    """Number of stride-1 unpadded s x s windows: N*C*(H-s+1)*(W-s+1), 0 when H or W < s."""
    n, c, h, w = shape
    return [n * c * max(h - s + 1, 0) * max(w - s + 1, 0) for s in sizes]


def measure(
    activation: Tensor, predictor: Predictor | None, first_image: int = 0, counting: bool = True
) -> Measurement:
    """Counts of one ReLU output, then its prediction (``predictor`` None: no prediction).

    Counts are taken on ``activation`` before the prediction is applied. Contiguous float32 CPU
    tensors go through the fused C kernel (statistics, and the prediction of the kinds it knows);
    everything else through the torch functions that :func:`measure_torch` uses. Under autograd the
    prediction is applied out of place, so gradients flow through the cells that are kept.
    ``counting`` False: only the prediction matters (recovery passes), so the kernel leaves out the
    section-10 counts, which need the predicted cells and every map's zero count.
    """
    if not (kernels.fits(activation) and kernels.load() is not None):
        return measure_torch(activation, predictor, first_image)
    firing = NOTHING if predictor is None else predictor.firing(LayerInput(activation, None, first_image))
    if firing is not None:
        result = _kernel(activation, firing, apply=True, extra=counting)
        if predictor is not None:
            result.counts[-1] += predictor.macs(tuple(activation.shape))
        return result
    statistics = _kernel(activation, NOTHING, apply=False, extra=counting)
    return _predict(activation, predictor, first_image, statistics.counts, statistics.masses)


def predict(activation: Tensor, predictor: Predictor | None, first_image: int = 0) -> Tensor:
    """Only the prediction, nothing counted (recovery passes). Under autograd out of place, so the
    predicted cells pass no gradient and the others do."""
    if predictor is None or predictor.predicts_nothing:
        return activation
    if not (activation.requires_grad and torch.is_grad_enabled()):
        return measure(activation, predictor, first_image, counting=False).output
    with torch.no_grad():
        _, predicted = predictor.masks(LayerInput(activation.detach(), activation == 0, first_image))
    return activation.masked_fill(predicted, 0)


def measure_torch(activation: Tensor, predictor: Predictor | None, first_image: int = 0) -> Measurement:
    """The pure-torch reference of :func:`measure`: any device, any dtype, any predictor kind."""
    with torch.no_grad():
        zero = activation == 0  # (N, C, H, W) bool
        device = activation.device
        windows = zero_window_counts(zero)
        counts = torch.cat(
            [
                torch.tensor([activation.numel()], dtype=torch.int64, device=device),
                windows[:1],  # 1x1 all-zero windows are the zero cells
                torch.zeros(3, dtype=torch.int64, device=device),  # filled by the prediction
                windows,
                torch.tensor(
                    [*window_totals(activation.shape), *[0] * len(SKIP_COLUMNS), 0], dtype=torch.int64, device=device
                ),  # fmt: skip
            ]
        )
        masses = torch.zeros(len(MASS_KEYS), dtype=torch.float64, device=device)
        masses[0] = activation.sum(dtype=torch.float64)
        h, w = activation.shape[-2:]
        masses[_INDEPENDENT] = independent_windows(zero.sum(dim=(2, 3)), h, w).to(device)
    return _predict(activation, predictor, first_image, counts, masses, zero)


def _predict(
    activation: Tensor,
    predictor: Predictor | None,
    first_image: int,
    counts: Tensor,
    masses: Tensor,
    zero: Tensor | None = None,
) -> Measurement:
    """Counts of the predictor's masks added to ``counts``/``masses``; the prediction applied."""
    if predictor is None:
        return Measurement(activation, counts, masses)
    with torch.no_grad():
        zero = activation == 0 if zero is None else zero
        basis, predicted = predictor.masks(LayerInput(activation, zero, first_image))
        hits = (predicted & zero).sum()
        counts[_PREDICTION] += torch.stack([basis.sum(), hits, predicted.sum() - hits]).to(counts.device)
        counts[_SKIP] += skip_cell_counts(predicted).to(counts.device)
        counts[-1] += predictor.macs(tuple(activation.shape))
        masses[1] += torch.where(predicted, activation, 0).sum(dtype=torch.float64).to(masses.device)
    if activation.requires_grad and torch.is_grad_enabled():
        return Measurement(activation.masked_fill(predicted, 0), counts, masses)
    return Measurement(activation.masked_fill_(predicted, 0), counts, masses)


def backend(device: torch.device) -> str:
    """Which path counts a float32 evaluation on ``device``: ``kernel`` (the fused C kernel, CPU) or
    ``torch`` (the reference: CUDA, or no C++ compiler, or CNP_NO_KERNEL=1). The same numbers either way."""
    return "kernel" if device.type == "cpu" and kernels.load() is not None else "torch"


# the fused kernel's mode for each firing rule (pipeline/measurement/kernels/measure.c)
KERNEL_MODES = {"nothing": 0, "pattern_at_most": 1, "all_zero_tiles": 2, "zero_cells": 3, "given_tiles": 4,
                "given_cells": 5}  # fmt: skip


def _given(firing: Firing, shape: tuple[int, ...]) -> Tensor | None:
    """The decision of a ``given_*`` firing as the kernel reads it: contiguous uint8, one byte per
    tile (``given_tiles``, (N, C, th, tw)) or per cell (``given_cells``, (N, C, H, W))."""
    if firing.given is None:
        return None
    n, c, h, w = shape
    k = firing.window
    expected = (n, c, -(-h // k), -(-w // k)) if firing.rule == "given_tiles" else (n, c, h, w)
    if tuple(firing.given.shape) != expected:
        raise ValueError(f"firing {firing.rule}: given has shape {tuple(firing.given.shape)}, expected {expected}")
    given = firing.given.to(device="cpu").contiguous()
    return given.view(torch.uint8) if given.dtype == torch.bool else given.to(torch.uint8)  # bool: its bytes


def _kernel(activation: Tensor, firing: Firing, apply: bool, extra: bool = True) -> Measurement:
    """The fused kernel on a contiguous float32 CPU tensor (prediction applied in place when ``apply``;
    the section-10 counts too when ``extra``)."""
    n, c, h, w = activation.shape
    pattern = torch.ones(1, dtype=torch.uint8) if firing.pattern is None else firing.pattern.to(torch.uint8)
    pattern = pattern.contiguous()
    given = _given(firing, tuple(activation.shape))
    # zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5; mass, miss_mass
    # zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5, skip_cells_g1..g32; the MASS_KEYS
    out, masses = kernels.measure_op(
        activation, pattern, given, firing.window, KERNEL_MODES[firing.rule], float(firing.threshold), apply,
        extra=extra,
    )  # fmt: skip
    head = torch.tensor([activation.numel()], dtype=torch.int64)
    windows = torch.tensor(window_totals(activation.shape), dtype=torch.int64)
    return Measurement(activation, torch.cat([head, out[:9], windows, out[9:], torch.zeros(1, dtype=torch.int64)]),
                       masses)  # fmt: skip


@dataclass
class LayerCounts:
    """The counts of one predictable layer, summed over images and channels, and its setting."""

    index: int
    name: str
    convs: tuple[str, ...]
    macs_per_act: int
    acts: int = 0
    zeros: int = 0
    zero_diag: int = 0
    pred_hit: int = 0
    pred_miss: int = 0
    zero_windows: dict[int, int] = field(default_factory=lambda: {s: 0 for s in WINDOW_SIZES})
    windows: dict[int, int] = field(default_factory=lambda: {s: 0 for s in WINDOW_SIZES})
    predictor_macs: int = 0
    mass: float = 0.0
    miss_mass: float = 0.0
    skip_cells: dict[int, int] = field(default_factory=lambda: dict.fromkeys(GROUP_SIZES, 0))  # section 10
    zero_windows_indep: dict[int, float] = field(default_factory=lambda: dict.fromkeys(INDEPENDENT_SIZES, 0.0))
    setting: dict[str, object] = field(
        default_factory=lambda: {"predictor": "none", "window": NOT_APPLICABLE, "pattern": NOT_APPLICABLE,
                                 "threshold": NOT_APPLICABLE, "group": NOT_APPLICABLE}
    )  # fmt: skip

    @property
    def others(self) -> int:
        return self.acts - self.zero_diag - self.pred_hit - self.pred_miss

    @property
    def macs_saved(self) -> int:
        return (self.pred_hit + self.pred_miss) * self.macs_per_act

    def add(self, values: list[int], masses: list[float] | None = None) -> None:
        """Add a vector of counts in :data:`MEASURED_KEYS` order (and of sums in :data:`MASS_KEYS` order)."""
        record = dict(zip(MEASURED_KEYS, values, strict=True))
        for key in ("acts", "zeros", "zero_diag", "pred_hit", "pred_miss", "predictor_macs"):
            setattr(self, key, getattr(self, key) + int(record[key]))
        for s in WINDOW_SIZES:
            self.zero_windows[s] += int(record[f"zero_windows_{s}"])
            self.windows[s] += int(record[f"windows_{s}"])
        for g, key in zip(GROUP_SIZES, SKIP_COLUMNS, strict=True):
            self.skip_cells[g] += int(record[key])
        if masses is not None:
            sums = dict(zip(MASS_KEYS, masses, strict=True))
            self.mass += float(sums["mass"])
            self.miss_mass += float(sums["miss_mass"])
            for s, key in zip(INDEPENDENT_SIZES, INDEPENDENT_COLUMNS, strict=True):
                self.zero_windows_indep[s] += float(sums[key])

    def row(self) -> dict[str, object]:
        """One row of ``layers.csv`` (contract sections 5, 7-9), in :data:`CSV_COLUMNS` order."""
        row: dict[str, object] = {
            "index": self.index,
            "name": self.name,
            "convs": ";".join(self.convs),
            "macs_per_act": self.macs_per_act,
            "acts": self.acts,
            "zeros": self.zeros,
            "zero_diag": self.zero_diag,
            "pred_hit": self.pred_hit,
            "pred_miss": self.pred_miss,
            "others": self.others,
            "macs_saved": self.macs_saved,
        }
        row.update({f"zero_windows_{s}": self.zero_windows[s] for s in WINDOW_SIZES})
        row.update({f"windows_{s}": self.windows[s] for s in WINDOW_SIZES})
        row.update(self.setting)
        row.update({"mass": self.mass, "miss_mass": self.miss_mass, "predictor_macs": self.predictor_macs})
        row.update({key: self.skip_cells[g] for g, key in zip(GROUP_SIZES, SKIP_COLUMNS, strict=True)})
        row.update({key: self.zero_windows_indep[s] for s, key in zip(INDEPENDENT_SIZES, INDEPENDENT_COLUMNS,
                                                                       strict=True)})  # fmt: skip
        return {key: row[key] for key in CSV_COLUMNS}


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 for an empty denominator (e.g. no 5x5 windows in a 4x4 map)."""
    return numerator / denominator if denominator else 0.0


def rate_metrics(counts: list[LayerCounts], conv_macs: int) -> dict[str, float]:
    """sparsity, zero_window/s, frac/*, mac_saving, predictor_mac_cost, net_mac_saving, skip/g<g> and
    zero_window_corr/<s> (NaN when random placement expects no all-zero window) over ``counts``.

    ``conv_macs`` is the model conv MACs of all evaluated images (per image x images): the
    denominator of the savings and costs, also when ``counts`` is one layer.
    """
    acts = sum(c.acts for c in counts)
    metrics = {"sparsity": ratio(sum(c.zeros for c in counts), acts)}
    for s in WINDOW_SIZES:
        metrics[f"zero_window/{s}"] = ratio(sum(c.zero_windows[s] for c in counts), sum(c.windows[s] for c in counts))
    for key in ("pred_hit", "pred_miss", "zero_diag", "others"):
        metrics[f"frac/{key}"] = ratio(sum(getattr(c, key) for c in counts), acts)
    metrics["frac/miss_mass"] = ratio(sum(c.miss_mass for c in counts), sum(c.mass for c in counts))
    metrics["mac_saving"] = ratio(sum(c.macs_saved for c in counts), conv_macs)
    metrics["predictor_mac_cost"] = ratio(sum(c.predictor_macs for c in counts), conv_macs)
    metrics["net_mac_saving"] = metrics["mac_saving"] - metrics["predictor_mac_cost"]
    for g in GROUP_SIZES:  # skip/g1 is mac_saving: the same integers over the same denominator
        metrics[f"skip/g{g}"] = ratio(sum(c.skip_cells[g] * c.macs_per_act for c in counts), conv_macs)
    for s in INDEPENDENT_SIZES:
        expected = sum(c.zero_windows_indep[s] for c in counts)
        metrics[f"zero_window_corr/{s}"] = sum(c.zero_windows[s] for c in counts) / expected if expected else math.nan
    return metrics


def layer_metrics(counts: list[LayerCounts], conv_macs: int) -> dict[str, float]:
    """The rates of every layer on its own, as ``layer/<name>/<key>`` metrics."""
    return {
        layer_metric(layer.name, key): value
        for layer in counts
        for key, value in rate_metrics([layer], conv_macs).items()
    }
