"""Kind ``tile``: the paper's rule generalized to any pattern and a threshold (contract sections 3, 7).

Each k x k tile computes its pattern cells first; when every in-bounds pattern cell has a value
<= ``threshold``, the tile *fires* and its other in-bounds cells are predicted zero. With the
diagonal pattern and threshold 0 this is the paper's cross-neuron prediction. With k = 1 nothing
is predicted (every cell is a pattern cell), and every cell <= threshold counts as zero_diag.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.base import BuildContext, Firing, GroupedConfig, LayerInput, Plan, Predictor, register, share
from pipeline.predictors.patterns import Pattern, pattern_mask
from pipeline.predictors.tiles import cell_masks, pattern_rule


@dataclass
class TileConfig(GroupedConfig):
    kind: str = "tile"
    pattern: Pattern = Pattern.diagonal
    threshold: float = 0.0  # a pattern cell "is zero" when its value is <= threshold

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.threshold >= 0:  # also refuses nan
            raise ValueError(f"predictor.threshold must be >= 0, got {self.threshold}")


class TileRule(Predictor):
    """Shared by the tile kinds: k x k tiles of one pattern, a firing rule per kind. With ``group`` g > 1
    the tile of an image and a channel group fires when it fires in every channel of the group, and then
    in all of them (contract section 10)."""

    tiled = True

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__(plan, layer, context)
        if plan.window is None or plan.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {plan.window}")
        self.window = int(plan.window)
        self.pattern_name = str(plan.get("pattern", "diagonal"))
        self.pattern = pattern_mask(self.pattern_name, self.window)  # (k, k) bool

    @classmethod
    def plan_predicts_nothing(cls, plan: Plan) -> bool:
        """k = 1, or a pattern that covers the whole tile (corners at k = 2): nothing left to predict."""
        return bool(pattern_mask(str(plan.get("pattern", "diagonal")), int(plan.window or 1)).all())

    def fire(self, x: LayerInput) -> Tensor:
        """(N, C, th, tw) bool: which tiles fire, each channel on its own."""
        raise NotImplementedError

    def fire_grouped(self, x: LayerInput) -> Tensor:
        """(N, C, th, tw) bool: which tiles fire once the channels of a group share the decision."""
        return share(self.fire(x), self.group)

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        return cell_masks(self.fire_grouped(x), self.window, self.pattern_name, tuple(x.activation.shape))

    def grouped_firing(self) -> bool:
        """Whether the decision is shared by channels: the backend is then given the fired tiles."""
        return self.group > 1

    def fired(self, rule: str, **more) -> Firing:
        """A firing of this layer's tiles: ``rule`` with its window and pattern."""
        return Firing(rule, self.window, self.pattern, **more)


@register("tile", TileConfig)
class TilePredictor(TileRule):
    """Fires when every in-bounds pattern cell is <= threshold."""

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__(plan, layer, context)
        self.threshold = float(plan.get("threshold", 0.0))

    def fire(self, x: LayerInput) -> Tensor:
        threshold = self.threshold  # a pattern cell "is zero" when <= threshold (ReLU outputs are >= 0)
        ok = (lambda cells: cells == 0) if threshold == 0 else (lambda cells: cells <= threshold)
        return pattern_rule(x.activation, self.window, self.pattern_name, ok)

    def firing(self, x: LayerInput) -> Firing:
        if self.grouped_firing():
            return self.fired("given_tiles", given=self.fire_grouped(x))
        return self.fired("pattern_at_most", threshold=self.threshold)
