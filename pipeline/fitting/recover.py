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
from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.data import DataConfig


@dataclass
class RecoverConfig:
    """Recovery (contract section 9; conf/recover/<kind>.yaml): none, bn or finetune."""

    kind: str = "none"


@dataclass
class BatchNormRecoverConfig(RecoverConfig):
    """Re-estimate BatchNorm running statistics with the prediction active, on training-split images."""

    kind: str = "bn"
    images: int = 2000  # calibration images, spread over the training split
    batch_size: int = 250

    def __post_init__(self) -> None:
        if self.images < 1 or self.batch_size < 1:
            raise ValueError(
                f"recover.images and recover.batch_size must be >= 1, got {self.images}, {self.batch_size}"
            )


@dataclass
class FinetuneRecoverConfig(RecoverConfig):
    """Fine-tune the model with the prediction active in the forward pass, on the training split."""

    kind: str = "finetune"
    images: Optional[int] = None  # training images, spread over the training split (null: all of them)
    epochs: float = 1.0  # passes over those images
    steps: Optional[int] = None  # optimizer steps instead of epochs
    lr: float = 0.001  # SGD with momentum
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.images is not None and self.images < 1:
            raise ValueError(f"recover.images must be >= 1 or null (all), got {self.images}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"recover.steps must be >= 1 or null (use recover.epochs), got {self.steps}")
        if self.steps is None and not self.epochs > 0:
            raise ValueError(f"recover.epochs must be > 0, got {self.epochs}")
        if not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"recover.lr must be > 0 and recover.batch_size >= 1, got {self.lr}, {self.batch_size}")


RECOVER_SCHEMAS = {"none": RecoverConfig, "bn": BatchNormRecoverConfig, "finetune": FinetuneRecoverConfig}


def recover_schema(recover: Any) -> RecoverConfig:
    """The checked schema object of a recover config (a mapping or a schema object)."""
    if isinstance(recover, RecoverConfig):
        return recover
    kind = dict(recover or {}).get("kind", "none")
    if kind not in RECOVER_SCHEMAS:
        raise ValueError(f"unknown recover kind {kind!r}; known: {', '.join(RECOVER_SCHEMAS)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RECOVER_SCHEMAS[kind]), dict(recover)))


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
    # torch.optim.swa_utils.update_bn does not fit: it puts the whole module in train mode (dropout on)
    # and resets every BatchNorm it reaches, the learned predictors' score networks inside ``net`` too
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
