"""Job runs from the MLflow store as one tidy DataFrame: one row per run, params and metrics as columns.

Only FINISHED job runs count: sweep parents (tag ``sweep.parent=true``), analysis runs (tag
``analysis=true``) and runs without the job params are left out. The filters (sweep, model, data)
apply first; then, when one configuration was run more than once (same ``config_hash`` tag), the
run that started last counts. Runs of different configurations that still share every key of
:data:`SETTING`, window and layer (say, another checkpoint) cannot share a point: the latest counts
there too, with a warning.

Columns: ``run_id, start_time, config_hash, sweep, model, data, window (int), layer (str: all, a
name or an index), limit (Int64, <NA> = every image), seed (int), split, predictor`` (the kind),
``pattern, threshold`` (empty / NaN where the kind has none), ``group`` (int: the channels that share one
decision, 1 for runs recorded before it), ``layers`` (the per-layer table as
JSON, ``{}`` when there is none), ``recover``, ``baseline`` (bool: the run predicts nothing), then
``label`` (the model's display name, qualified by data/limit/seed/split where one model has runs
with several of them, and by the data set whenever the runs span several) and ``setting`` (the
predictor and its parameters: ``diagonal 3x3``, ``oracle``, ...), then every metric under its MLflow
key (``top1``, ``frac/pred_hit``, ``layer/<name>/mac_saving``, ...). Runs recorded before the
predictor family (param ``predictor`` = a pattern name) read as kind ``tile`` with threshold 0.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient

from analysis.config import AnalysisConfig, AnalysisError
from pipeline.measurement.paired import PairedDrop
from pipeline.tracking.client import resolve_uri as resolve_tracking_uri
from pipeline.tracking.client import search_all
from pipeline.tracking.config import TrackingConfig
from pipeline.tracking.keys import (
    ANALYSIS_TAG,
    BASELINE_TAG,
    CONFIG_HASH_TAG,
    JOB_PARAMS,
    LAYERS_ARTIFACT,
    OPERATING_POINT_BUDGET_PARAM,
    OPERATING_POINT_CONFIDENCE_PARAM,
    OPERATING_POINT_PARAM,
    PARENT_TAG,
    PREDICTIONS_ARTIFACT,
    PREDICTIONS_COLUMNS,
    PREDICTOR_KINDS,
    RECOVER_PARAM,
    SEARCH_CONFIDENCE_TAG,
    SEARCH_METRICS,
    SEARCH_PAIRED,
    SEARCH_TAG,
    SEARCH_TAGS,
    SPLIT_PARAM,
    SWEEP_TAG,
)
from pipeline.tracking.store import StoreError, check_store

MODEL_SETTING = ("model", "data", "limit", "seed", "split")  # one model's evaluation: a baseline's key
PREDICTOR_SETTING = ("predictor", "pattern", "threshold", "group", "layers", "recover")  # what was predicted, and how
SETTING = (*MODEL_SETTING, *PREDICTOR_SETTING)  # one curve of a figure: all but window and layer
LEGACY_PATTERNS = ("diagonal", "anti_diagonal")  # param `predictor` before the predictor family
PAPER_ORDER = ("alexnet", "vgg16", "resnet18")
DISPLAY_NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "resnet18": "ResNet-18"}
DEFAULT_URI = TrackingConfig.uri  # conf/tracking/local.yaml; only used to shorten hints
DEFAULT_EXPERIMENT = TrackingConfig.experiment


def resolve_uri(uri: str) -> str:
    """A tracking URI as MLflow gets it (as the pipeline resolves it); AnalysisError when it is none."""
    try:
        return resolve_tracking_uri(uri)
    except StoreError as exc:
        raise AnalysisError(str(exc)) from None


def pipeline_hint(config: AnalysisConfig, *overrides: str) -> str:
    """The pipeline command that would create the missing runs in this store (and pass the filters)."""
    parts = ["python -m pipeline", *overrides]
    multirun = "-m" in overrides
    for key in ("model", "data"):
        values = config.filters.get(key, ())
        if values and not any(o.startswith(f"{key}=") for o in overrides) and (multirun or len(values) == 1):
            parts.append(f"{key}={','.join(values)}")
    if config.uri != DEFAULT_URI:
        parts.append(f"tracking.uri={config.uri}")
    if config.experiment != DEFAULT_EXPERIMENT:
        parts.append(f"tracking.experiment={config.experiment}")
    return " ".join(parts)


def open_store(config: AnalysisConfig) -> tuple[MlflowClient, str]:
    """A client on the store and the experiment's id; never creates a store or an experiment."""
    uri = resolve_uri(config.uri)
    sweep_hint = pipeline_hint(config, "-m", "window=1,2,3,4,5")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise AnalysisError(
            f"no tracking store at {uri[len('sqlite:///') :]} (tracking.uri={config.uri}): "
            f"run the sweeps first, e.g. `{sweep_hint}`, or point tracking.uri at their store"
        )
    try:
        check_store(uri, create=False)  # never write MLflow's tables into a file that is not its store
    except StoreError as exc:
        raise AnalysisError(str(exc)) from None
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(
            f"experiment {config.experiment!r} is not in the store {uri} "
            f"(it has: {', '.join(names) or 'none'}): set tracking.experiment, or run `{sweep_hint}`"
        )
    return client, experiment.experiment_id


