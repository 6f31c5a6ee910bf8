"""Energy per layer, dense and predicted, from a run's counts and a hardware preset (a model, not a
measurement: docs/measurements.md, "Energy and cycles"; contract section 10).

A preset (``conf/hardware/energy/<name>.yaml``, schema :class:`EnergyPreset`) gives, per MAC, the energy of four
components: the MAC itself (``compute``), the PE-local storage (``register_file``), the shared on-chip
buffer (``buffer``) and ``dram``. Each component lists storages with their access counts, access energy
and leakage in a reference run of ``computes`` MACs; a component's energy per MAC is their sum over
``computes`` (so the published reference is kept as it was published, and the test reproduces its
total). From a run's ``layers.csv`` row (contract sections 4, 7, 10), with g the preset's ``group``:

- dense: MACs = acts * macs_per_act, each component = MACs * its energy per MAC;
- skipped MACs = ``skip_cells_g<g>`` * macs_per_act: they save their ``compute`` and ``register_file``
  energy (the operands are not read, the partial sum is not updated); the buffer and DRAM move the same
  data (the other outputs need the inputs and weights; the zero outputs are still written);
- the predictor's own cost: one comparison per output cell (``compare_pj``; an upper bound: the rules
  compare only their pattern cells) and ``predictor_macs`` (the learned predictor) at the ``compute`` and
  ``register_file`` energy of a MAC.

``mode`` says whether a skipped cell saves energy only (``gating``) or cycles too (``skipping``): energy
is the same either way here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.tracking.keys import GROUP_SIZES as GROUPS  # the granularities a run logs (section 10)

PRESETS = Path(__file__).resolve().parents[1] / "conf" / "hardware" / "energy"
COMPONENTS = ("compute", "register_file", "buffer", "dram")
MODES = ("gating", "skipping")


class EnergyError(ValueError):
    """A preset that does not exist or does not hold together; the message names the fix."""


@dataclass(frozen=True)
class Storage:
    accesses: float  # in the reference run
    energy_pj: float  # their total access energy
    leakage_pj: float = 0.0  # total leakage over the reference run


@dataclass(frozen=True)
class EnergyPreset:
    name: str
    source: str
    mode: str
    group: int
    computes: float  # MACs of the reference run the storages' counts come from
    compare_pj: float  # one zero check of the predictor
    components: Mapping[str, Mapping[str, Storage]]

    def per_mac(self, component: str) -> float:
        """pJ per MAC of one component: its storages' access energy and leakage over the reference MACs."""
        storages = self.components.get(component, {})
        return sum(s.energy_pj + s.leakage_pj for s in storages.values()) / self.computes

    @property
    def total_per_mac(self) -> float:
        return sum(self.per_mac(component) for component in COMPONENTS)

    @property
    def saved_per_mac(self) -> float:
        """What one skipped MAC saves: its compute and register-file energy."""
        return self.per_mac("compute") + self.per_mac("register_file")


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS.glob("*.yaml"))


