"""``python -m pipeline.train_predictor``: learned zero predictors for every predictable layer of one model.

    python -m pipeline.train_predictor model=vgg16_fmnist [pattern=checkerboard window=2 images=20000 ...]

The training is ``pipeline.fitting.predictor_training``; this module is its Hydra entry point.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pipeline.app import OneLineErrors
from pipeline.fitting.predictor_training import TrainingError, register, run

register()
REPORT = OneLineErrors(TrainingError)


@hydra.main(config_path="../conf", config_name="train_predictor", version_base="1.3")
@REPORT.task
def main(cfg: DictConfig) -> None:
    run(cfg)


def cli() -> int:
    return REPORT.run(main)


if __name__ == "__main__":
    sys.exit(cli())
