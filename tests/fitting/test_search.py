"""Operating points (contract section 9): the knapsack by hand, and a small search end to end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipeline.fitting.operating_points import Evaluation, knapsack, refine, register, run, solve, upgrades
from pipeline.job.config import validate
from tests.cli import REPO, runs, store_args

CONF = Path(__file__).resolve().parents[2] / "conf"
register()


def test_knapsack_by_hand():
    # groups of (drop in images, saving, index); option 0 of each group is off
    options = [
        [(0, 0.0, -1), (2, 0.10, 0), (5, 0.30, 1)],
        [(0, 0.0, -1), (1, 0.08, 0), (3, 0.12, 1)],
        [(0, 0.0, -1), (0, 0.02, 0)],  # free saving: always taken
    ]
    # budget 5: (2, .10) + (3, .12) = .22 vs (5, .30) alone = .30 vs (2,.10)+(1,.08) = .18 -> .30 + .02
    assert knapsack(options, 5) == [1, -1, 0]
    # budget 6: (5, .30) + (1, .08) = .38 beats (2, .10) + (3, .12) = .22
    assert knapsack(options, 6) == [1, 0, 0]
    assert knapsack(options, 0) == [-1, -1, 0]


N, RIGHT = 1000, 900  # the hand-worked baseline: images 0-899 right, 900-999 wrong


def ev(run_id: str, worse: int, better: int, saving: float, layers: dict | None = None) -> Evaluation:
    """An evaluation of the N images that gets ``worse`` of the baseline's right images wrong (the first
    ones) and ``better`` of its wrong ones right."""
    right = tuple(worse <= i < RIGHT or RIGHT <= i < RIGHT + better for i in range(N))
    return Evaluation(run_id, sum(right) / N, N, saving, layers or {}, right, "same images")


BASE = ev("base", 0, 0, 0.0)


def test_budget_holds_the_upper_bound_of_the_drop_by_hand():
    from pipeline.fitting.operating_points import Budget

    four = ev("r", 4, 0, 0.1).against(BASE)  # b = 4, c = 0 of 1000: drop 0.4 points
    # SE = sqrt((4/1000 - 0.004^2) / 1000) = 0.0019960; upper bound at 0.95: 0.004 + 1.6449 * 0.0019960
    assert Budget(0.5).bound(four) == pytest.approx(0.0072832, abs=1e-6)
    assert not Budget(0.7).holds(four) and Budget(0.75).holds(four)
    assert Budget(0.4, None).holds(four) and not Budget(0.39, None).holds(four)  # null: the drop itself
    # flips that cancel: b = 10, c = 10 is no net drop but has an interval: SE = sqrt(0.02 / 1000)
    even = ev("r", 10, 10, 0.1).against(BASE)
    assert even.drop == 0 and Budget(0.5).bound(even) == pytest.approx(1.6449 * (0.02 / 1000) ** 0.5, abs=1e-6)
    assert Budget(0.5).images(1000) == 5 and Budget(0.5).images(301) == 1


def test_an_evaluation_pairs_only_with_a_baseline_on_the_same_images():
    from pipeline.fitting.operating_points import SearchError

    other = Evaluation("x", 0.9, N, 0.1, {}, BASE.right, "other images")
    with pytest.raises(SearchError, match="not evaluated on the same images.*search.force=true"):
        other.against(BASE)


def test_solve_costs_a_layer_its_flips_not_its_net_drop_and_skips_what_saves_nothing():
    measured = {
        "a": [({"kind": "tile", "window": 2}, ev("a2", 1, 0, 0.1, {"a": 0.05})),  # 1 flip, 5 %
              ({"kind": "tile", "window": 3}, ev("a3", 6, 5, 0.1, {"a": 0.08}))],  # net 1 image, but 6 flips
        "b": [({"kind": "learned"}, ev("b", 0, 1, -0.01, {"b": -0.01}))],  # costs more than it saves
    }  # fmt: skip
    assert solve(measured, BASE, 4) == {"a": {"kind": "tile", "window": 2}, "b": {"kind": "none"}}
    assert solve(measured, BASE, 6)["a"] == {"kind": "tile", "window": 3}


MEASURED = {  # baseline 900 of 1000 correct; each layer alone: (setting, its evaluation)
    "a": [({"kind": "tile", "window": 2}, ev("a2", 1, 0, 0.05, {"a": 0.05})),  # 1 flip, 5 %
          ({"kind": "tile", "window": 3}, ev("a3", 20, 0, 0.09, {"a": 0.09}))],  # 20 flips: over
    "b": [({"kind": "tile", "window": 2}, ev("b2", 0, 0, 0.01, {"b": 0.01})),  # free, 1 %
          ({"kind": "learned"}, ev("bl", 3, 0, 0.04, {"b": 0.04}))],  # 3 flips, 4 %
}  # fmt: skip
POINT = None  # search.confidence=null: the budget compares the drop itself


def test_upgrades_are_ordered_by_saving_per_flip_and_meet_the_budget_alone():
    from pipeline.fitting.operating_points import Budget

    off = {"a": {"kind": "none"}, "b": {"kind": "none"}}
    # b2: .01/1 = .010; a2: .05/2 = .025; bl: .04/4 = .010 (ties keep measurement order); a3 is over 0.5 points
    assert upgrades(MEASURED, BASE, Budget(0.5, POINT), off) == [
        ("a", {"kind": "tile", "window": 2}),
        ("b", {"kind": "tile", "window": 2}),
        ("b", {"kind": "learned"}),
    ]
    # from b2, only the learned predictor saves more at b: (.04 - .01) / 4
    two = {"a": {"kind": "tile", "window": 2}, "b": {"kind": "tile", "window": 2}}
    assert upgrades(MEASURED, BASE, Budget(0.5, POINT), two) == [("b", {"kind": "learned"})]
    # at 95 % confidence bl alone (b = 3: bound 0.3 + 1.645 * 0.173 = 0.585 points) no longer meets 0.5
    assert upgrades(MEASURED, BASE, Budget(0.5), two) == []


class Checks:
    """The search's evaluation of whole tables, as a lookup: what each table saves and keeps correct."""

    def __init__(self, results: dict[tuple[str, str], Evaluation]) -> None:
        self.results, self.tried = results, []

    def evaluate(self, predictor: dict) -> Evaluation:
        layers = predictor["layers"]
        key = tuple(candidate_key(layers.get(name, {"kind": "none"})) for name in ("a", "b"))
        self.tried.append(key)
        return self.results[key]


