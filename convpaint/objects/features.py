"""Per-object geometry and measurements, computed from whole objects, block by block.

A first pass over the instance mask finds each object's pixel count, bounding box
and centroid (merged across blocks). Objects are then handled in groups: each group
is the objects whose bounding box starts in one block, read as one region that
covers their whole boxes (plus the ring margin). So every measurement sees the whole
object and never depends on the block size; memory follows the block size plus the
largest object.

Measurements use scikit-image ``regionprops`` for shape, marching squares/cubes for
the Feret diameter and the 3D surface; intensities are plain numpy on each object's
pixels and on its background ring. The optional means of convpaint's pixel features
are added by :mod:`convpaint.objects.pixel_features`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from convpaint.config.objects import ObjectFeatureConfig
from convpaint.errors import DataError

from .io import iter_blocks

__all__ = [
    "ObjectGeometry",
    "channel_statistics",
    "feature_names",
    "iter_regions",
    "measure_features",
    "measure_geometry",
]

_MORPHOLOGY_2D = (
    "area",
    "perimeter",
    "circularity",
    "eccentricity",
    "solidity",
    "extent",
    "axis_major_length",
    "axis_minor_length",
    "equivalent_diameter_area",
    "feret_diameter_max",
    *(f"hu_moment_{i}" for i in range(7)),
)
_MORPHOLOGY_3D = (
    "area",
    "surface_area",
    "eccentricity",
    "solidity",
    "extent",
    "axis_major_length",
    "axis_minor_length",
    "equivalent_diameter_area",
    "feret_diameter_max",
    *(f"inertia_eigval_{i}" for i in range(3)),
)
#: Per-channel statistics of ``intensity: true``, inside the object and in the ring.
_STATISTICS = ("mean", "std", "min", "max", "integrated")


@dataclass
class ObjectGeometry:
    """Objects of one instance mask, sorted by id."""

    ids: NDArray[np.int64]
    """Object ids present in the mask, ascending."""
    area: NDArray[np.int64]
    """Pixel (voxel) count per object."""
    low: NDArray[np.int64]
    """Bounding box start per object, shape ``(n, ndim)``."""
    high: NDArray[np.int64]
    """Bounding box stop (exclusive) per object, shape ``(n, ndim)``."""
    centroid: NDArray[np.float64]
    """Mean pixel coordinate per object, shape ``(n, ndim)``."""
    shape: tuple[int, ...]
    """Spatial shape of the mask."""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: NDArray[np.bool_]) -> ObjectGeometry:
        """The objects where ``keep`` is true."""
        return ObjectGeometry(
            self.ids[keep],
            self.area[keep],
            self.low[keep],
            self.high[keep],
            self.centroid[keep],
            self.shape,
        )


def measure_geometry(labels: Any, block: Sequence[int]) -> ObjectGeometry:
    """Pixel counts, bounding boxes and centroids of every object, block by block.

    Parameters
    ----------
    labels : dask or numpy array of integers, shape ``(Y, X)`` or ``(Z, Y, X)``
        Instance mask, 0 = background.
    block : sequence of int
        Block shape used to read the mask.

    Raises
    ------
    DataError
        Negative ids.
    """
    shape = tuple(int(s) for s in labels.shape)
    ndim = len(shape)
    parts: list[tuple[np.ndarray, ...]] = []
    for where in iter_blocks(shape, block):
        lab = np.asarray(labels[where])
        flat = lab.ravel()
        nz = np.flatnonzero(flat)
        if not len(nz):
            continue
        values = flat[nz]
        if values.min() < 0:
            raise DataError(f"negative object id {int(values.min())}")
        ids, inverse = np.unique(values, return_inverse=True)
        coords = np.stack(np.unravel_index(nz, lab.shape), axis=1)
        coords += np.array([s.start for s in where])
        n = len(ids)
        area = np.bincount(inverse, minlength=n).astype(np.int64)
        low = np.full((n, ndim), np.iinfo(np.int64).max, np.int64)
        high = np.zeros((n, ndim), np.int64)
        np.minimum.at(low, inverse, coords)
        np.maximum.at(high, inverse, coords + 1)
        sums = np.stack(
            [
                np.bincount(inverse, weights=coords[:, a], minlength=n)
                for a in range(ndim)
            ],
            axis=1,
        )
        parts.append((ids.astype(np.int64), area, low, high, sums))
    if not parts:
        empty = np.zeros((0, ndim))
        return ObjectGeometry(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            empty.astype(np.int64),
            empty.astype(np.int64),
            empty,
            shape,
        )
    all_ids = np.concatenate([p[0] for p in parts])
    ids, inverse = np.unique(all_ids, return_inverse=True)
    n = len(ids)
    area = np.zeros(n, np.int64)
    np.add.at(area, inverse, np.concatenate([p[1] for p in parts]))
    low = np.full((n, ndim), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(low, inverse, np.concatenate([p[2] for p in parts]))
    high = np.zeros((n, ndim), np.int64)
    np.maximum.at(high, inverse, np.concatenate([p[3] for p in parts]))
    sums = np.zeros((n, ndim))
    np.add.at(sums, inverse, np.concatenate([p[4] for p in parts]))
    return ObjectGeometry(ids, area, low, high, sums / area[:, None], shape)


def iter_regions(
    shape: Sequence[int],
    low: NDArray[np.int64],
    high: NDArray[np.int64],
    block: Sequence[int],
) -> Iterator[tuple[tuple[slice, ...], NDArray[np.int64]]]:
    """Group windows by the block that holds their start; yield each group's region.

    ``low``/``high`` are per-object windows (they may reach outside the image); the
    region is their union clipped to the image. Yields ``(region slices, indices of
    the objects in the group)``; every object appears once.
    """
    if not len(low):
        return
    shape = tuple(shape)
    start = np.clip(low, 0, np.array(shape) - 1)
    key = np.ravel_multi_index(
        tuple((start // np.array(block)).T),
        tuple(-(-s // b) for s, b in zip(shape, block, strict=True)),
    )
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for group in np.split(order, bounds):
        lo = np.clip(low[group].min(axis=0), 0, None)
        hi = np.minimum(high[group].max(axis=0), shape)
        yield tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), group


def channel_statistics(data: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and standard deviation per channel of a ``(C, ...)`` array (float64)."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(data)
    axes = tuple(range(1, arr.ndim))
    x = arr.astype(np.float64)
    mean, sq = da.compute(x.mean(axis=axes), (x * x).mean(axis=axes))
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return np.asarray(mean), np.where(std > 0, std, 1.0)


def feature_names(config: ObjectFeatureConfig, n_channels: int, ndim: int) -> list[str]:
    """Names of the shape and intensity feature columns, in order.

    The means of pixel features (``config.pixel_features``) follow these columns;
    their names come from :func:`convpaint.objects.pixel_features.pixel_feature_names`.
    """
    names: list[str] = []
    if config.morphology:
        names += list(_MORPHOLOGY_2D if ndim == 2 else _MORPHOLOGY_3D)
    quantiles = [f"p{q * 100:g}" for q in config.quantiles]
    for c in range(n_channels):
        if config.intensity:
            names += [f"{s}_c{c}" for s in _STATISTICS]
        names += [f"{q}_c{c}" for q in quantiles]
        if config.ring:
            names += [f"ring_mean_c{c}", f"contrast_c{c}"]
            if config.intensity:
                names += [f"ring_{s}_c{c}" for s in _STATISTICS if s != "mean"]
            names += [f"ring_{q}_c{c}" for q in quantiles]
    return names


def _finite(value: float, default: float) -> float:
    return float(value) if np.isfinite(value) else default


def _solidity(props: Any, mask: NDArray[np.bool_]) -> float:
    """Area over convex-hull area; 1 for objects one pixel thin in some axis, whose
    hull qhull cannot build (skimage warns and returns an empty hull there)."""
    if min(mask.shape) < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return _finite(props.solidity, 1.0)
        except (ValueError, ZeroDivisionError):  # degenerate hull
            return 1.0


def _outline_points(mask: NDArray[np.bool_]) -> tuple[NDArray[np.float64], Any]:
    """Points of the object's outline at level 0.5 (marching squares in 2D; marching
    cubes in 3D, with the mesh's faces), on the mask padded by one pixel."""
    from skimage.measure import find_contours, marching_cubes

    padded = np.pad(mask, 1).astype(np.float32)
    if mask.ndim == 2:
        return np.concatenate(find_contours(padded, 0.5)), None
    verts, faces, _, _ = marching_cubes(padded, 0.5)
    return verts.astype(np.float64), faces


