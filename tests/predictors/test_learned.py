"""The learned predictor (contract sections 7-8): what it reads, what it costs, how it is trained and stored."""

from __future__ import annotations

import pytest
import torch
from bruteforce import random_activation

from pipeline.fitting.predictor_training import TrainPredictorConfig, checkpoint, default_threshold, train
from pipeline.measurement.counts import measure
from pipeline.networks.data import DataConfig
from pipeline.networks.layers import PredictableLayer, conv_macs_per_act
from pipeline.networks.models import ModelConfig, build_model
from pipeline.predictors import LayerInput, make_predictor
from pipeline.predictors.learned import FORMAT, ScoreNet, load_checkpoint
from pipeline.predictors.tiles import basis_map

LAYER = PredictableLayer(0, "conv", ("conv",), 27, "relu", channels=4)


def tiny_checkpoint(path, pattern: str = "checkerboard", window: int = 2, threshold: float = 0.5, seed: int = 0):
    """A checkpoint of one randomly initialized score network for LAYER, in the trainer's format."""
    torch.manual_seed(seed)
    net = ScoreNet(LAYER.channels)
    for bn in (net.bn1, net.bn2):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    state = {"format": FORMAT, "model": "tiny", "pattern": pattern, "window": window,
             "layers": {LAYER.name: {"index": 0, "channels": LAYER.channels, "state_dict": net.state_dict(),
                                     "threshold": threshold}}}  # fmt: skip
    torch.save(state, path)
    return net


def learned(path, window: int = 2, **params):
    return make_predictor("learned", window, layer=LAYER, checkpoint=str(path), **params)


def test_decisions_never_read_a_non_pattern_cell(tmp_path):
    # changing every non-pattern cell (zeroing some, raising others) changes no decision and no score
    tiny_checkpoint(tmp_path / "p.pt")
    predictor = learned(tmp_path / "p.pt", threshold=0.0)
    activation = random_activation((3, 4, 9, 11), seed=1)
    basis = basis_map("checkerboard", 2, 9, 11)
    changed = activation.clone()
    noise = torch.rand(changed.shape, generator=torch.Generator().manual_seed(2)) * 5
    changed[..., ~basis] = torch.where(noise[..., ~basis] > 2.5, noise[..., ~basis], 0.0)
    assert not torch.equal(changed, activation)
    for x in (activation, changed):
        assert torch.equal(predictor.scores(x), predictor.scores(activation))
    first = predictor.masks(LayerInput(activation, activation == 0))
    second = predictor.masks(LayerInput(changed, changed == 0))
    assert torch.equal(first[1], second[1])  # the same cells predicted
    assert not (first[1] & basis).any()  # never a pattern cell
    assert first[1].any() and not first[1].all()  # a real decision, not a trivial one


def test_predictor_macs_by_hand(tmp_path):
    # one layer, 2 images x 4 channels of 5 x 5: each depthwise 3x3 conv costs 9 MACs per output cell,
    # two convs: 2 * (2 * 4 * 5 * 5) * 9 = 3,600 (BatchNorm folds into the convs)
    tiny_checkpoint(tmp_path / "p.pt")
    predictor = learned(tmp_path / "p.pt", threshold=0.3)
    activation = random_activation((2, 4, 5, 5), seed=3)
    assert predictor.macs((2, 4, 5, 5)) == 3600
    assert conv_macs_per_act(predictor.net.conv1) == conv_macs_per_act(predictor.net.conv2) == 9
    counts = measure(activation.clone(), predictor).counts
    assert counts[-1].item() == 3600  # predictor_macs, counted per batch
    # a 1x1 window predicts nothing, runs no network and costs nothing
    nothing = make_predictor("learned", 1, layer=LAYER, checkpoint=str(tmp_path / "missing.pt"))
    assert nothing.predicts_nothing and nothing.macs((2, 4, 5, 5)) == 0


def test_counts_follow_the_contract(tmp_path):
    # zero_diag: pattern cells equal to 0; predicted: non-pattern cells scoring below the threshold
    tiny_checkpoint(tmp_path / "p.pt")
    predictor = learned(tmp_path / "p.pt", threshold=0.2)
    activation = random_activation((2, 4, 7, 6), seed=4)
    basis = basis_map("checkerboard", 2, 7, 6)
    scores = predictor.scores(activation)
    predicted = (scores < 0.2) & ~basis
    zero = activation == 0
    result = measure(activation.clone(), predictor)
    zero_diag, hits, misses = result.counts[2:5].tolist()
    assert zero_diag == int((zero & basis).sum())
    assert (hits, misses) == (int((predicted & zero).sum()), int((predicted & ~zero).sum()))
    assert torch.equal(result.output, activation.masked_fill(predicted, 0))
    assert result.masses[1].item() == pytest.approx(float(activation[predicted].sum()))


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.6])
def test_the_kernel_counts_the_score_network_decision_as_the_reference(tmp_path, threshold, monkeypatch):
    """The fused kernel, handed the decision per cell, counts and applies it as the masks do: many
    planes (the kernel's chunks), odd map sizes (edge tiles)."""
    from pipeline.measurement import counts as counts_module
    from tests.conftest import HAVE_KERNEL

    if not HAVE_KERNEL:
        pytest.skip("no C++ compiler or ninja: the counting kernel cannot be built")
    tiny_checkpoint(tmp_path / "p.pt")
    predictor = learned(tmp_path / "p.pt", threshold=threshold)
    activation = random_activation((5, 4, 31, 17), seed=6)
    reference = counts_module.measure_torch(activation.clone(), predictor)
    monkeypatch.setattr(counts_module, "measure_torch", None)  # the kernel must really run
    fast = measure(activation.clone(), predictor)
    assert fast.counts.tolist() == reference.counts.tolist()
    assert torch.allclose(fast.masses, reference.masses, rtol=1e-6, atol=1e-6)
    assert torch.equal(fast.output, reference.output)
    assert 0 < fast.counts[3] + fast.counts[4] < activation.numel()  # some cells predicted, not all


