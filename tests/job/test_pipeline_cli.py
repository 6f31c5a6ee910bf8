"""End-to-end: the real CLI in a subprocess, read back with MLflow's client."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.networks.data import find_fashion_mnist, read_fashion_mnist
from pipeline.tracking.config import TrackingConfig
from pipeline.tracking.tracker import Tracker
from tests.cli import EXPERIMENT, REPO, client, run_pipeline, runs, store_args
from tests.conftest import HAVE_KERNEL

CONTRACT_METRICS = {
    "top1", "top5", "sparsity", "mac_saving", "images", "model_conv_macs_per_image",
    *(f"zero_window/{s}" for s in range(1, 6)),
    *(f"frac/{k}" for k in ("pred_hit", "pred_miss", "zero_diag", "others", "miss_mass")),
    *(f"skip/g{g}" for g in (1, 2, 4, 8, 16, 32)), *(f"zero_window_corr/{s}" for s in (2, 3, 4, 5)),
    "predictor_mac_cost", "net_mac_saving",
}  # fmt: skip
CSV_COLUMNS = [  # contract sections 5, 7-9
    "index", "name", "convs", "macs_per_act", "acts", "zeros", "zero_diag", "pred_hit", "pred_miss",
    "others", "macs_saved", *(f"zero_windows_{s}" for s in range(1, 6)), *(f"windows_{s}" for s in range(1, 6)),
    "predictor", "window", "pattern", "threshold", "group", "mass", "miss_mass", "predictor_macs",
    *(f"skip_cells_g{g}" for g in (1, 2, 4, 8, 16, 32)), *(f"zero_windows_indep_{s}" for s in (2, 3, 4, 5)),
]  # fmt: skip
LIMIT = "data.limit=300"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The default 5-window sweep (300 images), then the same command again."""
    tmp = tmp_path_factory.mktemp("sweep")
    first = run_pipeline(tmp, "-m", "window=1,2,3,4,5", LIMIT)
    second = run_pipeline(tmp, "-m", "window=1,2,3,4,5", LIMIT, "hydra.sweep.dir=" + str(tmp / "again"))
    return tmp, first, second


def test_sweep_leaves_five_finished_children_under_one_parent(sweep):
    tmp, first, _ = sweep
    assert first.returncode == 0, first.stderr
    everything = runs(tmp, include_parents=True)
    parents = [r for r in everything if r.data.tags.get("sweep.parent") == "true"]
    children = [r for r in everything if r.data.tags.get("sweep.parent") != "true"]
    assert len(children) == 5
    assert all(r.info.status == "FINISHED" for r in children)
    assert parents[-1].info.status == "FINISHED"
    first_parent = min(parents, key=lambda r: r.info.start_time)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {first_parent.info.run_id}
    assert sorted(int(r.data.params["window"]) for r in children) == [1, 2, 3, 4, 5]
    assert first.stdout.count("alexnet_fmnist window=") == 5
    for key in ("layer=all", " mac_saving=", "net_mac_saving=", "top1=", "top5=", "predictor=tile(diagonal)"):
        assert first.stdout.count(key) == 5


