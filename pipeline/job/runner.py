"""One job of a sweep: validate, skip if already done, evaluate with prediction, record in MLflow.

``run(cfg)`` is plain Python so tests can call it; ``pipeline/__main__.py`` is the Hydra shell.
Everything that can fail on bad input (config values, model, weights, data, layer) is checked
before a run is created, so bad input never leaves a run behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
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
from pipeline.job.config import PipelineConfig, validate
from pipeline.job.identity import MEASUREMENT_VERSION, identity_extras
from pipeline.measurement.counts import backend as counting_backend
from pipeline.measurement.counts import layer_metrics, rate_metrics
from pipeline.measurement.evaluate import Evaluation, evaluate
from pipeline.measurement.instrument import InstrumentedModel
from pipeline.networks.checks import check_model
from pipeline.networks.data import load_eval_data
from pipeline.networks.layers import PredictableLayer, TraceError, discover_layers, model_conv_macs, resolve_scope
from pipeline.networks.models import build_model
from pipeline.predictors import (
    BuildContext,
    Predictor,
    factory,
    kind_class,
    parameters,
    plain_value,
    predicts_nothing,
    resolve_plans,
)
from pipeline.tracking.client import git_commit
from pipeline.tracking.keys import (
    BASELINE_TAG,
    CONFIG_HASH_TAG,
    COUNTING_TAG,
    MEASUREMENT_VERSION_TAG,
    OPERATING_POINT_PARAM,
    PARENT_RUN_TAG,
    RECOVER_PARAM,
    SPLIT_PARAM,
    SWEEP_TAG,
)
from pipeline.tracking.redact import redact, redact_tree
from pipeline.tracking.tracker import Tracker

# keys that do not change a job's numbers: not part of its identity for resume
VOLATILE_KEYS = ("force", "progress", "tracking", "device", "objective")
VOLATILE_DATA_KEYS = ("batch_size", "num_workers", "cache", "download")
# keys added after identities were first recorded: left out of the identity at their default, so the
# runs recorded before a key existed keep their identity (a rerun reuses them)
LATER_DEFAULTS = {("model", "leaf_modules"): []}


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


def config_hash(cfg: DictConfig) -> str:
    """A job's identity: its resolved config without the keys that do not change its numbers."""
    plain = plain_config(cfg)
    for key in VOLATILE_KEYS:
        plain.pop(key, None)
    for key in VOLATILE_DATA_KEYS:
        plain.get("data", {}).pop(key, None)
    for (group, key), default in LATER_DEFAULTS.items():
        if plain.get(group, {}).get(key, default) == default:
            plain.get(group, {}).pop(key, None)
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


def canonical(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """The config as it is evaluated, with the keys that cannot change its numbers set to one value.

    A run that predicts nothing in any layer does not depend on ``layer`` (a layer sweep runs its
    baseline once, as ``layer=all``); a kind without tiles does not depend on ``window`` (set to 1).
    Returns the new config and a note per change, for the job's line.
    """
    config = validate(cfg)
    plain = plain_config(cfg)
    plain["predictor"]["layers"] = {str(key): entry for key, entry in plain["predictor"].get("layers", {}).items()}
    notes = []
    tiled = kind_class(config.predictor.kind).tiled or any(
        kind_class(entry.kind or config.predictor.kind).tiled for entry in config.predictor.layers.values()
    )
    if not tiled and config.window != 1:
        plain["window"] = 1
        notes.append(f"predictor {config.predictor.kind} cuts no tiles: runs as window=1")
    if config.layer != "all" and predicts_nothing(config.predictor, config.window):
        plain["layer"] = "all"
        notes.append(f"nothing is predicted, so layer={config.layer} does not matter: runs as layer=all")
    return OmegaConf.create(plain), notes


def run(cfg: DictConfig, job: HydraJob | None = None) -> JobResult:
    """Evaluate one configuration and record it as one MLflow run."""
    job = job or HydraJob.current()
    try:
        config = validate(cfg)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = pick_device(config.device)
    model = _build(config).to(device)
    layers = _check_layers(model, config)
    requested = _layer_text(config.layer, layers)
    try:
        cfg, notes = canonical(cfg)
        config = validate(cfg)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    for note in notes:
        print(f"{model_label(config)} layer={requested}: {note}", flush=True)
    predictors = _build_predictors(config, layers)
    try:
        check_recovery(config.recover, model, model_label(config))
    except RecoverError as exc:
        raise PipelineError(str(exc)) from None
    where = describe(config, layers)
    identity = config_hash(cfg)
    tracker = Tracker(config.tracking)
    if not config.force:
        done = tracker.finished_run(identity)
        if done is not None:
            line = f"skipped {where}: identical FINISHED run {done} (force=true reruns it)"
            _write_result(job, "skipped", done)
            print(line, flush=True)
            return JobResult("skipped", done, line, tracker.run_metrics(done))

    data = _load(config)
    if tuple(data.image_shape) != tuple(config.model.input_size):
        raise PipelineError(
            f"data {config.data.name} gives {tuple(data.image_shape)} images but model "
            f"{model_label(config)} expects model.input_size={list(config.model.input_size)}"
        )
    max_window = max([config.window, *(p.window for p in predictors if getattr(p, "window", None))])
    check_model(
        model, model_label(config), config.model.input_size, max_window, config.data.name, data.num_classes, device
    )
    net = InstrumentedModel(model, lambda _layers, _scope: predictors, config.layer).to(device)
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
        }
        if config.recover.kind != "none":  # the recovered weights (a state_dict, weights_only loadable)
            artifacts["recovered_model.pt"] = _state_bytes(model)
        record.commit(metrics, [c.row() for c in result.layers], artifacts)
    line = (
        f"{where}: mac_saving={metrics['mac_saving']:.4f} net_mac_saving={metrics['net_mac_saving']:.4f} "
        f"top1={result.top1:.4f} top5={result.top5:.4f} "
        f"({result.images} images, {result.images / max(result.seconds, 1e-9):.0f} img/s)"
    )
    _write_result(job, "finished", record.run_id)
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


