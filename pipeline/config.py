"""Typed config schemas, registered in Hydra's ConfigStore and validated when a job starts.

OmegaConf checks types while the config is composed (``window=abc`` fails there); the value
checks in ``__post_init__`` run when :func:`validate` turns the composed config into these
dataclasses, before any model or data set is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

DEVICES = "auto, cpu, cuda, cuda:N"
OPERATING_POINTS = Path("outputs/conf/operating_point")  # pipeline.search's presets, on the config search path
SPLITS = ("test", "calibration", "train")  # the evaluation images; the training split's two disjoint parts


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
    split: str = "test"  # test: the evaluation images; calibration, train: the training split's two parts
    calibration_images: int = 10000  # the training split's held-out part (searches), spread over it
    root: Optional[str] = None
    train_root: Optional[str] = None  # imagenet: the training images' class folders (split=train)
    limit: Optional[int] = None  # evaluate a fixed subset of N images spread over the classes
    batch_size: int = 256
    num_workers: int = 0
    size: int = 512  # synthetic: images in the set
    num_classes: int = 1000  # synthetic: label range
    image_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # synthetic: (C, H, W)
    download: bool = True  # fashion_mnist: fall back to torchvision's download
    cache: bool = True  # keep preprocessed images in memory for the next job of a sweep

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"data.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.calibration_images < 1:
            raise ValueError(f"data.calibration_images must be >= 1, got {self.calibration_images}")
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


@dataclass
class OperatingPointInfo:
    """What an operating point preset (conf/operating_point/<name>.yaml) was found for."""

    name: str = MISSING
    model: str = MISSING  # the model its per-layer table belongs to
    budget: float = MISSING  # top-1 points on calibration


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be an integer >= 1 (1 = baseline, no prediction), got {self.window}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64-1 (torch's seed range), got {self.seed}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
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
    """Put the schemas in Hydra's ConfigStore (conf/config.yaml and its groups extend them).

    Each predictor kind's schema is ``predictor_schema/<kind>``, which ``conf/predictor/<kind>.yaml``
    extends, so a key the kind does not have, or a bad pattern, fails when the config is composed.
    """
    from pipeline.predictors import KINDS

    store = ConfigStore.instance()
    store.store(name="pipeline_schema", node=PipelineConfig)  # types model: and data: too
    store.store(name="train_predictor_schema", node=TrainPredictorConfig)
    store.store(name="search_schema", node=SearchAppConfig)
    for kind, cls in KINDS.items():
        store.store(group="predictor_schema", name=kind, node=cls.Config)
    for kind, schema in RECOVER_SCHEMAS.items():
        store.store(group="recover_schema", name=kind, node=schema)


def recover_schema(recover: Any) -> RecoverConfig:
    """The checked schema object of a recover config (a mapping or a schema object)."""
    if isinstance(recover, RecoverConfig):
        return recover
    kind = dict(recover or {}).get("kind", "none")
    if kind not in RECOVER_SCHEMAS:
        raise ValueError(f"unknown recover kind {kind!r}; known: {', '.join(RECOVER_SCHEMAS)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RECOVER_SCHEMAS[kind]), dict(recover)))


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's resolved config as plain containers (enums as names), without Hydra's ``hydra`` node."""
    keys = [key for key in cfg if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True, enum_to_str=True)  # type: ignore[return-value]


def validate(cfg: DictConfig) -> PipelineConfig:
    """The composed config as checked dataclasses (raises ValueError on a bad value)."""
    return validate_as(cfg, PipelineConfig)


def validate_as(cfg: DictConfig, schema: type) -> Any:
    """The composed config (without Hydra's node) as an object of ``schema`` (ValueError on a bad value)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain_config(cfg)))


@dataclass
class TrainPredictorConfig:
    """``python -m pipeline.train_predictor``: learned predictors of one model (conf/train_predictor.yaml)."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING  # its training split is read (data.split is set to train)
    pattern: str = "checkerboard"  # the cells computed first
    window: int = 2  # the tile size of the pattern
    images: int = 20000  # training images, spread over the training split
    holdout: int = 2000  # other training-split images: the thresholds are chosen on them
    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.01  # Adam
    seed: int = 0
    miss_mass: float = 0.01  # default threshold: the largest losing at most this share of the predictable cells' mass
    out: Optional[str] = None  # null: outputs/predictors/<model>-<pattern><window>.pt
    replace_shipped: bool = False  # write pipeline/checkpoints/predictors/<model>-<pattern><window>.pt instead
    progress: Optional[bool] = None
    threads: Optional[int] = None  # torch threads (null: torch's default)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="predictor-training"))

    def __post_init__(self) -> None:
        from pipeline.predictors import PATTERNS

        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if self.window < 2:
            raise ValueError(
                f"window must be >= 2 (at 1 every cell is computed: nothing to predict), got {self.window}"
            )
        for key in ("images", "holdout", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.miss_mass < 1:
            raise ValueError(f"miss_mass must be a fraction in (0, 1), got {self.miss_mass}")
        if self.out and self.replace_shipped:
            raise ValueError("out= and replace_shipped=true name two destinations: keep one")


@dataclass
class SearchConfig:
    """``search.*`` of ``python -m pipeline.search`` (conf/search.yaml)."""

    budget: float = 0.5  # top-1 points the operating point may lose on calibration
    calibration: int = 10000  # calibration images, spread over the training split
    candidates: list[dict[str, Any]] = field(default_factory=list)  # per-layer settings to try
    measure_recover: bool = True  # the recovery also in the per-layer measurements
    rounds: int = 6  # checks of the combined table on calibration
    refine: int = 12  # greedy single-layer upgrades of the checked table, each checked on calibration
    name: Optional[str] = None  # null: <model>-b<budget>, plus -<recover kind> when it recovers
    out: Optional[str] = None  # null: outputs/conf/operating_point/<name>.yaml (operating_point=<name>)
    force: bool = False  # rerun evaluations that already have a FINISHED run

    def __post_init__(self) -> None:
        if not self.budget >= 0:
            raise ValueError(f"search.budget must be >= 0 top-1 points, got {self.budget}")
        if self.refine < 0:
            raise ValueError(f"search.refine must be >= 0 checks (0: no refinement), got {self.refine}")
        if self.calibration < 1 or self.rounds < 1:
            raise ValueError(
                f"search.calibration and search.rounds must be >= 1, got {self.calibration}, {self.rounds}"
            )
        if not self.candidates:
            raise ValueError(
                "search.candidates is empty: give per-layer settings to try, e.g. {kind: tile, window: 3}"
            )
        from pipeline.predictors import LayerSetting, layer_setting

        for number, candidate in enumerate(self.candidates):
            setting = layer_setting(candidate, f"search.candidates[{number}]")
            if setting.kind is None:
                raise ValueError(f"search.candidates[{number}] needs a kind (tile, learned, ...): {candidate}")
            assert isinstance(setting, LayerSetting)


@dataclass
class SearchAppConfig(PipelineConfig):
    """``python -m pipeline.search``: the pipeline's keys (model, data, recover, tracking) and ``search``."""

    search: SearchConfig = MISSING  # conf/search.yaml