def finished_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Every FINISHED run of the experiment (all pages)."""
    return search_all(client, experiment_id, "attributes.status = 'FINISHED'")


def job_row(run: Run) -> dict[str, object] | None:
    """One run as a flat row, or None when it is not a job run (parent, analysis, no job params)."""
    tags, params = run.data.tags, run.data.params
    if tags.get(PARENT_TAG) == "true" or tags.get(ANALYSIS_TAG) == "true":
        return None
    if any(key not in params for key in JOB_PARAMS):
        return None
    try:
        window, seed = int(params["window"]), int(params["seed"])
        limit = None if params["limit"] in ("null", "None", "") else int(params["limit"])
        threshold = _number(params.get("predictor.threshold"))
    except ValueError:
        print(f"warning: run {run.info.run_id} has unreadable params {dict(params)}; left out", file=sys.stderr)
        return None
    kind, pattern = params["predictor"], params.get("predictor.pattern", "")
    if kind in LEGACY_PATTERNS:  # recorded before the predictor family: the tile rule with that pattern
        kind, pattern, threshold = "tile", kind, 0.0
    baseline = tags.get(BASELINE_TAG)
    row: dict[str, object] = {
        "run_id": run.info.run_id,
        "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        "config_hash": tags.get(CONFIG_HASH_TAG) or run.info.run_id,
        "sweep": tags.get(SWEEP_TAG),
        "model": params["model"],
        "data": params["data"],
        "window": window,
        "layer": params["layer"],
        "limit": limit,
        "seed": seed,
        "split": params.get(SPLIT_PARAM, "test"),
        "predictor": kind,
        "pattern": "" if pattern in ("null", "None") else pattern,
        "threshold": threshold,
        "group": int(
            _number(params.get("predictor.group"))
            if params.get("predictor.group") not in (None, "", "None", "null")
            else 1
        ),
        "layers": params.get("predictor.layers", "{}"),
        "recover": params.get(RECOVER_PARAM, "none"),
        "operating_point": params.get(OPERATING_POINT_PARAM, ""),
        "point_budget": _number(params.get(OPERATING_POINT_BUDGET_PARAM)),  # NaN: not one (or recorded before it)
        "point_confidence": _number(params.get(OPERATING_POINT_CONFIDENCE_PARAM)),  # NaN: none (the point estimate)
        "baseline": (baseline == "true") if baseline is not None else (kind == "none" or window == 1),
    }
    row.update(run.data.metrics)
    return row


def _number(text: str | None) -> float:
    """A float param, NaN where the kind has none."""
    return float("nan") if text in (None, "", "null", "None") else float(text)


def setting_label(row: Mapping[str, object]) -> str:
    """The predictor and its parameters in words: ``diagonal 3x3``, ``checkerboard 3x3 t=0.05``,
    ``tile oracle diagonal 3x3``, ``random diagonal 3x3``, ``oracle``, ``none``; a per-layer table and
    a recovery are named after it (``+ per-layer table``, ``+ bn``)."""
    kind, window = str(row["predictor"]), int(row["window"])  # type: ignore[call-overload]
    if row.get("operating_point"):
        return f"operating point {row['operating_point']}"
    if kind in ("none", "oracle"):
        text = kind
    else:
        parts = [] if kind == "tile" else [kind.replace("_", " ")]
        if row.get("pattern"):
            parts.append(str(row["pattern"]))
        parts.append(f"{window}x{window}")
        threshold = row.get("threshold")
        if isinstance(threshold, float) and threshold == threshold and threshold > 0:
            parts.append(f"t={threshold:g}")
        text = " ".join(parts)
    if int(row.get("group") or 1) > 1:  # type: ignore[call-overload]
        text += f" g={row['group']}"
    if row.get("layers") not in (None, "", "{}"):
        text += " + per-layer table"
    if row.get("recover") not in (None, "", "none"):
        text += f" + {row['recover']}"
    return text


def tidy(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Rows -> DataFrame with typed columns and the latest run per config_hash."""
    frame = pd.DataFrame(list(rows))
    frame["limit"] = frame["limit"].astype("Int64")
    for key in ("predictor_mac_cost", "net_mac_saving"):  # runs recorded before predictor costs: rules, cost 0
        if key not in frame:
            frame[key] = float("nan")
    frame["predictor_mac_cost"] = frame["predictor_mac_cost"].fillna(0.0)
    frame["net_mac_saving"] = frame["net_mac_saving"].fillna(frame["mac_saving"] - frame["predictor_mac_cost"])
    frame = frame.sort_values("start_time", kind="stable")
    frame = frame.drop_duplicates("config_hash", keep="last")
    repeated = frame.duplicated([*SETTING, "window", "layer"], keep="last")
    if repeated.any():
        print(
            f"warning: {int(repeated.sum())} run(s) repeat the model/data/predictor/window/layer of a later run "
            "with a different config (e.g. another checkpoint); the latest counts",
            file=sys.stderr,
        )
        frame = frame[~repeated]
    frame = frame.sort_values([*SETTING, "window", "layer"], key=_order)
    position = frame.columns.get_loc("baseline") + 1
    frame.insert(position, "label", labels(frame))
    frame.insert(position + 1, "setting", [setting_label(row) for row in frame.to_dict("records")])
    return frame.reset_index(drop=True)


