"""Write a TIFF hyperstack from an on-disk array, one plane (or strip) at a time.

Results are first stored chunk by chunk into a temporary zarr array (so that any
number of threads or cluster workers can write them in any order); this module then
streams that array into one TIFF file in the order TIFF needs:

- up to ``BIGTIFF_THRESHOLD`` bytes (uncompressed): an ImageJ hyperstack (axes,
  Z spacing, X/Y resolution, unit; zlib), which Fiji and napari open as a stack,
  for the dtypes ImageJ knows (uint8, uint16, float32);
- larger, or another dtype: an OME-TIFF (BigTIFF when larger), whose OME-XML
  carries the axes and physical pixel sizes (Fiji through Bio-Formats, napari and
  tifffile read it);
- planes larger than ``TILED_PLANE_THRESHOLD`` bytes are written as tiles, from
  one strip of tile rows at a time, so memory stays bounded for any plane size.

tifffile accepts iterators of pages or tiles, which is what keeps memory at one
plane (or one strip) whatever the stack size.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .metadata import imagej_unit, ome_unit

__all__ = ["BIGTIFF_THRESHOLD", "TILED_PLANE_THRESHOLD", "write_tiff"]

logger = logging.getLogger(__name__)

#: Stacks larger than this (uncompressed bytes) go to BigTIFF: 4 GiB less headroom
#: for headers and for strips zlib cannot shrink.
BIGTIFF_THRESHOLD = 2**32 - 2**25
#: Planes larger than this (bytes) are written in tiles from strips of tile rows.
TILED_PLANE_THRESHOLD = 256 * 2**20
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def write_tiff(
    path: Path | str,
    source: Any,
    *,
    source_axes: str,
    out_axes: str,
    spacing: tuple[float, float, float] | None = None,
    unit: str | None = None,
    info: dict[str, Any] | None = None,
    bigtiff_threshold: int | None = None,
    tile_threshold: int | None = None,
    tile: tuple[int, int] = (512, 512),
) -> str:
    """Stream ``source`` into a compressed TIFF file with axes ``out_axes``.

    Parameters
    ----------
    path : path-like
        The file to write (replaced if it exists).
    source : array-like
        Anything indexable with ints and slices that returns numpy arrays (a zarr
        array), with one dimension per letter of ``source_axes``.
    source_axes : str
        Axes of ``source`` (e.g. ``"TZYX"``, ``"TCZYX"``).
    out_axes : str
        Axes written, a subset of ``source_axes`` in ImageJ order (T, Z, C, Y, X);
        the source axes left out must have size 1.
    spacing : tuple of float, optional
        Pixel size ``(z, y, x)`` in ``unit``.
    unit : str, optional
        NGFF unit name (``"micrometer"``).
    info : dict, optional
        Provenance written into the file (ImageJ ``Info``, OME ``Description``).
    bigtiff_threshold : int, optional
        Uncompressed size in bytes above which BigTIFF (OME) is written; default
        :data:`BIGTIFF_THRESHOLD`. Tests pass a small value.
    tile_threshold : int, optional
        Plane size in bytes above which planes are tiled; default
        :data:`TILED_PLANE_THRESHOLD`.
    tile : tuple of int
        Tile shape ``(y, x)`` for tiled planes (multiples of 16).

    Returns
    -------
    str
        The flavour written: ``"imagej"``, ``"ome"`` or ``"ome-bigtiff"``.
    """
    import tifffile

    shape = tuple(int(s) for s in source.shape)
    sizes = dict(zip(source_axes, shape, strict=True))
    dropped = [a for a in source_axes if a not in out_axes]
    if any(sizes[a] != 1 for a in dropped) or set(out_axes) - set(source_axes):
        raise ValueError(
            f"cannot write axes {out_axes} from an array with axes {source_axes} and "
            f"shape {shape}"
        )
    dtype = np.dtype(source.dtype)
    out_shape = tuple(sizes[a] for a in out_axes)
    plane = (sizes["Y"], sizes["X"])
    nbytes = math.prod(shape) * dtype.itemsize
    big = nbytes > (
        BIGTIFF_THRESHOLD if bigtiff_threshold is None else bigtiff_threshold
    )
    limit = TILED_PLANE_THRESHOLD if tile_threshold is None else tile_threshold
    tiled = math.prod(plane) * dtype.itemsize > limit
    imagej = not (big or tiled) and dtype in _IMAGEJ_DTYPES
    outer = [a for a in out_axes if a not in "YX"]

    def indices() -> Iterator[tuple[Any, ...]]:
        for combo in itertools.product(*(range(sizes[a]) for a in outer)):
            at = dict(zip(outer, combo, strict=True))
            yield tuple(slice(None) if a in "YX" else at.get(a, 0) for a in source_axes)

    def planes() -> Iterator[np.ndarray]:
        for index in indices():
            yield np.asarray(source[index])

    def tiles() -> Iterator[np.ndarray]:
        ty, tx = tile
        y_at = source_axes.index("Y")
        for index in indices():
            for y0 in range(0, plane[0], ty):
                strip_index = list(index)
                strip_index[y_at] = slice(y0, min(y0 + ty, plane[0]))
                strip = np.asarray(source[tuple(strip_index)])
                for x0 in range(0, plane[1], tx):
                    yield strip[:, x0 : x0 + tx]

    # minisblack: a last axis of 3 or 4 pixels must never be taken for RGB samples
    options: dict[str, Any] = {"compression": "zlib", "photometric": "minisblack"}
    if tiled:
        options["tile"] = tile
    else:
        options["rowsperstrip"] = 64
    z, y, x = spacing if spacing is not None else (None, None, None)
    if imagej:
        metadata: dict[str, Any] = {"axes": out_axes}
        if spacing is not None:
            options["resolution"] = (1.0 / x, 1.0 / y)  # type: ignore[operator]
            if "Z" in out_axes:
                metadata["spacing"] = z
        if unit:
            metadata["unit"] = imagej_unit(unit)
        if info:
            metadata["Info"] = "\n".join(f"{k}: {v}" for k, v in info.items())
    else:
        metadata = {"axes": out_axes}
        if spacing is not None:
            for letter, value in (("X", x), ("Y", y), ("Z", z)):
                if letter in out_axes or letter != "Z":
                    metadata[f"PhysicalSize{letter}"] = value
                    if unit:
                        metadata[f"PhysicalSize{letter}Unit"] = ome_unit(unit)
        if info:
            metadata["Description"] = "; ".join(f"{k}: {v}" for k, v in info.items())
    flavour = "imagej" if imagej else "ome-bigtiff" if big else "ome"
    logger.debug(
        "writing %s (%s, %s, %s%s)",
        path,
        flavour,
        out_axes,
        out_shape,
        ", tiled" if tiled else "",
    )
    with tifffile.TiffWriter(path, bigtiff=big, imagej=imagej, ome=not imagej) as tw:
        tw.write(
            tiles() if tiled else planes(),
            shape=out_shape,
            dtype=dtype,
            metadata=metadata,
            **options,
        )
    return flavour