def candidate_key(setting: dict) -> str:
    return setting["kind"] + str(setting.get("window", ""))


def test_refine_keeps_an_upgrade_only_when_the_whole_table_saves_more_within_the_budget():
    from pipeline.fitting.operating_points import Budget

    results = {
        ("tile2", "none"): ev("c1", 2, 0, 0.05),  # 2 images: kept
        ("tile2", "tile2"): ev("c2", 6, 0, 0.06),  # 6 images together: over, dropped
        ("tile2", "learned"): ev("c3", 5, 1, 0.09),  # 4 images net: kept
    }
    start = ({"a": {"kind": "none"}, "b": {"kind": "none"}}, BASE)
    budget = Budget(0.5, POINT)
    checks = Checks(results)
    table, check = refine(checks.evaluate, 5, MEASURED, BASE, budget, start, lambda text: None)
    assert checks.tried == [("tile2", "none"), ("tile2", "tile2"), ("tile2", "learned")]
    assert table == {"a": {"kind": "tile", "window": 2}, "b": {"kind": "learned"}} and check.run_id == "c3"
    # search.refine bounds the checks; 0 leaves the table as it was
    assert refine(Checks(results).evaluate, 1, MEASURED, BASE, budget, start, lambda text: None)[1].run_id == "c1"
    assert refine(Checks(results).evaluate, 0, MEASURED, BASE, budget, start, lambda text: None) == start
    # at 95 % confidence c3 (b = 5, c = 1: bound 0.4 + 1.645 * 0.244 = 0.80 points) is over 0.5: dropped
    confident = Checks(results)
    assert refine(confident.evaluate, 5, MEASURED, BASE, Budget(0.5), start, lambda text: None)[1].run_id == "c1"


