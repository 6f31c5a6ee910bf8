"""The analysis settings (``conf/analysis.yaml``), checked before the store is opened.

:func:`validate` turns the composed Hydra config into an :class:`AnalysisConfig`; a bad value raises
:class:`AnalysisError` with a message that names the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

FILTER_KEYS = ("sweep", "model", "data", "split")
FORMATS = ("png", "pdf", "svg")


class AnalysisError(RuntimeError):
    """Bad input (settings, store, runs): the message names the problem and what to run."""


@dataclass(frozen=True)
class AnalysisConfig:
    uri: str
    experiment: str
    artifacts: str
    out: Path
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> accepted values
    max_top5_drop: float = 0.08
    formats: tuple[str, ...] = ("png", "pdf")
    log_run: bool = True
    energy: tuple[str, ...] = ()  # energy presets (conf/hardware/energy/<name>.yaml), checked here


def validate(cfg: DictConfig | Mapping) -> AnalysisConfig:
    """The settings of ``cfg`` (a composed ``conf/analysis.yaml``), or :class:`AnalysisError`."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    tracking = plain.get("tracking") or {}
    for key in ("uri", "experiment", "artifacts"):
        if not isinstance(tracking.get(key), str) or not tracking[key]:
            raise AnalysisError(f"tracking.{key} must be a non-empty string (see conf/analysis.yaml)")

    filters: dict[str, tuple[str, ...]] = {}
    for key, value in (plain.get("filters") or {}).items():
        if key not in FILTER_KEYS:
            raise AnalysisError(f"unknown filter filters.{key}: use one of {', '.join(FILTER_KEYS)}")
        values = _strings(value, f"filters.{key}")
        if values:
            filters[key] = values

    best = plain.get("best") or {}
    drop = best.get("max_top5_drop", 0.08)
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop <= 1:
        raise AnalysisError(f"best.max_top5_drop={drop!r}: use a fraction in [0, 1], e.g. 0.08 for 8 points")

    formats = _strings(plain.get("formats", ["png", "pdf"]), "formats")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise AnalysisError(f"formats={list(formats)}: use a non-empty list of {', '.join(FORMATS)}")

    out = plain.get("out")
    if not isinstance(out, str) or not out:
        raise AnalysisError("out must be a folder path, e.g. out=outputs/figures")
    check_out(Path(out))
    log_run = plain.get("log_run", True)
    if not isinstance(log_run, bool):
        raise AnalysisError(f"log_run={log_run!r}: use true or false")
    from analysis.energy import EnergyError, load_preset

    energy = _strings(plain.get("energy") or [], "energy")
    for name in energy:
        try:
            load_preset(name)
        except EnergyError as exc:
            raise AnalysisError(f"energy={list(energy)}: {exc}") from None
    return AnalysisConfig(
        uri=tracking["uri"],
        experiment=tracking["experiment"],
        artifacts=tracking["artifacts"],
        out=Path(out),
        filters=filters,
        max_top5_drop=float(drop),
        formats=tuple(dict.fromkeys(formats)),
        log_run=log_run,
        energy=tuple(dict.fromkeys(energy)),
    )


def check_out(out: Path) -> None:
    """``out`` is a folder, or can be made one, in a writable place (checked before anything is logged)."""
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"out={out} is a file, not a folder: point out at a folder (made when missing)")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise AnalysisError(f"out={out} lies under {blocker}, which is a file: use a folder in a writable place")
    existing = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AnalysisError(f"out={out}: {existing} is not writable; use a folder in a writable place")


def _strings(value: object, name: str) -> tuple[str, ...]:
    """None -> (), a scalar -> (it,), a list -> its items, all as strings."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple, ListConfig)):
        items = list(value)
    else:
        items = [value]
    if any(isinstance(v, (dict, list, tuple)) or v is None for v in items):
        raise AnalysisError(f"{name}={value!r}: use a name or a list of names, e.g. {name}=[a,b]")
    return tuple(str(v) for v in items)
