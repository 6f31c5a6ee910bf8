"""The analysis run: figures and summary logged as artifacts of one MLflow run tagged ``analysis=true``.

The run sits in the same experiment as the job runs (the loader leaves it out again); its params are
the filters and the best-window threshold, and it ends FINISHED only once every artifact is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from analysis.load import ANALYSIS_TAG
from pipeline.tracking.client import git_commit


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
