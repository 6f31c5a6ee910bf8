"""Analysis stage: figures, summary and the analysis run from a store of runs with known values.

The store is written directly with MlflowClient (no model is evaluated): three models, windows 1..5,
a configuration run twice (only the newer run may count), a FAILED and a RUNNING run, a sweep parent,
an older analysis run, and a layer sweep. Everything lives under tmp_path, never in outputs/.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis import figures
from analysis.config import AnalysisError
from analysis.report import run
from analysis.summary import OPERATING_POINT_COLUMNS, best_window, is_paper_rule, pareto
from tests.stores import EXPERIMENT, T0, Store, metrics

REPO = Path(__file__).resolve().parents[2]

# model -> (data, limit, {window: (top1, top5, mac_saving)})
KNOWN = {
    # top-5 drops 0.006, 0.029, 0.091, 0.111: windows 2 and 3 pass 0.08 -> best 3 (4 saves more, drops too much)
    "alexnet": ("imagenet", None, {1: (0.565, 0.791, 0.0), 2: (0.55, 0.785, 0.30), 3: (0.525, 0.762, 0.408),
                                   4: (0.47, 0.70, 0.45), 5: (0.45, 0.68, 0.44)}),
    # drops 0.104, 0.119, 0.154, 0.089: none passes -> the smallest drop, window 5
    "vgg16": ("imagenet", None, {1: (0.716, 0.904, 0.0), 2: (0.64, 0.80, 0.25), 3: (0.632, 0.785, 0.362),
                                 4: (0.60, 0.75, 0.34), 5: (0.61, 0.815, 0.33)}),
    # drops 0.01, 0.02, 0.06, 0.09: windows 2-4 pass -> best 3
    "resnet18_fmnist": ("fashion_mnist", 500, {1: (0.90, 0.99, 0.0), 2: (0.85, 0.98, 0.18), 3: (0.80, 0.97, 0.20),
                                               4: (0.70, 0.93, 0.19), 5: (0.60, 0.90, 0.17)}),
}  # fmt: skip
BEST = {"alexnet": 3, "vgg16": 5, "resnet18_fmnist": 3}
ALEXNET_LAYERS = ["features.0", "features.3", "features.6", "features.8", "features.10"]
# alexnet layer sweep: (window, layer param) -> (top1, mac_saving)
LAYER_SWEEP = {(2, "0"): (0.56, 0.01), (2, "features.3"): (0.55, 0.12), (2, "2"): (0.545, 0.05),
               (3, "0"): (0.558, 0.012), (3, "features.3"): (0.54, 0.14), (3, "2"): (0.53, 0.06)}  # fmt: skip
FIGURES = ["fig2_zero_windows", "fig5_breakdown", "fig6_mac_savings", "fig7_accuracy", "fig_layers", "fig_tradeoff",
           "fig_operating_points", "fig_granularity"]  # fmt: skip
SEARCH = {"calibration/top1_drop": 0.004, "calibration/net_mac_saving": 0.21, "test/top1_drop": 0.006,
          "test/net_mac_saving": 0.205}  # fmt: skip
# a search with the paired statistics (contract section 11): 300 calibration images, 1,000 test images
PAIRED_SEARCH = {"calibration/top1_drop": 0.0, "calibration/net_mac_saving": 0.25, "calibration/flips_worse": 2,
                 "calibration/flips_better": 2, "calibration/top1_drop_low": -0.0064,
                 "calibration/top1_drop_high": 0.0064,
                 "calibration/top1_drop_upper": 0.0054, "calibration/mcnemar_p": 1.0, "test/top1_drop": 0.008,
                 "test/net_mac_saving": 0.24, "test/flips_worse": 12, "test/flips_better": 4,
                 "test/top1_drop_low": 0.0005, "test/top1_drop_high": 0.0155, "test/top1_drop_upper": 0.0143,
                 "test/mcnemar_p": 0.077}  # fmt: skip
# resnet18_fmnist with other predictors (new-style params): kind, pattern, threshold, window -> top1, net saving
PREDICTORS = {
    ("oracle", "", None, 1): (0.90, 0.52),
    ("tile", "checkerboard", 0.0, 3): (0.86, 0.15),  # dominated by diagonal 2x2 (0.85, 0.18)? no: smaller drop
    ("tile", "diagonal", 0.05, 3): (0.70, 0.17),  # dominated: diagonal 2x2 saves more for less
    ("random", "diagonal", None, 3): (0.40, 0.20),
}


def build_store(folder: Path) -> dict[str, object]:
    """The test store; returns the run ids the tests check against."""
    store = Store(folder)
    ids: dict[str, object] = {"runs": {}}
    # the sweep parent and an earlier analysis run: with job params and the latest start, yet never read
    late, zeros = T0 + 10**8, metrics(2, 0.0, 0.0, 0.0)
    parent = store.job(
        "alexnet", "imagenet", None, 2, zeros, start=late, config_hash="p", tags={"sweep.parent": "true"}
    )
    store.job("alexnet", "imagenet", None, 3, zeros, start=late, config_hash="a", tags={"analysis": "true"})
    for model, (data, limit, windows) in KNOWN.items():
        for window, (top1, top5, saving) in windows.items():
            tags = {"mlflow.parentRunId": parent}
            ids["runs"][model, window] = store.job(
                model, data, limit, window, metrics(window, top1, top5, saving), tags=tags
            )
    # the same alexnet window-3 config, run earlier with other numbers: only the newer run counts
    ids["older"] = store.job("alexnet", "imagenet", None, 3, metrics(3, 0.10, 0.79, 0.99), start=T0 - 10_000,
                             config_hash="alexnet-imagenet-None-3-all")  # fmt: skip
    # a FAILED and a RUNNING run with tempting numbers: never read
    store.job("vgg16", "imagenet", None, 2, metrics(2, 0.9, 0.99, 0.9), status="FAILED", config_hash="failed")
    store.job("vgg16", "imagenet", None, 4, metrics(4, 0.9, 0.99, 0.9), status="RUNNING", config_hash="running")
    # resnet18_fmnist with other predictors (new-style params), and a vgg16_fmnist whose baseline is predictor=none
    for (kind, pattern, threshold, window), (top1, net) in PREDICTORS.items():
        values = {**metrics(window, top1, 0.99, net), "net_mac_saving": net, "predictor_mac_cost": 0.0}
        predictor = {"kind": kind, "pattern": pattern or None, "threshold": threshold}
        ids["runs"][kind, pattern, threshold] = store.job(
            "resnet18_fmnist", "fashion_mnist", 500, window, values, predictor=predictor,
            config_hash=f"r18-{kind}-{pattern}-{threshold}", tags={"baseline": "false"},
        )  # fmt: skip
    ids["vgg_none"] = store.job("vgg16_fmnist", "fashion_mnist", None, 1, metrics(1, 0.92, 0.99, 0.0),
                                predictor={"kind": "none"}, tags={"baseline": "true"})  # fmt: skip
    tile3 = {"kind": "tile", "pattern": "diagonal", "threshold": 0.0}
    ids["vgg_tile3"] = store.job("vgg16_fmnist", "fashion_mnist", None, 3,
                                 {**metrics(3, 0.89, 0.99, 0.22), "net_mac_saving": 0.22},
                                 predictor=tile3, tags={"baseline": "false"})  # fmt: skip
    # their per-image outcomes on the 1,000 images: the baseline right on images 0-919; the run right on
    # 0-879 and 920-929 (top-1 0.89): 40 flips worse, 10 better
    store.predictions(ids["vgg_none"], [i < 920 for i in range(1000)])
    store.predictions(ids["vgg_tile3"], [i < 880 or 920 <= i < 930 for i in range(1000)])
    # a finished search of resnet18_fmnist (its parent run), and an unfinished one: never read
    for status, values in (("FINISHED", SEARCH), ("RUNNING", {k: 0.9 for k in SEARCH})):
        search = store.client.create_run(store.experiment_id, tags={
            "sweep.parent": "true", "search": "true", "model": "resnet18_fmnist",
            "operating_point": "resnet18_fmnist-b0.5", "budget": "0.5", "calibration": "300"})  # fmt: skip
        store.client.log_batch(search.info.run_id, metrics=[Metric(k, v, T0, 0) for k, v in values.items()])
        if status == "FINISHED":
            store.client.set_terminated(search.info.run_id, status)
            ids["search"] = search.info.run_id
    paired = store.client.create_run(store.experiment_id, tags={
        "sweep.parent": "true", "search": "true", "model": "resnet18_fmnist", "operating_point": "resnet18_fmnist_b1",
        "budget": "1", "calibration": "300", "confidence": "0.95"})  # fmt: skip
    store.client.log_batch(paired.info.run_id, metrics=[Metric(k, v, T0, 0) for k, v in PAIRED_SEARCH.items()])
    store.client.set_terminated(paired.info.run_id, "FINISHED")
    ids["paired_search"] = paired.info.run_id
    # layer sweep of alexnet (layers given by index and by name) and its layer table
    for (window, layer), (top1, saving) in LAYER_SWEEP.items():
        values = metrics(window, top1, 0.79, saving)
        store.job("alexnet", "imagenet", None, window, values, layer=layer, tags={"sweep": "/sweeps/layers"})
    table = folder / "layers.csv"
    table.write_text("index,name,acts\n" + "".join(f"{i},{n},10\n" for i, n in enumerate(ALEXNET_LAYERS)))
    store.client.log_artifact(ids["runs"]["alexnet", 1], str(table))

    # other experiments of the same store: without runs, without a baseline, with nothing but a baseline
    Store(folder, "empty")
    missing = Store(folder, "no-baseline")
    for window in (2, 3):
        missing.job("tiny", "fashion_mnist", 100, window, metrics(window, 0.5, 0.9, 0.1))
    Store(folder, "baseline-only").job("tiny", "fashion_mnist", 100, 1, metrics(1, 0.5, 0.9, 0.0))
    Store(folder, "nothing-to-draw").job("tiny", "fashion_mnist", 100, 3, metrics(3, 0.5, 0.9, 0.1),
                                         predictor={"kind": "random", "pattern": "diagonal"})  # fmt: skip
    ids["uri"], ids["artifacts"] = store.uri, str(store.artifacts)
    return ids


def config(uri: str, out: Path, *overrides: str):
    """conf/analysis.yaml composed with Hydra, pointed at the test store and ``out``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "analysis",
            overrides=[f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                       f"tracking.artifacts={out.parent / 'artifacts'}", f"out={out}", *overrides],
        )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, object]:
    return build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "figures"
    return run(config(store["uri"], out))


