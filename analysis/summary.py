"""Baselines, drops, and the summary tables: the paper's sweep beside its numbers, and the predictor comparison.

**Baseline** (contract section 7): the run that predicts nothing (``predictor=none``, or the tile
rule with k = 1) of the same model, data, images, seed and split; every drop is the baseline's
value minus the run's value (positive = accuracy lost). Among several baselines of one model
setting, ``layer=all`` comes first, then the paper's 1x1 (kind ``tile``), then the latest.

**The paper's table** (``summary.csv``): one row per model setting and window among the
``layer=all`` runs of the paper's rule (kind ``tile``, pattern diagonal, threshold 0, no per-layer
table, no recovery), with ``mac_saving, top1, top5, top1_drop, top5_drop, sparsity,
zero_window/3`` in fraction units (0.408 = 40.8 %). The **best** window of a model setting: among
k >= 2, the largest ``mac_saving`` whose ``top5_drop`` is at most ``best.max_top5_drop`` (default
0.08: the paper's worst accepted drop, ResNet-18 at 2x2, is 7.6 points); when none qualifies, the
smallest ``top5_drop`` (ties: larger saving). For the paper's ImageNet models (``alexnet``,
``vgg16``, ``resnet18`` with ``data=imagenet``) the paper's values (contract section 6) stand beside.

**The predictor comparison** (``predictors.csv``): one row per ``layer=all`` run of any predictor,
with ``net_mac_saving`` (what comparisons use: the saving minus the predictor's own MACs),
``mac_saving``, ``predictor_mac_cost``, the accuracy and its drops, ``hit_rate`` (pred_hit over
predicted cells), ``frac/pred_miss``, ``frac/miss_mass``, and ``pareto``: no other run of the same
model setting saves at least as much net for at most the same top-1 drop, and strictly better in one
(the oracle and the tile oracle are limits to measure against, not points of the front).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analysis.config import AnalysisError
from analysis.load import MODEL_SETTING, display_name, pipeline_hint
from pipeline.measurement.paired import paired_drop
from pipeline.tracking.keys import PREDICTIONS_ARTIFACT

BASELINE_KEY = MODEL_SETTING  # a baseline is shared by every predictor of one model's evaluation
LIMIT_KINDS = ("oracle", "tile_oracle")  # perfect predictions: limits to measure against, not buildable
PAPER_DATA = "imagenet"
# contract section 6: baselines, the paper's best window, sparsity and 3x3 all-zero windows (fractions)
PAPER = {
    "alexnet": {
        "baseline": {"top1": 0.565, "top5": 0.791, "sparsity": 0.73, "zero_window/3": 0.40},
        "best": {"window": 3, "mac_saving": 0.408, "top1": 0.525, "top5": 0.762},
    },
    "vgg16": {
        "baseline": {"top1": 0.716, "top5": 0.904, "sparsity": 0.60, "zero_window/3": 0.31},
        "best": {"window": 3, "mac_saving": 0.362, "top1": 0.632, "top5": 0.853},
    },
    "resnet18": {
        "baseline": {"top1": 0.698, "top5": 0.891, "sparsity": 0.41},
        "best": {"window": 2, "mac_saving": 0.208, "top1": 0.587, "top5": 0.815},
    },
}
METRICS = ("mac_saving", "top1", "top5", "top1_drop", "top5_drop", "sparsity", "zero_window/3")
PAPER_COLUMNS = ("paper_mac_saving", "paper_top1", "paper_top5", "paper_sparsity", "paper_zero_window/3")
COLUMNS = (
    "model", "data", "limit", "seed", "split", "predictor", "window", *METRICS, "top1_drop_low", "top1_drop_high",
    "flips_worse", "flips_better", "mcnemar_p", "best", *PAPER_COLUMNS, "images", "run_id", "baseline_run_id",
)  # fmt: skip
PREDICTOR_COLUMNS = (
    "model", "data", "limit", "seed", "split", "label", "setting", "predictor", "window", "pattern", "threshold",
    "group", "layers", "recover", "net_mac_saving", "mac_saving", "skip/g8", "skip/g16", "predictor_mac_cost", "top1",
    "top5", "top1_drop",
    "top1_drop_low", "top1_drop_high", "flips_worse", "flips_better", "mcnemar_p", "top5_drop", "hit_rate",
    "frac/pred_miss", "frac/miss_mass", "pareto", "images", "run_id", "baseline_run_id",
)  # fmt: skip


def is_paper_rule(runs: pd.DataFrame) -> pd.Series:
    """The paper's rule: kind tile, the diagonal, threshold 0, each channel deciding alone, no per-layer
    table, no recovery."""
    threshold = runs["threshold"].fillna(0.0) if "threshold" in runs else 0.0
    group = runs["group"].fillna(1) if "group" in runs else 1
    return (
        (runs["predictor"] == "tile")
        & (group == 1)
        & (runs["pattern"] == "diagonal")
        & (threshold == 0)
        & (runs["layers"].isin(["{}", ""]))
        & (runs["recover"] == "none")
    )


def baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """The baseline run per model setting (see the module docstring)."""
    ones = runs[runs["baseline"]].assign(_all=lambda f: f["layer"] == "all", _tile=lambda f: f["predictor"] == "tile")
    ones = ones.sort_values(["_all", "_tile", "start_time"], kind="stable")
    return ones.drop_duplicates(list(BASELINE_KEY), keep="last").drop(columns=["_all", "_tile"])


def with_baseline(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus ``baseline_top1/top5``, ``top1_drop``, ``top5_drop``, ``baseline_run_id`` (NaN
    where a model setting has no baseline: :func:`missing_baselines` says which)."""
    base = baselines(runs)[[*BASELINE_KEY, "top1", "top5", "run_id"]].rename(
        columns={"top1": "baseline_top1", "top5": "baseline_top5", "run_id": "baseline_run_id"}
    )
    merged = runs.merge(base, on=list(BASELINE_KEY), how="left", validate="many_to_one")
    merged.index = runs.index
    merged["top1_drop"] = merged["baseline_top1"] - merged["top1"]
    merged["top5_drop"] = merged["baseline_top5"] - merged["top5"]
    return merged


