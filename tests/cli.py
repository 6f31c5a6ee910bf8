"""Drive the real ``python -m pipeline`` CLI in a subprocess against a store under a temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "cnp-test"


def store_args(tmp: Path) -> list[str]:
    """Overrides that keep every file of a run under ``tmp`` (never the repo's outputs/)."""
    return [
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifacts={tmp}/artifacts",
        f"tracking.experiment={EXPERIMENT}",
        f"hydra.run.dir={tmp}/hydra/run",
        f"hydra.sweep.dir={tmp}/hydra/sweep",
    ]


def run_pipeline(tmp: Path, *args: str, timeout: float = 600, env: dict | None = None, module: str = "pipeline"):
    """``python -m pipeline ARGS`` with the store in ``tmp``; returns the CompletedProcess."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", module, *args, *store_args(tmp)]
    return subprocess.run(command, cwd=tmp, env=environment, capture_output=True, text=True, timeout=timeout)


def client(tmp: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp}/mlflow.db")


def runs(tmp: Path, include_parents: bool = False) -> list:
    """Every run of the test experiment (empty when the store or experiment does not exist)."""
    if not (tmp / "mlflow.db").exists():
        return []
    mlflow_client = client(tmp)
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    found = mlflow_client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in found if include_parents or r.data.tags.get("sweep.parent") != "true"]
