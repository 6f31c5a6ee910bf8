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


def test_solve_turns_drops_into_images_and_skips_what_saves_nothing():
    base = Evaluation("base", 0.9, 1000, 0.0)  # 900 correct
    measured = {
        "a": [({"kind": "tile", "window": 2}, Evaluation("a2", 0.899, 1000, 0.1, {"a": 0.05})),  # 1 image, 5 %
              ({"kind": "tile", "window": 3}, Evaluation("a3", 0.895, 1000, 0.1, {"a": 0.08}))],  # 5 images, 8 %
        "b": [({"kind": "learned"}, Evaluation("b", 0.901, 1000, -0.01, {"b": -0.01}))],  # costs more than it saves
    }  # fmt: skip
    assert solve(measured, base, 4) == {"a": {"kind": "tile", "window": 2}, "b": {"kind": "none"}}
    assert solve(measured, base, 5)["a"] == {"kind": "tile", "window": 3}


MEASURED = {  # baseline 900 of 1000 correct; each layer alone: (setting, its evaluation)
    "a": [({"kind": "tile", "window": 2}, Evaluation("a2", 0.899, 1000, 0.05, {"a": 0.05})),  # 1 image, 5 %
          ({"kind": "tile", "window": 3}, Evaluation("a3", 0.880, 1000, 0.09, {"a": 0.09}))],  # 20 images: over
    "b": [({"kind": "tile", "window": 2}, Evaluation("b2", 0.900, 1000, 0.01, {"b": 0.01})),  # free, 1 %
          ({"kind": "learned"}, Evaluation("bl", 0.897, 1000, 0.04, {"b": 0.04}))],  # 3 images, 4 %
}  # fmt: skip
BASE = Evaluation("base", 0.9, 1000, 0.0)


def test_upgrades_are_ordered_by_saving_per_image_and_fit_the_budget_alone():
    off = {"a": {"kind": "none"}, "b": {"kind": "none"}}
    # b2: .01/1 = .010; a2: .05/2 = .025; bl: .04/4 = .010 (ties keep measurement order); a3 is over 5 images
    assert upgrades(MEASURED, BASE, 5, off) == [
        ("a", {"kind": "tile", "window": 2}),
        ("b", {"kind": "tile", "window": 2}),
        ("b", {"kind": "learned"}),
    ]
    # from b2, only the learned predictor saves more at b: (.04 - .01) / 4
    assert upgrades(MEASURED, BASE, 5, {"a": {"kind": "tile", "window": 2}, "b": {"kind": "tile", "window": 2}}) == [
        ("b", {"kind": "learned"})]  # fmt: skip


class Checks:
    """The search's evaluation of whole tables, as a lookup: what each table saves and keeps correct."""

    def __init__(self, results: dict[tuple[str, str], Evaluation], refine: int) -> None:
        self.results, self.tried = results, []
        self.search = type("SearchConfig", (), {"refine": refine})()

    def evaluate(self, predictor: dict) -> Evaluation:
        layers = predictor["layers"]
        key = tuple(candidate_key(layers.get(name, {"kind": "none"})) for name in ("a", "b"))
        self.tried.append(key)
        return self.results[key]


def candidate_key(setting: dict) -> str:
    return setting["kind"] + str(setting.get("window", ""))


def test_refine_keeps_an_upgrade_only_when_the_whole_table_saves_more_within_the_budget():
    results = {
        ("tile2", "none"): Evaluation("c1", 0.898, 1000, 0.05),  # 2 images: kept
        ("tile2", "tile2"): Evaluation("c2", 0.894, 1000, 0.06),  # 6 images together: over, dropped
        ("tile2", "learned"): Evaluation("c3", 0.896, 1000, 0.09),  # 4 images: kept
    }
    start = ({"a": {"kind": "none"}, "b": {"kind": "none"}}, BASE)
    checks = Checks(results, refine=5)
    table, check = refine(checks.evaluate, checks.search.refine, MEASURED, BASE, 5, start, lambda text: None)
    assert checks.tried == [("tile2", "none"), ("tile2", "tile2"), ("tile2", "learned")]
    assert table == {"a": {"kind": "tile", "window": 2}, "b": {"kind": "learned"}} and check.run_id == "c3"
    # search.refine bounds the checks; 0 leaves the table as it was
    one = Checks(results, refine=1)
    assert refine(one.evaluate, 1, MEASURED, BASE, 5, start, lambda text: None)[1].run_id == "c1"
    assert refine(Checks(results, refine=0).evaluate, 0, MEASURED, BASE, 5, start, lambda text: None) == start


def test_the_choice_is_an_algorithm_over_evaluate_callables():
    """Steps 2-5 with the evaluations looked up by hand (no job, no store): the grid measures each layer
    alone, the knapsack within 5 images takes a2 (1 image, 5 %) and b3 (3 images, 4 %), the check of that
    table fits, and no upgrade fits alone (a3 costs 20 images)."""
    from pipeline.fitting.operating_points import SearchConfig, choose

    tile2, tile3 = {"kind": "tile", "window": 2}, {"kind": "tile", "window": 3}
    alone = {("a", 2): (0.899, 0.05), ("a", 3): (0.880, 0.09), ("b", 2): (0.900, 0.01), ("b", 3): (0.897, 0.04)}
    grids, checks = [], []

    def evaluate_grid(tables):
        grids.append(tables)
        found = []
        for table in tables:
            ((name, entry),) = table["layers"].items()
            top1, saving = alone[name, entry["window"]]
            found.append(Evaluation(f"{name}{entry['window']}", top1, 1000, saving, {name: saving}))
        return found

    def evaluate(predictor):
        checks.append(predictor["layers"])
        return Evaluation("check", 0.896, 1000, 0.09)

    search = SearchConfig(budget=0.5, candidates=[tile2, tile3], rounds=1, refine=3)
    choice = choose(evaluate, evaluate_grid, BASE, ["a", "b"], search, lambda text: None)
    assert len(grids) == 1 and len(grids[0]) == 4  # one grid: 2 layers x 2 candidates
    assert choice.table == {"a": tile2, "b": tile3} and choice.check.run_id == "check"
    assert checks == [{"a": tile2, "b": tile3}]  # one check, no refinement that fits


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
    numbers = {"top1_drop": 0.004, "net_mac_saving": 0.3}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = validate_search(compose("search", overrides=["recover=finetune"]))
    text = preset(SearchResult(name, table, numbers, numbers, "run", tmp_path / "p.yaml"), config)
    assert text.startswith("# @package _global_\n# Operating point odd: ")
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
        ("pipeline.search", "search.candidates=[]", "search.candidates is empty"),
        ("pipeline.search", "search.refine=-1", "search.refine must be >= 0"),
        ("pipeline.search", "search.launcher=nope", "search.launcher='nope' is not in conf/launcher/: use one of"),
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
