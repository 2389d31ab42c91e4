"""Means of convpaint's per-pixel features inside each object.

The pixel classifier's pipeline (:class:`convpaint.features.pipeline.FeaturePipeline`,
the same extractors, normalisation and halo) runs tile by tile over the tiles that
hold objects; each tile's features of object pixels are summed per object and divided
by the object's pixel count at the end. Pixel features are tile-exact and sums add
up, so the means do not depend on the tile size, and memory follows one tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.config import FeatureConfig
from convpaint.features.pipeline import FeaturePipeline

from .features import ObjectGeometry

__all__ = [
    "PREFIX",
    "build_pixel_pipeline",
    "describe_pixel_pipeline",
    "pixel_feature_means",
    "pixel_feature_names",
]

#: Prefix of the pixel-feature columns (``pixel_mean|filters|filter=gaussian|...``).
PREFIX = "pixel_mean|"
#: Tile edge in Y/X, and planes per tile for features with context along Z.
_TILE_YX = 512
_TILE_Z = 16


def build_pixel_pipeline(
    config: FeatureConfig, source: Any, *, stored: dict[str, Any] | None = None
) -> FeaturePipeline:
    """The pipeline for one image (an opened :class:`~convpaint.io.readers.ImageSource`).

    At training ``config`` may say ``extractors: auto`` (resolved from the image's
    colour) and ``dims: auto``; ``stored`` (what :func:`describe_pixel_pipeline`
    saved in the model) fixes both, the voxel size and the extractor fingerprints at
    prediction.

    Raises
    ------
    ConfigError
        Extractors that cannot run in the chosen mode.
    ModelBundleError
        The rebuilt extractors differ from the stored ones (other weights or code).
    """
    if stored is not None:
        specs = FeatureConfig.model_validate({"extractors": stored["extractors"]})
        pipeline = FeaturePipeline(
            specs.extractors,  # type: ignore[arg-type]
            source.n_channels,
            dims=stored["dims"],
            spacing=stored.get("spacing"),
        )
        pipeline.check_against(stored["n_features"], stored["fingerprints"])
        return pipeline
    dims = config.resolved_dims(source.is_stack)
    return FeaturePipeline(
        config.resolved(source.is_colour),
        source.n_channels,
        dims=dims,  # type: ignore[arg-type]
        spacing=source.spacing if dims != "planes" else None,
    )


def describe_pixel_pipeline(
    pipeline: FeaturePipeline, normalize: str
) -> dict[str, Any]:
    """What the model stores to rebuild the pipeline exactly (JSON-able)."""
    return {
        "extractors": [s.model_dump(mode="json") for s in pipeline.specs],
        "dims": pipeline.dims,
        "spacing": list(pipeline.spacing) if pipeline.spacing is not None else None,
        "normalize": normalize,
        "n_features": pipeline.n_features,
        "fingerprints": pipeline.fingerprints(),
    }


def pixel_feature_names(pipeline: FeaturePipeline) -> list[str]:
    """Column names: the pipeline's feature names behind :data:`PREFIX`."""
    return [PREFIX + n for n in pipeline.feature_names()]


def pixel_feature_means(
    source: Any,
    labels: Any,
    geometry: ObjectGeometry,
    pipeline: FeaturePipeline,
    *,
    normalize: str,
    tile: Sequence[int] | None = None,
) -> NDArray[np.float32]:
    """Mean of every pixel feature over each object's pixels.

    Parameters
    ----------
    source : ImageSource
        The opened image (``source.data`` is ``(T, C, Z, Y, X)``; frame 0 is used).
    labels : dask or numpy array of integers, shape ``(Y, X)`` or ``(Z, Y, X)``
        The instance mask ``geometry`` was measured on.
    geometry : ObjectGeometry
        Objects to measure (rows follow ``geometry.ids``; other ids are ignored).
    pipeline : FeaturePipeline
        From :func:`build_pixel_pipeline`.
    normalize : {"image", "plane"}
        Statistics the pixels are z-scored with, as in pixel classification.
    tile : sequence of int, optional
        ``(z, y, x)`` tile edges (the result does not depend on them).

    Returns
    -------
    ndarray of shape ``(n_objects, pipeline.n_features)``, float32

    Raises
    ------
    DataError
        Unreadable pixels or NaN/infinite values near an object.
    """
    from convpaint.engine import block_features
    from convpaint.normalization import image_statistics, joint_channels
    from convpaint.tiling import iter_tiles, plan_block

    ids = geometry.ids
    sums = np.zeros((len(ids), pipeline.n_features))
    if not len(ids):
        return sums.astype(np.float32)
    stats = image_statistics(
        source, joint=joint_channels(source), per_plane=normalize == "plane"
    )
    norm = stats.normalization(0)
    shape = tuple(int(s) for s in labels.shape)
    shape_zyx = shape if len(shape) == 3 else (1, *shape)
    if tile is None:
        tile = (1 if pipeline.dims == "planes" else _TILE_Z, _TILE_YX, _TILE_YX)
    tile = tuple(min(t, n) for t, n in zip(tile, shape_zyx, strict=True))
    low = geometry.low.min(axis=0)
    high = geometry.high.max(axis=0)
    if len(shape) == 2:
        low, high = np.array([0, *low]), np.array([1, *high])
    for spans in iter_tiles(shape_zyx, tile):
        # tiles outside the objects' overall box hold none of them
        if any(
            b <= lo or a >= hi for (a, b), lo, hi in zip(spans, low, high, strict=True)
        ):
            continue
        where = tuple(slice(a, b) for a, b in spans)
        lab = np.asarray(labels[where[1:] if len(shape) == 2 else where])
        lab = lab.reshape(tuple(b - a for a, b in spans)).astype(np.int64)
        pos = np.minimum(np.searchsorted(ids, lab), len(ids) - 1)
        mask = (lab > 0) & (ids[pos] == lab)
        if not mask.any():
            continue
        block = plan_block(spans, halo=pipeline.halo, alignment=pipeline.alignment)
        feats = block_features(source, 0, block, pipeline, norm, mask)
        rows = pos[mask]
        for f in range(pipeline.n_features):
            sums[:, f] += np.bincount(rows, weights=feats[:, f], minlength=len(ids))
    return (sums / geometry.area[:, None]).astype(np.float32)
