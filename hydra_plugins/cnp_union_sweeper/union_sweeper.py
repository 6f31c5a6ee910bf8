"""The ``union`` sweeper: Hydra's basic sweeper over a union of grids.

Hydra's basic sweeper runs the cartesian product of its ``params`` and the command line. Some
comparisons are not one product: the tile kinds take a ``window`` and a ``pattern``, the oracle
neither, so ``predictor=tile,oracle predictor.pattern=...`` cannot be composed. This sweeper takes a
list of ``grids``; each is a product of its own keys with the shared ``params`` and the command
line, and the sweep runs every job of every grid once (in order, duplicates dropped)::

    hydra:
      sweeper:
        params: {model: alexnet_fmnist,vgg16_fmnist}
        grids:
          - {predictor: none}
          - {predictor: tile, predictor.pattern: "diagonal,cross", window: "2,3"}

Command-line sweeps (``model=a,b``) replace the same key of ``params`` and of every grid. Jobs are
launched by the configured launcher, exactly as the basic sweeper does.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class UnionSweeperConf:
    _target_: str = "hydra_plugins.cnp_union_sweeper.union_sweeper.UnionSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None  # shared by every grid
    grids: list[dict[str, Any]] | None = None  # each grid: key -> sweep string


ConfigStore.instance().store(group="hydra/sweeper", name="union", node=UnionSweeperConf, provider="cnp-pipeline")


class UnionSweeper(Sweeper):
    """Every job of every grid (each a product with ``params`` and the command line), once."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        grids: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.grids = [dict(grid) for grid in grids] if grids else [{}]
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def jobs(self, arguments: list[str]) -> list[list[str]]:
        """The override lists of every job, grid by grid, without repeats."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: list[list[str]] = []
        seen = set()
        for grid in self.grids:
            strings = [f"{key}={value}" for key, value in {**self.params, **grid}.items()]
            overrides = parser.parse_overrides([*strings, *arguments])
            for job in BasicSweeper.split_arguments(overrides, None)[0]:
                key = tuple(sorted(job))
                if key not in seen:
                    seen.add(key)
                    jobs.append(job)
        return jobs

    def sweep(self, arguments: list[str]) -> Any:
        """Launch every job in batches of ``max_batch_size`` (all at once by default), as the basic sweeper."""
        assert self.config is not None and self.launcher is not None
        jobs = self.jobs(arguments)
        size = self.max_batch_size or max(len(jobs), 1)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for result in results:
                _ = result.return_value  # raises when a job failed, after the whole batch ran
            returns.append(results)
        return returns
