"""A job's schema (conf/config.yaml), registered in Hydra's ConfigStore and validated when a job starts.

OmegaConf checks types while the config is composed (``window=abc`` fails there); the value checks in
``__post_init__`` (here and in each part's schema beside its code: ``ModelConfig`` in
``pipeline.networks.models``, ``DataConfig`` in ``pipeline.networks.data``, the predictor kinds' in
``pipeline.predictors``, the recover kinds' in ``pipeline.fitting.recover``, ``TrackingConfig`` in
``pipeline.tracking.config``) run when :func:`validate` turns the composed config into these
dataclasses, before any model or data set is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from pipeline.app import validate_as
from pipeline.fitting.recover import RECOVER_SCHEMAS, recover_schema
from pipeline.networks.data import DataConfig
from pipeline.networks.models import ModelConfig
from pipeline.tracking.config import TrackingConfig
from pipeline.tracking.keys import RUN_METRICS

DEVICES = "auto, cpu, cuda, cuda:N"


@dataclass
class OperatingPointInfo:
    """What an operating point preset (conf/operating_point/<name>.yaml) was found for."""

    name: str = MISSING
    model: str = MISSING  # the model its per-layer table belongs to
    budget: float = MISSING  # top-1 points on calibration
    confidence: Optional[float] = None  # the budget held the drop's one-sided upper bound at it; null: its point


@dataclass
class PipelineConfig:
    """One job: a model evaluated with a predictor (conf/predictor/<kind>.yaml) in the layers in scope."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    predictor: Any = MISSING  # one kind's schema (pipeline.predictors): typed by conf/predictor/<kind>.yaml
    window: int = 1  # tile size k of the kinds that cut tiles
    layer: str = "all"  # all, a layer name, or an index
    recover: Any = MISSING  # conf/recover/<kind>.yaml (the kind's schema)
    operating_point: Optional[OperatingPointInfo] = None  # set by conf/operating_point/<name>.yaml
    seed: int = 0
    device: str = "auto"
    force: bool = False  # rerun even when an identical FINISHED run exists
    progress: Optional[bool] = None  # progress bar; null = only on a terminal
    objective: Optional[str] = "net_mac_saving"  # the metric a job returns to a Hydra sweeper; null: none
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1 (1 = baseline, no prediction), got {self.window}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64-1 (torch's seed range), got {self.seed}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.objective is not None and self.objective not in RUN_METRICS:
            raise ValueError(
                f"objective={self.objective!r} is not a run metric: use one of {', '.join(RUN_METRICS)}, or null"
            )
        from pipeline.predictors import schema_of

        self.predictor = schema_of(self.predictor)  # the kind's schema: checks its values
        self.recover = recover_schema(self.recover)
        if self.operating_point is not None and self.operating_point.model != self.model.name:
            raise ValueError(
                f"operating point {self.operating_point.name} was found for model {self.operating_point.model}, "
                f"not {self.model.name}: run it with model={self.operating_point.model}, or search one for "
                f"{self.model.name} (python -m pipeline.search model={self.model.name})"
            )


def register() -> None:
    """Put the job's schemas in Hydra's ConfigStore (conf/config.yaml and its groups extend them).

    Each predictor kind's schema is ``predictor_schema/<kind>``, which ``conf/predictor/<kind>.yaml``
    extends, so a key the kind does not have, or a bad pattern, fails when the config is composed.
    """
    from pipeline.predictors import KINDS

    store = ConfigStore.instance()
    store.store(name="pipeline_schema", node=PipelineConfig)  # types model: and data: too
    for kind, cls in KINDS.items():
        store.store(group="predictor_schema", name=kind, node=cls.Config)
    for kind, schema in RECOVER_SCHEMAS.items():
        store.store(group="recover_schema", name=kind, node=schema)


def validate(cfg: DictConfig) -> PipelineConfig:
    """The composed config as checked dataclasses (raises ValueError on a bad value)."""
    return validate_as(cfg, PipelineConfig)
