"""The process's resources: CPUs, one thread budget, versions and file digests."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from convpaint._version import __version__

logger = logging.getLogger(__name__)


#: Arrays larger than this are given back to the system when freed (glibc).
_MMAP_THRESHOLD = 4 * 2**20


def return_freed_memory() -> bool:
    """Make glibc hand large freed arrays back to the system at once.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed,
    after which the 10-30 MB temporaries of each tile come from the heap, which
    fragments and never shrinks: a stack prediction's peak then creeps up with the
    number of tiles. A fixed 4 MiB threshold keeps such arrays out of the heap
    (`benchmarks/stack_memory.py`, default model: peak 0.25 GB lower on 0.25 and
    1 GB stacks). The prediction engine applies it to `views`/`3d` features only: on
    2-D tiles the fresh pages cost up to a tenth of the time for 6 % less memory.
    The setting holds for the rest of the process. Does nothing elsewhere than glibc,
    or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user's choice). Returns whether
    the setting was applied.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, _MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by SLURM's allocation."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        n = min(n, int(slurm))
    return max(1, n)


@contextmanager
def thread_budget(n: int) -> Iterator[None]:
    """Tell BLAS/OpenMP pools, torch and dask to use ``n`` threads, restoring them after."""
    import dask
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n), dask.config.set(num_workers=n):
            yield
    finally:
        if torch is not None and old is not None:
            torch.set_num_threads(old)


def versions() -> dict[str, str]:
    import sklearn

    out = {
        "convpaint": __version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():  # zarr folder: hash the file names and contents in order
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
