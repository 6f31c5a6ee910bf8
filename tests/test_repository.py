"""The checkout stays clean and self-contained: everything a run writes by default is ignored by git (so
the quick start leaves ``git status`` clean), the README's own figures are tracked where no run writes, and
every README link resolves to a file inside the repository."""

from __future__ import annotations

import re
import subprocess

import pytest
from omegaconf import OmegaConf

from pipeline.fitting.twins import OUT_DIR
from tests.cli import REPO

README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def default_outputs() -> list[str]:
    """Files the pipeline, the analysis and the training write with their default settings."""
    run = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "config.yaml"), resolve=False)
    analysis = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "analysis.yaml"), resolve=False)
    tracking = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "tracking" / "local.yaml"), resolve=False)
    return [
        tracking["uri"].removeprefix("sqlite:///"),
        tracking["artifacts"] + "/" + run["tracking"]["experiment"] + "/0123/artifacts/layers.csv",
        run["hydra"]["sweep"]["dir"].split("$")[0] + "12-00-00/0/result.json",
        run["hydra"]["run"]["dir"].split("$")[0] + "12-00-00/.hydra/config.yaml",
        analysis["hydra"]["run"]["dir"].split("$")[0] + "12-00-00/x",
        analysis["out"] + "/fig2_zero_windows.png",
        analysis["out"] + "/summary.md",
        analysis["out"] + "/fig_layers.png",
        str(OUT_DIR / "alexnet_fmnist.pt"),
        "outputs/data/FashionMNIST/raw/t10k-images-idx3-ubyte.gz",
        "outputs/ui/runs-table.png",
    ]


def ignored(paths: list[str]) -> set[str]:
    """The paths of ``paths`` that git ignores in this checkout (they need not exist)."""
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return set(done.stdout.split())


@pytest.fixture(autouse=True)
def _git_checkout():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")


def test_everything_runs_write_by_default_is_ignored():
    written = default_outputs()
    assert all(path.startswith("outputs/") for path in written), written
    assert ignored(written) == set(written)


def test_the_readme_figures_are_tracked_where_no_run_writes():
    images = [link for link in LINK.findall(README.read_text()) if link.endswith(".png")]
    assert len(images) >= 6
    keep = ["outputs/.gitkeep", *images]
    assert ignored(keep) == set()
    tracked = subprocess.run(["git", "ls-files", *keep], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert sorted(tracked) == sorted(keep)


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: lower case, punctuation dropped, spaces as -."""
    headings = re.findall(r"^#+\s+(.*)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", ["README.md", "docs/measurements.md"])
def test_every_link_resolves_inside_the_repository(page):
    source = REPO / page
    links = LINK.findall(source.read_text())
    assert len(links) >= 7
    for link in links:
        assert not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", link), f"{link}: points outside the repository"
        path, _, anchor = link.partition("#")
        target = (source.parent / path).resolve() if path else source
        assert target.is_relative_to(REPO.resolve()) and target.is_file(), f"{link}: no such file in the repository"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target.read_text()), f"{link}: no such heading in {target.name}"


def test_an_installed_package_carries_every_file_it_loads():
    """A plain ``pip install .`` (not editable) ships the models' and the learned predictors' checkpoints
    and the kernel's source: every tracked data file under ``pipeline/`` matches the package data."""
    import fnmatch

    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pipeline"]
    tracked = subprocess.run(
        ["git", "ls-files", "pipeline"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [p.removeprefix("pipeline/") for p in tracked if not p.endswith(".py")]
    assert any(p.startswith("checkpoints/predictors/") for p in data)
    missing = [p for p in data if not any(fnmatch.fnmatch(p, g) and p.count("/") == g.count("/") for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data] of pyproject.toml: {missing}"
