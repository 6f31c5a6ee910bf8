"""One job of a sweep: validate, skip if already done, evaluate with prediction, record in MLflow.

``run(cfg)`` is plain Python so tests can call it; ``pipeline/__main__.py`` is the Hydra shell.
Everything that can fail on bad input (config values, model, weights, data, layer) is checked
before a run is created, so bad input never leaves a run behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from omegaconf import DictConfig, OmegaConf

import pipeline
from pipeline.checks import check_model
from pipeline.config import PipelineConfig, plain_config, validate
from pipeline.counts import rate_metrics
from pipeline.data import load_eval_data
from pipeline.errors import PipelineError
from pipeline.evaluate import Evaluation, evaluate
from pipeline.identity import MEASUREMENT_VERSION, identity_extras
from pipeline.instrument import InstrumentedModel
from pipeline.layers import model_conv_macs
from pipeline.models import build_model
from pipeline.prediction import build_predictor
from pipeline.tracking import CONFIG_HASH_TAG, PARENT_RUN_TAG, SWEEP_TAG, Tracker, git_commit

# keys that do not change a job's numbers: not part of its identity for resume
VOLATILE_KEYS = ("force", "progress", "tracking", "device")
VOLATILE_DATA_KEYS = ("batch_size", "num_workers", "cache", "download")


@dataclass
class JobResult:
    status: str  # finished, skipped
    run_id: str | None
    line: str


@dataclass
class HydraJob:
    """What a job knows about its Hydra context (empty when called without Hydra)."""

    sweep: str | None = None  # the multirun's sweep dir
    number: int | None = None
    overrides: tuple[str, ...] = ()
    output_dir: str | None = None

    @classmethod
    def current(cls) -> HydraJob:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return cls()
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(
            sweep=str(Path(hc.sweep.dir).resolve()) if multirun else None,
            number=hc.job.num if multirun else None,
            overrides=tuple(hc.overrides.task),
            output_dir=hc.runtime.output_dir,
        )


def config_hash(cfg: DictConfig) -> str:
    """A job's identity: its resolved config without the keys that do not change its numbers."""
    plain = plain_config(cfg)
    for key in VOLATILE_KEYS:
        plain.pop(key, None)
    for key in VOLATILE_DATA_KEYS:
        plain.get("data", {}).pop(key, None)
    plain["identity"] = identity_extras(plain)  # checkpoint contents and the measurement version
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return device


