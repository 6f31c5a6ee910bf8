"""Per-layer integer counts (measurement contract, section 4) and the model-level metrics of section 5.

:func:`measure` reduces one ReLU output to a vector of integer counts (no per-batch tensors are
kept, so memory does not grow with the data set); :class:`LayerCounts` holds the sums of one
layer over a whole evaluation and derives ``others`` and ``macs_saved``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline import kernels
from pipeline.prediction import Predictor, TilePredictor

WINDOW_SIZES = (1, 2, 3, 4, 5)
MEASURED_KEYS = (
    "acts",
    "zeros",
    "zero_diag",
    "pred_hit",
    "pred_miss",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
)
CSV_COLUMNS = (
    "index", "name", "convs", "macs_per_act", "acts", "zeros", "zero_diag", "pred_hit", "pred_miss",
    "others", "macs_saved",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
)  # fmt: skip


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


def window_totals(shape: torch.Size, sizes: tuple[int, ...] = WINDOW_SIZES) -> list[int]:
    """Number of stride-1 unpadded s x s windows: N*C*(H-s+1)*(W-s+1), 0 when H or W < s."""
    n, c, h, w = shape
    return [n * c * max(h - s + 1, 0) * max(w - s + 1, 0) for s in sizes]


def measure(activation: Tensor, predictor: Predictor | None) -> tuple[Tensor, Tensor]:
    """Counts of one ReLU output, then its prediction (when ``predictor`` is given).

    Returns (output, counts): ``output`` is what the rest of the network receives (``activation``
    modified in place where possible); ``counts`` is int64 in :data:`MEASURED_KEYS` order, taken on
    ``activation`` before the prediction is applied. Contiguous float32 CPU tensors go through the
    fused C kernel; everything else (CUDA, other dtypes, other predictors) through :func:`measure_torch`.
    """
    library = kernels.load() if _kernel_fits(activation, predictor) else None
    if library is None:
        return measure_torch(activation, predictor)
    n, c, h, w = activation.shape
    if predictor is None:
        window, pattern = 0, torch.ones(1, dtype=torch.uint8)
    else:
        window, pattern = predictor.window, predictor.pattern_bytes
    out = torch.zeros(9, dtype=torch.int64)  # zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5
    failed = library.cnp_measure(
        activation.data_ptr(), n * c, h, w, window, pattern.data_ptr(), 1, kernels.threads(), out.data_ptr()
    )
    if failed:
        raise MemoryError("the counting kernel could not allocate its row buffers")
    head = torch.tensor([activation.numel()], dtype=torch.int64)
    totals = torch.tensor(window_totals(activation.shape), dtype=torch.int64)
    return activation, torch.cat([head, out[:4], out[4:], totals])


def _kernel_fits(activation: Tensor, predictor: Predictor | None) -> bool:
    return (
        activation.device.type == "cpu"
        and activation.dtype == torch.float32
        and activation.dim() == 4
        and activation.is_contiguous()
        and not activation.requires_grad
        and (predictor is None or (isinstance(predictor, TilePredictor) and predictor.window <= 64))
    )


def measure_torch(activation: Tensor, predictor: Predictor | None) -> tuple[Tensor, Tensor]:
    """The pure-torch reference of :func:`measure`: any device, any dtype, any predictor."""
    zero = activation == 0  # (N, C, H, W) bool
    device = activation.device
    head = torch.tensor([activation.numel()], dtype=torch.int64, device=device)
    windows = zero_window_counts(zero)
    totals = torch.tensor(window_totals(activation.shape), dtype=torch.int64, device=device)
    if predictor is None:
        predicted = torch.zeros(3, dtype=torch.int64, device=device)
    else:
        activation, predicted = predictor.apply(activation, zero)
    zeros = windows[:1]  # 1x1 all-zero windows are the zero cells
    return activation, torch.cat([head, zeros, predicted, windows, totals])


@dataclass
class LayerCounts:
    """The section-4 counts of one predictable layer, summed over images and channels."""

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

    @property
    def others(self) -> int:
        return self.acts - self.zero_diag - self.pred_hit - self.pred_miss

    @property
    def macs_saved(self) -> int:
        return (self.pred_hit + self.pred_miss) * self.macs_per_act

    def add(self, values: list[int]) -> None:
        """Add a vector of counts in :data:`MEASURED_KEYS` order."""
        record = dict(zip(MEASURED_KEYS, values, strict=True))
        for key in ("acts", "zeros", "zero_diag", "pred_hit", "pred_miss"):
            setattr(self, key, getattr(self, key) + int(record[key]))
        for s in WINDOW_SIZES:
            self.zero_windows[s] += int(record[f"zero_windows_{s}"])
            self.windows[s] += int(record[f"windows_{s}"])

    def row(self) -> dict[str, int | str]:
        """One row of ``layers.csv`` (contract section 5), in :data:`CSV_COLUMNS` order."""
        row: dict[str, int | str] = {
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
        return row


def ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, 0.0 for an empty denominator (e.g. no 5x5 windows in a 4x4 map)."""
    return numerator / denominator if denominator else 0.0


def rate_metrics(counts: list[LayerCounts], conv_macs: int) -> dict[str, float]:
    """sparsity, zero_window/s, frac/*, mac_saving over ``counts`` (contract section 5).

    ``conv_macs`` is the model conv MACs of all evaluated images (per image x images).
    """
    acts = sum(c.acts for c in counts)
    metrics = {"sparsity": ratio(sum(c.zeros for c in counts), acts)}
    for s in WINDOW_SIZES:
        metrics[f"zero_window/{s}"] = ratio(sum(c.zero_windows[s] for c in counts), sum(c.windows[s] for c in counts))
    for key in ("pred_hit", "pred_miss", "zero_diag", "others"):
        metrics[f"frac/{key}"] = ratio(sum(getattr(c, key) for c in counts), acts)
    metrics["mac_saving"] = ratio(sum(c.macs_saved for c in counts), conv_macs)
    return metrics
