"""The paired interval of a top-1 drop (contract section 11) against a bootstrap of the images, on real
runs: each run of the analysis's ``runs.csv`` that has a baseline and flips (the predictor comparison,
the operating points), its ``predictions.csv`` and its baseline's read back from the tracking store. For
each: the paired standard error sqrt(((b + c) / n - drop^2) / n) beside the standard deviation of the
drop over ``--resamples`` bootstrap resamples of the images (the same images drawn for both runs), and
the 95 % interval beside the bootstrap's 2.5 / 97.5 percentiles. Ratios near 1 say the normal
interval describes these drops; the last line, how many intervals the bootstrap's contain within 0.05
points at each end.

    python -m analysis && python benchmarks/paired_bootstrap.py
    python benchmarks/paired_bootstrap.py --runs outputs/figures/runs.csv --limit 20 --resamples 4000  # 20 smallest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.load import predictions
from pipeline.measurement.paired import paired_drop
from pipeline.tracking.client import resolve_uri


def right(frame: pd.DataFrame) -> np.ndarray:
    return (frame["pred"] == frame["label"]).to_numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("outputs/figures/runs.csv"), help="the analysis's runs.csv")
    parser.add_argument("--uri", default="sqlite:///outputs/mlflow.db", help="the tracking store the runs are in")
    parser.add_argument("--limit", type=int, default=0, help="at most this many runs, the smallest drops (0: all)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        print(f"error: no {args.runs}: run `python -m analysis` first, or pass --runs", file=sys.stderr)
        return 2
    runs = pd.read_csv(args.runs)
    paired = runs[runs["flips_worse"].notna() & runs["baseline_run_id"].notna() & (runs["run_id"] != runs.get(
        "baseline_run_id"))] if "baseline_run_id" in runs else runs.iloc[:0]  # fmt: skip
    paired = paired[(paired["flips_worse"] + paired["flips_better"]) > 0]
    if paired.empty:
        print(f"error: no run in {args.runs} has a baseline and flips: run the sweeps, then the analysis",
              file=sys.stderr)  # fmt: skip
        return 2
    paired = paired.sort_values("top1_drop")
    paired = paired.head(args.limit) if args.limit > 0 else paired
    client, rng = MlflowClient(resolve_uri(args.uri)), np.random.default_rng(args.seed)
    print(f"{len(paired)} runs, {args.resamples} bootstrap resamples of their images; drops in top-1 points")
    print(f"{'model':<16}{'setting':<44}{'n':>6}{'b':>5}{'c':>5}{'drop':>7}{'SE':>7}{'boot SE':>8}{'ratio':>7}"
          f"{'95 % interval':>17}{'bootstrap 2.5-97.5':>21}")  # fmt: skip
    ratios, agree = [], 0
    for _, row in paired.iterrows():
        run, base = predictions(client, row["run_id"]), predictions(client, row["baseline_run_id"])
        if run is None or base is None or len(run) != len(base):
            continue
        run_right, base_right = right(run), right(base)
        drop = paired_drop(base_right.tolist(), run_right.tolist())
        n = len(run_right)
        drops = np.empty(args.resamples)
        for i in range(args.resamples):  # one resample at a time: 10,000 images x 2,000 would not fit small memory
            pick = rng.integers(0, n, size=n)
            drops[i] = (base_right[pick] & ~run_right[pick]).mean() - (run_right[pick] & ~base_right[pick]).mean()
        spread, (low, high) = drops.std(ddof=1), np.percentile(drops, [2.5, 97.5])
        ratios.append(drop.se / spread)
        agree += abs(drop.low - low) <= 0.0005 and abs(drop.high - high) <= 0.0005
        setting = str(row["setting"]) + ("" if row["layer"] == "all" else f" @ {row['layer']}")
        print(f"{row['model']:<16}{setting[:43]:<44}{n:>6}{drop.flips_worse:>5}{drop.flips_better:>5}"
              f"{100 * drop.drop:>7.2f}{100 * drop.se:>7.3f}{100 * spread:>8.3f}{drop.se / spread:>7.3f}"
              f"{f'[{100 * drop.low:.2f}, {100 * drop.high:.2f}]':>17}"
              f"{f'[{100 * low:.2f}, {100 * high:.2f}]':>21}")  # fmt: skip
    if not ratios:
        print("error: none of the runs' predictions.csv could be read back from the store", file=sys.stderr)
        return 2
    print(f"SE / bootstrap SE: median {np.median(ratios):.3f}, range {min(ratios):.3f} to {max(ratios):.3f}; "
          f"{agree} of {len(ratios)} intervals within 0.05 points of the bootstrap's at both ends")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