def row(summary: pd.DataFrame, model: str, window: int) -> pd.Series:
    found = summary[(summary["model"] == model) & (summary["window"] == window)]
    assert len(found) == 1, (model, window, found)
    return found.iloc[0]


def test_every_figure_is_written_as_png_and_pdf(report):
    assert set(FIGURES) == set(figures.FIGURES)
    # the energy figures need layers.csv with the section-10 counts, which this store's runs lack (test_energy.py)
    assert set(report.skipped) == {"fig_energy", "fig_energy_layers"}
    for name in FIGURES:
        png, pdf = report.out / f"{name}.png", report.out / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf
    assert {p.name for p in report.out.iterdir()} == {
        *(f"{n}.{f}" for n in FIGURES for f in ("png", "pdf")), "summary.csv", "predictors.csv", "summary.md",
        "runs.csv", "operating_points.csv",
    }  # fmt: skip


def test_summary_numbers_are_the_runs_numbers(report):
    summary = pd.read_csv(report.out / "summary.csv")
    assert len(summary) == 15 + 2  # 3 models x 5 windows, and vgg16_fmnist's two: layer=all, the paper's rule only
    for model, (data, limit, windows) in KNOWN.items():
        base_top1, base_top5, _ = windows[1]
        for window, (top1, top5, saving) in windows.items():
            got = row(summary, model, window)
            assert got["data"] == data and (pd.isna(got["limit"]) if limit is None else got["limit"] == limit)
            assert got["top1"] == top1 and got["top5"] == top5 and got["mac_saving"] == saving
            assert got["top1_drop"] == base_top1 - top1 and got["top5_drop"] == base_top5 - top5
            assert got["sparsity"] == 0.70 - 0.01 * window
            assert got["zero_window/3"] == pytest.approx((0.70 - 0.01 * window) * 0.49, abs=1e-12)
            rule = report.runs[
                (report.runs["setting"] == f"diagonal {window}x{window}") & (report.runs["layer"] == "all")
            ]
            assert got["run_id"] == rule.set_index("model").at[model, "run_id"]


