"""The paper's figures (measurement contract, section 6) drawn from the tidy runs of :mod:`analysis.load`.

Every function takes the runs (after :func:`analysis.summary.with_baseline`) and returns a
matplotlib Figure; :func:`render` draws them all and writes each in every requested format.

- ``fig2_zero_windows``: all-zero s x s windows (stride 1) of the baseline runs, per model.
- ``fig5_breakdown``: pred-hit / pred-miss / zero-diag / others as % of activations, per window.
- ``fig6_mac_savings``: MAC saving per window, grouped by model.
- ``fig7_accuracy``: top-1 and top-5 per window, 1x1 = the unmodified network.
- ``fig_layers``: one layer in scope at a time (layer sweeps): MAC saving and top-1 drop per layer.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

BREAKDOWN = (  # bottom to top, as in the paper's Figure 5
    ("frac/pred_hit", "pred-hit (predicted, was 0)"),
    ("frac/pred_miss", "pred-miss (predicted, was > 0)"),
    ("frac/zero_diag", "zero-diag (zero diagonals)"),
    ("frac/others", "others"),
)
MAX_WIDTH = 7.5  # inches: a two-column paper figure
PANEL_COLUMNS = 3  # panels per row when there is one per model


def window_label(k: int) -> str:
    return f"{k}x{k}"


def window_palette(windows: list[int]) -> dict[str, object]:
    """Grey for the 1x1 baseline, a light-to-dark ramp for k = 2, 3, ...: one colour per k in every figure."""
    ramp = sns.color_palette("crest", max(4, max(windows, default=1) - 1))
    palette: dict[str, object] = {window_label(k): ramp[k - 2] for k in windows if k > 1}
    if 1 in windows:
        palette[window_label(1)] = "0.65"
    return palette


def fig2_zero_windows(runs: pd.DataFrame) -> Figure:
    """Figure 2: % of stride-1 s x s windows that are all zero, baseline runs, hue = model."""
    base = runs[(runs["window"] == 1) & (runs["layer"] == "all")]
    long = base.melt(id_vars=["label"], value_vars=[f"zero_window/{s}" for s in range(1, 6)], value_name="fraction")
    long["size"] = long["variable"].str.rsplit("/", n=1).str[1].astype(int).map(window_label)
    long["percent"] = 100 * long["fraction"]
    labels = list(dict.fromkeys(base["label"]))
    fig, ax = plt.subplots(figsize=(6.8, 3.2), layout="constrained")
    sns.barplot(
        long,
        x="size",
        y="percent",
        hue="label",
        hue_order=labels,
        ax=ax,
        palette="colorblind",
        errorbar=None,
        order=[window_label(s) for s in range(1, 6)],
    )
    _bar_values(ax, "%.0f")
    ax.set(
        xlabel="window size (stride 1, per channel)", ylabel="all-zero windows (%)", ylim=(0, _top(long["percent"]))
    )
    _legend(fig, ax, title=None, columns=len(labels))
    fig.suptitle(_title("Spatial correlation: windows whose activations are all zero (1x1 = sparsity)", base))
    return fig


def fig5_breakdown(runs: pd.DataFrame) -> Figure:
    """Figure 5: stacked pred-hit / pred-miss / zero-diag / others (% of activations), windows 2..5."""
    runs = runs[(runs["window"] >= 2) & (runs["layer"] == "all")]
    labels = list(dict.fromkeys(runs["label"]))
    fig, axes = _panels(len(labels), width=2.4, height=2.7, sharey=True)
    colors = [*sns.color_palette("colorblind")[2:4], sns.color_palette("colorblind")[0], "0.82"]
    for ax, label in zip(axes, labels, strict=False):
        part = runs[runs["label"] == label].sort_values("window")
        x = [window_label(k) for k in part["window"]]
        bottom = pd.Series(0.0, index=part.index)
        for (key, name), color in zip(BREAKDOWN, colors, strict=True):
            values = 100 * part[key]
            ax.bar(x, values, bottom=bottom, color=color, label=name, width=0.7, edgecolor="white", linewidth=0.5)
            bottom = bottom + values
        ax.set(title=textwrap.fill(label, 30), xlabel="prediction window", ylim=(0, 100))
        ax.set_ylabel("activations (%)" if ax.get_subplotspec().is_first_col() else "")
    _legend(fig, axes[0], title=None, columns=4 if len(labels) > 1 else 2)
    fig.suptitle(_title("Prediction breakdown per window", runs))
    return fig


def fig6_mac_savings(runs: pd.DataFrame) -> Figure:
    """Figure 6: MAC saving (% of the model's conv MACs) per window, grouped by model."""
    runs = runs[(runs["window"] >= 2) & (runs["layer"] == "all")].assign(
        percent=lambda f: 100 * f["mac_saving"], size=lambda f: f["window"].map(window_label)
    )
    labels = list(dict.fromkeys(runs["label"]))
    windows = sorted(runs["window"].unique())
    fig, ax = plt.subplots(figsize=(min(max(4.5, 1.3 * len(labels) + 1.5), MAX_WIDTH), 3.2), layout="constrained")
    _window_bars(runs, labels, windows, ax)
    _bar_values(ax, "%.1f")
    ax.set(xlabel="", ylabel="MAC saving (%)", ylim=(0, _top(runs["percent"])))
    _wrap_ticks(ax)
    _legend(fig, ax, title="window", columns=len(windows))
    fig.suptitle(_title("Conv MAC operations saved by cross-neuron prediction", runs))
    return fig


def _window_bars(data: pd.DataFrame, labels: list[str], windows: list[int], ax) -> None:
    """Bars of ``percent`` per model label, one per window size, in the shared window colors."""
    sns.barplot(
        data,
        x="label",
        y="percent",
        hue="size",
        order=labels,
        hue_order=[window_label(k) for k in windows],
        palette=window_palette(windows),
        errorbar=None,
        ax=ax,
    )


def fig7_accuracy(runs: pd.DataFrame) -> Figure:
    """Figure 7: top-1 and top-5 accuracy (%) per window; 1x1 is the unmodified network."""
    runs = runs[runs["layer"] == "all"]
    long = runs.melt(
        id_vars=["label", "window"], value_vars=["top1", "top5"], var_name="metric", value_name="fraction"
    )
    long["percent"] = 100 * long["fraction"]
    long["size"] = long["window"].map(window_label)
    labels = list(dict.fromkeys(runs["label"]))
    windows = sorted(runs["window"].unique())
    width = 0.22 * len(windows) * len(labels) + 0.8  # inches per panel
    stacked = 2 * width > MAX_WIDTH  # many bars: top-1 above top-5
    shape, size = ((2, 1), (min(width, MAX_WIDTH), 5.6)) if stacked else ((1, 2), (2 * width, 3.3))
    fig, axes = plt.subplots(*shape, figsize=(max(size[0], 5.0), size[1]), sharey=True, layout="constrained")
    for ax, (metric, name) in zip(axes, (("top1", "top-1"), ("top5", "top-5")), strict=True):
        _window_bars(long[long["metric"] == metric], labels, windows, ax)
        first = ax is axes[0]
        ax.set(title=f"{name} accuracy", xlabel="", ylabel="accuracy (%)" if first or stacked else "", ylim=(0, 100))
        _wrap_ticks(ax)
        if not first:
            ax.get_legend().remove()
    _legend(fig, axes[0], title="window (1x1 = baseline)", columns=len(windows))
    fig.suptitle(_title("Accuracy with cross-neuron prediction", runs))
    return fig


def fig_layers(runs: pd.DataFrame) -> Figure:
    """Layer sweeps: MAC saving and top-1 drop with only one layer predicted, per model, hue = window.

    Needs ``layer_index``/``layer_name`` (:func:`analysis.load.with_layer_index`).
    """
    runs = runs[(runs["layer"] != "all") & (runs["window"] >= 2)].assign(
        saving=lambda f: 100 * f["mac_saving"],
        drop=lambda f: 100 * f["top1_drop"],
        size=lambda f: f["window"].map(window_label),
        tick=lambda f: [f"{i}: {n}" for i, n in zip(f["layer_index"], f["layer_name"], strict=True)],
    )
    labels = list(dict.fromkeys(runs["label"]))
    windows = sorted(runs["window"].unique())
    most = runs.groupby("label")["layer_index"].nunique().max()
    wide = 0.25 * most * len(windows) + 1.2 > MAX_WIDTH / 2  # many layers: the two views one above the other
    shape = (2 * len(labels), 1) if wide else (len(labels), 2)
    width = min(0.25 * most * len(windows) + 1.2, 2 * MAX_WIDTH) if wide else MAX_WIDTH
    fig, grid = plt.subplots(*shape, figsize=(max(width, 5.0), 3.0 * shape[0]), layout="constrained", squeeze=False)
    axes = grid.reshape(len(labels), 2)
    for row, label in enumerate(labels):
        part = runs[runs["label"] == label].sort_values("layer_index")
        order = list(dict.fromkeys(part["tick"]))
        for ax, (column, name) in zip(
            axes[row], (("saving", "MAC saving (%)"), ("drop", "top-1 drop (points)")), strict=True
        ):
            sns.barplot(
                part,
                x="tick",
                y=column,
                hue="size",
                order=order,
                hue_order=[window_label(k) for k in windows],
                palette=window_palette(windows),
                errorbar=None,
                ax=ax,
            )
            ax.axhline(0, color="0.3", linewidth=0.6)
            ax.set(title=f"{label}: {name.split(' (')[0]}", xlabel="predicted layer (index: name)", ylabel=name)
            ax.tick_params(axis="x", labelrotation=40)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
                tick.set_rotation_mode("anchor")
            if ax is not axes[0][0]:
                ax.get_legend().remove()
    _legend(fig, axes[0][0], title="window", columns=len(windows))
    fig.suptitle(_title("One layer predicted at a time (top-1 drop vs. the 1x1 baseline)", runs))
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "fig2_zero_windows": fig2_zero_windows,
    "fig5_breakdown": fig5_breakdown,
    "fig6_mac_savings": fig6_mac_savings,
    "fig7_accuracy": fig7_accuracy,
}


