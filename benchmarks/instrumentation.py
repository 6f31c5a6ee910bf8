"""Instrumentation overhead: plain inference vs the instrumented forward, side by side.

For each model, in one process on the same inputs: the plain model's forward and the instrumented
forward (every statistic of contract section 4, the paper's diagonal 3x3 rule in every layer),
alternated, ``--repeats`` times each after a warm-up. Prints medians, the ratio, the peak memory of
each, and the largest ratio. Then, on one model (``--kinds-model``), the same for every predictor
kind, so the cost of each kind is known.

    python benchmarks/instrumentation.py                 # alexnet, vgg16, resnet18 (224x224, batch 16) + *_fmnist
    python benchmarks/instrumentation.py --models alexnet --repeats 3 --kinds-model alexnet_fmnist
    python benchmarks/instrumentation.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.measurement.instrument import instrument
from pipeline.networks.models import CHECKPOINTS, ModelConfig, build_model
from pipeline.predictors import KINDS, PredictorFactory, uniform
from pipeline.predictors.learned import shipped_path

KIND_SETTINGS: dict[str, dict[str, object]] = {"tile": {"window": 3}, "tile_oracle": {"window": 3},
                                               "random": {"window": 3},
                                               "learned": {"window": 2, "pattern": "checkerboard"}}  # fmt: skip

IMAGENET = ("alexnet", "vgg16", "resnet18")
FMNIST = ("alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist")


def _status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def predictors(kind: str, model: str = "") -> PredictorFactory:
    """The benchmarked setting of ``kind`` in every layer (learned: the model's shipped predictors)."""
    settings = dict(KIND_SETTINGS.get(kind, {}))
    if kind == "learned":
        settings["checkpoint"] = str(shipped_path(model, str(settings["pattern"]), int(settings["window"])))
    return uniform(kind, **settings)


def memory_child(name: str, mode: str, batch: int, kind: str = "tile") -> None:
    """Print the peak resident memory growth (bytes) of one forward, in a fresh process."""
    model, x = _setup(name, batch, torch.device("cpu"))
    with torch.inference_mode(), instrument(model, predictors(kind, name), "all") as net:
        fn = net if mode == "instrumented" else model
        gc.collect()
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to the current RSS
            handle.write("5")
        fn(x)
        print((_status_kb("VmHWM") - before) * 1024)


def peak_growth(name: str, mode: str, batch: int, kind: str = "tile") -> int:
    """Peak memory growth of one forward, measured in a fresh process (Linux only; 0 elsewhere)."""
    if not Path("/proc/self/clear_refs").exists():
        return 0
    command = [sys.executable, __file__, "--memory-child", name, mode, str(batch), kind]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def _setup(name: str, batch: int, device: torch.device):
    torch.manual_seed(0)
    fmnist = name.endswith("_fmnist")
    cfg = ModelConfig(
        name=name,
        weights=None,
        checkpoint=f"{name}.pt" if fmnist and (CHECKPOINTS / f"{name}.pt").exists() else None,
        input_size=[1, 28, 28] if fmnist else [3, 224, 224],
        num_classes=10 if fmnist else 1000,
    )
    model = build_model(cfg).to(device)
    return model, torch.randn((batch, *cfg.input_size), device=device)


def bench(name: str, batch: int, repeats: int, device: torch.device, kind: str = "tile") -> dict[str, float]:
    model, x = _setup(name, batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    plain, instrumented = [], []
    with torch.inference_mode(), instrument(model, predictors(kind, name), "all") as net:
        model(x), net(x)  # warm-up (and the kernel's first compile)
        for _ in range(repeats):
            for fn, times in ((model, plain), (net, instrumented)):
                sync()
                start = time.perf_counter()
                fn(x)
                sync()
                times.append(time.perf_counter() - start)
    plain_s, inst_s = statistics.median(plain), statistics.median(instrumented)
    memory = device.type == "cpu"
    plain_mem = peak_growth(name, "plain", batch, kind) if memory else 0
    inst_mem = peak_growth(name, "instrumented", batch, kind) if memory else 0
    return {"plain_s": plain_s, "instrumented_s": inst_s, "ratio": inst_s / plain_s,
            "plain_mb": plain_mem / 2**20, "instrumented_mb": inst_mem / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[*IMAGENET, *FMNIST])
    parser.add_argument("--batch", type=int, default=16, help="batch of the 224x224 models")
    parser.add_argument("--fmnist-batch", type=int, default=256, help="batch of the Fashion-MNIST models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kinds-model", default="alexnet_fmnist", help="model of the per-kind rows ('' skips them)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    header = (
        f"{'model':<16}{'predictor':<13}{'batch':>6}{'plain s':>10}{'instr. s':>10}{'ratio':>8}"
        f"{'plain MB':>10}{'instr. MB':>11}{'mem ratio':>10}"
    )
    print(header)
    worst = 0.0
    rows = [(name, "tile") for name in args.models]
    rows += [(args.kinds_model, kind) for kind in KINDS if args.kinds_model and kind != "tile"]
    for number, (name, kind) in enumerate(rows):
        if number == len(args.models):
            print(f"-- every predictor kind on {name} (tile above; {KIND_SETTINGS})")
        batch = args.fmnist_batch if name.endswith("_fmnist") else args.batch
        r = bench(name, batch, args.repeats, device, kind)
        mem_ratio = r["instrumented_mb"] / r["plain_mb"] if r["plain_mb"] > 0 else float("nan")
        print(
            f"{name:<16}{kind:<13}{batch:>6}{r['plain_s']:>10.4f}{r['instrumented_s']:>10.4f}{r['ratio']:>8.3f}"
            f"{r['plain_mb']:>10.0f}{r['instrumented_mb']:>11.0f}{mem_ratio:>10.2f}",
            flush=True,
        )
        if kind == "tile":
            worst = max(worst, r["ratio"])
    print(f"largest ratio of the default predictor: {worst:.3f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    sys.exit(main())