def run(cfg: DictConfig, job: HydraJob | None = None) -> JobResult:
    """Evaluate one configuration and record it as one MLflow run."""
    job = job or HydraJob.current()
    try:
        config = validate(cfg)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    identity = config_hash(cfg)
    tracker = Tracker(config.tracking)
    if not config.force:
        done = tracker.finished_run(identity)
        if done is not None:
            line = f"skipped {describe(config)}: identical FINISHED run {done} (force=true reruns it)"
            _write_result(job, "skipped", done)
            print(line, flush=True)
            return JobResult("skipped", done, line)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = pick_device(config.device)
    model = _build(config).to(device)
    identity = config_hash(cfg)  # building may have downloaded the weights whose contents it covers
    data = _load(config)
    if tuple(data.image_shape) != tuple(config.model.input_size):
        raise PipelineError(
            f"data {config.data.name} gives {tuple(data.image_shape)} images but model "
            f"{config.model.name} expects model.input_size={list(config.model.input_size)}"
        )
    check_model(
        model, config.model.name, config.model.input_size, config.window, config.data.name, data.num_classes, device
    )
    try:
        net = InstrumentedModel(model, build_predictor(config.predictor, config.window), config.layer)
    except ValueError as exc:
        raise PipelineError(f"model {config.model.name}: {exc}") from None
    conv_macs = model_conv_macs(model, tuple(config.model.input_size))

    parent = tracker.parent_of(job.sweep) if job.sweep else None
    tags = {
        CONFIG_HASH_TAG: identity,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "project_version": pipeline.__version__,
        "measurement_version": str(MEASUREMENT_VERSION),
        **({SWEEP_TAG: job.sweep} if job.sweep else {}),
        **({PARENT_RUN_TAG: parent} if parent else {}),
        **({"job.num": str(job.number)} if job.number is not None else {}),
    }
    name = f"{config.model.name}-w{config.window}-{config.layer}"
    claim = tracker.claim(identity, name, tags, config.force)  # the run, unless another holds this config
    if claim.run_id is None:
        line = f"skipped {describe(config)}: {claim.reason}"
        _write_result(job, "skipped", claim.holder)
        print(line, flush=True)
        return JobResult("skipped", claim.holder, line)
    with tracker.job_run(claim.run_id, params(config, device)) as record:
        result = evaluate(
            net, data, device, config.data.batch_size, config.data.num_workers, config.progress, label=name
        )
        metrics = model_metrics(result, conv_macs)
        record.commit(
            metrics,
            [c.row() for c in result.layers],
            {
                "config.yaml": OmegaConf.to_yaml(plain_config(cfg)),
                "overrides.yaml": OmegaConf.to_yaml(list(job.overrides)),
            },
        )
    line = (
        f"{config.model.name} window={config.window} layer={config.layer}: "
        f"mac_saving={metrics['mac_saving']:.4f} top1={result.top1:.4f} top5={result.top5:.4f} "
        f"({result.images} images, {result.images / max(result.seconds, 1e-9):.0f} img/s)"
    )
    _write_result(job, "finished", record.run_id)
    print(line, flush=True)
    return JobResult("finished", record.run_id, line)


def model_metrics(result: Evaluation, conv_macs_per_image: int) -> dict[str, float]:
    """Every MLflow metric of contract section 5, model-level and per layer."""
    conv_macs = conv_macs_per_image * result.images
    metrics: dict[str, float] = {"top1": result.top1, "top5": result.top5}
    metrics.update(rate_metrics(result.layers, conv_macs))
    metrics["images"] = result.images
    metrics["model_conv_macs_per_image"] = conv_macs_per_image
    metrics["eval_seconds"] = result.seconds
    for layer in result.layers:
        for key, value in rate_metrics([layer], conv_macs).items():
            metrics[f"layer/{layer.name}/{key}"] = value
    return metrics


def describe(config: PipelineConfig) -> str:
    return f"{config.model.name} window={config.window} layer={config.layer}"


def params(config: PipelineConfig, device: torch.device) -> dict[str, object]:
    """Run parameters: the swept keys by their short names, then model.* and data.*."""
    values: dict[str, object] = {
        "model": config.model.name,
        "data": config.data.name,
        "window": config.window,
        "layer": config.layer,
        "limit": config.data.limit,
        "seed": config.seed,
        "predictor": config.predictor,
        "device": str(device),
    }
    for group in ("model", "data"):
        section = OmegaConf.to_container(OmegaConf.structured(getattr(config, group)))
        for key, value in section.items():
            values[f"{group}.{key}"] = value
    return values


def _build(config: PipelineConfig):
    from pipeline.models import ModelError

    try:
        return build_model(config.model)
    except ModelError as exc:
        raise PipelineError(str(exc)) from None


def _load(config: PipelineConfig):
    from pipeline.data import DataError

    try:
        return load_eval_data(config.data, config.seed)
    except DataError as exc:
        raise PipelineError(str(exc)) from None


def _write_result(job: HydraJob, status: str, run_id: str | None) -> None:
    """result.json in the job's Hydra output dir: the sweep summary reads it."""
    if job.output_dir:  # written whole or not at all: an interruption never leaves half a file
        temporary = Path(job.output_dir, "result.json.tmp")
        temporary.write_text(json.dumps({"status": status, "run_id": run_id}))
        os.replace(temporary, Path(job.output_dir, "result.json"))
