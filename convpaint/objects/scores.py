"""Object-level scores: match predicted to ground-truth objects, count per class.

A predicted object matches a ground-truth object when their intersection over union
exceeds a threshold of at least 0.5, which makes matches unique (two objects cannot
both overlap a third by more than half of their union). For each class ``c``:

- TP: matched pairs where both objects have class ``c``;
- FP: predicted objects of class ``c`` that are not such a pair (unmatched, or
  matched to an object of another class);
- FN: ground-truth objects of class ``c`` that are not such a pair.

F1 = 2 TP / (2 TP + FP + FN); macro-F1 is its mean over the ground-truth classes.
When the prediction classifies the ground-truth objects themselves, every object is
matched and these are the usual classification precision, recall and F1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.io.atomic import atomic_output

from .io import iter_blocks, write_table

__all__ = [
    "ObjectScores",
    "format_scores",
    "match_objects",
    "pool_scores",
    "score_objects",
    "write_scores",
]


def match_objects(
    truth: Any, predicted: Any, *, block: Sequence[int], iou_threshold: float = 0.5
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pairs (ground-truth id, predicted id) whose IoU exceeds ``iou_threshold``.

    Both masks are read block by block; intersections and areas are summed over blocks.
    """
    inter_parts, gt_parts, pr_parts = [], [], []
    for where in iter_blocks(truth.shape, block):
        g = np.asarray(truth[where]).astype(np.int64).ravel()
        p = np.asarray(predicted[where]).astype(np.int64).ravel()
        gt_parts.append(np.unique(g[g > 0], return_counts=True))
        pr_parts.append(np.unique(p[p > 0], return_counts=True))
        both = (g > 0) & (p > 0)
        if both.any():
            pairs, counts = np.unique(
                np.stack([g[both], p[both]], 1), axis=0, return_counts=True
            )
            inter_parts.append((pairs, counts))

    def total(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, int]:
        out: dict[int, int] = {}
        for ids, counts in parts:
            for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                out[i] = out.get(i, 0) + c
        return out

    gt_area, pr_area = total(gt_parts), total(pr_parts)
    if not inter_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.concatenate([p for p, _ in inter_parts])
    counts = np.concatenate([c for _, c in inter_parts])
    pairs, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inter = np.bincount(inverse.ravel(), weights=counts)
    union = (
        np.array([gt_area[g] for g in pairs[:, 0]])
        + np.array([pr_area[p] for p in pairs[:, 1]])
        - inter
    )
    good = inter / union > iou_threshold
    return pairs[good, 0], pairs[good, 1]


