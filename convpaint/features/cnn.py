"""Pretrained VGG16 features on an image pyramid (torch is imported lazily)."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from .registry import register_extractor
from .torchnet import _FeaturesExtractor, _NetworkParams, resolve_features_layer
from .weights import load_vgg16_state

__all__ = [
    "VGG16_LAYERS",
    "VGG16Extractor",
    "VGG16Params",
    "resolve_vgg16_layer",
    "upsample_linear",
]

#: torchvision ``vgg16().features``: (index, kind, name, out_channels)
VGG16_LAYERS: list[tuple[int, str, str, int]] = []


def _build_table() -> None:
    blocks = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    i = 0
    for b, (width, n) in enumerate(blocks, start=1):
        for k in range(1, n + 1):
            VGG16_LAYERS.append((i, "conv", f"conv{b}_{k}", width))
            VGG16_LAYERS.append((i + 1, "relu", f"relu{b}_{k}", width))
            i += 2
        VGG16_LAYERS.append((i, "pool", f"pool{b}", width))
        i += 1


_build_table()
#: (kernel, stride, padding) of each VGG16 layer: 3x3 convolutions, 2x2 max-pools.
_VGG16_WINDOWS = tuple(
    {"conv": (3, 1, 1), "relu": (1, 1, 0), "pool": (2, 2, 0)}[kind]
    for _, kind, _, _ in VGG16_LAYERS
)
_VGG16_CONVS = ", ".join(f"{i}={n}" for i, k, n, _ in VGG16_LAYERS if k == "conv")


def resolve_vgg16_layer(layer: int | str) -> int:
    """Map ``3``, ``"3"``, ``"features.3"`` or ``"conv1_2"`` to a features index."""
    return resolve_features_layer(
        layer,
        VGG16_LAYERS,
        "VGG16",
        f"such as conv1_1, relu2_2, pool3 (conv layers: {_VGG16_CONVS})",
    )


class VGG16Params(_NetworkParams):
    """Parameters of the ``vgg16`` extractor (Convpaint's default network).

    Example::

        - name: vgg16
          layers: [conv1_1]        # or features indices: [0]
          scalings: [1, 2, 4]
    """

    resolve_layer = staticmethod(resolve_vgg16_layer)

    name: Literal["vgg16"] = "vgg16"
    """Extractor name."""

    layers: list[int | str] = Field(default_factory=lambda: ["conv1_1"], min_length=1)
    """Layers whose outputs are features: torchvision ``features`` indices (0 = first
    conv, pre-activation) or names (conv1_1, relu1_1, conv1_2, pool1, conv2_1, ...).
    Layers after conv2_2 (index 7) need the full weights (see `weights`)."""

    weights: Path | None = None
    """A torchvision VGG16 state dict (.pth). Empty: bundled layers, then
    $CONVPAINT_WEIGHTS_DIR, the torch hub cache, then the official download."""


@register_extractor("vgg16", params=VGG16Params)
class VGG16Extractor(_FeaturesExtractor):
    """VGG16 (ImageNet) layer outputs at several image scales, upsampled to full size."""

    NAME = "vgg16"
    LAYERS = VGG16_LAYERS
    WINDOWS = _VGG16_WINDOWS

    def _tap_halo(self, scaling: int, stride: int, lo: int, hi: int) -> int:
        # 3x3 convolutions and 2x2 pools reach furthest on the high side: ``hi`` is
        # the receptive-field radius; + bilinear support + one block of downsampling
        return scaling * (hi + stride + 1)

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_vgg16_state(self._convs, self.params.weights)

    def _upsample(
        self, coarse: Any, factor: int, offset: float, size: tuple[int, int], out: Any
    ) -> Any:
        # on the half-pixel grid (offset factor / 2), as VGG16 features always were
        return upsample_linear(coarse, factor, out)


def _phases(factor: int) -> list[tuple[int, float]]:
    """For each output phase ``p`` of linear upsampling by ``factor`` (half-pixel
    centres): the offset of the lower source pixel and the weight of the upper one."""
    out = []
    for p in range(factor):
        pos = (p + 0.5) / factor - 0.5
        lo = math.floor(pos)
        out.append((lo, pos - lo))
    return out


def upsample_linear(y: Any, factor: int, out: Any | None = None) -> Any:
    """Bilinear upsampling of channels-last ``(h, w, F)`` into ``(h*f, w*f, F)``.

    Separable, edge-clamped, computed phase by phase with slices: each output value
    is the same two-term expression wherever the block starts (as long as the
    block's origin is a multiple of ``factor``), so tiles match the whole image
    exactly (torch's own interpolate does not guarantee that).
    """
    import torch

    h, w, n = y.shape
    if out is None:
        out = torch.empty((h * factor, w * factor, n), dtype=y.dtype, device=y.device)
    if factor == 1:
        out.copy_(y)
        return out
    # clamp at the edges: one replicated row/column on each side
    padded = torch.cat([y[:1], y, y[-1:]], dim=0)
    padded = torch.cat([padded[:, :1], padded, padded[:, -1:]], dim=1)
    rows = torch.empty((h, factor, w + 2, n), dtype=y.dtype, device=y.device)
    for p, (lo, wt) in enumerate(_phases(factor)):
        torch.lerp(
            padded[1 + lo : 1 + lo + h], padded[2 + lo : 2 + lo + h], wt, out=rows[:, p]
        )
    rows = rows.view(h * factor, w + 2, n)
    for p, (lo, wt) in enumerate(_phases(factor)):
        out[:, p::factor] = torch.lerp(
            rows[:, 1 + lo : 1 + lo + w], rows[:, 2 + lo : 2 + lo + w], wt
        )
    return out
