"""Recovery (contract section 9): win accuracy back with the prediction active, on the training split.

- ``bn``: BatchNorm running statistics re-estimated (plain averages over the pass) on calibration
  images spread over the training split, the prediction active, nothing else changed.
- ``finetune``: SGD with momentum on the cross-entropy of the training split's labels, the
  prediction active in the forward pass (the predicted cells pass no gradient), for ``epochs`` or
  ``steps``; BatchNorm statistics follow the predicted activations.

Both change the model in place (the job's own copy) and never read an evaluation image. Learned
predictors stay fixed. The job logs what was done and the recovered weights as an artifact.
"""

from __future__ import annotations

import math
import sys
import time

import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import BatchNormRecoverConfig, DataConfig, FinetuneRecoverConfig, RecoverConfig
from pipeline.measurement.instrument import InstrumentedModel


class RecoverError(ValueError):
    """Recovery cannot run with this model or data; the message says what to do."""


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check(recover: RecoverConfig, model: nn.Module, model_name: str) -> None:
    """Refuse a recovery that cannot change anything (before any run exists)."""
    if recover.kind == "bn" and not batchnorms(model):
        raise RecoverError(
            f"model {model_name} has no BatchNorm layer: recover=bn would change nothing; "
            "use recover=finetune, or recover=none"
        )


def training_data(data: DataConfig, images: int | None, seed: int):
    """Images and labels spread over the training split's fitting part (``data.split=train``): never its
    evaluation images, nor the calibration images searches check their choices on."""
    from pipeline.networks.data import DataError, load_eval_data

    config = DataConfig(**{**vars(data), "split": "train", "limit": images})
    try:
        return load_eval_data(config, seed)
    except DataError as exc:
        raise RecoverError(str(exc)) from None


def recover(
    net: InstrumentedModel,
    model: nn.Module,
    recover: RecoverConfig,
    data: DataConfig,
    seed: int,
    device: torch.device,
    progress: bool | None = None,
) -> dict[str, float]:
    """Run the recovery; returns what to log (``recover/...`` metrics). The net's counts are reset."""
    if recover.kind == "none":
        return {}
    started = time.perf_counter()
    net.measuring(False)
    try:
        if isinstance(recover, BatchNormRecoverConfig):
            logged = _batchnorm(net, model, recover, data, seed, device)
        elif isinstance(recover, FinetuneRecoverConfig):
            logged = _finetune(net, model, recover, data, seed, device, progress)
        else:
            raise RecoverError(f"unknown recover kind {recover.kind!r}")
    finally:
        net.measuring(True)
        net.reset()
        model.eval()
    return {**logged, "recover/seconds": time.perf_counter() - started}


def _batchnorm(net, model, recover: BatchNormRecoverConfig, data: DataConfig, seed: int, device) -> dict[str, float]:
    calibration = training_data(data, recover.images, seed)
    model.eval()
    momenta = {module: module.momentum for module in batchnorms(model)}
    for module in momenta:
        module.reset_running_stats()
        module.momentum = None  # cumulative: the plain average over the pass
        module.train()
    with torch.no_grad():
        for images, _ in calibration.batches(recover.batch_size):
            net(images.to(device))
    for module, momentum in momenta.items():
        module.momentum = momentum
    return {"recover/images": calibration.size}


def _finetune(
    net, model, recover: FinetuneRecoverConfig, data: DataConfig, seed: int, device, progress: bool | None
) -> dict[str, float]:
    training = training_data(data, recover.images, seed)
    if training.images is None:  # a streamed folder: load it once (fine-tuning reads it many times)
        batches = list(training.batches(recover.batch_size))
        images, labels = torch.cat([b for b, _ in batches]), torch.cat([y for _, y in batches])
    else:
        images, labels = training.images, training.labels
    per_epoch = math.ceil(len(images) / recover.batch_size)
    steps = recover.steps or max(1, round(recover.epochs * per_epoch))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        parameters, lr=recover.lr, momentum=recover.momentum, weight_decay=recover.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from the global generator
    criterion = nn.CrossEntropyLoss()
    model.train()
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    total, order = 0.0, torch.empty(0, dtype=torch.int64)
    with torch.enable_grad(), tqdm(total=steps, unit="step", desc="recover: finetune", disable=disable) as bar:
        for step in range(steps):
            start = (step % per_epoch) * recover.batch_size
            if start == 0:
                order = torch.randperm(len(images), generator=generator)
            index = order[start : start + recover.batch_size]
            logits = net(images[index].to(device))
            loss = criterion(logits, labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            bar.update(1)
    return {"recover/images": len(images), "recover/steps": steps, "recover/mean_loss": total / steps}
