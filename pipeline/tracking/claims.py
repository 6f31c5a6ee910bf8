"""Who is evaluating a config right now, and runs whose process is gone.

A job *claims* its config by creating its RUNNING run, tagged with its owner: host, PID, the PID's
start time (so a reused PID is not mistaken for the owner) and a heartbeat the owner refreshes every
:data:`HEARTBEAT_S` seconds. A second job with the same config hash then skips it instead of
evaluating it twice, unless the claim is *stale*:

- owner on this host: its process is gone (or the PID now belongs to another process);
- owner on another host: no heartbeat for :data:`STALE_AFTER_S` seconds.

Stale runs are closed as KILLED (:func:`close_stale`, at the start of every sweep, and for one config
when a job claims it), so a rerun redoes them. Runs without owner tags (older runs, training and
analysis runs) are never judged.

On a store without a lock (a tracking server), two jobs may create their claims at the same moment;
both then see both runs, the earlier one (start time, then run id) goes on and the other is deleted.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from pipeline.tracking.client import search_all
from pipeline.tracking.keys import (  # noqa: F401 (OWNER_* and HEARTBEAT re-exported)
    CLOSED_TAG,
    CONFIG_HASH_TAG,
    HEARTBEAT,
    OWNER_HOST,
    OWNER_PID,
    OWNER_START,
    PARENT_TAG,
    SWEEP_TAG,
)

HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: this job's new run, or who holds the config instead."""

    run_id: str | None  # this job's RUNNING run, None when it must not evaluate the config
    holder: str | None = None  # the run that holds it (FINISHED, or RUNNING with a live owner)
    reason: str = ""  # for the skip line


def owner_tags() -> dict[str, str]:
    """The tags that make the current process the owner of a run."""
    pid = os.getpid()
    return {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(pid),
        OWNER_START: _start_ticks(pid) or "",
        HEARTBEAT: str(get_current_time_millis()),
    }


def owner_alive(tags: Mapping[str, str], now_ms: int | None = None) -> bool | None:
    """Whether the process that owns a run still runs; None when the run has no owner tags."""
    host, pid = tags.get(OWNER_HOST), tags.get(OWNER_PID, "")
    if not host or not pid.isdigit():
        return None
    if host == socket.gethostname():
        return _pid_alive(int(pid), tags.get(OWNER_START) or None)
    beat = tags.get(HEARTBEAT, "")
    now_ms = get_current_time_millis() if now_ms is None else now_ms
    return beat.isdigit() and now_ms - int(beat) < STALE_AFTER_S * 1000


def describe_owner(tags: Mapping[str, str]) -> str:
    return f"pid {tags.get(OWNER_PID, '?')} on {tags.get(OWNER_HOST, '?')}"


def close_stale(client: MlflowClient, experiment_id: str, runs: list[Run] | None = None) -> list[str]:
    """Close as KILLED every RUNNING run (of ``runs``, or of the experiment) whose owner is gone."""
    if runs is None:
        runs = _search(client, experiment_id, "attributes.status = 'RUNNING'")
    closed = []
    for run in runs:
        if run.info.status != "RUNNING" or owner_alive(run.data.tags) is not False:
            continue
        client.set_tag(run.info.run_id, CLOSED_TAG, f"{describe_owner(run.data.tags)} was gone; closed as KILLED")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def close_sweep_runs(client: MlflowClient, experiment_id: str, sweep: str, status: str = "KILLED") -> list[str]:
    """End the RUNNING job runs of ``sweep`` owned by processes of this host (its launcher and workers)."""
    host = socket.gethostname()
    closed = []
    for run in _search(client, experiment_id, "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(SWEEP_TAG) == sweep and tags.get(OWNER_HOST) == host and tags.get(PARENT_TAG) != "true":
            client.set_terminated(run.info.run_id, status)
            closed.append(run.info.run_id)
    return closed


def claim(
    client: MlflowClient, experiment_id: str, config_hash: str, name: str, tags: Mapping[str, str], force: bool,
    made: list[str] | None = None,
) -> Claim:  # fmt: skip
    """Create this job's RUNNING run as its claim on ``config_hash``, unless another run holds it; ``made``
    receives the run's id as soon as it exists (so the caller can close it if it is stopped meanwhile).

    A FINISHED run holds it (unless ``force``); so does a RUNNING run whose owner is alive. Stale
    claims on the same config are closed first. On a SQLite store the caller holds
    :func:`pipeline.tracking.store.store_lock`, which makes the check and the creation one step.
    """
    runs = _same_config(client, experiment_id, config_hash)
    close_stale(client, experiment_id, runs)
    holder = _holder(runs, force)  # closed stale runs are not alive: they hold nothing
    if holder is not None:
        return holder
    run_id = client.create_run(experiment_id, run_name=name, tags={**tags, **owner_tags()}).info.run_id
    if made is not None:
        made.append(run_id)
    holder = _holder(_same_config(client, experiment_id, config_hash), force, mine=run_id)
    if holder is not None:  # a concurrent claim on a store without a lock came first
        client.delete_run(run_id)
        return holder
    return Claim(run_id)


class Heartbeat:
    """Refreshes a run's heartbeat tag from a daemon thread while the ``with`` block runs."""

    def __init__(self, client: MlflowClient, run_id: str, every: float = HEARTBEAT_S) -> None:
        self.client, self.run_id, self.every = client, run_id, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT, str(get_current_time_millis()))
            except Exception:  # a store hiccup: the next beat tries again
                pass


def _holder(runs: list[Run], force: bool, mine: str | None = None) -> Claim | None:
    """The run that keeps a job from evaluating this config, as a :class:`Claim` without run id."""
    if not force:
        for run in runs:
            if run.info.status == "FINISHED" and run.info.run_id != mine:
                return Claim(
                    None, run.info.run_id, f"identical FINISHED run {run.info.run_id} (force=true reruns it)"
                )
    live = [r for r in runs if r.info.status == "RUNNING" and owner_alive(r.data.tags)]
    live.sort(key=lambda r: (r.info.start_time, r.info.run_id))
    if live and live[0].info.run_id != mine:
        first = live[0]
        reason = f"being evaluated by run {first.info.run_id} ({describe_owner(first.data.tags)})"
        return Claim(None, first.info.run_id, reason)
    return None


def _same_config(client: MlflowClient, experiment_id: str, config_hash: str) -> list[Run]:
    return _search(client, experiment_id, f"tags.{CONFIG_HASH_TAG} = '{config_hash}'")


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    return search_all(client, experiment_id, filter_string)


def _pid_alive(pid: int, start: str | None) -> bool:
    """The process exists, is not a zombie, and (when known) started when the owner did."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: existence is all we know
    return stat[0] not in ("Z", "X") and (start is None or stat[19] == start)


def _start_ticks(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[19] if stat is not None else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first; the start time is index 19), or None."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()
