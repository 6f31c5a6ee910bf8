"""The fused CPU kernels as torch operators: the counting kernel (measure.c) as ``cnp::measure`` and the random
control's draws (random_tiles.c) as ``cnp::random_tiles`` (op.cpp: their schemas and CPU kernels in
``TORCH_LIBRARY``; their fake kernels registered here, so they trace and run under fake tensors like any torch
op; tests/measurement run ``torch.library.opcheck`` on them).

The extension is built on first use by ``torch.utils.cpp_extension`` (the system's C++ compiler and
ninja), for this processor (-march=native), in ``$CNP_KERNEL_CACHE`` (default ``~/.cache/cnp-pipeline``)
under a name hashed from the sources, the flags and the CPU (model and feature flags, so a shared home on
a mixed cluster never loads a build for another CPU); cpp_extension's lock lets parallel jobs race
safely. About 20 s the first time on 2 cores, then a check that the build is current.
Without a compiler the pipeline falls back to the pure-torch path (same counts, slower).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

SOURCES = tuple(
    Path(__file__).with_name(name) for name in ("op.cpp", "measure.c", "random_tiles.c")
)  # op.cpp includes the .c
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-strict-aliasing"]


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
def load():
    """The operator ``torch.ops.cnp.measure``, built on first use, or None (with one warning) when it
    cannot be built here (no C++ compiler, no ninja) or ``CNP_NO_KERNEL`` is set."""
    if os.environ.get("CNP_NO_KERNEL"):
        return None
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # not its CUDA_HOME note, on a CPU
    from torch.utils import cpp_extension

    text = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(text + " ".join(FLAGS).encode() + _cpu().encode()).hexdigest()[:16]
    build = cache_dir() / f"cnp_measure_{key}"
    try:
        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=f"cnp_measure_{key}", sources=[str(SOURCES[0])], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
            build_directory=str(build), is_python_module=False, verbose=False,
        )  # fmt: skip
    except Exception as exc:  # no compiler, no ninja, a failed build: the torch path counts the same
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        warnings.warn(
            f"cannot build the counting kernel ({type(exc).__name__}: {first}): counting with the slower "
            "pure-torch path",
            stacklevel=2,
        )
        return None
    if not _FAKE:
        torch.library.register_fake("cnp::measure")(_measure_fake)
        torch.library.register_fake("cnp::random_tiles")(_random_tiles_fake)
        _FAKE.append(True)
    return torch.ops.cnp.measure


_FAKE: list[bool] = []


def _measure_fake(activation, pattern, given, predicted, window, rule, threshold, apply, extra, threads):
    """Shapes only (tracing, torch.compile, meta and fake tensors): 15 counts and 6 sums."""
    return activation.new_empty(15, dtype=torch.int64), activation.new_empty(6, dtype=torch.float64)


def fits(activation: torch.Tensor) -> bool:
    """Whether the kernels take ``activation``: a contiguous float32 (N, C, H, W) CPU tensor, no autograd."""
    return (
        activation.device.type == "cpu"
        and activation.dtype == torch.float32
        and activation.dim() == 4
        and activation.is_contiguous()
        and not activation.requires_grad
    )


def _random_tiles_fake(activation, pattern, seeds, window, threads):
    """Shapes only: one byte per tile, (N, C, ceil(H / window), ceil(W / window))."""
    n, c, h, w = activation.shape
    return activation.new_empty((n, c, -(-h // window), -(-w // window)), dtype=torch.uint8)


def random_tiles_op(
    activation: torch.Tensor, pattern: torch.Tensor, seeds: torch.Tensor, window: int
) -> torch.Tensor:
    """``cnp::random_tiles`` on a contiguous float32 CPU tensor (N, C, H, W): which tiles the random control
    fires (uint8, (N, C, th, tw)), image n drawing from torch's CPU generator seeded with ``seeds[n]``
    (int64, one per image); ``pattern``: the window x window uint8 mask of the pattern cells."""
    op = load()
    if op is None:
        raise RuntimeError("cnp::random_tiles is not built here (no C++ compiler or ninja): use the torch path")
    return torch.ops.cnp.random_tiles(activation, pattern, seeds, window, threads())


def measure_op(
    activation: torch.Tensor,
    pattern: torch.Tensor,
    given: Optional[torch.Tensor],
    window: int,
    rule: int,
    threshold: float,
    apply: bool,
    predicted: Optional[torch.Tensor] = None,
    extra: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cnp::measure`` on a contiguous float32 CPU tensor (N, C, H, W), with this process's thread count.
    Returns the int64 counts (zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5, skip_cells_g1..g32)
    and the float64 sums (mass, miss_mass, zero_windows_indep_2..5; the section-10 ones 0 unless ``extra``);
    with ``apply`` the predicted cells of ``activation`` are zeroed in place; ``predicted``
    (uint8, one byte per cell, or None) receives 1 at every predicted cell and 0 elsewhere. ``rule``: the
    kernel's number for a firing rule (``pipeline.measurement.counts.KERNEL_MODES``)."""
    op = load()
    if op is None:
        raise RuntimeError("cnp::measure is not built here (no C++ compiler or ninja): use the torch path")
    return op(activation, pattern, given, predicted, window, rule, threshold, apply, extra, threads())
