"""The one exception type for bad input: the CLI prints it as one ``error:`` line and exits non-zero.

Every error a user can cause (config values, model, checkpoint, data, tracking store) is a
:class:`PipelineError` or a subclass (``ModelError``, ``DataError``, ``TraceError``, ``StoreError``),
raised before a run is created where that is possible; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PipelineError(RuntimeError):
    """Bad input; the message names the problem and the fix."""


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM, SIGINT or SIGHUP so that open runs are closed as KILLED."""
