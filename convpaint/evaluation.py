"""Score predicted semantic label images against ground truth.

Conventions
-----------
* Label images are integer arrays (2D ``(Y, X)`` or 3D ``(Z, Y, X)``; any number of
  dimensions works for scoring as long as prediction and ground truth match).
* A ground-truth value ``0`` means *unlabelled*: such pixels are ignored
  completely (not counted anywhere). Negative ground-truth values are treated
  the same way.
* Classes are the positive values, which need not be contiguous (``1, 49, 67``).
* A prediction may contain classes absent from the ground truth: on
  ground-truth-labelled pixels they count as false positives of that class.
* A prediction value ``<= 0`` on a ground-truth-labelled pixel ("no class") is
  counted as wrong: it lowers the recall and IoU of the ground-truth class and
  the pixel accuracy, but it is not a false positive of any class. Such pixels do
  not appear in the confusion matrix; they are kept per ground-truth class in
  :attr:`ImageScores.unassigned`.

Metric definitions, per class ``c`` with ``TP`` = pixels with GT ``c`` and
prediction ``c``, ``GT_c`` = labelled pixels with GT ``c``, ``P_c`` = labelled
pixels predicted ``c``:

* ``iou[c] = TP / (GT_c + P_c - TP)``; NaN if the class is absent from both.
* ``precision[c] = TP / P_c``; NaN if the class is never predicted.
* ``recall[c] = TP / GT_c``; NaN if the class is absent from the ground truth.
* ``miou`` = mean of ``iou[c]`` over the classes **present in the ground truth**
  (a class only predicted lowers its own IoU to 0 but does not enter the mean).
* ``pixel_accuracy`` = correctly predicted labelled pixels / labelled pixels.

Aggregating several images (see :func:`summarize` and :func:`pooled`):

* :func:`summarize` gives the **mean** row: every metric is the nan-aware mean
  over images of the per-image values (an image where a class is absent from
  both GT and prediction does not enter that class's mean).
* :func:`pooled` gives the **pooled** values: the metrics computed once from the
  confusion matrix summed over all images (every pixel weighs the same).

This module never prints; :func:`format_table` returns a string for the CLI.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convpaint.errors import DataError
from convpaint.io.atomic import atomic_output

__all__ = [
    "ImageScores",
    "confusion_matrix",
    "format_table",
    "plot_comparison",
    "plot_confusion",
    "pooled",
    "score",
    "summarize",
    "write_scores",
]

# Largest (max GT value + 1) * (max predicted value + 1) for which pixels are
# counted as a dense joint histogram; above it sorting-based lookups are used.
_DENSE_MAX_BINS = 1 << 22
# Pixels processed per chunk (bounds temporary memory on large volumes).
_CHUNK = 1 << 22
# Largest side (pixels) of an image panel in plot_comparison; larger planes are
# reduced for display.
_DISPLAY_MAX = 1500


@dataclass
class ImageScores:
    """Scores of one predicted label image (or an aggregate of several).

    Attributes
    ----------
    name : str
        Image name, e.g. the prediction file stem; ``"mean"`` / ``"pooled"`` for
        aggregates.
    classes : list of int
        Sorted union of the classes in the ground truth (> 0) and in the
        prediction (> 0, on ground-truth-labelled pixels).
    confusion : numpy.ndarray
        ``(K, K)`` int64 counts; rows = ground-truth class, columns = predicted
        class, both in the order of ``classes``.
    iou, precision, recall : dict of int to float
        Per-class metrics keyed by class value (NaN where undefined, see the
        module docstring).
    miou : float
        Mean IoU over the classes present in the ground truth.
    pixel_accuracy : float
        Fraction of ground-truth-labelled pixels predicted correctly.
    n_pixels : int
        Number of ground-truth-labelled pixels counted.
    unassigned : dict of int to int
        Per ground-truth class, labelled pixels whose prediction was ``<= 0`` (no
        class). They count as errors but are not part of ``confusion``.
    """

    name: str
    classes: list[int]
    confusion: np.ndarray
    iou: dict[int, float]
    precision: dict[int, float]
    recall: dict[int, float]
    miou: float
    pixel_accuracy: float
    n_pixels: int
    unassigned: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (class keys as strings, NaN as ``None``).

        Returns
        -------
        dict
            All fields; the confusion matrix as nested lists.
        """
        return {
            "name": self.name,
            "classes": [int(c) for c in self.classes],
            "n_pixels": int(self.n_pixels),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "miou": _json_float(self.miou),
            "iou": {str(c): _json_float(v) for c, v in self.iou.items()},
            "precision": {str(c): _json_float(v) for c, v in self.precision.items()},
            "recall": {str(c): _json_float(v) for c, v in self.recall.items()},
            "confusion": np.asarray(self.confusion, dtype=np.int64).tolist(),
            "unassigned": {str(c): int(v) for c, v in self.unassigned.items()},
        }


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def _as_labels(array: Any, what: str) -> np.ndarray:
    """Return ``array`` as an integer label array or raise DataError."""
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8)
    if kind == "u" and arr.dtype.itemsize == 8:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(
                f"{what}: label values up to {int(arr.max())} do not fit int64; "
                "relabel the classes with smaller integers"
            )
        return arr.astype(np.int64)
    if kind in "iu":
        return arr
    if kind == "f":
        finite = np.isfinite(arr)
        if not finite.all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"{what}: a label image must hold whole numbers, found non-integer "
                f"values in a {arr.dtype} array; save labels as an integer image"
            )
        return arr.astype(np.int64)
    raise DataError(
        f"{what}: a label image must be an integer array, found dtype {arr.dtype}; "
        "save labels as an integer image"
    )


