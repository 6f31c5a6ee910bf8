"""Kind ``learned``: a small network per layer scores every cell from the cells computed first
(contract sections 7-8; Shomron et al.'s ZAP, ECCV 2020).

At each predictable layer the pattern cells (``pattern`` tiled with k = ``window``) are computed
first. The layer's :class:`ScoreNet` reads the layer's output with every other cell set to 0, and
gives each cell a score (trained towards 1 where the cell is > 0 and 0 where it is 0); a non-pattern
cell whose score is below the layer's ``threshold`` is predicted zero. The network is ZAP's: a
depthwise 3x3 conv, BatchNorm, ReLU, a depthwise 3x3 conv, BatchNorm. Its own MACs (two depthwise
3x3 convs: 2 * 9 per output cell; BatchNorm folds into the convs) are counted as ``predictor_macs``.

Checkpoints come from ``python -m pipeline.train_predictor`` (one file per model and pattern: the
pattern and window it was trained for, each layer's weights and default threshold) and load with
``weights_only=True``; the shipped ones are ``pipeline/checkpoints/predictors/<model>-<pattern><window>.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from pipeline.networks.layers import PredictableLayer
from pipeline.predictors.base import BuildContext, Firing, GroupedConfig, LayerInput, Plan, register, share
from pipeline.predictors.patterns import Pattern
from pipeline.predictors.tile import TileRule
from pipeline.predictors.tiles import basis_map

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "predictors"
FORMAT = "cnp-learned-predictor/1"
KERNEL = 3  # the depthwise convs' kernel size


@dataclass
class LearnedConfig(GroupedConfig):
    kind: str = "learned"
    pattern: Pattern = Pattern.checkerboard  # the cells computed first (ZAP's default: a checkerboard)
    threshold: Optional[float] = (
        None  # predict a cell when its score is below this; null: the checkpoint's, per layer
    )
    checkpoint: Optional[str] = None  # null: the shipped predictors of the model and pattern

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threshold is not None and not self.threshold == self.threshold:
            raise ValueError("predictor.threshold must be a number or null (the checkpoint's thresholds)")


class ScoreNet(nn.Module):
    """ZAP's predictor for a layer of ``channels`` channels: (N, C, H, W) -> scores (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, KERNEL, padding=KERNEL // 2, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, KERNEL, padding=KERNEL // 2, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.bn1(self.conv1(x))
        hidden = torch.relu(hidden) if torch.is_grad_enabled() else hidden.relu_()  # in place: inference only
        return self.bn2(self.conv2(hidden))

    @staticmethod
    def macs(shape: tuple[int, ...]) -> int:
        """Two depthwise k x k convs over every cell: output cells * k * k per conv."""
        n, c, h, w = shape
        return 2 * n * c * h * w * KERNEL * KERNEL


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A predictor checkpoint, read with ``weights_only=True`` and checked for its format."""
    if not path.is_file():
        raise ValueError(
            f"predictor checkpoint {path} does not exist: train one with `python -m pipeline.train_predictor "
            "model=<model>` and pass predictor.checkpoint=PATH, or use a model with shipped predictors"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read predictor checkpoint {path} with weights_only=True ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a predictor checkpoint of pipeline.train_predictor (format {FORMAT})")
    return state


def shipped_path(model: str, pattern: str, window: int) -> Path:
    """Where the shipped predictors of a model and pattern live."""
    return SHIPPED / f"{model}-{pattern}{window}.pt"


def checkpoint_path(plan: Plan, model: str) -> Path:
    """The plan's checkpoint, or the shipped one of the model and the plan's pattern."""
    if plan.get("checkpoint"):
        return Path(str(plan.get("checkpoint"))).expanduser()
    return shipped_path(model, str(plan.get("pattern")), int(plan.window or 1))


@register("learned", LearnedConfig)
class LearnedPredictor(TileRule):
    """Per-cell scores from the pattern cells; cells scoring below the threshold are predicted."""

    def __init__(self, plan: Plan, layer: PredictableLayer, context: BuildContext) -> None:
        super().__init__(plan, layer, context)
        self.net: ScoreNet | None = None
        self.threshold = float("nan")
        if self.predicts_nothing:  # 1x1 tiles: every cell is computed, nothing to score
            return
        path = checkpoint_path(plan, context.model)
        state = context.shared.get(str(path))
        if state is None:
            state = context.shared[str(path)] = load_checkpoint(path)
            context.reads.append(path)
        trained = (state["pattern"], int(state["window"]))
        if trained != (self.pattern_name, self.window):
            wanted = f"pattern={self.pattern_name} window={self.window}"
            raise ValueError(
                f"{path} was trained for pattern {trained[0]} at window {trained[1]}, not {self.pattern_name} at "
                f"window {self.window}: set predictor.pattern={trained[0]} window={trained[1]}, or train predictors "
                f"for this pattern (python -m pipeline.train_predictor {wanted})"
            )
        entry = state["layers"].get(layer.name)
        if entry is None:
            raise ValueError(f"{path} has no predictor for layer {layer.name} (it has: {', '.join(state['layers'])})")
        self.net = ScoreNet(int(entry["channels"]))
        self.net.load_state_dict(entry["state_dict"])
        self.net.eval().requires_grad_(False)
        threshold = plan.get("threshold")
        self.threshold = float(entry["threshold"] if threshold is None else threshold)

    def train(self, mode: bool = True) -> LearnedPredictor:
        """The score network always runs in eval mode (its BatchNorm statistics are fixed)."""
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def scores(self, activation: Tensor) -> Tensor:
        """(N, C, H, W) scores from the pattern cells only (every other cell is read as 0)."""
        assert self.net is not None
        h, w = activation.shape[-2:]
        basis = basis_map(self.pattern_name, self.window, h, w, activation.device)
        with torch.no_grad():  # channels-last: CPU depthwise convs several times as fast, the same values
            read = torch.empty_like(activation, dtype=torch.float32, memory_format=torch.channels_last)
            torch.mul(activation.detach().float(), basis, out=read)  # masked and transposed in one pass
            return self.net(read)  # channels-last too

    def masks(self, x: LayerInput) -> tuple[Tensor, Tensor]:
        h, w = x.activation.shape[-2:]
        basis = basis_map(self.pattern_name, self.window, h, w, x.activation.device)
        return x.zero & basis, self._predicted(x, basis)

    def _predicted(self, x: LayerInput, basis: Tensor) -> Tensor:
        """The non-pattern cells predicted zero: scores below the threshold (the zero ones without a net)."""
        if self.net is None:
            return x.zero & ~basis
        return share(self.scores(x.activation) < self.threshold, self.group) & ~basis

    def macs(self, shape: tuple[int, ...]) -> int:
        return 0 if self.net is None else ScoreNet.macs(shape)

    def firing(self, x: LayerInput) -> Firing:
        if self.net is None:
            h, w = x.activation.shape[-2:]
            basis = basis_map(self.pattern_name, self.window, h, w, x.activation.device)
            return self.fired("given_cells", given=self._predicted(x, basis))
        # the scores below the threshold, compared straight into the activation's layout; the counting
        # backend predicts only the non-pattern ones (FIRING_RULES["given_cells"])
        below = torch.empty_like(x.activation, dtype=torch.bool, memory_format=torch.contiguous_format)
        below = torch.lt(self.scores(x.activation), self.threshold, out=below)
        return self.fired("given_cells", given=share(below, self.group))  # g > 1: where every channel agrees

    def setting(self) -> dict[str, object]:
        return {**super().setting(), "threshold": self.threshold if self.net is not None else ""}
