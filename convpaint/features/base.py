"""FeatureExtractor: the protocol every extractor implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["FeatureExtractor"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """A pure, deterministic function from an image block to per-pixel features.

    The block is normalised float32 of shape ``(C, Y, X)`` whose origin is a multiple
    of :attr:`alignment` in image coordinates and whose size is a multiple of it; the
    result is channels-last, shape ``(Y, X, F)``: the pixel-major layout the forest
    reads, so features are copied once, in contiguous rows. Values within :attr:`halo` pixels of the block's
    edge may be wrong; the tiler trims them.
    """

    @property
    def halo(self) -> int:
        """Context in pixels each output pixel depends on, on each side."""
        ...

    @property
    def alignment(self) -> int:
        """Block origins and sizes must be multiples of this (pyramid grids)."""
        ...

    def n_features(self, n_channels: int) -> int:
        """Number of features for an image with ``n_channels`` channels."""
        ...

    def feature_names(self, n_channels: int) -> list[str]:
        """One name per feature, ``extractor|key=value|...``."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the numbers this extractor produces (e.g. a weights hash)."""
        ...

    def __call__(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        """Compute features of one normalised block."""
        ...


def crop_into(
    features: NDArray[np.float32],
    region: tuple[slice, slice] | None,
    out: NDArray[np.float32] | None,
) -> NDArray[np.float32]:
    """``features`` of a whole block, as an extractor's ``(region=, out=)`` call
    returns them: cut to ``region``, then written into ``out`` (and returned) or
    returned as a new C-contiguous array."""
    if region is not None:
        features = features[region]
    if out is None:
        return np.ascontiguousarray(features)
    out[...] = features
    return out
