"""Kind ``none``: predicts nothing (the baseline). Layers out of scope or turned off get it too."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.predictors.base import NOTHING, Firing, LayerInput, Plan, Predictor, PredictorConfig, register


@dataclass
class NoneConfig(PredictorConfig):
    kind: str = "none"


@register("none", NoneConfig)
class NoPrediction(Predictor):
    """No tile ever fires: zero_diag = pred_hit = pred_miss = 0, the layer runs unmodified."""

    @classmethod
    def plan_predicts_nothing(cls, plan: Plan) -> bool:
        return True

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        nothing = x.zero.new_zeros(x.zero.shape)
        return nothing, nothing

    def firing(self, x: LayerInput) -> Firing:
        return NOTHING
