"""The predictor interface, its config schemas and the registry of kinds (contract sections 7-9).

A *predictor kind* is a :class:`Predictor` subclass registered under its config name together with
its typed config schema (``conf/predictor/<kind>.yaml`` extends it)::

    @register("tile", TileConfig)
    class TilePredictor(Predictor): ...

One instance is built per predictable layer (an ``nn.Module``, so learned parameters follow
``.to()`` and ``state_dict``). For each batch it sees a :class:`LayerInput` (the layer's output
before its prediction, its zero mask, the batch's place in the evaluation) and returns two masks:
``basis``, the computed cells a firing decision rests on (counted as zero_diag), and ``predicted``,
the cells predicted zero. Counting and applying the masks is generic (the reference,
:mod:`pipeline.measurement.counts`);
a kind also says *what fires* (:meth:`Predictor.firing`: a rule the counting backend decides itself,
or the decision made, per tile or per cell), so the fused CPU kernel counts and applies it in the same
pass as the statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional

import torch
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
    group: Optional[int] = None


@dataclass
class PredictorConfig:
    """Keys every kind has. ``layers``: per-layer settings keyed by layer name or index.

    The entries are plain mappings while the config is composed (so that
    ``+predictor.layers.3.window=2`` works on the command line) and :class:`LayerSetting` objects
    once :func:`pipeline.predictors.schema_of` has checked them.
    """

    kind: str = MISSING
    layers: dict[Any, Any] = field(default_factory=dict)  # keys: layer names (str) or indices (int or str)


@dataclass
class GroupedConfig(PredictorConfig):
    """A kind whose decision ``group`` consecutive output channels can share (contract section 10)."""

    group: int = 1  # channels that share one decision: 1 each decides alone; wider than the layer: the whole layer

    def __post_init__(self) -> None:
        if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
            raise ValueError(
                f"predictor.group must be an integer >= 1 (the channels that share one decision; 1: each "
                f"channel decides alone), got {self.group!r}"
            )


def share(decision: Tensor, group: int) -> Tensor:
    """``decision`` (N, C, ...) bool made for ``group`` consecutive channels together: true in every channel
    of a group where it is true in all of them (the last group holds C mod g channels; g >= C: one group)."""
    if group <= 1:
        return decision
    n, c = decision.shape[:2]
    rest = decision.shape[2:]
    groups = -(-c // group)
    padded = decision
    if groups * group != c:  # channels past C agree with anything
        padded = torch.cat([decision, decision.new_ones((n, groups * group - c, *rest))], dim=1)
    together = padded.view(n, groups, group, *rest).all(dim=2)
    return together.repeat_interleave(group, dim=1)[:, :c]


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
    reads: list[Any] = field(default_factory=list)  # every file a predictor loaded (Paths; the job's identity)


# the interface -----------------------------------------------------------------------------------


class LayerInput:
    """What one layer's prediction may use for one batch: ``activation`` (N, C, H, W), the layer's
    output before its prediction (read only); ``zero``, its zero mask (bool, made on first use when not
    given); ``first_image``, the index of the batch's first image in the evaluation."""

    def __init__(self, activation: Tensor, zero: Tensor | None = None, first_image: int = 0) -> None:
        self.activation = activation
        self._zero = zero
        self.first_image = first_image

    @property
    def zero(self) -> Tensor:
        if self._zero is None:
            self._zero = self.activation == 0
        return self._zero


FIRING_RULES = {  # what a Firing states; the counting backends know each (pipeline.measurement.counts)
    "nothing": "no cell is predicted (statistics only)",
    "pattern_at_most": "a k x k tile fires when every in-bounds pattern cell is <= threshold (the tile rule)",
    "all_zero_tiles": "a k x k tile fires when every in-bounds cell is 0 (the tile oracle)",
    "zero_cells": "exactly the zero cells are predicted, no basis (the oracle)",
    "given_tiles": "the tiles in `given` (N, C, th, tw) fire; counted as the tile rule counts",
    "given_cells": "the non-pattern cells in `given` (N, C, H, W) are predicted; zero_diag: the zero pattern cells",
}


@dataclass(frozen=True)
class Firing:
    """What a layer's predictor fires for one batch, said so that a counting backend can count and
    apply it without the per-cell masks: a rule the backend decides itself, or the decision made.
    A tile that fires has its in-bounds pattern cells counted as zero_diag and its other in-bounds
    cells predicted (contract sections 3 and 7)."""

    rule: str  # a key of FIRING_RULES
    window: int = 1
    pattern: Tensor | None = None  # (k, k) bool: the cells computed first (tile rules, given_*)
    threshold: float = 0.0  # pattern_at_most
    given: Tensor | None = None  # bool: the fired tiles (given_tiles) or predicted cells (given_cells)

    def __post_init__(self) -> None:
        if self.rule not in FIRING_RULES:
            raise ValueError(f"unknown firing rule {self.rule!r}; known: {', '.join(FIRING_RULES)}")
        if (self.rule.startswith("given_")) != (self.given is not None):
            raise ValueError(f"firing rule {self.rule}: `given` is {'missing' if self.given is None else 'unused'}")


NOTHING = Firing("nothing")


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

    def firing(self, x: LayerInput) -> Firing | None:
        """What fires for this batch, equal to what :meth:`masks` gives, or None: only the masks say."""
        return None

    def macs(self, shape: tuple[int, ...]) -> int:
        """MACs the predictor spends to decide one batch of ``shape`` (N, C, H, W); 0 for rules."""
        return 0

    @property
    def group(self) -> int:
        """The channels that share one decision (``predictor.group``; 1 for kinds without it)."""
        return int(self.plan.get("group", 1))

    def setting(self) -> dict[str, object]:
        """The layers.csv columns ``predictor, window, pattern, threshold, group`` of this layer."""
        return {
            "predictor": self.kind,
            "window": self.plan.window if self.plan.window is not None else NOT_APPLICABLE,
            "pattern": self.plan.get("pattern", NOT_APPLICABLE),
            "threshold": self.plan.get("threshold", NOT_APPLICABLE),
            "group": self.plan.get("group", NOT_APPLICABLE),
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
