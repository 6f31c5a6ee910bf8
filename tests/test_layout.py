"""The layout is the architecture (README, "Layout"): no import cycle among the project's modules, mlflow
only in ``pipeline.tracking``, no torch in the analysis or the tracking, and tests that mirror the rooms."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.cli import REPO

ROOMS = ("job", "networks", "predictors", "measurement", "fitting", "tracking")
ENTRY_POINTS = {"__init__", "__main__", "search", "train", "train_predictor", "app", "errors"}


def modules() -> dict[str, ast.Module]:
    found = {}
    for package in ("pipeline", "analysis", "hydra_plugins"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text())
    return found


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The project's modules a module imports anywhere in it (at the top or inside a function)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names & known


def test_no_import_cycle_among_the_project_modules():
    trees = modules()
    graph = {name: imported(tree, set(trees)) - {name} for name, tree in trees.items()}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the graph is really read
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for other in sorted(graph[name]):
            assert state.get(other) != 1, "import cycle: " + " -> ".join(path[path.index(other) :] + [other])
            if other not in state:
                visit(other)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_only_the_tracking_imports_mlflow():
    for name, tree in modules().items():
        if not name.startswith("pipeline.") or name.startswith("pipeline.tracking"):
            continue
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}  # fmt: skip
        roots |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip
        assert "mlflow" not in roots, f"{name} imports mlflow: tracking belongs in pipeline.tracking"


def test_the_analysis_and_the_tracking_import_no_torch():
    probe = (
        "import sys, importlib, pkgutil, pipeline.tracking\n"
        "import analysis.__main__, analysis.report, analysis.figures\n"
        "for m in pkgutil.iter_modules(pipeline.tracking.__path__):\n"
        "    importlib.import_module('pipeline.tracking.' + m.name)\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_pipeline_is_its_rooms_and_the_tests_mirror_them():
    top = {path.stem for path in (REPO / "pipeline").glob("*.py")}
    assert top == ENTRY_POINTS, f"a module outside the rooms: {sorted(top - ENTRY_POINTS)}"
    rooms = {path.name for path in (REPO / "pipeline").iterdir() if (path / "__init__.py").is_file()}
    assert rooms == set(ROOMS)
    for room in (*ROOMS, "analysis"):
        assert list((REPO / "tests" / room).glob("test_*.py")), f"tests/{room}/ has no tests"