def _feret_max(points: NDArray[np.float64]) -> float:
    """Largest distance between two outline points (scikit-image's definition)."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(points) > points.shape[1] + 1:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all points on a line or plane: keep them all
            pass
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def _morphology(mask: NDArray[np.bool_]) -> list[float]:
    """Shape descriptors of one object mask (its bounding-box crop)."""
    from skimage.measure import mesh_surface_area, regionprops

    props = regionprops(mask.astype(np.uint8))[0]
    area = float(props.area)
    points, faces = _outline_points(mask)
    feret = _feret_max(points)
    if mask.ndim == 2:
        perimeter = float(props.perimeter)
        circularity = 4 * math.pi * area / perimeter**2 if perimeter > 0 else 1.0
        return [
            area,
            perimeter,
            min(circularity, 1.0),
            _finite(props.eccentricity, 0.0),
            _solidity(props, mask),
            float(props.extent),
            _finite(props.axis_major_length, 0.0),
            _finite(props.axis_minor_length, 0.0),
            float(props.equivalent_diameter_area),
            feret,
            *[_finite(h, 0.0) for h in props.moments_hu],
        ]
    eig = [max(float(v), 0.0) for v in props.inertia_tensor_eigvals]
    major = _finite(props.axis_major_length, 0.0)
    minor = _finite(props.axis_minor_length, 0.0)
    # as scikit-image defines it in 2D: sqrt(1 - minor^2 / major^2), i.e. from the
    # largest and smallest variance along the principal axes
    eccentricity = math.sqrt(max(1.0 - (minor / major) ** 2, 0.0)) if major else 0.0
    return [
        area,
        float(mesh_surface_area(points, faces)),
        eccentricity,
        _solidity(props, mask),
        float(props.extent),
        major,
        minor,
        float(props.equivalent_diameter_area),
        feret,
        *eig,
    ]


def _statistics(
    values: NDArray[np.float64], config: ObjectFeatureConfig, quantiles: NDArray
) -> tuple[list[float], list[float]]:
    """``intensity`` statistics and quantiles of one channel's pixel values."""
    stats = (
        [
            float(values.mean()),
            float(values.std()),
            float(values.min()),
            float(values.max()),
            float(values.sum()),
        ]
        if config.intensity
        else []
    )
    q = [float(v) for v in np.quantile(values, quantiles)] if len(quantiles) else []
    return stats, q