PAIRED_COLUMNS = ("flips_worse", "flips_better", "top1_drop_low", "top1_drop_high", "mcnemar_p")


def with_paired(runs: pd.DataFrame, fetch: Callable[[str], pd.DataFrame | None]) -> pd.DataFrame:
    """``runs`` (through :func:`with_baseline`) plus the paired statistics of contract section 11 of each
    run against its baseline, image by image from both runs' ``predictions.csv`` (``fetch``: a run id to
    its frame, or None). Empty where a run or its baseline has no predictions.csv (runs recorded before
    it existed); an AnalysisError when a predictions.csv does not match its run or the two runs' images
    differ."""
    runs = runs.copy()
    for column in PAIRED_COLUMNS:
        runs[column] = float("nan")
    cache: dict[str, pd.DataFrame | None] = {}

    def outcomes(row: pd.Series, run_id: str) -> pd.DataFrame | None:
        if run_id not in cache:
            cache[run_id] = _checked(fetch(run_id), run_id, row)
        return cache[run_id]

    base_rows = runs.set_index("run_id", drop=False)
    for index, row in runs.iterrows():
        base_id = row.get("baseline_run_id")
        if base_id is None or pd.isna(base_id):
            continue
        run, base = outcomes(row, row["run_id"]), outcomes(base_rows.loc[base_id], base_id)
        if run is None or base is None:
            continue
        if not (run["image"].equals(base["image"]) and run["label"].equals(base["label"])):
            raise AnalysisError(
                f"run {row['run_id']} and its baseline {base_id} were not evaluated on the same images (their "
                f"{PREDICTIONS_ARTIFACT} differ in images or labels): rerun both jobs with force=true"
            )
        paired = paired_drop((base["pred"] == base["label"]).tolist(), (run["pred"] == run["label"]).tolist())
        for column, value in paired.columns().items():
            if column in PAIRED_COLUMNS:
                runs.loc[index, column] = value
    return runs


def _checked(frame: pd.DataFrame | None, run_id: str, row: pd.Series) -> pd.DataFrame | None:
    """``frame`` when it is the run's own: one row per evaluated image, and its top-1 is the run's."""
    if frame is None:
        return None
    images = int(row["images"]) if not pd.isna(row.get("images")) else len(frame)
    top1 = float((frame["pred"] == frame["label"]).mean()) if len(frame) else float("nan")
    if len(frame) != images or abs(top1 - float(row["top1"])) > 0.5 / max(images, 1):
        raise AnalysisError(
            f"the {PREDICTIONS_ARTIFACT} of run {run_id} does not match its run ({len(frame)} rows with top-1 "
            f"{top1:.4f}; the run has {images} images and top-1 {float(row['top1']):.4f}): it was altered or "
            "copied from another run; rerun the run's job with force=true"
        )
    return frame


