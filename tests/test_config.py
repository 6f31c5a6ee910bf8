"""Every shipped config and preset composes, validates and builds its objects; bad values fail early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from pipeline.config import register, validate
from pipeline.data import load_eval_data, spread_indices
from pipeline.layers import discover_layers
from pipeline.models import build_model

CONF = Path(__file__).resolve().parent.parent / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "launcher").glob("*.yaml"))
LAUNCHER_CLASSES = {"basic": ".BasicLauncher", "joblib": ".JoblibLauncher", "slurm": ".SlurmLauncher",
                    "submitit_local": ".LocalLauncher"}  # fmt: skip
EXPECTED_LAYERS = {"alexnet": 5, "vgg16": 13, "resnet18": 17}

register()


def composed(*overrides: str, multirun: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=multirun)


def test_shipped_groups_are_the_documented_ones():
    assert MODELS == sorted(
        ["alexnet", "vgg16", "resnet18", "alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist", "custom"]
    )
    assert DATA == ["fashion_mnist", "imagenet", "synthetic"]
    assert {"paper_imagenet", "paper_fmnist", "layers_fmnist"} <= set(EXPERIMENTS)
    assert {"basic", "joblib", "slurm", "submitit_local"} <= set(LAUNCHERS)


@pytest.mark.parametrize("model", [m for m in MODELS if m != "custom"])
def test_every_model_config_builds_with_its_layer_structure(model):
    cfg = validate(composed(f"model={model}", "model.weights=null", "model.checkpoint=null"))
    network = build_model(cfg.model)
    base = model.removesuffix("_fmnist")
    assert len(discover_layers(network)) == EXPECTED_LAYERS[base]
    assert list(cfg.model.input_size) == ([1, 28, 28] if model.endswith("_fmnist") else [3, 224, 224])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes(experiment):
    cfg = composed(f"experiment={experiment}", "data.root=/somewhere", multirun=True)
    assert cfg.hydra.sweeper.params, "a preset defines the sweep it stands for"
    validate(cfg)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_preset_composes(launcher):
    cfg = composed(f"launcher={launcher}", multirun=True)
    assert cfg.hydra.launcher._target_.endswith(LAUNCHER_CLASSES.get(launcher, ""))


def test_default_data_builds_and_limit_spreads_over_all_classes():
    cfg = validate(composed("data.limit=100"))
    data = load_eval_data(cfg.data)
    assert data.size == 100 and data.images.shape == (100, 1, 28, 28)
    assert sorted(set(data.labels.tolist())) == list(range(10))


def test_spread_indices_by_hand():
    assert spread_indices(10, 5) == [0, 2, 4, 6, 8]
    assert spread_indices(7, 3) == [0, 2, 4]  # floor(i * 7 / 3)
    assert spread_indices(4, None) == [0, 1, 2, 3] == spread_indices(4, 9)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("window=0", "window must be"),
        ("data.limit=0", "data.limit"),
        ("device=gpu", "device"),
        ("predictor=spiral", "diagonal"),
    ],
)
def test_bad_values_fail_when_validated(override, message):
    with pytest.raises(ValueError, match=message):
        validate(composed(override))


def test_bad_types_fail_when_composed():
    with pytest.raises(Exception) as error:
        composed("window=abc")
    assert isinstance(error.value, ValidationError) or isinstance(error.value.__cause__, ValidationError)


def test_layer_index_from_the_command_line_is_a_string_key():
    assert validate(composed("layer=3")).layer == "3"
    assert OmegaConf.select(composed(), "layer") == "all"
