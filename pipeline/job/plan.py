"""One plan per job: what a job works out before its run exists, each fact once.

:func:`prepare` validates the composed config once, builds the model (recording the weights file it
reads), traces its graph once and discovers the layers on it, checks the layer scope, puts the config
in its canonical form (the keys that cannot change the numbers set to one value), resolves each
layer's plan once and builds the predictors (recording the checkpoints they read). The checks, the
instrumentation, the identity and the recording all read the :class:`JobPlan`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
from omegaconf import DictConfig, OmegaConf

from pipeline.app import plain_config
from pipeline.errors import PipelineError
from pipeline.job.config import PipelineConfig, validate
from pipeline.job.identity import config_hash
from pipeline.job.labels import model_label
from pipeline.networks.layers import PredictableLayer, TraceError, discover_layers, resolve_scope, trace
from pipeline.networks.models import ModelError, build_model
from pipeline.predictors import (
    BuildContext,
    Plan,
    Predictor,
    build_predictors,
    kind_class,
    predicts_nothing,
    resolve_plans,
)


@dataclass
class JobPlan:
    """A prepared job. ``cfg`` and ``config`` are canonical: what is evaluated, hashed and logged."""

    cfg: DictConfig
    config: PipelineConfig
    notes: list[str]  # what the canonical form changed, for the job's line
    requested_layer: str  # the layer as asked for (before the canonical form)
    device: torch.device
    model: torch.nn.Module
    graph: fx.GraphModule  # the model's forward, traced once (the instrumentation probes this one)
    layers: list[PredictableLayer]
    scope: set[int]
    plans: list[Plan]  # what each layer applies
    predictors: list[Predictor]
    files: list[Path]  # every weights file read, in the order read (the identity hashes exactly these)

    @property
    def identity(self) -> str:
        return config_hash(self.cfg, self.files)

    @property
    def max_window(self) -> int:
        return max([self.config.window, *(plan.window for plan in self.plans if plan.window)])


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return device


def prepare(cfg: DictConfig) -> JobPlan:
    """The job's plan from its composed config; bad input is a PipelineError before any run exists."""
    try:
        config = validate(cfg)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = pick_device(config.device)
    files: list[Path] = []
    try:
        model = build_model(config.model, files).to(device)
    except ModelError as exc:
        raise PipelineError(str(exc)) from None
    requested = config.layer
    try:
        graph = trace(model)
        layers = discover_layers(model, graph)
        if not layers:
            raise ValueError(
                f"{type(model).__name__} has no predictable layer (a ReLU fed by Conv2d through "
                "BatchNorm2d, Identity or adds only): nothing to measure"
            )
        resolve_scope(layers, config.layer)  # the layer asked for exists, before the canonical form
        cfg, notes = canonical(cfg, config)
        scope = resolve_scope(layers, config.layer)
        plans = resolve_plans(config.predictor, config.window, layers, scope)
    except (ValueError, TraceError) as exc:
        raise PipelineError(f"model {model_label(config)}: {exc}") from None
    context = BuildContext(seed=config.seed, model=config.model.name, reads=files)
    try:  # a learned kind loads its checkpoint here, before any run exists
        predictors = build_predictors(plans, layers, context)
    except (ValueError, OSError) as exc:
        raise PipelineError(f"model {model_label(config)}, predictor {config.predictor.kind}: {exc}") from None
    return JobPlan(cfg, config, notes, requested, device, model, graph, layers, scope, plans, predictors, files)


def canonical(cfg: DictConfig, config: PipelineConfig) -> tuple[DictConfig, list[str]]:
    """The config as it is evaluated, with the keys that cannot change its numbers set to one value
    (``config`` is updated to match; it is not validated again).

    A run that predicts nothing in any layer does not depend on ``layer`` (a layer sweep runs its
    baseline once, as ``layer=all``); a kind without tiles does not depend on ``window`` (set to 1).
    Returns the new config and a note per change, for the job's line.
    """
    plain = plain_config(cfg)
    plain["predictor"]["layers"] = {str(key): entry for key, entry in plain["predictor"].get("layers", {}).items()}
    config.predictor.layers = {str(key): entry for key, entry in config.predictor.layers.items()}
    notes = []
    tiled = kind_class(config.predictor.kind).tiled or any(
        kind_class(entry.kind or config.predictor.kind).tiled for entry in config.predictor.layers.values()
    )
    if not tiled and config.window != 1:
        plain["window"] = config.window = 1
        notes.append(f"predictor {config.predictor.kind} cuts no tiles: runs as window=1")
    if config.layer != "all" and predicts_nothing(config.predictor, config.window):
        notes.append(f"nothing is predicted, so layer={config.layer} does not matter: runs as layer=all")
        plain["layer"] = config.layer = "all"
    return OmegaConf.create(plain), notes
