"""The MLflow UI, checked in a real browser.

A small real sweep (``python -m pipeline -m window=1,2,3``) and the real ``python -m analysis`` write a
store under tmp_path; ``mlflow server`` serves it on 127.0.0.1 and headless Chromium (Debian's, driven
by Playwright) reads the runs table, a run's metrics and a figure of the analysis run, as a user would.
A fast negative check proves the table helper reports a server that shows no runs.
About 55 s on 2 CPU cores (sweep and analysis ~25 s, each server ~10 s to start); marked `browser`.

Set CNP_SAVE_SCREENSHOT=1 to also copy the runs table's screenshot to docs/ui/runs-table.png (the README's).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests import ui
from tests.cli import EXPERIMENT, REPO, client, run_pipeline, runs

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(ui.CHROMIUM).exists(), reason=f"no Chromium at {ui.CHROMIUM}"),
]

MODEL = "alexnet_fmnist"
WINDOWS = ["1", "2", "3"]
FIGURE = "figures/fig6_mac_savings.png"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The sweep and the analysis run, written by the real CLIs into a store under a temp folder."""
    tmp = tmp_path_factory.mktemp("ui-store")
    # seeded random weights: the UI test needs runs, not a trained checkpoint
    sweep = run_pipeline(tmp, "-m", f"window={','.join(WINDOWS)}", "data.limit=100", "model.checkpoint=null")
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    analysis = run_pipeline(tmp, f"out={tmp / 'figures'}", module="analysis")
    assert analysis.returncode == 0, analysis.stdout[-3000:] + analysis.stderr[-3000:]
    mlflow_client = client(tmp)
    experiment_id = mlflow_client.get_experiment_by_name(EXPERIMENT).experiment_id
    jobs = [r for r in runs(tmp) if r.data.tags.get("analysis") != "true"]
    analysis_runs = [r for r in runs(tmp) if r.data.tags.get("analysis") == "true"]
    assert sorted(r.data.params["window"] for r in jobs) == WINDOWS
    assert len(analysis_runs) == 1
    return {"tmp": tmp, "uri": f"sqlite:///{tmp}/mlflow.db", "experiment_id": experiment_id,
            "jobs": jobs, "analysis": analysis_runs[0]}  # fmt: skip


@pytest.fixture(scope="module")
def server(store):
    with ui.mlflow_server(store["uri"], store["tmp"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = ui.launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh context (no stored UI state) with a wide viewport, so the param columns fit."""
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_runs_table_lists_the_sweep_with_model_and_window(store, server, page, tmp_path):
    names = [run.info.run_name for run in store["jobs"]]
    assert ui.runs_visible(page, server, store["experiment_id"], names)  # opened, sweep parent expanded
    ui.show_columns(page, ["model", "window"])
    ui.show_columns(page, ["mac_saving"], kind="metrics")
    rows = ui.table_rows(page)
    by_id = {row.get("run_id"): row for row in rows}
    shown = {}
    for run in store["jobs"]:
        assert run.info.run_id in by_id, f"job run {run.info.run_name} not in the table: {rows}"
        row = by_id[run.info.run_id]
        assert row["run_name"] == run.info.run_name  # e.g. alexnet_fmnist-w2-all
        shown[row[ui.column("window")]] = row[ui.column("model")]
        saving = row[ui.column("mac_saving", "metrics")]
        assert float(saving) == pytest.approx(run.data.metrics["mac_saving"], abs=1e-3)
    assert shown == {window: MODEL for window in WINDOWS}
    assert store["analysis"].info.run_id in by_id  # the analysis run sits in the same experiment

    shot = tmp_path / "runs-table.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(ui.PNG_MAGIC)
    if os.environ.get("CNP_SAVE_SCREENSHOT"):
        target = REPO / "docs" / "ui" / "runs-table.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_run_page_shows_mac_saving(store, server, page):
    run = next(r for r in store["jobs"] if r.data.params["window"] == "2")
    value = ui.metric_cell(page, server, store["experiment_id"], run.info.run_id, "mac_saving")
    assert float(value) == pytest.approx(run.data.metrics["mac_saving"], abs=1e-9)
    assert float(value) > 0  # window 2 predicts something: a real value, not a placeholder


def test_analysis_figure_is_listed_shown_and_a_png(store, server, page):
    run_id = store["analysis"].info.run_id
    written = (store["tmp"] / FIGURE).read_bytes()  # what `python -m analysis` wrote to out=
    shown = ui.preview_artifact(page, server, store["experiment_id"], run_id, FIGURE)
    assert shown.startswith(ui.PNG_MAGIC)
    assert shown == written
    assert page.locator(ui.ARTIFACT_NODE.format(FIGURE.split("/")[-1])).count() == 1  # listed in the tree
    direct = page.request.get(f"{server}/get-artifact", params={"path": FIGURE, "run_uuid": run_id})
    assert direct.ok
    assert direct.body().startswith(ui.PNG_MAGIC)


def test_runs_helpers_report_a_server_without_runs(tmp_path, page):
    """The negative check: an experiment with no runs yields no rows and ``runs_visible`` is False."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = MlflowClient(uri).create_experiment(
        "empty", artifact_location=(tmp_path / "artifacts" / "empty").as_uri()
    )
    with ui.mlflow_server(uri, tmp_path) as url:
        assert not ui.open_runs_table(page, url, experiment_id)
        assert ui.table_rows(page) == []
        assert not ui.runs_visible(page, url, experiment_id, [f"{MODEL}-w{w}-all" for w in WINDOWS])
