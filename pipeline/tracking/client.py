"""What every writer and reader of the MLflow store shares: the tracking URI as MLflow gets it, the
experiment (created with the project's artifact location), every run of a search (all pages), and the
checkout's commit a run is tagged with. The pipeline's tracker and claims and the analysis use these."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.tracking.store import SQLITE_PREFIX, StoreError

PAGE = 1000  # runs per search request


def resolve_uri(uri: str) -> str:
    """A tracking URI with a relative SQLite path made absolute (its folder is made by check_store)."""
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        return SQLITE_PREFIX + str(Path(uri[len(SQLITE_PREFIX) :]).resolve())
    if "://" not in uri:  # a plain folder would be MLflow's refused file store
        raise StoreError(
            f"tracking.uri={uri!r} is not a tracking URI: use sqlite:///PATH.db (the default store), "
            "or http://HOST:PORT of an `mlflow server`"
        )
    return uri


def ensure_experiment(client: MlflowClient, uri: str, name: str, artifacts: str) -> str:
    """The experiment's id, creating it on first use; in a SQLite store its artifacts go to
    ``artifacts/<name>`` (a server's experiments use the server's artifact root)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (Path(artifacts).resolve() / name).as_uri() if uri.startswith("sqlite:") else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created by a concurrent process in the meantime
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def search_all(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list[Run]:
    """Every run of the experiment that matches ``filter_string`` (all pages)."""
    found: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=PAGE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def git_commit() -> str:
    """The project checkout's commit (with -dirty when it has local changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
