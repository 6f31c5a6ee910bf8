"""Wall time of the default sweep against the model time it contains.

Runs ``python -m pipeline -m window=1,2,3,4,5`` (the README's default sweep, or the overrides
given) into a fresh temporary store, then, in this process and on the same images, times the plain
model over the evaluated images once. Prints the sweep's wall time, each job's evaluation time,
and the ratio of the wall time to 5x (jobs x) the plain model time.

    python benchmarks/sweep.py
    python benchmarks/sweep.py model=vgg16_fmnist
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from pipeline.networks.data import DataConfig, load_eval_data
from pipeline.networks.models import ModelConfig, build_model

REPO = Path(__file__).resolve().parent.parent


def main(overrides: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        command = [
            sys.executable, "-m", "pipeline", "-m", "window=1,2,3,4,5", *overrides,
            f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifacts={tmp}/artifacts",
            f"hydra.sweep.dir={tmp}/sweep",
        ]  # fmt: skip
        print("$", " ".join(command[1:]), flush=True)
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - start
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiment = client.get_experiment_by_name("cross-neuron-prediction")
        runs = [
            r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("sweep.parent") != "true"
        ]
        params = runs[0].data.params

    model_name = params["model"]
    model = build_model(
        ModelConfig(
            name=model_name,
            checkpoint=params.get("model.checkpoint") if params.get("model.checkpoint") != "null" else None,
            weights=params.get("model.weights") if params.get("model.weights") != "null" else None,
            input_size=[int(v) for v in params["model.input_size"].strip("[]").split(",")],
            num_classes=int(params["model.num_classes"]),
        )
    )
    limit = None if params["limit"] == "null" else int(params["limit"])
    data = load_eval_data(DataConfig(name=params["data"], limit=limit, batch_size=int(params["data.batch_size"])))
    model(next(data.batches(8))[0])  # warm-up
    start = time.perf_counter()
    with torch.inference_mode():
        for images, _ in data.batches(int(params["data.batch_size"])):
            model(images)
    plain = time.perf_counter() - start

    print(f"\n{'job':<28}{'eval s':>8}")
    for run in sorted(runs, key=lambda r: int(r.data.params["window"])):
        print(f"{run.info.run_name:<28}{run.data.metrics['eval_seconds']:>8.2f}")
    jobs = len(runs)
    print(f"\nplain {model_name} over {data.size} images: {plain:.2f} s; x{jobs} jobs = {jobs * plain:.2f} s")
    print(f"sweep wall time: {wall:.1f} s for {jobs} jobs ({wall / (jobs * plain):.2f}x the model time)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the sweep, e.g. model=vgg16_fmnist")
    sys.exit(main(parser.parse_args().overrides))
