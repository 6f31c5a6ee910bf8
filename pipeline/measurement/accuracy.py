"""Top-k accuracy, counted the way torchvision's reference ``accuracy()`` computes it."""

from __future__ import annotations

import torch
from torch import Tensor


def outcomes(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: the top-1 class and whether the target is among the five highest logits (contract
    section 11's ``pred`` and ``top5``), ranked as :func:`topk_correct` ranks them, so the mean of
    pred == target is top-1 and the mean of top5 is top-5. (N, classes), (N,) -> int64 (N,), bool (N,)."""
    maxk = min(5, output.shape[1])
    _, pred = output.topk(maxk, 1, True, True)  # (N, maxk)
    return pred[:, 0], pred.eq(target[:, None]).any(1)


def topk_correct(output: Tensor, target: Tensor, topk: tuple[int, ...] = (1, 5)) -> Tensor:
    """Correct predictions in a batch for each k: (N, classes), (N,) -> int64 (len(topk),).

    As torchvision's references/classification/utils.py ``accuracy``: the target counts as correct
    for k when it is among the k largest logits (``topk(k, largest=True, sorted=True)``).
    k larger than the number of classes is capped at the number of classes.
    """
    maxk = min(max(topk), output.shape[1])
    _, pred = output.topk(maxk, 1, True, True)  # (N, maxk)
    correct = pred.t().eq(target[None])  # (maxk, N)
    return torch.stack([correct[: min(k, maxk)].sum() for k in topk])
