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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metadata import imagej_unit, ome_unit

__all__ = [
    "BIGTIFF_THRESHOLD",
    "ROWS_PER_STRIP",
    "TILED_PLANE_THRESHOLD",
    "TiffPlan",
    "plan_tiff",
    "write_tiff",
]

logger = logging.getLogger(__name__)

#: Stacks larger than this (uncompressed bytes) go to BigTIFF: 4 GiB less headroom
#: for headers and for strips zlib cannot shrink.
BIGTIFF_THRESHOLD = 2**32 - 2**25
#: Planes larger than this (bytes) are written in tiles from strips of tile rows.
TILED_PLANE_THRESHOLD = 256 * 2**20
#: Rows per strip of untiled planes.
ROWS_PER_STRIP = 64
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class TiffPlan:
    """How a stack is written: flavour, tifffile options and metadata."""

    flavour: str
    """``"imagej"``, ``"ome"`` or ``"ome-bigtiff"``."""
    imagej: bool
    big: bool
    tiled: bool
    out_shape: tuple[int, ...]
    options: dict[str, Any]
    metadata: dict[str, Any]


def plan_tiff(
    shape: tuple[int, ...],
    dtype: Any,
    *,
    source_axes: str,
    out_axes: str,
    spacing: tuple[float, float, float] | None = None,
    unit: str | None = None,
    info: dict[str, Any] | None = None,
    bigtiff_threshold: int | None = None,
    tile_threshold: int | None = None,
    tile: tuple[int, int] = (512, 512),
) -> TiffPlan:
    """The flavour, options and metadata :func:`write_tiff` uses for an array of
    ``shape`` (axes ``source_axes``) and ``dtype`` written with axes ``out_axes``.

    Raises
    ------
    ValueError
        ``out_axes`` cannot be written from ``source_axes``.
    """
    shape = tuple(int(s) for s in shape)
    sizes = dict(zip(source_axes, shape, strict=True))
    dropped = [a for a in source_axes if a not in out_axes]
    if any(sizes[a] != 1 for a in dropped) or set(out_axes) - set(source_axes):
        raise ValueError(
            f"cannot write axes {out_axes} from an array with axes {source_axes} and "
            f"shape {shape}"
        )
    dtype = np.dtype(dtype)
    out_shape = tuple(sizes[a] for a in out_axes)
    plane = (sizes["Y"], sizes["X"])
    nbytes = math.prod(shape) * dtype.itemsize
    big = nbytes > (
        BIGTIFF_THRESHOLD if bigtiff_threshold is None else bigtiff_threshold
    )
    limit = TILED_PLANE_THRESHOLD if tile_threshold is None else tile_threshold
    tiled = math.prod(plane) * dtype.itemsize > limit
    imagej = not (big or tiled) and dtype in _IMAGEJ_DTYPES
    # minisblack: a last axis of 3 or 4 pixels must never be taken for RGB samples
    options: dict[str, Any] = {"compression": "zlib", "photometric": "minisblack"}
    if tiled:
        options["tile"] = tile
    else:
        options["rowsperstrip"] = ROWS_PER_STRIP
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
    return TiffPlan(flavour, imagej, big, tiled, out_shape, options, metadata)


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
    plan = plan_tiff(
        shape,
        source.dtype,
        source_axes=source_axes,
        out_axes=out_axes,
        spacing=spacing,
        unit=unit,
        info=info,
        bigtiff_threshold=bigtiff_threshold,
        tile_threshold=tile_threshold,
        tile=tile,
    )
    sizes = dict(zip(source_axes, shape, strict=True))
    plane = (sizes["Y"], sizes["X"])
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

    logger.debug(
        "writing %s (%s, %s, %s%s)",
        path,
        plan.flavour,
        out_axes,
        plan.out_shape,
        ", tiled" if plan.tiled else "",
    )
    with tifffile.TiffWriter(
        path, bigtiff=plan.big, imagej=plan.imagej, ome=not plan.imagej
    ) as tw:
        tw.write(
            tiles() if plan.tiled else planes(),
            shape=plan.out_shape,
            dtype=np.dtype(source.dtype),
            metadata=plan.metadata,
            **plan.options,
        )
    return plan.flavour


class _Aborted(Exception):
    """Raised inside the writer thread when the stream is aborted."""


