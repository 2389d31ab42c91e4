"""FeaturePipeline: normalise a block, run every extractor, lay out for the classifier."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import ModelBundleError

from .registry import build_extractor

__all__ = ["FeaturePipeline", "Normalization"]


class Normalization:
    """Per-channel (or joint, for colour images) mean and standard deviation."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        std32 = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.where(std32 > 0, std32, np.float32(1.0))

    def __call__(self, block: NDArray) -> NDArray[np.float32]:
        """Return ``(block - mean) / std`` as float32."""
        out = np.asarray(block, dtype=np.float32) - self.mean
        out /= self.std
        return out

    def as_dict(self) -> dict[str, list[float]]:
        """JSON form (what the model file stores)."""
        return {"mean": self.mean.ravel().tolist(), "std": self.std.ravel().tolist()}


class FeaturePipeline:
    """The concatenated extractors of one model, for images with ``n_channels``.

    Parameters
    ----------
    specs : list of extractor params models
        As validated by :class:`convpaint.config.FeatureConfig`.
    n_channels : int
        Channels of the (canonical ``(C, Y, X)``) images.
    """

    def __init__(self, specs: Sequence[Any], n_channels: int) -> None:
        self.specs = list(specs)
        self.n_channels = n_channels
        self.extractors = [build_extractor(spec) for spec in self.specs]
        self.widths = [e.n_features(n_channels) for e in self.extractors]
        self.n_features = sum(self.widths)
        self.halo = max(e.halo for e in self.extractors)
        self.alignment = math.lcm(*(e.alignment for e in self.extractors))

    def feature_names(self) -> list[str]:
        """One name per feature column."""
        names: list[str] = []
        for e in self.extractors:
            names.extend(e.feature_names(self.n_channels))
        return names

    def fingerprints(self) -> list[dict[str, Any]]:
        """What identifies each extractor's numbers (weights hashes, implementation)."""
        return [e.fingerprint() for e in self.extractors]

    def check_against(
        self, n_features: int, fingerprints: list[dict[str, Any]]
    ) -> None:
        """Refuse to predict when features differ from those the model was trained on."""
        if n_features != self.n_features:
            raise ModelBundleError(
                f"the model was trained with {n_features} features but its extractors now "
                f"produce {self.n_features} for {self.n_channels}-channel images; the input "
                "differs from the training data or convpaint changed: retrain the model"
            )
        now = self.fingerprints()
        for i, (old, new) in enumerate(zip(fingerprints, now, strict=True)):
            if old != new:
                raise ModelBundleError(
                    f"extractor {i} ({self.specs[i].name}) differs from training: stored "
                    f"{old}, found {new}; use the same weights file as for training or retrain"
                )

    def compute(
        self,
        block: NDArray[np.float32],
        trim: tuple[slice, slice],
        mask: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.float32]:
        """Features of the trimmed region of a normalised extended block.

        Parameters
        ----------
        block : array of shape ``(C, Ye, Xe)``, float32
            Normalised extended block (see :mod:`convpaint.tiling`).
        trim : (slice, slice)
            The tile inside the block.
        mask : bool array of the tile's shape, optional
            Only these pixels are returned (training).

        Returns
        -------
        array of shape ``(n_pixels, F)``, float32, C-contiguous
            Row-major pixels of the tile (or of ``mask``), the layout the forest reads.
        """
        ys, xs = trim
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        n = int(mask.sum()) if mask is not None else shape[0] * shape[1]
        out = np.empty((n, self.n_features), dtype=np.float32)
        # a (Y, X, F) view of the same memory: the tile is copied straight into place
        grid = (
            out.reshape(shape[0], shape[1], self.n_features) if mask is None else None
        )
        f0 = 0
        for extractor, width in zip(self.extractors, self.widths, strict=True):
            feats = extractor(block)[ys, xs]
            if grid is None:
                out[:, f0 : f0 + width] = feats[mask]
            else:
                grid[:, :, f0 : f0 + width] = feats
            del feats
            f0 += width
        return out
