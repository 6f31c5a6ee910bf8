"""Job runs from the MLflow store as one tidy DataFrame: one row per run, params and metrics as columns.

Only FINISHED job runs count: sweep parents (tag ``sweep.parent=true``), analysis runs (tag
``analysis=true``) and runs without the job params are left out. The filters (sweep, model, data)
apply first; then, when one configuration was run more than once (same ``config_hash`` tag), the
run that started last counts. Runs of different configurations that still share model, data,
limit, seed, predictor, window and layer (say, another checkpoint) cannot share a bar: the latest
counts there too, with a warning.

Columns: ``run_id, start_time, config_hash, sweep, model, data, window (int), layer (str: all, a
name or an index), limit (Int64, <NA> = every image), seed (int), predictor, label`` (the model's
display name, qualified by data/limit/seed/predictor where one model has runs with several of them,
and by the data set whenever the runs span several),
then every metric under its MLflow key (``top1``, ``frac/pred_hit``, ``layer/<name>/mac_saving``, ...).
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient

from analysis.config import AnalysisConfig, AnalysisError
from pipeline.store import StoreError, check_store

PARENT_TAG = "sweep.parent"
ANALYSIS_TAG = "analysis"
CONFIG_HASH_TAG = "config_hash"
SWEEP_TAG = "sweep"
JOB_PARAMS = ("model", "data", "window", "layer", "limit", "seed", "predictor")
SETTING = ("model", "data", "limit", "seed", "predictor")  # one curve of a figure: all but window and layer
PAPER_ORDER = ("alexnet", "vgg16", "resnet18")
DISPLAY_NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "resnet18": "ResNet-18"}
DEFAULT_URI = "sqlite:///outputs/mlflow.db"  # conf/analysis.yaml; only used to shorten hints
DEFAULT_EXPERIMENT = "cross-neuron-prediction"


def resolve_uri(uri: str) -> str:
    """A tracking URI with a relative SQLite path made absolute (as the pipeline resolves it)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    if "://" not in uri:
        raise AnalysisError(
            f"tracking.uri={uri!r} is not a tracking URI: use sqlite:///PATH.db (the pipeline's store) "
            "or http://HOST:PORT of an `mlflow server`"
        )
    return uri


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
    found: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=1000, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


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
    except ValueError:
        print(f"warning: run {run.info.run_id} has unreadable params {dict(params)}; left out", file=sys.stderr)
        return None
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
        "predictor": params["predictor"],
    }
    row.update(run.data.metrics)
    return row


def tidy(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Rows -> DataFrame with typed columns and the latest run per config_hash."""
    frame = pd.DataFrame(list(rows))
    frame["limit"] = frame["limit"].astype("Int64")
    frame = frame.sort_values("start_time", kind="stable")
    frame = frame.drop_duplicates("config_hash", keep="last")
    repeated = frame.duplicated([*SETTING, "window", "layer"], keep="last")
    if repeated.any():
        print(
            f"warning: {int(repeated.sum())} run(s) repeat a model/data/limit/seed/window/layer of a later run "
            "with a different config (e.g. another checkpoint); the latest counts",
            file=sys.stderr,
        )
        frame = frame[~repeated]
    frame = frame.sort_values(["model", "data", "limit", "seed", "predictor", "window", "layer"], key=_order)
    frame.insert(frame.columns.get_loc("predictor") + 1, "label", labels(frame))
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


def layer_names(client: MlflowClient, run_id: str) -> list[str] | None:
    """The predictable layers of a run in index order (its ``layers.csv`` artifact), or None."""
    with tempfile.TemporaryDirectory() as folder, _quiet_downloads():
        try:
            path = client.download_artifacts(run_id, "layers.csv", folder)
        except Exception:  # no artifact (or no artifact store): the caller falls back
            return None
        with open(path, newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: int(r["index"]))
    return [r["name"] for r in rows]


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

    The index order comes from the ``layers.csv`` of one run of the same model; without one, the
    layer names in that model's ``layer/<name>/...`` metrics are taken in sorted order.
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
            columns = [c for c in frame.columns if c.startswith("layer/") and c.endswith("/sparsity")]
            named = frame.loc[frame["model"] == model, columns].dropna(axis=1, how="all").columns
            names = sorted(c[len("layer/") : -len("/sparsity")] for c in named)
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
    """The model's display name, plus whichever of data/limit/seed/predictor vary within that model
    (the data set also whenever the runs span more than one)."""
    out = pd.Series(index=frame.index, dtype=object)
    several_sets = frame["data"].nunique() > 1
    for model, group in frame.groupby("model", sort=False):
        varying = [
            k for k in ("data", "limit", "seed", "predictor")
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
    return str(value) if key == "data" else f"{key} {value}"


def _order(column: pd.Series) -> pd.Series:
    if column.name == "model":
        return column.map(lambda m: f"{model_rank(m)[0]:03d}{m}")
    if column.name == "layer":
        return column.map(lambda v: (0, 0, "") if v == "all" else (1, int(v), "") if v.isdigit() else (2, 0, v))
    return column
