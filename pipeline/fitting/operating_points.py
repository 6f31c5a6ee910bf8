"""Operating points: the most net MACs saved within a top-1 budget, found layer by layer (contract section 9).

    python -m pipeline.search model=alexnet_fmnist search.budget=0.5

Every choice is made on a *calibration* set: ``search.calibration`` images of the training split's
held-out part (``data.split=calibration``, disjoint from the part recovery and predictor training fit
on); the evaluation images are read once, at the end, to evaluate what was chosen. Steps, each
evaluation an ordinary tracked job run (``pipeline.job.runner.run``) under one parent run of the search:

1. the baseline on calibration (nothing predicted);
2. for every layer and every candidate setting (``search.candidates``: kinds, windows, patterns,
   thresholds), that layer alone predicted: its net MAC saving, and image by image against the
   baseline the images it gets wrong that the baseline gets right (its *flips*, b of contract
   section 11);
3. the per-layer table that maximizes the summed net saving with the summed flips within the budget
   in images (each layer one candidate or off; a multiple-choice knapsack, solved exactly). Flips, not
   the net drop b - c: a layer that loses 10 images and wins 9 back is not free, and flips add up across
   layers far better than net drops do;
4. every candidate applied at every layer (``search.uniform``: one check per candidate), each checked
   on calibration as a whole: the knapsack sums what each layer loses alone, which overstates what
   layers lose together when they flip the same hard images (the learned predictor's layers do), so a
   uniform table can save more within the budget than any table the knapsack sees;
5. the knapsack's table checked on calibration as a whole and corrected: the knapsack's budget is scaled down
   while the check exceeds the real budget and up while it stays within it (``search.rounds``
   checks); the best table that met the budget is kept;
6. a revert pass (``search.revert`` checks, as Intel Neural Compressor's tuning falls back one op at a
   time): the checked table closest to the budget among those that saved more but exceeded it, with its
   layers turned off one at a time, most flips per saving first, each step checked as a whole, until it
   meets the budget; kept when it then saves more than the best;
7. that table refined greedily: single-layer upgrades (a candidate that saves more at its layer),
   most added saving per flip first, each checked as a whole on calibration and kept when the table
   then saves more within the budget (``search.refine`` checks);
8. that table and the baseline evaluated on the evaluation images, with the paired statistics of the
   drop.

A table *meets the budget* when the one-sided upper bound of its calibration drop at
``search.confidence`` (contract section 11: drop + z_q * SE, paired against the baseline) is at most
``search.budget`` points; ``search.confidence=null`` compares the drop itself instead. Layers interact
(on the VGG-16 twin 13 layers that each lose at most one image lose 48 together), so only whole tables
are ever accepted: the per-layer numbers rank, the checks decide. Cost: one evaluation per layer and
candidate, plus at most ``candidates (uniform) + rounds + revert + refine`` checks (on 2 cores a check
of the VGG-16 twin on 10,000 images takes about a minute).

The top-level ``recover`` applies to the checks and the final evaluation, and to the per-layer
measurements when ``search.measure_recover`` is true (BatchNorm re-estimation is cheap there;
fine-tuning is not). Rerunning a search reuses every finished run. The result is an operating
point preset (``conf/operating_point/<name>.yaml`` format) written to ``search.out`` and logged as
an artifact of the parent run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.app import plain_config, validate_as
from pipeline.errors import PipelineError
from pipeline.job.config import PipelineConfig
from pipeline.job.config import register as register_job
from pipeline.job.runner import HydraJob
from pipeline.job.runner import run as run_job
from pipeline.measurement.paired import PairedDrop, paired_drop, read_outcomes
from pipeline.tracking.keys import (
    PREDICTIONS_ARTIFACT,
    SEARCH_CONFIDENCE_TAG,
    SEARCH_EVALUATIONS,
    SEARCH_METRICS,
    SEARCH_PAIRED,
    SEARCH_SECONDS,
    SEARCH_TAG,
)


class SearchError(PipelineError):
    """Bad search settings; the message says what to do."""


CONF = Path(__file__).resolve().parents[2] / "conf"
GRID_EXPERIMENT = "cnp_search_grid"  # the per-layer grid's settings, as an experiment preset of the multirun
OPERATING_POINTS = Path("outputs/conf/operating_point")  # pipeline.search's presets, on the config search path


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # conf/operating_point/<name>.yaml, and a YAML scalar


@dataclass
class SearchConfig:
    """``search.*`` of ``python -m pipeline.search`` (conf/search.yaml)."""

    budget: float = 0.5  # top-1 points the operating point may lose on calibration
    confidence: Optional[float] = 0.95  # the budget holds the drop's one-sided upper bound; null: the drop itself
    calibration: int = 10000  # calibration images, spread over the training split
    candidates: list[dict[str, Any]] = field(default_factory=list)  # per-layer settings to try
    group: Optional[int] = None  # g: every candidate's decision shared by g output channels (g-wide hardware)
    measure_recover: bool = True  # the recovery also in the per-layer measurements
    uniform: bool = True  # check every candidate at every layer too (one check per candidate)
    rounds: int = 6  # checks of the combined table on calibration
    revert: int = 8  # checks of the revert pass: layers of a table over the budget turned off one at a time
    refine: int = 12  # greedy single-layer upgrades of the checked table, each checked on calibration
    name: Optional[str] = None  # null: <model>-b<budget>, plus -<recover kind> when it recovers
    out: Optional[str] = None  # null: outputs/conf/operating_point/<name>.yaml (operating_point=<name>)
    force: bool = False  # rerun evaluations that already have a FINISHED run
    launcher: str = "basic"  # runs the per-layer grid as one multirun: basic, joblib, slurm, ... (conf/launcher/)
    grid_dir: str = "outputs/multirun/search"  # the per-layer grids' sweep folders (one per search and start)

    def __post_init__(self) -> None:
        if not 0 <= self.budget <= 100:  # NaN and inf fail too; the knapsack's memory grows with the budget
            raise ValueError(f"search.budget must be >= 0 and <= 100 top-1 points, got {self.budget}")
        if self.name is not None and not PRESET_NAME.fullmatch(self.name):
            raise ValueError(
                f"search.name={self.name!r} cannot name a preset file: use letters, digits and _ . + - "
                "(starting with a letter or digit), e.g. search.name=alexnet_fmnist_b1"
            )
        if not (CONF / "launcher" / f"{self.launcher}.yaml").is_file():
            known = ", ".join(sorted(path.stem for path in (CONF / "launcher").glob("*.yaml")))
            raise ValueError(f"search.launcher={self.launcher!r} is not in conf/launcher/: use one of {known}")
        if self.refine < 0 or self.revert < 0:
            raise ValueError(
                f"search.refine and search.revert must be >= 0 checks (0: none), got {self.refine}, {self.revert}"
            )
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:  # NaN fails too
            raise ValueError(
                f"search.confidence must lie strictly between 0 and 1 (0.95: a 95 % one-sided bound), got "
                f"{self.confidence}; search.confidence=null compares the drop itself with the budget"
            )
        if self.calibration < 1 or self.rounds < 1:
            raise ValueError(
                f"search.calibration and search.rounds must be >= 1, got {self.calibration}, {self.rounds}"
            )
        if not self.candidates:
            raise ValueError(
                "search.candidates is empty: give per-layer settings to try, e.g. {kind: tile, window: 3}"
            )
        if self.group is not None:
            if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
                raise ValueError(
                    f"search.group must be an integer >= 1 (the output channels that share one decision), or null "
                    f"(the candidates as given), got {self.group!r}"
                )
            self.candidates = [{**candidate, "group": self.group} for candidate in self.candidates]
        from pipeline.predictors import LayerSetting, layer_setting, schema_of

        for number, candidate in enumerate(self.candidates):
            setting = layer_setting(candidate, f"search.candidates[{number}]")
            if setting.kind is None:
                raise ValueError(f"search.candidates[{number}] needs a kind (tile, learned, ...): {candidate}")
            assert isinstance(setting, LayerSetting)
            try:  # its values against its kind's schema now, not in a job of the grid
                schema_of({key: value for key, value in candidate.items() if key != "window"})
            except Exception as exc:
                detail = str(exc).strip().splitlines()[0]
                raise ValueError(f"search.candidates[{number}]: {detail}") from None


@dataclass
class SearchAppConfig(PipelineConfig):
    """``python -m pipeline.search``: the pipeline's keys (model, data, recover, tracking) and ``search``."""

    search: SearchConfig = MISSING  # conf/search.yaml


