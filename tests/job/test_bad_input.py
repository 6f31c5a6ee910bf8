"""Bad input, tried as an adversary would: one ``error:`` line naming the fix, a non-zero exit, no
traceback, no "Error executing job" preamble from Hydra, and no FINISHED or RUNNING job run.

The real CLI runs in this process (tests/inprocess.py); the pipeline cases share one store, which
must still hold no job run that finished or is running after every one of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.cli import EXPERIMENT, runs
from tests.inprocess import run_cli
from tests.stores import Store, metrics

SMALL = ("model=custom", "model.target=tests.nets:small", "model.input_size=[1,28,28]", "model.num_classes=10")
SYNTHETIC = ("data=synthetic", "data.image_size=[1,28,28]", "data.num_classes=10", "data.size=8")
TINY = (*SMALL, *SYNTHETIC)
RGB = ("model=custom", "model.target=tests.nets:rgb", "model.input_size=[3,224,224]", "model.num_classes=2")
JPEG = (*RGB, "data=imagenet", "data.root={files}/val")  # with the broken image


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A checkpoint holding a list, a file that is no database, and an ImageNet folder with a broken JPEG."""
    folder = tmp_path_factory.mktemp("files")
    torch.save([1, 2, 3], folder / "list.pt")
    (folder / "notes.db").write_text("not a database\n" * 20)
    for wnid in ("n01", "n02"):
        (folder / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (64, 48), (10, 200, 30)).save(folder / "val" / wnid / "a.JPEG")
    (folder / "val" / "n02" / "b.JPEG").write_bytes(b"\xff\xd8\xff\xe0 truncated" * 8)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store) -> Path:
    folder = tmp_path_factory.mktemp("store")
    shutil.copy(empty_store, folder / "mlflow.db")
    return folder


BAD_INPUTS = {
    "huge seed": (["seed=99999999999999999999", *SMALL, *SYNTHETIC], "seed must be an integer from 0 to 2**64-1"),
    "device=cuda:abc": (["device=cuda:abc"], "device must be one of auto, cpu, cuda, cuda:N"),
    "data.num_classes=0": ([*TINY, "data.num_classes=0"], "data.num_classes must be >= 1"),
    "data.size=0": ([*TINY, "data.size=0"], "data.size and data.num_classes must be >= 1"),
    "checkpoint holding a list": ([*TINY, "model.checkpoint={files}/list.pt"], "holds a list, not a state"),
    "untraceable custom model": ([*TINY, "model.target=tests.nets:branchy"], "cannot trace Branchy"),
    "plain path as tracking.uri": (["tracking.uri={files}/store"], "is not a tracking URI: use sqlite:///PATH.db"),
    "non-database file as tracking.uri": (["tracking.uri=sqlite:///{files}/notes.db"], "is not an SQLite database"),
    "empty tracking.experiment": (["tracking.experiment="], "tracking.experiment must be a name"),
    "data.limit above the set": ([*TINY, "data.limit=9"], "data.limit=9 but the synthetic set"),
    "class count mismatch": ([*TINY, "data.num_classes=5"], "predicts 10 classes but data synthetic has 5"),
    "missing fashion_mnist root": ([*SMALL, "data.root={files}/nowhere", "data.limit=4"], "is not a folder: put"),
    "window above the largest map": ([*TINY, "window=29"], "largest predictable map of custom:tests.nets:small"),
    "corrupt JPEG": ([*JPEG, "data.num_workers=0"], "cannot decode the image"),
    "corrupt JPEG, streamed by a loader worker": (
        [*JPEG, "data.num_workers=1", "data.cache=false"],
        "cannot decode the image",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_no_run(case, files, store):
    overrides, message = BAD_INPUTS[case]
    result = run_cli(store, *(o.format(files=files) for o in overrides))
    assert result.returncode == 2, result.stderr
    assert len(result.errors) == 1 and message in result.errors[0], result.stderr
    assert "Error executing job" not in result.stderr and "Traceback" not in result.stderr
    assert not [r for r in runs(store) if r.info.status in ("FINISHED", "RUNNING")]


def test_the_window_bound_is_the_largest_predictable_map():
    from pipeline.errors import PipelineError
    from pipeline.networks.checks import check_window, largest_map, model_shapes
    from pipeline.networks.models import ModelConfig, build_model

    shapes = model_shapes(build_model(ModelConfig(name="alexnet_fmnist", num_classes=10)), [1, 28, 28])
    sevens = dict.fromkeys(["features.6", "features.8", "features.10"], (7, 7))
    assert shapes.maps == {"features.0": (28, 28), "features.3": (14, 14), **sevens}
    assert shapes.output == (1, 10) and largest_map(shapes.maps) == 28
    check_window(28, shapes.maps)  # accepted: one tile per map
    with pytest.raises(PipelineError, match="window=29 is larger than the largest predictable map"):
        check_window(29, shapes.maps)
    check_window(20, {"wide": (8, 28)})  # the longer side of a map bounds the window
    with pytest.raises(PipelineError, match="Use window <= 28"):
        check_window(29, {"wide": (8, 28)})


# analysis ----------------------------------------------------------------------------------


@pytest.fixture()
def analysis_store(tmp_path, store_in) -> Path:
    """A store with a baseline and a window-2 job run (written directly, nothing evaluated)."""
    store = Store(store_in(tmp_path), EXPERIMENT)
    for window, top1 in ((1, 0.9), (2, 0.8)):
        store.job("alexnet_fmnist", "fashion_mnist", 20, window, metrics(window, top1, 0.99, 0.1 * window))
    return tmp_path


def analysis_runs(folder: Path) -> list:
    return [r for r in runs(folder) if r.data.tags.get("analysis") == "true"]


@pytest.mark.parametrize("where", ["read-only folder", "under a file", "a file"])
def test_analysis_out_that_cannot_be_written_is_one_error_line_and_no_run(where, analysis_store, request):
    (analysis_store / "a-file").write_text("mine\n")
    out = {
        "read-only folder": lambda: request.getfixturevalue("read_only") / "figures",
        "under a file": lambda: analysis_store / "a-file" / "figures",
        "a file": lambda: analysis_store / "a-file",
    }[where]()
    result = run_cli(analysis_store, f"out={out}", module="analysis")
    assert result.returncode == 2 and len(result.errors) == 1 and str(out) in result.errors[0], result.stderr
    assert not analysis_runs(analysis_store)
    assert (analysis_store / "a-file").read_text() == "mine\n"


@pytest.mark.parametrize("content", ["empty", "another application's database"])
def test_analysis_never_writes_into_an_sqlite_file_that_is_not_a_store(content, tmp_path):
    import sqlite3

    database = tmp_path / "mlflow.db"  # where store_args points the analysis
    database.touch()
    if content != "empty":
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    before = database.read_bytes()
    result = run_cli(tmp_path, f"out={tmp_path / 'figures'}", module="analysis")
    assert result.returncode == 2 and len(result.errors) == 1 and "not an MLflow store" in result.errors[0]
    assert database.read_bytes() == before
