"""The counting backends side by side: the fused C kernel (``cnp::measure``), the pure-torch reference,
and the reference compiled by ``torch.compile`` (inductor, C++ on the CPU), on each predictable layer's
output of a Fashion-MNIST twin (the layers' real activations, batch 256), with the paper's diagonal 3x3
rule. Prints the median time of each per layer and in total, and the ratio to the kernel; a compiled
path within 10 % of the kernel would be the simpler one to keep.

    python benchmarks/counting.py                       # alexnet_fmnist
    python benchmarks/counting.py --model vgg16_fmnist --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from pipeline.measurement import counts
from pipeline.networks.layers import capture
from pipeline.networks.models import CHECKPOINTS, ModelConfig, build_model
from pipeline.predictors import make_predictor


def median_seconds(fn, inputs: list[torch.Tensor], repeats: int) -> float:
    fn(inputs[0].clone())  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        batch = [x.clone() for x in inputs]  # each call zeroes its input in place
        start = time.perf_counter()
        for x in batch:
            fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="alexnet_fmnist")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    model = build_model(ModelConfig(name=args.model, checkpoint=str(CHECKPOINTS / f"{args.model}.pt"),
                                    input_size=[1, 28, 28], num_classes=10))  # fmt: skip
    layers, graph = capture(model)
    with torch.no_grad():
        outputs = graph(torch.randn(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    predictor = make_predictor("tile", 3)
    compiled = torch.compile(lambda x: counts.measure_torch(x, predictor), dynamic=False)
    backends = {
        "kernel": lambda x: counts.measure(x, predictor),
        "torch": lambda x: counts.measure_torch(x, predictor),
        "compiled": compiled,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}, batch {args.batch}")
    print(f"{'layer':<14}{'shape':<22}" + "".join(f"{name + ' s':>13}" for name in backends))
    totals = dict.fromkeys(backends, 0.0)
    for layer, output in zip(layers, outputs, strict=True):
        row = {name: median_seconds(fn, [output], args.repeats) for name, fn in backends.items()}
        for name, seconds in row.items():
            totals[name] += seconds
        print(f"{layer.name:<14}{str(tuple(output.shape)):<22}" + "".join(f"{s:>13.5f}" for s in row.values()),
              flush=True)  # fmt: skip
    print(f"{'total':<36}" + "".join(f"{s:>13.5f}" for s in totals.values()))
    print("ratio to the kernel: " + ", ".join(f"{name} {totals[name] / totals['kernel']:.2f}" for name in backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
