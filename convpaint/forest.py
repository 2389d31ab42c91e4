"""The random forest evaluator: scikit-learn's trees, predicted without scikit-learn.

Training fits a scikit-learn ``RandomForestClassifier``; :func:`node_arrays` turns it
into plain node tables (the model file stores exactly those), and :class:`Forest`
predicts from them. Nothing here imports scikit-learn, so a new scikit-learn release
can never break a saved model, and loading a model runs no foreign code.

**Exactly scikit-learn's result.** scikit-learn casts features to float32 and sends
a row left when ``x[feature] <= threshold`` with the float32 value promoted to
compare against the float64 threshold; each tree's probability is the class
fraction stored in its leaf (``tree_.value``, normalised at fit time since
scikit-learn 1.4; older files held weighted counts, which are divided by their sum
here as older scikit-learn did when predicting); the forest averages the trees by
adding them in order in float64 and dividing by the tree count. The evaluator does
the same additions in the same order (skipping only zeros, which change nothing),
so its float64 mean is bit-identical; probabilities are returned as float32.
Thresholds are stored as ``t32``, the largest float32 ``<= t``: for every float32
``x``, ``x <= t`` if and only if ``x <= t32`` (if ``x <= t``, ``x`` is a float32 not
above ``t``, so not above the largest one; conversely ``x <= t32 <= t``). Comparing
float32 to float32 keeps the node tables small.

**Labels with early stopping.** A tree can move any class ahead of any other by at
most the spread of its leaf values (at most 1). Walking the trees in order, a pixel
stops once its leading class is ahead of every other by more than the remaining
trees' spreads together (plus a margin far above float64 rounding): the argmax of
the full mean is then certain, so labels are bit-for-bit those of the full average
(ties go to the lowest class index, like ``numpy.argmax``). Pixels still undecided
go through all trees. With pure leaves no pixel can stop before half the trees.

**Why numba.** The loops (``convpaint/_forest_kernels.py``) are compiled by numba:
no compiler is needed at install time and numba ships wheels for every platform
torch does, whereas a C extension would need a build toolchain or per-platform
wheels of convpaint. Compiled code is cached on disk (numba's cache falls back to a
user cache folder when the package folder is read-only; see
:func:`_import_kernels`), and nothing is compiled or even imported before the first
prediction. Each call is single-threaded and releases the GIL; :class:`Forest`
splits rows over ``n_jobs`` threads itself, so the process keeps one thread budget
shared with torch, BLAS and dask (numba's own ``parallel=True`` would start a second
pool). Rows never interact, so results do not depend on the thread count.

Validation: :func:`check_node_tables` proves that tables read from an untrusted
file are trees a traversal can walk safely (it terminates, stays in bounds and
reads only existing features); :class:`Forest` always runs it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import DataError

__all__ = ["NODE_FIELDS", "Forest", "check_node_tables", "node_arrays"]

logger = logging.getLogger(__name__)

#: Per-node arrays of the model file, in scikit-learn's naming. Only the first five
#: are needed to predict; the others (kept for feature importances and for files
#: read by older convpaint) are stored as scikit-learn reports them.
NODE_FIELDS = (
    "left_child",
    "right_child",
    "feature",
    "threshold",
    "impurity",
    "n_node_samples",
    "weighted_n_node_samples",
    "missing_go_to_left",
)

#: Leaf values summing to 1 within this are used as stored (fractions).
_FRACTION_TOLERANCE = 1e-9


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


def node_arrays(forest: Any) -> dict[str, NDArray]:
    """The node tables of a fitted scikit-learn ``RandomForestClassifier``.

    Parameters
    ----------
    forest : sklearn.ensemble.RandomForestClassifier or FittedForest
        A fitted single-output scikit-learn classifier (read through its trees'
        public ``tree_`` attributes; scikit-learn itself is not imported), or
        :class:`convpaint.forest_fit.FittedForest` (its tables as they are).

    Returns
    -------
    dict of str to ndarray
        The :data:`NODE_FIELDS` (every tree's nodes concatenated; children are
        tree-local indices, ``-1`` at leaves), ``values`` ``(n_nodes, n_classes)``
        float64, ``node_offsets`` ``(n_trees + 1,)`` int64 and ``max_depths``
        ``(n_trees,)`` int64.
    """
    tables = getattr(forest, "node_tables", None)
    if tables is not None:  # convpaint.forest_fit.FittedForest
        return dict(tables)
    trees = [est.tree_ for est in forest.estimators_]
    attrs = {
        "left_child": "children_left",
        "right_child": "children_right",
        "feature": "feature",
        "threshold": "threshold",
        "impurity": "impurity",
        "n_node_samples": "n_node_samples",
        "weighted_n_node_samples": "weighted_n_node_samples",
        "missing_go_to_left": "missing_go_to_left",
    }
    out = {
        field: np.concatenate([np.asarray(getattr(t, attr)) for t in trees])
        for field, attr in attrs.items()
        if all(hasattr(t, attr) for t in trees)
    }
    out["values"] = np.concatenate(
        [np.asarray(t.value)[:, 0, :] for t in trees]
    ).astype(np.float64)
    sizes = [t.node_count for t in trees]
    out["node_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    out["max_depths"] = np.array([t.max_depth for t in trees], dtype=np.int64)
    return out


def _import_kernels(name: str = "_forest_kernels") -> ModuleType:
    """Import a module of compiled loops (``convpaint.<name>``), making sure numba
    has somewhere to cache them.

    numba caches next to the source when that folder is writable, else in the
    user's cache folder (``~/.cache/numba`` or ``$NUMBA_CACHE_DIR``). Where neither
    is writable (read-only installs on clusters with a read-only home), it would
    refuse to define cached functions; then a per-user folder under the temporary
    directory is used.
    """
    import numba

    if not numba.config.CACHE_DIR:
        from numba.misc.appdirs import AppDirs

        here = os.path.join(os.path.dirname(__file__), "__pycache__")
        user = AppDirs(appname="numba", appauthor=False).user_cache_dir
        if not any(_writable(d) for d in (here, user)):
            fallback = os.path.join(
                tempfile.gettempdir(), f"convpaint-numba-{os.getuid()}"
            )
            logger.info("numba cache folder: %s", fallback)
            numba.config.CACHE_DIR = fallback
    import importlib

    return importlib.import_module(f"convpaint.{name}")


def _writable(folder: str) -> bool:
    """Whether ``folder`` exists and is writable, or can be created."""
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return os.access(folder, os.W_OK | os.X_OK)


class Forest:
    """A random forest classifier evaluated from plain node tables.

    Build it with :meth:`from_node_arrays` (what loading a model file does; the
    tables are validated first) or :meth:`from_sklearn`.

    Attributes
    ----------
    classes : ndarray of shape ``(n_classes,)``, int64
        The class values (label image values), in probability-column order.
    n_features, n_classes, n_trees, n_nodes : int
        Input feature count, class count, tree count, total node count.
    n_jobs : int
        Threads used by the predict methods when they are given no ``n_jobs``.

    Examples
    --------
    >>> forest = Forest.from_sklearn(fitted_random_forest)  # doctest: +SKIP
    >>> proba = forest.predict_proba(features, n_jobs=4)  # doctest: +SKIP
    >>> labels = forest.classes[forest.predict_labels(features)]  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        child: NDArray[np.uint32],
        feature: NDArray[np.uint32],
        threshold: NDArray[np.float32],
        roots: NDArray[np.uint32],
        leaf_start: NDArray[np.int64],
        leaf_class: NDArray[np.int64],
        leaf_value: NDArray[np.float64],
        reach: NDArray[np.float64],
        first_check: int,
        classes: NDArray[np.int64],
        n_features: int,
    ) -> None:
        # private: the tables must come from _layout (use the from_* constructors)
        self._child = child
        self._feature = feature
        self._threshold = threshold
        self._roots = roots
        self._leaf_start = leaf_start
        self._leaf_class = leaf_class
        self._leaf_value = leaf_value
        self._reach = reach
        self._first_check = first_check
        self.classes = classes
        self.n_features = n_features
        self.n_classes = len(classes)
        self.n_trees = len(roots)
        self.n_nodes = len(child)
        #: threads used when a predict method is called without ``n_jobs``
        self.n_jobs = 1
        #: (row, tree) walks done by the last predict_labels call (for benchmarks)
        self.last_walks = 0

    def __repr__(self) -> str:
        return (
            f"Forest({self.n_trees} trees, {self.n_nodes} nodes, "
            f"{self.n_features} features, classes {self.classes.tolist()})"
        )

    @classmethod
    def from_node_arrays(
        cls,
        arrays: dict[str, NDArray],
        *,
        classes: NDArray | list[int],
        n_features: int,
    ) -> Forest:
        """Validate node tables and lay them out for fast evaluation.

        Parameters
        ----------
        arrays : dict of str to ndarray
            At least ``left_child``, ``right_child``, ``feature``, ``threshold``,
            ``values`` and ``node_offsets`` as described by :func:`node_arrays`.
        classes : sequence of int
            The class values, one per column of ``values``; distinct.
        n_features : int
            Number of input features.

        Raises
        ------
        ValueError
            If the tables are not valid trees (see :func:`check_node_tables`) or
            ``classes`` does not match them.
        """
        classes = np.asarray(classes)
        if (
            classes.ndim != 1
            or classes.dtype.kind not in "iu"
            or len(np.unique(classes)) != len(classes)
        ):
            raise ValueError(
                f"classes {classes.tolist()} must be distinct integers, one per column "
                "of the values"
            )
        values = arrays["values"]
        check_node_tables(
            arrays["left_child"],
            arrays["right_child"],
            arrays["feature"],
            arrays["threshold"],
            values,
            arrays["node_offsets"],
            n_features=n_features,
            n_classes=len(classes),
        )
        return cls(
            **_layout(
                arrays["left_child"].astype(np.int64),
                arrays["right_child"].astype(np.int64),
                arrays["feature"].astype(np.int64),
                arrays["threshold"].astype(np.float64),
                values.astype(np.float64),
                arrays["node_offsets"].astype(np.int64),
            ),
            classes=classes.astype(np.int64),
            n_features=int(n_features),
        )

    @classmethod
    def from_sklearn(cls, forest: Any) -> Forest:
        """The evaluator of a fitted scikit-learn ``RandomForestClassifier`` or
        :class:`convpaint.forest_fit.FittedForest`."""
        return cls.from_node_arrays(
            node_arrays(forest),
            classes=np.asarray(forest.classes_),
            n_features=int(forest.n_features_in_),
        )

    def predict_proba(
        self, features: NDArray[np.float32], *, n_jobs: int | None = None
    ) -> NDArray[np.float32]:
        """Mean class probabilities over the trees, as scikit-learn computes them.

        Parameters
        ----------
        features : array of shape ``(n, n_features)``
            One row per pixel; converted to float32 (as scikit-learn does).
        n_jobs : int, optional
            Threads to split the rows over (results do not depend on it); default
            :attr:`n_jobs`.

        Returns
        -------
        ndarray of shape ``(n, n_classes)``, float32
            Columns in the order of :attr:`classes`.

        Raises
        ------
        DataError
            Wrong feature count, or NaN/infinite features.
        """
        return self.predict(features, n_jobs=n_jobs, probabilities=True)[1]

    def predict_labels(
        self, features: NDArray[np.float32], *, n_jobs: int | None = None
    ) -> NDArray[np.intp]:
        """The most probable class of each row, with exact early stopping.

        Equal to ``argmax`` of the float64 mean probabilities (scikit-learn's
        ``predict``), lowest index on ties, but each row stops walking trees as soon
        as its class is certain.

        Parameters
        ----------
        features : array of shape ``(n, n_features)``
            As for :meth:`predict_proba`.
        n_jobs : int, optional
            Threads to split the rows over (results do not depend on it); default
            :attr:`n_jobs`.

        Returns
        -------
        ndarray of shape ``(n,)``, intp
            Index into :attr:`classes` (the label values are
            ``forest.classes[index]``).

        Raises
        ------
        DataError
            Wrong feature count, or NaN/infinite features.
        """
        features = self._check(features)
        kernels = _import_kernels()
        index = np.empty(len(features), dtype=np.intp)
        trees = self._tree_tables()

        def run(a: int, b: int) -> tuple[int, int]:
            bad, walks = kernels.predict_labels_rows(
                features[a:b],
                *trees,
                self._reach,
                self._first_check,
                index[a:b],
            )
            return (a + bad if bad >= 0 else -1), walks

        results = _split_rows(len(features), n_jobs or self.n_jobs, kernels.BLOCK, run)
        self._raise_if_bad([bad for bad, _ in results])
        self.last_walks = sum(walks for _, walks in results)
        return index

    def predict(
        self,
        features: NDArray[np.float32],
        *,
        n_jobs: int | None = None,
        probabilities: bool = False,
    ) -> tuple[NDArray[np.intp], NDArray[np.float32] | None]:
        """Class index of each row and, on request, the probabilities, in one pass.

        Without ``probabilities`` this is :meth:`predict_labels` (early stopping);
        with it, every tree is walked and the index is the argmax of the float64
        mean, so it never differs from the labels-only result.

        Parameters
        ----------
        features : array of shape ``(n, n_features)``
            As for :meth:`predict_proba`.
        n_jobs : int, optional
            Threads to split the rows over; default :attr:`n_jobs`.
        probabilities : bool
            Also return the probabilities.

        Returns
        -------
        index : ndarray of shape ``(n,)``, intp
            Index into :attr:`classes`.
        probabilities : ndarray of shape ``(n, n_classes)``, float32, or None
            As :meth:`predict_proba`; None unless requested.

        Raises
        ------
        DataError
            Wrong feature count, or NaN/infinite features.
        """
        if not probabilities:
            return self.predict_labels(features, n_jobs=n_jobs), None
        features = self._check(features)
        kernels = _import_kernels()
        index = np.empty(len(features), dtype=np.intp)
        proba = np.empty((len(features), self.n_classes), dtype=np.float32)
        trees = self._tree_tables()

        def run(a: int, b: int) -> int:
            bad = kernels.predict_rows(
                features[a:b],
                *trees,
                proba[a:b],
                index[a:b],
                True,
            )
            return a + bad if bad >= 0 else -1

        self._raise_if_bad(
            _split_rows(len(features), n_jobs or self.n_jobs, kernels.BLOCK, run)
        )
        return index, proba

    def _tree_tables(self) -> tuple[Any, ...]:
        """The node tables and class count, in the order the prediction kernels
        take them (after the feature rows)."""
        return (
            self._child,
            self._feature,
            self._threshold,
            self._roots,
            self._leaf_start,
            self._leaf_class,
            self._leaf_value,
            self.n_classes,
        )

    def _check(self, features: NDArray) -> NDArray[np.float32]:
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise DataError(
                f"features have shape {features.shape}, but the forest was trained on "
                f"{self.n_features} features per pixel; compute them with the "
                "extractors saved in the model"
            )
        return features

    @staticmethod
    def _raise_if_bad(bad_rows: list[int]) -> None:
        bad = [b for b in bad_rows if b >= 0]
        if bad:
            raise DataError(
                f"features contain NaN or infinite values (first at row {min(bad)}); "
                "check the image for NaN or infinite pixels"
            )