def register() -> None:
    """The job's schemas and ``search_schema`` (conf/search.yaml) in Hydra's ConfigStore."""
    register_job()
    ConfigStore.instance().store(name="search_schema", node=SearchAppConfig)


@dataclass
class Evaluation:
    """What one tracked run measured, image by image."""

    run_id: str
    top1: float
    images: int
    net_mac_saving: float
    layer_net_saving: dict[str, float] = field(default_factory=dict)
    right: tuple[bool, ...] = ()  # per evaluated image, in evaluation order: classified right (predictions.csv)
    pairing: str = ""  # the evaluated images and labels (a digest): two runs pair only when theirs agree
    _paired: dict[str, PairedDrop] = field(default_factory=dict, repr=False, compare=False)

    def against(self, base: Evaluation) -> PairedDrop:
        """This run's drop against ``base``, image by image (contract section 11)."""
        if base.run_id not in self._paired:
            if len(self.right) != self.images or len(base.right) != base.images:
                raise SearchError(f"run {self.run_id} or its baseline {base.run_id} has no per-image outcomes")
            if self.pairing != base.pairing:
                raise SearchError(
                    f"run {self.run_id} and its baseline {base.run_id} were not evaluated on the same images "
                    "(their predictions.csv differ in images or labels): rerun the search with search.force=true"
                )
            self._paired[base.run_id] = paired_drop(base.right, self.right)
        return self._paired[base.run_id]

    def saving_at(self, layer: str) -> float:
        """The net saving at ``layer`` (a run predicting that layer alone: its own saving)."""
        return self.layer_net_saving.get(layer, self.net_mac_saving)