def test_latest_run_of_a_config_wins_and_failed_running_parent_analysis_runs_are_ignored(store, report):
    alexnet3 = row(report.summary, "alexnet", 3)
    assert alexnet3["run_id"] == store["runs"]["alexnet", 3]
    assert (alexnet3["top1"], alexnet3["mac_saving"]) == (0.525, 0.408)  # not the older run's 0.10 / 0.99
    assert store["older"] not in set(report.runs["run_id"])
    assert row(report.summary, "vgg16", 2)["top1"] == 0.64  # not the FAILED run's 0.9
    assert row(report.summary, "vgg16", 4)["top1"] == 0.60  # not the RUNNING run's 0.9
    assert len(report.runs) == 15 + len(PREDICTORS) + 2 + len(LAYER_SWEEP)  # no parent, no analysis run


def test_best_window_is_the_largest_saving_within_the_top5_drop_threshold(report):
    for model, best in BEST.items():
        flags = report.summary[report.summary["model"] == model].set_index("window")["best"]
        assert flags.to_dict() == {k: k == best for k in range(1, 6)}, model


def test_best_window_rule_threshold_and_sweep_filter_from_config(store, tmp_path):
    table = pd.DataFrame({"window": [1, 2, 3], "mac_saving": [0.0, 0.2, 0.2], "top5_drop": [0.0, 0.05, 0.05]})
    assert best_window(table, 0.08) == 2  # equal savings: the smaller window
    assert best_window(table[table["window"] == 1], 0.08) is None  # baseline only: no best window
    overrides = ["best.max_top5_drop=0.01", "filters.sweep=/sweeps/a", "log_run=false", "formats=[png]"]
    strict = run(config(store["uri"], tmp_path / "out", *overrides))
    flags = strict.summary[strict.summary["model"] == "alexnet"].set_index("window")["best"]
    assert flags[2] and flags.sum() == 1  # only window 2 drops top-5 by <= 1 point
    assert (
        len(strict.runs) == 15 + len(PREDICTORS) + 2 and (strict.runs["layer"] == "all").all()
    )  # not the layer sweep
    assert not (tmp_path / "out" / "fig_layers.png").exists()