def _split_rows(
    n: int, n_jobs: int, block: int, run: Callable[[int, int], Any]
) -> list[Any]:
    """``run(a, b)`` over ranges covering ``0:n`` (rows to predict, or the features
    and trees of :mod:`convpaint.forest_fit`), on up to ``n_jobs`` threads.

    About four ranges per thread (whole blocks), so that threads finishing early
    (rows that stop early, small trees) pick up more work, without a thread hand-off
    per item.
    """
    if n_jobs <= 1 or n <= 2 * block:
        return [run(0, n)]
    step = max(block, math.ceil(n / (4 * n_jobs) / block) * block)
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    with ThreadPoolExecutor(n_jobs) as pool:
        return list(pool.map(lambda ab: run(*ab), bounds))


def _layout(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    feature: NDArray[np.int64],
    threshold: NDArray[np.float64],
    values: NDArray[np.float64],
    offsets: NDArray[np.int64],
) -> dict[str, Any]:
    """Validated scikit-learn node tables -> the evaluator's tables (vectorised).

    Each tree keeps its place and size; inside it, the root comes first and the
    children of the ``k``-th split node (in scikit-learn's order, parents before
    children) go to ``1 + 2k`` and ``2 + 2k``, so siblings are adjacent and one
    index serves both. Leaves become their own child with threshold +inf.
    """
    n = len(left)
    sizes = np.diff(offsets)
    tree = np.repeat(np.arange(len(sizes)), sizes)
    start = offsets[:-1][tree]
    split = left != -1
    # rank of each split node among its tree's split nodes
    rank = np.cumsum(split) - 1
    rank -= np.concatenate([[0], np.cumsum(split)])[offsets[:-1]][tree]
    new = start.copy()  # roots stay first; other nodes are placed by their parent
    idx = np.flatnonzero(split)
    new[start[idx] + left[idx]] = start[idx] + 1 + 2 * rank[idx]
    new[start[idx] + right[idx]] = start[idx] + 2 + 2 * rank[idx]

    child = np.empty(n, dtype=np.uint32)
    child[new] = np.where(split, start + 1 + 2 * rank, new)
    feat = np.zeros(n, dtype=np.uint32)
    feat[new[idx]] = feature[idx]
    thr = np.full(n, np.inf, dtype=np.float32)
    t64 = threshold[idx]
    with np.errstate(over="ignore"):
        t32 = t64.astype(np.float32)
    above = t32.astype(np.float64) > t64
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    thr[new[idx]] = t32

    old = np.empty_like(new)
    old[new] = np.arange(n)  # node of the input at each new position
    leaves = np.flatnonzero(~split[old])  # new positions of the leaves, ascending
    vals = values[old[leaves]]
    # reductions over the few class columns: a loop over columns is far faster
    # than numpy's axis=1 reductions on millions of short rows
    columns = [vals[:, k] for k in range(vals.shape[1])]
    counts = np.flatnonzero(np.abs(sum(columns) - 1.0) > _FRACTION_TOLERANCE)
    if len(counts):  # weighted counts: divided by their sum as scikit-learn did
        vals[counts] /= vals[counts].sum(axis=1, keepdims=True)
        columns = [vals[:, k] for k in range(vals.shape[1])]
    # non-zero leaf values, leaf by leaf in node order (CSR over nodes)
    rows, cols = np.nonzero(vals)
    per_node = np.zeros(n, dtype=np.int64)
    per_node[leaves] = sum(c != 0 for c in columns)
    leaf_start = np.concatenate([[0], np.cumsum(per_node)])

    # early stopping: how far any class can move ahead of another from tree t on
    # (trees keep their node ranges, so their leaves are consecutive)
    spread = np.maximum.reduceat(
        functools.reduce(np.maximum, columns) - functools.reduce(np.minimum, columns),
        np.searchsorted(leaves, offsets[:-1]),
    )
    n_trees = len(sizes)
    # the margin dwarfs float64 rounding of sums of n_trees values <= 1
    margin = 1e-6 + 1e-15 * n_trees**2
    reach = np.concatenate([np.cumsum(spread[::-1])[::-1], [0.0]]) + margin
    gained = np.cumsum(spread)
    possible = np.flatnonzero(gained > reach[1:])
    return {
        "child": child,
        "feature": feat,
        "threshold": thr,
        "roots": offsets[:-1].astype(np.uint32),
        "leaf_start": leaf_start,
        "leaf_class": cols.astype(np.int64),
        "leaf_value": vals[rows, cols].astype(np.float64),
        "reach": reach,
        "first_check": int(possible[0]) if len(possible) else n_trees,
    }