class TiffStream:
    """A TIFF written while its blocks arrive, in any order, from threads of this process.

    The target of :meth:`~convpaint.io.writers.ResultWriter` for TIFF labels on the
    local scheduler: tasks assign blocks of the engine's ``(T, Z, Y, X)`` layout
    (``stream[t0:t1, z0:z1, y0:y1, x0:x1] = block``) and a writer thread writes the
    file's strips in file order as soon as the rows they need are complete,
    compressing them (zlib runs without the GIL) alongside the computation. Rows
    are dropped once written, so memory holds only blocks that arrived ahead of
    the first incomplete row band (with tasks done roughly in order, a few
    tiles), and no temporary copy of the result is ever written.

    Only what :func:`plan_tiff` writes as strips (untiled planes) can be streamed;
    blocks must cover whole chunks of the grid given by ``chunks``.

    Parameters
    ----------
    path : path-like
        The file to write.
    shape, chunks : tuple of int
        ``(T, Z, Y, X)`` shape of the result and of the blocks that arrive.
    dtype : numpy dtype
        Element type.
    plan : TiffPlan
        From :func:`plan_tiff` (``tiled`` must be False).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        shape: tuple[int, int, int, int],
        chunks: tuple[int, int, int, int],
        dtype: Any,
        plan: TiffPlan,
    ) -> None:
        import threading

        if plan.tiled:
            raise ValueError("tiled TIFF planes cannot be streamed strip by strip")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.dtype = np.dtype(dtype)
        self.ndim = 4
        self.plan = plan
        self._cond = threading.Condition()
        # (t, z, y0) -> {x0: rows of that band}; the band is complete when its
        # pieces cover the plane's width
        self._bands: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}
        self._closing = False
        self._aborted = False
        self._error: BaseException | None = None
        self.buffered_peak = 0
        self._buffered = 0
        self._thread = threading.Thread(
            target=self._run, name="convpaint-tiff", daemon=True
        )
        self._thread.start()

    # --- producers ----------------------------------------------------------------
    def __setitem__(self, key: Any, value: Any) -> None:
        t_sl, z_sl, y_sl, x_sl = (
            k if isinstance(k, slice) else slice(int(k), int(k) + 1) for k in key
        )
        value = np.asarray(value, dtype=self.dtype)
        value = value.reshape(
            t_sl.indices(self.shape[0])[1] - t_sl.indices(self.shape[0])[0],
            z_sl.indices(self.shape[1])[1] - z_sl.indices(self.shape[1])[0],
            *value.shape[-2:],
        )
        t0 = t_sl.indices(self.shape[0])[0]
        z0 = z_sl.indices(self.shape[1])[0]
        y0 = y_sl.indices(self.shape[2])[0]
        x0 = x_sl.indices(self.shape[3])[0]
        with self._cond:
            if self._error is not None:
                raise self._error
            for i in range(value.shape[0]):
                for j in range(value.shape[1]):
                    band = self._bands.setdefault((t0 + i, z0 + j, y0), {})
                    band[x0] = value[i, j].copy()
                    self._buffered += value[i, j].nbytes
            self.buffered_peak = max(self.buffered_peak, self._buffered)
            self._cond.notify_all()

    # --- the writer thread -------------------------------------------------------
    def _band(self, t: int, z: int, y0: int) -> np.ndarray:
        """The complete rows of band ``y0`` of plane ``(t, z)``, once they arrived."""
        width = self.shape[3]
        key = (t, z, y0)

        def ready() -> bool:
            pieces = self._bands.get(key)
            complete = (
                pieces is not None and sum(p.shape[1] for p in pieces.values()) >= width
            )
            return complete or self._closing or self._aborted

        with self._cond:
            self._cond.wait_for(ready)
            if self._aborted:
                raise _Aborted()
            pieces = self._bands.pop(key, None)
            if pieces is None or sum(p.shape[1] for p in pieces.values()) < width:
                raise RuntimeError(
                    f"rows {y0}.. of plane (t={t}, z={z}) never arrived for {self.path}"
                )
            self._buffered -= sum(p.nbytes for p in pieces.values())
        return np.concatenate([pieces[x] for x in sorted(pieces)], axis=1)

    def _strips(self) -> Iterator[bytes]:
        import zlib

        n_t, n_z, n_y, _ = self.shape
        rows = ROWS_PER_STRIP
        edge = self.chunks[2]
        for t in range(n_t):
            for z in range(n_z):
                pending: list[np.ndarray] = []
                have = 0
                for y0 in range(0, n_y, edge):
                    band = self._band(t, z, y0)
                    pending.append(band)
                    have += band.shape[0]
                    last = y0 + edge >= n_y
                    if have < rows and not last:
                        continue
                    block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    full = (have // rows) * rows if not last else have
                    for r in range(0, full, rows):
                        strip = np.ascontiguousarray(block[r : min(r + rows, full)])
                        yield zlib.compress(strip.tobytes(), 6)
                    pending = [block[full:]] if full < have else []
                    have -= full

    def _run(self) -> None:
        import tifffile

        try:
            with tifffile.TiffWriter(
                self.path,
                bigtiff=self.plan.big,
                imagej=self.plan.imagej,
                ome=not self.plan.imagej,
            ) as tw:
                tw.write(
                    self._strips(),
                    shape=self.plan.out_shape,
                    dtype=self.dtype,
                    metadata=self.plan.metadata,
                    **self.plan.options,
                )
        except BaseException as err:  # handed to the producers and to finish()
            with self._cond:
                self._error = err
                self._cond.notify_all()

    # --- completion ----------------------------------------------------------------
    def finish(self) -> None:
        """Wait until the file is complete; raise what went wrong in the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        logger.debug(
            "%s: written as its rows arrived, at most %s bytes held back",
            self.path,
            f"{self.buffered_peak:,}",
        )

    def abort(self) -> None:
        """Stop writing (the caller removes the file)."""
        with self._cond:
            self._aborted = True
            self._bands.clear()
            self._cond.notify_all()
        self._thread.join()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "a TIFF stream is written by threads of one process; use the zarr "
            "scratch target for other schedulers"
        )