def load_runs(client: MlflowClient, experiment_id: str, config: AnalysisConfig) -> pd.DataFrame:
    """The job runs that pass ``config.filters``, latest per config; AnalysisError when there are none."""
    runs = finished_runs(client, experiment_id)
    rows = [row for row in map(job_row, runs) if row is not None]
    where = f"experiment {config.experiment!r} of {resolve_uri(config.uri)}"
    if not rows:
        raise AnalysisError(
            f"no FINISHED job runs in {where}: run the sweeps first, "
            f"e.g. `{pipeline_hint(config, '-m', 'window=1,2,3,4,5')}`"
        )
    frame = pd.DataFrame(rows)
    for key, accepted in config.filters.items():
        if key == "sweep":
            wanted = set(accepted) | {str(Path(s).resolve()) for s in accepted}
            keep = frame["sweep"].isin(wanted)
        elif key == "split":  # runs recorded before data splits evaluated the test split
            keep = frame["split"].fillna("test").isin(accepted)
        elif key == "model":  # a custom model is recorded as custom:<factory>; `custom` selects them all
            keep = frame["model"].isin(accepted) | frame["model"].str.split(":").str[0].isin(accepted)
        else:
            keep = frame[key].isin(accepted)
        if not keep.any():
            present = sorted({str(v) for v in frame[key].dropna()})
            raise AnalysisError(
                f"no FINISHED job runs in {where} with filters.{key}={list(accepted)} "
                f"(the runs have {key}: {', '.join(present) or 'none'}): change the filter, "
                f"or run `{pipeline_hint(config, '-m', 'window=1,2,3,4,5')}`"
            )
        frame = frame[keep]
    return tidy(frame.to_dict("records"))


