"""The training report of an object model: what it learnt from, how well it does.

Cross-validation holds out whole objects (stratified k-fold over the objects) and,
with two or more training images, whole images (leave one image out: the honest
estimate for new images, since objects of one image share staining and focus).
Objects are the unit; there are no strokes to keep together. The forest is refitted
per fold with the model's own settings and seed. For the network, whose training
costs minutes, the report gives the scores on the held-out validation share and
the loss curves instead.

Written as JSON and one PNG figure, each atomically, next to the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.io.atomic import atomic_output
from convpaint.report import stroke_folds

__all__ = [
    "REPORT_VERSION",
    "classification_scores",
    "cross_validate_objects",
    "importance_groups",
    "report_paths",
    "write_training_report",
]

#: Version of the JSON layout.
REPORT_VERSION = 1

_BY_OBJECT_NOTE = (
    "Stratified k-fold over objects: every object is predicted once by a forest "
    "trained on the other folds. Objects of one image share staining and focus, so "
    "this is optimistic for new images; see by_image."
)
_BY_IMAGE_NOTE = (
    "Leave one image out: each image's objects are predicted by a forest trained on "
    "the other images (folds whose other images lack a class are skipped)."
)


def report_paths(model: Path, table_format: str) -> tuple[Path, Path, Path]:
    """``{model}_report.json``, ``{model}_report.png`` and the feature table."""
    stem = model.with_suffix("")
    return (
        stem.with_name(stem.name + "_report.json"),
        stem.with_name(stem.name + "_report.png"),
        stem.with_name(stem.name + f"_features.{table_format}"),
    )


def classification_scores(
    true: Sequence[int] | NDArray,
    predicted: Sequence[int] | NDArray,
    classes: list[int],
) -> dict[str, Any]:
    """Per-class precision, recall and F1, macro-F1, accuracy and the confusion
    matrix (rows: true class, columns: predicted class, in ``classes`` order)."""
    t = np.searchsorted(classes, np.asarray(true, np.int64))
    p = np.searchsorted(classes, np.asarray(predicted, np.int64))
    k = len(classes)
    conf = (
        np.bincount(t * k + p, minlength=k * k).reshape(k, k) if k else np.zeros((0, 0))
    )
    tp = np.diag(conf).astype(float)
    per_class = {}
    for i, c in enumerate(classes):
        n_pred, n_true = conf[:, i].sum(), conf[i].sum()
        precision = tp[i] / n_pred if n_pred else math.nan
        recall = tp[i] / n_true if n_true else math.nan
        denom = n_pred + n_true
        per_class[c] = {
            "precision": precision,
            "recall": recall,
            "f1": 2 * tp[i] / denom if denom else math.nan,
            "objects": int(n_true),
        }
    f1 = [v["f1"] for v in per_class.values() if v["objects"]]
    return {
        "n_objects": int(conf.sum()),
        "accuracy": float(tp.sum() / conf.sum()) if conf.sum() else math.nan,
        "macro_f1": float(np.mean(f1)) if f1 else math.nan,
        "per_class": per_class,
        "classes": classes,
        "confusion": conf,
    }


def cross_validate_objects(
    features: NDArray[np.float32],
    classes: NDArray[np.int64],
    images: NDArray[np.int64],
    fit_predict: Callable[[NDArray, NDArray, NDArray], NDArray],
    *,
    n_folds: int,
    seed: int,
    image_names: Sequence[str],
) -> dict[str, Any]:
    """Cross-validation by object (stratified k-fold) and by image (leave one out).

    Parameters
    ----------
    features : array ``(n, F)``
        Object features.
    classes : array ``(n,)``
        Class of every object.
    images : array ``(n,)``
        Index of the training image of every object.
    fit_predict : callable
        ``fit_predict(x_train, y_train, x_test) -> predicted classes``.
    n_folds : int
        Requested folds by object (reduced to the smallest class's object count).
    seed : int
        Seed of the fold assignment.
    image_names : sequence of str
        Names of the images, by index.

    Returns
    -------
    dict
        ``{"by_object": ..., "by_image": ...}``; each holds the pooled scores of
        :func:`classification_scores` plus its folds, or ``skipped_reason``.
    """
    labels = sorted(int(c) for c in np.unique(classes))
    out: dict[str, Any] = {}
    folds = stroke_folds(classes, np.arange(len(classes)), n_folds=n_folds, seed=seed)
    predicted = np.zeros_like(classes)
    for train, test in folds:
        predicted[test] = fit_predict(features[train], classes[train], features[test])
    out["by_object"] = {
        "method": "stratified k-fold over objects",
        "n_folds": len(folds),
        **classification_scores(classes, predicted, labels),
        "note": _BY_OBJECT_NOTE,
    }
    n_images = len(np.unique(images))
    if n_images < 2:
        out["by_image"] = {
            "method": "leave one image out",
            "skipped_reason": "a single training image; by-image cross-validation "
            "needs at least two",
        }
        return out
    done = np.zeros(len(classes), bool)
    per_image, skipped = [], []
    for i in np.unique(images):
        test = images == i
        train = ~test
        if len(np.unique(classes[train])) < 2:
            skipped.append(image_names[i])
            continue
        predicted[test] = fit_predict(features[train], classes[train], features[test])
        done |= test
        scores = classification_scores(classes[test], predicted[test], labels)
        per_image.append(
            {
                "image": image_names[i],
                "objects": int(test.sum()),
                "accuracy": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
            }
        )
    if not done.any():
        out["by_image"] = {
            "method": "leave one image out",
            "skipped_reason": "every image holds all objects of some class",
        }
        return out
    out["by_image"] = {
        "method": "leave one image out",
        "n_folds": len(per_image),
        **classification_scores(classes[done], predicted[done], labels),
        "images": per_image,
        "skipped_images": skipped,
        "note": _BY_IMAGE_NOTE,
    }
    return out


def _group_of(name: str) -> str:
    """The group a feature column belongs to (shape, intensity, ring, pixel)."""
    if name.startswith("pixel_mean|"):
        return "pixel features: " + name.split("|")[1]
    if name.startswith(("ring_", "contrast_")):
        return "ring, channel " + name.rsplit("_c", 1)[1]
    if "_c" in name and name.rsplit("_c", 1)[1].isdigit():
        return "inside, channel " + name.rsplit("_c", 1)[1]
    return "shape"


def importance_groups(
    names: Sequence[str], importances: NDArray[np.float64], n_top: int = 20
) -> dict[str, Any]:
    """Importances summed per group (shape, inside/ring per channel, pixel
    features per extractor) and the most important single features."""
    groups: dict[str, float] = {}
    for name, value in zip(names, importances, strict=True):
        key = _group_of(name)
        groups[key] = groups.get(key, 0.0) + float(value)
    order = np.argsort(-np.asarray(importances), kind="stable")[:n_top]
    return {
        "by_group": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
        "top_features": [
            {"name": names[i], "importance": float(importances[i])} for i in order
        ],
        "all": {n: float(v) for n, v in zip(names, importances, strict=True)},
        "note": "Impurity-based importances of the final forest (mean decrease in "
        "impurity, summing to 1); correlated features share importance.",
    }


def _plain(obj: Any) -> Any:
    """Plain JSON values: numpy types converted, NaN/inf as None, keys as strings."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# --------------------------------------------------------------------------- figure
def _confusion(ax: Any, scores: Mapping[str, Any] | None, title: str) -> None:
    if not scores or scores.get("skipped_reason") or not scores.get("classes"):
        ax.axis("off")
        reason = (scores or {}).get("skipped_reason", "not computed")
        ax.set_title(f"{title}: skipped", fontsize=10)
        ax.text(0.5, 0.5, str(reason), ha="center", va="center", wrap=True, fontsize=8)
        return
    classes = scores["classes"]
    counts = np.asarray(scores["confusion"], float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes])
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    f1 = scores.get("macro_f1")
    acc = scores.get("accuracy")
    ax.set_title(
        f"{title}\nmacro-F1 {f1 if f1 is None else format(f1, '.3f')}, "
        f"accuracy {acc if acc is None else format(acc, '.3f')}",
        fontsize=10,
    )


