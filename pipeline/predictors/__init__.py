"""The predictor family (contract section 7): a registry of kinds, and per-layer plans from config.

Every module of this package is imported here, so a new kind is one new module (a
:class:`~pipeline.predictors.base.Predictor` subclass decorated with ``@register(name, Config)``)
plus ``conf/predictor/<name>.yaml``; nothing else lists the kinds.

From a run's config to one predictor per layer:

    plans = resolve_plans(config.predictor, config.window, layers, scope)   # what each layer applies
    predictors = build_predictors(plans, layers, BuildContext(seed=config.seed))
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from omegaconf import OmegaConf

from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.base import (
    FIRING_RULES,
    KINDS,
    NOT_APPLICABLE,
    NOTHING,
    BuildContext,
    Firing,
    LayerInput,
    LayerSetting,
    Plan,
    Predictor,
    PredictorConfig,
    kind_class,
    parameters,
    register,
)
from pipeline.predictors.patterns import PATTERNS, Pattern, pattern_mask

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

OFF = Plan("none")  # what a layer out of scope, or turned off, applies

__all__ = [
    "FIRING_RULES", "KINDS", "NOTHING", "NOT_APPLICABLE", "OFF", "PATTERNS", "BuildContext", "Firing", "LayerInput",
    "LayerSetting",
    "Pattern", "Plan", "Predictor", "PredictorConfig", "PredictorFactory", "build_predictors", "factory",
    "kind_class", "layer_table", "make_predictor", "parameters", "pattern_mask", "plain_value",
    "plan_predicts_nothing", "predicts_nothing", "register", "resolve_plans", "schema_of", "uniform",
]  # fmt: skip


def schema_of(predictor: Mapping[str, Any] | PredictorConfig) -> PredictorConfig:
    """The checked schema object of a predictor config (a plain mapping or a schema object).

    Raises ValueError (or OmegaConf's ValidationError, which names the key) on a bad value.
    """
    if isinstance(predictor, PredictorConfig):
        config = predictor
    else:
        cls = kind_class(str(predictor.get("kind")))
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), dict(predictor)))
    config.layers = {str(k): layer_setting(entry, f"predictor.layers.{k}") for k, entry in config.layers.items()}
    return config  # type: ignore[return-value]


def layer_setting(entry: Any, where: str) -> LayerSetting:
    """One per-layer entry checked against :class:`LayerSetting` (``off`` or ``none``: kind none)."""
    if isinstance(entry, LayerSetting):
        return entry
    if entry in ("off", "none"):
        return LayerSetting(kind="none")
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}={entry!r}: use a mapping of kind, window, pattern, threshold, group, or `off`")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LayerSetting), dict(entry)))  # type: ignore[return-value]
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0]
        raise ValueError(f"{where}: {detail} (keys: kind, window, pattern, threshold, group)") from None


def plain_value(value: Any) -> Any:
    """An enum config value (a pattern) as its name; anything else as it is."""
    return value.value if isinstance(value, Enum) else value


def top_plan(predictor: PredictorConfig, window: int) -> Plan:
    """The plan of the run's predictor, before any per-layer setting."""
    cls = kind_class(predictor.kind)
    params = {name: plain_value(getattr(predictor, name)) for name in parameters(cls.Config)}
    return Plan(predictor.kind, window if cls.tiled else None, params)


def entry_plan(predictor: PredictorConfig, window: int, entry: LayerSetting, where: str) -> Plan:
    """The plan of one per-layer entry: the entry's keys over the run's predictor when the entry keeps
    its kind, over the entry kind's defaults when it names another."""
    kind = entry.kind or predictor.kind
    cls = kind_class(kind)
    own = parameters(cls.Config)
    values = {name: getattr(predictor, name) for name in own} if kind == predictor.kind else {}
    for name in ("pattern", "threshold", "group"):
        value = getattr(entry, name)
        if value is None:
            continue
        if name not in own:
            keys = ", ".join(own) or "none"
            raise ValueError(f"{where}: predictor kind {kind!r} has no {name}; its keys are: {keys}")
        values[name] = value
    if entry.window is not None and not cls.tiled:
        raise ValueError(f"{where}: predictor kind {kind!r} has no window (it cuts no tiles)")
    layer_window = entry.window if entry.window is not None else window
    if cls.tiled and layer_window < 1:
        raise ValueError(f"{where}: window must be an integer >= 1, got {layer_window}")
    try:
        checked = schema_of({**{k: plain_value(v) for k, v in values.items()}, "kind": kind})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return top_plan(checked, layer_window)


def layer_table(
    table: Mapping[str, LayerSetting], layers: list[PredictableLayer]
) -> dict[int, tuple[str, LayerSetting]]:
    """Per-layer entries by layer index; keys are layer names or indices (each layer at most once)."""
    valid = ", ".join(f"{spec.index}={spec.name}" for spec in layers)
    found: dict[int, tuple[str, LayerSetting]] = {}
    for key, entry in table.items():
        key = str(key)
        if key.isdigit():
            if int(key) >= len(layers):
                raise ValueError(f"predictor.layers: layer index {key} is out of range; the layers are {valid}")
            indices = [int(key)]
        else:
            indices = [spec.index for spec in layers if spec.name == key]
            if not indices:
                raise ValueError(f"predictor.layers: unknown layer {key!r}; the layers are {valid}")
        for index in indices:
            if index in found:
                raise ValueError(
                    f"predictor.layers: layer {index} ({layers[index].name}) is set twice "
                    f"(as {found[index][0]!r} and {key!r}); keep one entry"
                )
            found[index] = (key, entry)
    return found


def resolve_plans(
    predictor: PredictorConfig, window: int, layers: list[PredictableLayer], scope: set[int]
) -> list[Plan]:
    """What each layer applies: the run's predictor, its per-layer entries, nothing out of scope."""
    table = layer_table(predictor.layers, layers)
    base = top_plan(predictor, window)
    plans = []
    for spec in layers:
        if spec.index not in scope:
            plans.append(OFF)
        elif spec.index in table:
            key, entry = table[spec.index]
            plans.append(entry_plan(predictor, window, entry, f"predictor.layers.{key}"))
        else:
            plans.append(base)
    return plans


def plan_predicts_nothing(plan: Plan) -> bool:
    """Whether ``plan`` can never predict a cell (kind none, or tiles that are all pattern)."""
    return kind_class(plan.kind).plan_predicts_nothing(plan)


def predicts_nothing(predictor: PredictorConfig, window: int) -> bool:
    """Whether a run predicts nothing in any layer, from its config alone (no model needed)."""
    plans = [top_plan(predictor, window)]
    plans += [entry_plan(predictor, window, entry, f"predictor.layers.{k}") for k, entry in predictor.layers.items()]
    return all(plan_predicts_nothing(plan) for plan in plans)


def build_predictors(plans: list[Plan], layers: list[PredictableLayer], context: BuildContext) -> list[Predictor]:
    """One predictor module per layer, from its plan."""
    return [kind_class(plan.kind)(plan, spec, context) for plan, spec in zip(plans, layers, strict=True)]


PredictorFactory = Callable[[list[PredictableLayer], set[int]], list[Predictor]]


def factory(
    predictor: PredictorConfig | Mapping[str, Any], window: int, context: BuildContext | None = None
) -> PredictorFactory:
    """What :class:`pipeline.measurement.instrument.InstrumentedModel` calls with the model's layers and the scope."""
    config = schema_of(predictor)
    context = context or BuildContext()

    def build(layers: list[PredictableLayer], scope: set[int]) -> list[Predictor]:
        return build_predictors(resolve_plans(config, window, layers, scope), layers, context)

    return build


def uniform(kind: str, window: int = 1, seed: int = 0, **params: Any) -> PredictorFactory:
    """The same kind and parameters in every layer in scope: ``uniform("tile", window=3)``."""
    return factory({"kind": kind, **params}, window, BuildContext(seed=seed))


def make_predictor(
    kind: str, window: int = 1, layer: PredictableLayer | None = None, seed: int = 0, **params: Any
) -> Predictor:
    """One stand-alone predictor (tests, benchmarks): ``make_predictor("tile", 3, pattern="cross")``."""
    layer = layer or PredictableLayer(0, "layer", (), 0, "", 0)
    return factory({"kind": kind, **params}, window, BuildContext(seed=seed))([layer], {0})[0]
