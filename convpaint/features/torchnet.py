"""Machinery shared by the pretrained-network extractors (torch is imported lazily).

:class:`_NetworkParams` holds the settings every network extractor has;
:class:`_NetworkExtractor` does the pyramid, the channel groups, the upsampling of
each tap back to full size, the names and the fingerprint; :class:`_FeaturesExtractor`
adds the plain ``conv / relu / max-pool`` stacks of torchvision's ``features``
(VGG16, AlexNet), described by a layer table.

Strided layers need not centre their output samples on the half-pixel grid: each
tap's receptive field is tracked layer by layer (:func:`receptive_fields`); it gives
the sample centres and the halo. Features are upsampled with
:func:`upsample_linear_offset`, bilinear interpolation at the true centres, phase by
phase with slices, so every pixel's value is the same expression wherever a block
starts (blocks start at multiples of ``scaling x stride``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PositiveInt, field_validator

from convpaint.config.features import ExtractorParams

from .weights import digest

__all__ = [
    "receptive_fields",
    "resolve_features_layer",
    "upsample_linear_offset",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: z-scored intensities are mapped to the [0, 1]-like range the networks were trained
#: on: mean 0.45 and standard deviation 0.25, then ImageNet-normalised per channel.
_Z_TO_UNIT = (0.25, 0.45)

# --------------------------------------------------------------------------------------
# geometry and upsampling
# --------------------------------------------------------------------------------------


def receptive_fields(ops: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Cumulative geometry of a chain of ``(kernel, stride, padding)`` window layers.

    Returns, after each layer, ``(stride, lo, hi)``: output ``j`` depends on input
    pixels ``stride * j + lo`` .. ``stride * j + hi`` (negative or too large indices
    are padding). Its centre, in continuous coordinates where pixel ``i`` spans
    ``[i, i + 1)``, is ``stride * j + (lo + hi + 1) / 2``.
    """
    stride, lo, hi, out = 1, 0, 0, []
    for k, st, pad in ops:
        lo -= stride * pad
        hi += stride * (k - 1 - pad)
        stride *= st
        out.append((stride, lo, hi))
    return out


def _phases(factor: int, offset: float) -> list[tuple[int, float]]:
    """For each output phase ``p mod factor``: the offset of the lower coarse sample
    and the weight of the upper one (coarse ``j`` centred at ``factor * j + offset``)."""
    out = []
    for phase in range(factor):
        pos = (phase + 0.5 - offset) / factor
        lo = math.floor(pos)
        out.append((lo, pos - lo))
    return out


def _interpolate_axis(
    y: Any, axis: int, n: int, factor: int, offset: float, out: Any
) -> None:
    """Linear interpolation of ``y`` along ``axis`` (0 or 1) into ``n`` samples of ``out``."""
    import torch

    h = y.shape[axis]
    phases = _phases(factor, offset)
    counts = [len(range(r, n, factor)) for r in range(factor)]
    # replicate edge samples so every phase reads one contiguous slice (= clamping)
    pad_lo = max(0, -min(lo for lo, _ in phases))
    pad_hi = max(
        0, max(c + lo for (lo, _), c in zip(phases, counts, strict=True)) - (h - 1)
    )
    idx = torch.arange(-pad_lo, h + pad_hi, device=y.device).clamp_(0, h - 1)
    yp = y.index_select(axis, idx)
    for r, ((lo, wt), count) in enumerate(zip(phases, counts, strict=True)):
        if count == 0:
            continue
        a = yp.narrow(axis, pad_lo + lo, count)
        b = yp.narrow(axis, pad_lo + lo + 1, count)
        dst = out[r::factor] if axis == 0 else out[:, r::factor]
        if wt == 0.0:
            dst.copy_(a)
        else:
            torch.lerp(a, b, wt, out=dst)


def upsample_linear_offset(
    y: Any, factor: int, offset: float, size: tuple[int, int], out: Any | None = None
) -> Any:
    """Bilinear upsampling of channels-last ``(h, w, F)`` to ``(size[0], size[1], F)``.

    Coarse sample ``j`` is centred at ``factor * j + offset`` output pixels (continuous
    coordinates, output pixel ``p`` spans ``[p, p + 1)``) along both axes; samples
    beyond the coarse grid are clamped to its edge. With ``offset = factor / 2`` this
    is :func:`convpaint.features.cnn.upsample_linear` (to float rounding). Each value
    is one ``torch.lerp`` of two neighbouring samples with a weight that depends only
    on ``p mod factor`` (edges are replicated, so every phase reads one slice), so it
    is bit-identical wherever the block starts, as long as its origin is a multiple
    of ``factor``.
    """
    import torch

    h, w, n = y.shape
    height, width = size
    if out is None:
        out = torch.empty((height, width, n), dtype=y.dtype, device=y.device)
    if factor == 1 and offset == 0.5 and (h, w) == (height, width):
        out.copy_(y)
        return out
    rows = torch.empty((height, w, n), dtype=y.dtype, device=y.device)
    _interpolate_axis(y, 0, height, factor, offset, rows)
    _interpolate_axis(rows, 1, width, factor, offset, out)
    return out