def test_paper_reference_values_stand_beside_imagenet_models(report):
    alexnet1, alexnet3 = row(report.summary, "alexnet", 1), row(report.summary, "alexnet", 3)
    assert (alexnet1["paper_top1"], alexnet1["paper_top5"], alexnet1["paper_sparsity"]) == (0.565, 0.791, 0.73)
    assert alexnet1["paper_zero_window/3"] == 0.40
    assert (alexnet3["paper_mac_saving"], alexnet3["paper_top1"], alexnet3["paper_top5"]) == (0.408, 0.525, 0.762)
    assert row(report.summary, "vgg16", 3)["paper_mac_saving"] == 0.362
    assert pd.isna(row(report.summary, "vgg16", 2)["paper_mac_saving"])
    assert (
        report.summary.loc[report.summary["model"] == "resnet18_fmnist", list(report.summary.filter(like="paper_"))]
        .isna()
        .all()
        .all()
    )
    text = (report.out / "summary.md").read_text()
    assert (
        "| AlexNet | imagenet | 1000 | 0 | **3x3** | 40.8 [40.8] | 52.5 [52.5] | 76.2 [76.2] | 4.00 | 2.9 |" in text
    )


def test_layer_sweep_runs_get_their_layer_index_and_drop(report):
    sweep = report.runs[report.runs["layer"] != "all"].set_index(["window", "layer"])
    assert sweep["layer_index"].to_dict() == {k: {"0": 0, "features.3": 1, "2": 2}[k[1]] for k in LAYER_SWEEP}
    assert sweep["layer_name"].to_dict() == {k: ALEXNET_LAYERS[sweep.at[k, "layer_index"]] for k in LAYER_SWEEP}
    for key, (top1, saving) in LAYER_SWEEP.items():
        assert sweep.at[key, "top1_drop"] == 0.565 - top1 and sweep.at[key, "mac_saving"] == saving


def test_analysis_run_is_logged_with_filters_and_artifacts(store, report):
    client = MlflowClient(store["uri"])
    logged = client.get_run(report.run_id)
    assert logged.info.status == "FINISHED" and logged.data.tags["analysis"] == "true"
    assert logged.data.params["filters.model"] == "null" and logged.data.params["best.max_top5_drop"] == "0.08"
    figures = {Path(f.path).name for f in client.list_artifacts(report.run_id, "figures")}
    assert figures == {f"{n}.{f}" for n in FIGURES for f in ("png", "pdf")}
    tables = {Path(f.path).name for f in client.list_artifacts(report.run_id, "summary")}
    assert tables == {"summary.csv", "predictors.csv", "operating_points.csv", "summary.md", "runs.csv"}


def test_filters_select_models_and_log_run_false_logs_nothing(store, tmp_path):
    client = MlflowClient(store["uri"])
    before = len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=1000))
    picked = run(
        config(
            store["uri"], tmp_path / "out", "filters.model=[vgg16,resnet18_fmnist]", "log_run=false", "formats=[png]"
        )
    )
    assert set(picked.summary["model"]) == {"vgg16", "resnet18_fmnist"}
    assert not (tmp_path / "out" / "fig_layers.png").exists()  # alexnet's layer sweep was filtered out
    assert picked.run_id is None
    after = len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=1000))
    assert after == before


@pytest.mark.parametrize(
    "case, message",
    [
        ("no store", "no tracking store"),
        ("wrong experiment", "experiment 'nope' is not in the store"),
        ("empty experiment", "no FINISHED job runs"),
        ("filter matches nothing", "filters.model=['resnet50']"),
        ("other sweep", "filters.sweep=['/sweeps/b']"),
        ("nothing to draw", "support no figure (fig2_zero_windows needs a baseline run"),
    ],
)
def test_bad_input_raises_one_clear_error_and_writes_nothing(store, tmp_path, case, message):
    out = tmp_path / "out" / "figures"
    uri, extra = store["uri"], []
    if case == "no store":
        uri = f"sqlite:///{tmp_path}/missing.db"
    extra = {
        "wrong experiment": ["tracking.experiment=nope"],
        "empty experiment": ["tracking.experiment=empty"],
        "filter matches nothing": ["filters.model=resnet50"],
        "other sweep": ["filters.sweep=/sweeps/b"],
        "nothing to draw": ["tracking.experiment=nothing-to-draw"],
    }.get(case, [])
    client = MlflowClient(store["uri"])
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000))
    with pytest.raises(AnalysisError) as error:
        run(config(uri, out, *extra))
    assert message in str(error.value)
    assert "python -m pipeline" in str(error.value)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "missing.db").exists()
    runs_after = len(client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000))
    assert runs_after == runs_before  # no analysis run logged


