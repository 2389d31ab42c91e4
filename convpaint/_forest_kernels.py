"""Compiled loops of the forest evaluator (numba; imported on the first prediction).

The tables come from :class:`convpaint.forest.Forest`, which proves them safe: the
loops do no bounds checks. Layout, for node ``n`` of any tree:

* ``child[n]``: the left child; the right child is ``child[n] + 1``. A leaf is its
  own child and has ``thr[n] = +inf``, so a step from a leaf stays there.
* ``feat[n]``, ``thr[n]``: go right when ``x[feat[n]] > thr[n]`` (float32 against
  float32; see :mod:`convpaint.forest` for why that equals scikit-learn's test).
* ``leaf_start[n]:leaf_start[n + 1]`` index the non-zero class values of a leaf in
  ``leaf_class``/``leaf_value`` (empty for split nodes).

Rows are processed in blocks of ``BLOCK`` pixels, copied feature-major into a
scratch array so that the 8 rows walked together read one contiguous stripe per
feature. Each tree is walked for all rows of a block before the next tree (the
tree stays in the CPU cache), 8 rows in lockstep: their 8 independent chains of
dependent loads overlap, and a step is branch-free (``child + (x > thr)``). The
group stops when all 8 rows stand on leaves. Per row, class values are added in
tree order in float64, exactly like scikit-learn (adding the zeros it adds too
would not change a bit).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: log2 of the rows per block.
SHIFT = 9
#: Rows per block (features of a block: ``n_features * BLOCK`` float32 scratch).
BLOCK = 1 << SHIFT


@njit(nogil=True, cache=True, inline="always")
def _load_block(features, start, count, scratch):  # pragma: no cover - compiled
    """Copy rows ``start:start+count`` feature-major into ``scratch``.

    Returns the block-local index of the first row with a NaN or infinite feature,
    or -1.
    """
    bad = -1
    for r in range(count):
        for f in range(features.shape[1]):
            v = features[start + r, f]
            if bad < 0 and not (abs(v) < np.inf):
                bad = r
            scratch[(f << SHIFT) + r] = v
    return bad


@njit(nogil=True, cache=True, inline="always")
def _add_leaf(sums, row, node, leaf_start, leaf_class, leaf_value):  # pragma: no cover
    for e in range(leaf_start[node], leaf_start[node + 1]):
        sums[row, leaf_class[e]] += leaf_value[e]


@njit(nogil=True, cache=True, inline="always")
def _walk_block(
    scratch,
    count,
    root,
    child,
    feat,
    thr,
    leaf_start,
    leaf_class,
    leaf_value,
    sums,
):  # pragma: no cover - compiled
    """Add one tree's leaf values to ``sums`` for the block rows ``0:count``."""
    g = 0
    while g + 8 <= count:
        r0, r1, r2, r3 = g, g + 1, g + 2, g + 3
        r4, r5, r6, r7 = g + 4, g + 5, g + 6, g + 7
        n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
        while True:
            m0 = child[n0] + np.uint32(scratch[(feat[n0] << SHIFT) + r0] > thr[n0])
            m1 = child[n1] + np.uint32(scratch[(feat[n1] << SHIFT) + r1] > thr[n1])
            m2 = child[n2] + np.uint32(scratch[(feat[n2] << SHIFT) + r2] > thr[n2])
            m3 = child[n3] + np.uint32(scratch[(feat[n3] << SHIFT) + r3] > thr[n3])
            m4 = child[n4] + np.uint32(scratch[(feat[n4] << SHIFT) + r4] > thr[n4])
            m5 = child[n5] + np.uint32(scratch[(feat[n5] << SHIFT) + r5] > thr[n5])
            m6 = child[n6] + np.uint32(scratch[(feat[n6] << SHIFT) + r6] > thr[n6])
            m7 = child[n7] + np.uint32(scratch[(feat[n7] << SHIFT) + r7] > thr[n7])
            moved = (
                (m0 ^ n0) | (m1 ^ n1) | (m2 ^ n2) | (m3 ^ n3)
                | (m4 ^ n4) | (m5 ^ n5) | (m6 ^ n6) | (m7 ^ n7)
            )  # fmt: skip
            n0 = m0
            n1 = m1
            n2 = m2
            n3 = m3
            n4 = m4
            n5 = m5
            n6 = m6
            n7 = m7
            if moved == 0:
                break
        _add_leaf(sums, r0, n0, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r1, n1, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r2, n2, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r3, n3, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r4, n4, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r5, n5, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r6, n6, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, r7, n7, leaf_start, leaf_class, leaf_value)
        g += 8
    for j in range(g, count):
        r = j
        node = root
        while True:
            step = child[node] + np.uint32(
                scratch[(feat[node] << SHIFT) + r] > thr[node]
            )
            if step == node:
                break
            node = step
        _add_leaf(sums, r, node, leaf_start, leaf_class, leaf_value)


