"""The training report that ``convpaint train`` writes next to the model.

The report answers two questions a user should ask of a scribble-trained pixel
classifier, and answers them honestly:

* **How good is it?** Pixels of one scribble are strongly correlated (neighbouring
  pixels have almost identical features), so a pixel-level random split leaks
  information from training into test and reports near-perfect accuracy even for
  a classifier that has only memorised each stroke. Here cross-validation holds
  out *whole strokes* (connected components of one class in the label image):
  the score estimates how well the classifier labels a stroke it has never seen.
  It is still measured on annotated pixels only, which are not a random sample
  of the image, so it is an estimate, not a guarantee.
* **What does it use?** Random-forest feature importances, summed per feature
  extractor and per ``key=value`` part of the feature names (e.g. per scale, per
  filter, per sigma).

The report is a JSON file plus one PNG figure, both written atomically.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from convpaint.io.atomic import atomic_output

__all__ = [
    "ABSENT",
    "REPORT_VERSION",
    "CrossValidation",
    "aggregate_importances",
    "build_report",
    "cross_validate",
    "label_strokes",
    "stroke_folds",
    "write_report",
]

#: Version of the JSON layout written by :func:`build_report`.
REPORT_VERSION = 1

#: Value bucket used in ``by_extractor_key`` for features that lack a key, so that
#: the values of every key always sum to the extractor's total.
ABSENT = "(absent)"

_CV_METHOD = "stroke-grouped k-fold"
_CV_NOTE = (
    "Folds hold out whole strokes (connected scribbles of one class), never single "
    "pixels, so scores estimate performance on strokes the classifier has not seen. "
    "A pixel-level split would be optimistic because neighbouring pixels of one "
    "stroke are near-duplicates. Scores are measured on annotated pixels only, which "
    "are not a random sample of the image."
)
_IMPORTANCE_NOTE = (
    "Impurity-based importances (mean decrease in impurity) of the final classifier "
    "trained on all annotations, normalised by the classifier. Correlated features "
    "share importance, and the measure is computed on training data."
)


# --------------------------------------------------------------------------------------
# Strokes and folds
# --------------------------------------------------------------------------------------


def label_strokes(labels: np.ndarray) -> np.ndarray:
    """Give every stroke of a label image its own positive id.

    A stroke is a connected component of pixels sharing the same class value,
    with 8-connectivity in 2D and full (26-) connectivity in 3D. Touching pixels of
    two different classes therefore belong to two different strokes.

    Parameters
    ----------
    labels : np.ndarray
        2D or 3D integer label image; 0 (and any non-positive value) means
        unlabelled, positive values are classes.

    Returns
    -------
    np.ndarray
        ``int64`` image of the same shape: 0 where unlabelled, otherwise a stroke
        id in ``1..n_strokes`` (ids are consecutive, classes in increasing order).

    Raises
    ------
    ValueError
        If ``labels`` is not 2D or 3D.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"label image must be 2D or 3D to find strokes, got shape {labels.shape}"
        )
    strokes = np.zeros(labels.shape, dtype=np.int64)
    annotated = labels > 0
    if not annotated.any():
        return strokes
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    offset = 0
    for value in np.unique(labels[annotated]):
        mask = labels == value
        components, n = ndimage.label(mask, structure=structure)
        strokes[mask] = components[mask].astype(np.int64) + offset
        offset += int(n)
    return strokes


