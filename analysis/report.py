"""The analysis stage: job runs from MLflow -> the paper's figures, a summary table, an analysis run.

``run(cfg)`` is plain Python so tests can call it; ``analysis/__main__.py`` is the Hydra shell.
Everything that can be wrong with the input (settings, store, experiment, filters, missing
baselines) is found before a file is written; the outputs are drawn in a temporary folder beside
``out`` and moved into ``out`` only when all of them (and the analysis run, when ``log_run``) succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from analysis.config import AnalysisConfig, AnalysisError, validate
from analysis.load import load_runs, open_store, pipeline_hint, resolve_uri, with_layer_index
from analysis.record import ensure_experiment, log_analysis_run
from analysis.summary import markdown, summary_table, with_baseline, write_summary

RUN_COLUMNS = ("run_id", "start_time", "config_hash", "sweep", "model", "data", "window", "layer", "limit",
               "seed", "predictor", "top1", "top5", "mac_saving")  # fmt: skip
FIGURE_NAMES = ("fig2_zero_windows", "fig5_breakdown", "fig6_mac_savings", "fig7_accuracy", "fig_layers")


@dataclass
class Report:
    out: Path
    files: list[Path]  # under out
    run_id: str | None  # the analysis run, when logged
    runs: pd.DataFrame  # the job runs used (with baselines and drops)
    summary: pd.DataFrame


def run(cfg: DictConfig) -> Report:
    """Read the job runs, draw the figures, write the summary, log the analysis run."""
    config = validate(cfg)
    client, experiment_id = open_store(config)
    runs = load_runs(client, experiment_id, config)
    if not ((runs["layer"] == "all") & (runs["window"] >= 2)).any():
        raise AnalysisError(
            f"the {len(runs)} selected run(s) have no prediction window (window >= 2 with layer=all): "
            f"Figures 5-7 need them; run `{pipeline_hint(config, '-m', 'window=2,3,4,5')}`"
        )
    runs = with_baseline(runs, config)
    if (runs["layer"] != "all").any():
        runs = with_layer_index(client, runs)
    summary = summary_table(runs, config.max_top5_drop)

    from analysis.figures import render  # matplotlib/seaborn only once the input is known to be good

    config.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=config.out.parent, prefix=f".{config.out.name}.tmp-"))
    try:
        figures = render(runs, staging, config.formats)
        tables = write_summary(summary, staging)
        runs_csv = staging / "runs.csv"
        runs[[c for c in RUN_COLUMNS if c in runs]].to_csv(runs_csv, index=False)
        tables.append(runs_csv)
        run_id = None
        if config.log_run:
            run_id = _log(client, config, runs, figures, tables)
        files = _publish(staging, [*figures, *tables], config.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(markdown(summary), flush=True)
    print(f"wrote {len(files)} files to {config.out}" + (f"; analysis run {run_id}" if run_id else ""), flush=True)
    return Report(config.out, files, run_id, runs, summary)


def _log(client, config: AnalysisConfig, runs: pd.DataFrame, figures: list[Path], tables: list[Path]) -> str:
    experiment_id = ensure_experiment(client, resolve_uri(config.uri), config.experiment, config.artifacts)
    params = {f"filters.{key}": None for key in ("sweep", "model", "data")}
    params.update({f"filters.{key}": ",".join(values) for key, values in config.filters.items()})
    params.update({"best.max_top5_drop": config.max_top5_drop, "runs": len(runs), "out": str(config.out)})
    return log_analysis_run(client, experiment_id, params, {"figures": figures, "summary": tables})


def _publish(staging: Path, files: list[Path], out: Path) -> list[Path]:
    """Move the finished files into ``out`` (replacing files of the same name); delete nothing else."""
    out.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in files:
        os.replace(path, out / path.name)
        moved.append(out / path.name)
    return moved
