"""Pretrained VGG16 features on an image pyramid (torch is imported lazily)."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from .base import crop_into
from .registry import register_extractor
from .torchnet import (
    _IMAGENET_MEAN,
    _IMAGENET_STD,
    _Z_TO_UNIT,
    _FeaturesExtractor,
    _NetworkParams,
    resolve_features_layer,
)
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

    implementation: Literal["fast", "torch"] = "fast"
    """How conv1_1-only features (layers: [conv1_1], the Convpaint default) are
    computed: 'fast' (compiled kernels on the CPU writing straight into the feature
    layout, gray folded into the first layer; several times faster, no torch) or
    'torch' (the network in torch, the implementation of convpaint 0.1, which its
    models keep using). The numbers agree to float rounding. Other layers always
    run in torch."""


@register_extractor("vgg16", params=VGG16Params)
class VGG16Extractor(_FeaturesExtractor):
    """VGG16 (ImageNet) layer outputs at several image scales, upsampled to full size."""

    NAME = "vgg16"
    LAYERS = VGG16_LAYERS
    WINDOWS = _VGG16_WINDOWS
    #: ``__call__`` takes ``region=`` and ``out=`` (see :meth:`__call__`).
    supports_region = True

    def _tap_halo(self, scaling: int, stride: int, lo: int, hi: int) -> int:
        # 3x3 convolutions and 2x2 pools reach furthest on the high side: ``hi`` is
        # the receptive-field radius; + bilinear support + one block of downsampling
        return scaling * (hi + stride + 1)

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_vgg16_state(self._convs, self.params.weights)

    @property
    def _fast(self) -> bool:
        """Whether the compiled conv1_1 path computes the features."""
        return self.params.implementation == "fast" and self._taps == [0]

    def fingerprint(self) -> dict[str, Any]:
        out = super().fingerprint()
        if self._fast:
            out["implementation"] = "numba-conv1_1"
            out["version"] = 1
        return out

    def __call__(
        self,
        image: NDArray[np.float32],
        *,
        region: tuple[slice, slice] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Features of a normalised block.

        Parameters
        ----------
        image : array of shape ``(C, Y, X)``, float32
            The block (origin and size multiples of :attr:`alignment`).
        region : (slice, slice), optional
            Only this part of the block is returned (and, on the fast path,
            computed).
        out : array of shape ``(h, w, F)``, float32, optional
            Where to write the result (``h, w``: the region's size); may be a view
            with strided rows and pixels, each pixel's ``F`` features adjacent.

        Returns
        -------
        array of shape ``(h, w, F)``, float32
            ``out`` if given, else a new C-contiguous array.
        """
        image = np.asarray(image, dtype=np.float32)
        if self._fast:
            return self._call_fast(image, region, out)
        return crop_into(super().__call__(image), region, out)

    @cached_property
    def _folded(self) -> dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]]:
        """conv1_1 applied to z-scored input: ``{channels: (weights, bias)}``.

        The network sees ``((z * 0.25 + 0.45) - mean_c) / std_c`` per RGB channel
        ``c``; that affine map is folded into the layer, and for gray input (1
        channel, replicated to RGB) so are the three colour channels (their
        kernels summed). Exact up to rounding except in the one-pixel zero-padding
        ring at the block edge, which lies in the halo.
        """
        w = self._state["features.0.weight"].astype(np.float64)  # (64, 3, 3, 3)
        b = self._state["features.0.bias"].astype(np.float64)
        scale, shift = _Z_TO_UNIT
        mean = np.asarray(_IMAGENET_MEAN)[None, :, None, None]
        std = np.asarray(_IMAGENET_STD)[None, :, None, None]
        w_z = w * scale / std  # per unit of z
        bias = b + (w * (shift - mean) / std).sum(axis=(1, 2, 3))
        rgb = w_z.transpose(1, 2, 3, 0).reshape(27, -1)  # row 9 c + 3 dy + dx
        gray = w_z.sum(axis=1).transpose(1, 2, 0).reshape(9, -1)
        b32 = bias.astype(np.float32)
        return {
            3: (np.ascontiguousarray(rgb, dtype=np.float32), b32),
            1: (np.ascontiguousarray(gray, dtype=np.float32), b32),
        }

    def _call_fast(
        self,
        image: NDArray[np.float32],
        region: tuple[slice, slice] | None,
        out: NDArray[np.float32] | None,
    ) -> NDArray[np.float32]:
        from . import convops

        n_ch, height, width = image.shape
        if height % self.alignment or width % self.alignment:
            raise ValueError(
                f"{self.NAME} needs blocks whose size is a multiple of {self.alignment}, "
                f"got {height}x{width}; use convpaint.tiling to pad and tile images"
            )
        ys, xs = region if region is not None else (slice(None), slice(None))
        y0, y1, _ = ys.indices(height)
        x0, x1, _ = xs.indices(width)
        n_feat = self.n_features(n_ch)
        if out is None:
            out = np.empty((y1 - y0, x1 - x0, n_feat), dtype=np.float32)
        elif out.shape != (y1 - y0, x1 - x0, n_feat) or out.dtype != np.float32:
            raise ValueError(
                f"{self.NAME}: out must be float32 of shape "
                f"{(y1 - y0, x1 - x0, n_feat)}, got {out.dtype} {out.shape}"
            )
        window = np.array([y0, y1, x0, x1], dtype=np.int64)
        i = 0
        for group in self._groups(n_ch):
            x = image if group == "rgb" else image[int(group)][None]
            x = np.ascontiguousarray(x)
            weights, bias = self._folded[x.shape[0]]
            n = bias.shape[0]
            for s in self._scalings:
                dst = out[:, :, i : i + n]
                if s == 1:
                    convops.conv3x3(x, weights, bias, window, dst)
                else:
                    h, w = height // s, width // s
                    small = np.empty((x.shape[0], h, w), np.float32)
                    convops.downsample_mean(x, s, small)
                    coarse = np.empty((h, w, n), np.float32)
                    whole = np.array([0, h, 0, w], dtype=np.int64)
                    convops.conv3x3(small, weights, bias, whole, coarse)
                    lows, wts = convops.phases(s)
                    convops.upsample_linear(coarse, s, lows, wts, window, dst)
                i += n
        return out


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
