"""The figures, drawn from the tidy runs of :mod:`analysis.load` (docs/measurements.md, "Figures").

:data:`FIGURES` registers each figure with the runs it draws (its ``select``) and what those must
be (``needs``); :func:`render` draws every figure whose selection is not empty, writes it in every
requested format, and says why it skipped the others. A new figure is one function and one entry.

- ``fig2_zero_windows``: all-zero s x s windows (stride 1) of the baseline runs, per model.
- ``fig5_breakdown``: pred-hit / pred-miss / zero-diag / others as % of activations, per window.
- ``fig6_mac_savings``: MAC saving per window, grouped by model.
- ``fig7_accuracy``: top-1 and top-5 per window, 1x1 = the unmodified network.
- ``fig_layers``: one layer in scope at a time (layer sweeps): MAC saving and top-1 drop per layer.
- ``fig_tradeoff``: net MAC saving against top-1 drop, one point per run of any predictor, with the
  oracle's saving as the limit and the Pareto front marked.
- ``fig_operating_points``: the operating points searches found at several budgets, next to the
  uniform settings and the oracle limit, per model, on the evaluation images.
- ``fig_granularity``: the MAC saving that survives when g output channels must share one decision
  (``skip/g<g>``, contract section 10), g = 1..32, for the paper's rule, the learned predictor, the
  oracle and the operating points, with what independent placement of the rule's predictions would keep.

Figures 2, 5, 6, 7 and the per-layer view are the paper's: they draw the paper's rule only.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.load import display_name  # noqa: E402
from analysis.summary import LIMIT_KINDS, baselines, is_paper_rule, paper_view, pareto  # noqa: E402
from pipeline.tracking.keys import GROUP_SIZES as GROUPS  # noqa: E402

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


TRADEOFF_MAX_DROP = 15.0  # points of top-1: the trade-off figure's right edge
KIND_COLORS = {"none": "0.55", "tile": "#0173b2", "tile_oracle": "#029e73", "random": "#d55e00",
               "oracle": "black", "learned": "#cc78bc"}  # fmt: skip
PATTERN_MARKERS = {"diagonal": "o", "anti_diagonal": "v", "checkerboard": "s", "corners": "D", "center": "P",
                   "cross": "X", "": "*"}  # fmt: skip


def fig_tradeoff(runs: pd.DataFrame) -> Figure:
    """Net MAC saving against top-1 drop: one point per run (colour = kind, marker = pattern) with the
    paired 95 % interval of its drop (where both runs have predictions.csv), the oracle's saving as the
    limit (dotted), the Pareto front of the buildable predictors (dashed, ringed). Runs that lose more
    than ``TRADEOFF_MAX_DROP`` points are counted, not drawn."""
    labels = list(dict.fromkeys(runs["label"]))
    fig, axes = _panels(len(labels), width=3.3, height=3.0, sharey=False)
    seen: dict[str, object] = {}
    for ax, label in zip(axes, labels, strict=False):
        part = runs[runs["label"] == label].assign(
            drop=lambda f: 100 * f["top1_drop"],
            saving=lambda f: 100 * f["net_mac_saving"],
            drop_low=lambda f: 100 * f.get("top1_drop_low", float("nan")),
            drop_high=lambda f: 100 * f.get("top1_drop_high", float("nan")),
        )
        limit = part[part["predictor"] == "oracle"]
        if len(limit):
            value = float(limit["saving"].max())
            ax.axhline(value, color="black", linestyle=":", linewidth=1)
            ax.annotate(f"oracle limit {value:.1f}%", (1, value), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=6)  # fmt: skip
        points = part[part["predictor"] != "oracle"]
        beyond = points[points["drop"] > TRADEOFF_MAX_DROP]
        points = points[points["drop"] <= TRADEOFF_MAX_DROP]
        if len(beyond):
            ax.annotate(f"{len(beyond)} run(s) losing > {TRADEOFF_MAX_DROP:g} points not shown", (1, 0.02),
                        xycoords="axes fraction", ha="right", va="bottom", fontsize=6, color="0.3")  # fmt: skip
        for (kind, pattern), group in points.groupby(["predictor", "pattern"], sort=False):
            name = f"{kind.replace('_', ' ')} {pattern}".strip()
            known = group[group["drop_low"].notna() & ~group["baseline"].astype(bool)]
            if len(known):  # the paired 95 % interval of each drop (contract section 11)
                ax.errorbar(known["drop"], known["saving"], xerr=[known["drop"] - known["drop_low"],
                            known["drop_high"] - known["drop"]], fmt="none", ecolor=KIND_COLORS.get(kind, "#ca9161"),
                            elinewidth=0.7, alpha=0.7, zorder=2)  # fmt: skip
            handle = ax.scatter(group["drop"], group["saving"], s=22, color=KIND_COLORS.get(kind, "#ca9161"),
                                marker=PATTERN_MARKERS.get(pattern, "o"), edgecolor="white", linewidth=0.4,
                                zorder=3)  # fmt: skip
            seen.setdefault(name, handle)
        buildable = part[~part["predictor"].isin(LIMIT_KINDS)]
        front = buildable[pareto(buildable) & (buildable["drop"] <= TRADEOFF_MAX_DROP)].sort_values("drop")
        if len(front):
            ax.step(front["drop"], front["saving"], where="post", color="0.2", linestyle="--", linewidth=0.8)
            ax.scatter(front["drop"], front["saving"], s=60, facecolor="none", edgecolor="0.2", linewidth=0.8,
                       zorder=4)  # fmt: skip
        ax.axvline(0, color="0.6", linewidth=0.6)
        ax.set(title=textwrap.fill(label, 34), xlabel="top-1 drop (points)", ylabel="net MAC saving (%)")
        ax.set_ylim(bottom=min(0.0, float(part["saving"].min()) - 1))
    handles = list(seen.values())
    title = "predictor (colour: kind, marker: pattern; ringed: the Pareto front, oracles left out)"
    fig.legend(handles, list(seen), loc="outside lower center", ncols=min(4, max(1, len(handles))), frameon=False,
               fontsize=7, title=title)  # fmt: skip
    fig.suptitle(_title("Net MAC saving against accuracy, every predictor", runs))
    return fig


def fig_operating_points(points: pd.DataFrame) -> Figure:
    """Per model, on the evaluation images: the operating points that searches at several budgets
    found (a line, labelled by budget), the uniform settings (the paper's rule per window, the learned
    predictor per threshold; the tile rules' thresholds), and the oracle's saving as the limit. Each drop
    with its paired 95 % interval where both runs kept predictions.csv (contract section 11)."""
    models = list(dict.fromkeys(points["model"]))
    fig, axes = _panels(len(models), width=3.3, height=3.0, sharey=False)
    seen: dict[str, object] = {}
    for ax, model in zip(axes, models, strict=False):
        part = points[points["model"] == model]
        limit = part[part["source"] == "oracle"]
        if len(limit):
            value = 100 * float(limit["saving"].max())
            ax.axhline(value, color="black", linestyle=":", linewidth=1)
            ax.annotate(f"oracle limit {value:.1f}%", (1, value), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=6)  # fmt: skip
        _drop_bars(ax, part)
        for source, group in part[part["source"].isin(["tile", "learned"])].groupby("source", sort=False):
            group = group.sort_values("drop")
            handle = ax.plot(100 * group["drop"], 100 * group["saving"], marker="o", markersize=3, linewidth=0.8,
                             color=KIND_COLORS[source], alpha=0.8)[0]  # fmt: skip
            seen.setdefault(f"uniform {'diagonal rule (per window)' if source == 'tile' else 'learned (per t)'}",
                            handle)  # fmt: skip
        search = part[part["source"] == "search"].sort_values("budget")
        if len(search):
            handle = ax.plot(100 * search["drop"], 100 * search["saving"], marker="D", markersize=5, color="#de8f05",
                             linewidth=1.5)[0]  # fmt: skip
            seen.setdefault("operating points (search, per budget)", handle)
            for _, row in search.iterrows():
                ax.annotate(f"{row['budget']:g}", (100 * row["drop"], 100 * row["saving"]), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")  # fmt: skip
        ax.axvline(0, color="0.6", linewidth=0.6)
        if len(search):  # the budgets' neighbourhood: uniform settings losing far more are counted, not drawn
            right = max(3.0, 2.5 * float(search["budget"].max()), 1.2 * 100 * float(search["drop"].max()))
            beyond = int((100 * part["drop"] > right).sum())
            ax.set_xlim(min(-0.3, 100 * float(part["drop"].min()) - 0.2), right)
            if beyond:
                ax.annotate(f"{beyond} uniform setting(s) beyond {right:g} points", (1, 0.02),
                            xycoords="axes fraction", ha="right", fontsize=6)  # fmt: skip
        ax.set(title=display_name(model), xlabel="top-1 drop (points)", ylabel="net MAC saving (%)")
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(3, max(1, len(seen))),
               frameon=False, fontsize=7)  # fmt: skip
    fig.suptitle("Operating points within a top-1 budget (numbers on the evaluation images; budgets in points)")
    return fig


def _drop_bars(ax, part: pd.DataFrame) -> None:
    """The paired 95 % interval of each drop known (fractions in ``drop``, ``drop_low``, ``drop_high``)."""
    known = part[part["drop_low"].notna() & part["drop_high"].notna() & (part["source"] != "oracle")]
    for source, group in known.groupby("source", sort=False):
        color = "#de8f05" if source == "search" else KIND_COLORS.get(source, "#ca9161")
        ax.errorbar(100 * group["drop"], 100 * group["saving"], xerr=[100 * (group["drop"] - group["drop_low"]),
                    100 * (group["drop_high"] - group["drop"])], fmt="none", ecolor=color, elinewidth=0.7,
                    alpha=0.7, zorder=2)  # fmt: skip


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its drawing, the rows it draws (from the runs and the searches), and what it needs
    (said when it is skipped)."""

    draw: Callable[[pd.DataFrame], Figure]
    select: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
    needs: str


def _paper(runs: pd.DataFrame, windows: int = 1) -> pd.DataFrame:
    view = paper_view(runs)
    return view[(view["layer"] == "all") & (view["window"] >= windows)]


def _accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    view = _paper(runs)
    return view if (view["window"] >= 2).any() else view.iloc[:0]


def _layer_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    rule = runs[is_paper_rule(runs)]
    return rule[(rule["layer"] != "all") & (rule["window"] >= 2) & rule["top1_drop"].notna()]


def _tradeoff(runs: pd.DataFrame) -> pd.DataFrame:
    chosen = runs[(runs["layer"] == "all") & runs["top1_drop"].notna()]
    return chosen if (~chosen["baseline"]).any() else chosen.iloc[:0]


def _operating_points(runs: pd.DataFrame, searches: pd.DataFrame) -> pd.DataFrame:
    """Search results and, for their models, the uniform settings and the oracle on the evaluation images."""
    columns = ["model", "source", "drop", "saving", "budget", "drop_low", "drop_high"]
    if searches.empty:
        return pd.DataFrame(columns=columns)
    rows = [{"model": r["model"], "source": "search", "drop": r["test/top1_drop"], "saving": r["test/net_mac_saving"],
             "budget": r["budget"], "drop_low": r.get("test/top1_drop_low", float("nan")),
             "drop_high": r.get("test/top1_drop_high", float("nan"))} for _, r in searches.iterrows()]  # fmt: skip
    test = runs[(runs["split"] == "test") & (runs["layer"] == "all") & runs["model"].isin(searches["model"])]
    test = test[test["layers"].isin(["{}", ""]) & (test["recover"] == "none") & test["top1_drop"].notna()]
    alone = test["group"].fillna(1) == 1 if "group" in test else True  # each channel deciding alone
    uniform = {
        "tile": test[is_paper_rule(test) & (test["window"] >= 2)],
        "learned": test[(test["predictor"] == "learned") & alone],
        "oracle": test[test["predictor"] == "oracle"],
    }
    for source, part in uniform.items():
        rows += [{"model": r["model"], "source": source, "drop": r["top1_drop"], "saving": r["net_mac_saving"],
                  "budget": float("nan"), "drop_low": r.get("top1_drop_low", float("nan")),
                  "drop_high": r.get("top1_drop_high", float("nan"))} for _, r in part.iterrows()]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def fig_granularity(runs: pd.DataFrame) -> Figure:
    """Per model: ``skip/g<g>`` against g (log 2), one line per setting, the MAC saving g-wide hardware can
    still take; dashed, for each paper's-rule line, what it would keep if its predicted cells were spread
    over the channels independently (per layer, density p of predicted cells: saving * p^(g-1))."""
    labels = list(dict.fromkeys(runs["label"]))
    fig, axes = _panels(len(labels), width=3.3, height=3.0, sharey=False)
    seen: dict[str, object] = {}
    colours = sns.color_palette("colorblind", 10)
    palette = {name: colours[i % len(colours)] for i, name in enumerate(dict.fromkeys(runs["setting"]))}
    for ax, label in zip(axes, labels, strict=False):
        for _, row in runs[runs["label"] == label].iterrows():
            values = [100 * row[f"skip/g{g}"] for g in GROUPS]
            (handle,) = ax.plot(GROUPS, values, marker="o", markersize=3, linewidth=1, color=palette[row["setting"]])
            seen.setdefault(row["setting"], handle)
            if is_paper_rule(row.to_frame().T).iloc[0]:
                chance = [100 * _independent_skip(row, g) for g in GROUPS]
                ax.plot(GROUPS, chance, linestyle="--", linewidth=0.8, color=palette[row["setting"]], alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(GROUPS, [str(g) for g in GROUPS])
        ax.set(title=textwrap.fill(label, 34), xlabel="channels sharing a decision (g)",
               ylabel="MAC saving kept (%)")  # fmt: skip
        ax.set_ylim(bottom=0)
    handles = list(seen.values())
    fig.legend(handles, list(seen), loc="outside lower center", ncols=min(3, max(1, len(handles))), frameon=False,
               fontsize=7, title="setting (dashed: the rule placed independently across channels)")  # fmt: skip
    fig.suptitle(_title("What survives when g channels must agree", runs))
    return fig


def _independent_skip(row: pd.Series, g: int) -> float:
    """``skip/g<g>`` expected if each layer's predicted cells were placed independently across channels:
    the sum over layers of its saving times p^(g-1), p its share of predicted cells (full groups; a
    layer's last, smaller group would keep a little more)."""
    total = 0.0
    for key in row.index:
        if key.startswith("layer/") and key.endswith("/mac_saving"):
            name = key[len("layer/") : -len("/mac_saving")]
            p = row.get(f"layer/{name}/frac/pred_hit", 0.0) + row.get(f"layer/{name}/frac/pred_miss", 0.0)
            if row[key] == row[key] and p == p:
                total += row[key] * p ** (g - 1)
    return total


def _granularity(runs: pd.DataFrame) -> pd.DataFrame:
    """The test-split layer=all runs that log skip/g<g>: the paper's rule (each window), the learned
    predictor and the oracle (uniform, no recovery), and the operating points."""
    if any(f"skip/g{g}" not in runs for g in GROUPS):
        return runs.iloc[:0]
    chosen = runs[(runs["split"] == "test") & (runs["layer"] == "all") & runs["skip/g32"].notna()]
    chosen = chosen[chosen["mac_saving"] > 0]
    uniform = chosen["layers"].isin(["{}", ""]) & (chosen["recover"] == "none")
    keep = (is_paper_rule(chosen) & (chosen["window"] >= 2)) | (chosen["operating_point"] != "")
    keep |= uniform & chosen["predictor"].isin(["learned", "oracle"])
    return chosen[keep]


PAPER_RUNS = "runs of the paper's rule (predictor=tile, pattern diagonal, threshold 0) with layer=all"
FIGURES: dict[str, FigureSpec] = {
    "fig2_zero_windows": FigureSpec(
        fig2_zero_windows,
        lambda runs, _: baselines(runs)[lambda f: f["layer"] == "all"],
        "a baseline run (predictor=none, or window=1) with layer=all",
    ),
    "fig5_breakdown": FigureSpec(fig5_breakdown, lambda runs, _: _paper(runs, 2), f"{PAPER_RUNS} at window >= 2"),
    "fig6_mac_savings": FigureSpec(fig6_mac_savings, lambda runs, _: _paper(runs, 2), f"{PAPER_RUNS} at window >= 2"),
    "fig7_accuracy": FigureSpec(fig7_accuracy, lambda runs, _: _accuracy(runs), f"{PAPER_RUNS} at window >= 2"),
    "fig_layers": FigureSpec(
        fig_layers,
        lambda runs, _: _layer_sweep(runs),
        "a layer sweep of the paper's rule (layer=<index or name>, window >= 2) and its baseline",
    ),
    "fig_tradeoff": FigureSpec(
        fig_tradeoff,
        lambda runs, _: _tradeoff(runs),
        "layer=all runs of a predictor that predicts something, and their baseline",
    ),
    "fig_operating_points": FigureSpec(
        fig_operating_points, _operating_points, "a finished search (python -m pipeline.search model=<model>)"
    ),
    "fig_granularity": FigureSpec(
        fig_granularity,
        lambda runs, _: _granularity(runs),
        "test-split layer=all runs that log skip/g<g> (measurement version 4 or later) and predict something",
    ),
}


def select(runs: pd.DataFrame, searches: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The rows of every figure the runs and searches support, and {skipped figure: what it needs}."""
    chosen: dict[str, pd.DataFrame] = {}
    skipped: dict[str, str] = {}
    for name, spec in FIGURES.items():
        part = spec.select(runs, searches)
        if part.empty:
            skipped[name] = f"needs {spec.needs}"
        else:
            chosen[name] = part
    return chosen, skipped


def save(fig: Figure, stem: Path, formats: tuple[str, ...]) -> list[Path]:
    """``fig`` as ``<stem>.<format>`` in every format, then closed; the files."""
    written = []
    try:
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, dpi=200, bbox_inches="tight")
            written.append(path)
    finally:
        plt.close(fig)
    return written


def render(chosen: dict[str, pd.DataFrame], folder: Path, formats: tuple[str, ...]) -> list[Path]:
    """Draw the figures of :func:`select` into ``folder``, each in every format; returns the files."""
    sns.set_theme(context="paper", style="whitegrid")
    written: list[Path] = []
    for name, part in chosen.items():
        written += save(FIGURES[name].draw(part), folder / name, formats)
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


ENERGY_PARTS = (("compute", "MAC"), ("register_file", "register files"), ("buffer", "global buffer"),
                ("dram", "DRAM"), ("predictor", "predictor"))  # fmt: skip


def fig_energy(totals: pd.DataFrame) -> Figure:
    """Per model: each run's energy saving against the MAC saving its preset's hardware keeps (skip/g at
    the preset's g), one marker per preset; dotted, energy saving = MAC saving (all energy in the MACs)."""
    labels = list(dict.fromkeys(totals["label"]))
    fig, axes = _panels(len(labels), width=3.3, height=3.0, sharey=False)
    colours = sns.color_palette("colorblind", 10)
    presets = list(dict.fromkeys(totals["preset"]))
    seen: dict[str, object] = {}
    for ax, label in zip(axes, labels, strict=False):
        part = totals[totals["label"] == label]
        top = 100 * float(part["mac_saving_kept"].max()) if len(part) else 1.0
        ax.plot([0, top], [0, top], linestyle=":", color="0.5", linewidth=0.8)
        for number, preset in enumerate(presets):
            group = part[part["preset"] == preset]
            handle = ax.scatter(100 * group["mac_saving_kept"], 100 * group["energy_saving"], s=26 - 4 * number,
                                color=colours[number % len(colours)], marker="osD^v"[number % 5], edgecolor="white",
                                linewidth=0.4)  # fmt: skip
            seen.setdefault(preset, handle)
        ax.set(title=textwrap.fill(label, 34), xlabel="MAC saving the hardware keeps (%)",
               ylabel="energy saving (%)")  # fmt: skip
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(4, len(seen)), frameon=False,
               fontsize=7, title="energy preset (conf/hardware/energy/; dotted: energy = MAC saving)")  # fmt: skip
    fig.suptitle("Energy saving against MAC saving (a model: docs/measurements.md, Energy and cycles)")
    return fig


def fig_energy_layers(layers: pd.DataFrame, totals: pd.DataFrame) -> Figure:
    """Per model, for one run (its first operating point, else the paper's 3x3 rule) under the first
    preset: each layer's energy, dense and predicted side by side, stacked by component, in % of the
    model's dense energy."""
    preset = str(totals["preset"].iloc[0])
    picks = []
    for label, part in totals[totals["preset"] == preset].groupby("label", sort=False):
        points = part[part["setting"].str.startswith("operating point")]
        rule = part[part["setting"] == "diagonal 3x3"]
        chosen = points if len(points) else rule if len(rule) else part
        picks.append((label, chosen.iloc[0]))
    fig, axes = _panels(len(picks), width=3.3, height=3.0, sharey=False)
    colours = dict(zip([key for key, _ in ENERGY_PARTS], sns.color_palette("colorblind", 5), strict=True))
    for ax, (label, run) in zip(axes, picks, strict=False):
        part = layers[(layers["run_id"] == run["run_id"]) & (layers["preset"] == preset)]
        whole = float(part["dense"].sum()) or 1.0
        positions = range(len(part))
        for side, offset in (("dense", -0.2), ("predicted", 0.2)):
            bottom = [0.0] * len(part)
            for key, name in ENERGY_PARTS:
                column = f"{side}/{key}"
                values = [100 * v / whole for v in (part[column] if column in part else [0.0] * len(part))]
                ax.bar([p + offset for p in positions], values, width=0.38, bottom=bottom, color=colours[key],
                       label=name if side == "dense" else None, edgecolor="white", linewidth=0.3)  # fmt: skip
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(list(positions), [str(i) for i in positions])
        ax.set(title=textwrap.fill(f"{label}: {run['setting']}", 40), xlabel="layer (left: dense, right: predicted)",
               ylabel="% of the model's dense energy")  # fmt: skip
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=5, frameon=False, fontsize=7,
               title=f"energy preset {preset}")  # fmt: skip
    fig.suptitle("Energy per layer, dense and predicted (a model: docs/measurements.md)")
    return fig