def _downsample(x: Any, s: int) -> Any:
    """Block-mean downsampling by an integer factor (identity for 1)."""
    import torch.nn.functional as F

    return x if s == 1 else F.avg_pool2d(x, s, s)


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


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------


def resolve_features_layer(
    layer: int | str, table: Sequence[tuple[Any, ...]], label: str, hint: str
) -> int:
    """Map ``3``, ``"3"``, ``"features.3"`` or a layer name to a ``features`` index.

    ``table`` rows start ``(index, kind, name, ...)``; the error names ``label``
    and ends with ``hint`` (how the layers are named).
    """
    text = str(layer).strip()
    if text.startswith("features."):
        text = text[len("features.") :]
    if text.isdigit():
        idx = int(text)
        if 0 <= idx < len(table):
            return idx
    else:
        for row in table:
            if row[2] == text.lower():
                return row[0]
    raise ValueError(
        f"unknown {label} layer {layer!r}; use a features index 0-{len(table) - 1} "
        f"or a name {hint}"
    )


class _NetworkParams(ExtractorParams):
    """Settings shared by the pretrained-network extractors.

    Subclasses set ``name``, the ``layers`` default and ``resolve_layer`` (layer
    setting -> tap id, raising ValueError for unknown layers).
    """

    resolve_layer: ClassVar[Callable[[Any], int]]

    layers: list[int | str] = Field(min_length=1)
    """Layers whose outputs are features."""

    scalings: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    """Pyramid levels: each image is block-mean downsampled by these factors, passed
    through the network, and the outputs upsampled back (bilinear) and concatenated."""

    weights: Path | None = None
    """A state dict (.pth) with the network's weights. Empty: $CONVPAINT_WEIGHTS_DIR,
    then the torch hub cache (then the official download, where there is one)."""

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
    def _layers(cls, value: list[Any]) -> list[Any]:
        for layer in value:
            cls.resolve_layer(layer)
        return value

    @field_validator("scalings")
    @classmethod
    def _scalings(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"scalings {value} contain duplicates")
        return value


# --------------------------------------------------------------------------------------
# extractors
# --------------------------------------------------------------------------------------


