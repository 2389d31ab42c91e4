"""A model file's forest rebuilt as scikit-learn objects: the reference that tests and
benchmarks compare convpaint's evaluator with.

It rebuilds trees the way the format-1 release loaded them, through scikit-learn's
private ``Tree`` state, so it may need updating for a new scikit-learn; convpaint
itself never does this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier


def sklearn_forest_from_file(path: Path) -> RandomForestClassifier:
    """The forest of a model file rebuilt as scikit-learn objects, the way the format-1
    release loaded it (scikit-learn's private Tree state; tests only)."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import NODE_DTYPE, Tree

    from convpaint.model_io import _read

    meta, arrays = _read(Path(path), arrays=True)
    n_features, n_classes = meta["forest"]["n_features"], meta["forest"]["n_classes"]
    offsets = arrays["node_offsets"]
    trees = []
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        nodes = np.zeros(b - a, dtype=NODE_DTYPE)
        for field in NODE_DTYPE.names:
            if field in arrays:
                nodes[field] = arrays[field][a:b]
        tree = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
        tree.__setstate__(
            {
                "max_depth": int(arrays["max_depths"][i]),
                "node_count": b - a,
                "nodes": nodes,
                "values": np.ascontiguousarray(arrays["values"][a:b, None, :]),
            }
        )
        est = DecisionTreeClassifier()
        est.tree_, est.n_outputs_, est.n_features_in_ = tree, 1, n_features
        est.classes_, est.n_classes_ = np.asarray(meta["classes"]), n_classes
        trees.append(est)
    forest = RandomForestClassifier(n_estimators=len(trees))
    forest.estimators_, forest.estimator_ = trees, DecisionTreeClassifier()
    forest.classes_, forest.n_classes_ = np.asarray(meta["classes"]), n_classes
    forest.n_outputs_, forest.n_features_in_ = 1, n_features
    return forest
