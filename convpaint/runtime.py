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
