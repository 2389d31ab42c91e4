"""Random forest on object measurements: fit with scikit-learn, predict with plain numpy.

The fitted trees are kept as node arrays (children, split feature, threshold, class
fractions) — what the model file stores — and evaluated by :class:`NodeForest`, so a
loaded model needs no pickle and no scikit-learn internals. Object counts are small
(thousands to a few million), so a vectorised descent through all trees at once is
fast enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from convpaint.config.objects import ObjectForestConfig

__all__ = ["NodeForest", "fit_forest"]

#: Objects evaluated at once (bounds the (objects x trees) index matrix).
_CHUNK = 16384


@dataclass
class NodeForest:
    """Trees as flat node arrays; node ``offsets[t]`` is the root of tree ``t``.

    Leaves have ``left == right == -1``. Child indices are relative to their tree.
    ``value`` holds each node's class fractions (rows sum to 1).
    """

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    value: NDArray[np.float64]
    offsets: NDArray[np.int64]
    n_features: int

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.offsets) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store (names are the model file's entries)."""
        return {
            "left": self.left,
            "right": self.right,
            "feature": self.feature,
            "threshold": self.threshold,
            "value": self.value,
            "offsets": self.offsets,
        }

    def validate(self) -> str | None:
        """Why the arrays cannot be a valid forest, or None when they can.

        Checks sizes, that every child index stays inside its own tree and points
        forward (so every descent ends), and that split features exist.
        """
        n = len(self.left)
        if not (
            len(self.right) == len(self.feature) == len(self.threshold) == n
            and self.value.ndim == 2
            and len(self.value) == n
            and self.offsets.ndim == 1
            and len(self.offsets) >= 2
        ):
            return "node arrays have inconsistent sizes"
        if (
            self.offsets[0] != 0
            or self.offsets[-1] != n
            or (np.diff(self.offsets) < 1).any()
        ):
            return "tree offsets are not increasing from 0 to the node count"
        tree_of = np.repeat(np.arange(self.n_trees), np.diff(self.offsets))
        local = np.arange(n) - self.offsets[tree_of]
        size = np.diff(self.offsets)[tree_of]
        leaf = self.left == -1
        if ((self.right == -1) != leaf).any():
            return "a node has exactly one child"
        inner = ~leaf
        for child in (self.left, self.right):
            c = child[inner]
            if ((c <= local[inner]) | (c >= size[inner])).any():
                return "a child index points outside its tree or backwards"
        f = self.feature[inner]
        if ((f < 0) | (f >= self.n_features)).any():
            return "a split refers to a feature beyond the feature count"
        if (
            not np.isfinite(self.threshold[inner]).all()
            or not np.isfinite(self.value).all()
        ):
            return "thresholds or leaf values are not finite"
        return None

    def predict_proba(self, features: NDArray[np.floating]) -> NDArray[np.float64]:
        """Mean class fractions over the trees, shape ``(n_objects, n_classes)``.

        Features are compared as float32, as scikit-learn does, so results equal
        ``RandomForestClassifier.predict_proba`` of the forest the arrays came from.
        """
        x = np.asarray(features, np.float32)
        out = np.zeros((len(x), self.value.shape[1]))
        roots = self.offsets[:-1]
        for a in range(0, len(x), _CHUNK):
            xs = x[a : a + _CHUNK]
            rows = np.arange(len(xs))[:, None]
            node = np.broadcast_to(roots, (len(xs), self.n_trees)).copy()
            while True:
                left = self.left[node]
                active = left != -1
                if not active.any():
                    break
                feat = self.feature[node]
                go_left = xs[rows, np.where(active, feat, 0)] <= self.threshold[node]
                child = np.where(go_left, left, self.right[node])
                node = np.where(active, roots + child, node)
            out[a : a + _CHUNK] = self.value[node].mean(axis=1)
        return out


def fit_forest(
    features: NDArray[np.float32],
    classes: NDArray[np.int64],
    config: ObjectForestConfig,
    *,
    seed: int,
    n_jobs: int,
) -> tuple[NodeForest, NDArray[np.float64]]:
    """Fit a random forest and export it as node arrays.

    Parameters
    ----------
    features : array of shape ``(n_objects, n_features)``
        Object measurements.
    classes : array of shape ``(n_objects,)``
        Class of each object (all > 0).
    config : ObjectForestConfig
        Forest settings.
    seed : int
        Random seed.
    n_jobs : int
        Threads for fitting.

    Returns
    -------
    (NodeForest, importances)
        The forest (class columns in ascending class order) and the impurity-based
        feature importances.
    """
    from convpaint.classify import make_forest

    forest = make_forest(config, seed=seed, n_jobs=n_jobs)
    forest.fit(np.asarray(features, np.float32), classes)
    lefts, rights, feats, thresholds, values, sizes = [], [], [], [], [], []
    for est in forest.estimators_:
        tree = est.tree_
        lefts.append(tree.children_left.astype(np.int64))
        rights.append(tree.children_right.astype(np.int64))
        feats.append(
            np.where(tree.children_left == -1, 0, tree.feature).astype(np.int64)
        )
        thresholds.append(
            np.where(tree.children_left == -1, 0.0, tree.threshold).astype(np.float64)
        )
        v = tree.value[:, 0, :].astype(np.float64)
        values.append(v / v.sum(axis=1, keepdims=True))
        sizes.append(tree.node_count)
    nodes = NodeForest(
        left=np.concatenate(lefts),
        right=np.concatenate(rights),
        feature=np.concatenate(feats),
        threshold=np.concatenate(thresholds),
        value=np.concatenate(values),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        n_features=int(features.shape[1]),
    )
    return nodes, np.asarray(forest.feature_importances_, np.float64)