def model_label(config: PipelineConfig) -> str:
    """The model's name; a custom model is named by its factory (two custom nets stay apart)."""
    if config.model.name == "custom" and (config.model.target or config.model._target_):
        return f"custom:{config.model.target or config.model._target_}"
    return config.model.name


def predictor_label(config: PipelineConfig) -> str:
    """``tile(diagonal)``, ``tile(checkerboard,t=0.05)``, ``oracle``, ``random(diagonal)+2 layers``."""
    if config.operating_point is not None:
        return f"operating_point({config.operating_point.name})"
    predictor = config.predictor
    values = [str(plain_value(predictor.pattern))] if hasattr(predictor, "pattern") else []
    threshold = getattr(predictor, "threshold", 0.0)
    if threshold:
        values.append(f"t={threshold:g}")
    label = predictor.kind + (f"({','.join(values)})" if values else "")
    if predictor.layers:
        label += f"+{len(predictor.layers)} layer{'s' if len(predictor.layers) > 1 else ''}"
    return label


def describe(config: PipelineConfig, layers: list[PredictableLayer] | None = None) -> str:
    """The job's line head: ``alexnet_fmnist window=3 layer=3 (features.8) predictor=tile(diagonal)``."""
    layer = _layer_text(config.layer, layers)
    recovered = f" recover={config.recover.kind}" if config.recover.kind != "none" else ""
    return (
        f"{model_label(config)} window={config.window} layer={layer} predictor={predictor_label(config)}{recovered}"
    )


def _layer_text(layer: str, layers: list[PredictableLayer] | None) -> str:
    """``3 (features.8)`` for an index, the name as given otherwise."""
    if layers is None or layer == "all" or not layer.isdigit() or int(layer) >= len(layers):
        return layer
    return f"{layer} ({layers[int(layer)].name})"


def _check_layers(model: torch.nn.Module, config: PipelineConfig) -> list[PredictableLayer]:
    """The model's predictable layers; the layer scope and the per-layer table checked against them."""
    try:
        layers = discover_layers(model)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no predictable layer (a ReLU fed by Conv2d through "
                "BatchNorm2d, Identity or adds only): nothing to measure"
            )
        scope = resolve_scope(layers, config.layer)
        resolve_plans(config.predictor, config.window, layers, scope)
    except (ValueError, TraceError) as exc:
        raise PipelineError(f"model {model_label(config)}: {exc}") from None
    return layers


def _build_predictors(config: PipelineConfig, layers: list[PredictableLayer]) -> list[Predictor]:
    """One predictor per layer (a learned kind loads its checkpoint here, before any run exists)."""
    context = BuildContext(seed=config.seed, model=config.model.name)
    try:
        return factory(config.predictor, config.window, context)(layers, resolve_scope(layers, config.layer))
    except (ValueError, OSError) as exc:
        raise PipelineError(f"model {model_label(config)}, predictor {config.predictor.kind}: {exc}") from None


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
        **({OPERATING_POINT_PARAM: config.operating_point.name} if config.operating_point else {}),
        **{f"recover.{k}": v for k, v in vars(config.recover).items() if k != "kind"},
        "device": str(device),
    }
    for group in ("model", "data"):
        section = OmegaConf.to_container(OmegaConf.structured(getattr(config, group)))
        for key, value in section.items():
            values[f"{group}.{key}"] = value
    return values


def _build(config: PipelineConfig):
    from pipeline.networks.models import ModelError

    try:
        return build_model(config.model)
    except ModelError as exc:
        raise PipelineError(str(exc)) from None


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


def _write_result(job: HydraJob, status: str, run_id: str | None) -> None:
    """result.json in the job's Hydra output dir: the sweep summary reads it."""
    if job.output_dir:  # written whole or not at all: an interruption never leaves half a file
        temporary = Path(job.output_dir, "result.json.tmp")
        temporary.write_text(json.dumps({"status": status, "run_id": run_id}))
        os.replace(temporary, Path(job.output_dir, "result.json"))