@dataclass
class ObjectScores:
    """Counts and scores of one image (or pooled over images)."""

    name: str
    classes: list[int]
    n_truth: int
    n_predicted: int
    n_matched: int
    tp: dict[int, int] = field(default_factory=dict)
    fp: dict[int, int] = field(default_factory=dict)
    fn: dict[int, int] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    """Matched pairs: rows = ground-truth class, columns = predicted class (``classes`` order)."""

    def f1(self, c: int) -> float:
        """F1 of class ``c`` (NaN when the class appears nowhere)."""
        denom = 2 * self.tp[c] + self.fp[c] + self.fn[c]
        return 2 * self.tp[c] / denom if denom else float("nan")

    def precision(self, c: int) -> float:
        """Precision of class ``c``."""
        denom = self.tp[c] + self.fp[c]
        return self.tp[c] / denom if denom else float("nan")

    def recall(self, c: int) -> float:
        """Recall of class ``c``."""
        denom = self.tp[c] + self.fn[c]
        return self.tp[c] / denom if denom else float("nan")

    @property
    def truth_classes(self) -> list[int]:
        """Classes present in the ground truth."""
        return [c for c in self.classes if self.tp[c] + self.fn[c] > 0]

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the ground-truth classes."""
        values = [self.f1(c) for c in self.truth_classes]
        return float(np.mean(values)) if values else float("nan")

    @property
    def accuracy(self) -> float:
        """Share of matched objects whose class is right."""
        conf = np.asarray(self.confusion)
        return (
            float(np.trace(conf) / conf.sum())
            if conf.size and conf.sum()
            else float("nan")
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        d = asdict(self)
        d["per_class"] = {
            str(c): {
                "precision": self.precision(c),
                "recall": self.recall(c),
                "f1": self.f1(c),
            }
            for c in self.classes
        }
        d["macro_f1"] = self.macro_f1
        d["accuracy"] = self.accuracy
        for key in ("tp", "fp", "fn"):
            d[key] = {str(k): v for k, v in d[key].items()}
        return d


def score_objects(
    name: str,
    truth_classes: dict[int, int],
    predicted_classes: dict[int, int],
    matches: tuple[NDArray[np.int64], NDArray[np.int64]],
    classes: Sequence[int],
) -> ObjectScores:
    """Per-class TP/FP/FN and the confusion of matched objects of one image.

    ``truth_classes``/``predicted_classes`` map object ids to classes (objects absent
    from the maps are not counted).
    """
    classes = sorted(
        set(classes) | set(truth_classes.values()) | set(predicted_classes.values())
    )
    index = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), np.int64)
    tp = dict.fromkeys(classes, 0)
    matched_gt, matched_pr = set(), set()
    for g, p in zip(matches[0].tolist(), matches[1].tolist(), strict=True):
        if g not in truth_classes or p not in predicted_classes:
            continue
        gc, pc = truth_classes[g], predicted_classes[p]
        conf[index[gc], index[pc]] += 1
        matched_gt.add(g)
        matched_pr.add(p)
        if gc == pc:
            tp[gc] += 1
    n_truth = dict.fromkeys(classes, 0)
    n_pred = dict.fromkeys(classes, 0)
    for c in truth_classes.values():
        n_truth[c] += 1
    for c in predicted_classes.values():
        n_pred[c] += 1
    return ObjectScores(
        name=name,
        classes=list(classes),
        n_truth=len(truth_classes),
        n_predicted=len(predicted_classes),
        n_matched=len(matched_gt),
        tp=tp,
        fp={c: n_pred[c] - tp[c] for c in classes},
        fn={c: n_truth[c] - tp[c] for c in classes},
        confusion=conf.tolist(),
    )


def pool_scores(scores: Sequence[ObjectScores], name: str = "pooled") -> ObjectScores:
    """Counts summed over images (F1 then weights every object equally)."""
    classes = sorted({c for s in scores for c in s.classes})
    conf = np.zeros((len(classes), len(classes)), np.int64)
    for s in scores:
        idx = [classes.index(c) for c in s.classes]
        conf[np.ix_(idx, idx)] += np.asarray(s.confusion, np.int64).reshape(
            len(idx), len(idx)
        )

    def add(key: str) -> dict[int, int]:
        return {c: sum(getattr(s, key).get(c, 0) for s in scores) for c in classes}

    return ObjectScores(
        name=name,
        classes=classes,
        n_truth=sum(s.n_truth for s in scores),
        n_predicted=sum(s.n_predicted for s in scores),
        n_matched=sum(s.n_matched for s in scores),
        tp=add("tp"),
        fp=add("fp"),
        fn=add("fn"),
        confusion=conf.tolist(),
    )


def _row(s: ObjectScores, classes: Sequence[int]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "image": s.name,
        "objects_truth": s.n_truth,
        "objects_predicted": s.n_predicted,
        "matched": s.n_matched,
        "accuracy": s.accuracy,
        "macro_f1": s.macro_f1,
    }
    for c in classes:
        present = c in s.classes
        row[f"precision_{c}"] = s.precision(c) if present else float("nan")
        row[f"recall_{c}"] = s.recall(c) if present else float("nan")
        row[f"f1_{c}"] = s.f1(c) if present else float("nan")
    return row


def write_scores(scores: Sequence[ObjectScores], output_dir: Path) -> list[Path]:
    """``objects_evaluation.csv`` (one row per image plus the pooled row, with
    per-class precision, recall and F1), ``objects_evaluation.json`` (everything,
    including each image's confusion matrix) and ``objects_evaluation_confusion.csv``
    (the pooled confusion of matched objects: rows true, columns predicted class)."""
    pooled = pool_scores(scores)
    rows = [_row(s, pooled.classes) for s in [*scores, pooled]]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    csv_path = write_table(output_dir / "objects_evaluation.csv", columns)
    k = len(pooled.classes)
    conf = np.asarray(pooled.confusion, np.int64).reshape(k, k)
    confusion = {"true_class": list(pooled.classes)}
    for j, c in enumerate(pooled.classes):
        confusion[f"predicted_{c}"] = conf[:, j].tolist()
    conf_path = write_table(output_dir / "objects_evaluation_confusion.csv", confusion)
    json_path = output_dir / "objects_evaluation.json"
    with atomic_output(json_path) as tmp:
        tmp.write_text(
            json.dumps(
                {"images": [s.as_dict() for s in scores], "pooled": pooled.as_dict()},
                indent=2,
                default=float,
            )
        )
    return [csv_path, json_path, conf_path]


def format_scores(scores: Sequence[ObjectScores]) -> str:
    """A plain-text table: per image and pooled."""
    pooled = pool_scores(scores)
    head = [
        "image",
        "objects",
        "matched",
        "accuracy",
        "macro-F1",
        *[f"F1 {c}" for c in pooled.classes],
    ]
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for s in [*scores, pooled]:
        cells = [
            s.name[:10],
            str(s.n_truth),
            str(s.n_matched),
            f"{s.accuracy:.3f}",
            f"{s.macro_f1:.3f}",
            *[f"{s.f1(c):.3f}" if c in s.classes else "-" for c in pooled.classes],
        ]
        lines.append("  ".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)
