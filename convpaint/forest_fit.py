"""Random forests fitted on binned features: convpaint's default trainer.

A random forest in Breiman's sense, as scikit-learn's ``RandomForestClassifier``
grows it (bootstrap samples, ``max_features`` features drawn per node, Gini splits,
trees grown until their leaves are pure, leaves holding class fractions), except
that split candidates come from histograms: each feature is cut once into at most
``max_bins`` quantile bins (one bin per value when it has fewer distinct values),
and a node finds its best split by one pass over its samples per feature tried,
instead of sorting them. The threshold between two bins is the midpoint between the
largest training value below and the smallest above, so the training samples go
where the histogram said. LightGBM and scikit-learn's histogram gradient boosting
find splits the same way.

**Why not scikit-learn.** Pixel classifiers fit small forests on ~10k annotated
pixels whose strokes make the classes easy to separate: the trees have ~15-25
nodes. scikit-learn sorts the samples of every feature tried at every node, and its
per-tree set-up dominates at this size: 50 trees take ~0.4 s on 2 cores, more than
the features of a 1 Mpx image. The compiled trainer here takes a few hundredths of
a second (``benchmarks/speed.py``), and the accuracy table shows no loss
(``benchmarks/results/accuracy.md``). ``classifier.algorithm: sklearn`` still fits
scikit-learn's forest.

The result is stored and evaluated exactly like a scikit-learn forest
(:func:`convpaint.forest.node_arrays` reads :attr:`FittedForest.node_tables`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from convpaint.forest import _import_kernels, _split_rows

__all__ = ["FittedForest", "bin_features", "fit_histogram_forest"]


@dataclass
class FittedForest:
    """A fitted forest as node tables, with scikit-learn's attribute names where
    convpaint reads them (``classes_``, ``n_classes_``, ``n_features_in_``,
    ``feature_importances_``)."""

    node_tables: dict[str, NDArray]
    classes_: NDArray[np.int64]
    n_features_in_: int

    @property
    def n_classes_(self) -> int:
        return len(self.classes_)

    @property
    def n_estimators(self) -> int:
        return len(self.node_tables["node_offsets"]) - 1

    @property
    def feature_importances_(self) -> NDArray[np.float64]:
        """Mean decrease in impurity per feature, as scikit-learn defines it: per
        tree the weighted impurity decrease of its splits, over the root's weight,
        normalised to sum 1; averaged over the trees and normalised again."""
        t = self.node_tables
        offsets = t["node_offsets"]
        out = np.zeros(self.n_features_in_)
        for a, b in itertools.pairwise(offsets):
            left, right = t["left_child"][a:b], t["right_child"][a:b]
            split = np.flatnonzero(left >= 0)
            if len(split) == 0:
                continue
            wi = t["weighted_n_node_samples"][a:b] * t["impurity"][a:b]
            gain = wi[split] - wi[left[split]] - wi[right[split]]
            tree = np.bincount(
                t["feature"][a:b][split], weights=gain, minlength=self.n_features_in_
            )
            tree /= t["weighted_n_node_samples"][a]
            if tree.sum() > 0:
                out += tree / tree.sum()
        total = out.sum()
        return out / total if total > 0 else out


def bin_features(
    features: NDArray[np.float32], max_bins: int, *, n_jobs: int = 1
) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32], NDArray]:
    """Cut every feature into quantile bins.

    Returns
    -------
    codes : uint8 ``(F, n)``
        Bin of every value, feature-major.
    lo, hi : float32 ``(F, max_bins)``
        Smallest and largest value in each bin.
    n_bins : int64 ``(F,)``
    """
    if not 2 <= max_bins <= 256:
        raise ValueError(f"max_bins must be in 2..256, got {max_bins}")
    kernels = _import_kernels("_fit_kernels")
    n, n_feat = features.shape
    columns = np.ascontiguousarray(features.T)
    codes = np.empty((n_feat, n), np.uint8)
    lo = np.zeros((n_feat, max_bins), np.float32)
    hi = np.zeros((n_feat, max_bins), np.float32)
    n_bins = np.zeros(n_feat, np.int64)

    ordered = np.empty_like(columns)

    def some(a: int, b: int) -> None:
        # numpy's vectorised sort (the compiled kernels sort several times slower)
        ordered[a:b] = np.sort(columns[a:b], axis=1)
        kernels.bin_columns(columns, ordered, max_bins, codes, lo, hi, n_bins, a, b)

    _split_rows(n_feat, n_jobs, 1, some)
    return codes, lo, hi, n_bins


def _mtry(max_features: str | float | None, n_features: int) -> int:
    """Features tried per split, as scikit-learn resolves ``max_features``."""
    if max_features is None:
        return n_features
    if max_features == "sqrt":
        return max(1, int(math.sqrt(n_features)))
    if max_features == "log2":
        return max(1, int(math.log2(n_features)))
    return max(1, int(float(max_features) * n_features))


def _class_weights(y: NDArray[np.int64], n_classes: int) -> NDArray[np.float64]:
    # scikit-learn's "balanced": n / (n_classes * count), per class index
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    out = np.zeros(n_classes)
    out[present] = len(y) / (np.count_nonzero(present) * counts[present])
    return out


def fit_histogram_forest(
    features: NDArray[np.float32],
    labels: NDArray,
    *,
    n_estimators: int,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    max_features: str | float | None = "sqrt",
    class_weight: str | None = None,
    max_bins: int = 256,
    seed: int = 0,
    n_jobs: int = 1,
) -> FittedForest:
    """Fit a random forest classifier on binned features.

    Parameters
    ----------
    features : float32 ``(n, F)``
        Finite values.
    labels : ``(n,)`` integers
        Class values (at least one sample).
    n_estimators, max_depth, min_samples_leaf, max_features, class_weight
        As scikit-learn's ``RandomForestClassifier`` (``class_weight``: None,
        ``"balanced"`` or ``"balanced_subsample"``).
    max_bins : int
        Bins per feature, 2..256.
    seed : int
        The forest is a function of the seed and the data only (not of ``n_jobs``).
    n_jobs : int
        Trees built side by side.

    Returns
    -------
    FittedForest
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"features {features.shape} and labels {np.shape(labels)} do not match"
        )
    if not np.isfinite(features).all():
        raise ValueError("features must be finite")
    kernels = _import_kernels("_fit_kernels")
    classes, y = np.unique(np.asarray(labels), return_inverse=True)
    y = y.astype(np.int64)
    n, n_feat = features.shape
    k = len(classes)
    codes, lo, hi, _ = bin_features(features, max_bins, n_jobs=n_jobs)
    mtry = _mtry(max_features, n_feat)
    seeds = np.random.SeedSequence(seed).generate_state(n_estimators, np.uint32)
    base = _class_weights(y, k)[y] if class_weight == "balanced" else np.ones(n)
    cap = 2 * n - 1
    trees: list[dict[str, NDArray]] = [{}] * n_estimators

    def some(a: int, b: int) -> None:
        # node tables with room for any tree, reused by this range's trees
        tables = {
            "left_child": np.empty(cap, np.int64),
            "right_child": np.empty(cap, np.int64),
            "feature": np.empty(cap, np.int64),
            "threshold": np.empty(cap, np.float64),
            "values": np.empty((cap, k), np.float64),
            "impurity": np.empty(cap, np.float64),
            "n_node_samples": np.empty(cap, np.int64),
            "weighted_n_node_samples": np.empty(cap, np.float64),
        }
        for t in range(a, b):
            count, depth = kernels.build_tree(
                codes,
                y,
                base,
                class_weight == "balanced_subsample",
                k,
                lo,
                hi,
                mtry,
                -1 if max_depth is None else int(max_depth),
                int(min_samples_leaf),
                int(seeds[t]),
                *tables.values(),
            )
            trees[t] = {name: v[:count].copy() for name, v in tables.items()}
            trees[t]["depth"] = np.array([depth], np.int64)

    _split_rows(n_estimators, n_jobs, 1, some)
    names = ["left_child", "right_child", "feature", "threshold", "impurity"]
    names += ["n_node_samples", "weighted_n_node_samples", "values"]
    tables = {name: np.concatenate([t[name] for t in trees]) for name in names}
    tables["missing_go_to_left"] = np.zeros(len(tables["feature"]), np.uint8)
    sizes = [len(t["feature"]) for t in trees]
    tables["node_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    tables["max_depths"] = np.concatenate([t["depth"] for t in trees])
    return FittedForest(
        node_tables=tables, classes_=classes.astype(np.int64), n_features_in_=n_feat
    )
