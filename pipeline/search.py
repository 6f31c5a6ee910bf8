"""``python -m pipeline.search``: an operating point within a top-1 budget, chosen on calibration images.

    python -m pipeline.search model=alexnet_fmnist search.budget=0.5

The algorithm is ``pipeline.fitting.operating_points``; this module is its Hydra entry point.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pipeline.app import OneLineErrors
from pipeline.errors import Interrupted
from pipeline.fitting.operating_points import SearchError, register, run

register()
REPORT = OneLineErrors(SearchError)


@hydra.main(config_path="../conf", config_name="search", version_base="1.3")
@REPORT.task
def main(cfg: DictConfig) -> float:
    return run(cfg).calibration["net_mac_saving"]  # the objective, for whoever drives the search


def cli(restore_signals: bool = True) -> int:
    """Bad input is one ``error:`` line; SIGTERM, SIGINT and SIGHUP end the search's open runs KILLED
    (``restore_signals`` false: the handlers stay while the process exits, see pipeline.tracking.interrupts)."""
    from pipeline.tracking.interrupts import stop_on_signals

    with stop_on_signals(restore_signals):
        try:
            return REPORT.run(main)
        except (KeyboardInterrupt, Interrupted):
            from pipeline.tracking.tracker import close_claimed

            close_claimed("KILLED")  # an evaluation's run the signal caught between its claim and its context
            print("interrupted: the search's open runs were marked KILLED (a rerun reuses its finished runs)",
                  file=sys.stderr, flush=True)  # fmt: skip
            return 130


if __name__ == "__main__":
    sys.exit(cli(restore_signals=False))
