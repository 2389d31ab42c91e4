"""SLURM clusters for one large prediction, through dask-jobqueue.

`tiling.scheduler: slurm` starts a ``SLURMCluster`` from the config's ``cluster``
section: SLURM jobs that run dask workers, which take the tiles of one huge stack
in parallel across nodes. (For folders of many files, SLURM array jobs with
``--shard`` need none of this.)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from convpaint.config import ClusterConfig
from convpaint.errors import ConfigError

__all__ = ["job_script", "slurm_cluster"]

logger = logging.getLogger(__name__)


def _kwargs(config: ClusterConfig) -> dict[str, Any]:
    """dask-jobqueue SLURMCluster arguments for a cluster section."""
    kwargs: dict[str, Any] = {
        "cores": config.cores,
        "processes": config.processes,
        "memory": config.memory,
        "walltime": config.walltime,
        "job_extra_directives": list(config.job_extra_directives),
        "job_script_prologue": list(config.job_script_prologue),
        "python": config.python or sys.executable,
    }
    for key in ("queue", "account", "local_directory", "log_directory"):
        value = getattr(config, key)
        if value is not None:
            kwargs[key] = value
    # each worker runs one task per core; the torch/BLAS pools inside a task stay at
    # one thread, so the job's CPUs are one budget
    env = [
        "export OMP_NUM_THREADS=1",
        "export MKL_NUM_THREADS=1",
        "export OPENBLAS_NUM_THREADS=1",
    ]
    kwargs["job_script_prologue"] = env + kwargs["job_script_prologue"]
    return kwargs


def _cluster_class() -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as err:
        raise ConfigError(
            "tiling.scheduler: slurm needs dask-jobqueue; install it with "
            "`pip install 'convpaint[cluster]'`"
        ) from err
    return SLURMCluster


def job_script(config: ClusterConfig, *, host: str | None = None) -> str:
    """The batch script each SLURM job of this cluster section would run.

    ``host``: where the (briefly started) scheduler listens, e.g. ``127.0.0.1``.
    """
    extra = {"scheduler_options": {"host": host}} if host else {}
    cluster = _cluster_class()(**_kwargs(config), **extra)
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()


@contextmanager
def slurm_cluster(config: ClusterConfig) -> Iterator[Any]:
    """Start the SLURM jobs of a cluster section; stop them when the block ends."""
    cluster = _cluster_class()(**_kwargs(config))
    try:
        logger.info("starting %d SLURM job(s):\n%s", config.jobs, cluster.job_script())
        cluster.scale(jobs=config.jobs)
        yield cluster
    finally:
        cluster.close()
