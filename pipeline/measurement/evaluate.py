"""One evaluation pass: the instrumented forward over the evaluated images, with accuracy."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from pipeline.measurement.accuracy import topk_correct
from pipeline.measurement.counts import LayerCounts
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.data import EvalData


@dataclass
class Evaluation:
    """What one pass measured."""

    layers: list[LayerCounts]
    images: int
    top1: float
    top5: float
    seconds: float


def evaluate(
    net: InstrumentedModel,
    data: EvalData,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    progress: bool | None = None,
    label: str = "eval",
) -> Evaluation:
    """Run every evaluated image through ``net``; counts and top-1/top-5 over all of them.

    ``progress``: None shows a bar only when stderr is a terminal.
    """
    correct = torch.zeros(2, dtype=torch.int64, device=device)
    images = 0
    start = time.perf_counter()
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=data.size, unit="img", desc=label, disable=disable, leave=False, dynamic_ncols=True) as bar:
        with torch.inference_mode():
            for batch, labels in data.batches(batch_size, num_workers):
                batch = batch.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = net(batch)
                correct += topk_correct(logits, labels, (1, 5))
                images += len(labels)
                bar.update(len(labels))
    seconds = time.perf_counter() - start
    top1, top5 = (c / images if images else 0.0 for c in correct.tolist())
    return Evaluation(net.layer_counts(), images, top1, top5, seconds)
