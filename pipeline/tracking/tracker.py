"""The tracking boundary: the only module of the pipeline that imports mlflow.

A job's run is created only when its evaluation starts, gets its metrics and artifacts in one go
at the end, and is marked FINISHED only after all of them are stored; a failure marks it FAILED
and an interruption (Ctrl-C, SIGTERM, SIGHUP) KILLED. The runs of one multirun hang under a parent
run. When this process writes the store's database itself, every store operation runs within
:func:`pipeline.tracking.interrupts.deferred`: a signal never cuts one in the middle.
"""

from __future__ import annotations

import csv
import functools
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from pipeline.errors import Interrupted  # noqa: F401 (re-exported)
from pipeline.tracking import claims
from pipeline.tracking.client import ensure_experiment, resolve_uri
from pipeline.tracking.config import TrackingConfig
from pipeline.tracking.interrupts import deferred
from pipeline.tracking.keys import CONFIG_HASH_TAG, LAYERS_ARTIFACT, PARENT_RUN_TAG, PARENT_TAG, SWEEP_TAG  # noqa: F401 (re-exported)
from pipeline.tracking.store import check_store, store_lock

T = TypeVar("T")


def _direct(uri: str) -> bool:
    """Whether this process writes the store's database itself (SQLAlchemy), not through a server."""
    return not uri.startswith(("http://", "https://", "databricks"))


def _store_operation(method: Callable[..., T]) -> Callable[..., T]:
    """A store operation no signal cuts in the middle when this process writes the database itself.

    MLflow rolls a SQL session back on an Exception only: a signal's exception inside one could
    leave a transaction open, and its SQLite write lock would stall every later write (busy
    timeout 20 s each). A server's requests are safe to interrupt, and may retry for minutes.
    """

    @functools.wraps(method)
    def wrapper(self, *args: object, **kwargs: object) -> T:
        with deferred() if self.direct else nullcontext():
            return method(self, *args, **kwargs)

    return wrapper


_CLAIMED: dict[str, Tracker] = {}  # runs this process claimed and has not ended, by run id


def close_claimed(status: str) -> list[str]:
    """End every run this process claimed and has not ended (a signal landed between the claim and the
    job's run context, which ends its run itself) with ``status``; their ids."""
    closed = []
    for run_id, tracker in list(_CLAIMED.items()):
        tracker.end(run_id, status)
        closed.append(run_id)
    return closed


