"""Compiled loops of the histogram forest trainer (:mod:`convpaint.forest_fit`).

Imported only through :func:`convpaint.forest._import_kernels`, which makes sure
numba has a writable cache folder. Every function releases the GIL and runs on one
thread; the caller builds trees side by side in its own threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: A node whose Gini impurity is at most this is pure (scikit-learn's test).
_PURE = np.finfo(np.float64).eps


@njit(nogil=True, cache=True)
def bin_column(values, ordered, max_bins, codes, lo, hi):  # pragma: no cover
    """Quantile bins of one feature column.

    Parameters
    ----------
    values : float32 ``(n,)``
        The column.
    ordered : float32 ``(n,)``
        The same values sorted ascending.
    max_bins : int
        At most this many bins (at most 256: codes are uint8).
    codes : uint8 ``(n,)``
        Receives each value's bin.
    lo, hi : float32 ``(max_bins,)``
        Receive the smallest and the largest value of each bin.

    Returns
    -------
    int
        The number of bins. Columns with at most ``max_bins`` distinct values get
        one bin per value; otherwise runs of equal values are never split and each
        bin closes once the running count reaches its share ``(b + 1) n / max_bins``.
    """
    n = ordered.shape[0]
    distinct = 1
    for i in range(1, n):
        if ordered[i] != ordered[i - 1]:
            distinct += 1
    b = 0
    lo[0] = ordered[0]
    hi[0] = ordered[0]
    for i in range(1, n):
        v = ordered[i]
        if v != ordered[i - 1]:
            # a new distinct value: open a new bin when this one is full
            if distinct <= max_bins or i * max_bins >= (b + 1) * n:
                if b + 1 < max_bins:
                    b += 1
                    lo[b] = v
        hi[b] = v
    n_bins = b + 1
    # each value's bin: the first whose largest value is >= it, by a branch-free
    # binary search over 256 keys (missing bins padded with +inf)
    keys = np.full(256, np.inf, np.float32)
    keys[:n_bins] = hi[:n_bins]
    for i in range(n):
        v = values[i]
        first = 0
        step = 128
        while step > 0:
            first += step * (keys[first + step - 1] < v)
            step //= 2
        codes[i] = first
    return n_bins


@njit(nogil=True, cache=True)
def bin_columns(
    columns, ordered, max_bins, codes, lo, hi, n_bins, f0, f1
):  # pragma: no cover
    """:func:`bin_column` for the features ``f0 .. f1 - 1`` of feature-major
    ``columns`` ``(F, n)``, ``ordered`` holding each row sorted."""
    for f in range(f0, f1):
        n_bins[f] = bin_column(columns[f], ordered[f], max_bins, codes[f], lo[f], hi[f])


@njit(nogil=True, cache=True)
def build_tree(
    xb,
    y,
    base_weight,
    balance_subsample,
    n_classes,
    lo,
    hi,
    mtry,
    max_depth,
    min_leaf,
    seed,
    left,
    right,
    feature,
    threshold,
    values,
    impurity,
    n_node_samples,
    weighted_n_node_samples,
):  # pragma: no cover - compiled
    """Grow one classification tree (Gini) on binned features, depth first.

    Parameters
    ----------
    xb : uint8 ``(F, n)``
        Bin codes, feature-major.
    y : int64 ``(n,)``
        Class index ``0 .. n_classes - 1`` of each sample.
    base_weight : float64 ``(n,)``
        Weight of each sample (its class weight, or 1). A sample's weight in the
        tree is this times the number of times the bootstrap drew it (``n`` draws
        with replacement); samples never drawn are left out (out-of-bag).
    balance_subsample : bool
        Instead of ``base_weight``, weight the classes inversely to their counts in
        the bootstrap sample (scikit-learn's "balanced_subsample").
    n_classes : int
    lo, hi : float32 ``(F, B)``
        Smallest and largest training value of each bin: a split between bins
        ``b`` and ``c`` (the next bin with samples in the node) gets the threshold
        ``(hi[b] + lo[c]) / 2``, like scikit-learn's midpoint between neighbours.
    mtry : int
        Features tried per node: drawn without replacement, features constant in
        the node not counted (as scikit-learn does).
    max_depth : int
        ``-1`` for none.
    min_leaf : int
        Minimum number of (distinct) samples in a leaf.
    seed : int
        Seeds this thread's generator for the bootstrap and the feature draws: a
        tree depends only on its seed, whichever thread builds it.
    left, right, feature, threshold, values, impurity, n_node_samples, \
weighted_n_node_samples
        Output node tables with room for ``2 n_in_bag - 1`` nodes; ``values`` holds
        class fractions ``(nodes, n_classes)``.

    Returns
    -------
    (int, int)
        Number of nodes and depth of the tree.
    """
    np.random.seed(seed)
    n_features = xb.shape[0]
    n = xb.shape[1]
    w = np.zeros(n)
    for _ in range(n):
        w[np.random.randint(0, n)] += 1.0
    if balance_subsample:
        drawn = np.zeros(n_classes)
        for i in range(n):
            drawn[y[i]] += w[i]
        present = 0
        for k in range(n_classes):
            if drawn[k] > 0.0:
                present += 1
        for i in range(n):
            w[i] *= n / (present * drawn[y[i]]) if w[i] > 0.0 else 0.0
    else:
        for i in range(n):
            w[i] *= base_weight[i]
    idx = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if w[i] > 0.0:
            idx[m] = i
            m += 1
    n_bin_max = lo.shape[1]
    hist = np.zeros((n_bin_max, n_classes))
    hist_w = np.zeros(n_bin_max)
    count = np.zeros(n_bin_max, np.int64)
    totals = np.zeros(n_classes)
    acc = np.zeros(n_classes)
    features = np.arange(n_features)
    cap = left.shape[0]
    st_start = np.empty(cap, np.int64)
    st_end = np.empty(cap, np.int64)
    st_depth = np.empty(cap, np.int64)
    st_parent = np.empty(cap, np.int64)
    st_is_left = np.empty(cap, np.bool_)
    top = 1
    st_start[0] = 0
    st_end[0] = m
    st_depth[0] = 0
    st_parent[0] = -1
    st_is_left[0] = False
    n_nodes = 0
    deepest = 0
    while top > 0:
        top -= 1
        start = st_start[top]
        end = st_end[top]
        depth = st_depth[top]
        parent = st_parent[top]
        node = n_nodes
        n_nodes += 1
        if parent >= 0:
            if st_is_left[top]:
                left[parent] = node
            else:
                right[parent] = node
        for k in range(n_classes):
            totals[k] = 0.0
        for i in range(start, end):
            s = idx[i]
            totals[y[s]] += w[s]
        total = 0.0
        squares = 0.0
        for k in range(n_classes):
            total += totals[k]
            squares += totals[k] * totals[k]
        gini = 1.0 - squares / (total * total)
        for k in range(n_classes):
            values[node, k] = totals[k] / total
        impurity[node] = gini
        n_node_samples[node] = end - start
        weighted_n_node_samples[node] = total
        left[node] = -1
        right[node] = -1
        feature[node] = -2
        threshold[node] = -2.0
        if depth > deepest:
            deepest = depth
        size = end - start
        if (
            (max_depth >= 0 and depth >= max_depth)
            or size < 2
            or size < 2 * min_leaf
            or gini <= _PURE
        ):
            continue
        best = -np.inf
        best_f = -1
        best_bin = -1
        best_thr = 0.0
        visited = 0
        remaining = n_features
        while remaining > 0 and visited < mtry:
            j = np.random.randint(0, remaining)
            f = features[j]
            features[j] = features[remaining - 1]
            features[remaining - 1] = f
            remaining -= 1
            row = xb[f]
            # the node's bins span first..last; the tables are all zero outside
            # a scan and are reset over that span after it
            first = 255
            last = 0
            for i in range(start, end):
                s = idx[i]
                b = np.int64(row[s])
                hist[b, y[s]] += w[s]
                hist_w[b] += w[s]
                count[b] += 1
                first = min(first, b)
                last = max(last, b)
            if first < last:  # not constant in this node
                visited += 1
                for k in range(n_classes):
                    acc[k] = 0.0
                w_left = 0.0
                n_left = 0
                prev = -1
                for b in range(first, last + 1):
                    if count[b] == 0:
                        continue
                    if prev >= 0 and n_left >= min_leaf and size - n_left >= min_leaf:
                        w_right = total - w_left
                        sq_left = 0.0
                        sq_right = 0.0
                        for k in range(n_classes):
                            sq_left += acc[k] * acc[k]
                            r = totals[k] - acc[k]
                            sq_right += r * r
                        proxy = sq_left / w_left + sq_right / w_right
                        if proxy > best:
                            best = proxy
                            best_f = f
                            best_bin = prev
                            best_thr = (
                                np.float64(hi[f, prev]) + np.float64(lo[f, b])
                            ) * 0.5
                    for k in range(n_classes):
                        acc[k] += hist[b, k]
                    w_left += hist_w[b]
                    n_left += count[b]
                    prev = b
            for b in range(first, last + 1):
                count[b] = 0
                hist_w[b] = 0.0
                for k in range(n_classes):
                    hist[b, k] = 0.0
        if best_f < 0:
            continue
        row = xb[best_f]
        i = start
        j = end - 1
        while i <= j:
            if row[idx[i]] <= best_bin:
                i += 1
            else:
                t = idx[i]
                idx[i] = idx[j]
                idx[j] = t
                j -= 1
        feature[node] = best_f
        threshold[node] = best_thr
        # right pushed first: the left child is built (and numbered) next
        for is_left in (False, True):
            st_start[top] = start if is_left else i
            st_end[top] = i if is_left else end
            st_depth[top] = depth + 1
            st_parent[top] = node
            st_is_left[top] = is_left
            top += 1
    return n_nodes, deepest