def test_checkpoint_round_trips_with_weights_only(tmp_path):
    net = tiny_checkpoint(tmp_path / "p.pt", threshold=0.37)
    state = load_checkpoint(tmp_path / "p.pt")  # torch.load(weights_only=True)
    assert state["pattern"] == "checkerboard" and state["layers"]["conv"]["threshold"] == 0.37
    predictor = learned(tmp_path / "p.pt")
    assert predictor.threshold == 0.37  # the checkpoint's threshold when none is given
    x = random_activation((1, 4, 6, 6), seed=5)
    net.eval()
    with torch.no_grad():
        assert torch.equal(predictor.scores(x), net(x * basis_map("checkerboard", 2, 6, 6)))
    assert learned(tmp_path / "p.pt", threshold=0.1).threshold == 0.1  # a given threshold wins


def test_wrong_pattern_window_or_file_is_one_clear_error(tmp_path):
    tiny_checkpoint(tmp_path / "p.pt")
    with pytest.raises(
        ValueError, match="trained for pattern checkerboard at window 2, not checkerboard at window 3"
    ):
        learned(tmp_path / "p.pt", window=3)
    with pytest.raises(ValueError, match="does not exist: train one with `python -m pipeline.train_predictor"):
        learned(tmp_path / "nothing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a predictor checkpoint"):
        learned(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a predictor checkpoint"):
        learned(tmp_path / "list.pt")


def tiny_training(seed: int = 0) -> TrainPredictorConfig:
    return TrainPredictorConfig(
        model=ModelConfig(name="alexnet_fmnist", checkpoint="alexnet_fmnist.pt", input_size=[1, 28, 28],
                          num_classes=10),
        data=DataConfig(name="fashion_mnist"), images=96, holdout=32, epochs=1, batch_size=32, seed=seed,
    )  # fmt: skip


def test_training_is_deterministic_for_a_seed_and_uses_the_training_split(monkeypatch):
    from pipeline.networks import data as data_module

    splits = []
    read = data_module.read_fashion_mnist
    monkeypatch.setattr(
        data_module, "read_fashion_mnist", lambda folder, split="test": splits.append(split) or read(folder, split)
    )
    data_module._CACHE.clear()
    states = []
    for seed in (0, 0, 1):
        config = tiny_training(seed)
        layers, nets, record = train(config, build_model(config.model))
        states.append(checkpoint(config, layers, nets, record))
    assert splits and set(splits) == {"train"}  # never the evaluation images
    first, again, other = states
    for name, entry in first["layers"].items():
        assert entry["threshold"] == again["layers"][name]["threshold"]
        for key, value in entry["state_dict"].items():
            assert torch.equal(value, again["layers"][name]["state_dict"][key]), (name, key)
    assert any(not torch.equal(v, other["layers"]["features.0"]["state_dict"][k])
               for k, v in first["layers"]["features.0"]["state_dict"].items())  # fmt: skip
    assert [entry["channels"] for entry in first["layers"].values()] == [32, 64, 96, 96, 64]


def test_default_threshold_is_the_largest_within_the_miss_mass_budget():
    from pipeline.fitting.predictor_training import GRID, LayerScores

    lost = torch.tensor([0.001 * (i + 1) ** 2 for i in range(len(GRID))], dtype=torch.float64)  # grows with t
    scores = LayerScores(torch.zeros(len(GRID)), torch.zeros(len(GRID)), lost, mass=1.0, cells=100)
    # lost mass 0.001 * i^2 <= 0.01 for i <= 3: thresholds 0.05, 0.10, 0.15 qualify
    assert default_threshold(scores, 0.01) == 0.15
    assert default_threshold(scores, 0.0001) == float("-inf")  # none qualifies: the layer predicts nothing


@pytest.mark.parametrize("group", [2, 3, 4])
def test_a_group_predicts_a_non_pattern_cell_where_every_channel_scores_below(tmp_path, group, monkeypatch):
    """Contract section 10: with ``group`` g a non-pattern cell is predicted in every channel of its group
    (4 channels: g = 3 makes {0, 1, 2} and {3}) when its score is below the threshold in each of them; the
    kernel, handed that decision, counts it as the masks do."""
    from pipeline.measurement import counts as counts_module
    from tests.conftest import HAVE_KERNEL

    tiny_checkpoint(tmp_path / "p.pt")
    activation = random_activation((3, 4, 9, 7), seed=8)
    basis = basis_map("checkerboard", 2, 9, 7)
    below = learned(tmp_path / "p.pt", threshold=0.6).scores(activation) < 0.6
    expected = torch.zeros_like(below)
    for first in range(0, 4, group):
        expected[:, first : first + group] = below[:, first : first + group].all(dim=1, keepdim=True)
    expected &= ~basis
    predictor = learned(tmp_path / "p.pt", threshold=0.6, group=group)
    _, predicted = predictor.masks(LayerInput(activation, activation == 0))
    assert torch.equal(predicted, expected) and expected.any()
    reference = counts_module.measure_torch(activation.clone(), predictor)
    assert reference.counts[3] + reference.counts[4] == int(expected.sum())
    if HAVE_KERNEL:
        monkeypatch.setattr(counts_module, "measure_torch", None)  # the kernel must really run
        fast = measure(activation.clone(), predictor)
        assert fast.counts.tolist() == reference.counts.tolist()
        assert torch.equal(fast.output, reference.output)