def _bars(ax: Any, title: str, values: Mapping[str, float]) -> None:
    labels = list(values)
    y = np.arange(len(labels))
    ax.barh(y, [values[k] or 0.0 for k in labels], color="tab:orange")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)


def _render(report: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    importance = report.get("feature_importance") or {}
    rows = 2 if importance else 1
    fig = Figure(figsize=(13, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, 3)
    counts = report.get("objects_per_class", {})
    ax = fig.add_subplot(grid[0, 0])
    ax.bar([f"class {c}" for c in counts], list(counts.values()), color="tab:blue")
    ax.set_title("Training objects per class", fontsize=10)
    cv = report.get("cross_validation") or {}
    if cv:
        _confusion(fig.add_subplot(grid[0, 1]), cv.get("by_object"), "CV by object")
        _confusion(
            fig.add_subplot(grid[0, 2]),
            cv.get("by_image"),
            "CV by image (leave one out)",
        )
    else:
        _confusion(
            fig.add_subplot(grid[0, 1]),
            report.get("validation"),
            "Held-out validation objects",
        )
        ax = fig.add_subplot(grid[0, 2])
        history = report.get("history") or {}
        loss = history.get("loss", [])
        ax.plot(range(1, len(loss) + 1), loss, label="training loss")
        if history.get("val_loss"):
            val = history["val_loss"]
            ax.plot(range(1, len(val) + 1), val, label="validation loss")
        if history.get("best_epoch"):
            ax.axvline(history["best_epoch"], color="grey", ls=":", label="kept")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.set_title("Loss per epoch", fontsize=10)
    if importance:
        _bars(
            fig.add_subplot(grid[1, 0]),
            "Importance per group",
            importance.get("by_group", {}),
        )
        top = {t["name"]: t["importance"] for t in importance.get("top_features", [])}
        _bars(fig.add_subplot(grid[1, 1:]), "Most important features", top)
    fig.suptitle(
        f"convpaint object model ({report.get('kind')}): "
        f"{report.get('n_objects', 0)} objects in {report.get('n_images', 0)} image(s), "
        f"training {report.get('training_seconds', 0):.1f} s"
    )
    fig.savefig(path, format="png", dpi=100)


def write_training_report(
    report: dict[str, Any], json_path: Path, png_path: Path
) -> tuple[Path, Path]:
    """Write the report as JSON (NaN as null) and as a PNG figure, atomically."""
    clean = _plain({"report_version": REPORT_VERSION, **report})
    with atomic_output(png_path) as tmp:
        _render(clean, tmp)
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    return json_path, png_path
