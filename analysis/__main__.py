"""Hydra entry point: ``python -m analysis [key=value ...]``; the work is ``analysis.report.run``."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from analysis.config import AnalysisError
from analysis.report import run

_FAILED: list[AnalysisError] = []  # bad input found by run(): reported by cli() as one line


@hydra.main(config_path="../conf", config_name="analysis", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except AnalysisError as exc:  # kept from Hydra, which would print its own line before re-raising
        _FAILED.append(exc)


def cli() -> int:
    """Run Hydra; print bad input (settings, store, runs) as one ``error:`` line and exit 2."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us (and bugs keep their traceback)
    try:
        main()
        if _FAILED:
            raise _FAILED.pop()
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as exc:  # bad overrides
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
