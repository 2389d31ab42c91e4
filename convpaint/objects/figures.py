"""Evaluation figures: objects coloured by predicted class, mistakes outlined.

One PNG per image (the middle Z plane of a stack): the image in grey (or colour)
underneath, every predicted object filled with its class's colour, red outlines
around predicted objects whose class is wrong or that match no ground-truth object,
and yellow outlines around ground-truth objects no prediction matched. Large images
are shown subsampled (at most about 2000 pixels per side).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from convpaint.io.atomic import atomic_output

__all__ = ["display_plane", "mistakes", "plane_step", "plot_objects"]

#: Longest side shown; larger planes are subsampled.
_MAX_SIDE = 2000
#: Fill colours per class (tab10 without its red, which marks mistakes).
_COLOURS = (
    np.array(
        [
            (31, 119, 180),
            (44, 160, 44),
            (255, 127, 14),
            (148, 103, 189),
            (23, 190, 207),
            (140, 86, 75),
            (227, 119, 194),
            (188, 189, 34),
            (127, 127, 127),
        ],
        np.float32,
    )
    / 255.0
)
_WRONG = np.array((1.0, 0.0, 0.0), np.float32)
_MISSED = np.array((1.0, 0.9, 0.0), np.float32)


def display_plane(array: Any, step: int, *, channels: bool = False) -> NDArray:
    """The middle Z plane of a ``([C,] Y, X)`` or ``([C,] Z, Y, X)`` array, read
    lazily with stride ``step`` in Y and X (``channels``: the first axis is C)."""
    where: list[Any] = [slice(None)] if channels else []
    if array.ndim - channels == 3:
        where.append(array.shape[-3] // 2)
    where += [slice(None, None, step), slice(None, None, step)]
    return np.asarray(array[tuple(where)])


def mistakes(
    truth: dict[int, int],
    predicted: dict[int, int],
    matches: tuple[NDArray[np.int64], NDArray[np.int64]],
) -> tuple[set[int], set[int]]:
    """Predicted ids with a wrong class or without a match, and ground-truth ids (with
    a class) that no scored prediction matched."""
    pairs = {int(p): int(g) for g, p in zip(*matches, strict=True)}
    wrong = {p for p, c in predicted.items() if truth.get(pairs.get(p, -1)) != c}
    matched = {g for p, g in pairs.items() if p in predicted}
    return wrong, set(truth) - matched


def plane_step(shape: tuple[int, ...]) -> int:
    """Subsampling step that keeps the plane's longest side under the limit."""
    return max(1, math.ceil(max(shape[-2:]) / _MAX_SIDE))


def _grey(image: NDArray | None, shape: tuple[int, int]) -> NDArray[np.float32]:
    """``(Y, X, 3)`` background in [0, 1]: RGB as is, other channels averaged after
    scaling each to its 1-99 % range; black without an image."""
    if image is None:
        return np.zeros((*shape, 3), np.float32)
    img = np.asarray(image, np.float32)  # (C, Y, X)
    out = []
    for ch in img:
        lo, hi = np.percentile(ch, [1.0, 99.0])
        out.append(np.clip((ch - lo) / (hi - lo), 0, 1) if hi > lo else ch * 0)
    scaled = np.stack(out)
    if len(scaled) == 3:
        return np.moveaxis(scaled, 0, -1)
    grey = scaled.mean(axis=0)
    return np.repeat(grey[..., None], 3, axis=-1)


def _lookup(labels: NDArray, ids: NDArray, values: NDArray, fill: int) -> NDArray:
    """``values`` of each pixel's id (``fill`` for ids not listed and background)."""
    out = np.full(labels.shape, fill, values.dtype)
    if len(ids):
        order = np.argsort(ids)
        ids, values = ids[order], values[order]
        pos = np.minimum(np.searchsorted(ids, labels), len(ids) - 1)
        hit = (ids[pos] == labels) & (labels > 0)
        out[hit] = values[pos[hit]]
    return out


def _outline(labels: NDArray, selected: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Boundary pixels of the objects where ``selected`` is true (pixel mask)."""
    inner = ndi.grey_erosion(labels, size=3) == ndi.grey_dilation(labels, size=3)
    return selected & ~inner & (labels > 0)


def plot_objects(
    path: Path,
    *,
    image: NDArray | None,
    predicted_labels: NDArray,
    predicted: dict[int, int],
    wrong: set[int],
    truth_labels: NDArray,
    missed: set[int],
    classes: list[int],
    title: str,
) -> Path:
    """Write one evaluation figure (see the module docstring).

    Parameters
    ----------
    path : Path
        PNG to write (atomically).
    image : array ``(C, Y, X)`` or None
        Background.
    predicted_labels, truth_labels : arrays ``(Y, X)``
        Predicted and ground-truth instance masks (the same plane and sampling).
    predicted : dict
        Predicted class of each predicted object id.
    wrong : set of int
        Predicted ids with a wrong class or without a match.
    missed : set of int
        Ground-truth ids no prediction matched.
    classes : list of int
        Classes in legend order.
    title : str
        Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    shape = predicted_labels.shape
    rgb = _grey(image, shape)
    ids = np.fromiter(predicted, np.int64, len(predicted))
    index = np.array([classes.index(predicted[i]) for i in ids.tolist()], np.int64)
    cls = _lookup(predicted_labels, ids, index, -1)
    filled = cls >= 0
    colour = _COLOURS[cls[filled] % len(_COLOURS)]
    rgb[filled] = 0.5 * rgb[filled] + 0.5 * colour
    bad = np.isin(predicted_labels, list(wrong)) if wrong else np.zeros(shape, bool)
    rgb[_outline(predicted_labels, bad)] = _WRONG
    gone = np.isin(truth_labels, list(missed)) if missed else np.zeros(shape, bool)
    rgb[_outline(truth_labels, gone)] = _MISSED
    height, width = shape
    scale = 8.0 / max(height, width)
    fig = Figure(
        figsize=(max(4.0, width * scale) + 2.5, max(4.0, height * scale) + 0.6),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    handles = [
        Patch(color=_COLOURS[i % len(_COLOURS)], label=f"predicted class {c}")
        for i, c in enumerate(classes)
    ]
    handles += [
        Patch(fill=False, edgecolor=_WRONG, label="wrong class or no match"),
        Patch(fill=False, edgecolor=_MISSED, label="missed object"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
