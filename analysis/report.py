"""The analysis stage: job runs from MLflow -> figures, summary tables, an analysis run.

``run(cfg)`` is plain Python so tests can call it; ``analysis/__main__.py`` is the Hydra shell.
Everything that can be wrong with the input (settings, store, experiment, filters) is found before
a file is written. Every figure the selected runs support is drawn; the others are named with what
they need (a missing baseline too), and the analysis fails only when it can draw nothing. The
outputs are drawn in a temporary folder beside ``out`` and moved into ``out`` only when all of them
(and the analysis run, when ``log_run``) succeeded; files in ``out`` that this call did not write
are left alone.
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
from analysis.load import (
    layers_frame,
    load_runs,
    load_searches,
    open_store,
    pipeline_hint,
    predictions,
    preset_calibration,
    preset_points,
    resolve_uri,
    with_layer_index,
    with_presets,
)
from analysis.record import log_analysis_run
from analysis.summary import (
    markdown,
    missing_baselines,
    operating_points_table,
    predictors_table,
    summary_table,
    with_baseline,
    with_paired,
    write_summary,
)
from pipeline.tracking.client import ensure_experiment

RUN_COLUMNS = ("run_id", "start_time", "config_hash", "sweep", "model", "data", "window", "layer", "limit",
               "seed", "split", "predictor", "pattern", "threshold", "group", "layers", "recover", "baseline",
               "setting", "top1", "top5", "mac_saving", "net_mac_saving", "skip/g8", "skip/g16", "top1_drop",
               "top1_drop_low", "top1_drop_high", "flips_worse", "flips_better", "mcnemar_p", "images",
               "baseline_run_id")  # fmt: skip


@dataclass
class Report:
    out: Path
    files: list[Path]  # under out
    run_id: str | None  # the analysis run, when logged
    runs: pd.DataFrame  # the job runs used (with baselines and drops)
    summary: pd.DataFrame  # the paper's table
    predictors: pd.DataFrame  # the predictor comparison
    operating_points: pd.DataFrame  # one row per search
    skipped: dict[str, str]  # figure -> what it needs


def run(cfg: DictConfig) -> Report:
    """Read the job runs, draw the figures they support, write the summaries, log the analysis run."""
    config = validate(cfg)
    client, experiment_id = open_store(config)
    runs = with_baseline(load_runs(client, experiment_id, config))
    runs = with_paired(runs, lambda run_id: predictions(client, run_id))
    if (runs["layer"] != "all").any():
        runs = with_layer_index(client, runs)
    summary = summary_table(runs, config.max_top5_drop)
    comparison = predictors_table(runs)
    calibration = preset_calibration(client, experiment_id, config, runs)
    if len(calibration):
        calibration = with_paired(with_baseline(calibration), lambda run_id: predictions(client, run_id))
    presets = preset_points(pd.concat([runs, calibration], ignore_index=True) if len(calibration) else runs)
    searches = with_presets(load_searches(client, experiment_id, config), presets)
    points = operating_points_table(searches)

    from analysis.figures import render, select  # matplotlib/seaborn only once the input is known good

    chosen, skipped = select(runs, searches)
    if not chosen:
        reasons = "; ".join(f"{name} {why}" for name, why in skipped.items())
        hint = missing_baselines(runs, config) or f"run e.g. `{pipeline_hint(config, '-m', 'window=1,2,3,4,5')}`"
        raise AnalysisError(f"the {len(runs)} selected run(s) support no figure ({reasons}): {hint}")
    config.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=config.out.parent, prefix=f".{config.out.name}.tmp-"))
    try:
        figures = render(chosen, staging, config.formats)
        tables = write_summary(summary, comparison, points, staging)
        energy_files, energy_skipped = write_energy(client, runs, config, staging)
        figures += [path for path in energy_files if path.suffix != ".csv"]
        tables += [path for path in energy_files if path.suffix == ".csv"]
        skipped.update(energy_skipped)
        runs_csv = staging / "runs.csv"
        runs[[c for c in RUN_COLUMNS if c in runs]].to_csv(runs_csv, index=False)
        tables.append(runs_csv)
        run_id = None
        if config.log_run:
            run_id = _log(client, config, runs, figures, tables)
        files = _publish(staging, [*figures, *tables], config.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(markdown(summary, comparison, points), flush=True)
    for name, why in skipped.items():
        print(f"skipped {name}: it {why}", flush=True)
    missing = missing_baselines(runs, config)
    if missing:
        print(f"note: {missing}", flush=True)
    drawn = len({path.stem for path in figures})
    print(
        f"wrote {len(files)} files ({drawn} figures) to {config.out}"
        + (f"; analysis run {run_id}" if run_id else ""),
        flush=True,
    )
    return Report(config.out, files, run_id, runs, summary, comparison, points, skipped)


def write_energy(client, runs: pd.DataFrame, config: AnalysisConfig, folder: Path) -> tuple[list[Path], dict]:
    """The energy model of each preset (analysis.energy) over the runs fig_granularity draws: energy.csv
    (per run and preset), energy_layers.csv, fig_energy and fig_energy_layers; {figure: why} when skipped."""
    from analysis.energy import energy_tables, load_preset
    from analysis.figures import _granularity, fig_energy, fig_energy_layers, save

    chosen = _granularity(runs) if config.energy else runs.iloc[:0]
    totals = pd.DataFrame()
    if len(chosen):
        layers, totals = energy_tables(chosen, lambda run_id: layers_frame(client, run_id),
                                       [load_preset(name) for name in config.energy])  # fmt: skip
    if totals.empty:
        why = "needs energy presets (energy=[...]) and test-split layer=all runs that log skip/g<g>"
        return [], {"fig_energy": why, "fig_energy_layers": why}
    files = [folder / "energy.csv", folder / "energy_layers.csv"]
    totals.to_csv(files[0], index=False)
    layers.to_csv(files[1], index=False)
    files += save(fig_energy(totals), folder / "fig_energy", config.formats)
    files += save(fig_energy_layers(layers, totals), folder / "fig_energy_layers", config.formats)
    return files, {}


def _log(client, config: AnalysisConfig, runs: pd.DataFrame, figures: list[Path], tables: list[Path]) -> str:
    experiment_id = ensure_experiment(client, resolve_uri(config.uri), config.experiment, config.artifacts)
    params = {f"filters.{key}": None for key in ("sweep", "model", "data")}
    params.update({f"filters.{key}": ",".join(values) for key, values in config.filters.items()})
    params.update({"best.max_top5_drop": config.max_top5_drop, "runs": len(runs), "out": str(config.out)})
    return log_analysis_run(client, experiment_id, params, {"figures": figures, "summary": tables})


def _publish(staging: Path, files: list[Path], out: Path) -> list[Path]:
    """Move the finished files into ``out`` (replacing files of the same name, deleting none)."""
    out.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in files:
        os.replace(path, out / path.name)
        moved.append(out / path.name)
    return moved
