"""Each operating point against the uniform settings, on the evaluation images: the best uniform setting
whose test drop is within the operating point's budget (the tile rules at any pattern, window and
threshold, the learned predictor at any threshold, with or without recovery: every ``layer=all`` run
without a per-layer table), and the paper's diagonal 3x3 rule. An operating point should save more net
MACs than the first, and more than the second wherever its drop is no larger than the rule's. Reads the
analysis's ``operating_points.csv`` and ``runs.csv``.

    python -m analysis && python benchmarks/operating_points.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def uniform_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The test runs of one predictor over every layer (no per-layer table) that predict something."""
    runs = runs[(runs["split"] == "test") & (runs["layer"] == "all") & runs["top1_drop"].notna()]
    return runs[runs["layers"].fillna("{}").isin(["{}", ""]) & runs["predictor"].isin(["tile", "learned"])]


def is_rule(runs: pd.DataFrame) -> pd.Series:
    """The paper's diagonal 3x3 rule, no threshold, no recovery."""
    return ((runs["predictor"] == "tile") & (runs["pattern"] == "diagonal") & (runs["window"] == 3)
            & (runs["threshold"].fillna(0) == 0) & (runs["recover"].fillna("none") == "none"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", type=Path, default=Path("outputs/figures"), help="the analysis's output")
    args = parser.parse_args(argv)
    paths = {name: args.figures / f"{name}.csv" for name in ("operating_points", "runs")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        print(f"error: no {', '.join(missing)}: run `python -m analysis` (after the operating points' runs or "
              "searches) first, or pass --figures", file=sys.stderr)  # fmt: skip
        return 2
    points, runs = pd.read_csv(paths["operating_points"]), uniform_runs(pd.read_csv(paths["runs"]))
    print("drops in top-1 points on the evaluation images, savings in % of conv MACs (net of the predictor)")
    print(f"{'operating point':<22}{'budget':>7}{'drop':>7}{'net':>7} | {'best uniform within budget':<44}"
          f"{'drop':>7}{'net':>7} | {'diagonal 3x3':>12}{'drop':>7} | verdict")  # fmt: skip
    failures = 0
    for _, point in points.iterrows():
        model = runs[runs["model"] == point["model"]]
        within = model[model["top1_drop"] <= point["budget"] / 100]
        best = within.loc[within["net_mac_saving"].idxmax()] if len(within) else None
        rule = model[is_rule(model)]
        rule = rule.iloc[-1] if len(rule) else None
        drop, net = point["test/top1_drop"], point["test/net_mac_saving"]
        verdicts = ["keeps budget" if drop <= point["budget"] / 100 else "OVER BUDGET"]
        if best is not None:
            verdicts.append("beats uniform" if net > best["net_mac_saving"] else "NOT above uniform")
        if rule is not None and drop <= rule["top1_drop"]:
            verdicts.append("beats 3x3" if net > rule["net_mac_saving"] else "NOT above 3x3")
        failures += any(v.isupper() or v.startswith("NOT") for v in verdicts)
        nan = float("nan")
        label = "-" if best is None else str(best["setting"])
        print(f"{point['operating_point']:<22}{point['budget']:>7g}{100 * drop:>7.2f}{100 * net:>7.1f} | "
              f"{label[:43]:<44}{100 * (nan if best is None else best['top1_drop']):>7.2f}"
              f"{100 * (nan if best is None else best['net_mac_saving']):>7.1f} | "
              f"{100 * (nan if rule is None else rule['net_mac_saving']):>12.1f}"
              f"{100 * (nan if rule is None else rule['top1_drop']):>7.2f} | {', '.join(verdicts)}")  # fmt: skip
    print(f"{len(points) - failures} of {len(points)} operating points keep their budget and beat both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
