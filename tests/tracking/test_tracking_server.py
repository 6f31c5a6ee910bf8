"""Scaling out for real: PostgreSQL, an ``mlflow server`` backed by it, Hydra's joblib and submitit launchers.

A real PostgreSQL server (Debian's, started by ``tests/services.py`` in a temporary folder on a loopback
port) backs a real ``mlflow server`` on 127.0.0.1 behind MLflow's basic-auth app, with artifacts served
through it. Against it run the same small sweep as on SQLite, split over two launchers: windows 1 and 2
with ``launcher=joblib`` (two worker processes; the credentials in the tracking URI), window 3 with
``launcher=submitit_local`` (submitit's pickled jobs in processes of their own, the SLURM code path; the
credentials in ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``). Then ``python -m analysis`` against each store.
The runs (params, metrics, ``layers.csv``) and the analysis outputs (figures as PNG, summary) must equal
those of the SQLite sweep, and no password may be found anywhere in a store (database dump, artifacts,
the auth user store). A last test writes a job straight into PostgreSQL with the password in the URI.

Every thread count is pinned to 1 (``OMP_NUM_THREADS``): joblib's workers get 1 thread on 2 cores
anyway, and the comparison is exact. About 60 s on 2 cores. Without PostgreSQL or the test extras the
module skips, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.cli import REPO
from tests.services import missing_postgres, postgres_server, tracking_server

EXPERIMENT = "cnp-scale-test"
COMMON = ["model=alexnet_fmnist", "data.limit=200", f"tracking.experiment={EXPERIMENT}"]
WINDOWS = ["1", "2", "3"]
VOLATILE_METRICS = {"eval_seconds"}  # wall time: the only number allowed to differ
RUN_COLUMNS = ("run_id", "start_time", "sweep")  # CSV columns naming a run of one store (suffixes)
DB_PASSWORD = "db-" + secrets.token_hex(10)
ADMIN_PASSWORD = "admin-" + secrets.token_hex(10)


def _missing() -> str | None:
    reason = missing_postgres()
    for module in ("psycopg", "flask_wtf", "hydra_plugins.hydra_submitit_launcher"):
        try:
            __import__(module)
        except ImportError:
            reason = reason or f"python module {module} missing: pip install -e '.[test]'"
    return reason


_reason = _missing()
if _reason and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the scale-out tests: {_reason}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_reason is not None, reason=_reason or "")]


def cli(cwd: Path, module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` of this checkout in ``cwd``; fails the test with its output on an error."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"python -m {module} {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result


def job_runs(client: MlflowClient) -> dict[str, object]:
    """The FINISHED job runs of the experiment by window (no sweep parents, no analysis runs)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    jobs = [r for r in found if r.data.tags.get("sweep.parent") != "true" and r.data.tags.get("analysis") != "true"]
    assert all(r.info.status == "FINISHED" for r in jobs)
    by_window = {r.data.params["window"]: r for r in jobs}
    assert len(by_window) == len(jobs), "one run per window"
    return by_window


def table(path: Path) -> list[dict[str, str]]:
    """A CSV's rows without the columns that name a run or a time (the store's own ids)."""
    rows = list(csv.DictReader(path.open()))
    return [{k: v for k, v in row.items() if not k.endswith(RUN_COLUMNS)} for row in rows]


