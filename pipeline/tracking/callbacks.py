"""Hydra callbacks: one MLflow parent run per multirun, and a summary of what the sweep did.

``on_multirun_start`` runs once, in the launching process, before any job: it checks the tracking
store (a bounded retry; an unusable store stops the whole sweep here, see :class:`SweepAbort`),
creates it (so parallel jobs never race on a new SQLite schema), closes the runs that processes
now gone left RUNNING (:mod:`pipeline.tracking.claims`), and creates the parent run that every job of the
sweep hangs under. The parent ends FINISHED when every job finished or was skipped, FAILED
otherwise, KILLED on an interruption, also when the sweep raised (see :func:`close_open`); job runs
of the sweep still RUNNING then are closed as KILLED.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import PipelineError
from pipeline.tracking.config import TrackingConfig
from pipeline.tracking.keys import PARENT_RUN_TAG
from pipeline.tracking.redact import redact

_OPEN: dict[str, tuple[Any, str, str, Any]] = {}  # parent run id -> (tracker, run id, sweep dir, heartbeat)
_COUNTS: dict[str, dict[str, int]] = {}  # sweep dir -> what its jobs did, once the sweep is closed


class SweepAbort(BaseException):
    """The store cannot be used: stops the sweep before any job.

    A BaseException, because Hydra turns an Exception raised by a callback into a warning and
    starts the jobs anyway (each then failing on its own, slowly).
    """


def _tracker(config: DictConfig):
    from pipeline.tracking.tracker import Tracker

    tracking = OmegaConf.merge(OmegaConf.structured(TrackingConfig), config.tracking)
    return Tracker(OmegaConf.to_object(tracking))


class SweepTracking(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline.tracking.claims import Heartbeat

        sweep = str(Path(config.hydra.sweep.dir).resolve())
        try:
            tracker = _tracker(config)
        except (PipelineError, ValueError, OmegaConfBaseException) as exc:
            raise SweepAbort(str(exc)) from None
        except Exception as exc:  # MLflow could not open or create the store: no job may start without it
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SweepAbort(
                f"cannot open the tracking store {config.tracking.uri} ({type(exc).__name__}: {first})"
            ) from exc
        closed = tracker.close_stale()
        if closed:
            print(f"closed {len(closed)} run(s) left RUNNING by processes that are gone, as KILLED", flush=True)
        overrides = redact(" ".join(config.hydra.overrides.task))  # tracking.uri may hold a password
        tags = {"overrides": overrides[:5000]}
        if config.tracking.get("parent"):  # a search's per-layer grid: nested under the search's run
            tags[PARENT_RUN_TAG] = str(config.tracking.parent)
        run_id = tracker.start_parent(sweep, f"sweep {overrides}".strip(), tags)
        _OPEN[run_id] = (tracker, run_id, sweep, Heartbeat(tracker.client, run_id).__enter__())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_open(None)


def close_open(status: str | None) -> None:
    """End the parent runs still open and their jobs' runs; ``status`` None derives it from the jobs' results."""
    for key, (tracker, run_id, sweep, heartbeat) in list(_OPEN.items()):
        del _OPEN[key]
        heartbeat.__exit__()
        counts = summarize(sweep)
        try:
            left = tracker.close_sweep(sweep, "KILLED")  # jobs of this host whose process stopped mid-run
            final = status or ("FINISHED" if counts.get("failed", 0) == 0 and not left else "FAILED")
            tracker.end(run_id, final)
        except Exception as exc:  # the store went away: the next sweep closes these runs
            print(f"warning: could not close the runs of sweep {sweep} ({type(exc).__name__}: {exc})", flush=True)
            left = []
        counts["failed"] = counts.get("failed", 0) + len(left)
        _COUNTS[sweep] = counts
        parts = [f"{counts.get(s, 0)} {s}" for s in ("finished", "skipped", "failed")]
        print(f"sweep {sweep}: {', '.join(parts)}", flush=True)
        if left:
            print(f"closed {len(left)} job run(s) of the sweep left RUNNING, as KILLED", flush=True)
        if counts.get("skipped"):
            print(
                f"skipped {counts['skipped']} job(s) with an identical FINISHED run in the store, or being "
                "evaluated by another process (force=true reruns finished ones)",
                flush=True,
            )


def failed_jobs() -> int:
    """Failed jobs of the sweeps closed so far in this process."""
    return sum(counts.get("failed", 0) for counts in _COUNTS.values())


def forget() -> None:
    """Start a new count (one CLI call)."""
    _COUNTS.clear()


def summarize(sweep: str) -> dict[str, int]:
    """How many jobs of a sweep finished, were skipped or failed (their result.json files).

    A job without a readable result.json (stopped while writing it) counts as failed.
    """
    counts: dict[str, int] = {}
    for path in Path(sweep).glob("*/result.json"):
        try:
            status = json.loads(path.read_text()).get("status", "failed")
        except (OSError, ValueError, AttributeError):
            status = "failed"
        counts[status] = counts.get(status, 0) + 1
    return counts
