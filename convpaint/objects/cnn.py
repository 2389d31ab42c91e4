"""Object classification with a convolutional network on a patch around each object
(the method of Svetlana, Cazorla et al.).

Input per object: the image patch centred on the object's centroid (one plane per
channel, z-scored with the image's own statistics, zero outside the image;
optionally zero outside the object's dilated mask) plus one plane that is 1 on the
object's own pixels. The patch edge is set, or 1.4 times the objects' extent.
``small`` is a four-block network for 2D or 3D patches, trained from scratch;
``resnet18`` is torchvision's ResNet18 started from ImageNet weights the user names
(2D only). Training augments with flips, 90-degree rotations and optional intensity
jitter, and stops early on a held-out share of the objects.

Runs are reproducible: seeded initialisation, validation split, shuffling and
augmentation (numpy generator), deterministic torch algorithms, and a fixed thread
count. torch is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.config.objects import ObjectCNNConfig
from convpaint.errors import ModelBundleError, WeightsError

from .features import ObjectGeometry, iter_regions

__all__ = [
    "auto_crop_size",
    "build_network",
    "extract_crops",
    "load_state",
    "predict_cnn",
    "state_arrays",
    "train_cnn",
]

logger = logging.getLogger(__name__)

#: Objects per forward pass at prediction time.
_PREDICT_BATCH = 256
#: Patch edge over the objects' extent for ``crop_size: auto`` (Svetlana's factor).
CROP_FACTOR = 1.4


def auto_crop_size(low: NDArray[np.int64], high: NDArray[np.int64]) -> int:
    """Patch edge for ``crop_size: auto`` from the objects' bounding boxes
    ``(n, ndim)``: 1.4 times the median of their longest edge, rounded up to a
    multiple of 4, within 16..512.

    Svetlana sizes patches from the largest object; the typical object is used here
    because it measured better (``benchmarks/objects.py``: larger patches cost
    accuracy and time on the Ki67 sets) and one outlier cannot inflate it."""
    if not len(low):
        return 16
    extent = (high - low).max(axis=1)
    edge = CROP_FACTOR * float(np.median(extent))
    return int(min(512, max(16, 4 * math.ceil(edge / 4))))


def _dilated(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Pixels within ``radius`` (Euclidean) of the mask."""
    from scipy import ndimage as ndi

    if radius == 0 or not mask.any():
        return mask
    return ndi.distance_transform_edt(~mask) <= radius


def extract_crops(
    data: Any,
    labels: Any,
    geometry: ObjectGeometry,
    crop_size: int,
    *,
    block: Sequence[int],
    normalization: tuple[NDArray[np.float64], NDArray[np.float64]],
    context_dilation: int | None = None,
) -> NDArray[np.float32]:
    """Patches of shape ``(n_objects, C + 1, *[crop_size] * ndim)`` centred on objects.

    The last channel marks the object's own pixels. With ``context_dilation``, image
    pixels farther than that from the object are set to 0 (the image's mean). Reading
    is grouped by block, as in :func:`convpaint.objects.features.measure_features`;
    patches never depend on it.
    """
    ndim = len(geometry.shape)
    n_channels = int(data.shape[0])
    start = np.round(geometry.centroid).astype(np.int64) - crop_size // 2
    stop = start + crop_size
    out = np.zeros((len(geometry), n_channels + 1, *[crop_size] * ndim), np.float32)
    mean, std = normalization
    bshape = (-1, *[1] * ndim)
    for region, group in iter_regions(geometry.shape, start, stop, block):
        lab = np.asarray(labels[region])
        img = (
            np.asarray(data[(slice(None), *region)], np.float64) - mean.reshape(bshape)
        ) / std.reshape(bshape)
        origin = np.array([s.start for s in region])
        for row in group:
            lo = np.maximum(start[row], origin)
            hi = np.minimum(stop[row], origin + np.array(lab.shape))
            src = tuple(
                slice(int(a), int(b))
                for a, b in zip(lo - origin, hi - origin, strict=True)
            )
            dst = tuple(
                slice(int(a), int(b))
                for a, b in zip(lo - start[row], hi - start[row], strict=True)
            )
            own = lab[src] == geometry.ids[row]
            patch = img[(slice(None), *src)]
            if context_dilation is not None:
                patch = patch * _dilated(own, context_dilation)
            out[(row, slice(0, n_channels), *dst)] = patch
            out[(row, n_channels, *dst)] = own
    return out


