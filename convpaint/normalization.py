"""Intensity statistics of images, and the z-scoring applied before features."""

from __future__ import annotations

import logging

import numpy as np

from convpaint.errors import DataError
from convpaint.io.readers import (
    ImageSource,
)

logger = logging.getLogger(__name__)


#: Chunk edge for image statistics; fixed so the statistics never depend on tiling.
_STATS_CHUNK = 1024


def image_statistics(
    source: ImageSource, *, joint: bool
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel (or over all channels when ``joint``).

    Computed in float64 over fixed chunks, so the result never depends on tiling.

    Raises
    ------
    DataError
        If the image contains NaN or infinite values.
    """
    import dask.array as da

    data = source.data.rechunk((source.n_channels, _STATS_CHUNK, _STATS_CHUNK)).astype(
        np.float64
    )
    axis = (0, 1, 2) if joint else (1, 2)
    try:
        s1, s2, finite = da.compute(
            data.sum(axis=axis),
            (data * data).sum(axis=axis),
            da.isfinite(data).all(),
            scheduler="threads",
        )
    except Exception as err:
        raise DataError(
            f"could not read the pixels of '{source.path}' ({type(err).__name__}: {err}); "
            "the file may be corrupt or truncated: re-export it"
        ) from err
    if not bool(finite):
        raise DataError(
            f"image '{source.path}' contains NaN or infinite values; replace them (e.g. "
            "with 0 or the image minimum) before training or predicting"
        )
    n = data.size / (1 if joint else source.n_channels)
    mean = np.atleast_1d(s1 / n)
    var = np.maximum(np.atleast_1d(s2 / n) - mean * mean, 0.0)
    return mean.tolist(), np.sqrt(var).tolist()


def pool_statistics(
    stats: list[tuple[list[float], list[float], int]],
) -> tuple[list[float], list[float]]:
    """Combine per-image means/stds weighted by pixel counts."""
    w = np.array([n for _, _, n in stats], dtype=np.float64)[:, None]
    means = np.array([m for m, _, _ in stats])
    stds = np.array([s for _, s, _ in stats])
    mean = (w * means).sum(0) / w.sum()
    var = (w * (stds**2 + means**2)).sum(0) / w.sum() - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist()


def joint_channels(axes: str) -> bool:
    # colour images (YXC) are normalised over all channels together to keep their hues
    return axes == "YXC"
