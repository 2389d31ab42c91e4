"""Open images lazily as dask arrays in ``(C, Y, X)`` layout; find input files."""

from __future__ import annotations

import glob
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from convpaint.errors import DataError

from .axes import to_canonical

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "expand_inputs",
    "file_stem",
    "input_root",
    "open_image",
    "read_input_list",
    "read_labels",
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
        raise DataError(f"{where}: the list holds a NUL byte; expected one path per line")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    paths = [line for line in lines if line.strip()]
    if not paths:
        raise DataError(f"{where}: the list of inputs is empty; expected one path per line")
    for number, line in enumerate(lines, 1):
        if line.strip() and not os.path.lexists(line):
            raise DataError(
                f"{where}, line {number}: '{line}' does not exist; the list must name "
                "existing files (write it with `convpaint plan ... > list.txt`)"
            )
    return paths


@dataclass
class ImageSource:
    """An opened image: lazy ``(C, Y, X)`` data plus what was found in the file."""

    path: Path
    data: Any
    """Dask array, shape ``(C, Y, X)``, the file's dtype."""
    file_shape: tuple[int, ...]
    file_axes: str | None
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def shape_yx(self) -> tuple[int, int]:
        """``(Y, X)``."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    @property
    def n_channels(self) -> int:
        """Number of channels after conversion (RGBA counts 3)."""
        return int(self.data.shape[0])

    def close(self) -> None:
        """Close the underlying file handles."""
        self._stack.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _open_tiff(path: Path, stack: ExitStack) -> tuple[Any, str | None]:
    import tifffile
    import zarr

    try:
        tif = stack.enter_context(tifffile.TiffFile(path))
        series = tif.series[0]
        store = series.aszarr()
        stack.callback(store.close)
        node = zarr.open(store, mode="r")
        if not hasattr(node, "shape"):  # pyramidal file: level 0 is full resolution
            node = node["0"]
        check_tiff_size(path, series, int(node.nbytes))
        axes = series.axes.replace("S", "C")
        return da.from_zarr(node), axes
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"'{path}' could not be read as TIFF ({type(err).__name__}: {err}); the file "
            "may be corrupt or truncated: re-export it"
        ) from err


def _open_zarr(path: Path) -> Any:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise DataError(f"'{path}' could not be opened as zarr ({err})") from err
    if hasattr(node, "shape"):
        return da.from_zarr(node)
    arrays = sorted(k for k, v in node.arrays())
    if "0" in arrays:  # OME-Zarr: level 0 is full resolution
        return da.from_zarr(node["0"])
    if len(arrays) == 1:
        return da.from_zarr(node[arrays[0]])
    raise DataError(
        f"zarr group '{path}' holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
        "point to one array folder, e.g. 'image.zarr/raw'"
    )


def _open_pil(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"'{path}' could not be read as an image ({err})") from err
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return da.from_array(arr, chunks=arr.shape)


def _open_raw(path: Path, stack: ExitStack) -> tuple[Any, str | None]:
    suffix = _suffix(path)
    if not path.exists():
        raise DataError(f"'{path}' does not exist")
    if suffix in _TIFF:
        return _open_tiff(path, stack)
    if suffix == ".zarr":
        return _open_zarr(path), None
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            raise DataError(f"'{path}' could not be read as .npy ({err})") from err
        return da.from_array(arr, chunks=arr.shape), None
    if suffix in _PIL:
        return _open_pil(path), None
    raise DataError(
        f"'{path}': unsupported file type '{suffix}'; supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def open_image(path: Path | str, axes: str) -> ImageSource:
    """Open an image lazily and convert it to ``(C, Y, X)``.

    Raises
    ------
    DataError
        Missing, unreadable or corrupt file; dimensions that do not match ``axes``;
        a non-numeric dtype.
    """
    path = Path(path)
    stack = ExitStack()
    try:
        raw, file_axes = _open_raw(path, stack)
        if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
            raise DataError(f"image '{path}' has dtype {raw.dtype}; expected numbers")
        data = to_canonical(raw, axes, path=path, file_axes=file_axes)
    except BaseException:
        stack.close()
        raise
    return ImageSource(path, data, tuple(int(s) for s in raw.shape), file_axes, stack)


def read_labels(
    path: Path | str, *, shape_yx: tuple[int, int], image: Path | str
) -> np.ndarray:
    """Read a 2D annotation image fully (labels are small) and check it against the image.

    Raises
    ------
    DataError
        Missing or unreadable file, wrong shape, non-integer or negative values.
    """
    path = Path(path)
    with ExitStack() as stack:
        raw, _ = _open_raw(path, stack)
        raw = raw.compute()
    labels = np.asarray(raw)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4) and _suffix(path) in _PIL:
        # RGB-saved label PNG with equal channels: accept the first channel
        if all(np.array_equal(labels[..., 0], labels[..., c]) for c in range(1, 3)):
            labels = labels[..., 0]
    if labels.ndim != 2 or labels.shape != tuple(shape_yx):
        raise DataError(
            f"annotations '{path}' have shape {labels.shape} but image '{image}' has Y/X "
            f"shape {tuple(shape_yx)}; annotations must be one 2D label image of the "
            "image's size"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError(
                f"annotations '{path}' hold non-integer values (dtype {labels.dtype}); "
                "save them as an integer label image (0 = unlabelled, 1..K = classes)"
            )
        labels = labels.astype(np.int64)
    elif labels.dtype == bool:
        labels = labels.astype(np.uint8)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"annotations '{path}' have dtype {labels.dtype}; expected integers"
        )
    if labels.size and labels.min() < 0:
        raise DataError(
            f"annotations '{path}' contain negative values (min {labels.min()}); use "
            "0 for unlabelled and positive values for classes"
        )
    return labels