@njit(nogil=True, cache=True, inline="always")
def _argmax_mean(sums, row, n_trees):  # pragma: no cover - compiled
    """Index of the largest ``sums[row] / n_trees`` (first one on ties, like numpy)."""
    best = 0
    top = sums[row, 0] / n_trees
    for k in range(1, sums.shape[1]):
        v = sums[row, k] / n_trees
        if v > top:
            top = v
            best = k
    return best


@njit(nogil=True, cache=True)
def predict_rows(
    features,
    child,
    feat,
    thr,
    roots,
    leaf_start,
    leaf_class,
    leaf_value,
    n_classes,
    probabilities,
    index,
    with_probabilities,
):  # pragma: no cover - compiled
    """Mean class probabilities and their argmax for every row of ``features``.

    Writes ``index[i]`` (and ``probabilities[i]`` when ``with_probabilities``).
    Returns the first row with a non-finite feature, or -1.
    """
    n = features.shape[0]
    n_trees = roots.shape[0]
    scratch = np.empty(features.shape[1] * BLOCK, np.float32)
    sums = np.empty((BLOCK, n_classes), np.float64)
    for start in range(0, n, BLOCK):
        count = min(BLOCK, n - start)
        bad = _load_block(features, start, count, scratch)
        if bad >= 0:
            return start + bad
        sums[:count] = 0.0
        for t in range(n_trees):
            _walk_block(
                scratch, count, roots[t], child, feat, thr,
                leaf_start, leaf_class, leaf_value, sums,
            )  # fmt: skip
        for r in range(count):
            index[start + r] = _argmax_mean(sums, r, n_trees)
            if with_probabilities:
                for k in range(n_classes):
                    probabilities[start + r, k] = np.float32(sums[r, k] / n_trees)
    return -1


@njit(nogil=True, cache=True)
def predict_labels_rows(
    features,
    child,
    feat,
    thr,
    roots,
    leaf_start,
    leaf_class,
    leaf_value,
    n_classes,
    reach,
    first_check,
    index,
):  # pragma: no cover - compiled
    """Argmax of the mean class probabilities, stopping early where it is decided.

    ``reach[t]`` bounds how much any class can gain on any other over trees
    ``t:`` (plus a margin far above float64 rounding). After tree ``t >=
    first_check``, a row whose leader is ahead of every other class by more than
    ``reach[t + 1]`` keeps that leader whatever the remaining trees hold: its index
    is written and it stops. Stopped rows are squeezed out of the block (features
    and sums moved down) once they are an eighth of it, so the walk stays
    contiguous. Rows never decided take the argmax of the full mean. Writes
    ``index``; returns the first row with a non-finite feature (or -1) and the
    number of (row, tree) walks done.
    """
    n = features.shape[0]
    n_features = features.shape[1]
    n_trees = roots.shape[0]
    scratch = np.empty(n_features * BLOCK, np.float32)
    sums = np.empty((BLOCK, n_classes), np.float64)
    origin = np.empty(BLOCK, np.int64)
    decided = np.zeros(BLOCK, np.bool_)
    walks = 0
    for start in range(0, n, BLOCK):
        count = min(BLOCK, n - start)
        bad = _load_block(features, start, count, scratch)
        if bad >= 0:
            return start + bad, walks
        sums[:count] = 0.0
        for r in range(count):
            origin[r] = r
            decided[r] = False
        live = count
        pending = 0
        for t in range(n_trees):
            _walk_block(
                scratch, live, roots[t], child, feat, thr,
                leaf_start, leaf_class, leaf_value, sums,
            )  # fmt: skip
            walks += live
            if t < first_check or t + 1 == n_trees:
                continue
            limit = reach[t + 1]
            for j in range(live):
                if decided[j]:
                    continue
                best = 0
                top = sums[j, 0]
                second = -np.inf
                for k in range(1, n_classes):
                    v = sums[j, k]
                    if v > top:
                        second = top
                        top = v
                        best = k
                    elif v > second:
                        second = v
                if top - second > limit:
                    index[start + origin[j]] = best
                    decided[j] = True
                    pending += 1
            if pending * 8 >= live:
                kept = 0
                for j in range(live):
                    if decided[j]:
                        continue
                    if kept != j:
                        for f in range(n_features):
                            scratch[(f << SHIFT) + kept] = scratch[(f << SHIFT) + j]
                        for k in range(n_classes):
                            sums[kept, k] = sums[j, k]
                        origin[kept] = origin[j]
                        decided[kept] = False
                    kept += 1
                live = kept
                pending = 0
        for j in range(live):
            if not decided[j]:
                index[start + origin[j]] = _argmax_mean(sums, j, n_trees)
    return -1, walks