def missing_baselines(runs: pd.DataFrame, config) -> str | None:
    """What has no baseline, and the commands that make one; None when every setting has one."""
    missing = runs[runs["baseline_run_id"].isna()].drop_duplicates(list(BASELINE_KEY))
    if missing.empty:
        return None
    problems, commands = [], []
    for _, row in missing.iterrows():
        limit = "null" if pd.isna(row["limit"]) else str(row["limit"])
        problems.append(f"{row['model']} (data={row['data']}, limit={limit}, seed={row['seed']})")
        extra = [] if row["split"] == "test" else [f"data.split={row['split']}"]
        commands.append(
            pipeline_hint(
                config,
                f"model={row['model']}",
                f"data={row['data']}",
                f"data.limit={limit}",
                f"seed={row['seed']}",
                *extra,
                "predictor=none",
            )  # fmt: skip
        )
    return (
        f"no baseline (a run that predicts nothing: predictor=none, or window=1) for {'; '.join(problems)}: "
        "the accuracy drops need it; run " + " and ".join(f"`{c}`" for c in commands) + " (add the overrides of "
        "the other runs, e.g. model.checkpoint), or filter that model out with filters.model"
    )


def paper_view(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the paper's sweep: the paper's rule, and a model's baseline as its 1x1 where the
    sweep has no window-1 run of its own (a ``predictor=none`` baseline)."""
    rule = runs[is_paper_rule(runs)]
    covered = set(map(tuple, rule[rule["window"] == 1][list(BASELINE_KEY)].astype(str).values))
    base = baselines(runs)
    base = base[pd.Series([tuple(v) not in covered for v in base[list(BASELINE_KEY)].astype(str).values],
                          index=base.index, dtype=bool)]  # fmt: skip
    base = base[base["run_id"].isin(runs["run_id"]) & ~base["run_id"].isin(rule["run_id"])]
    return pd.concat([rule, base.assign(window=1)]).sort_index(kind="stable")


def best_window(table: pd.DataFrame, max_top5_drop: float) -> int | None:
    """The best trade-off window of one model setting (see the module docstring), or None."""
    candidates = table[(table["window"] >= 2) & table["top5_drop"].notna()]
    if candidates.empty:
        return None
    accepted = candidates[candidates["top5_drop"] <= max_top5_drop + 1e-12]
    if len(accepted):
        ranked = accepted.sort_values(["mac_saving", "window"], ascending=[False, True], kind="stable")
    else:
        ranked = candidates.sort_values(["top5_drop", "mac_saving"], ascending=[True, False], kind="stable")
    return int(ranked["window"].iloc[0])


def summary_table(runs: pd.DataFrame, max_top5_drop: float) -> pd.DataFrame:
    """The paper's table of ``runs`` (already through :func:`with_baseline`): see the module docstring."""
    view = paper_view(runs)
    table = view[view["layer"] == "all"].copy()
    table["best"] = False
    for _, group in table.groupby(list(BASELINE_KEY), dropna=False, sort=False):
        window = best_window(group, max_top5_drop)
        if window is not None:
            table.loc[group.index[group["window"] == window], "best"] = True
    for column in PAPER_COLUMNS:
        table[column] = float("nan")
    for index, row in table.iterrows():
        for column, value in paper_values(row["model"], row["data"], int(row["window"])).items():
            table.at[index, column] = value
    for column in COLUMNS:
        if column not in table:
            table[column] = float("nan")
    return table[list(COLUMNS)].reset_index(drop=True)


def pareto(points: pd.DataFrame) -> pd.Series:
    """True for the runs no other run beats: at least the net saving for at most the top-1 drop,
    strictly better in one (runs without a drop are never on the front)."""
    known = points.dropna(subset=["top1_drop", "net_mac_saving"])
    drops, savings = known["top1_drop"].to_numpy(), known["net_mac_saving"].to_numpy()
    front = pd.Series(False, index=points.index)
    for i, index in enumerate(known.index):
        dominated = (
            (drops <= drops[i]) & (savings >= savings[i]) & ((drops < drops[i]) | (savings > savings[i]))
        ).any()
        front[index] = not dominated
    return front


def predictors_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The predictor comparison of ``runs`` (already through :func:`with_baseline`)."""
    table = runs[runs["layer"] == "all"].copy()
    predicted = table["frac/pred_hit"] + table["frac/pred_miss"]
    table["hit_rate"] = (table["frac/pred_hit"] / predicted).where(predicted > 0)
    table["pareto"] = False
    for _, group in table.groupby(list(BASELINE_KEY), dropna=False, sort=False):
        points = group[~group["predictor"].isin(LIMIT_KINDS)]  # limits, not predictors one can build
        table.loc[points.index, "pareto"] = pareto(points)
    for column in PREDICTOR_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    return table[list(PREDICTOR_COLUMNS)].reset_index(drop=True)


OPERATING_POINT_COLUMNS = (
    "model", "operating_point", "budget", "confidence", "calibration", "calibration/top1_drop",
    "calibration/top1_drop_upper", "calibration/net_mac_saving", "test/top1_drop", "test/top1_drop_low",
    "test/top1_drop_high", "test/flips_worse", "test/flips_better", "test/mcnemar_p", "test/net_mac_saving", "run_id",
)  # fmt: skip


def operating_points_table(searches: pd.DataFrame) -> pd.DataFrame:
    """One row per search: its budget, and what its operating point gives on calibration and on test."""
    return searches[list(OPERATING_POINT_COLUMNS)].reset_index(drop=True)


def paper_values(model: str, data: str, window: int) -> dict[str, float]:
    """The paper's numbers for this model and window (empty when the paper has none)."""
    paper = PAPER.get(model)
    if paper is None or data != PAPER_DATA:
        return {}
    if window == 1:
        return {f"paper_{k}": v for k, v in paper["baseline"].items()}
    if window == paper["best"]["window"]:
        return {f"paper_{k}": v for k, v in paper["best"].items() if k != "window"}
    return {}


def write_summary(table: pd.DataFrame, comparison: pd.DataFrame, points: pd.DataFrame, folder: Path) -> list[Path]:
    """``summary.csv``, ``predictors.csv``, ``operating_points.csv`` (fractions, full precision) and
    ``summary.md`` (percent); the operating points' table only when there were searches."""
    paths = [folder / "summary.csv", folder / "predictors.csv"]
    table.to_csv(paths[0], index=False)
    comparison.to_csv(paths[1], index=False)
    if len(points):
        paths.append(folder / "operating_points.csv")
        points.to_csv(paths[-1], index=False)
    paths.append(folder / "summary.md")
    paths[-1].write_text(markdown(table, comparison, points))
    return paths


def markdown(table: pd.DataFrame, comparison: pd.DataFrame | None = None, points: pd.DataFrame | None = None) -> str:
    """The summary as Markdown: the paper's table (best windows in bold, paper values in brackets),
    the predictor comparison when it holds more than the paper's rule, the operating points."""
    lines = ["# Cross-neuron prediction: summary", ""]
    if len(table):
        lines += paper_markdown(table)
    if comparison is not None and len(comparison) and (comparison["setting"] != comparison["setting"].iloc[0]).any():
        lines += ["", *comparison_markdown(comparison)]
    if points is not None and len(points):
        lines += ["", *points_markdown(points)]
    return "\n".join(lines) + "\n"


def points_markdown(points: pd.DataFrame) -> list[str]:
    lines = [
        "## Operating points",
        "",
        "Found by `python -m pipeline.search` on calibration images of the training split (the part the twins "
        "never trained on) within the top-1 budget (points), then evaluated on the evaluation images; or measured "
        "again by running the preset (`python -m pipeline model=<twin> operating_point=<name>`, with "
        "`data.split=calibration data.limit=10000` for the calibration numbers; the latest counts). Drops in "
        "points, savings in % of conv MACs. The budget holds the calibration drop's one-sided upper bound at the "
        "confidence given (none: the drop itself); the test drop ± the half-width of its paired 95 % interval, "
        'p: the exact McNemar test (docs/measurements.md, "Uncertainty of drops").',
        "",
        "| model | operating point | budget | confidence | calibration images | calibration drop (upper bound) "
        "| calibration net saving | test drop | test net saving |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in points.iterrows():
        test = {key.split("/")[1]: row.get(key) for key in row.index if key.startswith("test/")}
        upper = row.get("calibration/top1_drop_upper")
        bound = "" if upper is None or pd.isna(upper) else f" ({100 * upper:.2f})"
        confidence = row.get("confidence")
        cells = [display_name(row["model"]), f"`{row['operating_point']}`", f"{row['budget']:g}",
                 "none" if confidence is None or pd.isna(confidence) else f"{confidence:g}",
                 _known(row["calibration"], "{:.0f}"), _known(row["calibration/top1_drop"], "{:.2f}", 100) + bound,
                 _known(row["calibration/net_mac_saving"], "{:.1f}", 100), drop_cell(pd.Series(test)),
                 f"{100 * row['test/net_mac_saving']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _known(value: object, form: str, scale: float = 1) -> str:
    """``value`` (times ``scale``) in ``form``; a dash where it is not known (a preset never run on calibration)."""
    return "—" if value is None or pd.isna(value) else form.format(scale * float(value))  # type: ignore[arg-type]


def paper_markdown(table: pd.DataFrame) -> list[str]:
    lines = [
        "## The paper's rule (diagonal tiles), window by window",
        "",
        "Accuracy, MAC saving (of conv MACs), sparsity and all-zero 3x3 windows in %; drops in percentage "
        "points (baseline minus value; positive = accuracy lost). **Bold** window: the best trade-off, the "
        "largest MAC saving whose top-5 drop stays within `best.max_top5_drop` (analysis/summary.py). "
        "[x]: the paper's value (ImageNet validation set, docs/measurements.md). Top-1 drop ± the half-width "
        'of its paired 95 % interval, p: the exact McNemar test (docs/measurements.md, "Uncertainty").',
        "",
    ]
    header = ["model", "data", "images", "seed", "window", "MAC saving", "top-1", "top-5",
              "top-1 drop", "top-5 drop", "sparsity", "3x3 all-zero"]  # fmt: skip
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    for _, row in table.iterrows():
        window = f"{row['window']}x{row['window']}" + (" (baseline)" if row["window"] == 1 else "")
        cells = [
            display_name(row["model"]),
            row["data"],
            _count(row["images"]),
            str(row["seed"]),
            f"**{window}**" if row["best"] else window,
            _percent(row, "mac_saving"),
            _percent(row, "top1"),
            _percent(row, "top5"),
            "-" if row["window"] == 1 else drop_cell(row),
            _percent(row, "top5_drop", paper=False, baseline=row["window"] == 1),
            _percent(row, "sparsity"),
            _percent(row, "zero_window/3"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_markdown(comparison: pd.DataFrame) -> list[str]:
    lines = [
        "## Predictor comparison",
        "",
        "Every `layer=all` run: net MAC saving (the conv MACs skipped minus the predictor's own, in % of the "
        "model's conv MACs), top-1 and its drop against the baseline (points), hit rate (predicted cells that "
        "were zero), activation mass destroyed by misses (%). **Bold**: on the Pareto front of its model "
        "(no other run saves more for a smaller drop). Top-1 drop ± the half-width of its paired 95 % interval, "
        "p: the exact McNemar test.",
        "",
        "| model | predictor | net saving | saving | predictor cost | top-1 | top-1 drop | hit rate | miss mass |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in comparison.iterrows():
        setting = f"**{row['setting']}**" if row["pareto"] else row["setting"]
        cells = [
            row["label"],
            setting,
            _percent(row, "net_mac_saving", paper=False),
            _percent(row, "mac_saving", paper=False),
            _percent(row, "predictor_mac_cost", paper=False),
            _percent(row, "top1", paper=False),
            drop_cell(row),
            _percent(row, "hit_rate", paper=False),
            _percent(row, "frac/miss_mass", paper=False),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def drop_cell(row: pd.Series) -> str:
    """A top-1 drop in points with its paired 95 % interval as +/- its half-width (contract section 11),
    and the McNemar p when the interval is known: '0.52 ± 0.21 (p 0.01)'."""
    drop, low, high = row.get("top1_drop"), row.get("top1_drop_low"), row.get("top1_drop_high")
    if drop is None or pd.isna(drop):
        return "n/a"
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return f"{100 * drop:.2f}"
    return f"{100 * drop:.2f} ± {100 * (high - low) / 2:.2f} (p {_p(row.get('mcnemar_p'))})"


def _p(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _count(value: object) -> str:
    return "n/a" if pd.isna(value) else str(int(value))


def _percent(row: pd.Series, key: str, paper: bool = True, baseline: bool = False) -> str:
    if baseline:
        return "-"
    value = row.get(key)
    text = "n/a" if value is None or pd.isna(value) else f"{100 * value:.1f}"
    reference = row.get(f"paper_{key}") if paper else None
    if reference is not None and not pd.isna(reference):
        text += f" [{100 * reference:.1f}]"
    return text