def test_the_revert_pass_turns_off_the_most_flips_per_saving_first_until_the_whole_table_fits():
    from pipeline.fitting.operating_points import Budget, revert

    tile2, learned = {"kind": "tile", "window": 2}, {"kind": "learned"}
    # alone: a2 costs (1 + 1) / .05 = 40 per unit saving, bl (1 + 3) / .04 = 100: bl goes first
    over = ({"a": tile2, "b": learned}, ev("both", 9, 0, 0.09))  # together 9 flips: over 0.5 points
    checks = Checks({("tile2", "none"): ev("a only", 2, 0, 0.05), ("none", "none"): BASE})
    found = revert(checks.evaluate, 4, MEASURED, BASE, Budget(0.5, POINT), over, 0.0, lambda text: None)
    assert checks.tried == [("tile2", "none")] and found == ({"a": tile2, "b": {"kind": "none"}}, checks.results[
        ("tile2", "none")])  # fmt: skip
    # a table that saves no more than the best one already found is not worth reverting to
    none = Checks({("tile2", "none"): ev("a only", 2, 0, 0.05)})
    assert revert(none.evaluate, 4, MEASURED, BASE, Budget(0.5, POINT), over, 0.05, lambda text: None) is None
    # search.revert=0: no check
    assert revert(none.evaluate, 0, MEASURED, BASE, Budget(0.5, POINT), over, 0.0, lambda text: None) is None


def grid_of(alone: dict[tuple[str, int], tuple[int, float]]):
    """A fake per-layer grid: each one-layer table's evaluation from ``alone[layer, window]`` = (flips, saving)."""

    def evaluate_grid(tables):
        found = []
        for table in tables:
            ((name, entry),) = table["layers"].items()
            flips, saving = alone[name, entry["window"]]
            found.append(ev(f"{name}{entry['window']}", flips, 0, saving, {name: saving}))
        return found

    return evaluate_grid


def test_the_choice_is_an_algorithm_over_evaluate_callables():
    """Steps 2-6 with the evaluations looked up by hand (no job, no store): the grid measures each layer
    alone, the knapsack within 5 flips takes a2 (1 flip, 5 %) and b3 (3 flips, 4 %), the check of that
    table is over the budget at 95 % confidence (b = 4: bound 0.73 points), so the revert pass turns b off
    (most flips per saving) and the check of a2 alone (b = 1: bound 0.26) meets it; no upgrade meets the
    budget alone but b2, which saves more at b than off and whose check then fits."""
    from pipeline.fitting.operating_points import SearchConfig, choose

    tile2, tile3 = {"kind": "tile", "window": 2}, {"kind": "tile", "window": 3}
    alone = {("a", 2): (1, 0.05), ("a", 3): (20, 0.09), ("b", 2): (0, 0.01), ("b", 3): (3, 0.04)}
    grids, checks = [], []
    measure = grid_of(alone)

    def evaluate_grid(tables):
        grids.append(tables)
        return measure(tables)

    results = {("a2", "b3"): ev("both", 4, 0, 0.09), ("a2", "off"): ev("a2 only", 1, 0, 0.05),
               ("a2", "b2"): ev("a2 b2", 1, 0, 0.06)}  # fmt: skip

    def evaluate(predictor):
        layers = predictor["layers"]
        checks.append(layers)
        key = tuple(f"{name}{layers[name]['window']}" if name in layers else "off" for name in ("a", "b"))
        return results[key]

    search = SearchConfig(budget=0.5, candidates=[tile2, tile3], rounds=1, refine=3, revert=2, uniform=False)
    choice = choose(evaluate, evaluate_grid, BASE, ["a", "b"], search, lambda text: None)
    assert len(grids) == 1 and len(grids[0]) == 4  # one grid: 2 layers x 2 candidates
    assert checks == [{"a": tile2, "b": tile3}, {"a": tile2}, {"a": tile2, "b": tile2}]
    assert choice.table == {"a": tile2, "b": tile2} and choice.check.run_id == "a2 b2"
    # search.confidence=null: the knapsack's table (a drop of 0.4 points) meets 0.5 as it is
    checks.clear()
    point = SearchConfig(
        budget=0.5, candidates=[tile2, tile3], rounds=1, refine=0, revert=2, confidence=None, uniform=False
    )
    assert choose(evaluate, evaluate_grid, BASE, ["a", "b"], point, lambda text: None).check.run_id == "both"
    assert checks == [{"a": tile2, "b": tile3}]


