"""Intensity statistics of images and stacks, and the z-scoring applied before features.

Statistics are taken per channel (or jointly over the channels of colour images, to
keep their hues), either over the whole image or stack (`image`) or per Z plane and
time frame (`plane`). They are computed in float64 over fixed 1024 x 1024 blocks, so
they never depend on the tiling. Images and stacks up to :data:`EXACT_VOXELS` voxels
(per plane, for `plane`) are measured exactly; larger ones on an evenly spread,
deterministic sample of those blocks holding about that many voxels, so a terabyte
stack costs one bounded read, never a full pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from convpaint.errors import DataError
from convpaint.features.pipeline import Normalization

__all__ = [
    "EXACT_VOXELS",
    "Statistics",
    "image_statistics",
    "joint_channels",
    "pool_statistics",
]

logger = logging.getLogger(__name__)

#: Block edge for statistics; fixed so the statistics never depend on tiling.
_STATS_CHUNK = 1024
#: Up to this many voxels (per channel, per unit measured) statistics are exact.
EXACT_VOXELS = 1 << 27


@dataclass
class Statistics:
    """Means and standard deviations of one image.

    ``mean``/``std`` have shape ``(C',)`` for whole-image statistics and
    ``(T, C', Z)`` per plane, where ``C'`` is 1 for joint (colour) statistics.
    ``voxels`` is the number of voxels per channel the image has (for pooling).
    """

    mean: np.ndarray
    std: np.ndarray
    voxels: int
    sampled: bool = False

    @property
    def per_plane(self) -> bool:
        """True for per-plane statistics."""
        return self.mean.ndim == 3

    def normalization(self, t: int = 0) -> Normalization:
        """The z-scoring of time frame ``t``."""
        if self.per_plane:
            return Normalization(self.mean[t], self.std[t])
        return Normalization(self.mean, self.std)


def _read_error(source: Any, err: Exception) -> DataError:
    return DataError(
        f"could not read the pixels of '{source.path}' ({type(err).__name__}: {err}); "
        "the file may be corrupt or truncated: re-export it"
    )


def _not_finite(source: Any) -> DataError:
    return DataError(
        f"image '{source.path}' contains NaN or infinite values; replace them (e.g. "
        "with 0 or the image minimum) before training or predicting"
    )


def _exact(source: Any, data: Any, axis: tuple[int, ...]) -> tuple[Any, Any, int]:
    """Sums and sums of squares over ``axis`` of a dask array, in one pass.

    ``data`` is ``(C, Y, X)`` or ``(T, C, Z, Y, X)``; blocks hold every channel of
    one plane's 1024 x 1024 window.
    """
    import dask.array as da
    from dask.threaded import get as threaded_get

    c_axis = 0 if data.ndim == 3 else 1
    chunks = tuple(
        _STATS_CHUNK if i >= data.ndim - 2 else (n if i == c_axis else 1)
        for i, n in enumerate(data.shape)
    )
    # method="tasks": dask's default first looks for a dask.distributed client,
    # importing distributed (a quarter of a second) to find none
    data = data.rechunk(chunks, method="tasks").astype(np.float64)
    try:
        s1, s2, finite = da.compute(
            data.sum(axis=axis),
            (data * data).sum(axis=axis),
            da.isfinite(data).all(),
            scheduler=threaded_get,
        )
    except DataError:
        raise
    except Exception as err:
        raise _read_error(source, err) from err
    if not bool(finite):
        raise _not_finite(source)
    n = math.prod(data.shape[i] for i in axis)
    return s1, s2, n


def _blocks(shape_yx: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    h, w = shape_yx
    return [
        (y, min(y + _STATS_CHUNK, h), x, min(x + _STATS_CHUNK, w))
        for y in range(0, h, _STATS_CHUNK)
        for x in range(0, w, _STATS_CHUNK)
    ]


def _sampled(
    source: Any, units: list[tuple[int, int, tuple[int, int, int, int]]], joint: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sums over the given ``(t, z, block)`` units, read in parallel, added in order."""
    from concurrent.futures import ThreadPoolExecutor

    from dask.local import get_sync

    data = source.data

    def one(unit: tuple[int, int, tuple[int, int, int, int]]) -> tuple[Any, Any]:
        t, z, (y0, y1, x0, x1) = unit
        try:
            block = np.asarray(
                data[t, :, z, y0:y1, x0:x1].compute(scheduler=get_sync),
                dtype=np.float64,
            )
        except DataError:
            raise
        except Exception as err:
            raise _read_error(source, err) from err
        if not np.isfinite(block).all():
            raise _not_finite(source)
        axis = (0, 1, 2) if joint else (1, 2)
        return block.sum(axis=axis), (block * block).sum(axis=axis)

    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(one, units))
    s1 = np.sum([p[0] for p in parts], axis=0)
    s2 = np.sum([p[1] for p in parts], axis=0)
    n = sum((b[1] - b[0]) * (b[3] - b[2]) for _, _, b in units)
    return np.atleast_1d(s1), np.atleast_1d(s2), n


def _spread(items: list[Any], count: int) -> list[Any]:
    """``count`` items evenly spread over ``items`` (deterministic), all if fewer."""
    if count >= len(items):
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in idx]


