"""Hydra entry point: ``python -m pipeline [-m] key=value ...``; the work is ``pipeline.job.runner.run``."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline.app import composition_error
from pipeline.errors import Interrupted, PipelineError
from pipeline.fitting.operating_points import OPERATING_POINTS
from pipeline.job.config import register
from pipeline.job.runner import HydraJob, _write_result, run

register()

_FAILED: list[PipelineError] = []  # bad input of the jobs run in this process


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    job = HydraJob.current()
    try:
        result = run(cfg, job)
    except PipelineError as exc:  # reported here: Hydra would print "Error executing job" before it
        _write_result(job, "failed", None)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _FAILED.append(exc)
        return None
    except BaseException:
        _write_result(job, "failed", None)
        raise
    objective = cfg.get("objective")  # validated by run(): a run metric, or null
    return None if objective is None else result.metrics.get(objective)


def cli(restore_signals: bool = True) -> int:
    """Run Hydra; bad input is one ``error:`` line, open sweep runs are closed, failures exit non-zero.

    ``restore_signals`` false keeps the CLI's signal handlers after it returns (the process then exits).
    """
    from pipeline.tracking import callbacks
    from pipeline.tracking.interrupts import stop_on_signals

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of Hydra's report
    OPERATING_POINTS.mkdir(parents=True, exist_ok=True)  # on the config search path (conf/config.yaml)
    _FAILED.clear()
    callbacks.forget()
    # SIGTERM, SIGINT, SIGHUP: Interrupted once; signals during the clean-up do not interrupt it
    with stop_on_signals(restore_signals):
        try:
            main()
        except (KeyboardInterrupt, Interrupted):
            from pipeline.tracking.tracker import close_claimed

            close_claimed("KILLED")  # a job's run the signal caught between its claim and its run context
            callbacks.close_open("KILLED")
            print("interrupted: open runs were marked KILLED", file=sys.stderr, flush=True)
            return 130
        except callbacks.SweepAbort as exc:  # the store failed before any job started
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        except (HydraException, OmegaConfBaseException) as exc:  # bad overrides or config values
            callbacks.close_open(None)
            print(composition_error(exc), file=sys.stderr, flush=True)
            return 2
        except Exception:  # a bug: keep the traceback
            callbacks.close_open(None)
            raise
    return 2 if _FAILED or callbacks.failed_jobs() else 0


if __name__ == "__main__":
    sys.exit(cli(restore_signals=False))
