"""Pretrained VGG16 features on an image pyramid (torch is imported lazily)."""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PositiveInt, field_validator

from convpaint.config.features import ExtractorParams

from .registry import register_extractor
from .weights import digest, load_vgg16_state

__all__ = ["VGG16_LAYERS", "VGG16Extractor", "VGG16Params", "resolve_vgg16_layer"]

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
_BY_NAME = {name: idx for idx, _, name, _ in VGG16_LAYERS}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: z-scored intensities are mapped to the [0, 1]-like range VGG16 was trained on:
#: mean 0.45 and standard deviation 0.25, then ImageNet-normalised per channel.
_Z_TO_UNIT = (0.25, 0.45)


def resolve_vgg16_layer(layer: int | str) -> int:
    """Map ``3``, ``"3"``, ``"features.3"`` or ``"conv1_2"`` to a features index."""
    text = str(layer).strip()
    if text.startswith("features."):
        text = text[len("features.") :]
    if text.isdigit():
        idx = int(text)
        if 0 <= idx < len(VGG16_LAYERS):
            return idx
    elif text.lower() in _BY_NAME:
        return _BY_NAME[text.lower()]
    convs = ", ".join(f"{i}={n}" for i, k, n, _ in VGG16_LAYERS if k == "conv")
    raise ValueError(
        f"unknown VGG16 layer {layer!r}; use a features index 0-30 or a name such as "
        f"conv1_1, relu2_2, pool3 (conv layers: {convs})"
    )


class VGG16Params(ExtractorParams):
    """Parameters of the ``vgg16`` extractor (Convpaint's default network).

    Example::

        - name: vgg16
          layers: [conv1_1]        # or features indices: [0]
          scalings: [1, 2, 4]
    """

    name: Literal["vgg16"] = "vgg16"
    """Extractor name."""

    layers: list[int | str] = Field(default_factory=lambda: ["conv1_1"], min_length=1)
    """Layers whose outputs are features: torchvision ``features`` indices (0 = first
    conv, pre-activation) or names (conv1_1, relu1_1, conv1_2, pool1, conv2_1, ...).
    Layers after conv2_2 (index 7) need the full weights (see `weights`)."""

    scalings: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    """Pyramid levels: each image is block-mean downsampled by these factors, passed
    through the network, and the outputs upsampled back (bilinear) and concatenated."""

    weights: Path | None = None
    """A torchvision VGG16 state dict (.pth). Empty: bundled layers, then
    $CONVPAINT_WEIGHTS_DIR, the torch hub cache, then the official download."""

    rgb: bool | None = None
    """Feed 3-channel images to the network as one RGB image (true) or each channel
    separately as gray (false). Empty: RGB when the image has exactly 3 channels."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network runs; 'auto' uses a CUDA GPU when one is available."""

    deterministic: bool = True
    """Use convolution kernels whose results do not depend on the tile size, so tiled
    and whole-image predictions are bit-identical. False allows faster oneDNN kernels
    (useful for deep layers on CPU) at the price of ~1e-5 differences between tiles."""

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int | str]) -> list[int | str]:
        for layer in value:
            resolve_vgg16_layer(layer)
        return value

    @field_validator("scalings")
    @classmethod
    def _scalings(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"scalings {value} contain duplicates")
        return value


