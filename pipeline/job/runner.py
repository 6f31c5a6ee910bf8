"""One job of a sweep: validate, skip if already done, evaluate with prediction, record in MLflow.

``run(cfg)`` is plain Python so tests can call it; ``pipeline/__main__.py`` is the Hydra shell.
Everything that can fail on bad input (config values, model, weights, data, layer) is checked
before a run is created, so bad input never leaves a run behind.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from omegaconf import DictConfig, OmegaConf

import pipeline
from pipeline.app import plain_config
from pipeline.errors import PipelineError
from pipeline.fitting.recover import RecoverError, recover
from pipeline.fitting.recover import check as check_recovery
from pipeline.job.config import OperatingPointInfo, PipelineConfig
from pipeline.job.identity import MEASUREMENT_VERSION
from pipeline.job.labels import describe, layer_text, model_label, predictor_label
from pipeline.job.plan import prepare
from pipeline.measurement.counts import backend as counting_backend
from pipeline.measurement.counts import layer_metrics, rate_metrics
from pipeline.measurement.evaluate import Evaluation, evaluate
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.checks import check_model
from pipeline.networks.data import load_eval_data
from pipeline.networks.layers import model_conv_macs
from pipeline.predictors import (
    parameters,
    plain_value,
)
from pipeline.tracking.client import git_commit
from pipeline.tracking.keys import (
    BASELINE_TAG,
    CONFIG_HASH_TAG,
    COUNTING_TAG,
    MEASUREMENT_VERSION_TAG,
    OPERATING_POINT_BUDGET_PARAM,
    OPERATING_POINT_CONFIDENCE_PARAM,
    OPERATING_POINT_PARAM,
    PARENT_RUN_TAG,
    PREDICTIONS_ARTIFACT,
    RECOVER_PARAM,
    SPLIT_PARAM,
    SWEEP_TAG,
)
from pipeline.tracking.redact import redact, redact_tree
from pipeline.tracking.tracker import Tracker


@dataclass
class JobResult:
    status: str  # finished, skipped
    run_id: str | None
    line: str
    metrics: dict[str, float] = field(default_factory=dict)  # the run's (empty: another process holds it)


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


def run(cfg: DictConfig, job: HydraJob | None = None) -> JobResult:
    """Evaluate one configuration and record it as one MLflow run."""
    job = job or HydraJob.current()
    plan = prepare(cfg)
    cfg, config, model, layers, device = plan.cfg, plan.config, plan.model, plan.layers, plan.device
    for note in plan.notes:
        print(f"{model_label(config)} layer={layer_text(plan.requested_layer, layers)}: {note}", flush=True)
    try:
        check_recovery(config.recover, model, model_label(config))
    except RecoverError as exc:
        raise PipelineError(str(exc)) from None
    where = describe(config, layers)
    identity = plan.identity
    tracker = Tracker(config.tracking)
    if not config.force:
        done = tracker.finished_run(identity)
        if done is not None:
            line = f"skipped {where}: identical FINISHED run {done} (force=true reruns it)"
            metrics = tracker.run_metrics(done)
            _write_result(job, "skipped", done, metrics)
            print(line, flush=True)
            return JobResult("skipped", done, line, metrics)

    data = _load(config)
    if tuple(data.image_shape) != tuple(config.model.input_size):
        raise PipelineError(
            f"data {config.data.name} gives {tuple(data.image_shape)} images but model "
            f"{model_label(config)} expects model.input_size={list(config.model.input_size)}"
        )
    check_model(
        model, model_label(config), config.model.input_size, plan.max_window, config.data.name, data.num_classes,
        device, plan.graph,
    )  # fmt: skip
    net = InstrumentedModel(model, lambda _layers, _scope: plan.predictors, config.layer, plan.graph, layers)
    net = net.to(device)
    conv_macs = model_conv_macs(model, tuple(config.model.input_size))
    baseline = config.recover.kind == "none" and all(p is None or p.predicts_nothing for p in net.predictors())

    parent = tracker.parent_of(job.sweep) if job.sweep else None
    tags = {
        CONFIG_HASH_TAG: identity,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "project_version": pipeline.__version__,
        MEASUREMENT_VERSION_TAG: str(MEASUREMENT_VERSION),
        COUNTING_TAG: counting_backend(device),
        **({SWEEP_TAG: job.sweep} if job.sweep else {}),
        **({PARENT_RUN_TAG: parent} if parent else {}),
        **({"job.num": str(job.number)} if job.number is not None else {}),
        BASELINE_TAG: str(baseline).lower(),
    }
    name = f"{model_label(config)}-{predictor_label(config)}-w{config.window}-{config.layer}"
    if config.recover.kind != "none":
        name += f"-{config.recover.kind}"
    claim = tracker.claim(identity, name, tags, config.force)  # the run, unless another holds this config
    if claim.run_id is None:
        line = f"skipped {where}: {claim.reason}"
        _write_result(job, "skipped", claim.holder)
        print(line, flush=True)
        return JobResult("skipped", claim.holder, line)
    with tracker.job_run(claim.run_id, params(config, device)) as record:
        try:
            recovered = recover(net, model, config.recover, config.data, config.seed, device, config.progress)
        except RecoverError as exc:
            raise PipelineError(str(exc)) from None
        result = evaluate(
            net, data, device, config.data.batch_size, config.data.num_workers, config.progress, label=name
        )
        metrics = {**model_metrics(result, conv_macs), **recovered}
        artifacts: dict[str, str | bytes] = {
            "config.yaml": OmegaConf.to_yaml(redact_tree(plain_config(cfg))),  # no password of tracking.uri
            "overrides.yaml": OmegaConf.to_yaml([redact(item) for item in job.overrides]),
            PREDICTIONS_ARTIFACT: result.predictions.csv() if result.predictions else "",
        }
        if config.recover.kind != "none":  # the recovered weights (a state_dict, weights_only loadable)
            artifacts["recovered_model.pt"] = _state_bytes(model)
        record.commit(metrics, [c.row() for c in result.layers], artifacts)
    line = (
        f"{where}: mac_saving={metrics['mac_saving']:.4f} net_mac_saving={metrics['net_mac_saving']:.4f} "
        f"top1={result.top1:.4f} top5={result.top5:.4f} "
        f"({result.images} images, {result.images / max(result.seconds, 1e-9):.0f} img/s)"
    )
    _write_result(job, "finished", record.run_id, metrics)
    print(line, flush=True)
    return JobResult("finished", record.run_id, line, metrics)


def model_metrics(result: Evaluation, conv_macs_per_image: int) -> dict[str, float]:
    """Every MLflow metric of contract section 5, model-level and per layer."""
    conv_macs = conv_macs_per_image * result.images
    metrics: dict[str, float] = {"top1": result.top1, "top5": result.top5}
    metrics.update(rate_metrics(result.layers, conv_macs))
    metrics["images"] = result.images
    metrics["model_conv_macs_per_image"] = conv_macs_per_image
    metrics["eval_seconds"] = result.seconds
    metrics.update(layer_metrics(result.layers, conv_macs))
    return metrics


def predictor_params(config: PipelineConfig) -> dict[str, object]:
    """``predictor`` (the kind) and ``predictor.<name>`` for each of its parameters and the layer table."""
    predictor = config.predictor
    values: dict[str, object] = {"predictor": predictor.kind}
    for name in parameters(type(predictor)):
        values[f"predictor.{name}"] = plain_value(getattr(predictor, name))
    table = {
        key: {k: plain_value(v) for k, v in vars(entry).items() if v is not None}
        for key, entry in predictor.layers.items()
    }
    values["predictor.layers"] = json.dumps(table, sort_keys=True, separators=(",", ":"))
    return values


def operating_point_params(point: OperatingPointInfo) -> dict[str, object]:
    """An operating point's name, budget and confidence, so the analysis can table it without its search."""
    return {OPERATING_POINT_PARAM: point.name, OPERATING_POINT_BUDGET_PARAM: point.budget,
            OPERATING_POINT_CONFIDENCE_PARAM: point.confidence}  # fmt: skip


