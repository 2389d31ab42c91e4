"""Object I/O: 2D/3D images and label images as dask arrays, streamed label writers,
object tables (CSV, optionally parquet).

Images go through :func:`convpaint.io.readers.open_image` (lazy, axes checked
against what the file declares); the layout handed on is ``(C, [Z,] Y, X)``.
"""

from __future__ import annotations

import csv
import glob
import logging
import mmap
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from convpaint.config.objects import OnExists
from convpaint.errors import ConfigError, DataError
from convpaint.io.atomic import atomic_output, remove_path
from convpaint.io.readers import SUPPORTED_SUFFIXES, file_stem, open_image
from convpaint.io.writers import apply_on_exists

__all__ = [
    "LabelWriter",
    "Volume",
    "check_on_exists",
    "expand_files",
    "iter_blocks",
    "label_stem",
    "map_labels_to_file",
    "open_labels",
    "open_volume",
    "pair_files",
    "read_table",
    "spatial_axes",
    "write_table",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- names
def label_stem(path: Path | str, suffixes: Sequence[str]) -> str:
    """File stem without one of ``suffixes`` at its end (``a_labels.tif`` -> ``a``)."""
    stem = file_stem(path)
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


TABLE_SUFFIXES = (".csv", ".parquet")


def expand_files(patterns: list[str], *, what: str) -> list[Path]:
    """Like :func:`convpaint.io.readers.expand_inputs`, but also accepts tables
    (``.csv``, ``.parquet``) besides images and label images.

    Raises
    ------
    DataError
        A plain path does not exist, or a pattern or folder holds no usable file.
    """
    suffixes = (*SUPPORTED_SUFFIXES, *TABLE_SUFFIXES)

    def usable(p: Path) -> bool:
        return p.suffix.lower() in suffixes and not p.name.startswith(".")

    found: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            hits = [
                Path(p) for p in glob.glob(pattern, recursive=True) if usable(Path(p))
            ]
        elif Path(pattern).is_dir() and Path(pattern).suffix.lower() != ".zarr":
            hits = [p for p in Path(pattern).iterdir() if usable(p)]
        elif Path(pattern).exists():
            hits = [Path(pattern)]
        else:
            raise DataError(f"{what}: '{pattern}' does not exist")
        if not hits:
            raise DataError(
                f"{what}: '{pattern}' matches no usable file ({', '.join(suffixes)}); "
                "check the folder and the quoting"
            )
        found.extend(hits)
    return sorted({p.resolve() for p in found})


def pair_files(
    targets: Sequence[Path], spec: Sequence[str], *, what: str, stems: Sequence[str]
) -> list[Path]:
    """Files paired with ``targets``: through a ``{stem}`` template or in sorted order.

    Raises
    ------
    DataError
        A templated file is missing, or the sorted lists differ in length.
    """
    if len(spec) == 1 and "{stem}" in spec[0]:
        out = []
        for target, stem in zip(targets, stems, strict=True):
            path = Path(spec[0].format(stem=stem))
            if not path.exists():
                raise DataError(
                    f"{what}: no file for '{target}': expected '{path}' (from the "
                    f"template '{spec[0]}'); create it or remove '{target}' from the inputs"
                )
            out.append(path)
        return out
    files = expand_files(list(spec), what=what)
    if len(files) != len(targets):
        raise DataError(
            f"{what}: {len(files)} files for {len(targets)} images; they pair one to "
            "one in sorted order, or use a template such as "
            "'instances/{stem}_instances.tif'"
        )
    return files


def check_on_exists(paths: Sequence[Path], on_exists: OnExists) -> bool:
    """Apply the overwrite policy to one input's outputs; False means skip the input.

    Raises
    ------
    OutputExistsError
        An output exists and ``on_exists`` is ``"error"``.
    """
    existing = [p for p in paths if p.exists()]
    return apply_on_exists(existing, on_exists, setting="on_exists", log=logger)


# --------------------------------------------------------------------------- images
def spatial_axes(axes: str) -> str:
    """The spatial part of an axes string (``CZYX`` -> ``ZYX``)."""
    return "".join(a for a in axes if a in "ZYX")


@dataclass
class Volume:
    """An opened image: lazy ``(C, [Z,] Y, X)`` data and the handles to close."""

    path: Path
    data: Any
    """Dask array, shape ``(C, *spatial)``, the file's dtype."""
    source: Any = None
    """The :class:`~convpaint.io.readers.ImageSource` it came from (pixel features)."""
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(Y, X)`` or ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def n_channels(self) -> int:
        """Channels after conversion (RGBA counts 3)."""
        return int(self.data.shape[0])

    def close(self) -> None:
        """Close the file handles."""
        self._stack.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_array(path: Path, stack: ExitStack) -> Any:
    """Any supported file as a lazy dask array in the file's own axis order."""
    # The shared reader table knows every suffix; reuse it rather than a second table.
    from convpaint.io.readers import _open_raw

    raw, _ = _open_raw(path, stack)
    return raw


def open_volume(path: Path | str, axes: str) -> Volume:
    """Open an image lazily as ``(C, [Z,] Y, X)``.

    Parameters
    ----------
    path : path
        TIFF, zarr, .npy (or PNG/JPEG for 2D).
    axes : str
        One of :data:`convpaint.config.objects.OBJECT_AXES`.

    Raises
    ------
    DataError
        Missing or unreadable file, dimensions that do not match ``axes``.
    """
    path = Path(path)
    src = open_image(path, axes)
    try:
        data = src.data[0]  # (C, Z, Y, X): objects have no time axis
        if "Z" not in axes:
            data = data[:, 0]
    except BaseException:
        src.close()
        raise
    vol = Volume(path, data, src)
    vol._stack.callback(src.close)
    return vol


def open_labels(path: Path | str, *, what: str = "instances") -> tuple[Any, ExitStack]:
    """Open an integer label image (2D or 3D) lazily.

    Returns the dask array and the stack that closes its file.

    Raises
    ------
    DataError
        Missing or unreadable file, a non-integer dtype, colour data.
    """
    path = Path(path)
    stack = ExitStack()
    try:
        raw = _open_array(path, stack)
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if not np.issubdtype(raw.dtype, np.integer):
            raise DataError(
                f"{what} '{path}' have dtype {raw.dtype}; a label image must hold "
                "integers (0 = background, one id per object); save it as uint16/uint32"
            )
        if raw.ndim not in (2, 3):
            raise DataError(
                f"{what} '{path}' have shape {tuple(raw.shape)}; expected one 2D (Y, X) "
                "or 3D (Z, Y, X) label image"
            )
    except BaseException:
        stack.close()
        raise
    return raw, stack


def check_same_shape(
    labels: Any, image_shape: tuple[int, ...], *, labels_path: Path, image_path: Path
) -> None:
    """Refuse a label image whose shape differs from the image's spatial shape."""
    if tuple(int(s) for s in labels.shape) != tuple(image_shape):
        raise DataError(
            f"instances '{labels_path}' have shape {tuple(labels.shape)} but image "
            f"'{image_path}' has spatial shape {tuple(image_shape)}; the instance mask "
            "must have the image's Y/X (and Z) size"
        )


# --------------------------------------------------------------------------- blocks
def iter_blocks(
    shape: Sequence[int], block: Sequence[int]
) -> Iterator[tuple[slice, ...]]:
    """Slices of a regular grid of ``block``-sized blocks (the last ones may be smaller),
    in C order."""
    ranges = [range(0, s, b) for s, b in zip(shape, block, strict=True)]
    for starts in np.ndindex(*(len(r) for r in ranges)):
        yield tuple(
            slice(r[i], min(r[i] + b, s))
            for r, i, b, s in zip(ranges, starts, block, shape, strict=True)
        )


def default_block(ndim: int) -> tuple[int, ...]:
    """The default processing block: 2048² in 2D, 256³ in 3D."""
    return (2048,) * 2 if ndim == 2 else (256,) * 3


def label_dtype(top: int) -> np.dtype:
    """Unsigned dtype for label ids up to ``top`` (uint16 at least, for viewers)."""
    for dt in (np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


# --------------------------------------------------------------------------- writer
#: Larger TIFF outputs are written as 256² tiles, streamed from the disk-backed map;
#: smaller ones as strips (ImageJ's own reader does not open tiled TIFFs).
_STRIPPED_MAX_BYTES = 64 * 2**20
_TILE = 256


class LabelWriter:
    """Writes a 2D or 3D label image block by block to TIFF or zarr, atomically.

    zarr outputs are written chunk by chunk; TIFF outputs are assembled in a disk-backed
    memory map (resident memory stays at about one block) and written as a compressed
    TIFF when :meth:`finish` is called: in strips up to 64 MiB (ImageJ-readable), in
    256² tiles streamed from the map above that. Use as a context manager: on an
    exception, nothing appears under the final name.
    """

    def __init__(
        self,
        final: Path,
        *,
        shape: tuple[int, ...],
        dtype: np.dtype,
        fmt: Literal["tif", "zarr"],
        chunk: Sequence[int],
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.final = Path(final)
        self.fmt = fmt
        self.axes = "YX" if len(shape) == 2 else "ZYX"
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.final))
        self._tmp = tmp
        if fmt == "zarr":
            import zarr

            self._target: Any = zarr.open_array(
                str(tmp),
                mode="w",
                shape=shape,
                chunks=tuple(min(c, s) for c, s in zip(chunk, shape, strict=True)),
                dtype=dtype,
                zarr_format=2,
                fill_value=0,
            )
            self._target.attrs.update(
                {
                    "_ARRAY_DIMENSIONS": [a.lower() for a in self.axes],
                    "axes": self.axes,
                    **(attrs or {}),
                }
            )
        else:
            raw = tmp.with_name(tmp.name + ".raw")
            self._stack.callback(remove_path, raw)
            self._target = np.lib.format.open_memmap(
                raw, mode="w+", dtype=dtype, shape=shape
            )

    def write(self, where: tuple[slice, ...], block: np.ndarray) -> None:
        """Store one block at ``where``."""
        self._target[where] = block
        if self.fmt == "tif":
            self._release()

    def _release(self) -> None:
        """Flush the disk-backed map and drop its pages from resident memory (they are
        file-backed and reclaimable, but count towards a job's memory until dropped)."""
        self._target.flush()
        raw = getattr(self._target, "_mmap", None)
        if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
            raw.madvise(mmap.MADV_DONTNEED)

    def _tiles(self, mm: np.ndarray) -> Iterator[np.ndarray]:
        """The map's tiles in TIFF order (plane, tile row, tile column)."""
        planes = mm.reshape(-1, *mm.shape[-2:])
        for plane in planes:
            for y in range(0, plane.shape[0], _TILE):
                for x in range(0, plane.shape[1], _TILE):
                    yield np.array(plane[y : y + _TILE, x : x + _TILE])
                self._release()

    def finish(self) -> Path:
        """Write the TIFF (if any) and move the output into place."""
        if self.fmt == "tif":
            import tifffile

            mm = self._target
            mm.flush()
            with tifffile.TiffWriter(
                self._tmp, bigtiff=mm.nbytes > 2**31, imagej=mm.dtype == np.uint16
            ) as tw:
                if mm.nbytes <= _STRIPPED_MAX_BYTES:
                    tw.write(
                        mm,
                        compression="zlib",
                        metadata={"axes": self.axes},
                        rowsperstrip=64,
                    )
                else:
                    tw.write(
                        self._tiles(mm),
                        shape=mm.shape,
                        dtype=mm.dtype,
                        tile=(_TILE, _TILE),
                        compression="zlib",
                        metadata={"axes": self.axes},
                    )
        self._stack.close()
        return self.final

    def abort(self) -> None:
        """Remove every temporary file."""
        try:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()


def map_labels_to_file(
    labels: Any,
    ids: NDArray[np.int64],
    values: NDArray[np.integer],
    final: Path,
    *,
    fmt: Literal["tif", "zarr"],
    block: Sequence[int],
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write an image where each object's pixels hold its value, block by block.

    ``ids`` (ascending) are object ids and ``values`` their values; pixels of other ids
    and the background become 0.
    """
    top = int(values.max(initial=0))
    dtype = np.dtype(np.uint8) if top < 256 else label_dtype(top)
    shape = tuple(int(s) for s in labels.shape)
    values = np.asarray(values, dtype)
    with LabelWriter(
        final, shape=shape, dtype=dtype, fmt=fmt, chunk=block, attrs=attrs
    ) as writer:
        for where in iter_blocks(shape, block):
            lab = np.asarray(labels[where])
            out = np.zeros(lab.shape, dtype)
            if len(ids):
                pos = np.minimum(np.searchsorted(ids, lab), len(ids) - 1)
                hit = (ids[pos] == lab) & (lab > 0)
                out[hit] = values[pos[hit]]
            writer.write(where, out)
        return writer.finish()


# --------------------------------------------------------------------------- tables
def read_table(path: Path) -> dict[str, list[str]]:
    """Read a CSV (or parquet) table into columns of strings.

    Raises
    ------
    DataError
        Unreadable file, no header, ragged rows.
    """
    if path.suffix.lower() == ".parquet":
        pq = _pyarrow(f"reading '{path}'")
        table = pq.read_table(path)
        return {
            n: [str(v) for v in table.column(n).to_pylist()] for n in table.column_names
        }
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"table '{path}' could not be read ({err})") from err
    if not rows:
        raise DataError(
            f"table '{path}' is empty; expected a header line such as 'object_id,class'"
        )
    header = [h.strip() for h in rows[0]]
    columns: dict[str, list[str]] = {h: [] for h in header}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                f"table '{path}', line {n}: {len(row)} values but the header has "
                f"{len(header)} columns ({', '.join(header)})"
            )
        for h, v in zip(header, row, strict=True):
            columns[h].append(v.strip())
    return columns


def _pyarrow(why: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ConfigError(
            f"{why} needs pyarrow, which is not installed; `pip install pyarrow` "
            "(or convpaint[parquet]), or use table_format: csv"
        ) from err
    return pq


def write_table(path: Path, columns: dict[str, Sequence[Any]]) -> Path:
    """Write columns to CSV or parquet (by suffix), atomically."""
    if path.suffix == ".parquet":
        pq = _pyarrow(f"writing '{path}'")
        import pyarrow as pa

        table = pa.table({k: list(v) for k, v in columns.items()})
        with atomic_output(path) as tmp:
            pq.write_table(table, tmp)
        return path
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    with atomic_output(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for i in range(n):
            w.writerow([_cell(columns[k][i]) for k in names])
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return value


def as_dask(array: Any) -> Any:
    """Wrap a numpy array as a single-chunk dask array (dask arrays pass through)."""
    return (
        array
        if isinstance(array, da.Array)
        else da.from_array(array, chunks=array.shape)
    )