def _group_classes(
    y: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return classes, sample->group index, unique groups and each group's class index.

    A group holding several classes (only possible for hand-made groups) is assigned
    to its most frequent class for stratification; it still stays in one fold.
    """
    classes, y_idx = np.unique(y, return_inverse=True)
    uniq_groups, g_idx = np.unique(groups, return_inverse=True)
    k = classes.size
    counts = np.bincount(g_idx * k + y_idx, minlength=uniq_groups.size * k)
    group_class = counts.reshape(uniq_groups.size, k).argmax(axis=1)
    return classes, g_idx, uniq_groups, group_class


def _check_y_groups(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    groups = np.asarray(groups).ravel()
    if y.shape != groups.shape:
        raise ValueError(
            f"y and groups must have the same length, got {y.size} and {groups.size}"
        )
    return y, groups


def stroke_folds(
    y: np.ndarray, groups: np.ndarray, *, n_folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split samples into cross-validation folds that keep every stroke whole.

    Folds are stratified by class at the stroke level: each class's strokes are
    shuffled with a seeded generator and dealt round-robin to the folds (the
    dealing position carries over from one class to the next, which balances the
    number of strokes per fold). The number of folds is reduced to the smallest
    number of strokes of any class, so every fold tests every class and every
    training split contains every class.

    Parameters
    ----------
    y : np.ndarray
        ``(n,)`` class value of every sample.
    groups : np.ndarray
        ``(n,)`` stroke id of every sample (see :func:`label_strokes`).
    n_folds : int, default 5
        Requested number of folds (at least 2).
    seed : int, default 0
        Seed of the shuffle; the same seed gives the same folds.

    Returns
    -------
    list of (np.ndarray, np.ndarray)
        ``(train_idx, test_idx)`` integer index arrays, one pair per fold; every
        sample is in exactly one test fold. Empty when cross-validation is
        impossible: no samples, fewer than two classes, or some class has a
        single stroke.

    Raises
    ------
    ValueError
        If ``n_folds < 2`` or ``y`` and ``groups`` differ in length.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    y, groups = _check_y_groups(y, groups)
    if y.size == 0:
        return []
    classes, g_idx, uniq_groups, group_class = _group_classes(y, groups)
    strokes_per_class = np.bincount(group_class, minlength=classes.size)
    if classes.size < 2 or strokes_per_class.min() < 2:
        return []
    k = int(min(n_folds, strokes_per_class.min()))

    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(uniq_groups.size, dtype=np.int64)
    position = 0
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(group_class == c))
        fold_of_group[members] = (position + np.arange(members.size)) % k
        position = (position + members.size) % k

    fold_of_sample = fold_of_group[g_idx]
    folds = []
    for f in range(k):
        in_test = fold_of_sample == f
        folds.append((np.flatnonzero(~in_test), np.flatnonzero(in_test)))
    return folds


# --------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------


@dataclass
class CrossValidation:
    """Result of stroke-grouped cross-validation.

    Attributes
    ----------
    n_folds : int
        Folds actually used (0 when skipped); may be less than requested.
    classes : list of int
        Class values, in the order of the confusion matrix rows and columns.
    confusion : np.ndarray
        ``(k, k)`` int64 confusion matrix summed over folds; rows are true
        classes, columns predicted classes.
    accuracy : float
        Pooled pixel accuracy over all test folds (NaN when skipped).
    miou : float
        Mean over classes of the per-class intersection over union (NaN when
        skipped).
    per_class_iou : dict of int to float
        IoU of every class (empty when skipped).
    fold_accuracy : list of float
        Pixel accuracy of each fold.
    skipped_reason : str or None
        Why cross-validation was impossible, or None when it ran.
    n_folds_requested : int
        Folds asked for.
    strokes_per_class : dict of int to int
        Number of strokes (groups) of every class.
    fold_sample_fraction : float or None
        Share of each fold's training pixels its classifier was fitted on, when
        the caller subsampled them (training fits each fold's forest, with the
        final forest's settings, on an eighth of the fold's pixels of every
        class, so that the folds together cost about half the fit of the final
        forest; every training stroke is still represented).
    """

    n_folds: int
    classes: list[int]
    confusion: np.ndarray
    accuracy: float
    miou: float
    per_class_iou: dict[int, float]
    fold_accuracy: list[float]
    skipped_reason: str | None
    n_folds_requested: int = 0
    strokes_per_class: dict[int, int] = field(default_factory=dict)
    fold_sample_fraction: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable view (NaN becomes None, keys become strings).

        Returns
        -------
        dict
            The fields plus the row-normalised confusion matrix and a method note.
        """
        conf = np.asarray(self.confusion, dtype=np.float64)
        rows = conf.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.where(rows > 0, conf / rows, np.nan)
        return _jsonable(
            {
                "method": _CV_METHOD,
                "n_folds": self.n_folds,
                "n_folds_requested": self.n_folds_requested,
                "fold_sample_fraction": self.fold_sample_fraction,
                "classes": self.classes,
                "strokes_per_class": self.strokes_per_class,
                "accuracy": self.accuracy,
                "miou": self.miou,
                "per_class_iou": self.per_class_iou,
                "fold_accuracy": self.fold_accuracy,
                "confusion": self.confusion,
                "confusion_row_normalised": normalised,
                "skipped_reason": self.skipped_reason,
                "note": _CV_NOTE,
            }
        )


def _skipped(
    reason: str, classes: list[int], n_folds: int, strokes: dict[int, int]
) -> CrossValidation:
    return CrossValidation(
        n_folds=0,
        classes=classes,
        confusion=np.zeros((len(classes), len(classes)), dtype=np.int64),
        accuracy=math.nan,
        miou=math.nan,
        per_class_iou={},
        fold_accuracy=[],
        skipped_reason=reason,
        n_folds_requested=n_folds,
        strokes_per_class=strokes,
    )


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    make_classifier: Callable[[], Any],
    *,
    n_folds: int = 5,
    seed: int = 0,
    sample_fraction: float | None = None,
    n_jobs: int = 1,
) -> CrossValidation:
    """Cross-validate a classifier, holding out whole strokes (:func:`stroke_folds`).

    Parameters
    ----------
    X : np.ndarray
        ``(n, F)`` features of the annotated pixels.
    y : np.ndarray
        ``(n,)`` class values.
    groups : np.ndarray
        ``(n,)`` stroke ids.
    make_classifier : callable
        Returns a fresh, unfitted classifier with ``fit(X, y)`` and ``predict(X)``;
        called once per fold.
    n_folds : int, default 5
        Requested number of folds (reduced when a class has fewer strokes).
    seed : int, default 0
        Seed of the fold assignment.
    sample_fraction : float, optional
        Share of the training pixels the classifiers of ``make_classifier`` are
        fitted on, recorded in the result.
    n_jobs : int, default 1
        Folds fitted at the same time, on threads (the classifiers should then use
        one thread each); the result does not depend on it.

    Returns
    -------
    CrossValidation
        Pooled confusion matrix and scores; ``skipped_reason`` says why when
        cross-validation was impossible (no samples, one class, or a class with a
        single stroke).

    Raises
    ------
    ValueError
        On inconsistent shapes, or if the classifier predicts an unknown class.
    """
    X = np.asarray(X)
    y, groups = _check_y_groups(y, groups)
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ValueError(
            f"X must have shape (n_samples, n_features) with n_samples={y.size}, "
            f"got {X.shape}"
        )
    if y.size == 0:
        return _skipped("no annotated pixels", [], n_folds, {})

    classes_arr, _, _, group_class = _group_classes(y, groups)
    classes = [int(c) for c in classes_arr]
    stroke_counts = np.bincount(group_class, minlength=classes_arr.size)
    strokes = {c: int(n) for c, n in zip(classes, stroke_counts, strict=True)}
    if len(classes) < 2:
        return _skipped(
            f"only one class ({classes[0]}) is annotated; cross-validation needs at "
            "least two classes",
            classes,
            n_folds,
            strokes,
        )
    single = [c for c, n in strokes.items() if n < 2]
    if single:
        names = ", ".join(str(c) for c in single)
        plural = "es" if len(single) > 1 else ""
        return _skipped(
            f"class{plural} {names} {'have' if plural else 'has'} a single stroke; "
            "cross-validation holds out whole strokes and needs at least 2 separate "
            "strokes per class (draw more strokes to get an accuracy estimate)",
            classes,
            n_folds,
            strokes,
        )

    folds = stroke_folds(y, groups, n_folds=n_folds, seed=seed)
    k = len(classes)

    def run(fold: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        train_idx, test_idx = fold
        clf = make_classifier()
        clf.fit(X[train_idx], y[train_idx])
        return test_idx, np.asarray(clf.predict(X[test_idx])).ravel()

    if n_jobs > 1 and len(folds) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(n_jobs, len(folds))) as pool:
            predictions = list(pool.map(run, folds))
    else:
        predictions = [run(fold) for fold in folds]
    confusion = np.zeros((k, k), dtype=np.int64)
    fold_accuracy: list[float] = []
    for test_idx, pred in predictions:
        true_i = np.searchsorted(classes_arr, y[test_idx])
        pred_i = np.clip(np.searchsorted(classes_arr, pred), 0, k - 1)
        if not np.array_equal(classes_arr[pred_i], pred):
            unknown = sorted(set(np.unique(pred).tolist()) - set(classes))
            raise ValueError(f"classifier predicted unknown classes {unknown}")
        confusion += np.bincount(true_i * k + pred_i, minlength=k * k).reshape(k, k)
        fold_accuracy.append(float(np.mean(true_i == pred_i)))

    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    total = confusion.sum()
    return CrossValidation(
        n_folds=len(folds),
        classes=classes,
        confusion=confusion,
        accuracy=float(tp.sum() / total) if total else math.nan,
        miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
        per_class_iou={c: float(v) for c, v in zip(classes, iou, strict=True)},
        fold_accuracy=fold_accuracy,
        skipped_reason=None,
        n_folds_requested=n_folds,
        strokes_per_class=strokes,
        fold_sample_fraction=sample_fraction,
    )


