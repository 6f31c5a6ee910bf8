"""Every shipped config and preset composes, validates and builds its objects; bad values fail early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from pipeline.job.config import register, validate
from pipeline.networks.data import load_eval_data, spread_indices
from pipeline.networks.layers import discover_layers
from pipeline.networks.models import build_model

CONF = Path(__file__).resolve().parents[2] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "launcher").glob("*.yaml"))
PREDICTORS = sorted(p.stem for p in (CONF / "predictor").glob("*.yaml"))
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
    from pipeline.predictors import KINDS

    assert set(PREDICTORS) == set(KINDS)  # one config per registered kind
    assert {"paper_imagenet", "paper_fmnist", "layers_fmnist"} <= set(EXPERIMENTS)
    assert {"basic", "joblib", "slurm", "submitit_local"} <= set(LAUNCHERS)


@pytest.mark.parametrize("model", [m for m in MODELS if m != "custom"])
def test_every_model_config_builds_with_its_layer_structure(model):
    cfg = validate(composed(f"model={model}", "model.weights=null", "model.checkpoint=null"))
    network = build_model(cfg.model)
    base = model.removesuffix("_fmnist")
    assert len(discover_layers(network)) == EXPECTED_LAYERS[base]
    assert list(cfg.model.input_size) == ([1, 28, 28] if model.endswith("_fmnist") else [3, 224, 224])


def preset_jobs(experiment: str, *arguments: str) -> list[list[str]]:
    """The override lists of every job of a preset's sweep, expanded as its sweeper does."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import HydraContext

    from hydra_plugins.cnp_union_sweeper.union_sweeper import UnionSweeper

    cfg = composed(f"experiment={experiment}", *arguments, multirun=True)
    sweeper = UnionSweeper(None, dict(cfg.hydra.sweeper.params or {}), list(cfg.hydra.sweeper.get("grids") or []))
    sweeper.hydra_context = HydraContext(ConfigLoaderImpl(create_config_search_path(str(CONF))), None)
    return sweeper.jobs([f"experiment={experiment}", *arguments])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_preset_composes_job_by_job(experiment):
    jobs = preset_jobs(experiment, "data.root=/somewhere")
    assert len(jobs) > 1, "a preset defines the sweep it stands for"
    for job in jobs:
        validate(composed(*job))


def test_union_sweeper_runs_each_grid_once_with_the_command_line_on_top():
    jobs = preset_jobs("layers_fmnist")
    assert [j for j in jobs if "window=1" in j] == [["model=alexnet_fmnist", "window=1", "experiment=layers_fmnist"]]
    assert len(jobs) == 1 + 4 * 5  # the baseline once, then windows 2..5 x layers 0..4
    jobs = preset_jobs("predictors_fmnist", "model=vgg16_fmnist")  # the command line replaces params' model
    assert {j[0] for j in jobs} == {"model=vgg16_fmnist"}
    kinds = [next(o for o in j if o.startswith("predictor=")) for j in jobs]
    assert kinds[:2] == ["predictor=none", "predictor=oracle"]
    assert len(jobs) == len({tuple(sorted(j)) for j in jobs}) == 2 + 5 + 3 + 4 + 3 + 3 + 3


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_preset_composes(launcher):
    cfg = composed(f"launcher={launcher}", multirun=True)
    assert cfg.hydra.launcher._target_.endswith(LAUNCHER_CLASSES.get(launcher, ""))


def test_default_data_builds_and_limit_spreads_over_all_classes():
    cfg = validate(composed("data.limit=100"))
    data = load_eval_data(cfg.data)
    assert data.size == 100 and data.images.shape == (100, 1, 28, 28)
    assert sorted(set(data.labels.tolist())) == list(range(10))


def test_the_training_split_is_cut_in_two_disjoint_parts_by_hand():
    from pipeline.networks.data import DataConfig, split_indices

    def part(split, **keys):
        return split_indices(12, DataConfig(name="x", split=split, calibration_images=3, **keys), "x")

    assert part("calibration") == [0, 4, 8]  # 3 spread over 12
    assert part("train") == [1, 2, 3, 5, 6, 7, 9, 10, 11]  # every other one
    assert part("train", limit=4) == [1, 3, 6, 9]  # spread within the part: indices 0, 2, 4, 6 of it
    assert part("test", limit=4) == [0, 3, 6, 9]
    full = DataConfig(name="x", split="calibration")
    assert (
        len(
            set(split_indices(60000, full, "x")) & set(split_indices(60000, DataConfig(name="x", split="train"), "x"))
        )
        == 0
    )


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
        ("predictor.threshold=-0.5", "threshold must be >= 0"),
        ("+predictor.layers.1.window=abc", "predictor.layers.1: .*window"),
        ("+predictor.layers.1.colour=red", "predictor.layers.1: .*colour"),
        ("+predictor.layers.1.pattern=spiral", "predictor.layers.1: .*checkerboard"),
        ("+predictor.layers.1=sideways", "predictor.layers.1='sideways'"),
    ],
)
def test_bad_values_fail_when_validated(override, message):
    with pytest.raises(ValueError, match=message):
        validate(composed(override))