def test_uniform_tables_are_checked_and_win_when_layers_flip_the_same_images():
    """The knapsack sees a1 + b1 at 6 summed flips (over 5 at budget 0.5 on 1000 images with the drop
    itself), so it takes a2 alone (4 flips, 6 %); the uniform check of candidate 1 at both layers flips only 3 images
    together (the same hard ones) and saves more: it is the choice. Candidate 2 at every layer is over
    the budget and becomes the revert pass's start, which turns b off (its flips per saving are higher)."""
    from pipeline.fitting.operating_points import SearchConfig, choose

    one, two = {"kind": "tile", "window": 1}, {"kind": "tile", "window": 2}
    alone = {("a", 1): (3, 0.05), ("a", 2): (4, 0.06), ("b", 1): (3, 0.04), ("b", 2): (30, 0.08)}

    evaluate_grid = grid_of(alone)
    results = {("a1", "b1"): ev("uniform 1", 3, 0, 0.09), ("a2", "b2"): ev("uniform 2", 40, 0, 0.14),
               ("a1", "off"): ev("a1 only", 3, 0, 0.05), ("off", "b1"): ev("b1 only", 3, 0, 0.04),
               ("a2", "off"): ev("a2 only", 4, 0, 0.06)}  # fmt: skip
    checks = []

    def evaluate(predictor):
        layers = predictor["layers"]
        key = tuple(f"{name}{layers[name]['window']}" if name in layers else "off" for name in ("a", "b"))
        checks.append(key)
        return results[key]

    search = SearchConfig(budget=0.5, candidates=[one, two], rounds=1, refine=0, revert=1, confidence=None)
    choice = choose(evaluate, evaluate_grid, BASE, ["a", "b"], search, lambda text: None)
    # the uniform checks come first, then the knapsack's table (a2 alone: 4 flips, the most saving within 5)
    assert checks[:3] == [("a1", "b1"), ("a2", "b2"), ("a2", "off")]
    assert choice.table == {"a": one, "b": one} and choice.check.run_id == "uniform 1"
    # without them the search cannot see it
    checks.clear()
    search.uniform = False
    assert choose(evaluate, evaluate_grid, BASE, ["a", "b"], search, lambda text: None).check.run_id == "a2 only"
    assert ("a1", "b1") not in checks


def test_search_group_shares_every_candidate_decision_and_names_the_point():
    from pipeline.fitting.operating_points import SearchConfig

    search = SearchConfig(candidates=[{"kind": "tile", "window": 3}, {"kind": "learned", "threshold": 0.3}], group=8)
    assert search.candidates == [{"kind": "tile", "window": 3, "group": 8},
                                 {"kind": "learned", "threshold": 0.3, "group": 8}]  # fmt: skip
    assert SearchConfig(candidates=[{"kind": "tile", "window": 3}]).candidates == [{"kind": "tile", "window": 3}]


SMALL_SEARCH = (
    "search.calibration=300", "search.rounds=2", "search.refine=2", "search.name=tiny", "data.batch_size=300",
    "data.limit=1000", "search.candidates=[{kind: tile, window: 2}, {kind: tile, window: 3}, "
    "{kind: learned, pattern: checkerboard, window: 2, threshold: 0.3}]",
)  # fmt: skip


def search_config(tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "search",
            overrides=[
                f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifacts={tmp}/artifacts",
                "tracking.experiment=cnp-search-test", f"search.out={tmp}/operating_point/tiny.yaml",
                f"search.grid_dir={tmp}/grids", *SMALL_SEARCH,
                *overrides,
            ],
        )  # fmt: skip


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    return tmp, run(search_config(tmp)), run(search_config(tmp))  # the second reuses every run


