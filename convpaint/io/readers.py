"""Open images lazily as dask arrays in ``(T, C, Z, Y, X)`` layout; find input files."""

from __future__ import annotations

import glob
import logging
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from convpaint.errors import DataError

from .axes import check_axes, guess_axes, hint_axes, to_canonical
from .metadata import FileMetadata, ngff_multiscale, tiff_metadata, zarr_metadata

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "TiffPixels",
    "check_label_block",
    "expand_inputs",
    "file_stem",
    "input_root",
    "open_image",
    "open_labels",
    "read_input_list",
]

logger = logging.getLogger(__name__)

_TIFF = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_PIL = (".png", ".jpg", ".jpeg", ".bmp")
SUPPORTED_SUFFIXES = (*_TIFF, ".zarr", ".npy", *_PIL)
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr")


def file_stem(path: Path | str) -> str:
    """File name without its suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for suffix in _MULTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _is_supported(path: Path) -> bool:
    return _suffix(path) in SUPPORTED_SUFFIXES and not path.name.startswith(".")


def _absolute(path: Path) -> Path:
    """Absolute and normalised, but symlinks kept (output names follow what was given)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def expand_inputs(patterns: list[str], *, what: str = "inputs") -> list[Path]:
    """Files named by paths, folders (their supported files) or glob patterns.

    A path that exists is taken literally, even if it contains glob characters
    (``img[1].tif``). Returns absolute paths (symlinks not resolved), sorted, each
    file once even when reached through several patterns or links.

    Raises
    ------
    DataError
        When a plain path does not exist or a pattern matches nothing.
    """
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if not os.path.lexists(pattern) and glob.has_magic(pattern):
            hits = [Path(p) for p in glob.glob(pattern, recursive=True)]
            hits = [p for p in hits if _is_supported(p)]
            if not hits:
                raise DataError(
                    f"{what}: the pattern '{pattern}' matches no supported file "
                    f"({', '.join(SUPPORTED_SUFFIXES)}); check the folder and the quoting"
                )
            found.extend(hits)
        elif path.is_dir() and _suffix(path) != ".zarr":
            hits = sorted(p for p in path.iterdir() if _is_supported(p))
            if not hits:
                raise DataError(
                    f"{what}: the folder '{path}' holds no supported image file "
                    f"({', '.join(SUPPORTED_SUFFIXES)})"
                )
            found.extend(hits)
        elif path.exists():
            found.append(path)
        else:
            raise DataError(f"{what}: '{path}' does not exist")
    unique: dict[Path, Path] = {}
    for p in sorted({_absolute(p) for p in found}, key=str):
        unique.setdefault(p.resolve(), p)
    return sorted(unique.values(), key=str)


def input_root(patterns: list[str]) -> Path:
    """The folder that ``{relpath}`` in output names is relative to.

    The deepest folder common to every input as given: a glob's folder before its
    first wildcard (``raw`` for ``raw/**/*.tif``), a folder itself, a file's folder.
    It depends only on the patterns, not on what they match today, so every task of
    a job array agrees on it even while files are being added.
    """
    bases = []
    for pattern in patterns:
        path = Path(pattern)
        if not os.path.lexists(pattern) and glob.has_magic(pattern):
            parts = []
            for part in path.parts:
                if glob.has_magic(part):
                    break
                parts.append(part)
            bases.append(Path(*parts) if parts else Path("."))
        elif path.is_dir() and _suffix(path) != ".zarr":
            bases.append(path)
        else:
            bases.append(path.parent)
    if not bases:
        return _absolute(Path("."))
    return Path(os.path.commonpath([str(_absolute(b)) for b in bases]))


