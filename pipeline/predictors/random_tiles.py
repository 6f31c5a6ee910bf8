"""Kind ``random``: the control, the tile rule's budget without spatial correlation (contract section 7).

In each channel map of each image exactly as many tiles fire as the ``tile`` rule (same k and
pattern, threshold 0) fires there, chosen uniformly at random among the map's tiles that have an
in-bounds pattern cell. Counts are taken as for ``tile``: the pattern cells of a firing tile are
zero_diag (here they need not be zero) and its other cells are predicted.

The choice is seeded by the job's seed, the layer and the image's index in the evaluation, so it
does not depend on the batch size or the device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.base import BuildContext, Firing, LayerInput, Plan, PredictorConfig, register
from pipeline.predictors.patterns import Pattern
from pipeline.predictors.tile import TileRule
from pipeline.predictors.tiles import has_pattern_cell, pattern_rule, tile_grid


@dataclass
class RandomConfig(PredictorConfig):
    kind: str = "random"
    pattern: Pattern = Pattern.diagonal


def image_seed(seed: int, layer: int, image: int) -> int:
    """A 63-bit seed for one image's draws at one layer (stable across runs and platforms)."""
    digest = hashlib.blake2b(f"cnp-random/{seed}/{layer}/{image}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@register("random", RandomConfig)
class RandomTiles(TileRule):
    """Fires as many tiles per map as the tile rule, at random positions."""

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__(plan, layer, context)
        self.seed = context.seed

    def fire(self, x: LayerInput) -> Tensor:
        n, c, h, w = x.activation.shape
        k = self.window
        th, tw = tile_grid(h, w, k)
        budget = pattern_rule(x.activation, k, self.pattern_name, lambda cells: cells == 0).sum((2, 3))  # (N, C)
        eligible = has_pattern_cell(h, w, k, self.pattern_name, torch.device("cpu")).flatten()  # (T,)
        keys = torch.empty((n, c, th * tw))  # uniform keys; ineligible tiles sort last
        for i in range(n):
            generator = torch.Generator().manual_seed(image_seed(self.seed, self.layer.index, x.first_image + i))
            keys[i] = torch.rand((c, th * tw), generator=generator)
        keys[:, :, ~eligible] = 2.0
        order = keys.argsort(-1)  # (N, C, T): tile indices by key
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(th * tw).expand_as(order))
        fire = rank.to(x.activation.device) < budget[:, :, None]  # the `budget` lowest keys of each map
        return fire.view(n, c, th, tw)

    def firing(self, x: LayerInput) -> Firing:
        return self.fired("given_tiles", given=self.fire(x))
