"""Halo arithmetic: tiles, aligned extended blocks, and reading them with mirrored edges.

Features are defined on the image mirrored (``symmetric``) beyond its borders, with
every pyramid grid anchored at pixel (0, 0). A tile is computed from an extended
block: the tile plus at least the pipeline halo on every side, widened so that the
block's origin and size are multiples of the pipeline alignment. Any tiling, the
single whole-image tile included, therefore sees the same numbers for every pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Block", "iter_tiles", "plan_block", "read_block", "symmetric_index"]


@dataclass(frozen=True)
class Block:
    """One tile and the extended block computed to produce it (global coordinates)."""

    tile: tuple[int, int, int, int]
    """Tile ``(y0, y1, x0, x1)`` inside the image."""

    extended: tuple[int, int, int, int]
    """Extended block ``(y0, y1, x0, x1)``; may reach outside the image."""

    @property
    def trim(self) -> tuple[slice, slice]:
        """Slices that cut the tile out of the extended block."""
        ty0, ty1, tx0, tx1 = self.tile
        ey0, _, ex0, _ = self.extended
        return slice(ty0 - ey0, ty1 - ey0), slice(tx0 - ex0, tx1 - ex0)


def iter_tiles(
    shape: tuple[int, int], tile_size: int
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(y0, y1, x0, x1)`` tiles covering a ``(Y, X)`` shape, row by row."""
    height, width = shape
    for y0 in range(0, height, tile_size):
        for x0 in range(0, width, tile_size):
            yield y0, min(y0 + tile_size, height), x0, min(x0 + tile_size, width)


def plan_block(tile: tuple[int, int, int, int], *, halo: int, alignment: int) -> Block:
    """Extend a tile by ``halo`` and round outwards to multiples of ``alignment``."""
    y0, y1, x0, x1 = tile
    a = max(1, alignment)

    def lo(v: int) -> int:
        return ((v - halo) // a) * a

    def hi(v: int) -> int:
        return -((-(v + halo)) // a) * a

    return Block(tile=tile, extended=(lo(y0), hi(y1), lo(x0), hi(x1)))


def symmetric_index(start: int, stop: int, size: int) -> NDArray[np.intp]:
    """Indices ``start..stop-1`` mirrored into ``[0, size)`` (edge pixel repeated)."""
    i = np.arange(start, stop) % (2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def read_block(image: object, block: Block) -> NDArray:
    """Read an extended block from a ``(C, Y, X)`` array (numpy or dask), mirroring
    outside the image. Only the needed window is read from a lazy array."""
    _, height, width = image.shape  # type: ignore[attr-defined]
    ey0, ey1, ex0, ex1 = block.extended
    iy = symmetric_index(ey0, ey1, height)
    ix = symmetric_index(ex0, ex1, width)
    ry0, ry1, rx0, rx1 = (
        int(iy.min()),
        int(iy.max()) + 1,
        int(ix.min()),
        int(ix.max()) + 1,
    )
    window = image[:, ry0:ry1, rx0:rx1]  # type: ignore[index]
    if hasattr(window, "compute"):
        window = window.compute(scheduler="synchronous")
    window = np.asarray(window)
    inside = ey0 >= 0 and ex0 >= 0 and ey1 <= height and ex1 <= width
    if inside:
        return window
    return window[:, iy - ry0][:, :, ix - rx0]
