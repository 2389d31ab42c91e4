"""Halo arithmetic in N dimensions: tiles, aligned extended blocks, mirrored reads.

Features are defined on the image mirrored (``symmetric``) beyond its borders, with
every pyramid grid anchored at voxel 0 of each axis. A tile is computed from an
extended block: the tile plus at least the pipeline halo on every side, widened so
that the block's origin and size are multiples of the pipeline alignment along that
axis. Any tiling, the single whole-image tile included, therefore sees the same
numbers for every voxel.

Spatial tiles and blocks are tuples of ``(start, stop)`` pairs, one per spatial axis
(``(Z, Y, X)`` inside the package; 2-D images have ``Z = 1`` with no halo along it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Block",
    "Span",
    "iter_tiles",
    "plan_block",
    "read_block",
    "symmetric_index",
]

#: ``(start, stop)`` along one axis.
Span = tuple[int, int]


@dataclass(frozen=True)
class Block:
    """One tile and the extended block computed to produce it (global coordinates)."""

    tile: tuple[Span, ...]
    """The tile inside the image, one ``(start, stop)`` per spatial axis."""

    extended: tuple[Span, ...]
    """The extended block, one ``(start, stop)`` per axis; may reach outside the image."""

    @property
    def trim(self) -> tuple[slice, ...]:
        """Slices that cut the tile out of the extended block."""
        return tuple(
            slice(t0 - e0, t1 - e0)
            for (t0, t1), (e0, _) in zip(self.tile, self.extended, strict=True)
        )

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """Shape of the tile."""
        return tuple(t1 - t0 for t0, t1 in self.tile)

    @property
    def tile_slices(self) -> tuple[slice, ...]:
        """Slices that select the tile in the image."""
        return tuple(slice(t0, t1) for t0, t1 in self.tile)


def iter_tiles(shape: Sequence[int], tile: Sequence[int]) -> Iterator[tuple[Span, ...]]:
    """Yield tiles covering ``shape`` (C order: the last axis varies fastest).

    Parameters
    ----------
    shape : sequence of int
        Extent of each spatial axis.
    tile : sequence of int
        Tile edge along each axis (same length as ``shape``).
    """
    if len(shape) != len(tile):
        raise ValueError(f"tile {tuple(tile)} does not match shape {tuple(shape)}")
    ranges = [
        [(a, min(a + t, n)) for a in range(0, n, t)]
        for n, t in zip(shape, tile, strict=True)
    ]
    yield from itertools.product(*ranges)


def plan_block(
    tile: Sequence[Span], *, halo: Sequence[int], alignment: Sequence[int]
) -> Block:
    """Extend a tile by ``halo`` per axis and round outwards to multiples of
    ``alignment`` per axis."""
    extended = []
    for (t0, t1), h, a in zip(tile, halo, alignment, strict=True):
        a = max(1, int(a))
        lo = ((t0 - h) // a) * a
        hi = -((-(t1 + h)) // a) * a
        extended.append((lo, hi))
    return Block(tile=tuple(tuple(t) for t in tile), extended=tuple(extended))  # type: ignore[arg-type]


def symmetric_index(start: int, stop: int, size: int) -> NDArray[np.intp]:
    """Indices ``start..stop-1`` mirrored into ``[0, size)`` (edge pixel repeated)."""
    i = np.arange(start, stop) % (2 * size)
    return np.where(i >= size, 2 * size - 1 - i, i)


def read_block(image: object, block: Block) -> NDArray:
    """Read an extended block from a ``(C, *spatial)`` array (numpy or dask),
    mirroring outside the image. Only the needed window is read from a lazy array."""
    spatial = tuple(int(s) for s in image.shape[1:])  # type: ignore[attr-defined]
    indices = [
        symmetric_index(e0, e1, n)
        for (e0, e1), n in zip(block.extended, spatial, strict=True)
    ]
    window_slices = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    window = image[(slice(None), *window_slices)]  # type: ignore[index]
    if hasattr(window, "compute"):
        # a callable scheduler: a named one makes dask import dask.distributed
        from dask.local import get_sync

        window = window.compute(scheduler=get_sync)
    window = np.asarray(window)
    inside = all(
        e0 >= 0 and e1 <= n for (e0, e1), n in zip(block.extended, spatial, strict=True)
    )
    if inside:
        return window
    out = window
    for axis, (idx, sl) in enumerate(zip(indices, window_slices, strict=True), 1):
        local = idx - sl.start
        if not (
            len(local) == out.shape[axis]
            and np.array_equal(local, np.arange(len(local)))
        ):
            out = np.take(out, local, axis=axis)
    return out
