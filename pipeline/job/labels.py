"""How a job names itself in its line, its run name and its params: the model, the predictor, the layer."""

from __future__ import annotations

from pipeline.job.config import PipelineConfig
from pipeline.networks.layers import PredictableLayer
from pipeline.predictors import plain_value


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
    layer = layer_text(config.layer, layers)
    recovered = f" recover={config.recover.kind}" if config.recover.kind != "none" else ""
    return (
        f"{model_label(config)} window={config.window} layer={layer} predictor={predictor_label(config)}{recovered}"
    )


def layer_text(layer: str, layers: list[PredictableLayer] | None) -> str:
    """``3 (features.8)`` for an index, the name as given otherwise."""
    if layers is None or layer == "all" or not layer.isdigit() or int(layer) >= len(layers):
        return layer
    return f"{layer} ({layers[int(layer)].name})"
