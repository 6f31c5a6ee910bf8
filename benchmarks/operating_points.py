"""Each operating point against the uniform settings (one predictor over every layer: the tile rules at
any pattern, window and threshold, the learned predictor at any threshold, with or without recovery;
every ``layer=all`` run without a per-layer table), on the evaluation images:

- *best uniform within budget (on test)*: the largest net saving among the uniform settings whose test
  drop is within the operating point's budget. Chosen on the test images themselves, so an optimistic
  yardstick no method that never sees them could be sure to reach;
- *best uniform chosen as the search chooses*: the largest calibration net saving among the uniform
  settings whose calibration drop's one-sided upper bound (at the operating point's confidence) is
  within the budget, and its test numbers (needs the uniform runs on calibration too:
  ``data.split=calibration data.limit=10000``);
- the paper's diagonal 3x3 rule.

An operating point should save more than the first two, and more than the rule wherever its drop is no
larger than the rule's. Reads the analysis's ``operating_points.csv`` and ``runs.csv``; with every split:

    python -m analysis filters.split=null out=outputs/figures/every-split log_run=false
    python benchmarks/operating_points.py --figures outputs/figures/every-split
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.summary import is_paper_rule
from pipeline.measurement.paired import PairedDrop

KEY = ["model", "predictor", "pattern", "window", "threshold", "recover"]  # one uniform setting on either split


def uniform_runs(runs: pd.DataFrame, split: str) -> pd.DataFrame:
    """The runs on ``split`` of one predictor over every layer (no per-layer table) that predict something."""
    runs = runs[(runs["split"] == split) & (runs["layer"] == "all") & runs["top1_drop"].notna()]
    runs = runs[runs["layers"].fillna("{}").isin(["{}", ""]) & runs["predictor"].isin(["tile", "learned"])]
    runs = runs[runs["net_mac_saving"] > 0]  # not window 1, which predicts nothing
    return runs.assign(threshold=runs["threshold"].fillna(-1), recover=runs["recover"].fillna("none"),
                       layers=runs["layers"].fillna("{}"))  # fmt: skip


def chosen_on_calibration(test: pd.DataFrame, calibration: pd.DataFrame, budget: float,
                          confidence: float) -> pd.Series | None:  # fmt: skip
    """The test run of the uniform setting the search's rule picks on calibration, or None."""
    if calibration.empty:
        return None
    upper = [PairedDrop(int(r["flips_worse"]), int(r["flips_better"]), int(r["images"])).upper(confidence)
             if pd.notna(r["flips_worse"]) else float("nan") for _, r in calibration.iterrows()]  # fmt: skip
    within = calibration[pd.Series(upper, index=calibration.index) <= budget / 100]
    for _, pick in within.sort_values("net_mac_saving", ascending=False).iterrows():
        found = test[(test[KEY] == pick[KEY]).all(axis=1)]
        if len(found):
            return found.iloc[-1]
    return None


def is_rule(runs: pd.DataFrame) -> pd.Series:
    """The paper's diagonal 3x3 rule (no threshold, no table, no recovery)."""
    return is_paper_rule(runs) & (runs["window"] == 3)


def cells(run: pd.Series | None, setting: bool = True) -> str:
    """A run's setting (when ``setting``), its drop (points) and net saving (%); dashes for none."""
    name = "" if not setting else f"{'-' if run is None else str(run['setting'])[:33]:<34}"
    if run is None:
        return f"{name}{'-':>7}{'-':>7}"
    return f"{name}{100 * run['top1_drop']:>7.2f}{100 * run['net_mac_saving']:>7.1f}"


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
    every = pd.read_csv(paths["runs"])
    points, runs, calibration = pd.read_csv(paths["operating_points"]), uniform_runs(every, "test"), uniform_runs(
        every, "calibration")  # fmt: skip
    print("drops in top-1 points on the evaluation images, savings in % of conv MACs (net of the predictor)")
    print(f"{'operating point':<22}{'budget':>7}{'drop':>7}{'net':>7} | {'best uniform within budget (test)':<34}"
          f"{'drop':>7}{'net':>7} | {'chosen as the search chooses':<34}{'drop':>7}{'net':>7} | "
          f"{'3x3':>7}{'net':>7} | verdict")  # fmt: skip
    failures = 0
    for _, point in points.iterrows():
        model = runs[runs["model"] == point["model"]]
        within = model[model["top1_drop"] <= point["budget"] / 100]
        best = within.loc[within["net_mac_saving"].idxmax()] if len(within) else None
        confidence = 0.95 if pd.isna(point.get("confidence")) else float(point["confidence"])
        fair = chosen_on_calibration(model, calibration[calibration["model"] == point["model"]], point["budget"],
                                     confidence)  # fmt: skip
        rule = model[is_rule(model)]
        rule = rule.iloc[-1] if len(rule) else None
        drop, net = point["test/top1_drop"], point["test/net_mac_saving"]
        verdicts = ["keeps budget" if drop <= point["budget"] / 100 else "OVER BUDGET"]
        if best is not None:
            verdicts.append("beats uniform (test)" if net > best["net_mac_saving"] else "NOT above uniform (test)")
        if fair is not None:
            verdicts.append(
                "beats uniform (as chosen)" if net > fair["net_mac_saving"] else "NOT above uniform (as chosen)"
            )
        if rule is not None and drop <= rule["top1_drop"]:
            verdicts.append("beats 3x3" if net > rule["net_mac_saving"] else "NOT above 3x3")
        failures += any(v.startswith(("NOT", "OVER")) for v in verdicts)
        print(f"{point['operating_point']:<22}{point['budget']:>7g}{100 * drop:>7.2f}{100 * net:>7.1f} | "
              f"{cells(best)} | {cells(fair)} | {cells(rule, setting=False)} | "
              f"{', '.join(verdicts)}")  # fmt: skip
    print(f"{len(points) - failures} of {len(points)} operating points keep their budget and beat every yardstick")
    return 0


if __name__ == "__main__":
    sys.exit(main())