@register_extractor("vgg16", params=VGG16Params)
class VGG16Extractor:
    """VGG16 (ImageNet) layer outputs at several image scales, upsampled to full size."""

    def __init__(self, params: VGG16Params) -> None:
        self.params = params
        self._taps = sorted({resolve_vgg16_layer(layer) for layer in params.layers})
        self._depth = max(self._taps)
        self._convs = [
            i for i, k, _, _ in VGG16_LAYERS[: self._depth + 1] if k == "conv"
        ]
        self._scalings = list(params.scalings)

    # --- geometry -------------------------------------------------------------------
    def _tap_geometry(self) -> dict[int, tuple[int, int]]:
        """Receptive-field radius and stride (in pixels of the network input) per tap."""
        radius, stride, out = 0, 1, {}
        for idx, kind, _, _ in VGG16_LAYERS[: self._depth + 1]:
            if kind == "conv":
                radius += stride  # 3x3 kernel: one neighbour on each side
            elif kind == "pool":
                radius += stride  # 2x2 window
                stride *= 2
            if idx in self._taps:
                out[idx] = (radius, stride)
        return out

    @property
    def halo(self) -> int:
        worst = 0
        for s in self._scalings:
            for radius, stride in self._tap_geometry().values():
                # receptive field + bilinear support + one block of the downsampling
                worst = max(worst, s * (radius + stride + 1))
        return worst

    @property
    def alignment(self) -> int:
        strides = [stride for _, stride in self._tap_geometry().values()]
        return math.lcm(*(s * max(strides) for s in self._scalings))

    def _rgb(self, n_channels: int) -> bool:
        return self.params.rgb if self.params.rgb is not None else n_channels == 3

    def _groups(self, n_channels: int) -> list[str]:
        if self._rgb(n_channels):
            if n_channels != 3:
                raise ValueError(
                    f"vgg16 rgb: true needs 3 channels, the image has {n_channels}"
                )
            return ["rgb"]
        return [str(c) for c in range(n_channels)]

    def n_features(self, n_channels: int) -> int:
        widths = sum(VGG16_LAYERS[i][3] for i in self._taps)
        return len(self._groups(n_channels)) * len(self._scalings) * widths

    def feature_names(self, n_channels: int) -> list[str]:
        names = []
        for group in self._groups(n_channels):
            for s in self._scalings:
                for tap in self._taps:
                    _, _, lname, width = VGG16_LAYERS[tap]
                    names.extend(
                        f"vgg16|layer={lname}|scale={s}|ch={group}|unit={u}"
                        for u in range(width)
                    )
        return names

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_vgg16_state(self._convs, self.params.weights)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "weights_sha256": digest(self._state, self._state.keys()),
            "layers": self._taps,
        }

    # --- computation ----------------------------------------------------------------
    @cached_property
    def _device(self) -> Any:
        import torch

        want = self.params.device
        if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                from convpaint.errors import ConfigError

                raise ConfigError(
                    "vgg16 device: cuda was requested but torch sees no CUDA GPU; "
                    "set device: auto or cpu"
                )
            return torch.device("cuda")
        return torch.device("cpu")

    @cached_property
    def _params(self) -> dict[int, tuple[Any, Any]]:
        import torch

        dev = self._device
        return {
            i: (
                torch.from_numpy(self._state[f"features.{i}.weight"]).to(dev),
                torch.from_numpy(self._state[f"features.{i}.bias"]).to(dev),
            )
            for i in self._convs
        }

    def _forward(self, x: Any) -> dict[int, Any]:
        """Run features[0..depth] on (1, 3, H, W); return tap index -> output."""
        import torch.nn.functional as F

        taps = {}
        for idx, kind, _, _ in VGG16_LAYERS[: self._depth + 1]:
            if kind == "conv":
                w, b = self._params[idx]
                x = F.conv2d(x, w, b, padding=1)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2, 2)
            if idx in self._taps:
                taps[idx] = x
        return taps

    def __call__(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        import torch

        n_ch, height, width = image.shape
        if height % self.alignment or width % self.alignment:
            raise ValueError(
                f"vgg16 needs blocks whose size is a multiple of {self.alignment}, "
                f"got {height}x{width}; use convpaint.tiling to pad and tile images"
            )
        out = np.empty((height, width, self.n_features(n_ch)), dtype=np.float32)
        out_t = torch.from_numpy(out)
        scale, shift = _Z_TO_UNIT
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode(), _deterministic(self.params.deterministic):
            x_all = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            i = 0
            for group in self._groups(n_ch):
                if group == "rgb":
                    x = x_all[None]
                else:
                    x = x_all[int(group)][None, None].expand(1, 3, -1, -1)
                x = (((x * scale + shift) - mean) / std).to(self._device)
                for s in self._scalings:
                    for _, y in sorted(self._forward(_downsample(x, s)).items()):
                        factor = height // y.shape[-2]
                        n = y.shape[1]
                        coarse = y[0].permute(1, 2, 0).contiguous()  # (h, w, F)
                        if coarse.device.type == "cpu":
                            upsample_linear(coarse, factor, out=out_t[:, :, i : i + n])
                        else:
                            out_t[:, :, i : i + n] = upsample_linear(
                                coarse, factor
                            ).cpu()
                        i += n
        return out


def _downsample(x: Any, s: int) -> Any:
    """Block-mean downsampling by an integer factor (identity for 1)."""
    import torch.nn.functional as F

    return x if s == 1 else F.avg_pool2d(x, s, s)


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


class _deterministic:
    """Context that selects tile-size-independent convolution kernels."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        import torch

        self._mkldnn = torch.backends.mkldnn.enabled
        self._cudnn = (
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        if self.enabled:
            torch.backends.mkldnn.enabled = False
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.backends.mkldnn.enabled = self._mkldnn
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self._cudnn