def params(config: PipelineConfig, device: torch.device) -> dict[str, object]:
    """Run parameters: the swept keys by their short names, the predictor's, then model.* and data.*."""
    values: dict[str, object] = {
        "model": model_label(config),
        "data": config.data.name,
        "window": config.window,
        "layer": config.layer,
        "limit": config.data.limit,
        "seed": config.seed,
        SPLIT_PARAM: config.data.split,
        **predictor_params(config),
        RECOVER_PARAM: config.recover.kind,
        **(operating_point_params(config.operating_point) if config.operating_point else {}),
        **{f"recover.{k}": v for k, v in vars(config.recover).items() if k != "kind"},
        "device": str(device),
    }
    for group in ("model", "data"):
        section = OmegaConf.to_container(OmegaConf.structured(getattr(config, group)))
        for key, value in section.items():
            values[f"{group}.{key}"] = value
    return values


def _load(config: PipelineConfig):
    from pipeline.networks.data import DataError

    try:
        return load_eval_data(config.data, config.seed)
    except DataError as exc:
        raise PipelineError(str(exc)) from None


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _write_result(job: HydraJob, status: str, run_id: str | None, metrics: dict[str, float] | None = None) -> None:
    """result.json in the job's Hydra output dir: the sweep summary reads it, and a search its metrics."""
    if job.output_dir:  # written whole or not at all: an interruption never leaves half a file
        temporary = Path(job.output_dir, "result.json.tmp")
        temporary.write_text(json.dumps({"status": status, "run_id": run_id, "metrics": metrics or {}}))
        os.replace(temporary, Path(job.output_dir, "result.json"))
