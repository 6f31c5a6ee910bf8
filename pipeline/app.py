"""What every Hydra entry point shares: a composed config as its schema, and bad input as one line.

Each entry point (``python -m pipeline``, ``pipeline.search``, ``pipeline.train``,
``pipeline.train_predictor``) validates its composed config with :func:`validate_as` and reports a
bad override or value as one ``error:`` line (:func:`composition_error`, :class:`OneLineErrors`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's resolved config as plain containers (enums as names), without Hydra's ``hydra`` node."""
    keys = [key for key in cfg if key != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True, enum_to_str=True)  # type: ignore[return-value]


def validate_as(cfg: DictConfig, schema: type) -> Any:
    """The composed config (without Hydra's node) as an object of ``schema`` (ValueError on a bad value)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain_config(cfg)))


def composition_error(exc: BaseException) -> str:
    """One line for Hydra's and OmegaConf's errors (a bad override or config value), with its cause."""
    cause = exc.__cause__
    detail = f": {_first_line(cause)}" if cause is not None and str(cause) not in str(exc) else ""
    return f"error: {_first_line(exc)}{detail}"


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line, without OmegaConf's ``full_key: ...`` / ``object_type=...`` lines."""
    noise = ("full_key:", "reference_type=", "object_type=")
    lines = [line.strip() for line in str(exc).strip().split("Config search path:")[0].splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(noise))


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