def load_searches(client: MlflowClient, experiment_id: str, config: AnalysisConfig) -> pd.DataFrame:
    """The FINISHED searches (pipeline.search parent runs), the latest per model and operating point:
    ``model, operating_point, budget, calibration, confidence`` and the metrics of :data:`SEARCH_METRICS`
    and :data:`SEARCH_PAIRED` (NaN in searches recorded before the paired statistics; confidence None)."""
    rows = []
    for run in finished_runs(client, experiment_id):
        tags = run.data.tags
        if tags.get(SEARCH_TAG) != "true" or not all(key in run.data.metrics for key in SEARCH_METRICS):
            continue
        if not all(tags.get(key) for key in SEARCH_TAGS):
            continue
        row = {key: tags.get(key) for key in SEARCH_TAGS}
        row.update({"run_id": run.info.run_id, "start_time": run.info.start_time, "budget": float(row["budget"])})
        row.update({key: run.data.metrics[key] for key in SEARCH_METRICS})
        row.update({key: run.data.metrics.get(key, float("nan")) for key in SEARCH_PAIRED})
        confidence = tags.get(SEARCH_CONFIDENCE_TAG, "None")
        row[SEARCH_CONFIDENCE_TAG] = None if confidence == "None" else float(confidence)
        rows.append(row)
    columns = ["run_id", "start_time", *SEARCH_TAGS, SEARCH_CONFIDENCE_TAG, *SEARCH_METRICS, *SEARCH_PAIRED]
    frame = pd.DataFrame(rows, columns=columns)
    if "model" in config.filters:
        frame = frame[frame["model"].isin(config.filters["model"])]
    frame = frame.sort_values("start_time").drop_duplicates(["model", "operating_point"], keep="last")
    return frame.sort_values(["model", "budget"], key=_order).reset_index(drop=True)


POINT_KEYS = ("top1_drop", "net_mac_saving", "flips_worse", "flips_better", "top1_drop_low", "top1_drop_high",
              "mcnemar_p")  # fmt: skip