@dataclass(frozen=True)
class Budget:
    """``search.budget`` top-1 points, held by the drop's one-sided upper bound at ``confidence`` (None:
    by the drop itself)."""

    points: float
    confidence: Optional[float] = 0.95

    def bound(self, drop: PairedDrop) -> float:
        """What must stay within the budget: drop + z_q * SE, or the drop (a fraction, not points)."""
        return drop.drop if self.confidence is None else drop.upper(self.confidence)

    def holds(self, drop: PairedDrop) -> bool:
        return self.bound(drop) <= self.points / 100 + 1e-12

    def images(self, images: int) -> int:
        """The budget in images of ``images``: the knapsack's starting budget of flips."""
        return math.floor(self.points / 100 * images + 1e-9)

    def describe(self) -> str:
        how = "the drop itself" if self.confidence is None else f"its {100 * self.confidence:g} % upper bound"
        return f"{self.points:g} top-1 points ({how})"


def paired_numbers(run: Evaluation, base: Evaluation, budget: Budget) -> dict[str, Any]:
    """A result's numbers: its net saving, its run, and its paired drop with interval, bound and McNemar p."""
    drop = run.against(base)
    return {"net_mac_saving": run.net_mac_saving, "run_id": run.run_id, **drop.columns(),
            "top1_drop_upper": drop.upper(budget.confidence or 0.95),
            "images": run.images}  # fmt: skip


@dataclass
class SearchResult:
    name: str
    table: dict[str, dict[str, Any]]  # layer name -> setting ({"kind": "none"} when off)
    calibration: dict[str, Any]  # :func:`paired_numbers`: net_mac_saving, top1_drop and its paired statistics
    test: dict[str, Any]
    parent_run: str
    path: Path


def job_config(cfg: DictConfig, predictor: dict[str, Any], split: str, limit: int | None, recover: bool,
               layer: str = "all") -> DictConfig:  # fmt: skip
    """A pipeline job's config from the search's: its model, data, seed, tracking; the given predictor."""
    plain = plain_config(cfg)
    search = plain.pop("search")
    plain.pop("hydra", None)
    plain.pop("operating_point", None)
    plain["predictor"] = predictor
    plain["window"] = 1
    plain["layer"] = layer
    plain["data"] = {**plain["data"], "split": split, "limit": limit}
    if not recover:
        plain["recover"] = {"kind": "none"}
    plain["force"] = bool(search.get("force", False))
    return OmegaConf.create(plain)