def artifact_text(client: MlflowClient, run_id: str, path: str, folder: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """The reference: the sweep with the basic launcher on SQLite, and its analysis."""
    tmp = tmp_path_factory.mktemp("sqlite")
    uri = f"sqlite:///{tmp}/mlflow.db"
    store = [f"tracking.uri={uri}", f"tracking.artifacts={tmp}/artifacts"]
    cli(tmp, "pipeline", "-m", f"window={','.join(WINDOWS)}", *COMMON, *store, f"hydra.sweep.dir={tmp}/sweep")
    cli(tmp, "analysis", *store, f"tracking.experiment={EXPERIMENT}", f"out={tmp}/figures")
    return {"client": MlflowClient(uri), "figures": tmp / "figures", "tmp": tmp}


@pytest.fixture(scope="module")
def postgres():
    with postgres_server(password=DB_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def served(postgres, tmp_path_factory):
    """The same sweep through the tracking server: joblib (windows 1, 2) and submitit_local (window 3)."""
    tmp = tmp_path_factory.mktemp("served")
    postgres.create_database("mlflow")
    with tracking_server(postgres.uri("mlflow"), tmp / "server", postgres.env, ADMIN_PASSWORD) as server:
        host = server.url.removeprefix("http://")
        with_password = f"tracking.uri=http://admin:{ADMIN_PASSWORD}@{host}"  # credentials in the URI
        joblib = cli(tmp, "pipeline", "-m", "launcher=joblib", "window=1,2", *COMMON, with_password,
                     f"hydra.sweep.dir={tmp}/joblib")  # fmt: skip
        submitit = cli(tmp, "pipeline", "-m", "launcher=submitit_local", "window=3", *COMMON,
                       f"tracking.uri={server.url}", f"hydra.sweep.dir={tmp}/submitit",
                       env=server.client_env)  # fmt: skip
        analysis = cli(tmp, "analysis", f"tracking.uri={server.url}", f"tracking.experiment={EXPERIMENT}",
                       f"out={tmp}/figures", env=server.client_env)  # fmt: skip
        os.environ.update(server.client_env)  # this process reads the store through the server too
        try:
            yield {"client": MlflowClient(server.url), "server": server, "figures": tmp / "figures", "tmp": tmp,
                   "joblib": joblib, "submitit": submitit, "analysis": analysis}  # fmt: skip
        finally:
            for key in server.client_env:
                os.environ.pop(key, None)


def test_server_runs_equal_the_sqlite_runs(served, sqlite_store, tmp_path):
    reference, through_server = job_runs(sqlite_store["client"]), job_runs(served["client"])
    assert sorted(reference) == sorted(through_server) == WINDOWS
    for window in WINDOWS:
        expected, actual = reference[window], through_server[window]
        assert actual.data.params == expected.data.params
        assert set(actual.data.metrics) == set(expected.data.metrics)
        for key, value in expected.data.metrics.items():
            if key not in VOLATILE_METRICS:
                assert actual.data.metrics[key] == value, f"window {window}: {key}"
        assert actual.data.tags["config_hash"] == expected.data.tags["config_hash"]
        for name in ("layers.csv", "config.yaml"):
            left = artifact_text(sqlite_store["client"], expected.info.run_id, name, tmp_path / "sqlite" / window)
            right = artifact_text(served["client"], actual.info.run_id, name, tmp_path / "served" / window)
            if name == "layers.csv":
                assert right == left and len(list(csv.DictReader(io.StringIO(right)))) == 5
            else:  # the same config but for where it was tracked
                left_config, right_config = yaml.safe_load(left), yaml.safe_load(right)
                assert left_config.pop("tracking")["uri"] != right_config.pop("tracking")["uri"]
                assert right_config == left_config
    assert through_server["2"].data.metrics["mac_saving"] > 0  # a real measurement, not an empty one


def test_each_launcher_ran_its_jobs_under_its_sweep_parent(served):
    client, tmp = served["client"], served["tmp"]
    runs = job_runs(client)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs.values()}
    assert len(parents) == 2  # one parent per sweep
    for parent_id in parents:
        assert client.get_run(parent_id).info.status == "FINISHED"
    assert runs["1"].data.tags["mlflow.parentRunId"] == runs["2"].data.tags["mlflow.parentRunId"]
    assert runs["3"].data.tags["sweep"] == str(tmp / "submitit")
    assert "2 finished, 0 skipped, 0 failed" in served["joblib"].stdout
    assert "1 finished, 0 skipped, 0 failed" in served["submitit"].stdout
    # submitit pickled the job and ran it in a process of its own: its pickles and its log are there
    (result,) = (tmp / "submitit" / ".submitit").glob("*/*_0_result.pkl")
    (log,) = result.parent.glob("*_0_log.out")
    assert "alexnet_fmnist window=3 layer=all predictor=tile(diagonal): mac_saving=" in log.read_text()


def test_artifacts_are_served_by_the_server_into_its_destination(served):
    client, server = served["client"], served["server"]
    for run in job_runs(client).values():
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        stored = list(server.artifacts.rglob(f"{run.info.run_id}/artifacts/layers.csv"))
        assert len(stored) == 1


def test_analysis_against_the_server_equals_the_sqlite_analysis(served, sqlite_store):
    left, right = sqlite_store["figures"], served["figures"]
    names = sorted(p.name for p in left.iterdir())
    assert names == sorted(p.name for p in right.iterdir())
    assert "summary.csv" in names and any(name.endswith(".png") for name in names)
    for name in names:
        if name.endswith(".csv"):
            assert table(right / name) == table(left / name), name
        elif name.endswith((".png", ".md")):  # a PDF records when it was made
            assert (right / name).read_bytes() == (left / name).read_bytes(), name
    client = served["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (analysis,) = client.search_runs([experiment.experiment_id], "tags.analysis = 'true'")
    logged = {a.path for a in client.list_artifacts(analysis.info.run_id, "figures")}
    assert {f"figures/{name}" for name in names if name.startswith("fig")} == logged


def holding(secret: str, blobs: dict[str, bytes]) -> list[str]:
    """The names of the blobs that contain ``secret``."""
    return [name for name, blob in blobs.items() if secret.encode() in blob]


def test_no_password_lands_in_the_store(served, postgres):
    server = served["server"]
    stored = {"pg_dump mlflow": postgres.dump("mlflow")}  # runs, params, tags, metrics
    stored.update({str(p): p.read_bytes() for p in server.folder.rglob("*") if p.is_file()})  # artifacts, users
    for secret in (ADMIN_PASSWORD, DB_PASSWORD):
        assert not holding(secret, stored)
    # and the check reads the right data: the URI is recorded, with its password masked
    host = server.url.removeprefix("http://")
    assert f"tracking.uri=http://admin:***@{host}".encode() in stored["pg_dump mlflow"]  # the sweep parent's tag
    run_id = job_runs(served["client"])["1"].info.run_id
    config = artifact_text(served["client"], run_id, "config.yaml", served["tmp"] / "check")
    assert f"uri: http://admin:***@{host}" in config
    overrides = artifact_text(served["client"], run_id, "overrides.yaml", served["tmp"] / "check")
    assert "tracking.uri=http\\://admin\\:***@" in overrides  # as Hydra's sweeper escaped it


def test_no_password_lands_in_a_postgres_store_written_directly(postgres, tmp_path):
    """A job writes straight into PostgreSQL (no server) with the database password in the URI."""
    postgres.create_database("direct")
    uri = postgres.uri("direct", with_password=True)
    store = [f"tracking.uri={uri}", f"tracking.artifacts={tmp_path}/artifacts", f"hydra.sweep.dir={tmp_path}/sweep"]
    cli(tmp_path, "pipeline", "-m", "window=2", "data.limit=50", f"tracking.experiment={EXPERIMENT}", *store)
    client = MlflowClient(uri)
    (run,) = job_runs(client).values()
    assert run.data.metrics["images"] == 50
    # the run's artifacts land in MLflow's default ./mlruns beside a database store; Hydra's own sweep
    # folder (the overrides as typed) is a local record, not the store
    stored = {"pg_dump direct": postgres.dump("direct")}
    stored.update({str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "sweep" not in p.parts})
    assert len(stored) >= 4, "the dump, layers.csv, config.yaml, overrides.yaml"
    assert not holding(DB_PASSWORD, stored)
    masked = postgres.uri("direct").replace("@", ":***@", 1)
    assert f"tracking.uri={masked}".encode() in stored["pg_dump direct"]  # the sweep parent's tag
    assert f"uri: {masked}" in artifact_text(client, run.info.run_id, "config.yaml", tmp_path / "check")
    overrides = artifact_text(client, run.info.run_id, "overrides.yaml", tmp_path / "check")
    assert "postgresql+psycopg\\://mlflow\\:***@" in overrides
