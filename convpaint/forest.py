"""The random forest's node tables: checks that they form valid trees.

A forest is stored as every tree's nodes concatenated (scikit-learn's layout):
``left_child``, ``right_child``, ``feature``, ``threshold`` and ``values`` per node,
and ``node_offsets`` splitting them into trees. :func:`check_node_tables` proves that
tables read from an untrusted file are trees a traversal can walk safely: it must
terminate, stay in bounds and read only existing features.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["check_node_tables"]


def _first_bad(
    bad: NDArray[np.bool_], offsets: NDArray[np.int64], what: Callable[[int], str]
) -> None:
    """Raise for the first flagged node, naming its tree and tree-local index."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        tree = int(np.searchsorted(offsets, i, side="right")) - 1
        raise ValueError(f"tree {tree}, node {i - int(offsets[tree])}: {what(i)}")


def check_node_tables(
    left: NDArray,
    right: NDArray,
    feature: NDArray,
    threshold: NDArray,
    values: NDArray,
    node_offsets: NDArray,
    *,
    n_features: int,
    n_classes: int,
) -> None:
    """Check that node tables describe valid decision trees.

    Children are tree-local node indices, ``-1`` for both children of a leaf, as
    scikit-learn writes them. Every check is vectorised (a forest can have millions
    of nodes).

    Parameters
    ----------
    left, right, feature : array of shape ``(N,)``, signed integers
        Children and split feature of every node, trees concatenated.
    threshold : array of shape ``(N,)``, floating point
        Split thresholds (``feature <= threshold`` goes left).
    values : array of shape ``(N, n_classes)``, floating point
        Per-node class weights or fractions; only leaves' are used.
    node_offsets : array of shape ``(n_trees + 1,)``, signed integers
        Tree ``t`` holds nodes ``node_offsets[t]:node_offsets[t + 1]``.
    n_features, n_classes : int
        The forest's input feature count and class count.

    Raises
    ------
    ValueError
        The first problem found, located by tree and node: wrong dtype or shape, a
        split on a feature outside ``[0, n_features)``, a non-finite threshold,
        children that do not form a tree (out of range, pointing back to the node,
        an ancestor or the root, a node with no or two parents, a leaf with one
        child), or leaf values that are not finite, are negative or sum to 0.

    Notes
    -----
    Children must be numbered after their parent (scikit-learn builds trees that
    way). With that, no path can cycle, and "every node but the root has exactly
    one parent" proves every node is reached exactly once from the root.
    """
    arrays = {
        "node_offsets": (node_offsets, "i"),
        "left_child": (left, "i"),
        "right_child": (right, "i"),
        "feature": (feature, "i"),
        "threshold": (threshold, "f"),
        "values": (values, "f"),
    }
    for name, (arr, kind) in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != kind:
            found = getattr(arr, "dtype", type(arr).__name__)
            want = "signed integers" if kind == "i" else "floating point numbers"
            raise ValueError(f"{name} holds {found}, expected {want}")
    if node_offsets.ndim != 1 or len(node_offsets) < 2:
        raise ValueError(
            f"node_offsets has shape {node_offsets.shape}, expected (n_trees + 1,) "
            "with at least one tree"
        )
    offsets = node_offsets.astype(np.int64)
    sizes = np.diff(offsets)
    if offsets[0] != 0 or (sizes < 1).any():
        raise ValueError(
            "node_offsets must start at 0 and increase (every tree has a node), found "
            f"{offsets[:8].tolist()}{' ...' if len(offsets) > 8 else ''}"
        )
    n = int(offsets[-1])
    for name, arr in (
        ("left_child", left),
        ("right_child", right),
        ("feature", feature),
        ("threshold", threshold),
    ):
        if arr.shape != (n,):
            raise ValueError(
                f"{name} has shape {arr.shape}, but node_offsets says {n} nodes"
            )
    if values.shape != (n, n_classes):
        raise ValueError(
            f"values has shape {values.shape}, expected ({n}, {n_classes}) for {n} "
            f"nodes and {n_classes} classes"
        )

    tree = np.repeat(np.arange(len(sizes)), sizes)
    start = offsets[:-1][tree]
    local = np.arange(n, dtype=np.int64) - start
    size = sizes[tree]
    lc = left.astype(np.int64)
    rc = right.astype(np.int64)
    leaf = lc == -1
    split = ~leaf

    _first_bad(
        leaf & (rc != -1),
        offsets,
        lambda i: (
            f"left child is -1 (a leaf) but right child is {int(rc[i])}; a leaf "
            "has both children -1"
        ),
    )
    for name, child in (("left", lc), ("right", rc)):
        _first_bad(
            split & ((child < 0) | (child >= size)),
            offsets,
            lambda i, c=child, nm=name: (
                f"{nm} child {int(c[i])} is outside the tree's {int(size[i])} nodes"
            ),
        )
        _first_bad(
            split & (child <= local),
            offsets,
            lambda i, c=child, nm=name: (
                f"{nm} child {int(c[i])} points back to the "
                "node itself, an earlier node or the root (children are numbered after "
                "their parent; anything else makes a cycle or shares nodes)"
            ),
        )
    # every node but the roots has exactly one parent
    parents = np.bincount(
        np.concatenate([(start + lc)[split], (start + rc)[split]]), minlength=n
    )
    parents[offsets[:-1]] = 1  # roots have none (children come after their parent)
    _first_bad(
        parents != 1,
        offsets,
        lambda i: (
            "the node has no parent: it is unreachable from the root"
            if parents[i] == 0
            else f"the node has {int(parents[i])} parents: nodes must not be shared"
        ),
    )
    f = feature.astype(np.int64)
    _first_bad(
        split & ((f < 0) | (f >= n_features)),
        offsets,
        lambda i: (
            f"splits on feature {int(f[i])}, outside 0..{n_features - 1} (the "
            f"model has {n_features} features)"
        ),
    )
    _first_bad(
        ~np.isfinite(threshold),
        offsets,
        lambda i: f"threshold {threshold[i]} is not a finite number",
    )
    _first_bad(
        ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1),
        offsets,
        lambda i: f"class values {values[i].tolist()} must be finite and non-negative",
    )
    _first_bad(
        leaf & ~(values.sum(axis=1) > 0),
        offsets,
        lambda i: "a leaf whose class values are all 0",
    )