class Search:
    """One search: the evaluations it runs (tracked, reused when done) and its bookkeeping."""

    def __init__(self, cfg: DictConfig, config: SearchAppConfig) -> None:
        from pipeline.tracking.tracker import Tracker

        self.cfg, self.config, self.search = cfg, config, config.search
        self.tracker = Tracker(config.tracking)
        candidates = hashlib.sha256(json.dumps(self.search.candidates, sort_keys=True).encode()).hexdigest()[:8]
        recover = config.recover.kind
        self.key = (f"search:{config.model.name}:b{self.search.budget:g}:n{self.search.calibration}:s{config.seed}"
                    f":r{recover}:c{candidates}:m{int(self.search.measure_recover)}"
                    f":g{self.search.refine}:v{self.search.revert}:q{self.search.confidence}"
                    f":u{int(self.search.uniform)}")  # fmt: skip
        self.name = self.search.name or f"{config.model.name}-b{self.search.budget:g}" + (
            f"-g{self.search.group}" if self.search.group is not None else ""
        ) + (f"-{recover}" if recover != "none" else "")
        tags = {SEARCH_TAG: "true", "model": config.model.name, "operating_point": self.name,
                "budget": f"{self.search.budget:g}", "calibration": str(self.search.calibration),
                SEARCH_CONFIDENCE_TAG: str(self.search.confidence)}  # fmt: skip
        closed = self.tracker.close_stale()
        if closed:
            print(f"closed {len(closed)} run(s) left RUNNING by processes that are gone, as KILLED", flush=True)
        self.parent = self.tracker.start_parent(self.key, f"search {self.name}", tags)
        self.evaluations = 0

    def evaluate(self, predictor: dict[str, Any], split: str = "calibration", recover: bool = True,
                 layer: str = "all", point: bool = False) -> Evaluation:  # fmt: skip
        """One tracked evaluation; ``point``: it is the operating point (its run names the preset)."""
        limit = self.search.calibration if split == "calibration" else self.config.data.limit
        cfg = job_config(self.cfg, predictor, split, limit, recover, layer)
        if point:
            cfg.operating_point = {"name": self.name, "model": self.config.model.name, "budget": self.search.budget,
                                   "confidence": self.search.confidence}  # fmt: skip
        for _attempt in range(2):
            try:
                result = run_job(cfg, HydraJob(sweep=self.key, number=self.evaluations))
            except PipelineError as exc:
                raise SearchError(str(exc)) from None
            if result.metrics:  # this process ran it, or it was done: the job says what it measured
                break
            if self.wait(result.run_id):  # another process evaluates it: its numbers once it is done
                result.metrics = self.tracker.run_metrics(result.run_id)
                break
        else:
            raise SearchError(
                f"run {result.run_id} did not finish twice: look at it in MLflow, then rerun the search"
            )
        self.evaluations += 1
        return self.read(result.run_id, result.metrics)

    def evaluate_grid(self, predictors: list[dict[str, Any]], recover: bool) -> list[Evaluation]:
        """Each predictor (a per-layer table) one job on calibration, all as one multirun through
        ``search.launcher`` (``python -m pipeline -m``); their numbers come from the jobs' results. A job
        whose run exists already is reused by its identity, like any sweep's."""
        if not predictors:
            return []
        base = plain_config(job_config(self.cfg, {"kind": "none"}, "calibration", self.search.calibration, recover))
        base.pop("predictor")
        base["tracking"]["parent"] = self.parent  # the grid's parent run nests under the search's
        sweep = Path(self.search.grid_dir).resolve() / hashlib.sha256(self.key.encode()).hexdigest()[:12]
        sweep = sweep / time.strftime("%Y-%m-%d_%H-%M-%S")
        values = ",".join(_override_value(p["layers"]) for p in predictors)
        with tempfile.TemporaryDirectory() as folder:  # the settings as a preset: no value is reparsed from text
            (Path(folder) / "experiment").mkdir()
            preset = "# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(base))
            (Path(folder) / "experiment" / f"{GRID_EXPERIMENT}.yaml").write_text(preset)
            command = [
                sys.executable, "-m", "pipeline", "-m", f"experiment={GRID_EXPERIMENT}",
                f"hydra.searchpath=[file://{OPERATING_POINTS.parent.resolve()},file://{folder}]",
                f"model={base['model']['name']}", f"data={base['data']['name']}",
                f"recover={base['recover']['kind']}",
                f"launcher={self.search.launcher}", "predictor=none", f"++predictor.layers={values}",
                f"hydra.sweep.dir={sweep}",
            ]  # fmt: skip
            path = os.pathsep.join(filter(None, [str(CONF.parent), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "PYTHONPATH": path}
            child = subprocess.Popen(command, env=env)
            try:
                code = child.wait()
            except BaseException:  # interrupted: the grid's own handlers close its open runs as KILLED
                child.terminate()
                child.wait(timeout=60)
                raise
        found = []
        for number in range(len(predictors)):
            path = sweep / str(number) / "result.json"
            result = json.loads(path.read_text()) if path.is_file() else {"status": "failed"}
            if result["status"] == "failed":
                raise SearchError(f"job {number} of the per-layer grid failed (exit {code}): see {sweep}/{number}")
            metrics = result.get("metrics") or {}
            if not metrics and self.wait(result["run_id"]):  # another process held it: its numbers once done
                metrics = self.tracker.run_metrics(result["run_id"])
            if not metrics:
                raise SearchError(f"run {result['run_id']} did not finish: see it in MLflow, then rerun the search")
            found.append(self.read(result["run_id"], metrics))
        self.evaluations += len(found)
        return found

    def wait(self, run_id: str, poll_s: float = 5.0) -> bool:
        """Whether ``run_id`` ended FINISHED, waiting while another process still evaluates it."""
        said = False
        while (status := self.tracker.status(run_id)) == "RUNNING":
            if not said:
                print(f"[search {self.name}] waiting for run {run_id}: another process evaluates it", flush=True)
                said = True
            time.sleep(poll_s)
        return status == "FINISHED"

    def read(self, run_id: str, metrics: dict[str, float]) -> Evaluation:
        """A tracked run's numbers and, from its predictions.csv, its outcome image by image."""
        layers = {
            k.split("/")[1]: v for k, v in metrics.items() if k.startswith("layer/") and k.endswith("/net_mac_saving")
        }
        images, top1 = int(metrics["images"]), metrics["top1"]
        text = self.tracker.artifact_text(run_id, PREDICTIONS_ARTIFACT)
        if not text:
            raise SearchError(
                f"run {run_id} has no {PREDICTIONS_ARTIFACT} (it was recorded before runs kept their per-image "
                "outcomes), so its drop has no paired interval: rerun the search with search.force=true"
            )
        try:
            outcomes = read_outcomes(text, images, top1)
        except ValueError as exc:
            raise SearchError(
                f"the {PREDICTIONS_ARTIFACT} of run {run_id} does not match its run ({exc}): it was altered or "
                "copied from another run; rerun the search with search.force=true"
            ) from None
        return Evaluation(run_id, top1, images, metrics["net_mac_saving"], layers, outcomes.right, outcomes.images)


def _override_value(value: Any) -> str:
    """``value`` (dicts, lists, numbers, names) in Hydra's override syntax: ``{features.0: {kind: tile}}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_override_value(item) for item in value) + "]"
    if value is None:
        return "null"
    return str(getattr(value, "value", value))


def candidate_label(candidate: dict[str, Any]) -> str:
    parts = [candidate["kind"]] + [f"{k}={v}" for k, v in candidate.items() if k != "kind"]
    return " ".join(parts)


def knapsack(options: list[list[tuple[int, float, int]]], budget: int) -> list[int]:
    """Per group, the index of one option (drop in images >= 0, saving, option index) maximizing the
    summed saving with the summed drop <= budget. Every group has option 0 = off (0, 0.0)."""
    best = [0.0] + [-math.inf] * budget  # best saving at exactly this drop
    choice: list[list[int]] = [[] for _ in range(budget + 1)]
    for group in options:
        new = [-math.inf] * (budget + 1)
        new_choice: list[list[int]] = [[] for _ in range(budget + 1)]
        for used in range(budget + 1):
            if best[used] == -math.inf:
                continue
            for drop, saving, index in group:
                total = used + drop
                if total <= budget and best[used] + saving > new[total]:
                    new[total] = best[used] + saving
                    new_choice[total] = [*choice[used], index]
        best, choice = new, new_choice
    top = max(range(budget + 1), key=lambda used: best[used])
    return choice[top]


def solve(measured: dict[str, list[tuple[dict, Evaluation]]], base: Evaluation, allowed: int) -> dict[str, dict]:
    """The per-layer table of the best knapsack within ``allowed`` images of summed flips (b of each
    layer alone against ``base``)."""
    names = list(measured)
    options = []
    for name in names:
        group = [(0, 0.0, -1)]
        for index, (_candidate, evaluation) in enumerate(measured[name]):
            saving = evaluation.saving_at(name)
            if saving > 0:
                group.append((evaluation.against(base).flips_worse, saving, index))
        options.append(group)
    chosen = knapsack(options, max(0, allowed))
    table = {}
    for name, index in zip(names, chosen, strict=True):
        table[name] = {"kind": "none"} if index < 0 else dict(measured[name][index][0])
    return table


def run(cfg: DictConfig) -> SearchResult:
    """The whole search; returns the operating point and its numbers. Its parent run ends FINISHED
    with the result, FAILED on an error and KILLED on an interruption."""
    from pipeline.errors import Interrupted

    config = validate(cfg)
    session = Search(cfg, config)
    try:
        return search_within_budget(session)
    except (KeyboardInterrupt, Interrupted):
        session.tracker.end(session.parent, "KILLED")
        raise
    except BaseException:
        session.tracker.end(session.parent, "FAILED")
        raise


Evaluate = Callable[[dict[str, Any]], Evaluation]  # a predictor (a per-layer table) -> its numbers on calibration


@dataclass
class Choice:
    """What the search chose on calibration: the table, its check, and the baseline it is measured from."""

    table: dict[str, dict[str, Any]]
    check: Evaluation
    base: Evaluation


def search_within_budget(session: Search) -> SearchResult:
    """Steps 1-8 of the module docstring: the choice on calibration, then the evaluation images."""
    config, search = session.config, session.config.search
    started = time.perf_counter()
    say = lambda text: print(f"[search {session.name}] {text}", flush=True)  # noqa: E731
    say(
        f"budget {search.budget:g} top-1 points on {search.calibration} calibration images (the training "
        "split's held-out part)"
    )
    base = session.evaluate({"kind": "none"}, recover=False)
    choice = choose(
        session.evaluate, lambda tables: session.evaluate_grid(tables, recover=search.measure_recover),
        base, layer_names(config), search, say,
    )  # fmt: skip
    table, check = choice.table, choice.check
    test_base = session.evaluate({"kind": "none"}, split="test", recover=False)
    test = session.evaluate(operating_predictor(table), split="test", point=True)
    budget = Budget(search.budget, search.confidence)
    result = SearchResult(
        session.name, table, paired_numbers(check, base, budget), paired_numbers(test, test_base, budget),
        session.parent, destination(config, session.name),
    )  # fmt: skip
    write(result, config)
    log(session, result, time.perf_counter() - started)
    say(summary(result, time.perf_counter() - started))
    return result


def choose(evaluate: Evaluate, evaluate_grid: Callable[[list[dict[str, Any]]], list[Evaluation]],
           base: Evaluation, layers: list[str], search: SearchConfig,
           say: Callable[[str], None]) -> Choice:  # fmt: skip
    """Steps 2-7, the algorithm alone: ``evaluate`` measures a whole table on calibration,
    ``evaluate_grid`` many per-layer tables at once; nothing here knows how or where they run."""
    budget = Budget(search.budget, search.confidence)
    allowed = budget.images(base.images)
    say(f"baseline on calibration: top-1 {100 * base.top1:.2f} %; the budget is {budget.describe()}, "
        f"{allowed} images")  # fmt: skip
    measured: dict[str, list[tuple[dict, Evaluation]]] = {name: [] for name in layers}
    grid = [(index, name, dict(candidate)) for index, name in enumerate(layers) for candidate in search.candidates]
    say(f"the per-layer grid: {len(grid)} jobs, one multirun through launcher={search.launcher}")
    evaluations = evaluate_grid([{"kind": "none", "layers": {name: entry}} for _, name, entry in grid])
    for done, ((index, name, entry), evaluation) in enumerate(zip(grid, evaluations, strict=True), 1):
        measured[name].append((entry, evaluation))
        saving, drop = evaluation.saving_at(name), evaluation.against(base)
        say(f"[{done}/{len(grid)}] layer {index} ({name}) {candidate_label(entry)}: net saving {100 * saving:.2f} %, "
            f"{drop.flips_worse} flips worse, {drop.flips_better} better")  # fmt: skip

    best: tuple[dict, Evaluation] | None = None
    over: list[tuple[dict, Evaluation]] = []  # checked tables over the budget

    def record(table: dict[str, dict[str, Any]], check: Evaluation) -> bool:
        nonlocal best
        fits = budget.holds(check.against(base))
        if fits and (best is None or check.net_mac_saving > best[1].net_mac_saving):
            best = (table, check)
        if not fits:
            over.append((table, check))
        return fits

    uniform = search.candidates if search.uniform else []
    for number, candidate in enumerate(uniform, 1):
        table = {name: dict(candidate) for name in layers}
        check = evaluate(operating_predictor(table))
        fits = record(table, check)
        say(f"uniform {number}/{len(uniform)} ({candidate_label(candidate)} at every layer): "
            f"{verdict(check, base, budget)}: {'within' if fits else 'over'} the budget")  # fmt: skip
    low, high, scale = None, None, 1.0  # knapsack budget scales known to fit / to exceed
    for round_ in range(search.rounds):
        table = solve(measured, base, math.floor(allowed * scale))
        check = evaluate(operating_predictor(table))
        fits = record(table, check)
        say(f"check {round_ + 1}/{search.rounds} (knapsack budget x{scale:.3g}): {verdict(check, base, budget)}: "
            f"{'within' if fits else 'over'} the budget")  # fmt: skip
        low, high = (scale, high) if fits else (low, scale)
        if high is None:
            scale *= 2
        elif low is None:
            scale /= 2
        else:
            scale = (low + high) / 2
    floor = best[1].net_mac_saving if best else 0.0
    above = [entry for entry in over if entry[1].net_mac_saving > floor]
    if above and search.revert:  # the one closest to the budget: the fewest reverts to meet it
        start = min(above, key=lambda entry: budget.bound(entry[1].against(base)))
        reverted = revert(evaluate, search.revert, measured, base, budget, start, floor, say)
        if reverted is not None:
            best = reverted
    if best is None:  # nothing fit: refine from predicting nothing
        say("no checked table met the budget: starting the refinement from predicting nothing")
        best = ({name: {"kind": "none"} for name in layers}, base)
    table, check = refine(evaluate, search.refine, measured, base, budget, best, say)
    return Choice(table, check, base)


def verdict(check: Evaluation, base: Evaluation, budget: Budget) -> str:
    """A check's numbers for the log: saving, drop, its bound and its flips."""
    drop = check.against(base)
    bound = "" if budget.confidence is None else f" (upper bound {100 * budget.bound(drop):.2f})"
    return (f"net saving {100 * check.net_mac_saving:.2f} %, drop {100 * drop.drop:.2f} points{bound}, "
            f"{drop.flips_worse} worse / {drop.flips_better} better")  # fmt: skip


def layer_saving(measured: dict[str, list[tuple[dict, Evaluation]]], name: str, setting: dict[str, Any]) -> float:
    """The net saving ``setting`` measured at layer ``name`` alone (0 when off)."""
    return alone(measured, name, setting)[0]


def alone(measured: dict[str, list[tuple[dict, Evaluation]]], name: str,
          setting: dict[str, Any]) -> tuple[float, Evaluation | None]:  # fmt: skip
    """The net saving of ``setting`` at layer ``name`` alone and its evaluation (0 and None when off)."""
    for entry, evaluation in measured[name]:
        if entry == setting:
            return evaluation.saving_at(name), evaluation
    return 0.0, None


def upgrades(measured: dict[str, list[tuple[dict, Evaluation]]], base: Evaluation, budget: Budget,
             table: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Every (layer, candidate) that saves more at its layer than the table's setting there and alone
    meets the budget, most added saving per flip first: per image it loses alone (plus one)."""
    found = []
    for name, options in measured.items():
        current = layer_saving(measured, name, table[name])
        for entry, evaluation in options:
            saving, drop = evaluation.saving_at(name), evaluation.against(base)
            if saving > current and budget.holds(drop):
                found.append(((saving - current) / (1 + drop.flips_worse), name, entry))
    found.sort(key=lambda item: -item[0])
    return [(name, entry) for _ratio, name, entry in found]


def revert(evaluate: Evaluate, checks: int, measured: dict[str, list[tuple[dict, Evaluation]]], base: Evaluation,
           budget: Budget, start: tuple[dict, Evaluation], floor: float,
           say: Callable[[str], None]) -> tuple[dict, Evaluation] | None:  # fmt: skip
    """Step 6: the layers of a table over the budget turned off one at a time, the one with the most flips
    per saving (measured alone) first, each step checked as a whole; the first table that meets the
    budget, or None when none does within ``checks`` checks (``search.revert``) or before it saves no
    more than ``floor`` (the best table so far)."""
    table, check = start
    for tries in range(1, checks + 1):
        costs = {name: revert_cost(measured, base, name, entry) for name, entry in table.items()
                 if entry["kind"] != "none"}  # fmt: skip
        if not costs:
            return None
        worst = max(costs, key=costs.__getitem__)  # ties: the first in layer order
        table = {**table, worst: {"kind": "none"}}
        check = evaluate(operating_predictor(table))
        fits = budget.holds(check.against(base))
        say(f"revert {tries}/{checks}: {worst} off: {verdict(check, base, budget)}: "
            f"{'within' if fits else 'over'} the budget")  # fmt: skip
        if check.net_mac_saving <= floor:
            return None
        if fits:
            return table, check
    return None


def revert_cost(measured: dict[str, list[tuple[dict, Evaluation]]], base: Evaluation, name: str,
                setting: dict[str, Any]) -> float:  # fmt: skip
    """Flips (plus one) per net saving of ``setting`` at layer ``name`` alone: the revert pass turns the
    highest off first."""
    saving, evaluation = alone(measured, name, setting)
    flips = evaluation.against(base).flips_worse if evaluation is not None else 0
    return (1 + flips) / saving if saving > 0 else math.inf


def refine(evaluate: Evaluate, checks: int, measured: dict[str, list[tuple[dict, Evaluation]]], base: Evaluation,
           budget: Budget, best: tuple[dict, Evaluation], say) -> tuple[dict, Evaluation]:  # fmt: skip
    """Step 7: greedy upgrades of the best checked table, one layer at a time, each checked as a whole on
    calibration and kept when it saves more within the budget (``checks``: ``search.refine``, at most)."""
    table, check = best
    tries = 0
    for name, entry in upgrades(measured, base, budget, table):
        if tries >= checks:
            break
        if layer_saving(measured, name, entry) <= layer_saving(measured, name, table[name]):
            continue  # an earlier upgrade of this layer saves as much
        trial = {**table, name: dict(entry)}
        evaluation = evaluate(operating_predictor(trial))
        tries += 1
        kept = budget.holds(evaluation.against(base)) and evaluation.net_mac_saving > check.net_mac_saving
        say(f"refine {tries}/{checks}: {name} {candidate_label(entry)}: {verdict(evaluation, base, budget)}: "
            f"{'kept' if kept else 'dropped'}")  # fmt: skip
        if kept:
            table, check = trial, evaluation
    return table, check


def operating_predictor(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The predictor of an operating point: nothing by default, the table's settings per layer."""
    return {"kind": "none", "layers": {name: dict(entry) for name, entry in table.items() if entry["kind"] != "none"}}


def layer_names(config: SearchAppConfig) -> list[str]:
    """The model's predictable layers, in index order."""
    from pipeline.networks.layers import discover_layers
    from pipeline.networks.models import build_model

    return [layer.name for layer in discover_layers(build_model(config.model))]


def destination(config: SearchAppConfig, name: str) -> Path:
    """search.out, or outputs/conf/operating_point/<name>.yaml: on conf/config.yaml's search path, so
    ``operating_point=<name>`` finds it."""
    return Path(config.search.out) if config.search.out else OPERATING_POINTS / f"{name}.yaml"


def preset(result: SearchResult, config: SearchAppConfig) -> str:
    """The operating point as a config-group file (conf/operating_point/<name>.yaml)."""
    search = config.search
    header = [
        "@package _global_",
        f"Operating point {result.name}: found by `{search_command(config)}`",
        f"on {search.calibration} calibration images of the training split (the part the model never trained on).",
        f"Budget: {Budget(search.budget, search.confidence).describe()} on calibration.",
        f"Calibration: {numbers_text(result.calibration)}.",
        f"Evaluation images: {numbers_text(result.test)}.",
        "Drops in top-1 points with their paired 95 % intervals; b worse / c better: images the baseline gets",
        "right and this table wrong, and the other way (docs/measurements.md, Uncertainty of drops).",
        f"  python -m pipeline model={config.model.name} operating_point={result.name}",
    ]
    body: dict[str, Any] = {
        "defaults": [{"override /predictor": "none"}, {"override /recover": config.recover.kind}],
        "operating_point": {
            "name": result.name,
            "model": config.model.name,
            "budget": search.budget,
            "confidence": search.confidence,
        },
        "predictor": {"layers": operating_predictor(result.table)["layers"]},
    }
    recover = {k: v for k, v in vars(config.recover).items() if k != "kind"}
    if recover:
        body["recover"] = recover
    comments = "".join(f"# {' '.join(line.splitlines())}\n" for line in header)  # one line each, whatever a name has
    return comments + OmegaConf.to_yaml(OmegaConf.create(body))  # quoted where a value needs it


def numbers_text(numbers: dict[str, Any]) -> str:
    """A result's numbers in words: net saving, drop with its interval and bound, flips."""
    return (
        f"net MAC saving {100 * numbers['net_mac_saving']:.1f} %, top-1 drop {100 * numbers['top1_drop']:.2f} "
        f"points (95 % interval {100 * numbers['top1_drop_low']:.2f} to {100 * numbers['top1_drop_high']:.2f}, "
        f"one-sided upper bound {100 * numbers['top1_drop_upper']:.2f}; {numbers['flips_worse']:.0f} worse / "
        f"{numbers['flips_better']:.0f} better of {numbers['images']:.0f} images)"
    )


def search_command(config: SearchAppConfig) -> str:
    """The command line of this search (its Hydra overrides), or the keys that made it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith(("tracking.", "hydra."))]
    else:
        overrides = [f"model={config.model.name}", f"search.budget={config.search.budget:g}"]
    return " ".join(["python -m pipeline.search", *overrides])


def write(result: SearchResult, config: SearchAppConfig) -> None:
    result.path.parent.mkdir(parents=True, exist_ok=True)
    partial = result.path.with_name(f".{result.path.name}.partial")
    partial.write_text(preset(result, config))
    os.replace(partial, result.path)


def log(session: Search, result: SearchResult, seconds: float) -> None:
    """The result as the parent run's metrics and artifact; the parent ends FINISHED."""
    numbers = {"calibration": result.calibration, "test": result.test}
    metrics = {key: numbers[key.split("/")[0]][key.split("/")[1]] for key in (*SEARCH_METRICS, *SEARCH_PAIRED)}
    metrics |= {SEARCH_EVALUATIONS: session.evaluations, SEARCH_SECONDS: seconds}
    session.tracker.finish(session.parent, metrics, [result.path])


def summary(result: SearchResult, seconds: float) -> str:
    on = {name: entry for name, entry in result.table.items() if entry["kind"] != "none"}
    rows = "; ".join(f"{name}: {candidate_label(entry)}" for name, entry in on.items()) or "every layer off"
    return (
        f"operating point {result.name}: {rows}\n"
        f"  calibration: {numbers_text(result.calibration)}\n"
        f"  evaluation images: {numbers_text(result.test)}\n"
        f"  written to {result.path} ({seconds / 60:.1f} min)"
    )


def validate(cfg: DictConfig) -> SearchAppConfig:
    try:
        return validate_as(cfg, SearchAppConfig)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
