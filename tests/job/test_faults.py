"""Faults, tried as an adversary would: stores that cannot be used, sweeps racing on one store,
signals and killed processes, rewritten checkpoints, awkward sweep folders.

Real SQLite stores under tmp_path, the real CLI (in this process where no signal or second process
is involved: tests/inprocess.py), real signals to real processes. The jobs evaluate tests/nets.py's
one-layer CNN on a few synthetic images; ``CNP_TEST_PAUSE`` keeps a job RUNNING for a while.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.cli import REPO, runs, store_args
from tests.inprocess import run_cli

MODEL = ("model=custom", "model.target=tests.nets:small", "model.input_size=[1,28,28]", "model.num_classes=10")
DATA = ("data=synthetic", "data.image_size=[1,28,28]", "data.num_classes=10", "data.size=4", "data.batch_size=2")
JOB = (*MODEL, *DATA)  # two batches of two images


def start(tmp: Path, *args: str, pause: float = 0.0, sweep: str = "sweep") -> subprocess.Popen:
    """``python -m pipeline JOB ARGS`` in the background, its store in ``tmp``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "CNP_TEST_PAUSE": str(pause)}
    flags = [arg for arg in args if arg.startswith("-")]  # -m first: argparse does not mix it into overrides
    overrides = [arg for arg in args if not arg.startswith("-")]
    command = [sys.executable, "-m", "pipeline", *flags, *JOB, *store_args(tmp), f"hydra.sweep.dir={tmp / sweep}",
               *overrides]  # fmt: skip
    # its own process group, so that killing it takes its launcher's workers too: a worker left alive
    # holds the output pipes open, and reading them would then wait for ever
    return subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to ``process`` and every process it started (its joblib workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # all gone already
        pass


def wait_for(condition, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll ``condition`` while ``process`` runs; fail with its output when it ends first or time runs out
    (generous: on a loaded machine starting two joblib workers takes more than a minute)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            kill_group(process)
            out, err = process.communicate(timeout=60)
            pytest.fail(f"the pipeline ended ({process.returncode}) or timed out first:\n{out}\n{err}")
        time.sleep(0.2)


def running(tmp: Path) -> list:
    return [r for r in runs(tmp) if r.info.status == "RUNNING"]


def parents(tmp: Path) -> list:
    return [r for r in runs(tmp, include_parents=True) if r.data.tags.get("sweep.parent") == "true"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# an unusable store fails the whole sweep within seconds -----------------------------------


@pytest.mark.parametrize("store", ["unreachable server", "read-only folder"])
def test_an_unusable_store_fails_the_sweep_within_seconds_before_any_job(store, tmp_path, request):
    if store == "unreachable server":
        uri = f"http://127.0.0.1:{free_port()}"
    else:
        uri = f"sqlite:///{request.getfixturevalue('read_only')}/mlflow.db"
    began = time.monotonic()
    result = run_cli(tmp_path, "-m", "window=1,2", *JOB, f"tracking.uri={uri}")
    assert time.monotonic() - began < 20
    assert result.returncode == 2 and len(result.errors) == 1, result.stderr
    assert "tried 3 times over" in result.errors[0] and "tracking.uri" in result.errors[0]
    assert "Traceback" not in result.stderr and "window=" not in result.stdout  # no job started
    assert not list((tmp_path / "hydra" / "sweep").glob("*/result.json"))


# processes of their own: sweeps at once, signals, SIGKILL --------------------------------


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    """Wait for ``process``: (exit code, stdout, stderr); killed when it takes too long."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        kill_group(process)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def race(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, str, str]]]:
    """The same sweep (windows 1, 2) started twice at once on one new store."""
    tmp = tmp_path_factory.mktemp("race")
    processes = {name: start(tmp, "-m", "window=1,2", pause=1.0, sweep=name) for name in ("A", "B")}
    # generous: beside five CPU-heavy processes on 2 cores the two sweeps took more than 180 s (a fresh-clone run)
    return tmp, {name: finish(process, timeout=480) for name, process in processes.items()}


def test_two_sweeps_started_at_once_on_a_new_store_both_complete(race):
    tmp, results = race
    for name, (code, out, err) in results.items():
        assert code == 0 and ", 0 failed" in out, f"{name}: {err}"
    assert [p.info.status for p in parents(tmp)] == ["FINISHED"] * 2


def test_the_same_sweep_twice_at_once_evaluates_each_config_once(race):
    tmp, results = race
    finished = [r for r in runs(tmp) if r.info.status == "FINISHED"]
    assert sorted(r.data.params["window"] for r in finished) == ["1", "2"]
    assert not running(tmp)
    assert sum(out.count("skipped custom") for _, out, _ in results.values()) == 2  # each config once


def assert_all_killed(tmp: Path, jobs: int) -> None:
    assert [r.info.status for r in runs(tmp)] == ["KILLED"] * jobs
    assert [p.info.status for p in parents(tmp)] == ["KILLED"]


def test_sigterm_to_a_joblib_sweep_marks_every_run_killed(tmp_path, store_in):
    store_in(tmp_path)  # a store that exists: polling it never races on its schema
    process = start(tmp_path, "-m", "launcher=joblib", "window=1,2", pause=120)
    wait_for(lambda: len(running(tmp_path)) == 2, process)  # both workers evaluate
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process, timeout=60)
    assert code == 130, err
    assert_all_killed(tmp_path, 2)


def test_sighup_and_signals_during_the_cleanup_leave_nothing_open(tmp_path, store_in):
    """A closed terminal (SIGHUP), then Ctrl-C after Ctrl-C while the runs are being closed."""
    store_in(tmp_path)
    process = start(tmp_path, "-m", "window=1,2", pause=120)
    wait_for(lambda: len(running(tmp_path)) == 1, process)
    process.send_signal(signal.SIGHUP)
    for _ in range(40):
        time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    code, _, err = finish(process, timeout=60)
    assert code == 130 and "Traceback" not in err, err
    assert_all_killed(tmp_path, 1)
    results = list((tmp_path / "sweep").glob("*/result.json"))
    assert results and all(json.loads(path.read_text())["status"] == "failed" for path in results)


def test_runs_of_a_killed_process_are_closed_by_the_next_sweep_and_redone(tmp_path, store_in):
    store_in(tmp_path)
    process = start(tmp_path, "-m", "window=2", pause=120)
    wait_for(lambda: len(running(tmp_path)) == 1, process)
    process.send_signal(signal.SIGKILL)  # nothing of it can close its runs
    finish(process, timeout=60)
    (left,) = running(tmp_path)
    rerun = run_cli(tmp_path, "-m", "window=2", *JOB, f"hydra.sweep.dir={tmp_path / 'rerun'}")
    assert rerun.returncode == 0, rerun.stderr
    assert "closed 2 run(s) left RUNNING by processes that are gone" in rerun.stdout  # the job and its parent
    statuses = {r.info.run_id: r.info.status for r in runs(tmp_path)}
    assert statuses.pop(left.info.run_id) == "KILLED" and list(statuses.values()) == ["FINISHED"]
    assert {r.data.tags["config_hash"] for r in runs(tmp_path)} == {left.data.tags["config_hash"]}


def test_a_claim_whose_process_is_gone_does_not_block(tmp_path, store_in):
    """Claims of a dead PID on this host, or without a heartbeat from another host, are closed KILLED."""
    from pipeline.tracking import claims

    store_in(tmp_path)
    mlflow_client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow_client.create_experiment("claims")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    elsewhere = {**claims.owner_tags(), claims.OWNER_HOST: "elsewhere", claims.OWNER_PID: "1"}
    owners = {
        "dead pid here": {**claims.owner_tags(), claims.OWNER_PID: str(dead.pid)},
        "silent elsewhere": {
            **elsewhere,
            claims.HEARTBEAT: str(int(time.time() * 1000 - claims.STALE_AFTER_S * 1001)),
        },
        "alive elsewhere": elsewhere,  # a fresh heartbeat
    }
    for name, owner in owners.items():
        tags = {"config_hash": name.replace(" ", "-")}
        left = mlflow_client.create_run(experiment, tags={**tags, **owner}).info.run_id
        claim = claims.claim(mlflow_client, experiment, tags["config_hash"], name, tags, force=False)
        if name == "alive elsewhere":
            assert claim.run_id is None and claim.holder == left and "being evaluated by run" in claim.reason
            assert mlflow_client.get_run(left).info.status == "RUNNING"
        else:
            assert claim.run_id is not None, name
            assert mlflow_client.get_run(left).info.status == "KILLED"
            assert "was gone" in mlflow_client.get_run(left).data.tags[claims.CLOSED_TAG]


# identity -----------------------------------------------------------------------------------


def test_a_rewritten_checkpoint_is_a_new_job(tmp_path, store_in):
    from tests.nets import small

    store_in(tmp_path)
    checkpoint = tmp_path / "small.pt"
    args = (*JOB, f"model.checkpoint={checkpoint}")
    torch.manual_seed(1)
    torch.save(small().state_dict(), checkpoint)
    assert run_cli(tmp_path, *args).returncode == 0
    assert "skipped" in run_cli(tmp_path, *args).stdout  # the same file: the same job
    torch.manual_seed(2)
    torch.save(small().state_dict(), checkpoint)  # same path and size, other weights
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0 and "skipped" not in again.stdout
    finished = [r for r in runs(tmp_path) if r.info.status == "FINISHED"]
    assert len(finished) == 2 and len({r.data.tags["config_hash"] for r in finished}) == 2


def test_the_measurement_version_is_part_of_the_identity(monkeypatch):
    from hydra import compose, initialize_config_dir

    from pipeline.job import identity
    from pipeline.job.config import register
    from pipeline.job.plan import prepare

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        plan = prepare(compose("config", overrides=["window=2"]))
    first = plan.identity
    assert plan.identity == first and len(plan.files) == 1  # the twin's checkpoint, as read
    monkeypatch.setattr(identity, "MEASUREMENT_VERSION", identity.MEASUREMENT_VERSION + 1)
    assert plan.identity != first


def test_the_identity_covers_exactly_the_files_the_job_read():
    """The files hashed into a job's identity are those its loaders read, recorded as they are read:
    the twin's checkpoint; the learned predictors' checkpoint once, when any layer in scope loads it;
    nothing for a layer out of scope."""
    from hydra import compose, initialize_config_dir

    from pipeline.job.config import register
    from pipeline.job.plan import prepare
    from pipeline.networks.models import CHECKPOINTS
    from pipeline.predictors.learned import shipped_path

    register()
    twin, learned = CHECKPOINTS / "alexnet_fmnist.pt", shipped_path("alexnet_fmnist", "checkerboard", 2)
    cases = {
        ("predictor=tile", "window=3"): [twin],
        ("predictor=learned",): [twin, learned],  # five layers, one checkpoint: read once
        ("predictor=tile", "window=3", "+predictor.layers.1={kind: learned, window: 2}"): [twin, learned],
        ("predictor=tile", "window=3", "layer=0", "+predictor.layers.1={kind: learned, window: 2}"): [twin],
    }
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        plans = {overrides: prepare(compose("config", overrides=list(overrides))) for overrides in cases}
    for overrides, files in cases.items():  # the last: layer 1 out of scope, its checkpoint neither read nor hashed
        assert plans[overrides].files == files, overrides


# sweep folders ------------------------------------------------------------------------------


def test_a_sweep_folder_with_quotes_keeps_its_parent_link(tmp_path, store_in):
    store_in(tmp_path)
    sweep = tmp_path / 'it\'s a "sweep"'
    quoted = str(sweep).replace('"', '\\"')  # Hydra's override grammar: a quoted value, inner quotes escaped
    result = run_cli(tmp_path, "-m", "window=1,2", *JOB, f'hydra.sweep.dir="{quoted}"')
    assert result.returncode == 0, result.stderr
    (parent,) = parents(tmp_path)
    assert parent.data.tags["sweep"] == str(sweep)
    assert [r.data.tags.get("mlflow.parentRunId") for r in runs(tmp_path)] == [parent.info.run_id] * 2


def test_a_signal_while_a_job_claims_its_run_leaves_no_run_running(tmp_path, monkeypatch):
    """Issue 23, defect 2: a SIGTERM that lands while the claim writes the store is raised only when the
    store operation ends, after the RUNNING run exists and before the job's run context holds it. The
    claim ends that run KILLED before the signal goes on (it stayed RUNNING for good before)."""
    from pipeline.errors import Interrupted
    from pipeline.tracking import claims
    from pipeline.tracking.config import TrackingConfig
    from pipeline.tracking.tracker import Tracker

    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="faults",
                                     artifacts=str(tmp_path / "artifacts")))  # fmt: skip
    made = claims.claim

    def claim_then_signal(*args, **kwargs):
        made(*args, **kwargs)  # the run is created ...
        raise Interrupted("SIGTERM")  # ... and the deferred signal is raised as the store operation ends

    monkeypatch.setattr(claims, "claim", claim_then_signal)
    with pytest.raises(Interrupted):
        tracker.claim("abc", "job", {"config_hash": "abc"}, force=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert [r.info.status for r in found] == ["KILLED"]


def test_a_signal_between_the_claim_and_the_job_run_is_closed_by_the_cli(tmp_path):
    """A claimed run is registered until it ends; the CLI's interrupt path ends what is left KILLED
    (a signal landing after the claim returned and before the job's run context held the run)."""
    from pipeline.tracking.config import TrackingConfig
    from pipeline.tracking.tracker import Tracker, close_claimed

    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="faults",
                                     artifacts=str(tmp_path / "artifacts")))  # fmt: skip
    left = tracker.claim("left", "job", {"config_hash": "left"}, force=False).run_id
    done = tracker.claim("done", "job", {"config_hash": "done"}, force=False).run_id
    with pytest.raises(RuntimeError, match="without its results"):  # a run context that ends (FAILED here)
        with tracker.job_run(done, {}):
            pass
    assert close_claimed("KILLED") == [left] and close_claimed("KILLED") == []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(left).info.status == "KILLED" and client.get_run(done).info.status == "FAILED"
