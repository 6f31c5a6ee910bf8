"""Summary table: per model setting and window, MAC saving against accuracy, beside the paper's numbers.

One row per (model, data, limit, seed, predictor, window) among the ``layer=all`` runs, with
``mac_saving, top1, top5, top1_drop, top5_drop, sparsity, zero_window/3`` in fraction units
(0.408 = 40.8 %). The drops are the baseline's value minus the row's value, where the baseline is
the window = 1 run of the same model, data, limit and seed (positive = accuracy lost).

**Best trade-off** (the ``best`` column, one window per model setting): among the windows k >= 2,
the one with the largest ``mac_saving`` whose ``top5_drop`` is at most ``best.max_top5_drop``
(default 0.08: the paper's worst accepted drop, ResNet-18 at 2x2, is 7.6 points). When no window
qualifies, the one with the smallest ``top5_drop`` (ties: larger ``mac_saving``). A setting with
only its baseline has no best window.

For the ImageNet models of the paper (``alexnet``, ``vgg16``, ``resnet18`` with ``data=imagenet``)
the paper's reference values (measurement contract, section 6) stand beside the measured ones:
``paper_top1``, ``paper_top5`` on the baseline row and on the paper's best window (with
``paper_mac_saving``), ``paper_sparsity`` on the baseline row and ``paper_zero_window/3`` on the
baseline row where the paper gives it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.config import AnalysisConfig, AnalysisError
from analysis.load import SETTING, display_name, pipeline_hint

BASELINE_KEY = ("model", "data", "limit", "seed")  # a baseline is shared by every predictor
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
    "model", "data", "limit", "seed", "predictor", "window", *METRICS, "best", *PAPER_COLUMNS,
    "images", "run_id", "baseline_run_id",
)  # fmt: skip


def baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """The baseline (window = 1) run per model/data/limit/seed: layer=all preferred, then the latest.

    Layer scope does not matter at window 1 (nothing is predicted), so a layer sweep's window-1 run
    can stand in when there is no ``layer=all`` one.
    """
    ones = runs[runs["window"] == 1].assign(_all=lambda f: f["layer"] == "all")
    ones = ones.sort_values(["_all", "start_time"], kind="stable")
    return ones.drop_duplicates(list(BASELINE_KEY), keep="last").drop(columns="_all")


def with_baseline(runs: pd.DataFrame, config: AnalysisConfig) -> pd.DataFrame:
    """``runs`` plus ``baseline_top1/top5``, ``top1_drop``, ``top5_drop``, ``baseline_run_id``.

    Raises AnalysisError naming every model setting that has no window = 1 run, and the command
    that makes one.
    """
    base = baselines(runs)[[*BASELINE_KEY, "top1", "top5", "run_id"]].rename(
        columns={"top1": "baseline_top1", "top5": "baseline_top5", "run_id": "baseline_run_id"}
    )
    merged = runs.merge(base, on=list(BASELINE_KEY), how="left", validate="many_to_one")
    missing = merged[merged["baseline_run_id"].isna()].drop_duplicates(list(BASELINE_KEY))
    if len(missing):
        problems, commands = [], []
        for _, row in missing.iterrows():
            limit = "null" if pd.isna(row["limit"]) else str(row["limit"])
            problems.append(f"{row['model']} (data={row['data']}, limit={limit}, seed={row['seed']})")
            commands.append(
                pipeline_hint(
                    config,
                    f"model={row['model']}",
                    f"data={row['data']}",
                    f"data.limit={limit}",
                    f"seed={row['seed']}",
                    "window=1",
                )  # fmt: skip
            )
        raise AnalysisError(
            f"no baseline (window=1) run for {'; '.join(problems)}: the accuracy drops and Figure 2 need it; "
            "run " + " and ".join(f"`{c}`" for c in commands) + " (add the overrides of the other runs, "
            "e.g. model.checkpoint), or filter that model out with filters.model"
        )
    merged.index = runs.index
    merged["top1_drop"] = merged["baseline_top1"] - merged["top1"]
    merged["top5_drop"] = merged["baseline_top5"] - merged["top5"]
    return merged


def best_window(table: pd.DataFrame, max_top5_drop: float) -> int | None:
    """The best trade-off window of one model setting (see the module docstring), or None."""
    candidates = table[table["window"] >= 2]
    if candidates.empty:
        return None
    accepted = candidates[candidates["top5_drop"] <= max_top5_drop + 1e-12]
    if len(accepted):
        ranked = accepted.sort_values(["mac_saving", "window"], ascending=[False, True], kind="stable")
    else:
        ranked = candidates.sort_values(["top5_drop", "mac_saving"], ascending=[True, False], kind="stable")
    return int(ranked["window"].iloc[0])


def summary_table(runs: pd.DataFrame, max_top5_drop: float) -> pd.DataFrame:
    """The summary of ``runs`` (already through :func:`with_baseline`): see the module docstring."""
    table = runs[runs["layer"] == "all"].copy()
    table["best"] = False
    for _, group in table.groupby(list(SETTING), dropna=False, sort=False):
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


def write_summary(table: pd.DataFrame, folder: Path) -> list[Path]:
    """``summary.csv`` (fractions, full precision) and ``summary.md`` (percent) in ``folder``."""
    csv_path, md_path = folder / "summary.csv", folder / "summary.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(markdown(table))
    return [csv_path, md_path]


def markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table in percent, best windows in bold, paper values in brackets."""
    lines = [
        "# Cross-neuron prediction: summary",
        "",
        "Accuracy, MAC saving (of conv MACs), sparsity and all-zero 3x3 windows in %; drops in percentage "
        "points (baseline minus value; positive = accuracy lost). **Bold** window: the best trade-off, the "
        "largest MAC saving whose top-5 drop stays within `best.max_top5_drop` (analysis/summary.py). "
        "[x]: the paper's value (ImageNet validation set, measurement contract section 6).",
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
            "n/a" if pd.isna(row["images"]) else str(int(row["images"])),
            str(row["seed"]),
            f"**{window}**" if row["best"] else window,
            _percent(row, "mac_saving"),
            _percent(row, "top1"),
            _percent(row, "top5"),
            _percent(row, "top1_drop", paper=False, baseline=row["window"] == 1),
            _percent(row, "top5_drop", paper=False, baseline=row["window"] == 1),
            _percent(row, "sparsity"),
            _percent(row, "zero_window/3"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _percent(row: pd.Series, key: str, paper: bool = True, baseline: bool = False) -> str:
    if baseline:
        return "-"
    value = row[key]
    text = "n/a" if pd.isna(value) else f"{100 * value:.1f}"
    reference = row.get(f"paper_{key}") if paper else None
    if reference is not None and not pd.isna(reference):
        text += f" [{100 * reference:.1f}]"
    return text