# --------------------------------------------------------------------------- networks
def _check_arch(arch: dict[str, Any]) -> None:
    ok = (
        isinstance(arch, dict)
        and arch.get("name") in ("small", "resnet18")
        and all(
            isinstance(arch.get(k), int) for k in ("ndim", "in_channels", "n_classes")
        )
        and arch["ndim"] in (2, 3)
        and 1 <= arch["in_channels"] <= 64
        and 2 <= arch["n_classes"] <= 1000
        and (
            arch["name"] != "small"
            or (isinstance(arch.get("width"), int) and 1 <= arch["width"] <= 256)
        )
        and (arch["name"] != "resnet18" or arch["ndim"] == 2)
    )
    if not ok:
        raise ModelBundleError(f"unknown or invalid network description {arch!r}")


def build_network(arch: dict[str, Any]) -> Any:
    """A torch module from a JSON-able description (the model file stores it).

    ``{"name": "small", "ndim": 2|3, "in_channels": C, "n_classes": K, "width": W}``
    or ``{"name": "resnet18", "ndim": 2, "in_channels": C, "n_classes": K}``.

    Raises
    ------
    ModelBundleError
        An unknown or out-of-range description.
    """
    import torch
    from torch import nn

    _check_arch(arch)
    if arch["name"] == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=arch["n_classes"])
        net.conv1 = nn.Conv2d(arch["in_channels"], 64, 7, 2, 3, bias=False)
        return net
    conv, bn, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        if arch["ndim"] == 2
        else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    widths = [arch["width"] * m for m in (1, 2, 4, 4)]
    layers: list[torch.nn.Module] = []
    previous = arch["in_channels"]
    for w in widths:
        layers += [
            conv(previous, w, 3, padding=1, bias=False),
            bn(w),
            nn.ReLU(),
            pool(2),
        ]
        previous = w
    pooling = nn.AdaptiveAvgPool2d(1) if arch["ndim"] == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(
        *layers,
        pooling,
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(previous, arch["n_classes"]),
    )


