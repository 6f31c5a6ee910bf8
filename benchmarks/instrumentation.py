"""Instrumentation overhead: plain inference vs the instrumented forward, side by side.

For each model, in one process on the same inputs: the plain model's forward and the instrumented
forward (every statistic of contract section 4, window-3 prediction in every layer), alternated,
``--repeats`` times each after a warm-up. Prints medians, the ratio, the peak memory of each, and
as its last line the largest ratio.

    python benchmarks/instrumentation.py                 # alexnet, vgg16, resnet18 (224x224, batch 16) + *_fmnist
    python benchmarks/instrumentation.py --models alexnet --repeats 3
    python benchmarks/instrumentation.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time

import torch

from pipeline.config import ModelConfig
from pipeline.instrument import instrument
from pipeline.models import build_model
from pipeline.prediction import TilePredictor

IMAGENET = ("alexnet", "vgg16", "resnet18")
FMNIST = ("alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist")


def peak_rss_during(fn) -> tuple[float, int]:
    """(seconds, peak resident memory growth in bytes over the baseline) of one call, measured
    in a forked child so each measurement starts from the same memory state (Linux only)."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(write, f"{seconds} {(after - before) * 1024}".encode())
        os._exit(0)
    os.close(write)
    data = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    return float(data[0]), int(data[1])


def bench(name: str, batch: int, repeats: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    fmnist = name.endswith("_fmnist")
    cfg = ModelConfig(
        name=name,
        weights=None,
        checkpoint=f"{name}.pt" if fmnist else None,
        input_size=[1, 28, 28] if fmnist else [3, 224, 224],
        num_classes=10 if fmnist else 1000,
    )
    model = build_model(cfg).to(device)
    x = torch.randn((batch, *cfg.input_size), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    plain, instrumented = [], []
    with torch.inference_mode(), instrument(model, TilePredictor(3), "all") as net:
        model(x), net(x)  # warm-up (and the kernel's first compile)
        for _ in range(repeats):
            for fn, times in ((model, plain), (net, instrumented)):
                sync()
                start = time.perf_counter()
                fn(x)
                sync()
                times.append(time.perf_counter() - start)
        if device.type == "cpu" and hasattr(__import__("os"), "fork"):
            _, plain_mem = peak_rss_during(lambda: model(x))
            _, inst_mem = peak_rss_during(lambda: net(x))
        else:
            plain_mem = inst_mem = 0
    plain_s, inst_s = statistics.median(plain), statistics.median(instrumented)
    return {"plain_s": plain_s, "instrumented_s": inst_s, "ratio": inst_s / plain_s,
            "plain_mb": plain_mem / 2**20, "instrumented_mb": inst_mem / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[*IMAGENET, *FMNIST])
    parser.add_argument("--batch", type=int, default=16, help="batch of the 224x224 models")
    parser.add_argument("--fmnist-batch", type=int, default=256, help="batch of the Fashion-MNIST models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    header = f"{'model':<16}{'batch':>6}{'plain s':>10}{'instr. s':>10}{'ratio':>8}{'plain MB':>10}{'instr. MB':>11}{'mem ratio':>10}"
    print(header)
    worst = 0.0
    for name in args.models:
        batch = args.fmnist_batch if name.endswith("_fmnist") else args.batch
        r = bench(name, batch, args.repeats, device)
        mem_ratio = r["instrumented_mb"] / r["plain_mb"] if r["plain_mb"] > 0 else float("nan")
        print(
            f"{name:<16}{batch:>6}{r['plain_s']:>10.4f}{r['instrumented_s']:>10.4f}{r['ratio']:>8.3f}"
            f"{r['plain_mb']:>10.0f}{r['instrumented_mb']:>11.0f}{mem_ratio:>10.2f}",
            flush=True,
        )
        worst = max(worst, r["ratio"])
    print(f"largest ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
