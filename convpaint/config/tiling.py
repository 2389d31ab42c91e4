"""TilingConfig: tile shape or memory budget, threads, and where the work runs."""

from __future__ import annotations

from pydantic import ByteSize, Field, PositiveInt, field_validator

from .base import StrictModel

__all__ = ["ClusterConfig", "TileShape", "TilingConfig"]

#: Most threads one process may be told to use (a typo guard, not a machine limit).
MAX_THREADS = 1024


class TileShape(StrictModel):
    """Tile edge per axis, e.g. ``{z: 16, y: 512, x: 512}``; missing axes use defaults."""

    z: int | None = Field(default=None, ge=1, le=4096)
    """Planes per tile (default: 1 for `planes` features, else from the memory budget)."""

    y: int | None = Field(default=None, ge=16, le=16384)
    """Tile height (default: `tile_size`)."""

    x: int | None = Field(default=None, ge=16, le=16384)
    """Tile width (default: `tile_size`)."""


class TilingConfig(StrictModel):
    """How images are cut into tiles, how many threads work on them, and where.

    Example::

        tiling:
          tile_size: 512          # or tile: {z: 16, y: 512, x: 512}, or memory: 2GB
          threads: 8
          scheduler: threads      # threads | tcp://host:8786 | slurm (see cluster:)
    """

    tile_size: int = Field(default=512, ge=16, le=16384)
    """Edge length of the square Y/X tiles predicted at a time (the halo is added around
    each). Memory grows with the tile area times the number of features."""

    tile: TileShape | None = None
    """Tile edge per axis (overrides `tile_size` for the axes it names)."""

    memory: ByteSize | None = None
    """Memory budget for the tiles in flight (e.g. 2GB): the tile shape is derived from
    it and the feature count, for axes `tile` does not fix."""

    threads: PositiveInt | None = Field(default=None, le=MAX_THREADS)
    """Threads shared by torch, the filters, the forest and dask's workers. Left empty:
    the CPUs this process may use (SLURM's allocation included), resolved at run time."""

    scheduler: str = "threads"
    """Where prediction tasks run: 'threads' (this process), 'tcp://HOST:PORT' (an
    existing dask.distributed scheduler; workers need convpaint and access to the
    files), or 'slurm' (a dask-jobqueue SLURM cluster from the `cluster` section)."""

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        v = value.strip()
        if v in ("threads", "slurm") or v.startswith(("tcp://", "tls://", "inproc://")):
            return v
        raise ValueError(
            f"unknown scheduler '{value}'; use threads, slurm, or the address of a "
            "dask.distributed scheduler such as tcp://10.0.0.5:8786"
        )


class ClusterConfig(StrictModel):
    """A SLURM cluster for one large prediction (`scheduler: slurm`), through
    dask-jobqueue: each SLURM job runs dask workers that take tiles.

    Example::

        cluster:
          cores: 16
          memory: 64GB
          walltime: "02:00:00"
          queue: cpu
          account: lab123
          jobs: 8
          job_extra_directives: ["--constraint=avx2"]
          job_script_prologue: ["module load python"]
    """

    cores: PositiveInt = Field(default=8, le=1024)
    """CPU cores per SLURM job."""

    processes: PositiveInt = 1
    """Dask worker processes per job (cores are split between them)."""

    memory: str = "16GB"
    """Memory per SLURM job, e.g. 64GB."""

    walltime: str = "01:00:00"
    """Time limit per job (HH:MM:SS)."""

    queue: str | None = None
    """SLURM partition (-p)."""

    account: str | None = None
    """SLURM account (-A)."""

    jobs: PositiveInt = Field(default=1, le=10000)
    """Number of SLURM jobs to start."""

    job_extra_directives: list[str] = Field(default_factory=list)
    """Further #SBATCH options, e.g. ['--constraint=avx2']."""

    job_script_prologue: list[str] = Field(default_factory=list)
    """Shell lines run before the worker starts, e.g. ['module load python']."""

    local_directory: str | None = None
    """Node-local scratch folder for the workers."""

    log_directory: str | None = None
    """Where SLURM writes the workers' logs."""

    python: str | None = None
    """Python executable on the nodes (default: this one)."""