def state_arrays(net: Any) -> dict[str, NDArray]:
    """The module's state as plain numpy arrays (what the model file stores)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def load_state(net: Any, arrays: dict[str, NDArray]) -> Any:
    """Load arrays into ``net`` after checking names, shapes and dtypes match exactly.

    Raises
    ------
    ModelBundleError
        Missing, extra or mis-shaped tensors.
    """
    import torch

    expected = net.state_dict()
    if set(expected) != set(arrays):
        extra = sorted(set(arrays) - set(expected))[:3]
        missing = sorted(set(expected) - set(arrays))[:3]
        raise ModelBundleError(
            f"network tensors do not match its description (missing {missing}, extra {extra})"
        )
    state = {}
    for key, ref in expected.items():
        arr = arrays[key]
        if tuple(arr.shape) != tuple(ref.shape) or str(arr.dtype) != str(
            ref.dtype
        ).replace("torch.", ""):
            raise ModelBundleError(
                f"network tensor '{key}' has shape {arr.shape} / {arr.dtype}, expected "
                f"{tuple(ref.shape)} / {ref.dtype}"
            )
        state[key] = torch.from_numpy(np.require(arr, requirements="C"))
    net.load_state_dict(state, strict=True)
    return net


def _resnet_start(arch: dict[str, Any], weights: Path) -> tuple[Any, str]:
    """ResNet18 with ImageNet weights, first layer adapted to the input channels."""
    import torch

    if not weights.is_file():
        raise WeightsError(
            f"ResNet18 weights '{weights}' do not exist; download torchvision's "
            "resnet18-f37072fd.pth once and point objects.classifier.weights to it"
        )
    from convpaint.features.weights import _load_torch_file

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    # torch.load(weights_only=True) with convpaint's messages; arrays come back as numpy
    state = {k: torch.from_numpy(v) for k, v in _load_torch_file(weights).items()}
    net = build_network(arch)
    own = net.state_dict()
    if "conv1.weight" not in state:
        raise WeightsError(
            f"'{weights}' is not a ResNet18 state dict (no conv1.weight)"
        )
    loaded = {}
    for key, value in state.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"'{weights}' does not match torchvision's ResNet18 (tensor '{key}'); "
                "use the ImageNet weights file resnet18-*.pth"
            )
        loaded[key] = value
    rgb = state["conv1.weight"]
    if tuple(getattr(rgb, "shape", ())) != (64, 3, 7, 7):
        raise WeightsError(
            f"'{weights}' does not match torchvision's ResNet18 (conv1.weight has shape "
            f"{tuple(getattr(rgb, 'shape', ()))}, expected (64, 3, 7, 7)); use the "
            "ImageNet weights file resnet18-*.pth"
        )
    c = arch["in_channels"] - 1
    first = torch.zeros(own["conv1.weight"].shape)
    if c == 3:
        first[:, :3] = rgb
    else:  # spread the RGB filters' mean over the channels, keeping the response scale
        first[:, :c] = rgb.mean(dim=1, keepdim=True) * (3.0 / c)
    first[:, c] = rgb.mean(dim=1)
    loaded["conv1.weight"] = first
    missing = set(own) - set(loaded)
    if any(not k.startswith("fc.") for k in missing):
        raise WeightsError(f"'{weights}' lacks tensors {sorted(missing)[:3]}")
    net.load_state_dict(loaded, strict=False)
    return net, digest


@contextmanager
def _torch_settings(threads: int, *, deterministic: bool) -> Iterator[None]:
    """A fixed thread count (and, for training, deterministic algorithms), restored
    afterwards. Inference on CPU is deterministic for a fixed thread count already;
    turning the flag on there would only add its one-off import cost (seconds)."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _augment(
    batch: NDArray[np.float32], rng: np.random.Generator, jitter: float, flips: bool
) -> NDArray[np.float32]:
    """Random flips and 90-degree rotations in the Y/X plane (and a Z flip in 3D),
    and intensity jitter of the image channels (not the object-mask channel), one
    draw per patch."""
    out = np.empty_like(batch)
    n_image = batch.shape[1] - 1
    for i, crop in enumerate(batch):
        if flips:
            k, flip = rng.integers(4), rng.integers(2)
            crop = np.rot90(crop, k, axes=(-2, -1))
            if flip:
                crop = crop[..., ::-1]
            if crop.ndim == 4 and rng.integers(2):  # 3D: also flip Z
                crop = crop[:, ::-1]
        out[i] = crop
        if jitter > 0:
            shape = (n_image, *[1] * (crop.ndim - 1))
            scale = rng.uniform(1 - jitter, 1 + jitter, n_image).reshape(shape)
            shift = rng.uniform(-jitter, jitter, n_image).reshape(shape)
            out[i, :n_image] = out[i, :n_image] * scale + shift
    return out


