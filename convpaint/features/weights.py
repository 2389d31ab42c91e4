"""Finding, verifying and loading pretrained network weights, offline first."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from convpaint.errors import WeightsError

__all__ = [
    "WEIGHTS_ENV",
    "digest",
    "download_state",
    "features_keys",
    "load_network_state",
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


def features_keys(indices: Iterable[int]) -> list[str]:
    """``features.{i}.weight`` and ``.bias`` of the torchvision conv layers ``indices``."""
    return [f"features.{i}.{p}" for i in indices for p in ("weight", "bias")]


def _candidates(
    configured: Path | None, file_names: Sequence[str], tried: list[str]
) -> list[Path]:
    """The files to try, in order: the configured one alone; else
    ``$CONVPAINT_WEIGHTS_DIR/<file_names>`` (an unset variable is noted in ``tried``),
    then ``<torch hub>/checkpoints/<file_names>``."""
    if configured is not None:
        return [Path(configured)]
    paths: list[Path] = []
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
    return paths


def download_state(url: str) -> dict[str, np.ndarray]:
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


def _download() -> dict[str, np.ndarray]:
    """The official VGG16 checkpoint (hash-checked)."""
    return download_state(_VGG16_URL)


def load_network_state(
    label: str,
    keys: Iterable[str],
    *,
    file_names: Sequence[str],
    configured: Path | None = None,
    url: str | None = None,
    what: str,
    fix: str,
    download: Callable[[str], Mapping[str, np.ndarray]] = download_state,
    absent: str | None = None,
) -> dict[str, np.ndarray]:
    """Return the arrays ``keys`` of a network's state dict, offline first.

    Search order: the configured file; ``$CONVPAINT_WEIGHTS_DIR/<file_names>``; the
    torch hub cache (``<hub>/checkpoints/<file_names>``); the official download of
    ``url`` (hash-checked), when there is one.

    Parameters
    ----------
    label : str
        Network and extractor name for messages, e.g. ``"AlexNet (alexnet extractor)"``.
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
    download : callable, optional
        ``url -> state`` (:func:`download_state`).
    absent : str, optional
        Start of the error when nothing was found; default: ``label`` weights are
        not bundled with convpaint.

    Raises
    ------
    WeightsError
        When no place has the weights, naming every place that was tried.
    """
    keys = list(keys)
    tried: list[str] = []
    for path in _candidates(configured, file_names, tried):
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
    absent = absent or f"{label} weights are not bundled with convpaint"
    if url is None:
        raise WeightsError(
            f"{absent} and have no official download. Looked in: {where}. Fix: {fix}"
        )
    try:
        state = download(url)
    except WeightsError as err:
        raise WeightsError(
            f"{absent}. Looked in: {where}; then {err}. Fix: {fix}"
        ) from err
    missing = [k for k in keys if k not in state]
    if missing:
        raise WeightsError(f"the download {url} lacks {', '.join(missing[:4])}")
    return {k: state[k] for k in keys}


def load_vgg16_state(
    indices: Iterable[int], weights: Path | None = None
) -> dict[str, np.ndarray]:
    """Return ``features.{i}.weight/bias`` arrays for the conv layers ``indices``.

    Search order: a configured ``weights`` file; the bundled slice (block 1 and 2)
    when it covers every layer; ``$CONVPAINT_WEIGHTS_DIR``; the torch hub cache; the
    official torchvision download (hash-checked); see :func:`load_network_state`.

    Raises
    ------
    WeightsError
        When no source has the layers, naming every place that was tried.
    """
    needed = sorted(set(indices))
    keys = features_keys(needed)
    if weights is None and set(needed) <= _VGG16_BUNDLED_KEYS:
        return {k: v for k, v in _bundled().items() if k in keys}
    return load_network_state(
        "VGG16 (vgg16 extractor)",
        keys,
        file_names=_VGG16_FILES,
        configured=weights,
        url=_VGG16_URL,
        what="a torchvision VGG16 state dict (features.* keys)",
        fix=(
            f"copy vgg16-397923af.pth (from {_VGG16_URL}) into a folder and set "
            f"{WEIGHTS_ENV} to it, or set `weights:` to the file"
        ),
        download=lambda url: _download(),  # looked up late: it can be replaced
        absent=(
            f"VGG16 layers {needed} need the full ImageNet weights, which are not "
            "bundled (only conv layers 0, 2, 5, 7 are)"
        ),
    )