def preset_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Operating points measured by running their presets (``python -m pipeline model=<twin>
    operating_point=<name>``, on ``data.split=calibration`` too for the calibration numbers), in the
    columns of :func:`load_searches`: the latest layer=all run per model, operating point and split that
    has a baseline (``runs`` through ``with_baseline`` and ``with_paired``); calibration NaN without a run
    there. So a store without the searches still tables and draws the shipped operating points."""
    columns = ["run_id", "start_time", *SEARCH_TAGS, SEARCH_CONFIDENCE_TAG, *SEARCH_METRICS, *SEARCH_PAIRED]
    if "point_budget" not in runs or "top1_drop" not in runs:
        return pd.DataFrame(columns=columns)
    points = runs[(runs["operating_point"] != "") & runs["point_budget"].notna() & (runs["layer"] == "all")
                  & runs["top1_drop"].notna()].sort_values("start_time")  # fmt: skip
    rows = []
    for (model, name), group in points.groupby(["model", "operating_point"], sort=False):
        test = group[group["split"] == "test"]
        if test.empty:
            continue
        latest = {"test": test.iloc[-1]}
        calibration = group[group["split"] == "calibration"]
        if len(calibration):
            latest["calibration"] = calibration.iloc[-1]
        run = latest["test"]
        confidence = None if pd.isna(run["point_confidence"]) else float(run["point_confidence"])
        row = {"run_id": run["run_id"], "start_time": int(run["start_time"].value // 10**6), "model": model,
               "operating_point": name, "budget": float(run["point_budget"]), SEARCH_CONFIDENCE_TAG: confidence,
               "calibration": int(latest["calibration"]["images"]) if "calibration" in latest else None}  # fmt: skip
        for split in ("calibration", "test"):
            part = latest.get(split)
            for key in POINT_KEYS:
                row[f"{split}/{key}"] = float("nan") if part is None else part.get(key, float("nan"))
            worse, better = row[f"{split}/flips_worse"], row[f"{split}/flips_better"]
            known = part is not None and not (pd.isna(worse) or pd.isna(better))
            row[f"{split}/top1_drop_upper"] = (
                PairedDrop(int(worse), int(better), int(part["images"])).upper(confidence or 0.95) if known
                else float("nan")
            )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def preset_calibration(client: MlflowClient, experiment_id: str, config: AnalysisConfig,
                       runs: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """The calibration runs of the operating points in ``runs`` and their baselines, where the split filter
    (``filters.split=test``, the default) leaves them out of ``runs``: a preset's calibration numbers."""
    accepted = config.filters.get("split")
    names = set(runs.loc[runs["operating_point"] != "", "operating_point"]) if "operating_point" in runs else set()
    if not names or accepted is None or "calibration" in accepted:
        return runs.iloc[:0]
    try:
        frame = load_runs(
            client, experiment_id, replace(config, filters={**config.filters, "split": ("calibration",)})
        )
    except AnalysisError:  # no calibration runs that pass the other filters
        return runs.iloc[:0]
    models = set(runs.loc[runs["operating_point"].isin(names), "model"])
    return frame[frame["model"].isin(models) & (frame["operating_point"].isin(names) | frame["baseline"])]


def with_presets(searches: pd.DataFrame, presets: pd.DataFrame) -> pd.DataFrame:
    """The searches and the operating points measured from their presets, the latest per model and
    operating point (a preset run after its search measures the same table again, on the same images)."""
    if presets.empty:
        return searches
    frame = presets if searches.empty else pd.concat([searches, presets], ignore_index=True)
    frame = frame.sort_values("start_time").drop_duplicates(["model", "operating_point"], keep="last")
    return frame.sort_values(["model", "budget"], key=_order).reset_index(drop=True)


def layer_names(client: MlflowClient, run_id: str) -> list[str] | None:
    """The predictable layers of a run in index order (its ``layers.csv`` artifact), or None."""
    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        try:
            path = client.download_artifacts(run_id, LAYERS_ARTIFACT, folder)
        except Exception:  # no artifact (or no artifact store): the caller falls back
            return None
        with open(path, newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: int(r["index"]))
    return [r["name"] for r in rows]


