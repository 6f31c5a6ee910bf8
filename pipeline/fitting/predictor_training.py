"""Train a learned zero predictor (``predictor=learned``) for every predictable layer of one model.

    python -m pipeline.train_predictor model=vgg16_fmnist [pattern=checkerboard window=2 images=20000 ...]

The model is frozen and runs unmodified; its layers' outputs on training-split images are the
training data. Each layer's :class:`~pipeline.predictors.learned.ScoreNet` reads that output with
every non-pattern cell set to 0 and learns, without labels, to score each non-pattern cell towards 1
where the cell is > 0 and 0 where it is 0 (mean squared error, Adam; all layers at once, each on its
own layer). A last pass over the training images re-estimates the score networks' BatchNorm
statistics. On held-out training-split images each layer's default threshold is the largest (on a
grid) whose predictions lose at most ``miss_mass`` of the activation mass of the cells it may
predict (the non-pattern cells), and the hit/miss
at every grid threshold is logged. Seeded; nothing reads the evaluation images. The checkpoint
loads with ``weights_only=True``; the run, with its loss curves, is tracked in MLflow.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig
from torch import Tensor, nn
from tqdm import tqdm

from pipeline.app import validate_as
from pipeline.errors import PipelineError
from pipeline.networks.data import DataConfig
from pipeline.networks.layers import PredictableLayer, capture
from pipeline.networks.models import ModelConfig
from pipeline.predictors.learned import FORMAT, ScoreNet, shipped_path
from pipeline.predictors.tiles import basis_map
from pipeline.tracking.config import TrackingConfig

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # thresholds 0.05 .. 0.95
LOGGED = (0.1, 0.3, 0.5, 0.7)  # thresholds whose hold-out hit/miss is logged per layer
LOSS_EVERY = 10  # steps between logged loss points


class TrainingError(PipelineError):
    """Bad input found before training; the message says what to do."""


@dataclass
class TrainPredictorConfig:
    """``python -m pipeline.train_predictor``: learned predictors of one model (conf/train_predictor.yaml)."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING  # its training split is read (data.split is set to train)
    pattern: str = "checkerboard"  # the cells computed first
    window: int = 2  # the tile size of the pattern
    images: int = 20000  # training images, spread over the training split
    holdout: int = 2000  # other training-split images: the thresholds are chosen on them
    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.01  # Adam
    seed: int = 0
    miss_mass: float = 0.01  # default threshold: the largest losing at most this share of the predictable cells' mass
    out: Optional[str] = None  # null: outputs/predictors/<model>-<pattern><window>.pt
    replace_shipped: bool = False  # write pipeline/checkpoints/predictors/<model>-<pattern><window>.pt instead
    progress: Optional[bool] = None
    threads: Optional[int] = None  # torch threads (null: torch's default)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="predictor-training"))

    def __post_init__(self) -> None:
        from pipeline.predictors import PATTERNS

        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if self.window < 2:
            raise ValueError(
                f"window must be >= 2 (at 1 every cell is computed: nothing to predict), got {self.window}"
            )
        for key in ("images", "holdout", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.miss_mass < 1:
            raise ValueError(f"miss_mass must be a fraction in (0, 1), got {self.miss_mass}")
        if self.out and self.replace_shipped:
            raise ValueError("out= and replace_shipped=true name two destinations: keep one")


def register() -> None:
    """``train_predictor_schema`` (conf/train_predictor.yaml) in Hydra's ConfigStore."""
    ConfigStore.instance().store(name="train_predictor_schema", node=TrainPredictorConfig)


@dataclass
class LayerScores:
    """Hold-out statistics of one layer's score network at every grid threshold."""

    predicted: Tensor  # (len(GRID),) non-pattern cells predicted
    hits: Tensor  # (len(GRID),) of them zero
    lost: Tensor  # (len(GRID),) activation mass of the predicted cells
    mass: float  # the layer's activation mass (non-pattern cells)
    cells: int  # non-pattern cells


def validate(cfg: DictConfig) -> TrainPredictorConfig:
    try:
        return validate_as(cfg, TrainPredictorConfig)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def training_images(config: TrainPredictorConfig) -> tuple[Tensor, Tensor]:
    """(training images, hold-out images) from the training split, disjoint, seeded."""
    from pipeline.networks.data import DataError, load_eval_data

    data_config = DataConfig(**{**vars(config.data), "split": "train", "limit": config.images + config.holdout})
    try:
        data = load_eval_data(data_config, config.seed)
    except DataError as exc:
        raise TrainingError(str(exc)) from None
    images = data.images if data.images is not None else torch.cat([b for b, _ in data.batches(256)])
    if len(images) < 2:
        raise TrainingError(f"the training split of {config.data.name} has {len(images)} image(s): too few to train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed))
    holdout = min(config.holdout, len(images) - 1)
    return images[order[holdout:]], images[order[:holdout]]


def loss(net: ScoreNet, activation: Tensor, basis: Tensor) -> Tensor:
    """Mean squared error between the scores of the non-pattern cells and (cell > 0)."""
    scores = net(activation * basis)
    target = (activation > 0).to(scores.dtype)
    other = ~basis.expand_as(scores)
    return ((scores - target) ** 2)[other].mean()


def train(config: TrainPredictorConfig, model: nn.Module) -> tuple[list[PredictableLayer], nn.ModuleDict, dict]:
    """Train every layer's score network; returns the layers, the networks and the training record."""
    torch.manual_seed(config.seed)
    model.eval().requires_grad_(False)
    layers, outputs = capture(model)
    nets = nn.ModuleDict({str(layer.index): ScoreNet(layer.channels) for layer in layers})
    images, holdout = training_images(config)
    optimizer = torch.optim.Adam(nets.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(images) / config.batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[tuple[str, float, int, int]] = []
    disable = (not sys.stderr.isatty()) if config.progress is None else not config.progress
    step, started = 0, time.perf_counter()
    with tqdm(total=steps, unit="step", desc=f"train predictors {config.model.name}", disable=disable) as bar:
        for _epoch in range(config.epochs):
            nets.train()
            order = torch.randperm(len(images), generator=generator)  # a seeded order per epoch
            for start in range(0, len(images), config.batch_size):
                batch = images[order[start : start + config.batch_size]]
                with torch.no_grad():
                    activations = outputs(batch)
                losses = []
                for layer, activation in zip(layers, activations, strict=True):
                    basis = basis_map(config.pattern, config.window, *activation.shape[-2:])
                    losses.append(loss(nets[str(layer.index)], activation, basis))
                optimizer.zero_grad(set_to_none=True)
                torch.stack(losses).sum().backward()
                optimizer.step()
                step += 1
                if step % LOSS_EVERY == 0 or step == steps:
                    now = int(time.time() * 1000)
                    history += [
                        (f"loss/{layer.name}", value.item(), now, step)
                        for layer, value in zip(layers, losses, strict=True)
                    ]
                bar.update(1)
                bar.set_postfix(loss=f"{float(torch.stack(losses).detach().mean()):.4f}")
    reestimate_batchnorm(nets, layers, outputs, images, config)
    record = {"history": history, "seconds": time.perf_counter() - started, "steps": steps,
              "images": len(images), "holdout": len(holdout),
              "scores": holdout_scores(nets, layers, outputs, holdout, config)}  # fmt: skip
    return layers, nets, record


def reestimate_batchnorm(nets: nn.ModuleDict, layers, outputs, images: Tensor, config: TrainPredictorConfig) -> None:
    """One pass over the training images with the final weights: BatchNorm running statistics as
    plain averages over the pass (momentum None). Not torch.optim.swa_utils.update_bn: each score
    network reads its own layer's output of one shared pass of the frozen model, not a loader's batch."""
    for module in nets.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    nets.train()
    with torch.no_grad():
        for start in range(0, len(images), config.batch_size):
            activations = outputs(images[start : start + config.batch_size])
            for layer, activation in zip(layers, activations, strict=True):
                basis = basis_map(config.pattern, config.window, *activation.shape[-2:])
                nets[str(layer.index)](activation * basis)
    for module in nets.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    nets.eval()


def holdout_scores(nets: nn.ModuleDict, layers, outputs, holdout: Tensor, config) -> dict[str, LayerScores]:
    """Per layer, on the hold-out images: predicted cells, hits and lost mass at every grid threshold."""
    grid = torch.tensor(GRID)
    found: dict[str, LayerScores] = {}
    nets.eval()
    with torch.no_grad():
        for start in range(0, len(holdout), config.batch_size):
            activations = outputs(holdout[start : start + config.batch_size])
            for layer, activation in zip(layers, activations, strict=True):
                basis = basis_map(config.pattern, config.window, *activation.shape[-2:])
                scores = nets[str(layer.index)](activation * basis)[..., ~basis]  # (N, C, cells)
                values = activation[..., ~basis]
                below = scores[..., None] < grid  # (N, C, cells, thresholds)
                counts = LayerScores(
                    below.sum((0, 1, 2)),
                    (below & (values == 0)[..., None]).sum((0, 1, 2)),
                    (below * values[..., None]).sum((0, 1, 2), dtype=torch.float64),
                    float(values.sum(dtype=torch.float64)),
                    values.numel(),
                )
                seen = found.get(layer.name)
                found[layer.name] = counts if seen is None else LayerScores(
                    seen.predicted + counts.predicted, seen.hits + counts.hits, seen.lost + counts.lost,
                    seen.mass + counts.mass, seen.cells + counts.cells,
                )  # fmt: skip
    return found


def default_threshold(scores: LayerScores, miss_mass: float) -> float:
    """The largest grid threshold whose predictions lose at most ``miss_mass`` of the mass of the cells
    it may predict (-inf, predicting nothing, when even the smallest loses more)."""
    allowed = [t for t, lost in zip(GRID, scores.lost.tolist(), strict=True) if lost <= miss_mass * scores.mass]
    return max(allowed, default=float("-inf"))


def checkpoint(
    config: TrainPredictorConfig, layers: list[PredictableLayer], nets: nn.ModuleDict, record: dict
) -> dict:
    """The checkpoint: plain types and tensors only (``weights_only=True`` reads it)."""
    return {
        "format": FORMAT,
        "model": config.model.name,
        "pattern": config.pattern,
        "window": config.window,
        "layers": {
            layer.name: {
                "index": layer.index,
                "channels": layer.channels,
                "state_dict": {k: v.clone() for k, v in nets[str(layer.index)].state_dict().items()},
                "threshold": default_threshold(record["scores"][layer.name], config.miss_mass),
            }
            for layer in layers
        },
        "training": {
            "images": config.images,
            "holdout": config.holdout,
            "epochs": config.epochs,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "miss_mass": config.miss_mass,
        },  # fmt: skip
    }


def destination(config: TrainPredictorConfig) -> Path:
    shipped = shipped_path(config.model.name, config.pattern, config.window)
    if config.replace_shipped:
        return shipped
    return Path(config.out) if config.out else Path("outputs/predictors") / shipped.name


def run(cfg: DictConfig) -> Path:
    """Train, save, log; returns the checkpoint's path."""
    from pipeline.networks.models import ModelError, build_model
    from pipeline.tracking.tracker import Tracker

    config = validate(cfg)
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        model = build_model(config.model)
    except ModelError as exc:
        raise TrainingError(str(exc)) from None
    layers, nets, record = train(config, model)
    state = checkpoint(config, layers, nets, record)
    path = destination(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(state, partial)
    os.replace(partial, path)  # never a half-written checkpoint
    final = {"train_seconds": record["seconds"], "steps": record["steps"]}
    for layer in layers:
        scores = record["scores"][layer.name]
        final[f"threshold/{layer.name}"] = state["layers"][layer.name]["threshold"]
        for t in LOGGED:
            i = GRID.index(t)
            predicted = int(scores.predicted[i])
            final[f"holdout/{layer.name}/t{t}/predicted"] = predicted / max(scores.cells, 1)
            final[f"holdout/{layer.name}/t{t}/hit_rate"] = int(scores.hits[i]) / max(predicted, 1)
            final[f"holdout/{layer.name}/t{t}/miss_mass"] = float(scores.lost[i]) / max(scores.mass, 1e-12)
    params = {"model": config.model.name, "pattern": config.pattern, "window": config.window, "images": config.images,
              "holdout": config.holdout, "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
              "seed": config.seed, "miss_mass": config.miss_mass, "checkpoint": str(path)}  # fmt: skip
    tracker = Tracker(config.tracking)
    run_id = tracker.log_training_run(
        f"predictors-{config.model.name}-{config.pattern}{config.window}-s{config.seed}",
        params,
        record["history"],
        final,
        path,
    )
    thresholds = ", ".join(f"{layer.name} {state['layers'][layer.name]['threshold']:g}" for layer in layers)
    print(
        f"trained {len(layers)} predictors of {config.model.name} ({config.pattern}, window {config.window}) "
        f"in {record['seconds']:.0f} s; thresholds: {thresholds}; saved {path}; MLflow run {run_id}",
        flush=True,
    )
    return path
