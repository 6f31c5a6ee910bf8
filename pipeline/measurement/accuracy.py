"""Top-k accuracy, counted the way torchvision's reference ``accuracy()`` computes it."""

from __future__ import annotations

import torch
from torch import Tensor


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
