"""Kind ``oracle``: the limit of any zero predictor that spends nothing to decide (contract section 7).

Every cell equal to 0 is predicted (pred_hit = zeros, pred_miss = 0, zero_diag = 0). Setting zeros
to zero changes nothing, so its accuracy is exactly the baseline's and its saving is
``sum zeros * macs_per_act``: the room any predictor has.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.predictors.base import Firing, LayerInput, Predictor, PredictorConfig, register


@dataclass
class OracleConfig(PredictorConfig):
    kind: str = "oracle"


@register("oracle", OracleConfig)
class Oracle(Predictor):
    """Predicts exactly the zero cells."""

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        return x.zero.new_zeros(x.zero.shape), x.zero

    def firing(self, x: LayerInput) -> Firing:
        return Firing("zero_cells")
