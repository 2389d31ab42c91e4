"""TilingConfig: tile size and the thread budget."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from .base import StrictModel

__all__ = ["TilingConfig"]


class TilingConfig(StrictModel):
    """How images are cut into tiles and how many threads work on them.

    Example::

        tiling:
          tile_size: 512
          threads: 8
    """

    tile_size: int = Field(default=512, ge=16, le=16384)
    """Edge length of the square tiles predicted at a time (the halo is added around
    each). Memory grows with the tile area times the number of features."""

    threads: PositiveInt | None = None
    """Threads shared by torch, the filters and the forest. Left empty: the CPUs this
    process may use (SLURM's allocation included), resolved at run time."""