def test_bad_types_fail_when_composed():
    with pytest.raises(Exception) as error:
        composed("window=abc")
    assert isinstance(error.value, ValidationError) or isinstance(error.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["predictor=spiral"], "tile_oracle"),  # an unknown kind lists the kinds
        (["predictor.pattern=spiral"], "checkerboard"),  # an unknown pattern lists the patterns
        (["predictor=oracle", "predictor.pattern=diagonal"], "pattern"),  # a key the kind does not have
        (["predictor=none", "predictor.threshold=0.1"], "threshold"),
        (["predictor.threshold=abc"], "threshold"),
    ],
)
def test_bad_predictor_settings_fail_when_composed(overrides, message):
    with pytest.raises(Exception) as error:
        composed(*overrides)
    text = str(error.value) + str(error.value.__cause__ or "")
    assert message in text


def test_default_predictor_is_the_papers_rule():
    cfg = validate(composed())
    assert (cfg.predictor.kind, cfg.predictor.pattern.value, cfg.predictor.threshold, cfg.window) == (
        "tile", "diagonal", 0.0, 1,
    )  # fmt: skip
    assert cfg.predictor.layers == {}


@pytest.mark.parametrize("kind", PREDICTORS)
def test_every_predictor_config_composes_and_builds_per_layer(kind):
    from pipeline.networks.layers import resolve_scope
    from pipeline.predictors import BuildContext, build_predictors, resolve_plans

    window = "window=2" if kind == "learned" else "window=3"  # the shipped learned predictors: 2x2 checkerboards
    cfg = validate(composed(f"predictor={kind}", window, "+predictor.layers.0.kind=none"))
    assert cfg.predictor.kind == kind
    network = build_model(cfg.model)
    layers = discover_layers(network)
    plans = resolve_plans(cfg.predictor, cfg.window, layers, resolve_scope(layers, "all"))
    predictors = build_predictors(plans, layers, BuildContext(model=cfg.model.name))
    assert [p.kind for p in predictors] == ["none"] + [kind] * 4


def test_layer_index_from_the_command_line_is_a_string_key():
    assert validate(composed("layer=3")).layer == "3"
    assert OmegaConf.select(composed(), "layer") == "all"


OPERATING_POINTS = sorted(p.stem for p in (CONF / "operating_point").glob("*.yaml"))


def test_the_three_shipped_operating_points_are_there():
    assert {"alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist"} <= set(OPERATING_POINTS)


@pytest.mark.parametrize("name", OPERATING_POINTS)
def test_every_shipped_operating_point_runs_as_a_config_of_its_model(name):
    from pipeline.networks.layers import resolve_scope
    from pipeline.predictors import BuildContext, build_predictors, resolve_plans

    model = OmegaConf.load(CONF / "operating_point" / f"{name}.yaml").operating_point.model
    cfg = validate(composed(f"model={model}", f"operating_point={name}"))  # no other key
    assert cfg.operating_point.name == name and cfg.predictor.kind == "none" and cfg.predictor.layers
    layers = discover_layers(build_model(cfg.model))
    plans = resolve_plans(cfg.predictor, cfg.window, layers, resolve_scope(layers, "all"))
    predictors = build_predictors(plans, layers, BuildContext(model=model))
    assert any(not p.predicts_nothing for p in predictors)


@pytest.mark.parametrize("entry", ["config", "search", "train_predictor", "analysis", "train"])
def test_every_entry_point_takes_its_store_from_the_tracking_group(entry):
    """One place for where runs go: each entry point lists the tracking group, whose local option is the
    schema's default; tracking=server switches every entry point to a server."""
    import dataclasses

    import yaml

    from pipeline.fitting.operating_points import register as register_search
    from pipeline.fitting.predictor_training import register as register_predictor
    from pipeline.fitting.twins import register as register_train
    from pipeline.tracking.config import TrackingConfig

    register_search(), register_predictor(), register_train()
    local = yaml.safe_load((CONF / "tracking" / "local.yaml").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(TrackingConfig)}
    assert local == {key: defaults[key] for key in ("uri", "artifacts")}
    own = OmegaConf.to_container(OmegaConf.load(CONF / f"{entry}.yaml")).get("tracking", {})
    assert set(own) <= {"experiment"}, own  # the store and artifact root come from the group only
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        assert compose(entry).tracking.uri == TrackingConfig.uri
        assert compose(entry, overrides=["tracking=server"]).tracking.uri == "http://127.0.0.1:5000"
