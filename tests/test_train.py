"""The training entry point: seeded (same seed, same weights), logs one FINISHED MLflow run."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from pipeline.train import main


def test_training_is_seeded_and_logged(tmp_path):
    common = ["--model", "alexnet_fmnist", "--epochs", "1", "--train-limit", "512", "--batch-size", "128"]
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--artifacts", str(tmp_path / "art")]
    main([*common, "--out", str(tmp_path / "a.pt"), *store])
    main([*common, "--out", str(tmp_path / "b.pt"), "--no-mlflow"])
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    (run,) = client.search_runs([client.get_experiment_by_name("fmnist-training").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "0" and "final_test_top1" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["a.pt"]
