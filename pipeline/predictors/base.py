"""The predictor interface, its config schemas and the registry of kinds (contract sections 7-9).

A *predictor kind* is a :class:`Predictor` subclass registered under its config name together with
its typed config schema (``conf/predictor/<kind>.yaml`` extends it)::

    @register("tile", TileConfig)
    class TilePredictor(Predictor): ...

One instance is built per predictable layer (an ``nn.Module``, so learned parameters follow
``.to()`` and ``state_dict``). For each batch it sees a :class:`LayerInput` (the layer's output
before its prediction, its zero mask, the batch's place in the evaluation) and returns two masks:
``basis``, the computed cells a firing decision rests on (counted as zero_diag), and ``predicted``,
the cells predicted zero. Counting and applying the masks is generic (:mod:`pipeline.measurement.counts`);
a kind may also hand its decision to the fused CPU kernel (:meth:`Predictor.kernel_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional

from omegaconf import MISSING
from torch import Tensor, nn

from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.patterns import Pattern

NOT_APPLICABLE = ""  # a layers.csv setting cell that the layer's kind does not have


# config ------------------------------------------------------------------------------------------


@dataclass
class LayerSetting:
    """One entry of a per-layer table: what differs at that layer (unset keys are inherited).

    ``kind: none`` turns the layer off. Keys the layer's kind does not have are refused.
    """

    kind: Optional[str] = None
    window: Optional[int] = None
    pattern: Optional[Pattern] = None
    threshold: Optional[float] = None


@dataclass
class PredictorConfig:
    """Keys every kind has. ``layers``: per-layer settings keyed by layer name or index.

    The entries are plain mappings while the config is composed (so that
    ``+predictor.layers.3.window=2`` works on the command line) and :class:`LayerSetting` objects
    once :func:`pipeline.predictors.schema_of` has checked them.
    """

    kind: str = MISSING
    layers: dict[Any, Any] = field(default_factory=dict)  # keys: layer names (str) or indices (int or str)


def parameters(config: PredictorConfig | type[PredictorConfig]) -> tuple[str, ...]:
    """The kind's own parameters: every schema field but ``kind`` and ``layers``."""
    return tuple(f.name for f in fields(config) if f.name not in ("kind", "layers"))


@dataclass(frozen=True)
class Plan:
    """What is applied at one layer: a kind, its tile size (kinds with tiles) and its parameters."""

    kind: str
    window: int | None = None  # None for kinds without tiles
    params: Mapping[str, Any] = field(default_factory=dict)  # pattern, threshold, checkpoint, ...

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class BuildContext:
    """What building a layer's predictor may need beyond its plan and layer."""

    seed: int = 0  # the job's seed (seeded kinds)
    model: str = ""  # the model's registry name (a learned kind finds its shipped checkpoint by it)
    shared: dict[str, Any] = field(default_factory=dict)  # loaded once per job (a checkpoint, ...)


# the interface -----------------------------------------------------------------------------------


@dataclass
class LayerInput:
    """What one layer's prediction may use for one batch."""

    activation: Tensor  # (N, C, H, W) the layer's output before its prediction; read only
    zero: Tensor  # (N, C, H, W) bool: activation == 0
    first_image: int = 0  # index of the batch's first image in the evaluation


@dataclass(frozen=True)
class KernelSpec:
    """A decision the fused CPU kernel makes itself (pipeline/measurement/kernels/measure.c)."""

    mode: int  # 0: no prediction (statistics only), 1: tile rule, 2: tile oracle
    window: int = 0
    pattern: Tensor | None = None  # (k, k) uint8, contiguous
    threshold: float = 0.0


class Predictor(nn.Module):
    """Decides, per batch, which cells of one layer's output are predicted zero."""

    kind: ClassVar[str]
    Config: ClassVar[type[PredictorConfig]]
    tiled: ClassVar[bool] = False  # whether the kind cuts tiles (uses ``window``)

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__()
        self.plan = plan
        self.layer = layer

    @classmethod
    def plan_predicts_nothing(cls, plan: Plan) -> bool:
        """True when a layer with ``plan`` can never predict a cell (e.g. 1x1 tiles)."""
        return False

    @property
    def predicts_nothing(self) -> bool:
        """True when no cell can ever be predicted: the layer's output goes on unmodified."""
        return self.plan_predicts_nothing(self.plan)

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        """(basis, predicted): bool masks shaped like ``x.activation`` (the reference path)."""
        raise NotImplementedError

    def kernel_spec(self) -> KernelSpec | None:
        """The fused kernel's equivalent of :meth:`masks`, or None when the kind has none."""
        return None

    def macs(self, shape: tuple[int, ...]) -> int:
        """MACs the predictor spends to decide one batch of ``shape`` (N, C, H, W); 0 for rules."""
        return 0

    def setting(self) -> dict[str, object]:
        """The layers.csv columns ``predictor, window, pattern, threshold`` of this layer."""
        return {
            "predictor": self.kind,
            "window": self.plan.window if self.plan.window is not None else NOT_APPLICABLE,
            "pattern": self.plan.get("pattern", NOT_APPLICABLE),
            "threshold": self.plan.get("threshold", NOT_APPLICABLE),
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.setting().items() if v != NOT_APPLICABLE)


KINDS: dict[str, type[Predictor]] = {}


def register(kind: str, config: type[PredictorConfig]):
    """Class decorator: register a predictor kind under ``kind`` with its config schema."""

    def decorate(cls: type[Predictor]) -> type[Predictor]:
        if kind in KINDS:
            raise ValueError(f"predictor kind {kind!r} is registered twice ({KINDS[kind].__name__}, {cls.__name__})")
        cls.kind, cls.Config = kind, config
        KINDS[kind] = cls
        return cls

    return decorate


def kind_class(kind: str) -> type[Predictor]:
    """The registered class of ``kind``, or a ValueError listing the known kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown predictor kind {kind!r}; known: {', '.join(KINDS)}") from None
