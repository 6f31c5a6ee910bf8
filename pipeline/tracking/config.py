"""``tracking:``: where runs are recorded (conf/tracking/*.yaml); the analysis stage reads the same store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TrackingConfig:
    """Where runs are recorded; the analysis stage reads the same keys."""

    uri: str = "sqlite:///outputs/mlflow.db"  # as conf/tracking/local.yaml (tests/job/test_config.py checks)
    experiment: str = "cross-neuron-prediction"
    artifacts: str = "outputs/mlartifacts"  # artifact root of experiments this project creates
    parent: Optional[str] = None  # a run id: a multirun's parent run is nested under it (a search's grid)

    def __post_init__(self) -> None:
        if "://" not in self.uri:  # a plain path would be MLflow's refused file store
            raise ValueError(
                f"tracking.uri={self.uri!r} is not a tracking URI: use sqlite:///PATH.db (the default store), "
                "or http://HOST:PORT of an `mlflow server`"
            )
        if not self.experiment.strip():
            raise ValueError("tracking.experiment must be a name, e.g. tracking.experiment=cross-neuron-prediction")
