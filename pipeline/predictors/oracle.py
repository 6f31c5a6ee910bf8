"""Kind ``oracle``: the limit of any zero predictor that spends nothing to decide (contract section 7).

Every cell equal to 0 is predicted (pred_hit = zeros, pred_miss = 0, zero_diag = 0). Setting zeros
to zero changes nothing, so its accuracy is exactly the baseline's and its saving is
``sum zeros * macs_per_act``: the room any predictor has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.predictors.base import Firing, GroupedConfig, LayerInput, Predictor, register, share


@dataclass
class OracleConfig(GroupedConfig):
    kind: str = "oracle"


@register("oracle", OracleConfig)
class Oracle(Predictor):
    """Predicts exactly the zero cells; with ``group`` g > 1 a cell where it is zero in every channel of
    the group (contract section 10)."""

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        return x.zero.new_zeros(x.zero.shape), share(x.zero, self.group)

    def firing(self, x: LayerInput) -> Firing:
        if self.group == 1:
            return Firing("zero_cells")
        # grouped: the cells zero in every channel of their group, handed over made; a 2 x 2 pattern with no
        # cell in it, so every cell may be predicted and none is a basis cell
        return Firing("given_cells", 2, torch.zeros(2, 2, dtype=torch.bool), given=share(x.zero, self.group))