def test_a_small_search_runs_end_to_end(searched):
    tmp, result, _ = searched
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("cnp-search-test")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("search") == "true"]
    grids = [r for r in found if r.data.tags.get("sweep.parent") == "true" and r not in parents]
    jobs = [r for r in found if r.data.tags.get("sweep.parent") != "true"]
    assert parents[-1].info.status == "FINISHED" and parents[-1].data.metrics["test/net_mac_saving"] >= 0
    first = min(parents, key=lambda r: r.info.start_time)
    # the per-layer grid ran as one multirun, its parent run nested under the search's
    grid = min(grids, key=lambda r: r.info.start_time)
    assert grid.data.tags["mlflow.parentRunId"] == first.info.run_id and grid.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {first.info.run_id, grid.info.run_id}
    assert sum(r.data.tags["mlflow.parentRunId"] == grid.info.run_id for r in jobs) == 15  # 5 layers x 3
    assert all(r.info.status == "FINISHED" for r in jobs)
    splits = [r.data.params["split"] for r in jobs]
    # 1 baseline + 5 layers x 3 candidates + checks on calibration; the baseline and the result on test
    assert splits.count("test") == 2 and splits.count("calibration") >= 1 + 15 + 1
    assert all(r.data.params["limit"] == "300" for r in jobs if r.data.params["split"] == "calibration")
    assert all(r.data.params["limit"] == "1000" for r in jobs if r.data.params["split"] == "test")
    assert set(result.table) == {"features.0", "features.3", "features.6", "features.8", "features.10"}
    assert any(entry["kind"] != "none" for entry in result.table.values())  # something is predicted
    # the reported numbers are those of the tracked runs: the chosen check on calibration, the result on test
    checked = client.get_run(result.calibration["run_id"]).data
    assert checked.params["split"] == "calibration" and checked.metrics["net_mac_saving"] == pytest.approx(
        result.calibration["net_mac_saving"]
    )
    tested = client.get_run(result.test["run_id"]).data
    assert tested.params["operating_point"] == "tiny" and tested.params["split"] == "test"
    # what it was found for, so the analysis tables it from this run alone (analysis.load.preset_points)
    assert (tested.params["operating_point.budget"], tested.params["operating_point.confidence"]) == ("0.5", "0.95")
    artifacts = [a.path for a in client.list_artifacts(first.info.run_id)]
    assert "tiny.yaml" in artifacts


def test_a_rerun_reuses_every_finished_run(searched):
    tmp, first, second = searched
    assert second.table == first.table and second.test == first.test
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("cnp-search-test")
    jobs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("sweep.parent") != "true"]  # fmt: skip
    assert len(jobs) == len({r.data.tags["config_hash"] for r in jobs})  # nothing evaluated twice


def test_the_result_is_an_operating_point_preset_the_pipeline_runs(searched, tmp_path):
    tmp, result, _ = searched
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    shutil.copy(result.path, conf / "operating_point" / "tiny.yaml")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = validate(compose("config", overrides=["model=alexnet_fmnist", "operating_point=tiny"]))
        assert cfg.predictor.kind == "none" and cfg.operating_point.model == "alexnet_fmnist"
        applied = {name: {k: v for k, v in vars(entry).items() if v is not None} for name, entry in
                   cfg.predictor.layers.items()}  # fmt: skip
        expected = {name: entry for name, entry in result.table.items() if entry["kind"] != "none"}
        assert {n: {k: getattr(v, "value", v) for k, v in e.items()} for n, e in applied.items()} == expected
        with pytest.raises(ValueError, match="was found for model alexnet_fmnist, not vgg16_fmnist"):
            validate(compose("config", overrides=["model=vgg16_fmnist", "operating_point=tiny"]))