def test_without_a_baseline_it_draws_what_it_can_and_names_the_missing_run(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable, "-m", "analysis", f"tracking.uri={store['uri']}", "tracking.experiment=no-baseline",
        f"out={tmp_path}/figures", f"hydra.run.dir={tmp_path}/hydra", "formats=[png]",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    drawn = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert drawn == ["fig5_breakdown", "fig6_mac_savings", "fig7_accuracy", "fig_granularity"]  # no drops needed
    assert "skipped fig2_zero_windows: it needs a baseline run" in done.stdout
    assert "skipped fig_tradeoff" in done.stdout
    assert "no baseline (a run that predicts nothing: predictor=none, or window=1) for tiny" in done.stdout
    assert "python -m pipeline model=tiny data=fashion_mnist data.limit=100 seed=0 predictor=none" in done.stdout
    assert "Traceback" not in done.stderr


def test_cli_prints_one_error_line_and_exits_2_when_nothing_can_be_drawn(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable, "-m", "analysis", f"tracking.uri={store['uri']}", "tracking.experiment=nothing-to-draw",
        f"out={tmp_path}/figures", f"hydra.run.dir={tmp_path}/hydra",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "support no figure" in lines[0]
    assert "python -m pipeline model=tiny data=fashion_mnist data.limit=100 seed=0 predictor=none" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "figures").exists()


def test_a_predictor_none_run_is_the_baseline_of_its_model(store, report):
    vgg = report.runs[report.runs["model"] == "vgg16_fmnist"].set_index("window")
    assert vgg.at[3, "baseline_run_id"] == store["vgg_none"]
    assert vgg.at[3, "top1_drop"] == pytest.approx(0.92 - 0.89)
    paper = report.summary[report.summary["model"] == "vgg16_fmnist"]
    assert list(paper["window"]) == [1, 3] and list(paper["run_id"])[0] == store["vgg_none"]


def test_old_runs_read_as_the_papers_rule(report):
    legacy = report.runs[report.runs["model"] == "alexnet"]
    assert set(legacy["predictor"]) == {"tile"} and set(legacy["pattern"]) == {"diagonal"}
    assert (legacy["threshold"] == 0).all() and (legacy["net_mac_saving"] == legacy["mac_saving"]).all()
    assert set(legacy[legacy["baseline"]]["window"]) == {1}


def test_predictor_comparison_and_pareto_front_by_hand(report):
    table = report.predictors[report.predictors["model"] == "resnet18_fmnist"].set_index("setting")
    assert set(table.index) == {"1x1", *(f"diagonal {k}x{k}" for k in range(1, 6))} - {"1x1"} | {
        "oracle", "checkerboard 3x3", "diagonal 3x3 t=0.05", "random diagonal 3x3",
    }  # fmt: skip
    # drops against the 0.90 baseline: diagonal 2x2 0.05 / 0.18, 3x3 0.10 / 0.20, 4x4 0.20 / 0.19,
    # 5x5 0.30 / 0.17, checkerboard 3x3 0.04 / 0.15, t=0.05 0.20 / 0.17, random 0.50 / 0.20: the front is
    # the baseline (0 / 0), checkerboard, diagonal 2x2 and 3x3; the oracle is the limit, never on it
    front = set(table.index[table["pareto"]])
    assert front == {"diagonal 1x1", "checkerboard 3x3", "diagonal 2x2", "diagonal 3x3"}
    assert table.at["random diagonal 3x3", "top1_drop"] == pytest.approx(0.50)
    assert table.at["oracle", "net_mac_saving"] == 0.52 and not table.at["oracle", "pareto"]
    hits = table.at["diagonal 3x3", "hit_rate"]
    assert hits == pytest.approx(0.05 * 2 / (0.05 * 2 + 0.01 * 2))  # metrics(): hit 0.05 (k-1), miss 0.01 (k-1)
    assert "## Predictor comparison" in (report.out / "summary.md").read_text()


def test_pareto_by_hand():
    points = pd.DataFrame({"top1_drop": [0.0, 0.01, 0.01, 0.02, 0.03, None],
                           "net_mac_saving": [0.0, 0.10, 0.05, 0.10, 0.30, 0.9]})  # fmt: skip
    # (0.01, 0.05) and (0.02, 0.10) are beaten by (0.01, 0.10); a run without a drop is never on the front
    assert pareto(points).tolist() == [True, True, False, False, True, False]


def test_a_baseline_alone_draws_figure_2(store, tmp_path):
    found = run(config(store["uri"], tmp_path / "out", "tracking.experiment=baseline-only", "log_run=false"))
    assert [p.name for p in found.files if p.suffix == ".png"] == ["fig2_zero_windows.png"]


def test_a_layer_sweep_alone_draws_the_layer_view_and_says_what_it_skipped(tmp_path):
    store = Store(tmp_path)
    base = store.job("alexnet", "imagenet", None, 1, metrics(1, 0.565, 0.79, 0.0), tags={"baseline": "true"})
    table = tmp_path / "layers.csv"
    table.write_text("index,name,acts\n" + "".join(f"{i},{n},10\n" for i, n in enumerate(ALEXNET_LAYERS)))
    store.client.log_artifact(base, str(table))
    for (window, layer), (top1, saving) in LAYER_SWEEP.items():
        store.job("alexnet", "imagenet", None, window, metrics(window, top1, 0.79, saving), layer=layer)
    found = run(config(store.uri, tmp_path / "out", "log_run=false", "formats=[png]"))
    assert sorted(p.stem for p in found.out.glob("*.png")) == ["fig2_zero_windows", "fig_layers"]
    assert set(found.skipped) == {"fig5_breakdown", "fig6_mac_savings", "fig7_accuracy", "fig_tradeoff",
                                  "fig_operating_points", "fig_granularity", "fig_energy",
                                  "fig_energy_layers"}  # fmt: skip


def test_a_layer_sweep_without_any_layers_csv_is_an_error_not_name_sorted_labels(tmp_path):
    """Without a layers.csv the layer order is unknown: sorted names would put features.10 before
    features.3 (wrong labels on the per-layer figure), so the analysis says what is missing instead."""
    store = Store(tmp_path)
    store.job("alexnet", "imagenet", None, 1, metrics(1, 0.565, 0.79, 0.0), tags={"baseline": "true"})
    for (window, layer), (top1, saving) in LAYER_SWEEP.items():
        values = {**metrics(window, top1, 0.79, saving), **{f"layer/{n}/sparsity": 0.5 for n in ALEXNET_LAYERS}}
        store.job("alexnet", "imagenet", None, window, values, layer=layer)
    with pytest.raises(AnalysisError, match="no run of alexnet has its layers.csv artifact"):
        run(config(store.uri, tmp_path / "out", "log_run=false", "formats=[png]"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_the_analysis_never_deletes_a_file_it_did_not_write(store, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "fig_layers.png").write_bytes(b"a figure of the README")
    (out / "notes.txt").write_text("mine")
    run(config(store["uri"], out, "filters.model=vgg16", "log_run=false", "formats=[png]"))
    assert (out / "fig_layers.png").read_bytes() == b"a figure of the README"  # vgg16 has no layer sweep
    assert (out / "notes.txt").read_text() == "mine"


def test_searches_are_listed_as_operating_points(store, report):
    row, paired = report.operating_points.to_dict("records")
    assert row["run_id"] == store["search"] and row["operating_point"] == "resnet18_fmnist-b0.5"
    assert row["budget"] == 0.5 and {k: row[k] for k in SEARCH} == SEARCH
    assert pd.isna(row["confidence"]) and pd.isna(row["test/top1_drop_low"])  # recorded before paired statistics
    assert paired["run_id"] == store["paired_search"] and paired["confidence"] == 0.95
    assert {k: paired[k] for k in PAIRED_SEARCH if k in paired} == {
        k: v for k, v in PAIRED_SEARCH.items() if k in OPERATING_POINT_COLUMNS
    }
    text = (report.out / "summary.md").read_text()
    assert "| resnet18_fmnist | `resnet18_fmnist-b0.5` | 0.5 | none | 300 | 0.40 | 21.0 | 0.60 | 20.5 |" in text
    # the test drop 0.80 ± (1.55 - 0.05) / 2 points, McNemar p 0.077; the calibration drop's upper bound 0.54
    assert (
        "| resnet18_fmnist | `resnet18_fmnist_b1` | 1 | 0.95 | 300 | 0.00 (0.54) | 25.0 | 0.80 ± 0.75 "
        "(p 0.077) | 24.0 |"
    ) in text


def test_drops_carry_their_paired_interval_and_mcnemar_p_by_hand(report):
    """vgg16_fmnist's 3x3 run against its baseline on 1,000 images: b = 40, c = 10 (contract section 11)."""
    found = report.predictors[(report.predictors["model"] == "vgg16_fmnist") & (report.predictors["window"] == 3)]
    got = found.iloc[0]
    se = math.sqrt((50 / 1000 - 0.03**2) / 1000)  # 0.0070071
    assert (got["flips_worse"], got["flips_better"]) == (40, 10)
    assert got["top1_drop"] == pytest.approx(0.03)
    assert got["top1_drop_low"] == pytest.approx(0.03 - 1.959964 * se, abs=1e-6)
    assert got["top1_drop_high"] == pytest.approx(0.03 + 1.959964 * se, abs=1e-6)
    assert got["mcnemar_p"] == pytest.approx(2 * sum(math.comb(50, i) for i in range(11)) / 2**50)
    assert row(report.summary, "vgg16_fmnist", 3)["flips_worse"] == 40  # the paper's table carries them too
    summary_md = (report.out / "summary.md").read_text()
    assert "3.00 ± 1.37 (p <0.001)" in summary_md
    # runs without a predictions.csv (recorded before it existed): the drop without its interval
    alexnet = row(report.summary, "alexnet", 3)
    assert not pd.isna(alexnet["top1_drop"]) and pd.isna(alexnet["top1_drop_low"])


@pytest.mark.parametrize("case", ["rows", "top1", "images"])
def test_a_predictions_csv_that_does_not_match_its_run_is_one_error(tmp_path, case):
    store = Store(tmp_path)
    base = store.job("tiny", "fashion_mnist", 10, 1, {**metrics(1, 0.5, 0.9, 0.0), "images": 10})
    other = store.job("tiny", "fashion_mnist", 10, 3, {**metrics(3, 0.4, 0.9, 0.1), "images": 10})
    store.predictions(base, [i < 5 for i in range(10)])
    right = {"rows": [i < 4 for i in range(9)], "top1": [i < 6 for i in range(10)]}.get(
        case, [i < 4 for i in range(10)]
    )
    store.predictions(other, right, labels=[1] * 10 if case == "images" else None)
    with pytest.raises(AnalysisError) as error:
        run(config(store.uri, tmp_path / "out" / "figures"))
    expected = (
        "not evaluated on the same images"
        if case == "images"
        else f"the predictions.csv of run {other} does not match"
    )
    assert expected in str(error.value) and "force=true" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_tradeoff_figure_draws_each_known_interval(report):
    """The trade-off figure's vgg16_fmnist panel: one horizontal bar, from the drop's low to its high end."""
    from matplotlib.container import ErrorbarContainer

    runs = report.runs
    fig = figures.fig_tradeoff(figures._tradeoff(runs))
    vgg = runs[(runs["model"] == "vgg16_fmnist") & (runs["window"] == 3)].iloc[0]
    bars = [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1  # the only run with both predictions.csv (its baseline has no bar of its own)
    (segments,) = [lines.get_segments() for lines in bars[0].lines[2]]
    (x0, y0), (x1, y1) = segments[0]
    assert (x0, x1) == pytest.approx((100 * vgg["top1_drop_low"], 100 * vgg["top1_drop_high"]))
    assert y0 == y1 == pytest.approx(100 * vgg["net_mac_saving"])


def test_the_operating_points_figure_draws_the_interval_of_each_search_that_has_one(report):
    """resnet18_fmnist: the search with paired statistics gets a bar on its test drop (0.05 to 1.55
    points at 24 % saving); the one recorded before them, none."""
    from matplotlib.container import ErrorbarContainer

    points = figures._operating_points(report.runs, report.operating_points)
    fig = figures.fig_operating_points(points)
    bars = [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = [segment for bar in bars for lines in bar.lines[2] for segment in lines.get_segments()]
    assert [[tuple(point) for point in segment] for segment in segments] == [
        [pytest.approx((0.05, 24.0)), pytest.approx((1.55, 24.0))]]  # fmt: skip


TABLE = '{"features.0":{"kind":"tile","pattern":"diagonal","window":3}}'  # an operating point's per-layer table


def test_operating_points_run_from_their_presets_are_tabled_and_drawn_without_their_search(tmp_path):
    """vgg16_fmnist_b1 run from its preset on 1,000 test and 300 calibration images, each beside its
    baseline: the test run flips 20 images worse and 5 better (drop 1.5 points), the calibration run 6 and
    0 (drop 2.0). An older search of the same operating point gives way to the newer runs; a newer search
    of another one stays."""
    store = Store(tmp_path)
    searches = {"vgg16_fmnist_b1": T0 - 10**6, "vgg16_fmnist_b2": T0 + 10**8}
    for name, start in searches.items():
        search = store.client.create_run(store.experiment_id, start_time=start, tags={
            "sweep.parent": "true", "search": "true", "model": "vgg16_fmnist", "operating_point": name,
            "budget": name[-1], "calibration": "300", "confidence": "0.95"})  # fmt: skip
        store.client.log_batch(search.info.run_id, metrics=[Metric(k, v, T0, 0) for k, v in SEARCH.items()])
        store.client.set_terminated(search.info.run_id, "FINISHED")
    preset = {"kind": "none"}
    point = {
        "operating_point": "vgg16_fmnist_b1",
        "operating_point.budget": 1.0,
        "operating_point.confidence": 0.95,
        "predictor.layers": TABLE,
    }
    ids = {}
    for split, limit, images, base, right in (
        ("test", None, 1000, [i < 920 for i in range(1000)], [i < 900 or 920 <= i < 925 for i in range(1000)]),
        ("calibration", 300, 300, [i < 290 for i in range(300)], [i < 284 for i in range(300)]),
    ):
        for name, outcome, extra, net in (("base", base, {}, 0.0), ("point", right, point, 0.224)):
            top1 = sum(outcome) / images
            values = {**metrics(1, top1, 0.99, net), "net_mac_saving": net, "images": images}
            tags = {"baseline": str(name == "base").lower()}
            extra = {"split": split, **extra}
            ids[split, name] = store.job("vgg16_fmnist", "fashion_mnist", limit, 1, values, predictor=preset,
                                         config_hash=f"{split}-{name}", tags=tags, extra=extra)  # fmt: skip
            store.predictions(ids[split, name], outcome)
    out = tmp_path / "out" / "figures"
    report = run(config(store.uri, out, "log_run=false", "formats=[png]"))
    rows = {r["operating_point"]: r for r in report.operating_points.to_dict("records")}
    assert list(rows) == ["vgg16_fmnist_b1", "vgg16_fmnist_b2"]
    got, kept = rows["vgg16_fmnist_b1"], rows["vgg16_fmnist_b2"]
    assert kept["test/top1_drop"] == SEARCH["test/top1_drop"]  # the newer search
    assert got["run_id"] == ids["test", "point"] and (got["budget"], got["confidence"]) == (1.0, 0.95)
    assert (got["test/flips_worse"], got["test/flips_better"]) == (20, 5)
    assert got["test/top1_drop"] == pytest.approx(0.015) and got["test/net_mac_saving"] == pytest.approx(0.224)
    se = math.sqrt((25 / 1000 - 0.015**2) / 1000)
    assert got["test/top1_drop_low"] == pytest.approx(0.015 - 1.959964 * se, abs=1e-6)
    assert got["calibration"] == 300 and got["calibration/top1_drop"] == pytest.approx(0.02)  # 6 worse, 0 better
    se = math.sqrt((6 / 300 - 0.02**2) / 300)  # the one-sided 95 % bound: z = 1.644854
    assert got["calibration/top1_drop_upper"] == pytest.approx(0.02 + 1.644854 * se, abs=1e-6)
    text = (out / "summary.md").read_text()
    assert (
        f"| vgg16_fmnist | `vgg16_fmnist_b1` | 1 | 0.95 | 300 | 2.00 ({100 * (0.02 + 1.644854 * se):.2f}) |" in text
    )
    points = figures._operating_points(report.runs, report.operating_points)
    assert sorted(points.loc[points["source"] == "search", "drop"]) == [0.006, pytest.approx(0.015)]


def test_a_preset_run_only_on_test_tables_its_calibration_numbers_as_unknown(tmp_path):
    store = Store(tmp_path)
    point = {
        "split": "test",
        "operating_point": "alexnet_fmnist",
        "operating_point.budget": 0.5,
        "predictor.layers": TABLE,
    }
    store.job("alexnet_fmnist", "fashion_mnist", 10, 1, {**metrics(1, 0.5, 0.9, 0.0), "images": 10},
              predictor={"kind": "none"}, config_hash="base", tags={"baseline": "true"})  # fmt: skip
    store.job("alexnet_fmnist", "fashion_mnist", 10, 1, {**metrics(1, 0.4, 0.9, 0.3), "net_mac_saving": 0.3,
              "images": 10}, predictor={"kind": "none"}, config_hash="point", tags={"baseline": "false"},
              extra=point)  # fmt: skip
    out = tmp_path / "out" / "figures"
    (got,) = run(config(store.uri, out, "log_run=false", "formats=[png]")).operating_points.to_dict("records")
    assert got["confidence"] is None and got["test/top1_drop"] == pytest.approx(0.1)
    assert pd.isna(got["calibration"]) and pd.isna(got["calibration/top1_drop"])
    assert (
        "| alexnet_fmnist | `alexnet_fmnist` | 0.5 | none | — | — | — | 10.00 | 30.0 |"
        in (out / "summary.md").read_text()
    )


def test_the_granularity_figure_sets_each_rule_against_independent_placement_by_hand():
    """Contract section 10: two layers saving 20 % (half its cells predicted) and 10 % (a quarter): cells
    placed independently across channels keep 0.2 * 0.5^(g-1) + 0.1 * 0.25^(g-1) at g: 30 % at g = 1,
    12.5 % at 2, 2.66 % at 4."""
    row = pd.Series({"layer/a/mac_saving": 0.2, "layer/a/frac/pred_hit": 0.4, "layer/a/frac/pred_miss": 0.1,
                     "layer/b/mac_saving": 0.1, "layer/b/frac/pred_hit": 0.25,
                     "layer/b/frac/pred_miss": 0.0})  # fmt: skip
    assert [figures._independent_skip(row, g) for g in (1, 2, 4)] == pytest.approx(
        [0.3, 0.125, 0.2 * 0.125 + 0.1 * 0.25**3]
    )


def test_a_grouped_run_is_labelled_and_is_not_the_papers_rule(tmp_path):
    store = Store(tmp_path)
    store.job("alexnet", "imagenet", None, 1, metrics(1, 0.565, 0.79, 0.0), tags={"baseline": "true"})
    for group in (1, 8):
        store.job("alexnet", "imagenet", None, 3, metrics(3, 0.55, 0.78, 0.3 / group), config_hash=f"g{group}",
                  predictor={"kind": "tile", "pattern": "diagonal", "threshold": 0.0, "group": group})  # fmt: skip
    found = run(config(store.uri, tmp_path / "out", "log_run=false", "formats=[png]"))
    rows = found.runs[found.runs["window"] == 3].set_index("group")
    assert rows.loc[8, "setting"] == "diagonal 3x3 g=8" and rows.loc[1, "setting"] == "diagonal 3x3"
    assert list(found.runs[is_paper_rule(found.runs) & (found.runs["window"] == 3)]["group"]) == [1]
    assert "fig_granularity" not in found.skipped