def read_input_list(text: str, *, where: str) -> list[str]:
    """Paths listed one per line (``--inputs-from FILE``, ``-`` for stdin).

    Empty lines are ignored; every other line is one literal path (no glob expansion,
    surrounding spaces kept except the line end). Relative paths are relative to the
    current folder.

    Raises
    ------
    DataError
        When the list is empty, holds a NUL byte, or names a file that does not exist.
    """
    if "\0" in text:
        raise DataError(
            f"{where}: the list holds a NUL byte; expected one path per line"
        )
    lines = [line.rstrip("\r") for line in text.split("\n")]
    paths = [line for line in lines if line.strip()]
    if not paths:
        raise DataError(
            f"{where}: the list of inputs is empty; expected one path per line"
        )
    for number, line in enumerate(lines, 1):
        if line.strip() and not os.path.lexists(line):
            raise DataError(
                f"{where}, line {number}: '{line}' does not exist; the list must name "
                "existing files (write it with `convpaint plan ... > list.txt`)"
            )
    return paths


@dataclass
class ImageSource:
    """An opened image: lazy ``(T, C, Z, Y, X)`` pixels and what the file declares.

    Use it as a context manager (or call :meth:`close`) to release file handles.

    Attributes
    ----------
    path : Path
        The file.
    data : dask.array.Array
        Shape ``(T, C, Z, Y, X)``, the file's dtype, read lazily (TIFF through
        tifffile's zarr view, zarr directly); chunks follow the file's layout, so
        callers rechunk or read the windows they need.
    axes : str
        The axes in effect, in file order (declared by the file or given).
    file_axes : str or None
        The axes the file declares, or None (see :mod:`convpaint.io.metadata`).
    file_shape : tuple of int
        The shape as stored, in ``axes`` order.
    spacing : tuple of float or None
        Physical pixel size ``(z, y, x)`` from the file, overridden per axis by the
        ``spacing`` given to :func:`open_image`; axes without a value get 1.0 when
        others have one; None when neither says anything.
    unit : str or None
        Length unit of ``spacing`` from the file (NGFF name, ``"micrometer"``).
    axes_source : str or None
        What declared ``file_axes`` (``"ImageJ metadata"``, ``"OME-XML"``, ...).
    """

    path: Path
    data: Any
    axes: str
    file_axes: str | None
    file_shape: tuple[int, ...]
    spacing: tuple[float, float, float] | None = None
    unit: str | None = None
    axes_source: str | None = None
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def n_channels(self) -> int:
        """Number of channels (an RGBA image counts 3)."""
        return int(self.data.shape[1])

    @property
    def shape_tzyx(self) -> tuple[int, int, int, int]:
        """``(T, Z, Y, X)``: the shape of the labels predicted for this image."""
        t, _, z, y, x = (int(s) for s in self.data.shape)
        return t, z, y, x

    @property
    def shape_yx(self) -> tuple[int, int]:
        """``(Y, X)``."""
        return int(self.data.shape[3]), int(self.data.shape[4])

    @property
    def n_frames(self) -> int:
        """Number of time points (T)."""
        return int(self.data.shape[0])

    @property
    def is_stack(self) -> bool:
        """Whether the image has a Z axis (even of one plane) or several planes."""
        return "Z" in self.axes or int(self.data.shape[2]) > 1

    @property
    def is_colour(self) -> bool:
        """Whether the image is RGB: channels last, 3 of them (after dropping alpha)."""
        return self.axes.endswith("C") and self.n_channels == 3

    def describe_axes(self) -> str:
        """``ZYX (ImageJ metadata)`` or ``CYX (given)``, for messages."""
        if self.file_axes:
            return f"{self.file_axes} ({self.axes_source})"
        return f"{self.axes} (given)"

    def close(self) -> None:
        """Close the underlying file handles."""
        self._stack.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TiffPixels:
    """Level 0 of a TIFF's first series as an array that dask can read from anywhere.

    Uncompressed pixels stored contiguously (what ImageJ, tifffile and most
    acquisition software write without compression) are read straight from the
    file: each read maps the file, copies the window and unmaps it again, so only
    the window's bytes are touched and none of the file stays resident (a file
    stored as one strip would otherwise be decoded whole for every block). Other
    files go through tifffile's zarr view (only the strips or tiles a block needs
    are decoded). The object pickles by path: a ``dask.distributed``
    worker that receives it opens the file itself on first read (workers need read
    access to the same path), whereas tifffile's own store holds an open file
    handle that cannot be sent. A read that fails (a truncated or corrupt file)
    raises :class:`DataError` naming the file.

    Parameters
    ----------
    path : path-like
        The TIFF file.
    tif : tifffile.TiffFile, optional
        An already open handle to reuse in this process (not closed here).
    """

    def __init__(self, path: Path | str, tif: Any = None) -> None:
        self.name = str(path)
        self.path = str(Path(path).resolve())
        self._tif = tif
        self._owned = tif is None
        self._store: Any = None
        self._node: Any = None
        self._lock = threading.Lock()
        #: ``(offset, dtype, shape)`` of contiguous uncompressed pixels, else None
        self._contiguous: tuple[int, str, tuple[int, ...]] | None = None
        if tif is None:
            import tifffile

            self._tif = tifffile.TiffFile(self.path)
            self._owned = True
        self._contiguous = _contiguous_layout(self._tif)
        if self._contiguous is not None:
            _, dtype, shape = self._contiguous
            self.shape = shape
            self.dtype = np.dtype(dtype).newbyteorder("=")
            self.ndim = len(shape)
            self.chunks = _virtual_chunks(self._tif.series[0].axes, shape)
            return
        node = self._open()
        self.shape = tuple(int(s) for s in node.shape)
        self.dtype = np.dtype(node.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in node.chunks)

    def _open(self) -> Any:
        with self._lock:
            if self._node is None:
                import tifffile
                import zarr

                if self._tif is None:
                    self._tif = tifffile.TiffFile(self.path)
                    self._owned = True
                self._store = self._tif.series[0].aszarr()
                node = zarr.open(self._store, mode="r")
                if not hasattr(node, "shape"):  # pyramidal: level 0 is full resolution
                    node = node["0"]
                self._node = node
            return self._node

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            if self._contiguous is not None:
                offset, dtype, shape = self._contiguous
                # a private map per read: unmapped on return, so the pages it
                # touched never add up in the process's resident memory
                window = np.memmap(
                    self.path, dtype=dtype, mode="r", offset=offset, shape=shape
                )
                out = np.array(window[key], dtype=self.dtype)
                del window
                return out
            return np.asarray(self._open()[key])
        except Exception as err:
            raise DataError(
                f"could not read the pixels of '{self.name}' ({type(err).__name__}: "
                f"{err}); the file may be corrupt or truncated: re-export it"
            ) from err

    def close(self) -> None:
        """Release the file (it is reopened if read again)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            if self._owned and self._tif is not None:
                self._tif.close()
            self._tif = self._store = self._node = None

    def as_dask(self) -> Any:
        """A dask array over the file, chunked like the file's strips or tiles."""
        return da.from_array(
            self,
            chunks=self.chunks,
            lock=False,
            fancy=False,
            meta=np.empty((0,) * self.ndim, dtype=self.dtype),
        )

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        stat = Path(self.path).stat()
        return ("TiffPixels", self.path, stat.st_mtime_ns, stat.st_size, self.shape)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_tif=None, _store=None, _node=None, _owned=True, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