def render(runs: pd.DataFrame, folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Draw every figure of ``runs`` into ``folder`` (``fig_layers`` only when layer sweeps exist)."""
    sns.set_theme(context="paper", style="whitegrid")
    figures = dict(FIGURES)
    if ((runs["layer"] != "all") & (runs["window"] >= 2)).any():
        figures["fig_layers"] = fig_layers
    written: list[Path] = []
    for name, draw in figures.items():
        fig = draw(runs)
        try:
            for fmt in formats:
                path = folder / f"{name}.{fmt}"
                fig.savefig(path, dpi=200, bbox_inches="tight")
                written.append(path)
        finally:
            plt.close(fig)
    return written


def _panels(count: int, width: float, height: float, sharey: bool) -> tuple[Figure, list[plt.Axes]]:
    columns = min(count, PANEL_COLUMNS)
    rows = math.ceil(count / columns)
    fig, grid = plt.subplots(
        rows,
        columns,
        figsize=(width * columns + 0.6, height * rows + 0.6),
        sharey=sharey,
        squeeze=False,
        layout="constrained",
    )
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _legend(fig: Figure, ax: plt.Axes, title: str | None, columns: int) -> None:
    """One legend for the whole figure, below the panels (the title holds the top)."""
    handles, names = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fits = int(fig.get_figwidth() * 17) // (max(map(len, names), default=0) + 5)  # ~17 characters per inch
    per_row = max(1, min(columns, 5, fits))
    rows = math.ceil(len(names) / per_row)
    fig.legend(
        handles, names, loc="outside lower center", ncols=math.ceil(len(names) / rows), title=title, frameon=False
    )


def _bar_values(ax: plt.Axes, fmt: str) -> None:
    for container in ax.containers:
        ax.bar_label(container, fmt=fmt, fontsize=6, padding=1.5)


def _wrap_ticks(ax: plt.Axes) -> None:
    ax.set_xticks(ax.get_xticks(), [textwrap.fill(t.get_text(), 16) for t in ax.get_xticklabels()])


def _top(percent: pd.Series) -> float:
    """Headroom above the tallest bar for its value label."""
    return max(5.0, min(100.0, float(percent.max()) * 1.12 + 1)) if len(percent) else 100.0


def _title(text: str, runs: pd.DataFrame) -> str:
    """Figure title with the evaluated data (set and images per run) below it."""
    sets = []
    for data, group in runs.groupby("data", sort=True):
        counts = sorted({int(n) for n in group["images"].dropna()}) if "images" in group else []
        sets.append(f"{data} ({', '.join(map(str, counts))} images)" if counts else data)
    return text + ("\n" + "; ".join(sets) if sets else "")
