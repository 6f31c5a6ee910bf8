"""Kind ``tile_oracle``: the ceiling of the tile rule at the same k and pattern (contract section 7).

A tile fires exactly when every in-bounds cell is zero (and it has an in-bounds pattern cell), so
nothing it predicts is ever a miss: the most a tile rule with this k and pattern could save.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.predictors.base import Firing, GroupedConfig, LayerInput, register
from pipeline.predictors.patterns import Pattern
from pipeline.predictors.tile import TileRule
from pipeline.predictors.tiles import fire_where_all


@dataclass
class TileOracleConfig(GroupedConfig):
    kind: str = "tile_oracle"
    pattern: Pattern = Pattern.diagonal


@register("tile_oracle", TileOracleConfig)
class TileOracle(TileRule):
    """Fires when the whole in-bounds tile is zero: pred_miss = 0."""

    def fire(self, x: LayerInput) -> Tensor:
        return fire_where_all(x.zero, self.window, self.pattern_name)

    def firing(self, x: LayerInput) -> Firing:
        if self.grouped_firing():
            return self.fired("given_tiles", given=self.fire_grouped(x))
        return self.fired("all_zero_tiles")
