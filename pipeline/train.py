"""Train the Fashion-MNIST twins of ``pipeline.networks.fmnist`` again (the training: ``pipeline.fitting.twins``).

usage: python -m pipeline.train model=vgg16_fmnist [epochs=N] [seed=S] [out=PATH | replace_shipped=true]
                                [tracking.uri=URI] [tracking.experiment=NAME] [data.root=DIR] [log_run=false]

The checkpoint goes to outputs/checkpoints/<model>.pt (use it with model.checkpoint=PATH); only
replace_shipped=true overwrites the shipped pipeline/checkpoints/<model>.pt that the model configs load.
An epoch takes 0.5-3 minutes on 2 CPU cores (per-model epochs: pipeline.fitting.twins.MODEL_DEFAULTS).
Every key is in conf/train.yaml; the groups are the other entry points' (model, data, tracking).

The flags of the earlier command line still work and mean the same keys: --model M, --epochs N,
--seed S, --lr X, --weight-decay X, --batch-size N, --label-smoothing X, --grad-clip X, --threads N,
--data-root DIR, --out PATH, --replace-shipped, --tracking-uri URI, --experiment NAME,
--artifacts DIR, --no-mlflow, --train-limit N. --help answers without importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

FLAGS = {  # the earlier argparse flags -> the Hydra keys they set
    "--model": "model", "--epochs": "epochs", "--seed": "seed", "--lr": "lr", "--weight-decay": "weight_decay",
    "--batch-size": "batch_size", "--label-smoothing": "label_smoothing", "--grad-clip": "grad_clip",
    "--threads": "threads", "--data-root": "data.root", "--out": "out", "--tracking-uri": "tracking.uri",
    "--experiment": "tracking.experiment", "--artifacts": "tracking.artifacts", "--train-limit": "train_limit",
}  # fmt: skip
SWITCHES = {"--replace-shipped": "replace_shipped=true", "--no-mlflow": "log_run=false"}


class FlagError(ValueError):
    """A flag of the earlier command line without its value, or one that never existed."""


def overrides(argv: list[str]) -> list[str]:
    """``argv`` with the earlier flags (``--epochs 3``, ``--epochs=3``) as the Hydra overrides they mean."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag in SWITCHES and not equals:
            out.append(SWITCHES[flag])
        elif flag in FLAGS:
            if not equals:
                value = next(args, None)
                if value is None:
                    raise FlagError(f"{flag} needs a value, e.g. {flag} 3 (or the key: {FLAGS[flag]}=3)")
            out.append(f"{FLAGS[flag]}={value}")
        elif arg.startswith("--") and not arg.startswith("--hydra") and arg not in ("--cfg", "--info", "--resolve"):
            known = ", ".join([*FLAGS, *SWITCHES])
            raise FlagError(f"unknown flag {arg}: use a key of conf/train.yaml (epochs=3), or one of {known}")
        else:
            out.append(arg)
    return out


def cli(argv: list[str] | None = None) -> int:
    """Bad input is one ``error:`` line and exit 2; the training's top-1 is printed by the training."""
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        hydra_args = overrides(argv)
    except FlagError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    import hydra  # the heavy imports only once the command line is good
    from omegaconf import DictConfig

    from pipeline.app import OneLineErrors
    from pipeline.fitting.twins import TrainingError, register, run_training

    register()
    report = OneLineErrors(TrainingError)

    conf = Path(__file__).resolve().parents[1] / "conf"  # absolute: works however the module was started

    @hydra.main(config_path=str(conf), config_name="train", version_base="1.3")
    @report.task
    def main(cfg: DictConfig) -> float:
        return run_training(cfg)

    saved = sys.argv
    sys.argv = [saved[0], *hydra_args]
    try:
        return report.run(main)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(cli())