# --------------------------------------------------------------------------------------
# Feature importances
# --------------------------------------------------------------------------------------


def _parse_feature_name(name: str) -> tuple[str, dict[str, str]]:
    """Split ``extractor|key=value|...`` into the extractor and its key/value parts.

    A part without ``=`` is kept under the key ``"tag"``; a repeated key keeps its
    last value.
    """
    extractor, *parts = str(name).split("|")
    pairs: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            pairs[key] = value
        elif part:
            pairs["tag"] = part
    return extractor or "(unnamed)", pairs


def _value_sort_key(value: str) -> tuple[int, float, str]:
    if value == ABSENT:
        return (2, 0.0, value)
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def aggregate_importances(
    importances: np.ndarray, feature_names: list[str], *, n_top: int = 20
) -> dict[str, Any]:
    """Sum feature importances per extractor and per ``key=value`` name part.

    Parameters
    ----------
    importances : np.ndarray
        ``(F,)`` importance of every feature (e.g. ``feature_importances_``).
    feature_names : list of str
        ``(F,)`` names such as ``"filters|filter=gaussian|sigma=1.6|ch=0"``.
    n_top : int, default 20
        Number of features listed in ``top_features``.

    Returns
    -------
    dict
        ``"total"``: the sum of all importances;
        ``"by_extractor"``: ``{extractor: total}``, summing to ``"total"``;
        ``"by_extractor_key"``: ``{extractor: {key: {value: total}}}`` where, for
        every key, the values sum to the extractor's total (features of that
        extractor without the key are counted under :data:`ABSENT`); values are
        ordered numerically when possible;
        ``"top_features"``: the ``n_top`` most important features as
        ``[{"name": ..., "importance": ...}]``, most important first.

    Raises
    ------
    ValueError
        If the numbers of importances and names differ.
    """
    values = np.asarray(importances, dtype=np.float64).ravel()
    names = [str(n) for n in feature_names]
    if values.size != len(names):
        raise ValueError(
            f"got {values.size} importances but {len(names)} feature names"
        )

    parsed = [_parse_feature_name(n) for n in names]
    by_extractor: dict[str, float] = {}
    members: dict[str, list[int]] = {}
    for i, (extractor, _) in enumerate(parsed):
        by_extractor[extractor] = by_extractor.get(extractor, 0.0) + float(values[i])
        members.setdefault(extractor, []).append(i)

    by_extractor_key: dict[str, dict[str, dict[str, float]]] = {}
    for extractor, idx in members.items():
        keys: list[str] = []
        for i in idx:
            keys.extend(k for k in parsed[i][1] if k not in keys)
        per_key: dict[str, dict[str, float]] = {}
        for key in keys:
            sums: dict[str, float] = {}
            for i in idx:
                value = parsed[i][1].get(key, ABSENT)
                sums[value] = sums.get(value, 0.0) + float(values[i])
            per_key[key] = {v: sums[v] for v in sorted(sums, key=_value_sort_key)}
        by_extractor_key[extractor] = per_key

    order = np.argsort(-values, kind="stable")[: max(int(n_top), 0)]
    top = [{"name": names[i], "importance": float(values[i])} for i in order]
    return {
        "total": float(values.sum()),
        "by_extractor": by_extractor,
        "by_extractor_key": by_extractor_key,
        "top_features": top,
    }


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Convert numpy types, paths and non-finite floats into plain JSON values."""
    if isinstance(obj, CrossValidation):
        return obj.as_dict()
    if isinstance(obj, Mapping):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return str(obj)


def build_report(
    *,
    training_seconds: float,
    samples_per_class: dict[int, int],
    cv: CrossValidation,
    importances: dict,
    extra: dict | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Assemble the training report as a JSON-serialisable dict.

    Parameters
    ----------
    training_seconds : float
        Wall-clock time of training the final classifier.
    samples_per_class : dict of int to int
        Number of annotated pixels of every class.
    cv : CrossValidation
        Result of :func:`cross_validate`.
    importances : dict
        Result of :func:`aggregate_importances`.
    extra : dict, optional
        Anything else the caller wants recorded (config, versions, paths); stored
        under ``"extra"``.
    timings : dict of str to float, optional
        Wall seconds of the training steps (``features_s``, ``fit_s``,
        ``cross_validation_s``, ...), stored under ``"timings"``.

    Returns
    -------
    dict
        Plain Python values only (numpy types converted, NaN and infinities
        replaced by None, mapping keys turned into strings).
    """
    counts = {int(c): int(n) for c, n in sorted(samples_per_class.items())}
    report = {
        "report_version": REPORT_VERSION,
        "training_seconds": training_seconds,
        "timings": dict(timings or {}),
        "n_samples": sum(counts.values()),
        "samples_per_class": counts,
        "cross_validation": cv.as_dict(),
        "feature_importance": {**importances, "note": _IMPORTANCE_NOTE},
        "extra": extra if extra is not None else {},
    }
    return _jsonable(report)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _draw_samples(ax: Any, report: Mapping[str, Any]) -> None:
    counts = report.get("samples_per_class") or {}
    cv = report.get("cross_validation") or {}
    strokes = cv.get("strokes_per_class") or {}
    ax.set_title("Annotated pixels per class")
    if not counts:
        ax.axis("off")
        ax.text(0.5, 0.5, "no annotated pixels", ha="center", va="center")
        return
    names = list(counts)
    x = np.arange(len(names))
    bars = ax.bar(x, [counts[n] for n in names], color="tab:blue")
    ax.set_xticks(x, [f"class {n}" for n in names])
    ax.set_ylabel("pixels")
    for bar, name in zip(bars, names, strict=True):
        n_strokes = strokes.get(name)
        label = f"{counts[name]}"
        if n_strokes is not None:
            label += f"\n{n_strokes} stroke{'s' if n_strokes != 1 else ''}"
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.margins(y=0.25)