def measure_features(
    data: Any,
    labels: Any,
    geometry: ObjectGeometry,
    config: ObjectFeatureConfig,
    *,
    block: Sequence[int],
    normalization: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
    source: object = "the image",
) -> NDArray[np.float32]:
    """The feature matrix of every object in ``geometry``.

    Parameters
    ----------
    data : dask or numpy array, shape ``(C, *spatial)``
        The image.
    labels : dask or numpy array of integers, shape ``spatial``
        The instance mask ``geometry`` was measured on.
    geometry : ObjectGeometry
        Objects to measure (rows of the result follow ``geometry.ids``).
    config : ObjectFeatureConfig
        Which measurements.
    block : sequence of int
        Grouping block (the result does not depend on it).
    normalization : (mean, std), optional
        Per-channel statistics to z-score the intensities with.
    source : object
        The image's path, for messages.

    Returns
    -------
    ndarray of shape ``(n_objects, n_features)``, float32
        Columns as in :func:`feature_names`; every value is finite.
    """
    n_channels = int(data.shape[0])
    ndim = len(geometry.shape)
    n_feat = len(feature_names(config, n_channels, ndim))
    out = np.zeros((len(geometry), n_feat), np.float32)
    margin = config.ring
    quantiles = np.asarray(config.quantiles, float)
    for region, group in iter_regions(
        geometry.shape, geometry.low - margin, geometry.high + margin, block
    ):
        lab = np.asarray(labels[region])
        img = np.asarray(data[(slice(None), *region)], dtype=np.float64)
        if normalization is not None:
            mean, std = normalization
            img = (img - mean.reshape(-1, *[1] * ndim)) / std.reshape(-1, *[1] * ndim)
        origin = np.array([s.start for s in region])
        for row in group:
            oid = geometry.ids[row]
            lo = geometry.low[row] - origin
            hi = geometry.high[row] - origin
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            mask = lab[box] == oid
            values = img[(slice(None), *box)][:, mask]  # (C, n_pixels)
            feats: list[float] = []
            if config.morphology:
                feats += _morphology(mask)
            ring = _ring_values(lab, img, oid, lo, hi, margin) if margin else None
            for c in range(n_channels):
                inside, q_inside = _statistics(values[c], config, quantiles)
                feats += inside + q_inside
                if ring is None:
                    continue
                # no background pixel that close (an object enclosed by others): the
                # ring takes the object's own values, so the contrast is 0, and its
                # integrated intensity is 0 (no pixels)
                around = ring[c] if ring.shape[1] else values[c]
                stats, q_ring = _statistics(around, config, quantiles)
                ring_mean = float(around.mean())
                feats += [ring_mean, float(values[c].mean()) - ring_mean]
                if config.intensity:
                    stats[-1] = float(ring[c].sum())
                    feats += stats[1:]
                feats += q_ring
            out[row] = feats
    if not np.isfinite(out).all():
        bad = geometry.ids[~np.isfinite(out).all(axis=1)]
        raise DataError(
            f"image '{source}' has NaN or infinite values inside object(s) "
            f"{bad[:5].tolist()}; "
            "replace them before classifying objects"
        )
    return out


def _ring_values(
    lab: np.ndarray,
    img: np.ndarray,
    oid: int,
    lo: np.ndarray,
    hi: np.ndarray,
    margin: int,
) -> NDArray[np.float64]:
    """Values ``(C, n)`` of the background pixels within ``margin`` of the object
    (Euclidean distance); ``n`` may be 0."""
    lo_m = np.maximum(lo - margin, 0)
    hi_m = np.minimum(hi + margin, lab.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo_m, hi_m, strict=True))
    sub = lab[box]
    near = ndi.distance_transform_edt(sub != oid) <= margin
    ring = near & (sub == 0)
    return img[(slice(None), *box)][:, ring]
