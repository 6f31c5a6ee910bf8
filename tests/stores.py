"""Stores of runs with known values, written with MlflowClient the way the pipeline writes them (no
model is evaluated): what the analysis tests and the bad-input tests read."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

EXPERIMENT = "cnp-analysis-test"
T0 = 1_700_000_000_000  # ms


def metrics(window: int, top1: float, top5: float, mac_saving: float) -> dict[str, float]:
    """A full metric set; the rates are simple functions of the window so they are known too."""
    sparsity = 0.70 - 0.01 * window
    zero_diag, hit, miss = 0.3 / window, 0.05 * (window - 1), 0.01 * (window - 1)
    values = {
        "top1": top1, "top5": top5, "mac_saving": mac_saving, "sparsity": sparsity,
        "frac/zero_diag": zero_diag, "frac/pred_hit": hit, "frac/pred_miss": miss,
        "frac/others": 1 - zero_diag - hit - miss, "images": 1000, "model_conv_macs_per_image": 655566528,
        "layer/features.0/mac_saving": mac_saving / 2, "layer/features.0/sparsity": sparsity,
    }  # fmt: skip
    values.update({f"zero_window/{s}": sparsity * 0.7 ** (s - 1) for s in range(1, 6)})
    # contract section 10: what survives when g channels agree halves with every doubling of g
    values.update({f"skip/g{g}": mac_saving / g for g in (1, 2, 4, 8, 16, 32)})
    return values


class Store:
    """Writes runs the way the pipeline does (params, tags, metrics, status) with chosen start times."""

    def __init__(self, folder: Path, experiment: str = EXPERIMENT) -> None:
        self.uri = f"sqlite:///{folder}/mlflow.db"
        self.artifacts = folder / "artifacts"
        self.client = MlflowClient(self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=(self.artifacts / experiment).as_uri()
        )  # fmt: skip
        self.clock = T0

    def job(self, model: str, data: str, limit: int | None, window: int, values: dict[str, float],
            layer: str = "all", status: str = "FINISHED", start: int | None = None,
            config_hash: str | None = None, tags: dict[str, str] | None = None,
            predictor: dict[str, object] | None = None, extra: dict[str, object] | None = None) -> str:  # fmt: skip
        """A job run; ``predictor`` None writes the params of runs recorded before the predictor
        family (``predictor=diagonal``), else the kind and its ``predictor.*`` params; ``extra``: more params."""
        self.clock += 1000
        params = {"model": model, "data": data, "window": window, "layer": layer,
                  "limit": "null" if limit is None else limit, "seed": 0, "predictor": "diagonal",
                  "device": "cpu", "model.name": model, "data.name": data}  # fmt: skip
        if predictor is not None:
            params.update({"predictor": predictor["kind"], "predictor.layers": "{}"})
            params.update({f"predictor.{k}": v for k, v in predictor.items() if k != "kind" and v is not None})
        params.update(extra or {})
        all_tags = {"config_hash": config_hash or f"{model}-{data}-{limit}-{window}-{layer}",
                    "sweep": "/sweeps/a", "git_commit": "abc", **(tags or {})}  # fmt: skip
        created = self.client.create_run(self.experiment_id, start_time=start or self.clock, tags=all_tags)
        run_id = created.info.run_id
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), self.clock, 0) for k, v in values.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        if status != "RUNNING":
            self.client.set_terminated(run_id, status)
        return run_id

    def predictions(self, run_id: str, right: list[bool], labels: list[int] | None = None) -> None:
        """The run's predictions.csv: image i labelled ``labels[i]`` (default 0), predicted right when
        ``right[i]`` (else the next class)."""
        labels = labels or [0] * len(right)
        rows = "".join(
            f"{i},{y},{y if ok else y + 1},1\n" for i, (y, ok) in enumerate(zip(labels, right, strict=True))
        )
        self.client.log_text(run_id, "image,label,pred,top5\n" + rows, "predictions.csv")