class Tracker:
    """MLflow client bound to one tracking URI and experiment."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.uri = resolve_uri(cfg.uri)
        self.direct = _direct(self.uri)
        with deferred() if self.direct else nullcontext():
            check_store(self.uri, create=True)  # within seconds, before MLflow's own long retries
            with store_lock(self.uri):  # a new SQLite store's schema is created by one process only
                self.client = MlflowClient(tracking_uri=self.uri)
                self.experiment_id = ensure_experiment(self.client, self.uri, cfg.experiment, cfg.artifacts)

    # resume ---------------------------------------------------------------------------------

    @_store_operation
    def finished_run(self, config_hash: str) -> str | None:
        """The id of a FINISHED run with this config hash, if any."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{CONFIG_HASH_TAG} = '{config_hash}' and attributes.status = 'FINISHED'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    @_store_operation
    def run_metrics(self, run_id: str) -> dict[str, float]:
        """A run's metrics (their latest values)."""
        return dict(self.client.get_run(run_id).data.metrics)

    @_store_operation
    def artifact_text(self, run_id: str, name: str) -> str | None:
        """The text of a run's artifact ``name`` (at its root), or None when the run has none."""
        if name not in {item.path for item in self.client.list_artifacts(run_id)}:
            return None
        with tempfile.TemporaryDirectory() as folder:
            return Path(self.client.download_artifacts(run_id, name, folder)).read_text()

    @_store_operation
    def status(self, run_id: str) -> str:
        """A run's status: RUNNING, FINISHED, FAILED, KILLED."""
        return self.client.get_run(run_id).info.status

    @_store_operation
    def finish(self, run_id: str, metrics: Mapping[str, float], files: list[Path]) -> None:
        """Log ``metrics`` and ``files`` to an open run (a search's parent), then end it FINISHED."""
        now = get_current_time_millis()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.end(run_id, "FINISHED")

    # multirun parent ------------------------------------------------------------------------

    @_store_operation
    def start_parent(self, sweep: str, name: str, tags: Mapping[str, str]) -> str:
        tags = {SWEEP_TAG: sweep, PARENT_TAG: "true", **tags, **claims.owner_tags()}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    @_store_operation
    def parent_of(self, sweep: str) -> str | None:
        """The newest parent run of ``sweep`` (any characters in its path)."""
        literal = _literal(sweep)
        where = f"tags.{PARENT_TAG} = 'true'" + (f" and tags.{SWEEP_TAG} = {literal}" if literal else "")
        runs = self.client.search_runs([self.experiment_id], filter_string=where, max_results=1000)
        return next((r.info.run_id for r in runs if r.data.tags.get(SWEEP_TAG) == sweep), None)

    @_store_operation
    def close_stale(self) -> list[str]:
        """Close as KILLED the RUNNING runs whose process is gone (:mod:`pipeline.tracking.claims`)."""
        return claims.close_stale(self.client, self.experiment_id)

    @_store_operation
    def close_sweep(self, sweep: str, status: str = "KILLED") -> list[str]:
        """End the RUNNING runs of ``sweep`` started by processes of this host."""
        return claims.close_sweep_runs(self.client, self.experiment_id, sweep, status)

    @_store_operation
    def end(self, run_id: str, status: str) -> None:
        """End a run unless it has ended already."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.client.set_terminated(run_id, status)
        _CLAIMED.pop(run_id, None)

    # one job --------------------------------------------------------------------------------

    def claim(self, config_hash: str, name: str, tags: Mapping[str, str], force: bool) -> claims.Claim:
        """Create the job's RUNNING run unless another run holds its config (:func:`claims.claim`). A
        signal that lands while it claims (raised when the store operation ends, or at once on a server)
        ends the run it created KILLED before the signal goes on: no run is left RUNNING for good."""
        made: list[str] = []
        try:
            claim = self._claim(config_hash, name, tags, force, made)
        except (KeyboardInterrupt, Interrupted):
            for run_id in made:
                self.end(run_id, "KILLED")
            raise
        if claim.run_id is not None:  # until it ends, close_claimed() finds it if a signal lands before its context
            _CLAIMED[claim.run_id] = self
        return claim

    @_store_operation
    def _claim(self, config_hash: str, name: str, tags: Mapping[str, str], force: bool,
               made: list[str]) -> claims.Claim:  # fmt: skip
        with store_lock(self.uri):
            return claims.claim(self.client, self.experiment_id, config_hash, name, tags, force, made)

    @contextmanager
    def job_run(self, run_id: str, params: Mapping[str, object]) -> Iterator[JobRecord]:
        """The claimed run of one job; FINISHED only when :meth:`JobRecord.commit` stored everything."""
        try:
            record = JobRecord(self.client, run_id, self.direct)
            with deferred() if self.direct else nullcontext():
                self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
            with claims.Heartbeat(self.client, run_id):
                yield record
        except (KeyboardInterrupt, Interrupted):
            self._terminate(run_id, "KILLED")
            raise
        except BaseException:
            self._terminate(run_id, "FAILED")
            raise
        if not record.committed:
            self._terminate(run_id, "FAILED")
            raise RuntimeError("internal error: job run ended without its results")
        self._terminate(run_id, "FINISHED")

    @_store_operation
    def _terminate(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)
        _CLAIMED.pop(run_id, None)

    @_store_operation
    def log_training_run(
        self,
        name: str,
        params: Mapping[str, object],
        history: list[tuple[str, float, int, int]],
        final: Mapping[str, float],
        checkpoint: Path,
    ) -> str:
        """One finished training run (pipeline.train): params, per-epoch metrics (key, value,
        timestamp ms, epoch), final metrics and the checkpoint. Returns the run id."""
        run_id = self.client.create_run(self.experiment_id, run_name=name).info.run_id
        try:
            now = get_current_time_millis()
            metrics = [Metric(k, float(v), t, step) for k, v, t, step in history]
            metrics += [Metric(k, float(v), now, 0) for k, v in final.items()]
            self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
            self.client.log_artifact(run_id, str(checkpoint))
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id


class JobRecord:
    """Writes a job's results to its run in one step."""

    def __init__(self, client: MlflowClient, run_id: str, direct: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        self.direct = direct  # signals wait for store operations (see _store_operation)
        self.committed = False

    @_store_operation
    def commit(
        self,
        metrics: Mapping[str, float],
        layer_rows: list[dict[str, object]],
        texts: Mapping[str, str | bytes],
    ) -> None:
        """Log all metrics, ``layers.csv`` and the artifacts of ``texts`` (file name -> text or bytes)."""
        now = get_current_time_millis()
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's per-request limit
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])
        with tempfile.TemporaryDirectory() as folder:
            with open(Path(folder) / LAYERS_ARTIFACT, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(layer_rows[0]))
                writer.writeheader()
                writer.writerows(layer_rows)
            for file_name, content in texts.items():
                path = Path(folder) / file_name
                path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
            self.client.log_artifacts(self.run_id, folder)
        self.committed = True


def _param(value: object) -> str:
    text = "null" if value is None else str(value)
    return text[:6000]


def _literal(text: str) -> str | None:
    """``text`` quoted for an MLflow search filter, or None when it holds both kinds of quotes."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return None