class _NetworkExtractor:
    """Pyramid, groups, upsampling and bookkeeping shared by the network extractors.

    Subclasses set ``NAME`` and implement ``_tap_info(tap) -> (name, channels)``,
    ``_geometry() -> {tap: (stride, lo, hi)}`` (in network-input pixels, see
    :func:`receptive_fields`), ``_state`` (the arrays the fingerprint hashes) and
    ``_forward(x) -> {tap: (1, F, h, w) tensor}``. The taps are the sorted tap ids
    of the params' layers.
    """

    NAME = ""

    def __init__(self, params: _NetworkParams) -> None:
        self.params = params
        self._taps = sorted({params.resolve_layer(layer) for layer in params.layers})

    @property
    def _scalings(self) -> list[int]:
        return list(self.params.scalings)

    # --- geometry -------------------------------------------------------------------
    def _tap_halo(self, scaling: int, stride: int, lo: int, hi: int) -> int:
        """Context (input pixels) a tap's upsampled value needs on each side.

        A pixel interpolates between the two coarse samples around it (at most one
        ``stride`` away) and each depends on half the receptive field on either side
        of its centre; one more downsampled pixel of margin, all times the scaling.
        """
        return math.ceil(scaling * ((hi - lo + 1) / 2 + stride + 1))

    @property
    def halo(self) -> int:
        return max(
            self._tap_halo(s, *geom)
            for s in self._scalings
            for geom in self._geometry().values()
        )

    @property
    def alignment(self) -> int:
        stride = max(geom[0] for geom in self._geometry().values())
        return math.lcm(*(s * stride for s in self._scalings))

    def _geometry(self) -> dict[int, tuple[int, int, int]]:
        raise NotImplementedError

    def _tap_info(self, tap: int) -> tuple[str, int]:
        raise NotImplementedError

    # --- channels and names ---------------------------------------------------------
    def _rgb(self, n_channels: int) -> bool:
        return self.params.rgb if self.params.rgb is not None else n_channels == 3

    def _groups(self, n_channels: int) -> list[str]:
        if self._rgb(n_channels):
            if n_channels != 3:
                raise ValueError(
                    f"{self.NAME} rgb: true needs 3 channels, the image has {n_channels}"
                )
            return ["rgb"]
        return [str(c) for c in range(n_channels)]

    def n_features(self, n_channels: int) -> int:
        widths = sum(self._tap_info(t)[1] for t in self._taps)
        return len(self._groups(n_channels)) * len(self._scalings) * widths

    def feature_names(self, n_channels: int) -> list[str]:
        names = []
        for group in self._groups(n_channels):
            for s in self._scalings:
                for tap in self._taps:
                    lname, width = self._tap_info(tap)
                    names.extend(
                        f"{self.NAME}|layer={lname}|scale={s}|ch={group}|unit={u}"
                        for u in range(width)
                    )
        return names

    # --- weights --------------------------------------------------------------------
    @property
    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        state = self._state
        return {
            "weights_sha256": digest(state, state.keys()),
            "layers": list(self._taps),
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
                    f"{self.NAME} device: cuda was requested but torch sees no CUDA GPU; "
                    "set device: auto or cpu"
                )
            return torch.device("cuda")
        return torch.device("cpu")

    def _forward(self, x: Any) -> dict[int, Any]:
        raise NotImplementedError

    def _upsample(
        self, coarse: Any, factor: int, offset: float, size: tuple[int, int], out: Any
    ) -> Any:
        """Upsample one tap's ``(h, w, F)`` output to ``size`` (into ``out`` unless
        None); coarse sample ``j`` is centred at ``factor * j + offset``."""
        return upsample_linear_offset(coarse, factor, offset, size, out)

    def __call__(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        import torch

        n_ch, height, width = image.shape
        if height % self.alignment or width % self.alignment:
            raise ValueError(
                f"{self.NAME} needs blocks whose size is a multiple of {self.alignment}, "
                f"got {height}x{width}; use convpaint.tiling to pad and tile images"
            )
        geometry = self._geometry()
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
                    for tap, y in sorted(self._forward(_downsample(x, s)).items()):
                        stride, lo, hi = geometry[tap]
                        n = y.shape[1]
                        coarse = y[0].permute(1, 2, 0).contiguous()  # (h, w, F)
                        factor, offset = s * stride, s * (lo + hi + 1) / 2
                        if coarse.device.type == "cpu":
                            dst = out_t[:, :, i : i + n]
                            self._upsample(coarse, factor, offset, (height, width), dst)
                        else:
                            out_t[:, :, i : i + n] = self._upsample(
                                coarse, factor, offset, (height, width), None
                            ).cpu()
                        i += n
        return out


class _FeaturesExtractor(_NetworkExtractor):
    """A torchvision ``features`` stack of convolutions, ReLUs and max-pools.

    Subclasses set ``LAYERS`` (rows ``(index, kind, name, out_channels, ...)``, kind
    ``conv``, ``relu`` or ``pool``) and ``WINDOWS`` (``(kernel, stride, padding)`` of
    each row), and implement ``_state`` with ``features.{i}.weight/bias`` for the
    convolutions ``_convs``.
    """

    LAYERS: ClassVar[Sequence[tuple[Any, ...]]]
    WINDOWS: ClassVar[Sequence[tuple[int, int, int]]]

    def __init__(self, params: _NetworkParams) -> None:
        super().__init__(params)
        self._depth = max(self._taps)
        self._convs = [
            row[0] for row in self.LAYERS[: self._depth + 1] if row[1] == "conv"
        ]

    def _tap_info(self, tap: int) -> tuple[str, int]:
        return self.LAYERS[tap][2], self.LAYERS[tap][3]

    def _geometry(self) -> dict[int, tuple[int, int, int]]:
        fields = receptive_fields(self.WINDOWS[: self._depth + 1])
        return {tap: fields[tap] for tap in self._taps}

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
        n = self._depth + 1
        for (idx, kind, *_), (k, st, pad) in zip(
            self.LAYERS[:n], self.WINDOWS[:n], strict=True
        ):
            if kind == "conv":
                w, b = self._params[idx]
                x = F.conv2d(x, w, b, stride=st, padding=pad)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, k, st, pad)
            if idx in self._taps:
                taps[idx] = x
        return taps
