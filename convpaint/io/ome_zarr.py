"""OME-Zarr (NGFF 0.4) metadata for outputs, and their downsampled levels.

A labels output is an NGFF image group with the ``image-label`` metadata (class
colours, the source image when it is itself a zarr), so napari (napari-ome-zarr)
and Fiji (MoBIE, n5-viewer) open it as labels; probabilities are a plain NGFF
image with one channel per class. Arrays are zarr v2 with ``/`` chunk keys, as NGFF
0.4 requires, and level ``i`` is level 0 downsampled by ``2**i`` in Y and X.

The metadata is written here as plain dictionaries rather than through ome-zarr-py:
that package is optional (it pulls in an HTTP stack convpaint never uses), and its
writer wants to create the arrays and compute the pyramid itself, whereas convpaint
pre-creates chunk-aligned arrays that cluster workers write into. The tests check
the result with ome-zarr-py's reader and the ome-zarr-models validators.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .zarr_out import create_zarr_array

__all__ = [
    "NGFF_VERSION",
    "build_levels",
    "class_colours",
    "image_label_attrs",
    "level_count",
    "multiscales_attrs",
    "omero_attrs",
]

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.4"

#: Distinct colours for classes (matplotlib's tab10), cycled.
_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def class_colours(classes: list[int]) -> list[tuple[int, int, int, int]]:
    """One RGBA colour (0-255) per class, in class order."""
    return [(*_PALETTE[i % len(_PALETTE)], 255) for i in range(len(classes))]


def level_count(shape_yx: tuple[int, int], levels: int) -> int:
    """How many of ``levels`` fit: each halves Y and X, and none may reach 0."""
    fit = max(1, min(shape_yx)).bit_length()
    if levels > fit:
        logger.info(
            "only %d resolution levels fit a %s image (asked for %d)",
            fit,
            tuple(shape_yx),
            levels,
        )
    return max(1, min(levels, fit))


def _ngff_axis(letter: str, unit: str | None) -> dict[str, str]:
    if letter == "T":
        return {"name": "t", "type": "time"}
    if letter == "C":
        return {"name": "c", "type": "channel"}
    axis = {"name": letter.lower(), "type": "space"}
    if unit:
        axis["unit"] = unit
    return axis


def multiscales_attrs(
    axes: str,
    *,
    spacing: tuple[float, float, float] | None,
    unit: str | None,
    levels: int,
    name: str,
    method: str | None = None,
) -> dict[str, Any]:
    """The ``multiscales`` attribute of an NGFF 0.4 image with ``levels`` datasets.

    Parameters
    ----------
    axes : str
        Array axes in NGFF order (a subset of ``TCZYX``).
    spacing : tuple of float, optional
        Level-0 pixel size ``(z, y, x)``; 1.0 each when None.
    unit : str, optional
        NGFF unit name of the space axes.
    levels : int
        Number of datasets ``"0"``, ``"1"``, ...; level ``i`` is ``2**i`` coarser
        in Y and X.
    name : str
        Name shown by viewers.
    method : str, optional
        How the levels were downsampled (``"nearest"``, ``"mean"``).

    Returns
    -------
    dict
        ``{"multiscales": [...]}``.
    """
    z, y, x = spacing if spacing is not None else (1.0, 1.0, 1.0)
    base = {"T": 1.0, "C": 1.0, "Z": z, "Y": y, "X": x}
    datasets = []
    for level in range(levels):
        factor = {"Y": 2.0**level, "X": 2.0**level}
        scale = [float(base[a]) * factor.get(a, 1.0) for a in axes]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": scale}],
            }
        )
    multiscale: dict[str, Any] = {
        "version": NGFF_VERSION,
        "name": name,
        "axes": [_ngff_axis(a, unit) for a in axes],
        "datasets": datasets,
    }
    if levels > 1 and method:
        multiscale["type"] = method
        multiscale["metadata"] = {"downscale": "factor 2 in Y and X per level"}
    return {"multiscales": [multiscale]}


def image_label_attrs(
    classes: list[int], *, source: Path | str | None, final: Path | str
) -> dict[str, Any]:
    """The ``image-label`` attribute: colour and name per class, and the source.

    Parameters
    ----------
    classes : list of int
        Class values present in the labels.
    source : path-like, optional
        The image the labels were predicted from. Written as ``source.image`` (a
        path relative to the labels group, as NGFF wants) only when it is a zarr
        group, since NGFF readers open that path as an OME-Zarr image; otherwise
        the path stays in the group's ``source`` attribute only.
    final : path-like
        Where the labels group ends up (for the relative path).

    Returns
    -------
    dict
        ``{"image-label": {...}}``.
    """
    label: dict[str, Any] = {
        "version": NGFF_VERSION,
        "colors": [
            {"label-value": int(c), "rgba": list(rgba)}
            for c, rgba in zip(classes, class_colours(classes), strict=True)
        ],
        "properties": [{"label-value": int(c), "class": f"class {c}"} for c in classes],
    }
    if source is not None and _is_zarr_group(Path(source)):
        rel = os.path.relpath(Path(source).resolve(), Path(final).resolve())
        label["source"] = {"image": Path(rel).as_posix()}
    return {"image-label": label}


def _is_zarr_group(path: Path) -> bool:
    """Whether ``path`` is a zarr v2 or v3 group (not an array, not a TIFF)."""
    if (path / ".zgroup").is_file():
        return True
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group"


def omero_attrs(classes: list[int]) -> dict[str, Any]:
    """``omero`` rendering hints for probabilities: one named channel per class."""
    return {
        "omero": {
            "channels": [
                {
                    "label": f"class {c}",
                    "color": "{:02X}{:02X}{:02X}".format(*rgba[:3]),
                    "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0},
                    "active": True,
                }
                for c, rgba in zip(classes, class_colours(classes), strict=True)
            ]
        }
    }


def build_levels(
    group: Path | str,
    *,
    axes: str,
    levels: int,
    method: Literal["nearest", "mean"],
) -> None:
    """Write datasets ``1 .. levels-1`` of an NGFF group from its complete level 0.

    Each level is computed lazily by dask from the one before it and stored chunk
    by chunk (the chunk shape of level 0), so memory stays at a few chunks.
    ``nearest`` takes every second pixel in Y and X (labels keep their values);
    ``mean`` averages 2 x 2 blocks (probabilities). Odd edges are dropped.
    The computation uses dask's current scheduler.

    Parameters
    ----------
    group : path-like
        The NGFF group holding array ``"0"``.
    axes : str
        Array axes (a subset of ``TCZYX`` containing Y and X).
    levels : int
        Total number of levels wanted, level 0 included.
    method : {"nearest", "mean"}
        Downsampling rule.
    """
    import dask.array as da
    import zarr

    y_at, x_at = axes.index("Y"), axes.index("X")
    for level in range(1, levels):
        previous = zarr.open_array(f"{group}/{level - 1}", mode="r", zarr_format=2)
        src = da.from_zarr(previous)
        ny, nx = src.shape[y_at] // 2, src.shape[x_at] // 2
        index = [slice(None)] * src.ndim
        if method == "nearest":
            index[y_at], index[x_at] = slice(0, 2 * ny, 2), slice(0, 2 * nx, 2)
            down = src[tuple(index)]
        else:
            index[y_at], index[x_at] = slice(0, 2 * ny), slice(0, 2 * nx)
            even = src[tuple(index)]
            # coarsen needs every chunk edge divisible by the factor
            even = even.rechunk(
                {a: 2 * max(1, math.ceil(even.chunksize[a] / 2)) for a in (y_at, x_at)}
            )
            down = da.coarsen(np.mean, even, {y_at: 2, x_at: 2}).astype(src.dtype)
        target = create_zarr_array(
            f"{group}/{level}",
            shape=tuple(int(s) for s in down.shape),
            chunks=tuple(int(c) for c in previous.chunks),
            dtype=src.dtype,
            nested=True,
        )
        da.store(down.rechunk(target.chunks), target, lock=False)