def test_each_run_has_every_contract_metric_param_and_artifact(sweep):
    tmp, _, _ = sweep
    _, labels = read_fashion_mnist(find_fashion_mnist(None), "test")
    mlflow_client = client(tmp)
    for run in runs(tmp):
        metrics = run.data.metrics
        assert CONTRACT_METRICS <= set(metrics)
        assert metrics["images"] == 300
        for key in ("model", "data", "window", "layer", "limit", "seed"):
            assert key in run.data.params
        assert run.data.params["model"] == "alexnet_fmnist" and run.data.params["limit"] == "300"
        for tag in ("git_commit", "torch_version", "project_version", "sweep", "config_hash"):
            assert run.data.tags.get(tag)
        assert run.data.tags["counting_backend"] == ("kernel" if HAVE_KERNEL else "torch")  # this CPU run's path
        artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        assert {"layers.csv", "config.yaml", "overrides.yaml"} <= artifacts
        path = mlflow_client.download_artifacts(run.info.run_id, "layers.csv", str(tmp / run.info.run_id))
        rows = list(csv.DictReader(open(path)))
        assert list(rows[0]) == CSV_COLUMNS
        assert [r["name"] for r in rows] == ["features.0", "features.3", "features.6", "features.8", "features.10"]
        # the metrics are the csv's sums (contract section 5)
        acts = sum(int(r["acts"]) for r in rows)
        assert metrics["sparsity"] == pytest.approx(sum(int(r["zeros"]) for r in rows) / acts, rel=1e-12)
        saved = sum(int(r["macs_saved"]) for r in rows)
        assert metrics["mac_saving"] == pytest.approx(saved / (metrics["model_conv_macs_per_image"] * 300), rel=1e-12)
        # section 10: skip/g1 is mac_saving exactly; a wider group never keeps more; skip/g from the csv
        assert metrics["skip/g1"] == metrics["mac_saving"]
        assert all(metrics[f"skip/g{2 * g}"] <= metrics[f"skip/g{g}"] for g in (1, 2, 4, 8, 16))
        conv_macs = metrics["model_conv_macs_per_image"] * 300
        for g in (8, 32):
            skipped = sum(int(r[f"skip_cells_g{g}"]) * int(r["macs_per_act"]) for r in rows)
            assert metrics[f"skip/g{g}"] == pytest.approx(skipped / conv_macs, rel=1e-12)
        observed = sum(int(r["zero_windows_2"]) for r in rows)
        assert metrics["zero_window_corr/2"] == pytest.approx(
            observed / sum(float(r["zero_windows_indep_2"]) for r in rows), rel=1e-9
        )
        for r in rows:
            assert int(r["others"]) == int(r["acts"]) - int(r["zero_diag"]) - int(r["pred_hit"]) - int(r["pred_miss"])
            assert metrics[f"layer/{r['name']}/sparsity"] == pytest.approx(int(r["zeros"]) / int(r["acts"]))
        window = int(run.data.params["window"])
        assert (saved == 0) == (window == 1)
        # predictions.csv (contract section 11): each evaluated image in order, its index in the test split,
        # its true label; it reproduces the run's top-1 and top-5
        assert "predictions.csv" in artifacts
        path = mlflow_client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp / run.info.run_id))
        outcome = list(csv.DictReader(open(path)))
        assert list(outcome[0]) == ["image", "label", "pred", "top5"]
        assert [int(r["image"]) for r in outcome] == [i * 10000 // 300 for i in range(300)]
        assert [int(r["label"]) for r in outcome] == [int(labels[i * 10000 // 300]) for i in range(300)]
        assert sum(r["pred"] == r["label"] for r in outcome) / 300 == metrics["top1"]
        assert sum(int(r["top5"]) for r in outcome) / 300 == metrics["top5"]


def test_rerun_skips_every_job_and_says_so(sweep):
    tmp, _, second = sweep
    assert second.returncode == 0, second.stderr
    assert "skipped 5 job(s)" in second.stdout
    assert len(runs(tmp)) == 5


def test_force_reruns_a_finished_job(tmp_path):
    assert run_pipeline(tmp_path, "window=2", "data.limit=50").returncode == 0
    again = run_pipeline(tmp_path, "window=2", "data.limit=50")
    assert "skipped" in again.stdout and len(runs(tmp_path)) == 1
    forced = run_pipeline(tmp_path, "window=2", "data.limit=50", "force=true")
    assert forced.returncode == 0 and len(runs(tmp_path)) == 2


def test_joblib_launcher_with_two_workers_on_a_new_store(tmp_path):
    result = run_pipeline(tmp_path, "-m", "launcher=joblib", "window=1,2,3,4,5", "data.limit=100")
    assert result.returncode == 0, result.stderr
    children = runs(tmp_path)
    assert len(children) == 5 and all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
    assert "n_jobs=2" in result.stdout or "Joblib" in result.stdout or "joblib" in result.stdout.lower()


BAD_INPUTS = [
    (["window=0"], "window must be an integer >= 1"),
    (["window=-1"], "window must be an integer >= 1"),
    (["window=abc"], "window"),
    (["model=nosuchmodel"], "alexnet_fmnist"),
    (["data=nosuchdata"], "fashion_mnist"),
    (["layer=features.99"], "features.3"),
    (["layer=7"], "out of range"),
    (["data.limit=0"], "data.limit must be a positive"),
    (["data.limit=-5"], "data.limit must be a positive"),
    (["data=imagenet", "model=alexnet", "model.weights=null", "data.root=/nonexistent"], "data.root"),
    (["data=fashion_mnist", "data.root=/nonexistent", "data.download=false"], "data.root=FOLDER"),
    (["device=tpu"], "device must be one of"),
    (["objective=accuracy"], "objective='accuracy' is not a run metric: use one of top1, top5"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_clear_message_and_no_finished_run(tmp_path, overrides, message, monkeypatch):
    env = {}
    if "data.download=false" in overrides:  # hide Debian's copy: this checks the missing-data message
        env["CNP_FASHION_MNIST_SYSTEM_DIR"] = str(tmp_path / "none")
    result = run_pipeline(tmp_path, *overrides, env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not [r for r in runs(tmp_path) if r.info.status == "FINISHED"]


def test_missing_pretrained_weights_names_the_file_and_folder(tmp_path):
    result = run_pipeline(
        tmp_path, "model=alexnet", "data=synthetic", "data.limit=2", env={"TORCH_HOME": str(tmp_path / "torch")}
    )
    assert result.returncode != 0
    assert "alexnet-owt-7be5be79.pth" in result.stderr and str(tmp_path / "torch") in result.stderr
    assert not runs(tmp_path)


def test_a_failed_job_does_not_stop_the_others(tmp_path):
    result = run_pipeline(tmp_path, "-m", "layer=0,9,1", "window=2", "data.limit=50")
    assert result.returncode != 0
    finished = runs(tmp_path)
    assert sorted(r.data.params["layer"] for r in finished) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in finished)
    parent = [r for r in runs(tmp_path, include_parents=True) if r.data.tags.get("sweep.parent") == "true"]
    assert parent[0].info.status == "FAILED"
    assert "1 failed" in result.stdout


def test_sigterm_marks_the_open_run_killed(tmp_path):
    # the store exists before the job starts, so polling it here never races on its schema
    Tracker(
        TrackingConfig(
            uri=f"sqlite:///{tmp_path}/mlflow.db", experiment=EXPERIMENT, artifacts=str(tmp_path / "artifacts")
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "pipeline", "model=vgg16_fmnist", "model.checkpoint=null", "data=synthetic",
        "data.image_size=[1,28,28]", "data.size=200000", "data.batch_size=50", "data.num_classes=10",
        *store_args(tmp_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not [r for r in runs(tmp_path) if r.info.status == "RUNNING"]:
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    statuses = [r.info.status for r in runs(tmp_path)]
    assert statuses == ["KILLED"], err


def test_predictor_kinds_end_to_end(tmp_path):
    # contract section 7: the oracle leaves accuracy exactly at the baseline's and predicts every zero;
    # the tile oracle never misses; a per-layer table is applied and recorded layer by layer
    result = run_pipeline(
        tmp_path, "-m", "predictor=none,oracle,tile_oracle", "window=3", "data.limit=200", "seed=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "predictor oracle cuts no tiles: runs as window=1" in result.stdout
    table = run_pipeline(tmp_path, "window=3", "+predictor.layers={0: off}", "+predictor.layers.2.window=2",
                         "data.limit=200", "seed=1")  # fmt: skip
    assert table.returncode == 0, table.stderr
    mlflow_client = client(tmp_path)
    found = {}
    for run in runs(tmp_path):
        path = mlflow_client.download_artifacts(run.info.run_id, "layers.csv", str(tmp_path / run.info.run_id))
        found[run.data.params["predictor"], run.data.params["predictor.layers"]] = (
            run,
            list(csv.DictReader(open(path))),
        )
    none, _ = found["none", "{}"]
    oracle, oracle_rows = found["oracle", "{}"]
    tile_oracle, tile_oracle_rows = found["tile_oracle", "{}"]
    assert none.data.tags["baseline"] == "true" and oracle.data.tags["baseline"] == "false"
    assert (
        oracle.data.metrics["top1"] == none.data.metrics["top1"]
        and oracle.data.metrics["top5"] == none.data.metrics["top5"]
    )
    assert oracle.data.params["window"] == "1" and tile_oracle.data.params["window"] == "3"
    for row in oracle_rows:
        assert int(row["pred_hit"]) == int(row["zeros"]) and int(row["pred_miss"]) == 0 == int(row["zero_diag"])
        assert (row["predictor"], row["window"], row["pattern"], row["threshold"]) == ("oracle", "", "", "")
    assert oracle.data.metrics["mac_saving"] == pytest.approx(
        sum(int(r["zeros"]) * int(r["macs_per_act"]) for r in oracle_rows)
        / (oracle.data.metrics["model_conv_macs_per_image"] * 200)
    )
    assert all(int(r["pred_miss"]) == 0 for r in tile_oracle_rows) and tile_oracle.data.metrics["frac/miss_mass"] == 0
    assert tile_oracle.data.params["predictor.pattern"] == "diagonal"
    _, rows = found["tile", '{"0":{"kind":"none"},"2":{"window":2}}']
    settings = [(r["predictor"], r["window"], r["pattern"], r["threshold"]) for r in rows]
    assert settings == [("none", "", "", ""), ("tile", "3", "diagonal", "0.0"), ("tile", "2", "diagonal", "0.0"),
                        ("tile", "3", "diagonal", "0.0"), ("tile", "3", "diagonal", "0.0")]  # fmt: skip
    assert int(rows[0]["pred_hit"]) + int(rows[0]["pred_miss"]) + int(rows[0]["zero_diag"]) == 0


def test_a_job_that_predicts_nothing_has_one_identity_whatever_the_layer(tmp_path):
    # issue 14: a layer sweep runs its baseline once; job lines name the layer
    result = run_pipeline(tmp_path, "-m", "window=1,2", "layer=0,3", "data.limit=50")
    assert result.returncode == 0, result.stderr
    assert "nothing is predicted, so layer=3 does not matter: runs as layer=all" in result.stdout
    assert "window=2 layer=3 (features.8) predictor=tile(diagonal):" in result.stdout
    assert "3 finished, 1 skipped" in result.stdout
    found = runs(tmp_path)
    assert sorted((r.data.params["window"], r.data.params["layer"]) for r in found) == [
        ("1", "all"), ("2", "0"), ("2", "3"),
    ]  # fmt: skip


@pytest.mark.parametrize("objective", ["net_mac_saving", "top1", None])
def test_a_job_returns_its_objective_metric_to_the_sweeper(tmp_path, objective):
    """What ``python -m pipeline`` hands a Hydra sweeper (Optuna's, say) is the run's ``objective`` metric,
    as recorded, for a job that runs and for one skipped as done; null returns nothing."""
    from hydra import compose, initialize_config_dir

    from pipeline.__main__ import main
    from pipeline.job.config import register

    register()
    overrides = [*store_args(tmp_path)[:3], "window=2", "data.limit=40", f"objective={objective or 'null'}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    returned = [main.__wrapped__(cfg), main.__wrapped__(cfg)]  # the second is skipped: identical FINISHED run
    (run,) = runs(tmp_path)
    expected = None if objective is None else run.data.metrics[objective]
    assert returned == [expected, expected]
    assert objective is None or 0 < expected < 1
