"""What a job's identity covers besides its config: the checkpoints it loads and the measurement code.

A rerun skips a job whose identity (``pipeline.job.runner.config_hash``) already has a FINISHED run, so
the identity must change whenever the numbers could: :func:`identity_extras` adds the sha256 of
every weights file the job loads (a rewritten checkpoint is a new job) and
:data:`MEASUREMENT_VERSION`, which is raised by hand whenever a change of the code changes what
the same config measures (counting rules, preprocessing, metrics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Raise it with every change that changes the numbers of an unchanged config. 2: recovery fits on the
# training split's train part, searches choose on its calibration part.
MEASUREMENT_VERSION = 2
ABSENT = "absent"  # digest of a file that is not there (the job then fails, or downloads it)

_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}  # (path, inode, size, mtime, ctime) -> sha256


def identity_extras(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a job's identity that its config values do not show.

    ``config`` is the job's plain resolved config (``model.name``, ``model.checkpoint``,
    ``model.weights``). Returns ``{"measurement_version": int, "weights_sha256": [sha256, ...]}``:
    the contents only, so the identity does not depend on where the checkout or cache lies.
    """
    model = config.get("model") or {}
    files = weights_files(model.get("name"), model.get("checkpoint"), model.get("weights"))
    files += predictor_files(model.get("name"), config.get("predictor") or {}, config.get("window") or 1)
    return {"measurement_version": MEASUREMENT_VERSION, "weights_sha256": [file_digest(path) for path in files]}


def predictor_files(model: str | None, predictor: Mapping[str, Any], window: int) -> list[Path]:
    """The checkpoints of the learned predictors a config applies (the run's and its per-layer entries'),
    found from the same plans the job builds its predictors from."""
    from pipeline.predictors import entry_plan, schema_of, top_plan
    from pipeline.predictors.learned import checkpoint_path

    if not predictor:
        return []
    top = schema_of(predictor)
    plans = [top_plan(top, window)]
    plans += [entry_plan(top, window, entry, f"predictor.layers.{key}") for key, entry in top.layers.items()]
    files = []
    for plan in plans:
        path = checkpoint_path(plan, str(model)) if plan.kind == "learned" else None
        if path is not None and path not in files:
            files.append(path)
    return files


def weights_files(name: str | None, checkpoint: str | None, weights: str | None) -> list[Path]:
    """The files a model config loads its weights from (as ``pipeline.networks.models.build_model`` finds them)."""
    from pipeline.networks.models import checkpoint_path, torchvision_weights_path

    if checkpoint:
        return [checkpoint_path(name, checkpoint)]
    if weights and name:
        path = torchvision_weights_path(name, weights)
        return [path] if path is not None else []
    return []


def file_digest(path: Path) -> str:
    """sha256 of a file's contents (cached while the file is unchanged), or :data:`ABSENT`."""
    try:
        stat = path.stat()
    except OSError:
        return ABSENT
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
