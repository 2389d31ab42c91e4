"""Finding, verifying and loading pretrained network weights, offline first."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from convpaint.errors import WeightsError

__all__ = [
    "WEIGHTS_ENV",
    "digest",
    "load_vgg16_state",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a folder with weight files (e.g. on an HPC share).
WEIGHTS_ENV = "CONVPAINT_WEIGHTS_DIR"

_VGG16_BUNDLED = "vgg16_imagenet1k_v1_block1-2.npz"
_VGG16_BUNDLED_KEYS = {0, 2, 5, 7}
#: File names a full (or features-only) VGG16 ImageNet state dict is known by.
_VGG16_FILES = ("vgg16-397923af.pth", "vgg16_features_imagenet1k_v1.pth")
_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def digest(state: Mapping[str, np.ndarray], keys: Iterable[str]) -> str:
    """SHA-256 over the named float32 tensors (name and bytes, in sorted order).

    Two files holding the same numbers give the same digest, whatever their
    container, so a model trained with the bundled slice accepts the full file.
    """
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key], dtype=np.float32).tobytes())
    return h.hexdigest()


def _bundled() -> dict[str, np.ndarray]:
    ref = resources.files("convpaint") / "weights" / _VGG16_BUNDLED
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}


def _load_torch_file(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"weights file '{path}' could not be read as a torch state dict ({err}); "
            "re-download it or point `weights:` at a valid file"
        ) from err
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"weights file '{path}' holds a {type(state).__name__}, not a state dict"
        )
    out = {}
    for k, v in state.items():
        key = str(k)
        if key.startswith("module."):
            key = key[len("module.") :]
        if hasattr(v, "detach"):
            out[key] = v.detach().cpu().float().numpy()
    return out


def _candidates(configured: Path | None) -> list[Path]:
    paths: list[Path] = []
    if configured is not None:
        paths.append(configured)
        return paths
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        paths.extend(Path(env) / name for name in _VGG16_FILES)
    try:
        import torch.hub

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        paths.extend(hub / name for name in _VGG16_FILES)
    except Exception as err:  # torch missing or broken hub dir: simply one place fewer
        logger.debug("torch hub cache not available: %s", err)
    return paths


def _download() -> dict[str, np.ndarray]:
    import torch.hub

    try:
        state = torch.hub.load_state_dict_from_url(
            _VGG16_URL, map_location="cpu", check_hash=True, progress=False
        )
    except Exception as err:
        raise WeightsError(f"download of {_VGG16_URL} failed: {err}") from err
    return {k: v.float().numpy() for k, v in state.items()}


def load_vgg16_state(
    indices: Iterable[int], weights: Path | None = None
) -> dict[str, np.ndarray]:
    """Return ``features.{i}.weight/bias`` arrays for the conv layers ``indices``.

    Search order: a configured ``weights`` file; the bundled slice (block 1 and 2)
    when it covers every layer; ``$CONVPAINT_WEIGHTS_DIR``; the torch hub cache; the
    official torchvision download (hash-checked).

    Raises
    ------
    WeightsError
        When no source has the layers, naming every place that was tried.
    """
    needed = sorted(set(indices))
    keys = [f"features.{i}.{p}" for i in needed for p in ("weight", "bias")]
    if weights is None and set(needed) <= _VGG16_BUNDLED_KEYS:
        return {k: v for k, v in _bundled().items() if k in keys}
    tried = []
    for path in _candidates(weights):
        tried.append(str(path))
        if path.is_file():
            state = _load_torch_file(path)
            missing = [k for k in keys if k not in state]
            if missing:
                raise WeightsError(
                    f"weights file '{path}' lacks {', '.join(missing[:4])}; it must be a "
                    "torchvision VGG16 state dict (features.* keys)"
                )
            logger.info("VGG16 weights from %s", path)
            return {k: state[k] for k in keys}
    if weights is not None:
        raise WeightsError(
            f"weights file '{weights}' does not exist; fix `weights:` in the vgg16 "
            "extractor settings, or remove it to use the bundled/cached weights"
        )
    try:
        state = _download()
    except WeightsError as err:
        raise WeightsError(
            f"VGG16 layers {needed} need the full ImageNet weights, which are not bundled "
            f"(only conv layers 0, 2, 5, 7 are). Looked in: {', '.join(tried) or 'nowhere'}; "
            f"then {err}. Fix: copy vgg16-397923af.pth (from {_VGG16_URL}) into a folder "
            f"and set {WEIGHTS_ENV} to it, or set `weights:` to the file"
        ) from err
    return {k: state[k] for k in keys}
