"""What a classifier reads of each object: forest features or CNN patches.

One :class:`ObjectInputs` serves a whole training or prediction run, so every image
is measured the same way: the pixel-feature pipeline is fixed by the first image at
training (or by the model at prediction), the patch size by the training objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.config.objects import (
    ObjectCNNConfig,
    ObjectFeatureConfig,
    ObjectForestConfig,
)
from convpaint.errors import ModelBundleError

from .features import (
    ObjectGeometry,
    channel_statistics,
    feature_names,
    measure_features,
)
from .io import Volume

__all__ = ["ObjectInputs"]


@dataclass
class ObjectInputs:
    """Features (forest) or patches (network) of the objects of one image at a time.

    ``pixel`` is the stored description of the pixel-feature pipeline: None before
    the first image at training (then filled in), or the model's at prediction.
    """

    classifier: ObjectForestConfig | ObjectCNNConfig
    block: Sequence[int]
    threads: int
    pixel: dict[str, Any] | None = None

    def names(self, n_channels: int, ndim: int) -> list[str]:
        """Feature column names (forest only)."""
        assert isinstance(self.classifier, ObjectForestConfig)
        names = feature_names(self.classifier.features, n_channels, ndim)
        if self.pixel is not None:
            names += list(self.pixel["feature_names"])
        return names

    def __call__(
        self, vol: Volume, labels: Any, geometry: ObjectGeometry
    ) -> NDArray[np.float32]:
        """Forest features ``(n, F)`` or patches ``(n, C + 1, *[size] * ndim)``."""
        if isinstance(self.classifier, ObjectForestConfig):
            return self.features(vol, labels, geometry, self.classifier.features)
        from .cnn import extract_crops

        size = self.classifier.crop_size
        assert isinstance(size, int)  # "auto" is resolved before patches are cut
        return extract_crops(
            vol.data,
            labels,
            geometry,
            size,
            block=self.block,
            normalization=channel_statistics(vol.data),
            context_dilation=self.classifier.context_dilation,
        )

    def features(
        self,
        vol: Volume,
        labels: Any,
        geometry: ObjectGeometry,
        config: ObjectFeatureConfig,
    ) -> NDArray[np.float32]:
        """Shape and intensity measurements, then the means of pixel features."""
        norm = channel_statistics(vol.data) if config.normalize == "image" else None
        x = measure_features(
            vol.data,
            labels,
            geometry,
            config,
            block=self.block,
            normalization=norm,
            source=vol.path,
        )
        if config.pixel_features is None:
            return x
        from convpaint.runtime import thread_budget

        from .pixel_features import (
            build_pixel_pipeline,
            describe_pixel_pipeline,
            pixel_feature_means,
            pixel_feature_names,
        )

        pixel = config.pixel_features
        with thread_budget(self.threads):
            pipeline = build_pixel_pipeline(pixel, vol.source, stored=self.pixel)
            if self.pixel is None:
                self.pixel = {
                    **describe_pixel_pipeline(pipeline, pixel.normalize),
                    "feature_names": pixel_feature_names(pipeline),
                }
            means = pixel_feature_means(
                vol.source, labels, geometry, pipeline, normalize=pixel.normalize
            )
        return np.hstack([x, means])


def stored_pixel(meta: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The model's pixel-feature description (None when it has none), checked."""
    stored = meta.get("pixel_features")
    if stored is None:
        return None
    keys = ("extractors", "dims", "normalize", "n_features", "fingerprints")
    if not isinstance(stored, dict) or any(
        k not in stored for k in (*keys, "feature_names")
    ):
        raise ModelBundleError(
            f"model '{path}' describes its pixel features incompletely; retrain it "
            "with this convpaint"
        )
    return stored