def _check_shapes(prediction: np.ndarray, ground_truth: np.ndarray) -> None:
    if prediction.shape != ground_truth.shape:
        raise DataError(
            f"prediction shape {tuple(prediction.shape)} does not match ground-truth "
            f"shape {tuple(ground_truth.shape)}; score a prediction of the same image "
            "as the ground truth"
        )


def _check_classes(classes: Sequence[int]) -> np.ndarray:
    cls = np.asarray([int(c) for c in classes], dtype=np.int64)
    if cls.size and (cls.min() <= 0 or np.unique(cls).size != cls.size):
        raise ValueError(
            f"classes must be distinct positive integers, got {list(classes)}"
        )
    return cls


def _chunks(
    gt: np.ndarray, pred: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield matching flat chunks of the two arrays (bounded temporary memory)."""
    for start in range(0, gt.size, _CHUNK):
        yield gt[start : start + _CHUNK], pred[start : start + _CHUNK]


def _index(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Position of each value in ``classes`` (any order), ``-1`` if absent."""
    if classes.size == 0 or values.size == 0:
        return np.full(values.shape, -1, dtype=np.intp)
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    pos = np.searchsorted(sorted_classes, values)
    np.minimum(pos, sorted_classes.size - 1, out=pos)
    found = sorted_classes[pos] == values
    return np.where(found, order[pos], -1).astype(np.intp)


def _tally_dense(
    gt: np.ndarray, pred: np.ndarray, n_gt: int, n_pred: int, clip: bool
) -> np.ndarray:
    """Joint histogram ``(n_gt, n_pred)`` of (GT value, predicted value) pairs.

    Values are clipped at 0 first when ``clip`` (negatives count as 0).
    """
    hist = np.zeros(n_gt * n_pred, dtype=np.int64)
    for g, p in _chunks(gt, pred):
        code = g.astype(np.intp)
        if clip:
            np.maximum(code, 0, out=code)
            p = np.maximum(p, 0)
        code *= n_pred
        code += p
        hist += np.bincount(code, minlength=n_gt * n_pred)
    return hist.reshape(n_gt, n_pred)


def _tally(
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    classes: Sequence[int] | None,
) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Confusion matrix, class list and per-GT-class unassigned counts.

    Small label values (the usual case) are counted in one chunked pass as a
    dense joint histogram; large values fall back to sorting-based lookups.
    """
    cls = None if classes is None else _check_classes(classes)
    gt = ground_truth.reshape(-1)
    pred = prediction.reshape(-1)
    if gt.size == 0:
        cls = np.zeros(0, np.int64) if cls is None else cls
        k = cls.size
        return (
            np.zeros((k, k), np.int64),
            [int(c) for c in cls],
            np.zeros(k, np.int64),
        )
    g_min, g_max = int(gt.min()), int(gt.max())
    p_min, p_max = int(pred.min()), int(pred.max())
    n_gt, n_pred = max(g_max, 0) + 1, max(p_max, 0) + 1

    if n_gt * n_pred <= _DENSE_MAX_BINS:
        dense = _tally_dense(gt, pred, n_gt, n_pred, clip=min(g_min, p_min) < 0)
        dense[0] = 0  # ground truth 0 (or negative): unlabelled, ignored
        if cls is None:
            in_gt = np.flatnonzero(dense.sum(axis=1))
            in_pred = np.flatnonzero(dense[:, 1:].sum(axis=0)) + 1
            cls = np.union1d(in_gt, in_pred).astype(np.int64)
        k = cls.size
        rows, cols = cls < n_gt, cls < n_pred
        confusion = np.zeros((k, k), dtype=np.int64)
        confusion[np.ix_(rows, cols)] = dense[np.ix_(cls[rows], cls[cols])]
        unassigned = np.zeros(k, dtype=np.int64)
        unassigned[rows] = dense[cls[rows], 0]
        return confusion, [int(c) for c in cls], unassigned

    if cls is None:
        found: set[int] = set()
        for g, p in _chunks(gt, pred):
            labelled = g > 0
            p = p[labelled]
            found.update(np.unique(g[labelled]).tolist())
            found.update(np.unique(p[p > 0]).tolist())
        cls = np.asarray(sorted(found), dtype=np.int64)
    k = cls.size
    confusion = np.zeros(k * k, dtype=np.int64)
    unassigned = np.zeros(k, dtype=np.int64)
    for g, p in _chunks(gt, pred):
        labelled = g > 0
        g, p = g[labelled], p[labelled]
        gi, pi = _index(g, cls), _index(p, cls)
        both = (gi >= 0) & (pi >= 0)
        confusion += np.bincount(gi[both] * k + pi[both], minlength=k * k)
        unassigned += np.bincount(gi[(gi >= 0) & (p <= 0)], minlength=k)
    return confusion.reshape(k, k), [int(c) for c in cls], unassigned


def confusion_matrix(
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Count ground-truth versus predicted classes on ground-truth-labelled pixels.

    Parameters
    ----------
    prediction : numpy.ndarray
        Predicted label image.
    ground_truth : numpy.ndarray
        Ground-truth label image of the same shape; ``0`` = unlabelled, ignored.
    classes : sequence of int, optional
        Class values defining the rows/columns, in this order (distinct, > 0).
        Pixels whose ground-truth or predicted value is not in ``classes`` are
        left out. Default: the sorted union of the ground-truth classes and the
        classes predicted on labelled pixels.

    Returns
    -------
    confusion : numpy.ndarray
        ``(K, K)`` int64; ``confusion[i, j]`` = pixels of ground-truth class
        ``classes[i]`` predicted as ``classes[j]``.
    classes : list of int
        The class value of each row/column.

    Raises
    ------
    DataError
        If the shapes differ or an array is not an integer label image.
    """
    pred = _as_labels(prediction, "prediction")
    gt = _as_labels(ground_truth, "ground truth")
    _check_shapes(pred, gt)
    confusion, cls, _ = _tally(pred, gt, classes)
    return confusion, cls


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN (without a warning) if there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _from_confusion(
    name: str, classes: list[int], confusion: np.ndarray, unassigned: np.ndarray
) -> ImageScores:
    """Build ImageScores from a confusion matrix and unassigned counts."""
    confusion = np.asarray(confusion, dtype=np.int64)
    unassigned = np.asarray(unassigned, dtype=np.int64)
    tp = np.diag(confusion).astype(np.float64)
    gt_n = (confusion.sum(axis=1) + unassigned).astype(np.float64)
    pred_n = confusion.sum(axis=0).astype(np.float64)
    iou = _nan_div(tp, gt_n + pred_n - tp)
    precision = _nan_div(tp, pred_n)
    recall = _nan_div(tp, gt_n)
    n_pixels = int(confusion.sum() + unassigned.sum())
    in_gt = gt_n > 0
    miou = float(iou[in_gt].mean()) if in_gt.any() else math.nan
    accuracy = float(tp.sum() / n_pixels) if n_pixels else math.nan
    return ImageScores(
        name=name,
        classes=list(classes),
        confusion=confusion,
        iou={c: float(v) for c, v in zip(classes, iou, strict=True)},
        precision={c: float(v) for c, v in zip(classes, precision, strict=True)},
        recall={c: float(v) for c, v in zip(classes, recall, strict=True)},
        miou=miou,
        pixel_accuracy=accuracy,
        n_pixels=n_pixels,
        unassigned={c: int(v) for c, v in zip(classes, unassigned, strict=True)},
    )


def score(
    prediction: np.ndarray, ground_truth: np.ndarray, *, name: str = ""
) -> ImageScores:
    """Score one predicted label image against its ground truth.

    Parameters
    ----------
    prediction : numpy.ndarray
        Predicted label image (2D or 3D integer array).
    ground_truth : numpy.ndarray
        Ground-truth label image of exactly the same shape; ``0`` = unlabelled.
    name : str, optional
        Name stored in the result, e.g. the prediction file stem.

    Returns
    -------
    ImageScores
        Confusion matrix and per-class / overall metrics (see module docstring).

    Raises
    ------
    DataError
        If the shapes differ (both are named in the message) or an array is not
        an integer label image.
    """
    pred = _as_labels(prediction, "prediction")
    gt = _as_labels(ground_truth, "ground truth")
    _check_shapes(pred, gt)
    confusion, classes, unassigned = _tally(pred, gt, None)
    return _from_confusion(name, classes, confusion, unassigned)


def _summed(
    scores: Sequence[ImageScores], what: str
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The union of the images' classes, and on it the summed confusion matrices and
    unassigned counts; ``what`` names the caller when ``scores`` is empty."""
    _require(scores, what)
    classes = sorted({int(c) for s in scores for c in s.classes})
    pos = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    unassigned = np.zeros(k, dtype=np.int64)
    for s in scores:
        idx = np.asarray([pos[int(c)] for c in s.classes], dtype=np.intp)
        if idx.size:
            confusion[np.ix_(idx, idx)] += np.asarray(s.confusion, dtype=np.int64)
            for c, v in s.unassigned.items():
                unassigned[pos[int(c)]] += int(v)
    return classes, confusion, unassigned


def _require(scores: Sequence[ImageScores], what: str) -> None:
    if len(scores) == 0:
        raise ValueError(f"{what} needs at least one ImageScores")


def summarize(scores: Sequence[ImageScores]) -> ImageScores:
    """Return the "mean" row over several images.

    Parameters
    ----------
    scores : sequence of ImageScores
        Per-image scores (at least one).

    Returns
    -------
    ImageScores
        ``name="mean"``; ``classes`` = union over images; ``confusion`` and
        ``unassigned`` = sums over images; ``n_pixels`` = total labelled pixels.
        ``iou``, ``precision``, ``recall``, ``miou`` and ``pixel_accuracy`` are
        the nan-aware **means over images of the per-image values** (each image
        weighs the same; an image where a class is undefined does not enter that
        class's mean). For the metrics of the summed confusion matrix, where
        every pixel weighs the same, use :func:`pooled`.
    """
    classes, confusion, unassigned = _summed(scores, "summarize")

    def per_class(attr: str) -> dict[int, float]:
        return {
            c: _nanmean([getattr(s, attr).get(c, math.nan) for s in scores])
            for c in classes
        }

    return ImageScores(
        name="mean",
        classes=classes,
        confusion=confusion,
        iou=per_class("iou"),
        precision=per_class("precision"),
        recall=per_class("recall"),
        miou=_nanmean([s.miou for s in scores]),
        pixel_accuracy=_nanmean([s.pixel_accuracy for s in scores]),
        n_pixels=int(sum(int(s.n_pixels) for s in scores)),
        unassigned={c: int(v) for c, v in zip(classes, unassigned, strict=True)},
    )


def pooled(scores: Sequence[ImageScores]) -> ImageScores:
    """Return the metrics of the confusion matrix summed over several images.

    Takes the same per-image ``scores`` as :func:`summarize` (at least one). The
    result, ``name="pooled"``, has every metric computed as for a single image from
    the summed confusion matrix (pixel-weighted), in contrast to the per-image means
    of :func:`summarize`.
    """
    return _from_confusion("pooled", *_summed(scores, "pooled"))


# --------------------------------------------------------------------------- #
# Output: files and text
# --------------------------------------------------------------------------- #


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _csv_float(value: float) -> str:
    value = float(value)
    return "" if math.isnan(value) else repr(value)


def write_scores(
    scores: Sequence[ImageScores], out_dir: Path, *, prefix: str = "evaluation"
) -> list[Path]:
    """Write the scores as CSV and JSON files, each atomically.

    Parameters
    ----------
    scores : sequence of ImageScores
        Per-image scores (at least one).
    out_dir : Path
        Folder to write into (created if missing).
    prefix : str, optional
        File name prefix.

    Returns
    -------
    list of Path
        ``[{prefix}.csv, {prefix}.json, {prefix}_confusion.csv]``:

        * ``{prefix}.csv``: one row per image plus a final ``mean`` row (see
          :func:`summarize`); columns ``image, n_pixels, pixel_accuracy, miou``,
          then ``iou_<c>`` for every class, then ``precision_<c>``, then
          ``recall_<c>``. Undefined (NaN) values are empty cells.
        * ``{prefix}.json``: ``{"classes", "images": [...], "mean", "pooled",
          "notes"}``, each score with all fields (confusion matrix as nested
          lists with its class list); NaN is written as ``null``.
        * ``{prefix}_confusion.csv``: the confusion matrix summed over images,
          header ``gt\\pred, <classes...>`` and the GT class in the first column.
    """
    _require(scores, "write_scores")
    out_dir = Path(out_dir)
    mean = summarize(scores)
    pool = pooled(scores)
    classes = mean.classes
    paths = [
        out_dir / f"{prefix}.csv",
        out_dir / f"{prefix}.json",
        out_dir / f"{prefix}_confusion.csv",
    ]

    header = ["image", "n_pixels", "pixel_accuracy", "miou"]
    for metric in ("iou", "precision", "recall"):
        header += [f"{metric}_{c}" for c in classes]
    with atomic_output(paths[0]) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for s in [*scores, mean]:
                row = [
                    s.name,
                    str(int(s.n_pixels)),
                    _csv_float(s.pixel_accuracy),
                    _csv_float(s.miou),
                ]
                for metric in ("iou", "precision", "recall"):
                    values = getattr(s, metric)
                    row += [_csv_float(values.get(c, math.nan)) for c in classes]
                writer.writerow(row)

    document = {
        "classes": classes,
        "images": [s.to_dict() for s in scores],
        "mean": mean.to_dict(),
        "pooled": pool.to_dict(),
        "notes": {
            "ignored": "ground-truth value 0 is unlabelled and not counted",
            "confusion": "rows = ground-truth class, columns = predicted class, "
            "in the order of 'classes'",
            "unassigned": "labelled pixels predicted as 0 (no class), "
            "per ground-truth class",
            "miou": "mean IoU over the classes present in the ground truth",
            "mean": "per-image values averaged over images (NaN-aware); "
            "confusion summed",
            "pooled": "metrics of the confusion matrix summed over all images",
        },
    }
    with atomic_output(paths[1]) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2, allow_nan=False)
            fh.write("\n")

    with atomic_output(paths[2]) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["gt\\pred", *[str(c) for c in classes]])
            for c, row in zip(classes, mean.confusion, strict=True):
                writer.writerow([str(c), *[str(int(v)) for v in row]])
    return paths


def _fmt(value: float, digits: int = 3) -> str:
    value = float(value)
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(scores: Sequence[ImageScores]) -> str:
    """Return a plain-text table of the scores, ending with the mean row.

    Parameters
    ----------
    scores : sequence of ImageScores
        Per-image scores (at least one).

    Returns
    -------
    str
        Columns ``image, pixels, accuracy, mIoU, IoU <c>...``; one line per
        image, a rule, and the ``mean`` row of :func:`summarize`. Undefined
        values are shown as ``-``. No trailing newline.
    """
    _require(scores, "format_table")
    mean = summarize(scores)
    header = [
        "image",
        "pixels",
        "accuracy",
        "mIoU",
        *[f"IoU {c}" for c in mean.classes],
    ]
    rows = []
    for s in [*scores, mean]:
        rows.append(
            [
                s.name,
                str(int(s.n_pixels)),
                _fmt(s.pixel_accuracy),
                _fmt(s.miou),
                *[_fmt(s.iou.get(c, math.nan)) for c in mean.classes],
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join(
        [line(header), rule, *[line(r) for r in rows[:-1]], rule, line(rows[-1])]
    )


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def _save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Render a matplotlib Figure to ``path`` as PNG, atomically, without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_confusion(
    confusion: np.ndarray, classes: list[int], path: Path, *, normalize: bool = True
) -> Path:
    """Draw a confusion matrix as a PNG heat map.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, K)`` counts, rows = ground-truth class, columns = predicted class.
    classes : list of int
        Class value of each row/column.
    path : Path
        PNG file to write (atomically; parent folders are created).
    normalize : bool, optional
        Divide each row by its sum (fraction of the ground-truth class predicted
        as each class; rows without pixels are shown grey). Otherwise raw counts.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion)
    k = len(classes)
    if confusion.shape != (k, k):
        raise ValueError(
            f"confusion has shape {confusion.shape}, expected ({k}, {k}) "
            f"for {k} classes"
        )
    side = float(min(20.0, max(4.5, 0.55 * k + 2.5)))
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    if k == 0:
        ax.text(0.5, 0.5, "no labelled pixels", ha="center", va="center")
        ax.set_axis_off()
        return _save_figure(fig, path)

    counts = confusion.astype(np.float64)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(rows > 0, counts / np.where(rows > 0, rows, 1), np.nan)
        vmax = 1.0
        label = "fraction of ground-truth class"
    else:
        values = counts
        vmax = max(float(counts.max()), 1.0)
        label = "pixels"
    import matplotlib

    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.85")
    im = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90 if k > 12 else 0)
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    if k <= 25:
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                if np.isnan(v):
                    continue
                text = f"{v:.2f}" if normalize else str(int(v))
                colour = "white" if v > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    return _save_figure(fig, path)


_PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [188, 189, 34],
        [23, 190, 207],
        [127, 127, 127],
        [174, 199, 232],
        [255, 187, 120],
        [152, 223, 138],
        [255, 152, 150],
        [197, 176, 213],
        [196, 156, 148],
        [247, 182, 210],
        [219, 219, 141],
        [158, 218, 229],
        [199, 199, 199],
    ],
    dtype=np.uint8,
)  # tab10 (without its red, used for errors) followed by the light tab20 shades


def _middle_plane(array: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """Take the middle plane along the leading Z axis of a 3D spatial array."""
    if spatial_ndim == 2:
        return array
    return array[array.shape[0] // 2]


def _display_image(image: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Reduce ``image`` to gray ``(Y, X)`` or RGB ``(Y, X, 3)`` floats in [0, 1]."""
    img = np.asarray(image)
    nd = len(spatial)
    if img.shape == spatial:
        plane = _middle_plane(img, nd)
    elif img.ndim == nd + 1 and img.shape[:-1] == spatial and img.shape[-1] in (3, 4):
        plane = _middle_plane(img, nd)[..., :3]
    elif img.ndim == nd + 1 and img.shape[1:] == spatial:
        plane = _middle_plane(img[0], nd)
    else:
        raise DataError(
            f"image shape {tuple(img.shape)} does not fit the label shape {spatial}; "
            "expected (Y, X), (Y, X, 3|4), (C, Y, X) or the same with a leading Z axis"
        )
    if plane.dtype.kind == "b":
        plane = plane.astype(np.uint8)
    if plane.dtype.kind not in "iuf":
        raise DataError(
            f"image dtype {plane.dtype} cannot be displayed; use a numeric image"
        )
    if plane.ndim == 3 and plane.dtype == np.uint8:
        return plane.astype(np.float32) / 255.0
    data = plane.astype(np.float32)
    finite = data[np.isfinite(data)]
    if plane.ndim == 3 and finite.size and finite.min() >= 0 and finite.max() <= 1:
        return np.nan_to_num(data, nan=0.0)
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.float32)
    sample = finite[:: max(1, finite.size // 1_000_000)]
    lo, hi = np.percentile(sample, [1.0, 99.0])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.float32)
    out = (np.nan_to_num(data, nan=lo) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0)


def _block_reduce(array: np.ndarray, step: int, how: str) -> np.ndarray:
    """Reduce a 2D (or 2D + trailing channel) array by ``step`` in Y and X."""
    if step == 1:
        return array
    if how == "stride":
        return array[::step, ::step]
    y, x = array.shape[:2]
    py, px = (-y) % step, (-x) % step
    pad = [(0, py), (0, px)] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad, mode="constant")
    shaped = padded.reshape(
        (y + py) // step, step, (x + px) // step, step, *array.shape[2:]
    )
    if how == "max":
        return shaped.max(axis=(1, 3))
    if how == "any":
        return shaped.any(axis=(1, 3))
    raise ValueError(how)


def _colour_labels(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """RGB uint8 image of ``labels``; 0 (or unknown) black, class i -> palette[i]."""
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    for i, c in enumerate(classes):
        out[labels == c] = _PALETTE[i % len(_PALETTE)]
    return out


def plot_comparison(
    image: np.ndarray,
    scribbles: np.ndarray | None,
    prediction: np.ndarray,
    ground_truth: np.ndarray,
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Draw image, scribbles, prediction and errors side by side in one PNG.

    Panels: the image; the scribbles overlaid on the image (a blank panel reading
    "no scribbles" if ``scribbles`` is None); the prediction coloured by class;
    the errors (red = prediction differs from the ground truth on a labelled
    pixel, grey = correct, black = unlabelled ground truth). Class colours are
    the same in every panel and listed in a legend.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` grayscale of any numeric dtype (shown with 1st-99th percentile
        contrast), ``(Y, X, 3|4)`` RGB(A), or ``(C, Y, X)`` multichannel (the
        first channel is shown); for 3D labels the same with a leading Z axis
        (``(Z, Y, X)``, ``(Z, Y, X, 3|4)``, ``(C, Z, Y, X)``).
    scribbles : numpy.ndarray or None
        Label image of the training annotations (0 = none), or None.
    prediction, ground_truth : numpy.ndarray
        Label images; ``(Y, X)`` or ``(Z, Y, X)``, same shape. For 3D inputs the
        middle Z plane is shown.
    path : Path
        PNG file to write (atomically; parent folders are created).
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        If the shapes of the inputs do not fit together, or labels are 1D / >3D.

    Notes
    -----
    Planes larger than 1500 pixels on a side are reduced for display: the image
    and prediction by subsampling, scribbles by block maximum and errors by
    "any error in the block", so thin scribbles and errors stay visible.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    gt = _as_labels(ground_truth, "ground truth")
    pred = _as_labels(prediction, "prediction")
    _check_shapes(pred, gt)
    if gt.ndim not in (2, 3):
        raise DataError(
            f"ground truth has {gt.ndim} dimensions (shape {gt.shape}); "
            "plot_comparison needs 2D (Y, X) or 3D (Z, Y, X) label images"
        )
    spatial = tuple(gt.shape)
    nd = gt.ndim
    scrib = None
    if scribbles is not None:
        scrib = _as_labels(scribbles, "scribbles")
        if scrib.shape != spatial:
            raise DataError(
                f"scribbles shape {tuple(scrib.shape)} does not match "
                f"ground-truth shape {spatial}"
            )

    gt_p = _middle_plane(gt, nd)
    pred_p = _middle_plane(pred, nd)
    img_p = _display_image(image, spatial)
    scrib_p = _middle_plane(scrib, nd) if scrib is not None else None

    step = max(1, math.ceil(max(gt_p.shape) / _DISPLAY_MAX))
    labelled = gt_p > 0
    wrong = labelled & (pred_p != gt_p)
    n_labelled = int(labelled.sum())
    error_rate = wrong.sum() / n_labelled if n_labelled else math.nan
    wrong_d = _block_reduce(wrong, step, "any")
    labelled_d = _block_reduce(labelled, step, "any")
    img_d = _block_reduce(img_p, step, "stride")
    pred_d = _block_reduce(pred_p, step, "stride")
    scrib_d = _block_reduce(scrib_p, step, "max") if scrib_p is not None else None
    shape_d = wrong_d.shape
    img_d = img_d[: shape_d[0], : shape_d[1]]
    pred_d = pred_d[: shape_d[0], : shape_d[1]]

    present = [np.unique(pred_d), np.unique(_block_reduce(gt_p, step, "stride"))]
    if scrib_d is not None:
        present.append(np.unique(scrib_d))
    classes = sorted({int(c) for arr in present for c in arr if c > 0})

    gray_rgb = img_d if img_d.ndim == 3 else np.repeat(img_d[..., None], 3, axis=2)
    gray_rgb = (np.clip(gray_rgb, 0, 1) * 255).astype(np.uint8)

    errors_rgb = np.zeros((*shape_d, 3), dtype=np.uint8)
    errors_rgb[labelled_d] = (160, 160, 160)
    errors_rgb[wrong_d] = (220, 20, 20)

    height, width = shape_d
    aspect = height / max(width, 1)
    panel_w = 4.0
    panel_h = float(min(max(panel_w * aspect, 1.5), 12.0))
    fig = Figure(figsize=(4 * panel_w, panel_h + 1.6), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(gray_rgb, interpolation="nearest")
    axes[0].set_title("image")
    if scrib_d is not None:
        overlay = gray_rgb.copy()
        marked = scrib_d > 0
        overlay[marked] = _colour_labels(scrib_d, classes)[marked]
        axes[1].imshow(overlay, interpolation="nearest")
        axes[1].set_title("scribbles")
    else:
        axes[1].imshow(np.full((*shape_d, 3), 255, dtype=np.uint8))
        axes[1].text(
            0.5,
            0.5,
            "no scribbles",
            ha="center",
            va="center",
            transform=axes[1].transAxes,
        )
        axes[1].set_title("scribbles")
    axes[2].imshow(_colour_labels(pred_d, classes), interpolation="nearest")
    axes[2].set_title("prediction")
    axes[3].imshow(errors_rgb, interpolation="nearest")
    rate = "n/a" if math.isnan(error_rate) else f"{100 * error_rate:.1f}%"
    axes[3].set_title(
        f"errors ({rate} of labelled)\nred wrong, grey correct, black no GT", fontsize=9
    )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if classes:
        handles = [
            Patch(color=_PALETTE[i % len(_PALETTE)] / 255.0, label=f"class {c}")
            for i, c in enumerate(classes)
        ]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 10),
            frameon=False,
        )
    suffix = f" (middle plane z={spatial[0] // 2} of {spatial[0]})" if nd == 3 else ""
    if title or suffix:
        fig.suptitle(f"{title}{suffix}".strip())
    return _save_figure(fig, path)