def test_a_preset_keeps_any_name_and_path_it_is_given(tmp_path):
    """The preset is written by OmegaConf: a name or a recover value holding ': ', quotes or '#' reads back
    as it was (a hand-built YAML line would break on them), under its comment header."""
    from pipeline.fitting.operating_points import SearchResult, preset
    from pipeline.fitting.operating_points import validate as validate_search

    name = 'odd: "name" #1'
    table = {"features.0": {"kind": "tile", "pattern": "cross", "window": 3}, "features.3": {"kind": "none"}}
    numbers = {"top1_drop": 0.004, "net_mac_saving": 0.3, "top1_drop_low": 0.001, "top1_drop_high": 0.007,
               "top1_drop_upper": 0.0065, "flips_worse": 30, "flips_better": 10, "mcnemar_p": 0.001,
               "images": 5000}  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = validate_search(compose("search", overrides=["recover=finetune"]))
    text = preset(SearchResult(name, table, numbers, numbers, "run", tmp_path / "p.yaml"), config)
    assert text.startswith("# @package _global_\n# Operating point odd: ")
    assert ("# Calibration: net MAC saving 30.0 %, top-1 drop 0.40 points (95 % interval 0.10 to 0.70, one-sided "
            "upper bound 0.65; 30 worse / 10 better of 5000 images).") in text  # fmt: skip
    assert "# Budget: 0.5 top-1 points (its 95 % upper bound) on calibration." in text
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "operating_point" / "odd.yaml").write_text(text)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = validate(compose("config", overrides=["model=alexnet_fmnist", "operating_point=odd"]))
    assert cfg.operating_point.name == name and cfg.recover.kind == "finetune"
    assert list(cfg.predictor.layers) == ["features.0"] and cfg.predictor.layers["features.0"].window == 3


@pytest.mark.parametrize(
    ("module", "override", "message"),
    [
        ("pipeline.search", "search.budget=-1", "search.budget must be >= 0"),
        ("pipeline.search", "search.budget=inf", "search.budget must be >= 0 and <= 100"),
        ("pipeline.search", "search.budget=1e6", "search.budget must be >= 0 and <= 100"),
        ("pipeline.search", "search.name='a: b'", "search.name='a: b' cannot name a preset file"),
        ("pipeline.search", "search.name=../../x", "search.name='../../x' cannot name a preset file"),
        ("pipeline.search", "search.candidates=[]", "search.candidates is empty"),
        ("pipeline.search", "search.refine=-1", "search.refine and search.revert must be >= 0"),
        ("pipeline.search", "search.revert=-2", "search.refine and search.revert must be >= 0"),
        ("pipeline.search", "search.confidence=1.5", "search.confidence must lie strictly between 0 and 1"),
        ("pipeline.search", "search.confidence=0", "search.confidence must lie strictly between 0 and 1"),
        ("pipeline.search", "search.confidence=nan", "search.confidence must lie strictly between 0 and 1"),
        ("pipeline.search", "search.confidence=high", "search.confidence"),
        ("pipeline.search", "search.launcher=nope", "search.launcher='nope' is not in conf/launcher/: use one of"),
        ("pipeline.search", "search.group=0", "search.group must be an integer >= 1"),
        ("pipeline.search", "search.candidates=[{kind: tile, window: 3, group: -2}]", "predictor.group must be"),
        ("pipeline.train_predictor", "window=1", "window must be >= 2"),
        ("pipeline.train_predictor", "pattern=spiral", "pattern must be one of"),
    ],
)
def test_bad_input_of_the_search_and_the_trainer_is_one_error_line(tmp_path, module, override, message):
    from tests.cli import run_pipeline

    result = run_pipeline(tmp_path, override, module=module)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Error executing job" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_search_and_its_open_runs_killed(tmp_path, signum):
    """A search stopped mid-way (SIGTERM, or a closed terminal) leaves no run RUNNING."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipeline.search", f"--config-path={CONF}", *SMALL_SEARCH,
               *store_args(tmp_path)]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:  # the per-layer grid's first job is done: the grid's multirun is under way
        if "predictor=none+1 layer: mac_saving=" in line:
            break
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "open runs were marked KILLED" in err and "Traceback" not in err
    found = runs(tmp_path, include_parents=True)
    assert found and not [r for r in found if r.info.status == "RUNNING"]
    # the search's parent run and its grid's (the multirun stopped by the search on its way out)
    assert [r.info.status for r in found if r.data.tags.get("sweep.parent") == "true"] == ["KILLED", "KILLED"]