def layers_frame(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    """A run's ``layers.csv`` (one row per predictable layer, contract sections 4-10), or None."""
    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        try:
            path = client.download_artifacts(run_id, LAYERS_ARTIFACT, folder)
        except Exception:  # no artifact: the caller leaves the run out
            return None
        return pd.read_csv(path, keep_default_na=False, na_values=[])


def predictions(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    """A run's per-image outcomes (its ``predictions.csv``, contract section 11: image, label, pred, top5 in
    evaluation order), or None when it has none (a run recorded before the artifact existed)."""
    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        try:
            path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, folder)
        except Exception:  # no artifact: the caller leaves the paired columns empty
            return None
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise AnalysisError(
                f"the {PREDICTIONS_ARTIFACT} of run {run_id} cannot be read ({type(exc).__name__}): it was altered; "
                "rerun the run's job with force=true"
            ) from None
    if list(frame.columns) != list(PREDICTIONS_COLUMNS):
        raise AnalysisError(
            f"the {PREDICTIONS_ARTIFACT} of run {run_id} has the columns {', '.join(map(str, frame.columns))}, not "
            f"{', '.join(PREDICTIONS_COLUMNS)}: it was altered; rerun the run's job with force=true"
        )
    return frame


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No progress bar for artifact downloads (a few small files)."""
    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def with_layer_index(client: MlflowClient, frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``layer_index`` and ``layer_name`` to runs with one layer in scope (layer != all).

    The index order comes from the ``layers.csv`` of one run of the same model. Without one it is
    not known (the metrics' names do not give it: sorted, ``features.10`` would precede ``features.3``),
    so that is an error naming the fix.
    """
    frame = frame.copy()
    frame["layer_index"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["layer_name"] = pd.Series([None] * len(frame), dtype=object, index=frame.index)
    for model, group in frame[frame["layer"] != "all"].groupby("model"):
        names = None
        for run_id in frame.loc[frame["model"] == model, "run_id"]:
            names = layer_names(client, run_id)
            if names:
                break
        if not names:
            raise AnalysisError(
                f"no run of {model} has its layers.csv artifact, so the order of its layers (the per-layer "
                "figure's x axis) is unknown: point the analysis at the artifact store the runs were logged "
                f"with, or rerun one job of the model (python -m pipeline model={model} force=true)"
            )
        for index, layer in group["layer"].items():
            if layer in names:
                position = names.index(layer)
            elif layer.lstrip("-").isdigit() and -len(names) <= int(layer) < len(names):
                position = int(layer) % len(names)
            else:
                raise AnalysisError(f"run {frame.at[index, 'run_id']}: layer={layer!r} is not a layer of {model}")
            frame.at[index, "layer_index"] = position
            frame.at[index, "layer_name"] = names[position]
    return frame


def display_name(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


def labels(frame: pd.DataFrame) -> pd.Series:
    """The model's display name, plus whichever of data/limit/seed/split vary within that model
    (the data set also whenever the runs span more than one)."""
    out = pd.Series(index=frame.index, dtype=object)
    several_sets = frame["data"].nunique() > 1
    for model, group in frame.groupby("model", sort=False):
        varying = [
            k for k in MODEL_SETTING[1:]
            if group[k].nunique(dropna=False) > 1 or (k == "data" and several_sets)
        ]  # fmt: skip
        for index, row in group.iterrows():
            parts = [_qualifier(k, row[k]) for k in varying]
            out[index] = display_name(model) + (f" ({', '.join(parts)})" if parts else "")
    return out


def model_rank(model: str) -> tuple[int, str]:
    """Paper order (AlexNet, VGG-16, ResNet-18, and their twins), then by name."""
    base = model.split("_")[0]
    return (PAPER_ORDER.index(base) if base in PAPER_ORDER else len(PAPER_ORDER), model)


def _qualifier(key: str, value: object) -> str:
    if key == "limit":
        return "all images" if pd.isna(value) else f"{value} images"
    if key == "split":
        return f"{value} split"
    return str(value) if key == "data" else f"{key} {value}"


KIND_ORDER = PREDICTOR_KINDS  # the summary's order; kinds it does not know after


def _order(column: pd.Series) -> pd.Series:
    if column.name == "model":
        return column.map(lambda m: f"{model_rank(m)[0]:03d}{m}")
    if column.name == "layer":
        return column.map(lambda v: (0, 0, "") if v == "all" else (1, int(v), "") if v.isdigit() else (2, 0, v))
    if column.name == "predictor":
        return column.map(lambda k: f"{KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER):02d}{k}")
    if column.name == "pattern":
        return column.map(lambda p: (p != "diagonal", p))  # the paper's pattern first
    return column