#: Edge (Y, X) of the dask chunks over contiguous TIFF pixels (any window is cheap).
_VIRTUAL_CHUNK = 1024


def _contiguous_layout(tif: Any) -> tuple[int, str, tuple[int, ...]] | None:
    """Offset, dtype (file byte order) and shape of the first series' pixels when
    they are stored uncompressed in one contiguous run of a regular file, else None."""
    try:
        series = tif.series[0]
        if len(series.levels) > 1 or not tif.filehandle.is_file:
            return None
        offset = series.dataoffset
        dtype = series.dtype
        if offset is None or dtype is None or dtype.kind not in "biuf":
            return None
        if offset % dtype.itemsize:
            return None
        shape = tuple(int(s) for s in series.shape)
        size = tif.filehandle.size
        if offset + int(np.prod(shape)) * dtype.itemsize > size:
            return None  # truncated: the zarr path reports it when read
        return int(offset), tif.byteorder + dtype.char, shape
    except Exception:  # anything unusual: tifffile's own (zarr) path decides
        return None


def _virtual_chunks(axes: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks for contiguous pixels: one plane of at most 1024 x 1024 per chunk."""
    return tuple(
        min(n, _VIRTUAL_CHUNK) if a in "YX" else (n if a in "S" else 1)
        for a, n in zip(axes, shape, strict=True)
    )


#: Declared-to-stored size ratio beyond which a TIFF is refused. zlib cannot exceed
#: ~1000:1 and LZW ~3000:1; 100000:1 is out of reach of real (even all-black) images.
_MAX_TIFF_RATIO = 100_000
#: Pages inspected at most when summing a series' stored bytes (the rest is estimated).
_MAX_TIFF_PAGES = 4096


def check_tiff_size(path: Path, series: Any, declared: int) -> None:
    """Refuse a TIFF whose declared size is implausible, before anything is allocated.

    Three checks on the file's own tables: every strip or tile lies inside the file;
    the number of strips/tiles matches the declared image size; and the declared
    (uncompressed) size is at most :data:`_MAX_TIFF_RATIO` times the bytes actually
    stored (or exactly equal to them without compression). A crafted 1 kB file that
    declares 300000 x 300000 pixels fails all three.

    Raises
    ------
    DataError
        Naming the file, what it declares and what it holds.
    """
    size = path.stat().st_size
    pages = list(series.pages[:_MAX_TIFF_PAGES]) if series.pages else []
    stored = 0
    compressed = False
    for page in pages:
        if page is None:
            continue
        offsets = tuple(getattr(page, "dataoffsets", ()) or ())
        counts = tuple(getattr(page, "databytecounts", ()) or ())
        keyframe = getattr(page, "keyframe", page)
        compressed = compressed or int(getattr(keyframe, "compression", 1) or 1) != 1
        expected = getattr(keyframe, "chunked", None)
        if expected is not None and len(counts) != int(np.prod(expected)):
            raise DataError(
                f"'{path}' is not a valid TIFF: it declares a {series.shape} "
                f"{series.dtype} image but holds {len(counts)} strip(s)/tile(s) where "
                f"{int(np.prod(expected))} are needed; the file is damaged or crafted: "
                "re-export it"
            )
        for offset, count in zip(offsets, counts, strict=False):
            if count and offset + count > size:
                raise DataError(
                    f"'{path}' is corrupt or truncated: image data at byte {offset} "
                    f"(+{count}) lies beyond the end of the {size}-byte file; re-export it"
                )
        stored += sum(int(c) for c in counts)
    if len(series.pages) > len(pages) and pages:
        stored = stored * len(series.pages) // len(pages)
    limit = stored * (_MAX_TIFF_RATIO if compressed else 1)
    if declared > max(limit, 1 << 20):
        raise DataError(
            f"'{path}' declares a {' x '.join(map(str, series.shape))} {series.dtype} "
            f"image ({declared / 2**30:.3g} GiB) but stores only {stored} bytes of pixel "
            f"data in a file of {size} bytes; the size in its header is implausible (a "
            "damaged or crafted file) and it was not read: re-export the image"
        )


def _open_tiff(path: Path, stack: ExitStack) -> tuple[Any, FileMetadata]:
    import tifffile

    try:
        tif = stack.enter_context(tifffile.TiffFile(path))
        series = tif.series[0]
        pixels = TiffPixels(path, tif)
        stack.callback(pixels.close)
        check_tiff_size(
            path, series, int(np.prod(pixels.shape)) * pixels.dtype.itemsize
        )
        return pixels.as_dask(), tiff_metadata(tif, series, path)
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"'{path}' could not be read as TIFF ({type(err).__name__}: {err}); the file "
            "may be corrupt or truncated: re-export it"
        ) from err


def _open_zarr(path: Path) -> tuple[Any, FileMetadata]:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise DataError(f"'{path}' could not be opened as zarr ({err})") from err
    if hasattr(node, "shape"):
        return da.from_zarr(node), zarr_metadata(node, group_attrs=None, path=path)
    attrs = dict(node.attrs)
    multiscale = ngff_multiscale(attrs)
    arrays = sorted(k for k, _ in node.arrays())
    if multiscale is not None:  # OME-Zarr: the first dataset is full resolution
        datasets = multiscale.get("datasets") or [{"path": "0"}]
        level0 = str(datasets[0].get("path", "0"))
        if level0 not in node:
            raise DataError(
                f"OME-Zarr image '{path}' lists dataset '{level0}' but has no such "
                f"array (found: {', '.join(arrays) or 'none'}); the image is incomplete"
            )
        array = node[level0]
        return da.from_zarr(array), zarr_metadata(array, group_attrs=attrs, path=path)
    if "0" in arrays:
        array = node["0"]
    elif len(arrays) == 1:
        array = node[arrays[0]]
    else:
        raise DataError(
            f"zarr group '{path}' holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
            "point to one array folder, e.g. 'image.zarr/raw'"
        )
    return da.from_zarr(array), zarr_metadata(array, group_attrs=None, path=path)


def _open_pil(path: Path) -> tuple[Any, FileMetadata]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except Image.DecompressionBombError as err:
        # PNG/JPEG are decoded whole: refuse what Pillow finds implausibly large
        raise DataError(
            f"'{path}' declares more pixels than PNG/JPEG input may have ({err}); "
            "convert large images to TIFF or zarr, which are read tile by tile"
        ) from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"'{path}' could not be read as an image ({err})") from err
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    # PNG/JPEG pixels are gray (Y, X) or colour (Y, X, samples): the format says so
    axes = {2: "YX", 3: "YXC"}.get(arr.ndim)
    meta = FileMetadata(axes, "image mode" if axes else None, None)
    return da.from_array(arr, chunks=arr.shape), meta


def _inside_zarr(path: Path) -> bool:
    """Whether a folder is an array or group inside a zarr store (``a.zarr/raw``)."""
    return any(p.suffix.lower() == ".zarr" for p in path.parents)


def _open_raw(path: Path, stack: ExitStack) -> tuple[Any, FileMetadata]:
    """Open any supported file as a lazy dask array in its own layout."""
    suffix = _suffix(path)
    if not path.exists():
        raise DataError(f"'{path}' does not exist")
    if suffix in _TIFF:
        return _open_tiff(path, stack)
    if suffix == ".zarr" or (path.is_dir() and _inside_zarr(path)):
        return _open_zarr(path)
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            raise DataError(f"'{path}' could not be read as .npy ({err})") from err
        return da.from_array(arr, chunks=arr.shape), FileMetadata()
    if suffix in _PIL:
        return _open_pil(path)
    raise DataError(
        f"'{path}': unsupported file type '{suffix}'; supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _resolve_axes(
    path: Path,
    given: str | None,
    meta: FileMetadata,
    shape: tuple[int, ...],
    fallback: str | None = None,
) -> str:
    """The axes to read a file with: the declared ones, checked against ``given``;
    for files that declare none, ``fallback`` when it fits the shape."""
    if given is not None:
        try:
            axes = check_axes(given)
        except ValueError as err:
            raise DataError(f"image '{path}': {err}") from err
        if meta.axes is not None and meta.axes != axes:
            raise DataError(
                f"image '{path}' declares axes {meta.axes} ({meta.source}) but axes "
                f"{axes} were given (shape {shape}); leave axes unset to use the file's "
                f"own, or set axes: {meta.axes}; if the file's metadata is wrong, "
                "re-save it with the right axes"
            )
        return axes
    if meta.axes is not None:
        return meta.axes
    if fallback is not None and len(fallback) == len(shape):
        return fallback
    guess = guess_axes(shape)
    if guess is None:
        reader = f" (its reader calls them {meta.raw_axes})" if meta.raw_axes else ""
        raise DataError(
            f"image '{path}' has shape {shape} and does not declare its axes{reader}; "
            f"say which dimension is which: set {hint_axes(shape)}"
        )
    return guess


def _spacing(
    path: Path, meta: FileMetadata, override: dict[str, float] | None
) -> tuple[float, float, float] | None:
    values = dict(meta.spacing)
    for key, value in (override or {}).items():
        axis = str(key).lower()
        if axis not in ("z", "y", "x") or not float(value) > 0:
            raise DataError(
                f"image '{path}': spacing {{{key}: {value}}} is invalid; give positive "
                "pixel sizes for z, y and/or x, e.g. spacing: {z: 0.5, y: 0.1, x: 0.1}"
            )
        values[axis] = float(value)
    if not values:
        return None
    return (values.get("z", 1.0), values.get("y", 1.0), values.get("x", 1.0))


def open_image(
    path: Path | str,
    axes: str | None = None,
    *,
    spacing: dict[str, float] | None = None,
    fallback: str | None = None,
) -> ImageSource:
    """Open an image lazily as ``(T, C, Z, Y, X)``.

    Parameters
    ----------
    path : path-like
        A TIFF (plain, ImageJ, OME, BigTIFF), zarr array or group (OME-Zarr: level
        0), ``.npy``, PNG or JPEG file.
    axes : str, optional
        The file's axes (e.g. ``"ZCYX"``). None uses the axes the file declares;
        files that declare none are read only when the shape leaves no doubt (2-D:
        ``YX``; ``(Y, X, 3 or 4)``: ``YXC``). Given axes must equal declared ones.
    spacing : dict, optional
        Pixel sizes ``{"z": ..., "y": ..., "x": ...}`` that override the file's.
    fallback : str, optional
        Axes for a file that declares none when ``axes`` is None (prediction passes
        the model's training axes), used when the number of dimensions fits.

    Returns
    -------
    ImageSource
        Holds the open file; close it (or use ``with``) when done.

    Raises
    ------
    DataError
        Missing, unreadable or corrupt file; a non-numeric dtype; axes that the file
        contradicts, that do not fit its dimensions, or that cannot be inferred.
    """
    path = Path(path)
    stack = ExitStack()
    try:
        raw, meta = _open_raw(path, stack)
        if raw.dtype.kind not in "biuf":
            raise DataError(
                f"image '{path}' has dtype {raw.dtype}; expected real numbers "
                "(integers or floats; complex, text and object arrays are refused)"
            )
        shape = tuple(int(s) for s in raw.shape)
        use = _resolve_axes(path, axes, meta, shape, fallback)
        data = to_canonical(raw, use, path=path, file_axes=meta.axes)
        pixel_size = _spacing(path, meta, spacing)
    except BaseException:
        stack.close()
        raise
    return ImageSource(
        path=path,
        data=data,
        axes=use,
        file_axes=meta.axes,
        file_shape=shape,
        spacing=pixel_size,
        unit=meta.unit,
        axes_source=meta.source,
        _stack=stack,
    )


# --- labels -------------------------------------------------------------------------


def check_label_block(block: np.ndarray, path: str) -> np.ndarray:
    """Check one block of a label image and return it as integers.

    Used by :func:`open_labels` on every block as it is read, so that a label
    stack is validated without ever being loaded whole.

    Parameters
    ----------
    block : numpy.ndarray
        Label values, any shape.
    path : str
        The label file, for messages.

    Returns
    -------
    numpy.ndarray
        The block; floats holding whole numbers as int64, booleans as uint8,
        integers unchanged.

    Raises
    ------
    DataError
        Non-integral or non-finite float values, or negative values.
    """
    block = np.asarray(block)
    if np.issubdtype(block.dtype, np.floating):
        if not np.all(np.isfinite(block)) or not np.all(block == np.round(block)):
            raise DataError(
                f"annotations '{path}' hold non-integer values (dtype {block.dtype}); "
                "save them as an integer label image (0 = unlabelled, 1..K = classes)"
            )
        block = block.astype(np.int64)
    elif block.dtype == bool:
        return block.astype(np.uint8)
    if block.size and np.issubdtype(block.dtype, np.signedinteger) and block.min() < 0:
        raise DataError(
            f"annotations '{path}' contain negative values (min {block.min()}); use "
            "0 for unlabelled and positive values for classes"
        )
    return block


def _label_dtype_in(dtype: np.dtype, path: Path) -> np.dtype:
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.int64)
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        return np.dtype(dtype)
    raise DataError(
        f"annotations '{path}' have dtype {dtype}; expected integers (a label image: "
        "0 = unlabelled, 1..K = classes)"
    )


def open_labels(path: Path | str, *, image: ImageSource) -> Any:
    """Open a label image (annotations, ground truth) for ``image``, lazily.

    The label file has the image's shape without its C axis. Its axes are the ones
    it declares, else the image's axes minus C (so a 2-D label file goes with a 2-D
    or a channels image, a ``ZYX`` one with a ``ZCYX`` image).

    Checks that need only the header (dimensions, shape, dtype) run here; the values
    (whole numbers, no negatives) are checked block by block when the returned array
    is computed (:func:`check_label_block`), so a label stack of thousands of planes
    is never loaded whole and a bad value raises :class:`DataError` on the first
    read that meets it.

    Parameters
    ----------
    path : path-like
        The label file (any format :func:`open_image` reads).
    image : ImageSource
        The image the labels belong to.

    Returns
    -------
    dask.array.Array
        Shape ``(T, Z, Y, X)`` equal to ``image.shape_tzyx``; integer dtype (the
        file's, int64 for integral floats, uint8 for booleans). The file is read on
        compute, while ``image`` stays open (its file handles are shared).

    Raises
    ------
    DataError
        Missing or unreadable file; a non-numeric dtype; a channel axis; a shape
        that does not match the image.
    """
    path = Path(path)
    raw, meta = _open_raw(path, image._stack)
    shape = tuple(int(s) for s in raw.shape)
    dtype = _label_dtype_in(raw.dtype, path)
    axes = meta.axes
    if axes is not None and "C" in axes:
        c = axes.index("C")
        if _suffix(path) in _PIL and shape[c] in (3, 4):
            # a label PNG saved as RGB(A) with equal channels: take the first one
            first = raw[..., 0].compute()
            if not all(np.array_equal(first, raw[..., k].compute()) for k in (1, 2)):
                raise DataError(
                    f"annotations '{path}' are a colour image (shape {shape}); save "
                    "them as a single-channel label image (0 = unlabelled, 1..K)"
                )
            raw, axes, shape = (
                da.from_array(first, chunks=first.shape),
                "YX",
                first.shape,
            )
        elif shape[c] == 1:
            raw = raw[tuple(0 if i == c else slice(None) for i in range(raw.ndim))]
            axes = axes.replace("C", "")
        else:
            raise DataError(
                f"annotations '{path}' have a channel axis: shape {shape}, axes "
                f"{meta.describe()}; annotations must be one label image without "
                "channels (0 = unlabelled, 1..K = classes)"
            )
    expected_axes = "".join(a for a in image.axes if a != "C")
    if axes is None:
        axes = expected_axes
    want = dict(zip("TZYX", image.shape_tzyx, strict=True))
    expected = tuple(want[a] for a in expected_axes)
    found = f"with axes {meta.describe()}" if meta.axes else "(no axes declared)"
    if (
        len(shape) != len(axes)
        or any(want[a] != n for a, n in zip(axes, shape, strict=False))
        or any(want[a] != 1 for a in "TZ" if a not in axes)
    ):
        hint = ""
        if meta.axes and sorted(shape) == sorted(expected) and axes != expected_axes:
            hint = (
                f"; if the file's axes are wrong, re-save it with axes {expected_axes}"
            )
        raise DataError(
            f"annotations '{path}' have shape {shape} {found} but image "
            f"'{image.path}' needs {expected_axes} shape {expected} (its axes are "
            f"{image.describe_axes()}); annotations must be one label image of the "
            f"image's shape without its C axis{hint}"
        )
    labels = to_canonical(raw, axes, path=path, file_axes=meta.axes)[:, 0]
    return labels.map_blocks(check_label_block, path=str(path), dtype=dtype)
