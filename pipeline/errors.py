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


def composition_error(exc: BaseException) -> str:
    """One line for Hydra's and OmegaConf's errors (a bad override or config value), with its cause."""
    cause = exc.__cause__
    detail = f": {str(cause).strip()}" if cause is not None and str(cause) not in str(exc) else ""
    return f"error: {str(exc).strip()}{detail}"


class OneLineErrors:
    """For a Hydra app whose task raises ``errors`` on bad input: the task reports them itself (Hydra
    would print "Error executing job" before re-raising), and :meth:`run` exits 2 after one line.

        report = OneLineErrors(SearchError)

        @hydra.main(...)
        @report.task
        def main(cfg): ...

        def cli() -> int:
            return report.run(main)
    """

    def __init__(self, *errors: type[BaseException]) -> None:
        self.errors = errors
        self.caught: list[BaseException] = []

    def task(self, function):
        import functools

        @functools.wraps(function)
        def reported(cfg):
            try:
                return function(cfg)
            except self.errors as exc:
                self.caught.append(exc)
                return None

        return reported

    def run(self, main) -> int:
        import os
        import sys

        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of Hydra's report
        self.caught.clear()
        try:
            main()
        except (HydraException, OmegaConfBaseException) as exc:
            print(composition_error(exc), file=sys.stderr, flush=True)
            return 2
        for exc in self.caught:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2 if self.caught else 0
