"""The fused CPU counting kernel (measure.c), compiled on first use with the system's C compiler, and
the torch operator ``cnp::measure`` that calls it (:func:`measure_op`: a ``torch.library`` custom op with
a fake kernel, so it traces and shows its schema like any torch op; tests/measurement run ``opcheck``).

The shared library is built for this processor (-march=native), cached under ``$CNP_KERNEL_CACHE``
(default ``~/.cache/cnp-pipeline``), named by a hash of the source, the flags and the CPU (model and
feature flags, so a shared home on a mixed cluster never loads a build for another CPU), and
written atomically so parallel jobs can race safely.
Without a C compiler the pipeline falls back to the pure-torch path (same counts, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).with_name("measure.c")
FLAGS = ["-O3", "-march=native", "-std=c99", "-fPIC", "-shared", "-fopenmp", "-fno-strict-aliasing"]


def cache_dir() -> Path:
    return Path(os.environ.get("CNP_KERNEL_CACHE", Path.home() / ".cache" / "cnp-pipeline"))


def threads() -> int:
    """Threads of one kernel call: $CNP_KERNEL_THREADS, else torch's intra-op thread count."""
    return int(os.environ.get("CNP_KERNEL_THREADS") or torch.get_num_threads())


def _cpu() -> str:
    """The processor's identity: -march=native builds are only reused on the same kind of CPU."""
    text = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return text


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernel, or None (with one warning) when it cannot be built here."""
    if os.environ.get("CNP_NO_KERNEL"):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        warnings.warn("no C compiler found: counting with the slower pure-torch path", stacklevel=2)
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + _cpu().encode()).hexdigest()[:16]
    library = cache_dir() / f"cnp_measure_{key}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as folder:
            built = Path(folder) / library.name
            result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
            if result.returncode != 0:
                warnings.warn(
                    f"cannot compile {SOURCE.name} ({result.stderr.strip()[:500]}): "
                    "counting with the slower pure-torch path",
                    stacklevel=2,
                )
                return None
            os.replace(built, library)  # atomic: a concurrent job sees the old or the new file
    lib = ctypes.CDLL(str(library))
    lib.cnp_measure.restype = ctypes.c_int
    lib.cnp_measure.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p,
    ]  # fmt: skip
    return lib


# the kernel as a torch operator -----------------------------------------------------------------


@torch.library.custom_op("cnp::measure", mutates_args=("activation",), device_types="cpu")
def measure_op(
    activation: torch.Tensor, pattern: torch.Tensor, given: Optional[torch.Tensor], window: int, rule: int,
    threshold: float, apply: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cnp::measure``: the fused kernel on a contiguous float32 CPU tensor (N, C, H, W). Returns the
    int64 counts (zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5) and the float64 sums (mass,
    miss_mass); with ``apply`` the predicted cells of ``activation`` are zeroed in place. ``rule``: the
    kernel's number for a firing rule (``pipeline.measurement.counts.KERNEL_MODES``)."""
    library = load()
    if library is None:
        raise RuntimeError("cnp::measure needs the compiled kernel (a C compiler): use the torch path")
    n, c, h, w = activation.shape
    out = torch.zeros(9, dtype=torch.int64)
    masses = torch.zeros(2, dtype=torch.float64)
    failed = library.cnp_measure(
        activation.data_ptr(), n * c, h, w, window, pattern.data_ptr(), rule, threshold, int(apply), threads(),
        out.data_ptr(), masses.data_ptr(), given.data_ptr() if given is not None else None,
    )  # fmt: skip
    if failed == 2:
        raise ValueError(f"the counting kernel refused rule {rule} at window {window}")
    if failed:
        raise MemoryError("the counting kernel could not allocate its buffers")
    return out, masses


@measure_op.register_fake
def _measure_fake(activation, pattern, given, window, rule, threshold, apply):
    """Shapes only (tracing, torch.compile, meta tensors): nine counts and two sums."""
    return activation.new_empty(9, dtype=torch.int64), activation.new_empty(2, dtype=torch.float64)
