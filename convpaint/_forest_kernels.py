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
scratch array so that the 16 rows walked together read one contiguous stripe
per feature. Each tree is walked for all rows of a block before the next tree (the
tree stays in the CPU cache), 16 rows in lockstep: their independent chains of
dependent loads overlap, and a step is branch-free (``child + (x > thr)``). The
group stops when all 16 rows stand on leaves. Per row, class values are added in
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
def _step(scratch, row, node, child, feat, thr):  # pragma: no cover - compiled
    """The node after ``node`` for block row ``row`` (``node`` itself at a leaf)."""
    return child[node] + np.uint32(scratch[(feat[node] << SHIFT) + row] > thr[node])


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
    while g + 16 <= count:
        n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = root
        n8 = n9 = n10 = n11 = n12 = n13 = n14 = n15 = root
        while True:
            m0 = _step(scratch, g + 0, n0, child, feat, thr)
            m1 = _step(scratch, g + 1, n1, child, feat, thr)
            m2 = _step(scratch, g + 2, n2, child, feat, thr)
            m3 = _step(scratch, g + 3, n3, child, feat, thr)
            m4 = _step(scratch, g + 4, n4, child, feat, thr)
            m5 = _step(scratch, g + 5, n5, child, feat, thr)
            m6 = _step(scratch, g + 6, n6, child, feat, thr)
            m7 = _step(scratch, g + 7, n7, child, feat, thr)
            m8 = _step(scratch, g + 8, n8, child, feat, thr)
            m9 = _step(scratch, g + 9, n9, child, feat, thr)
            m10 = _step(scratch, g + 10, n10, child, feat, thr)
            m11 = _step(scratch, g + 11, n11, child, feat, thr)
            m12 = _step(scratch, g + 12, n12, child, feat, thr)
            m13 = _step(scratch, g + 13, n13, child, feat, thr)
            m14 = _step(scratch, g + 14, n14, child, feat, thr)
            m15 = _step(scratch, g + 15, n15, child, feat, thr)
            moved = (
                (m0 ^ n0) | (m1 ^ n1) | (m2 ^ n2) | (m3 ^ n3) |
                (m4 ^ n4) | (m5 ^ n5) | (m6 ^ n6) | (m7 ^ n7) |
                (m8 ^ n8) | (m9 ^ n9) | (m10 ^ n10) | (m11 ^ n11) |
                (m12 ^ n12) | (m13 ^ n13) | (m14 ^ n14) | (m15 ^ n15)
            )  # fmt: skip
            n0 = m0
            n1 = m1
            n2 = m2
            n3 = m3
            n4 = m4
            n5 = m5
            n6 = m6
            n7 = m7
            n8 = m8
            n9 = m9
            n10 = m10
            n11 = m11
            n12 = m12
            n13 = m13
            n14 = m14
            n15 = m15
            if moved == 0:
                break
        _add_leaf(sums, g + 0, n0, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 1, n1, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 2, n2, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 3, n3, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 4, n4, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 5, n5, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 6, n6, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 7, n7, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 8, n8, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 9, n9, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 10, n10, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 11, n11, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 12, n12, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 13, n13, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 14, n14, leaf_start, leaf_class, leaf_value)
        _add_leaf(sums, g + 15, n15, leaf_start, leaf_class, leaf_value)
        g += 16

    for r in range(g, count):
        node = root
        while True:
            step = _step(scratch, r, node, child, feat, thr)
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
    is written and it stops. A row short of that by ``gap`` is not looked at again
    for ``gap / 2`` trees (each tree closes the gap by at most 2: 1 of lead, 1 of
    reach), which keeps the checks cheap. Stopped rows are squeezed out of the
    block (features and sums moved down) once they are a quarter of it, so the walk
    stays contiguous. Rows never decided take the argmax of the full mean. Writes
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
    wake = np.zeros(BLOCK, np.int64)
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
            wake[r] = 0
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
                if decided[j] or wake[j] > t:
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
                gap = limit - (top - second)
                if gap < 0:
                    index[start + origin[j]] = best
                    decided[j] = True
                    pending += 1
                else:
                    wake[j] = t + 1 + int(gap * 0.5)
            if pending * 4 >= live:
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
                        wake[kept] = wake[j]
                        decided[kept] = False
                    kept += 1
                live = kept
                pending = 0
        for j in range(live):
            if not decided[j]:
                index[start + origin[j]] = _argmax_mean(sums, j, n_trees)
    return -1, walks
