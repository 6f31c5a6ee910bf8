"""A job's identity: its config without the keys that cannot change its numbers, the contents of every
file it read, and the measurement code's version.

A rerun skips a job whose identity already has a FINISHED run, so the identity must change whenever
the numbers could: :func:`config_hash` adds the sha256 of every weights file the job's loaders read
(the model's checkpoint or torchvision weights, the learned predictors' checkpoints, recorded by the
loaders as they read them: :class:`pipeline.job.plan.JobPlan` ``files``; a rewritten checkpoint is a new
job) and :data:`MEASUREMENT_VERSION`, which is raised by hand whenever a change of the code changes what
the same config measures (counting rules, preprocessing, metrics).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from pipeline.app import plain_config

# Raise it with every change that changes the numbers of an unchanged config. 2: recovery fits on the
# training split's train part, searches choose on its calibration part. 3: the random control's tie of
# keys goes to the lower tile index (torch's unstable argsort chose before: 4 tiles in 10,000 images).
# 4: every run also logs the decision-granularity and chance-level counts of contract section 10 (the numbers
# of version 3 unchanged).
MEASUREMENT_VERSION = 4

# keys that do not change a job's numbers: not part of its identity for resume
VOLATILE_KEYS = ("force", "progress", "tracking", "device", "objective")
VOLATILE_DATA_KEYS = ("batch_size", "num_workers", "cache", "download")
# keys added after identities were first recorded: left out of the identity at their default, so the
# runs recorded before a key existed keep their identity (a rerun reuses them)
LATER_DEFAULTS = {("model", "leaf_modules"): [], ("operating_point", "confidence"): None, ("predictor", "group"): 1}

_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}  # (path, inode, size, mtime, ctime) -> sha256


def config_hash(cfg: DictConfig, files: Sequence[Path]) -> str:
    """A job's identity from its (canonical) config and the files it read, in the order read."""
    plain = plain_config(cfg)
    for key in VOLATILE_KEYS:
        plain.pop(key, None)
    for key in VOLATILE_DATA_KEYS:
        plain.get("data", {}).pop(key, None)
    for (group, key), default in LATER_DEFAULTS.items():
        node = plain.get(group) or {}  # operating_point is null outside an operating point
        if node.get(key, default) == default:
            node.pop(key, None)
    plain["identity"] = identity_extras(files)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def identity_extras(files: Sequence[Path]) -> dict[str, object]:
    """``{"measurement_version": int, "weights_sha256": [sha256, ...]}``: the files' contents only (each
    once, in the order read), so the identity does not depend on where the checkout or cache lies."""
    unique = list(dict.fromkeys(Path(path) for path in files))
    return {"measurement_version": MEASUREMENT_VERSION, "weights_sha256": [file_digest(path) for path in unique]}


def file_digest(path: Path) -> str:
    """sha256 of a file's contents (cached while the file is unchanged)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
