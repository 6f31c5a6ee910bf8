"""Typed config schemas, registered in Hydra's ConfigStore and validated when a job starts.

OmegaConf checks types while the config is composed (``window=abc`` fails there); the value
checks in ``__post_init__`` run when :func:`validate` turns the composed config into these
dataclasses, before any model or data set is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

DEVICES = "auto, cpu, cuda, cuda:N"


@dataclass
class ModelConfig:
    """Which network to evaluate (conf/model/*.yaml)."""

    name: str = MISSING  # registry name: alexnet, vgg16, resnet18, *_fmnist, custom
    weights: Optional[str] = None  # torchvision weights enum name (IMAGENET1K_V1) or null = random init
    checkpoint: Optional[str] = None  # a state_dict file, loaded with weights_only=True
    target: Optional[str] = None  # custom factory "package.module:function"
    _target_: Optional[str] = None  # the same, Hydra's spelling "package.module.function"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the factory
    input_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # (C, H, W)
    num_classes: int = 1000


@dataclass
class DataConfig:
    """Which images to evaluate (conf/data/*.yaml)."""

    name: str = MISSING  # fashion_mnist, imagenet, synthetic
    root: Optional[str] = None
    limit: Optional[int] = None  # evaluate a fixed subset of N images spread over the classes
    batch_size: int = 256
    num_workers: int = 0
    size: int = 512  # synthetic: images in the set
    num_classes: int = 1000  # synthetic: label range
    image_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # synthetic: (C, H, W)
    download: bool = True  # fashion_mnist: fall back to torchvision's download
    cache: bool = True  # keep preprocessed images in memory for the next job of a sweep

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"data.limit must be a positive number of images or null (all), got {self.limit}")
        if self.batch_size <= 0:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.size < 1 or self.num_classes < 1:
            raise ValueError(f"data.size and data.num_classes must be >= 1, got {self.size} and {self.num_classes}")


@dataclass
class TrackingConfig:
    """Where runs are recorded; the analysis stage reads the same keys."""

    uri: str = "sqlite:///outputs/mlflow.db"
    experiment: str = "cross-neuron-prediction"
    artifacts: str = "outputs/mlartifacts"  # artifact root of experiments this project creates

    def __post_init__(self) -> None:
        if "://" not in self.uri:  # a plain path would be MLflow's refused file store
            raise ValueError(
                f"tracking.uri={self.uri!r} is not a tracking URI: use sqlite:///PATH.db (the default store), "
                "or http://HOST:PORT of an `mlflow server`"
            )
        if not self.experiment.strip():
            raise ValueError("tracking.experiment must be a name, e.g. tracking.experiment=cross-neuron-prediction")


@dataclass
class PipelineConfig:
    """One job: a model evaluated with window-k prediction in the layers in scope."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    window: int = 1
    layer: str = "all"  # all, a layer name, or an index
    predictor: str = "diagonal"  # tile pattern (pipeline.prediction.PATTERNS)
    seed: int = 0
    device: str = "auto"
    force: bool = False  # rerun even when an identical FINISHED run exists
    progress: Optional[bool] = None  # progress bar; null = only on a terminal
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1 (1 = baseline, no prediction), got {self.window}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64-1 (torch's seed range), got {self.seed}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        from pipeline.prediction import PATTERNS

        if self.predictor not in PATTERNS:
            raise ValueError(f"unknown predictor {self.predictor!r}; known: {', '.join(PATTERNS)}")


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (conf/config.yaml and its groups extend them)."""
    store = ConfigStore.instance()
    store.store(name="pipeline_schema", node=PipelineConfig)  # types model: and data: too


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's resolved config as plain containers, without Hydra's own ``hydra`` node."""
    keys = [key for key in cfg if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)  # type: ignore[return-value]


def validate(cfg: DictConfig) -> PipelineConfig:
    """The composed config as checked dataclasses (raises ValueError on a bad value)."""
    plain = plain_config(cfg)
    schema = OmegaConf.merge(OmegaConf.structured(PipelineConfig), plain)
    return OmegaConf.to_object(schema)  # type: ignore[return-value]
