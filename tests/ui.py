"""A real ``mlflow server`` on loopback and the MLflow 3.17 UI pages that the browser test reads.

Nothing here asserts: the helpers return what the UI shows (rows of the runs table, a metric's
cell, an artifact preview) so that a test can check it and a negative test can prove the checks
fail on a server that shows no runs. Selectors are MLflow 3.17's (ag-grid runs table, du-bois tree
in the column picker, artifact tree nodes); the UI is a React app, so every read waits first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: no background fetches, no QUIC, no sandbox (root in a container).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
WAIT_MS = 30_000  # one UI element
SERVER_START_S = 120.0
SERVER_STOP_S = 15.0

RUN_NAME_CELL = '[role="gridcell"][col-id="attributes.`Run Name`"]'
RUN_LINK = RUN_NAME_CELL + ' a[href*="/runs/"]'
EXPANDER = RUN_NAME_CELL + ' button[data-component-id*="runnamecellrenderer"]'
EMPTY_TABLE = "No runs logged"  # the runs page's empty state
ASSISTANT_CLOSE = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
ARTIFACT_NODE = '[data-testid="artifact-tree-node"][artifact-name="{}"]'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def mlflow_server(store_uri: str, folder: Path, timeout: float = SERVER_START_S) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 (one worker) over ``store_uri``; yields its base URL.

    Runs in ``folder`` (its log is ``folder/mlflow-server.log``) in a session of its own, so that
    stopping it ends the uvicorn child too: SIGTERM to that group, SIGKILL after a timeout.
    The server's job runner (huey consumers, unused by the UI) is switched off.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
    log_path = folder / "mlflow-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group; kill it when it has not ended after a timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # already gone
            pass
        try:
            process.wait(timeout=SERVER_STOP_S)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the group's other members (uvicorn) once the leader has gone
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# browser --------------------------------------------------------------------------------------


def launch(playwright):
    """Debian's headless Chromium (never a downloaded one)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def close_assistant(page) -> None:
    """Close the MLflow Assistant side panel (it opens by default and narrows the table)."""
    button = page.locator(ASSISTANT_CLOSE)
    if button.count():
        button.first.click()


def open_runs_table(page, url: str, experiment_id: str, timeout: float = WAIT_MS) -> bool:
    """Open the classic runs table; True once it shows run rows, False when it shows its empty state.

    Raises Playwright's TimeoutError when it shows neither within ``timeout`` ms.
    """
    page.goto(f"{url}/#/experiments/{experiment_id}/runs")
    page.locator(RUN_LINK).or_(page.get_by_text(EMPTY_TABLE)).first.wait_for(timeout=timeout)
    close_assistant(page)
    return page.locator(RUN_LINK).count() > 0


def expand_parents(page) -> None:
    """Show child runs: a fresh browser context shows a sweep parent's children collapsed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for button in page.locator(EXPANDER).all():
        before = page.locator(RUN_LINK).count()
        button.click()
        try:
            page.wait_for_function(
                "([selector, before]) => document.querySelectorAll(selector).length > before",
                arg=[RUN_LINK, before], timeout=WAIT_MS,
            )  # fmt: skip
        except PlaywrightTimeout:  # it was expanded already (the click collapsed it): expand it again
            button.click()


def show_columns(page, names: list[str], kind: str = "params") -> None:
    """Add ``<kind>.<name>`` columns (kind: params or metrics) through the Columns picker: its search
    box, then the node whose whole title is the name (filtered, `model` is not `filters.model`); a
    name that is both a metric and a param fails (strict mode)."""
    missing = [n for n in names if not page.locator(column_header(n, kind)).count()]
    if not missing:
        return
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    for name in missing:
        search.fill(name)
        title = re.compile(f"^{re.escape(name)}$")
        page.locator(".du-bois-light-tree-title").filter(has_text=title).click(timeout=WAIT_MS)
        page.locator(column_header(name, kind)).first.wait_for(state="attached", timeout=WAIT_MS)
    page.keyboard.press("Escape")


def column_header(name: str, kind: str = "params") -> str:
    return f'[role="columnheader"][col-id="{kind}.`{name}`"]'


def column(name: str, kind: str = "params") -> str:
    """The key of a column in :func:`table_rows`' dicts."""
    return f"{kind}.`{name}`"


TABLE_ROWS_JS = """
() => {
  const rows = new Map();
  for (const row of document.querySelectorAll('.ag-root [role="row"][row-index]')) {
    const index = Number(row.getAttribute('row-index'));
    const cells = rows.get(index) || {};
    for (const cell of row.querySelectorAll('[role="gridcell"][col-id]')) {
      const id = cell.getAttribute('col-id');
      const link = id === 'attributes.`Run Name`' ? cell.querySelector('a[href*="/runs/"]') : null;
      if (link) {
        cells.run_name = link.textContent.trim();
        cells.run_id = link.getAttribute('href').split('/runs/')[1];
      } else {
        cells[id] = cell.innerText.trim();
      }
    }
    rows.set(index, cells);
  }
  return [...rows.entries()].sort((a, b) => a[0] - b[0]).map(entry => entry[1]);
}
"""


def table_rows(page) -> list[dict[str, str]]:
    """The rendered rows of the runs table, in order: ``run_name``, ``run_id`` and text by column id
    (``params.`window```, ...); the pinned and scrolled halves of a row merged."""
    return page.evaluate(TABLE_ROWS_JS)


def runs_visible(page, url: str, experiment_id: str, run_names: list[str], timeout: float = WAIT_MS) -> bool:
    """True when the runs table of the experiment lists every one of ``run_names`` (nested or not)."""
    if not run_names or not open_runs_table(page, url, experiment_id, timeout):
        return False
    expand_parents(page)
    shown = {row.get("run_name") for row in table_rows(page)}
    return set(run_names) <= shown


def metric_cell(page, url: str, experiment_id: str, run_id: str, name: str) -> str:
    """The value the run page's Metrics table shows for metric ``name`` (exact name)."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}")
    page.get_by_placeholder("Search metrics").fill(name, timeout=WAIT_MS)
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=name, exact=True))
    row.first.wait_for(timeout=WAIT_MS)
    cells = row.first.get_by_role("cell")
    return cells.nth(cells.count() - 1).inner_text().strip()


def preview_artifact(page, url: str, experiment_id: str, run_id: str, path: str) -> bytes:
    """Open ``path`` in the run's Artifacts tab (its folders first), wait until the preview image has
    rendered, and return the bytes behind it (the UI shows a blob: URL of what it fetched from the
    server's ``/get-artifact``; Playwright cannot read that streamed response's body itself)."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
    *folders, file_name = path.split("/")
    for folder in folders:
        page.locator(ARTIFACT_NODE.format(folder)).first.click(timeout=WAIT_MS)
    with page.expect_response(lambda r: "/get-artifact" in r.url and "run_uuid=" + run_id in r.url,
                              timeout=WAIT_MS) as fetched:  # fmt: skip
        page.locator(ARTIFACT_NODE.format(file_name)).first.click(timeout=WAIT_MS)
    response = fetched.value
    if response.status != 200:
        raise AssertionError(f"{response.url} answered {response.status}")
    image = page.locator(f'img[alt="{path}"]').first
    image.wait_for(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=WAIT_MS)  # fmt: skip
    data = image.evaluate("async img => Array.from(new Uint8Array(await (await fetch(img.src)).arrayBuffer()))")
    return bytes(data)