def _finish(s1: np.ndarray, s2: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    return mean, np.sqrt(var)


def image_statistics(
    source: Any, *, joint: bool, per_plane: bool = False, budget: int = EXACT_VOXELS
) -> Statistics:
    """Mean and standard deviation per channel (or over all channels when ``joint``).

    Parameters
    ----------
    source : ImageSource
        An opened image; ``source.data`` is ``(T, C, Z, Y, X)``.
    joint : bool
        One statistic over all channels (colour images).
    per_plane : bool
        One statistic per time frame and Z plane instead of one for the image.
    budget : int
        Voxels (per channel) measured exactly; larger images or planes are sampled.

    Raises
    ------
    DataError
        Unreadable pixels, or NaN/infinite values in what was measured.
    """
    data = source.data
    n_t, n_c, n_z, h, w = (int(s) for s in data.shape)
    c_out = 1 if joint else n_c
    plane = h * w
    if per_plane:
        if plane <= budget:
            axis = (1, 3, 4) if joint else (3, 4)
            s1, s2, n = _exact(source, data, axis)
            mean, std = _finish(np.asarray(s1), np.asarray(s2), n)
            mean = mean.reshape(n_t, c_out, n_z) if not joint else mean[:, None, :]
            std = std.reshape(n_t, c_out, n_z) if not joint else std[:, None, :]
            return Statistics(mean, std, n_t * n_z * plane)
        mean = np.empty((n_t, c_out, n_z))
        std = np.empty((n_t, c_out, n_z))
        blocks = _blocks((h, w))
        chosen = _spread(blocks, max(1, budget // (_STATS_CHUNK * _STATS_CHUNK)))
        for t in range(n_t):
            for z in range(n_z):
                s1, s2, n = _sampled(source, [(t, z, b) for b in chosen], joint)
                mean[t, :, z], std[t, :, z] = _finish(s1, s2, n)
        return Statistics(mean, std, n_t * n_z * plane, sampled=True)
    total = n_t * n_z * plane
    if total <= budget:
        if n_t == 1 and n_z == 1:
            # a plain 2-D image: the (C, Y, X) reduction convpaint has always used
            data = data[0, :, 0]
            axis = (0, 1, 2) if joint else (1, 2)
        else:
            axis = (0, 1, 2, 3, 4) if joint else (0, 2, 3, 4)
        s1, s2, n = _exact(source, data, axis)
        mean, std = _finish(np.atleast_1d(s1), np.atleast_1d(s2), n)
        return Statistics(mean, std, total)
    units = [(t, z, b) for t in range(n_t) for z in range(n_z) for b in _blocks((h, w))]
    chosen = _spread(units, max(1, budget // (_STATS_CHUNK * _STATS_CHUNK)))
    logger.info(
        "statistics of %s from %d of %d blocks (%s voxels)",
        source.path,
        len(chosen),
        len(units),
        f"{total:,}",
    )
    s1, s2, n = _sampled(source, chosen, joint)
    mean, std = _finish(s1, s2, n)
    return Statistics(mean, std, total, sampled=True)


def pool_statistics(stats: list[Statistics]) -> tuple[list[float], list[float]]:
    """Combine images' statistics into one per channel, weighted by voxel counts.

    Per-plane statistics are first averaged over their planes.
    """
    w = np.array([s.voxels for s in stats], dtype=np.float64)[:, None]
    means, vars_ = [], []
    for s in stats:
        if s.per_plane:
            m = s.mean.mean(axis=(0, 2))
            v = (s.std**2 + s.mean**2).mean(axis=(0, 2)) - m**2
        else:
            m, v = s.mean, s.std**2
        means.append(m)
        vars_.append(v)
    m_arr, v_arr = np.array(means), np.array(vars_)
    mean = (w * m_arr).sum(0) / w.sum()
    var = (w * (v_arr + m_arr**2)).sum(0) / w.sum() - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist()


def joint_channels(source: Any) -> bool:
    """Colour (RGB) images are normalised over all channels together, keeping hues."""
    return bool(getattr(source, "is_colour", False))