def validation_split(
    targets: NDArray[np.int64], fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices ``(train, validation)``: per class, ``floor(fraction * n)`` objects
    drawn with the seed are held out (none for classes too small to spare one)."""
    rng = np.random.default_rng([seed, 1])
    held: list[NDArray[np.int64]] = []
    for c in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == c))
        held.append(members[: math.floor(fraction * len(members))])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(targets)), val)
    return train, val


def train_cnn(
    crops: NDArray[np.float32],
    targets: NDArray[np.int64],
    config: ObjectCNNConfig,
    *,
    n_classes: int,
    seed: int,
    threads: int,
) -> tuple[dict[str, NDArray], dict[str, Any], dict[str, Any]]:
    """Train a network on object patches, stopping early on a held-out share.

    Parameters
    ----------
    crops : array of shape ``(n, C + 1, *spatial)``, float32
        From :func:`extract_crops`.
    targets : array of shape ``(n,)``
        Class index 0..K-1 of each patch.
    config : ObjectCNNConfig
        Network and training settings.
    n_classes : int
        K.
    seed, threads : int
        Random seed and torch threads.

    Returns
    -------
    (state arrays, architecture, history)
        What the model file stores, and per epoch the mean training loss and (with
        a validation share) the validation loss and accuracy, the epoch kept and the
        validation objects' true and predicted class indices at that epoch.
    """
    import torch
    from torch import nn

    ndim = crops.ndim - 2
    arch: dict[str, Any] = {
        "name": config.architecture,
        "ndim": ndim,
        "in_channels": int(crops.shape[1]),
        "n_classes": n_classes,
    }
    if config.architecture == "small":
        arch["width"] = config.width
    train_idx, val_idx = validation_split(targets, config.validation_fraction, seed)
    history: dict[str, Any] = {
        "loss": [],
        "val_loss": [],
        "val_accuracy": [],
        "n_train": len(train_idx),
        "n_validation": len(val_idx),
    }
    with _torch_settings(threads, deterministic=True):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        if config.architecture == "resnet18":
            assert config.weights is not None  # checked by the config
            net, digest = _resnet_start(arch, Path(config.weights))
            history["weights_sha256"] = digest
        else:
            net = build_network(arch)
        counts = np.bincount(targets[train_idx], minlength=n_classes).astype(float)
        weight = (
            torch.tensor(
                len(train_idx) / (n_classes * np.maximum(counts, 1)),
                dtype=torch.float32,
            )
            if config.class_weight == "balanced"
            else None
        )
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        opt = torch.optim.Adam(
            net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
        best: tuple[float, int, dict[str, Any], NDArray[np.int64]] | None = None
        n = len(train_idx)
        augmenting = config.augment or config.intensity_jitter > 0
        for epoch in range(config.epochs):
            net.train()
            order = train_idx[rng.permutation(n)]
            total = 0.0
            for a in range(0, n, config.batch_size):
                idx = order[a : a + config.batch_size]
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                batch = crops[idx]
                if augmenting:
                    batch = _augment(
                        batch, rng, config.intensity_jitter, flips=config.augment
                    )
                x = torch.from_numpy(np.ascontiguousarray(batch))
                y = torch.from_numpy(targets[idx])
                opt.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            history["loss"].append(total / n)
            if not len(val_idx):
                continue
            net.eval()
            with torch.no_grad():
                logits = torch.cat(
                    [
                        net(torch.from_numpy(crops[val_idx[a : a + _PREDICT_BATCH]]))
                        for a in range(0, len(val_idx), _PREDICT_BATCH)
                    ]
                )
                val_loss = float(loss_fn(logits, torch.from_numpy(targets[val_idx])))
            predicted = logits.argmax(dim=1).numpy()
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(
                float((predicted == targets[val_idx]).mean())
            )
            if best is None or val_loss < best[0]:
                state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                best = (val_loss, epoch, state, predicted)
            elif epoch - best[1] >= config.patience:
                break
        if best is not None:
            net.load_state_dict(best[2])
            history["best_epoch"] = best[1] + 1
            history["validation"] = {
                "true": targets[val_idx].tolist(),
                "predicted": best[3].tolist(),
            }
        history["epochs_run"] = len(history["loss"])
        net.eval()
    return state_arrays(net), arch, history


def predict_cnn(
    net: Any, crops: NDArray[np.float32], *, n_classes: int, threads: int
) -> NDArray[np.float64]:
    """Class probabilities ``(n, K)`` for object crops."""
    import torch

    out = []
    with _torch_settings(threads, deterministic=False), torch.inference_mode():
        net.eval()
        for a in range(0, len(crops), _PREDICT_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(crops[a : a + _PREDICT_BATCH]))
            out.append(torch.softmax(net(x), dim=1).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, n_classes))
