"""Train the Fashion-MNIST twins of ``pipeline.networks.fmnist`` again (the training: ``pipeline.fitting.twins``).

    python -m pipeline.train --model vgg16_fmnist [--epochs N] [--seed S] [--out PATH | --replace-shipped]
                             [--tracking-uri URI] [--experiment NAME] [--data-root DIR]

The checkpoint goes to outputs/checkpoints/<model>.pt (use it with model.checkpoint=PATH); only
--replace-shipped overwrites the shipped pipeline/checkpoints/<model>.pt that the model configs load.
An epoch takes 0.5-3 minutes on 2 CPU cores (per-model epochs: MODEL_DEFAULTS). This module imports
neither torch nor mlflow until the arguments are parsed, so --help answers at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"  # what conf/model/*_fmnist.yaml load
OUT_DIR = Path("outputs/checkpoints")  # relative to the working directory, like the other outputs

# Per-model defaults (chosen so each model reaches >= 91 % test top-1 in a few CPU epochs).
MODEL_DEFAULTS: dict[str, dict[str, float | int]] = {
    "alexnet_fmnist": {"epochs": 16, "lr": 0.04, "weight_decay": 5e-4},
    "vgg16_fmnist": {"epochs": 15, "lr": 0.02, "weight_decay": 5e-4},
    "resnet18_fmnist": {"epochs": 10, "lr": 0.1, "weight_decay": 5e-4},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, choices=sorted(MODEL_DEFAULTS))
    p.add_argument("--epochs", type=int, default=None, help="default: per-model (MODEL_DEFAULTS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="peak LR of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=5.0, help="max grad norm (0: off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--data-root", type=Path, default=None, help="default: /usr/share/datasets/fashion-mnist (Debian's)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None, help=f"default: {OUT_DIR}/<model>.pt")
    where.add_argument(
        "--replace-shipped",
        action="store_true",
        help=f"write {SHIPPED_DIR.parent.name}/{SHIPPED_DIR.name}/<model>.pt, the checkpoint the model configs load",
    )
    p.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db")
    p.add_argument("--experiment", default="fmnist-training")
    p.add_argument(
        "--artifacts",
        default="outputs/mlartifacts",
        help="artifact root when the experiment is created (as tracking.artifacts)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    args = p.parse_args(argv)
    defaults = MODEL_DEFAULTS[args.model]
    if args.epochs is None:
        args.epochs = int(defaults["epochs"])
    if args.lr is None:
        args.lr = float(defaults["lr"])
    if args.weight_decay is None:
        args.weight_decay = float(defaults["weight_decay"])
    if args.out is None:
        args.out = (SHIPPED_DIR if args.replace_shipped else OUT_DIR) / f"{args.model}.pt"
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    from pipeline.fitting.twins import run_training  # torch and mlflow: only once the arguments are good

    return run_training(args)


if __name__ == "__main__":
    main()
