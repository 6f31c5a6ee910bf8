"""Paired statistics of an accuracy drop (contract section 11): a run against its baseline on the same
images, image by image.

Two runs on the same n images differ only where one classifies an image right and the other wrong:
b images the baseline gets right and the run wrong, c the other way. The drop (b - c) / n is then known
far better than two unpaired accuracies would tell: its standard error comes from the flips alone.
Pure Python (no torch), so the analysis and the search share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # the two-sided 95 % interval's 1.96


def z_one_sided(confidence: float) -> float:
    """z_q of a one-sided bound at ``confidence`` q (0.95: 1.645)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"a confidence must lie strictly between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(confidence)


def mcnemar_p(b: int, c: int) -> float:
    """The exact McNemar p: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1; 1 when b + c = 0."""
    flips = b + c
    if flips == 0:
        return 1.0
    low = min(b, c)
    # sum of C(flips, i) / 2^flips for i <= low, in logs: exact enough for any flips a data set has
    log_half = flips * math.log(0.5)
    tail = sum(math.exp(math.lgamma(flips + 1) - math.lgamma(i + 1) - math.lgamma(flips - i + 1) + log_half)
               for i in range(low + 1))  # fmt: skip
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedDrop:
    """A run's top-1 drop against its baseline on the same ``images`` (positive: the run loses)."""

    flips_worse: int  # b: right in the baseline, wrong in the run
    flips_better: int  # c: wrong in the baseline, right in the run
    images: int  # n

    def __post_init__(self) -> None:
        if self.images <= 0 or min(self.flips_worse, self.flips_better) < 0:
            raise ValueError(f"a paired drop needs images > 0 and flips >= 0, not {self}")
        if self.flips_worse + self.flips_better > self.images:
            raise ValueError(f"{self.flips_worse} + {self.flips_better} flips among {self.images} images")

    @property
    def drop(self) -> float:
        """top1_drop = (b - c) / n."""
        return (self.flips_worse - self.flips_better) / self.images

    @property
    def se(self) -> float:
        """The paired standard error sqrt(((b + c) / n - drop^2) / n)."""
        n = self.images
        return math.sqrt(max((self.flips_worse + self.flips_better) / n - self.drop**2, 0.0) / n)

    @property
    def low(self) -> float:
        """top1_drop_low: the 95 % interval's lower end."""
        return self.drop - Z95 * self.se

    @property
    def high(self) -> float:
        """top1_drop_high: the 95 % interval's upper end."""
        return self.drop + Z95 * self.se

    def upper(self, confidence: float) -> float:
        """The one-sided upper bound at ``confidence``: drop + z_q * SE."""
        return self.drop + z_one_sided(confidence) * self.se

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_p(self.flips_worse, self.flips_better)

    def columns(self) -> dict[str, float]:
        """The summary's columns of contract section 11."""
        return {"flips_worse": self.flips_worse, "flips_better": self.flips_better, "top1_drop": self.drop,
                "top1_drop_low": self.low, "top1_drop_high": self.high, "mcnemar_p": self.mcnemar_p}  # fmt: skip


def paired_drop(baseline_right: Sequence[bool], run_right: Sequence[bool]) -> PairedDrop:
    """The paired drop from per-image outcomes (1/True: classified right), in the same image order."""
    if len(baseline_right) != len(run_right):
        raise ValueError(f"the baseline has {len(baseline_right)} images and the run {len(run_right)}")
    b = sum(1 for base, run in zip(baseline_right, run_right, strict=True) if base and not run)
    c = sum(1 for base, run in zip(baseline_right, run_right, strict=True) if run and not base)
    return PairedDrop(b, c, len(run_right))


PREDICTIONS_HEADER = ("image", "label", "pred", "top5")  # predictions.csv's columns (contract section 11)


@dataclass(frozen=True)
class Outcomes:
    """A run's per-image outcomes, read from its ``predictions.csv``."""

    right: tuple[bool, ...]  # pred == label, in evaluation order
    images: str  # a digest of the evaluated images and their labels: two runs pair only when theirs agree

    @property
    def top1(self) -> float:
        return sum(self.right) / len(self.right) if self.right else 0.0


def read_outcomes(text: str, images: int, top1: float) -> Outcomes:
    """The outcomes in a ``predictions.csv`` text; a ValueError unless it has one row per evaluated image
    (``images``) and its top-1 is the run's ``top1``."""
    import csv
    import hashlib
    import io

    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != PREDICTIONS_HEADER:
        found = ",".join(rows[0]) if rows else "nothing"
        raise ValueError(f"its columns are {found}, not {','.join(PREDICTIONS_HEADER)}")
    try:
        body = [(int(image), int(label), int(pred)) for image, label, pred, _top5 in rows[1:]]
    except ValueError:
        raise ValueError("a row is not four integers") from None
    right = tuple(pred == label for _image, label, pred in body)
    outcomes = Outcomes(right, hashlib.sha256(repr([(i, y) for i, y, _p in body]).encode()).hexdigest()[:16])
    if len(body) != images or abs(outcomes.top1 - top1) > 0.5 / max(images, 1):
        raise ValueError(
            f"it has {len(body)} rows with top-1 {outcomes.top1:.4f}; the run has {images} images and top-1 "
            f"{top1:.4f}"
        )
    return outcomes
