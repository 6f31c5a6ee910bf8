"""SIGTERM, SIGINT (Ctrl-C) and SIGHUP (a closed terminal) stop the CLI through one clean-up path.

The first of them raises :class:`~pipeline.errors.Interrupted` in the main thread: the job's run is
marked KILLED where it stands and the CLI closes every open run of the sweep. Two rules keep that
clean-up whole:

- never inside the store: a signal that arrives within :func:`deferred` (the tracking boundary
  wraps every store operation in it) is raised when the block ends, so MLflow's SQL sessions are
  never cut in the middle (a transaction left open would hold SQLite's write lock);
- signals that arrive while the clean-up runs only say that it is under way, so a second Ctrl-C
  cannot leave a run RUNNING or a file half written.

The previous handlers come back when :func:`stop_on_signals` ends, unless ``restore`` is false: the
CLI's process then ignores these signals while it exits (Python resets its own handlers to the
default actions during shutdown, which would end it by the signal instead of its exit code).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pipeline.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _State:
    stopping = False  # a signal was raised (or is pending): the clean-up runs
    pending: str | None = None  # a signal that arrived within deferred(), to raise when it ends
    depth = 0  # nesting of deferred()


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _State.stopping:
        print(f"{name}: already stopping, closing the open runs", file=sys.stderr, flush=True)
        return
    _State.stopping = True
    if _State.depth:
        _State.pending = name
        return
    raise Interrupted(name)


@contextmanager
def deferred() -> Iterator[None]:
    """A block no signal interrupts: one that arrives meanwhile is raised when the block ends."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending is not None:
            name, _State.pending = _State.pending, None
            raise Interrupted(name)


@contextmanager
def stop_on_signals(restore: bool = True) -> Iterator[None]:
    """Within the block, the first of :data:`SIGNALS` raises Interrupted; later ones are noted only."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _State.stopping, _State.pending = False, None
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if restore else signal.SIG_IGN)
