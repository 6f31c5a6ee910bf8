"""The energy model (analysis/energy.py, conf/hardware/energy/): the published reference reproduced from its access
counts, one layer by hand, an analysis end to end, and bad presets."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from analysis.energy import COMPONENTS, EnergyError, layer_energy, load_preset, preset_names
from analysis.report import run
from tests.analysis.test_analysis import config
from tests.cli import REPO
from tests.stores import Store, metrics


def test_the_eyeriss_like_reference_is_5_47_pj_per_mac_from_its_access_counts():
    """Timeloop's eyeriss_like reference (its stats' fJ/Compute summary): mac 207.69, psum_spad 386.77,
    weights_spad 1006.69, ifmap_spad 112.37, shared_glb 375.27, DRAM 3380.86, total 5469.65 fJ per MAC."""
    preset = load_preset("eyeriss_like")
    fj = {component: 1000 * preset.per_mac(component) for component in COMPONENTS}
    assert fj["compute"] == pytest.approx(207.69, abs=0.01)
    assert fj["register_file"] == pytest.approx(386.77 + 1006.69 + 112.37, abs=0.02)
    assert fj["buffer"] == pytest.approx(375.27, abs=0.01)
    assert fj["dram"] == pytest.approx(3380.86, abs=0.01)
    assert 1000 * preset.total_per_mac == pytest.approx(5469.65, abs=0.02)
    assert preset.mode == "gating" and preset.group == 1
    assert load_preset("eyeriss_like_g8").group == 8 and load_preset(
        "eyeriss_like_g8"
    ).total_per_mac == pytest.approx(preset.total_per_mac)
    # Horowitz, ISSCC 2014, 45 nm: a MAC is a multiply and an add
    assert load_preset("horowitz_45nm_int8").total_per_mac == pytest.approx(0.2 + 0.03)
    assert load_preset("horowitz_45nm_fp32").total_per_mac == pytest.approx(3.7 + 0.9)


SKIPPED = dict(zip((1, 2, 4, 8, 16, 32), (30, 20, 12, 8, 0, 0), strict=True))
ROW = {"index": 0, "name": "a", "acts": 100, "macs_per_act": 10, "predictor": "tile", "predictor_macs": 0,
       **{f"skip_cells_g{g}": n for g, n in SKIPPED.items()}}  # fmt: skip


def test_one_layer_by_hand():
    """100 cells of 10 MACs each: 1,000 MACs. int8 at 45 nm: dense 1,000 * 0.23 = 230 pJ; 30 cells skipped
    (300 MACs) leave 700 * 0.23 = 161 pJ, plus 100 zero checks * 0.03 = 3 pJ: 164 pJ. Eyeriss-like at g = 8:
    8 cells skippable (80 MACs), each saving its MAC and scratchpad energy; buffer and DRAM unchanged."""
    int8 = layer_energy(ROW, load_preset("horowitz_45nm_int8"))
    assert int8["dense"] == pytest.approx(230.0) and int8["predicted"] == pytest.approx(164.0)
    assert int8["predicted/predictor"] == pytest.approx(3.0) and int8["macs_skipped"] == 300
    eyeriss = load_preset("eyeriss_like_g8")
    wide = layer_energy(ROW, eyeriss)
    assert wide["macs_skipped"] == 80
    assert wide["dense/dram"] == wide["predicted/dram"] == pytest.approx(1000 * eyeriss.per_mac("dram"))
    assert wide["dense"] - wide["predicted"] == pytest.approx(80 * eyeriss.saved_per_mac - 100 * 0.03)
    # the learned predictor's MACs cost a MAC's compute and register-file energy each
    learned = layer_energy({**ROW, "predictor": "learned", "predictor_macs": 50}, load_preset("horowitz_45nm_int8"))
    assert learned["predicted/predictor"] == pytest.approx(100 * 0.03 + 50 * 0.23)
    # a layer that predicts nothing costs what it costs dense
    off = layer_energy({**ROW, "predictor": "none", **{f"skip_cells_g{g}": 0 for g in (1, 2, 4, 8, 16, 32)}},
                       load_preset("eyeriss_like"))  # fmt: skip
    assert off["predicted"] == pytest.approx(off["dense"])


def test_the_analysis_writes_energy_tables_and_figures_from_the_runs_counts(tmp_path):
    store = Store(tmp_path)
    store.job("alexnet_fmnist", "fashion_mnist", None, 1, metrics(1, 0.92, 0.99, 0.0), tags={"baseline": "true"},
              predictor={"kind": "none"})  # fmt: skip
    run_id = store.job("alexnet_fmnist", "fashion_mnist", None, 3, metrics(3, 0.91, 0.99, 0.3), config_hash="rule",
                       predictor={"kind": "tile", "pattern": "diagonal", "threshold": 0.0})  # fmt: skip
    table = tmp_path / "layers.csv"
    pd.DataFrame([ROW, {**ROW, "index": 1, "name": "b", "acts": 50}]).to_csv(table, index=False)
    store.client.log_artifact(run_id, str(table))
    found = run(config(store.uri, tmp_path / "out", "log_run=false", "formats=[png]",
                       "energy=[horowitz_45nm_int8,eyeriss_like_g8]"))  # fmt: skip
    totals = pd.read_csv(found.out / "energy.csv").set_index("preset")
    # int8: 1,500 MACs dense (345 pJ), 600 skipped: 900 * 0.23 + 150 checks * 0.03 = 211.5 pJ over 1,000 images
    assert totals.loc["horowitz_45nm_int8", "mac_saving_kept"] == pytest.approx(600 / 1500)
    assert totals.loc["horowitz_45nm_int8", "energy_saving"] == pytest.approx(1 - 211.5 / 345)
    assert totals.loc["horowitz_45nm_int8", "dense_pj_per_image"] == pytest.approx(345 / 1000)
    assert totals.loc["eyeriss_like_g8", "mac_saving_kept"] == pytest.approx(160 / 1500)
    assert (found.out / "fig_energy.png").is_file() and (found.out / "fig_energy_layers.png").is_file()
    assert len(pd.read_csv(found.out / "energy_layers.csv")) == 4  # 2 layers x 2 presets


def test_an_unknown_energy_preset_is_one_error_line_naming_the_known_ones(tmp_path):
    command = [sys.executable, "-m", "analysis", "energy=[eyeriss]", f"out={tmp_path}/out",
               f"tracking.uri=sqlite:///{tmp_path}/none.db"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "energy preset 'eyeriss' is not in conf/hardware/energy/: use one of" in lines[0]
    assert all(name in lines[0] for name in preset_names())
    with pytest.raises(EnergyError, match="is not in conf/hardware/energy/"):
        load_preset("nope")