def load_preset(name: str) -> EnergyPreset:
    """``conf/hardware/energy/<name>.yaml`` (with its ``base``, when it names one), checked."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise EnergyError(
            f"energy preset {name!r} is not in conf/hardware/energy/: use one of {', '.join(preset_names())}"
        )
    node = OmegaConf.load(path)
    if "base" in node:
        base = OmegaConf.load(PRESETS / f"{node.base}.yaml")
        node = OmegaConf.merge(base, {k: v for k, v in node.items() if k != "base"})
    plain: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    where = f"conf/hardware/energy/{name}.yaml"
    if plain.get("mode") not in MODES:
        raise EnergyError(f"{where}: mode must be one of {', '.join(MODES)}, got {plain.get('mode')!r}")
    group = plain.get("group")
    if group not in GROUPS:
        raise EnergyError(f"{where}: group must be one of {', '.join(map(str, GROUPS))} (the logged skip/g), "
                          f"got {group!r}")  # fmt: skip
    unknown = set(plain.get("components") or {}) - set(COMPONENTS)
    if unknown or not plain.get("components"):
        raise EnergyError(f"{where}: components must be some of {', '.join(COMPONENTS)}, got {sorted(unknown)}")
    components = {
        component: {key: Storage(**values) for key, values in storages.items()}
        for component, storages in plain["components"].items()
    }
    if not plain.get("computes", 0) > 0:
        raise EnergyError(f"{where}: computes must be the reference run's MACs (> 0)")
    return EnergyPreset(plain["name"], plain["source"], plain["mode"], int(group), float(plain["computes"]),
                        float(plain["compare_pj"]), components)  # fmt: skip


def layer_energy(row: Mapping[str, Any], preset: EnergyPreset) -> dict[str, float]:
    """One layers.csv row under ``preset``: ``dense/<component>``, ``predicted/<component>`` and
    ``predicted/predictor`` in pJ (over the run's images), and the MACs behind them."""
    per_act = float(row["macs_per_act"])
    macs = float(row["acts"]) * per_act
    skipped = float(row[f"skip_cells_g{preset.group}"]) * per_act
    out: dict[str, float] = {"macs": macs, "macs_skipped": skipped}
    for component in COMPONENTS:
        dense = macs * preset.per_mac(component)
        out[f"dense/{component}"] = dense
        saved = skipped * preset.per_mac(component) if component in ("compute", "register_file") else 0.0
        out[f"predicted/{component}"] = dense - saved
    predicting = str(row.get("predictor", "none")) not in ("none", "")
    compares = float(row["acts"]) * preset.compare_pj if predicting else 0.0
    out["predicted/predictor"] = compares + float(row.get("predictor_macs", 0) or 0) * preset.saved_per_mac
    out["dense"] = sum(out[f"dense/{c}"] for c in COMPONENTS)
    out["predicted"] = sum(out[f"predicted/{c}"] for c in COMPONENTS) + out["predicted/predictor"]
    return out


def energy_tables(runs: Any, layers_of: Any, presets: list[EnergyPreset]) -> tuple[Any, Any]:
    """Per layer and per run, for every preset: the energy of the runs that log the section-10 counts
    (``runs``: rows with ``run_id, label, setting, model``; ``layers_of``: a run id to its layers.csv
    frame, or None). Returns (layers, totals) DataFrames; totals has ``mac_saving_kept`` (skipped MACs
    over the layers' MACs at the preset's g) and ``energy_saving`` (1 - predicted / dense)."""
    import pandas as pd

    layer_rows, total_rows = [], []
    for _, run in runs.iterrows():
        table = layers_of(run["run_id"])
        if table is None or any(f"skip_cells_g{g}" not in table for g in GROUPS):
            continue
        for preset in presets:
            sums: dict[str, float] = {}
            for _, layer in table.sort_values("index").iterrows():
                values = layer_energy(layer, preset)
                layer_rows.append({"run_id": run["run_id"], "label": run["label"], "setting": run["setting"],
                                   "preset": preset.name, "layer": layer["name"], **values})  # fmt: skip
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
            total_rows.append({
                "run_id": run["run_id"], "model": run["model"], "label": run["label"], "setting": run["setting"],
                "preset": preset.name, "mode": preset.mode, "group": preset.group,
                "mac_saving_kept": sums["macs_skipped"] / sums["macs"] if sums.get("macs") else 0.0,
                "energy_saving": 1 - sums["predicted"] / sums["dense"] if sums.get("dense") else 0.0,
                "dense_pj_per_image": sums.get("dense", 0.0) / float(run["images"]),
                "predicted_pj_per_image": sums.get("predicted", 0.0) / float(run["images"]),
                **{f"share/{c}": sums[f"dense/{c}"] / sums["dense"] if sums.get("dense") else 0.0
                   for c in COMPONENTS},
            })  # fmt: skip
    return pd.DataFrame(layer_rows), pd.DataFrame(total_rows)
