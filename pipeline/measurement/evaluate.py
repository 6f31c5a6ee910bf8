"""One evaluation pass: the instrumented forward over the evaluated images, with accuracy."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from pipeline.measurement.accuracy import outcomes, topk_correct
from pipeline.measurement.counts import LayerCounts
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.data import EvalData


@dataclass
class Predictions:
    """Each evaluated image's outcome, in evaluation order (contract section 11: predictions.csv)."""

    image: list[int]  # the image's index in its split
    label: list[int]
    pred: list[int]  # top-1 class
    top5: list[int]  # 1 when the label is among the five highest scores

    def csv(self) -> str:
        rows = zip(self.image, self.label, self.pred, self.top5, strict=True)
        return "image,label,pred,top5\n" + "".join(f"{i},{y},{p},{t}\n" for i, y, p, t in rows)


@dataclass
class Evaluation:
    """What one pass measured."""

    layers: list[LayerCounts]
    images: int
    top1: float
    top5: float
    seconds: float
    predictions: Predictions | None = None


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
    labels_seen, preds, top5s = [], [], []
    start = time.perf_counter()
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=data.size, unit="img", desc=label, disable=disable, leave=False, dynamic_ncols=True) as bar:
        with torch.inference_mode():
            for batch, labels in data.batches(batch_size, num_workers):
                batch = batch.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = net(batch)
                correct += topk_correct(logits, labels, (1, 5))
                pred, in_top5 = outcomes(logits, labels)
                labels_seen.append(labels.cpu()), preds.append(pred.cpu()), top5s.append(in_top5.cpu())
                images += len(labels)
                bar.update(len(labels))
    seconds = time.perf_counter() - start
    top1, top5 = (c / images if images else 0.0 for c in correct.tolist())
    joined = [torch.cat(part).tolist() if part else [] for part in (labels_seen, preds, top5s)]
    indices = list(range(images)) if data.indices is None else list(data.indices)
    predictions = Predictions(indices, joined[0], joined[1], [int(v) for v in joined[2]])
    return Evaluation(net.layer_counts(), images, top1, top5, seconds, predictions)