def _draw_confusion(ax: Any, cv: Mapping[str, Any]) -> None:
    reason = cv.get("skipped_reason")
    if reason or not cv.get("classes"):
        ax.axis("off")
        ax.set_title("Cross-validation skipped")
        text = "\n".join(
            textwrap.wrap(
                str(reason or "no cross-validation"), 45, break_on_hyphens=False
            )
        )
        ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
        return
    classes = cv["classes"]
    counts = np.asarray(cv["confusion"], dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    k = len(classes)
    ticks = np.arange(k)
    ax.set_xticks(ticks, [str(c) for c in classes])
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 12:
        fontsize = 9 if k <= 6 else 7
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.0%}\n{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(
        f"Stroke-held-out CV ({cv.get('n_folds')} folds)\n"
        f"accuracy {_fmt(cv.get('accuracy'))}, mIoU {_fmt(cv.get('miou'))}",
        fontsize=10,
    )


_UNINFORMATIVE_KEYS = {"k", "unit"}


def _importance_panels(
    importances: Mapping[str, Any], max_panels: int, max_values: int
) -> list[tuple[str, dict[str, float]]]:
    """Pick the (title, {label: total}) bar charts worth drawing."""
    panels: list[tuple[str, dict[str, float]]] = []
    by_extractor = importances.get("by_extractor") or {}
    if by_extractor:
        panels.append(("importance per extractor", dict(by_extractor)))
    for extractor, keys in (importances.get("by_extractor_key") or {}).items():
        for key, values in keys.items():
            # eigenvalue indices and per-unit/channel ids tell a reader little; the
            # JSON keeps them all
            if key in _UNINFORMATIVE_KEYS:
                continue
            if 2 <= len(values) <= max_values:
                panels.append((f"{extractor}: importance per {key}", dict(values)))
    return panels[:max_panels]


def _draw_bars(ax: Any, title: str, values: Mapping[str, float]) -> None:
    labels = list(values)
    heights = [v if v is not None else 0.0 for v in values.values()]
    y = np.arange(len(labels))
    ax.barh(y, heights, color="tab:orange")
    ax.set_yticks(y, labels, fontsize=8 if len(labels) <= 15 else 6)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("summed importance")


def _render_figure(report: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    importances = report.get("feature_importance") or {}
    panels = _importance_panels(importances, max_panels=8, max_values=30)
    n_cols = 2
    n_imp_rows = max(1, math.ceil(len(panels) / n_cols))
    fig = Figure(figsize=(11, 4.2 * (1 + n_imp_rows)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1 + n_imp_rows, n_cols)

    _draw_samples(fig.add_subplot(grid[0, 0]), report)
    _draw_confusion(fig.add_subplot(grid[0, 1]), report.get("cross_validation") or {})
    if panels:
        for i, (title, values) in enumerate(panels):
            _draw_bars(
                fig.add_subplot(grid[1 + i // n_cols, i % n_cols]), title, values
            )
    else:
        ax = fig.add_subplot(grid[1, :])
        ax.axis("off")
        ax.text(0.5, 0.5, "no feature importances", ha="center", va="center")

    seconds = report.get("training_seconds")
    fig.suptitle(
        f"convpaint training report: {report.get('n_samples', 0)} annotated pixels, "
        f"training {_fmt(seconds, '.1f')} s"
    )
    fig.savefig(path, format="png", dpi=100)


def write_report(report: dict, json_path: Path, png_path: Path) -> tuple[Path, Path]:
    """Write the report as indented JSON and as one PNG figure, each atomically.

    The figure has a bar chart of annotated pixels (and strokes) per class, the
    row-normalised cross-validation confusion matrix annotated with counts (or the
    reason cross-validation was skipped), and horizontal bar charts of summed
    importances per extractor and per name key (scale, filter, sigma, ...; keys
    with a single value or more than 30 values are left out of the figure but
    are in the JSON).

    Parameters
    ----------
    report : dict
        Result of :func:`build_report`.
    json_path : Path
        Where the JSON goes; its folder is created.
    png_path : Path
        Where the PNG goes; its folder is created.

    Returns
    -------
    tuple of Path
        ``(json_path, png_path)``.
    """
    json_path = Path(json_path)
    png_path = Path(png_path)
    clean = _jsonable(report)
    text = json.dumps(clean, indent=2, allow_nan=False) + "\n"
    with atomic_output(png_path) as tmp:
        _render_figure(clean, tmp)
    with atomic_output(json_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return json_path, png_path
