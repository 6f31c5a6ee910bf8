"""Kind ``random``: the control, the tile rule's budget without spatial correlation (contract section 7).

In each channel map of each image exactly as many tiles fire as the ``tile`` rule (same k and
pattern, threshold 0) fires there, chosen uniformly at random among the map's tiles that have an
in-bounds pattern cell. Counts are taken as for ``tile``: the pattern cells of a firing tile are
zero_diag (here they need not be zero) and its other cells are predicted.

The choice is seeded by the job's seed, the layer and the image's index in the evaluation, so it
does not depend on the batch size or the device: image n draws uniform keys for its C x T tiles from
torch's CPU generator seeded with :func:`image_seed`, and in each map the ``budget`` eligible tiles with
the lowest keys fire, a tie of keys going to the lower tile index. On a contiguous float32 CPU map the
fused kernel ``cnp::random_tiles`` draws the same keys and takes the same tiles (tests/predictors check
it against :func:`reference_fire`, tiles for tiles).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.measurement import kernels
from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.base import BuildContext, Firing, GroupedConfig, LayerInput, Plan, register, share
from pipeline.predictors.patterns import Pattern, pattern_mask
from pipeline.predictors.tile import TileRule
from pipeline.predictors.tiles import has_pattern_cell, pattern_rule, tile_grid


@dataclass
class RandomConfig(GroupedConfig):
    kind: str = "random"
    pattern: Pattern = Pattern.diagonal


def image_seed(seed: int, layer: int, image: int) -> int:
    """A 63-bit seed for one image's draws at one layer (stable across runs and platforms)."""
    digest = hashlib.blake2b(f"cnp-random/{seed}/{layer}/{image}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def reference_fire(activation: Tensor, k: int, pattern: str, seeds: list[int], group: int = 1) -> Tensor:
    """The pure-torch draws: (N, C, th, tw) bool, image n's keys from a generator seeded with ``seeds[n]``.
    With ``group`` g > 1 one draw per image and channel group (its budget: the tiles the tile rule fires in
    every channel of the group), fired in every channel of the group (contract section 10)."""
    n, c, h, w = activation.shape
    th, tw = tile_grid(h, w, k)
    rule = share(pattern_rule(activation, k, pattern, lambda cells: cells == 0), group)  # (N, C, th, tw)
    budget = rule[:, ::group].sum((2, 3))  # (N, groups): one channel of each group stands for it
    groups = budget.shape[1]
    eligible = has_pattern_cell(h, w, k, pattern, torch.device("cpu")).flatten()  # (T,)
    keys = torch.empty((n, groups, th * tw))  # uniform keys; ineligible tiles sort last
    for i in range(n):
        keys[i] = torch.rand((groups, th * tw), generator=torch.Generator().manual_seed(seeds[i]))
    keys[:, :, ~eligible] = 2.0
    order = keys.argsort(dim=-1, stable=True)  # (N, groups, T): tile indices by key, ties by index
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(th * tw).expand_as(order))
    fire = rank.to(activation.device) < budget[:, :, None]  # the `budget` lowest keys of each map or group
    fire = fire.view(n, groups, th, tw)
    return fire if group == 1 else fire.repeat_interleave(group, dim=1)[:, :c]


@register("random", RandomConfig)
class RandomTiles(TileRule):
    """Fires as many tiles per map as the tile rule, at random positions."""

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__(plan, layer, context)
        self.seed = context.seed

    def fire(self, x: LayerInput) -> Tensor:
        """(N, C, th, tw) bool: the tiles that fire."""
        n = x.activation.shape[0]
        seeds = [image_seed(self.seed, self.layer.index, x.first_image + i) for i in range(n)]
        if self.group == 1 and kernels.fits(x.activation) and kernels.load() is not None:
            pattern = pattern_mask(self.pattern_name, self.window).to(torch.uint8).contiguous()
            fire = kernels.random_tiles_op(x.activation, pattern, torch.tensor(seeds, dtype=torch.int64), self.window)
            return fire.view(torch.bool)  # the kernel's bytes are 0 or 1
        return reference_fire(x.activation, self.window, self.pattern_name, seeds, self.group)

    def firing(self, x: LayerInput) -> Firing:
        return self.fired("given_tiles", given=self.fire(x))
