"""The analysis run: figures and summary logged as artifacts of one MLflow run tagged ``analysis=true``.

The run sits in the same experiment as the job runs (the loader leaves it out again); its params are
the filters and the best-window threshold, and it ends FINISHED only once every artifact is stored.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from analysis.load import ANALYSIS_TAG


def ensure_experiment(client: MlflowClient, uri: str, name: str, artifacts: str) -> str:
    """The experiment's id, creating it with the pipeline's artifact location when it is missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (Path(artifacts).resolve() / name).as_uri() if uri.startswith("sqlite:") else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently in the meantime
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_analysis_run(
    client: MlflowClient,
    experiment_id: str,
    params: Mapping[str, object],
    artifacts: Mapping[str, Sequence[Path]],
) -> str:
    """One FINISHED run with ``params`` and the files of ``artifacts`` (artifact path -> files)."""
    run = client.create_run(
        experiment_id, run_name="analysis", tags={ANALYSIS_TAG: "true", "git_commit": git_commit()}
    )
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, "null" if v is None else str(v)[:6000]) for k, v in params.items()])
        for artifact_path, files in artifacts.items():
            for path in files:
                client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def git_commit() -> str:
    """The checkout's commit (with -dirty for local changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
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
