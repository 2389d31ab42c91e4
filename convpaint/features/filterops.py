"""Compiled building blocks of the filter bank: Gaussian passes, stencils, eigenvalues.

Everything here is a numba function that releases the GIL (``nogil``) and runs on
one thread: the caller runs blocks in threads under one thread budget, so the
kernels never start threads of their own.

Tile-exactness rests on two rules. First, every output value is one fixed sequence
of floating-point operations on its neighbourhood, the same wherever the block
starts: convolutions accumulate their taps in a fixed order, and nothing is
compiled with ``fastmath`` (which would let LLVM reassociate sums or fuse
multiply-adds differently in vectorised and scalar loop iterations). Second, only
IEEE-exact operations (``+ - * /`` and ``sqrt``) are used: vectorised and scalar
versions of ``acos`` or ``cos`` (e.g. with Intel SVML) may differ in the last bit,
which is why the 3x3 eigenvalue solver evaluates its trigonometric formula with a
few Newton steps instead of calling them. Edges of a block are handled by mirroring
(or clamping, for the derivative stencils); they only affect values in the halo.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = [
    "assemble2",
    "convolve_last",
    "convolve_last3",
    "convolve_middle",
    "convolve_outer",
    "derivatives3",
    "eigvals_sym2",
    "eigvals_sym3",
    "eigvals_sym3_window",
    "gaussian_weights",
    "gradient_products2",
    "gradient_products3",
    "scatter_columns3",
]


def _jit(func: Any = None, **options: Any) -> Any:
    """``numba.njit`` releasing the GIL, with the machine code cached on disk.

    NumPy's error model (a division by zero gives inf, not an exception) lets LLVM
    vectorise loops that divide. The cache lives next to this file or, where that
    is read-only, in the user's cache folder; with neither writable, each process
    compiles (a few seconds).
    """
    options = {"nogil": True, "error_model": "numpy", **options}

    def wrap(f: Any) -> Any:
        try:
            return njit(cache=True, **options)(f)
        except RuntimeError:  # numba: "cannot cache function ...: no locator"
            return njit(**options)(f)

    return wrap if func is None else wrap(func)


def gaussian_weights(sigma: float, truncate: float) -> NDArray[np.float32]:
    """Half of a normalised, truncated Gaussian kernel.

    Parameters
    ----------
    sigma : float
        Standard deviation in samples (``> 0``).
    truncate : float
        The kernel is cut at ``int(truncate * sigma + 0.5)`` samples, as in
        scipy.ndimage.

    Returns
    -------
    array of shape ``(radius + 1,)``, float32
        Weights of offsets ``0, 1, ..., radius`` (the kernel is symmetric).
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x * x)
    phi /= phi[0] + 2.0 * phi[1:].sum()
    return phi.astype(np.float32)


@_jit(inline="always")
def _mirror(i: int, n: int) -> int:
    # symmetric extension (d c b a | a b c d | d c b a), any distance
    period = 2 * n
    i %= period
    return period - 1 - i if i >= n else i


@_jit
def convolve_middle(
    src, weights, dst, a_lo, a_hi, lo, hi, b_lo, b_hi
):  # pragma: no cover
    """Symmetric convolution along the middle axis of ``(A, N, B)`` float32 arrays.

    Writes ``dst[a_lo:a_hi, lo:hi, b_lo:b_hi]`` only, reading ``src`` mirrored at its
    own edges (so a window's values equal the whole array's). ``weights`` holds
    offsets ``0..r`` (see :func:`gaussian_weights`); ``dst`` may not alias ``src``.
    Vectorised along the last (contiguous) axis.
    """
    n = src.shape[1]
    r = weights.shape[0] - 1
    width = b_hi - b_lo
    acc = np.empty(width, np.float32)
    for a in range(a_lo, a_hi):
        for i in range(lo, hi):
            w0 = weights[0]
            row = src[a, i, b_lo:b_hi]
            for b in range(width):
                acc[b] = w0 * row[b]
            for k in range(1, r + 1):
                wk = weights[k]
                below = src[a, _mirror(i - k, n), b_lo:b_hi]
                above = src[a, _mirror(i + k, n), b_lo:b_hi]
                for b in range(width):
                    acc[b] += wk * (below[b] + above[b])
            out = dst[a, i, b_lo:b_hi]
            for b in range(width):
                out[b] = acc[b]


@_jit
def convolve_outer(src, weights, dst, window):  # pragma: no cover - compiled
    """Symmetric convolution along the first axis of ``(N, Y, X)`` float32 arrays,
    written in ``window`` (int64 ``n0, n1, y0, y1, x0, x1``) only; as
    :func:`convolve_middle` otherwise."""
    n = src.shape[0]
    r = weights.shape[0] - 1
    i0, i1, y0, y1, x0, x1 = (
        window[0],
        window[1],
        window[2],
        window[3],
        window[4],
        window[5],
    )
    width = x1 - x0
    acc = np.empty(width, np.float32)
    # row by row, all outputs of a row together: the 2r+1 source rows one row of
    # outputs reads stay in cache (plane by plane, each row would be fetched from
    # memory 2r+1 times on large blocks; about 2-3x slower)
    for y in range(y0, y1):
        for i in range(i0, i1):
            w0 = weights[0]
            row = src[i, y, x0:x1]
            for b in range(width):
                acc[b] = w0 * row[b]
            for k in range(1, r + 1):
                wk = weights[k]
                below = src[_mirror(i - k, n), y, x0:x1]
                above = src[_mirror(i + k, n), y, x0:x1]
                for b in range(width):
                    acc[b] += wk * (below[b] + above[b])
            out = dst[i, y, x0:x1]
            for b in range(width):
                out[b] = acc[b]


@_jit
def convolve_last(src, weights, dst, m_lo, m_hi, lo, hi):  # pragma: no cover
    """Symmetric convolution along the last axis of ``(M, N)`` float32 arrays.

    Writes ``dst[m_lo:m_hi, lo:hi]`` only, each line mirrored at its own ends. Same
    arithmetic as :func:`convolve_middle` (taps summed in the same order); the
    needed part of each line is mirrored into a buffer so that the tap loop reads
    plain slices.
    """
    n = src.shape[1]
    r = weights.shape[0] - 1
    width = hi - lo
    buf = np.empty(width + 2 * r, np.float32)
    acc = np.empty(width, np.float32)
    for m in range(m_lo, m_hi):
        line = src[m]
        # samples lo-r .. hi+r of the mirrored line: a plain (vectorised) copy
        # inside, index arithmetic only beyond the ends
        start = lo - r
        a = min(max(start, 0), n)
        b = max(min(hi + r, n), a)
        for j in range(a - start):
            buf[j] = line[_mirror(start + j, n)]
        inside = buf[a - start : b - start]
        part = line[a:b]
        for j in range(b - a):
            inside[j] = part[j]
        for j in range(b - start, width + 2 * r):
            buf[j] = line[_mirror(start + j, n)]
        w0 = weights[0]
        centre = buf[r : r + width]
        for x in range(width):
            acc[x] = w0 * centre[x]
        for k in range(1, r + 1):
            wk = weights[k]
            # slices: plain non-negative indices let LLVM vectorise the loop
            left = buf[r - k : r - k + width]
            right = buf[r + k : r + k + width]
            for x in range(width):
                acc[x] += wk * (left[x] + right[x])
        out = dst[m, lo:hi]
        for x in range(width):
            out[x] = acc[x]


@_jit(inline="always")
def _eig2(a, b, c, half):  # pragma: no cover - compiled
    # eigenvalues (descending) of [[a, b], [b, c]]; ``half`` is 0.5 in the
    # precision wanted (a float64 literal would promote float32 arithmetic)
    half_trace = (a + c) * half
    half_diff = (a - c) * half
    root = np.sqrt(half_diff * half_diff + b * b)
    return half_trace + root, half_trace - root


@_jit(inline="always")
def _chebyshev_root(r):  # pragma: no cover - compiled
    # cos(acos(r) / 3) for r in [0, 1]: the root in [cos(pi/6), 1] of
    # 4 c^3 - 3 c = r (the triple-angle identity). A cubic fit (error < 7e-5)
    # and two Newton steps (f' >= 6 there, quadratic convergence) reach double
    # precision.
    c = ((0.00937448 * r - 0.04063051) * r + 0.16521472) * r + 0.86609252
    for _ in range(2):
        c -= (4.0 * c * c * c - 3.0 * c - r) / (12.0 * c * c - 3.0)
    return c


@_jit(inline="always")
def _eig3(a11, a12, a13, a22, a23, a33):  # pragma: no cover - compiled
    """Eigenvalues (descending) of a symmetric 3x3 matrix, trigonometric form.

    With ``q = trace / 3`` and ``p = sqrt(tr((A - qI)^2) / 6)``, the eigenvalues are
    ``q + 2 p t`` for the three roots ``t`` of ``4 t^3 - 3 t = r``,
    ``r = det((A - qI) / p) / 2`` (``t = cos(phi + 2 pi k / 3)``, ``cos 3 phi = r``).
    The root of largest magnitude is simple and comes from
    :func:`_chebyshev_root`; the other two follow from the sum and the product of
    the roots, so a (nearly) repeated pair costs no accuracy. Branch-free (LLVM
    can vectorise it); float64.
    """
    q = (a11 + a22 + a33) / 3.0
    b11 = a11 - q
    b22 = a22 - q
    b33 = a33 - q
    p2 = (
        b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * (a12 * a12 + a13 * a13 + a23 * a23)
    ) / 6.0
    p = math.sqrt(p2)
    inv = 1.0 / p if p > 0.0 else 0.0  # A = qI: every root then gives q
    c11 = b11 * inv
    c22 = b22 * inv
    c33 = b33 * inv
    c12 = a12 * inv
    c13 = a13 * inv
    c23 = a23 * inv
    det = (
        c11 * (c22 * c33 - c23 * c23)
        - c12 * (c12 * c33 - c23 * c13)
        + c13 * (c12 * c23 - c22 * c13)
    )
    r = min(1.0, max(-1.0, det * 0.5))
    positive = r >= 0.0
    t = _chebyshev_root(abs(r))
    u = t if positive else -t
    s = math.sqrt(max(0.0, 3.0 - 3.0 * t * t))
    m1 = (s - u) * 0.5
    m2 = (-s - u) * 0.5
    two_p = 2.0 * p
    hi = u if positive else m1
    mid = m1 if positive else m2
    lo = m2 if positive else u
    return q + two_p * hi, q + two_p * mid, q + two_p * lo


@_jit
def eigvals_sym2(a, b, c, out):  # pragma: no cover - compiled
    """Eigenvalues (descending) of ``[[a, b], [b, c]]`` fields of shape ``(N,)``.

    ``out`` has shape ``(2, N)``; the arithmetic is in the inputs' precision.
    """
    half = np.float32(0.5)
    for i in range(a.shape[0]):
        e0, e1 = _eig2(a[i], b[i], c[i], half)
        out[0, i] = e0
        out[1, i] = e1


@_jit
def eigvals_sym3(a11, a12, a13, a22, a23, a33, out):  # pragma: no cover - compiled
    """Eigenvalues (descending) of symmetric 3x3 fields given by their six
    upper-triangle components, each of shape ``(N,)``; ``out`` has shape ``(3, N)``."""
    for i in range(a11.shape[0]):
        e0, e1, e2 = _eig3(
            np.float64(a11[i]),
            np.float64(a12[i]),
            np.float64(a13[i]),
            np.float64(a22[i]),
            np.float64(a23[i]),
            np.float64(a33[i]),
        )
        out[0, i] = e0
        out[1, i] = e1
        out[2, i] = e2


@_jit
def eigvals_sym3_window(tensor, out, window):  # pragma: no cover - compiled
    """As :func:`eigvals_sym3` for ``(6, Z, Y, X)`` components (zz, zy, zx, yy, yx,
    xx) into ``(3, Z, Y, X)``, in ``window`` (int64 ``z0, z1, y0, y1, x0, x1``)."""
    x0, x1 = window[4], window[5]
    for z in range(window[0], window[1]):
        for y in range(window[2], window[3]):
            a11 = tensor[0, z, y, x0:x1]
            a12 = tensor[1, z, y, x0:x1]
            a13 = tensor[2, z, y, x0:x1]
            a22 = tensor[3, z, y, x0:x1]
            a23 = tensor[4, z, y, x0:x1]
            a33 = tensor[5, z, y, x0:x1]
            e0 = out[0, z, y, x0:x1]
            e1 = out[1, z, y, x0:x1]
            e2 = out[2, z, y, x0:x1]
            for x in range(x1 - x0):
                v0, v1, v2 = _eig3(
                    np.float64(a11[x]),
                    np.float64(a12[x]),
                    np.float64(a13[x]),
                    np.float64(a22[x]),
                    np.float64(a23[x]),
                    np.float64(a33[x]),
                )
                e0[x] = v0
                e1[x] = v1
                e2[x] = v2


@_jit
def convolve_last3(src, weights, dst, window):  # pragma: no cover - compiled
    """:func:`convolve_last` along x of ``(Z, Y, X)`` arrays, in ``window`` (int64
    ``z0, z1, y0, y1, x0, x1``)."""
    for z in range(window[0], window[1]):
        convolve_last(
            src[z], weights, dst[z], window[2], window[3], window[4], window[5]
        )


@_jit(inline="always")
def _clamped_rows(plane, y, half, pad):  # pragma: no cover - compiled
    # rows y-half..y+half of ``plane`` (clamped at the edges), each extended by
    # ``half`` clamped samples on both sides, into ``pad`` (2*half+1, X+2*half)
    ny, nx = plane.shape
    for k in range(2 * half + 1):
        row = plane[min(max(y + k - half, 0), ny - 1)]
        dst = pad[k]
        for j in range(half):
            dst[j] = row[0]
            dst[nx + half + j] = row[nx - 1]
        inner = dst[half : half + nx]
        for x in range(nx):
            inner[x] = row[x]


@_jit
def gradient_products2(smooth, out, window):  # pragma: no cover - compiled
    """Structure-tensor products ``(gy*gy, gy*gx, gx*gx)`` of central differences.

    ``smooth`` is ``(Y, X)``; ``out`` is ``(3, Y, X)``, float32, written in
    ``window`` (int64 ``y0, y1, x0, x1``) only. Differences are clamped at the
    block edges.
    """
    nx = smooth.shape[1]
    y0, y1, x0, x1 = window[0], window[1], window[2], window[3]
    width = x1 - x0
    half = np.float32(0.5)
    pad = np.empty((3, nx + 2), np.float32)
    for y in range(y0, y1):
        _clamped_rows(smooth, y, 1, pad)
        up = pad[0, x0 + 1 : x1 + 1]
        down = pad[2, x0 + 1 : x1 + 1]
        left = pad[1, x0:x1]
        right = pad[1, x0 + 2 : x1 + 2]
        o0 = out[0, y, x0:x1]
        o1 = out[1, y, x0:x1]
        o2 = out[2, y, x0:x1]
        for x in range(width):
            gy = (down[x] - up[x]) * half
            gx = (right[x] - left[x]) * half
            o0[x] = gy * gy
            o1[x] = gy * gx
            o2[x] = gx * gx


@_jit
def gradient_products3(smooth, inv_spacing, out, window):  # pragma: no cover
    """3D structure-tensor products of central differences in x-pixel units.

    ``smooth`` is ``(Z, Y, X)``; ``inv_spacing`` is ``(1/sz, 1/sy, 1/sx)``;
    ``out`` is ``(6, Z, Y, X)`` (zz, zy, zx, yy, yx, xx), written in ``window``
    (int64 ``z0, z1, y0, y1, x0, x1``) only. Differences are clamped at the faces;
    float64 arithmetic.
    """
    nz, ny, nx = smooth.shape
    hz = 0.5 * inv_spacing[0]
    hy = 0.5 * inv_spacing[1]
    hx = 0.5 * inv_spacing[2]
    z0, z1, y0, y1, x0, x1 = (
        window[0],
        window[1],
        window[2],
        window[3],
        window[4],
        window[5],
    )
    width = x1 - x0
    centre = np.empty(nx + 2, np.float32)
    for z in range(z0, z1):
        for y in range(y0, y1):
            row = smooth[z, y]
            centre[0] = row[0]
            centre[nx + 1] = row[nx - 1]
            inner = centre[1 : nx + 1]
            for x in range(nx):
                inner[x] = row[x]
            left = centre[x0:x1]
            right = centre[x0 + 2 : x1 + 2]
            front = smooth[max(z - 1, 0), y, x0:x1]
            back = smooth[min(z + 1, nz - 1), y, x0:x1]
            up = smooth[z, max(y - 1, 0), x0:x1]
            down = smooth[z, min(y + 1, ny - 1), x0:x1]
            o0 = out[0, z, y, x0:x1]
            o1 = out[1, z, y, x0:x1]
            o2 = out[2, z, y, x0:x1]
            o3 = out[3, z, y, x0:x1]
            o4 = out[4, z, y, x0:x1]
            o5 = out[5, z, y, x0:x1]
            for x in range(width):
                gz = (np.float64(back[x]) - np.float64(front[x])) * hz
                gy = (np.float64(down[x]) - np.float64(up[x])) * hy
                gx = (np.float64(right[x]) - np.float64(left[x])) * hx
                o0[x] = gz * gz
                o1[x] = gz * gy
                o2[x] = gz * gx
                o3[x] = gy * gy
                o4[x] = gy * gx
                o5[x] = gx * gx


@_jit
def assemble2(
    plane, smooth, i_smooth, i_narrow, tensor, columns, region, out
):  # pragma: no cover - compiled
    """Write one channel's features of a 2D block straight into ``out``.

    Row by row: every feature of an output row is first computed into a small
    feature-major table (vectorised loops), then copied pixel by pixel into the
    pixel-major ``out``, which is therefore written once, in order.

    Parameters (float32 unless said)
    ----------
    plane : ``(Y, X)``
        The channel (its intensity is a feature).
    smooth : ``(G, Y, X)``
        Gaussian-smoothed channel. Central differences (clamped at the block
        edges) give the gradient and, applied twice, the Hessian (like
        ``np.gradient`` twice: ``d2/dy2 = (s[y+2] - 2 s[y] + s[y-2]) / 4``).
    i_smooth, i_narrow : int64 ``(S,)``
        Per sigma, the planes of ``smooth`` that hold its Gaussian and the narrower
        Gaussian of its difference of Gaussians.
    tensor : ``(S, 3, Y, X)``
        Smoothed structure-tensor components (yy, yx, xx) per sigma, whose
        eigenvalues are features (not read when no column wants them).
    columns : int64 ``(1 + 8 S,)``
        Column of ``out`` for the intensity, then per sigma for gaussian, laplacian,
        gradient, dog, structure tensor (2) and Hessian (2); ``-1`` skips one.
    region : int64 ``(4,)``
        ``y0, y1, x0, x1``: the part of the block to write.
    out : ``(y1 - y0, x1 - x0, K)``
        Destination (may be a column range of a wider array); every one of its
        ``K`` columns must be named in ``columns``.
    """
    n_sigmas = i_smooth.shape[0]
    nx = smooth.shape[2]
    y0, y1, x0, x1 = region[0], region[1], region[2], region[3]
    width = x1 - x0
    n_cols = out.shape[2]
    half = np.float32(0.5)
    # a value table row per output column, plus one for skipped features
    rows = np.empty(columns.shape[0], np.int64)
    read_tensor = False
    for j in range(columns.shape[0]):
        rows[j] = columns[j] if columns[j] >= 0 else n_cols
    for i in range(n_sigmas):
        if columns[1 + 8 * i + 4] >= 0:
            read_tensor = True
    # rows 16 floats longer than the region: with a power-of-two width (tiles of
    # 512) the copy's reads down a column would all hit the same cache sets
    vals = np.empty((n_cols + 1, width + 16), np.float32)
    pad = np.empty((5, nx + 4), np.float32)
    for y in range(y0, y1):
        src = plane[y, x0:x1]
        dst = vals[rows[0]]
        for x in range(width):
            dst[x] = src[x]
        for i in range(n_sigmas):
            _clamped_rows(smooth[i_smooth[i]], y, 2, pad)
            a = x0 + 2
            b = x1 + 2
            c = pad[2, a:b]
            up2 = pad[0, a:b]
            up = pad[1, a:b]
            down = pad[3, a:b]
            down2 = pad[4, a:b]
            left2 = pad[2, a - 2 : b - 2]
            left = pad[2, a - 1 : b - 1]
            right = pad[2, a + 1 : b + 1]
            right2 = pad[2, a + 2 : b + 2]
            up_left = pad[1, a - 1 : b - 1]
            up_right = pad[1, a + 1 : b + 1]
            down_left = pad[3, a - 1 : b - 1]
            down_right = pad[3, a + 1 : b + 1]
            narrow = smooth[i_narrow[i], y, x0:x1]
            r = 1 + 8 * i
            v_gauss = vals[rows[r]]
            v_lap = vals[rows[r + 1]]
            v_grad = vals[rows[r + 2]]
            v_dog = vals[rows[r + 3]]
            v_h0 = vals[rows[r + 6]]
            v_h1 = vals[rows[r + 7]]
            for x in range(width):
                cx = c[x]
                gy = (down[x] - up[x]) * half
                gx = (right[x] - left[x]) * half
                hyy = ((down2[x] - cx) * half - (cx - up2[x]) * half) * half
                hxx = ((right2[x] - cx) * half - (cx - left2[x]) * half) * half
                hxy = (
                    (down_right[x] - up_right[x]) * half
                    - (down_left[x] - up_left[x]) * half
                ) * half
                e0, e1 = _eig2(hyy, hxy, hxx, half)
                v_gauss[x] = cx
                v_lap[x] = hyy + hxx
                v_grad[x] = np.sqrt(gy * gy + gx * gx)
                v_dog[x] = cx - narrow[x]
                v_h0[x] = e0
                v_h1[x] = e1
            if read_tensor:
                jyy = tensor[i, 0, y, x0:x1]
                jyx = tensor[i, 1, y, x0:x1]
                jxx = tensor[i, 2, y, x0:x1]
                v_t0 = vals[rows[r + 4]]
                v_t1 = vals[rows[r + 5]]
                for x in range(width):
                    e0, e1 = _eig2(jyy[x], jyx[x], jxx[x], half)
                    v_t0[x] = e0
                    v_t1[x] = e1
        orow = out[y - y0]
        for x in range(width):
            px = orow[x]
            for k in range(n_cols):
                px[k] = vals[k, x]


@_jit
def derivatives3(
    smooth, inv_spacing, hessian, laplacian, gradient, window
):  # pragma: no cover - compiled
    """Hessian, Laplacian and gradient magnitude of a smoothed 3D block.

    Central differences in x-pixel units (differences along axis ``i`` times
    ``inv_spacing[i] / 2``), applied twice for the second derivatives (like
    ``np.gradient`` twice, with spacings), clamped at the block faces; float64
    arithmetic.

    Parameters
    ----------
    smooth : float32 ``(Z, Y, X)``
    inv_spacing : float64 ``(3,)``
        ``1 / scale`` per axis (z, y, x).
    hessian : float32 ``(6, Z, Y, X)``
        Receives zz, zy, zx, yy, yx, xx.
    laplacian, gradient : float32 ``(Z, Y, X)``
        Receive the trace of the Hessian and the gradient magnitude.
    window : int64 ``(6,)``
        ``z0, z1, y0, y1, x0, x1``: the outputs are written there only.
    """
    nz, ny, nx = smooth.shape
    hz = 0.5 * inv_spacing[0]
    hy = 0.5 * inv_spacing[1]
    hx = 0.5 * inv_spacing[2]
    # rows around (z, y), each padded by two clamped samples in x
    offsets = np.array(
        [
            [0, 0],
            [0, -2],
            [0, -1],
            [0, 1],
            [0, 2],
            [-2, 0],
            [-1, 0],
            [1, 0],
            [2, 0],
            [-1, -1],
            [-1, 1],
            [1, -1],
            [1, 1],
        ]
    )
    pad = np.empty((offsets.shape[0], nx + 4), np.float32)
    z0, z1, y0, y1, x0, x1 = (
        window[0],
        window[1],
        window[2],
        window[3],
        window[4],
        window[5],
    )
    width = x1 - x0
    for z in range(z0, z1):
        for y in range(y0, y1):
            for k in range(offsets.shape[0]):
                zz = min(max(z + offsets[k, 0], 0), nz - 1)
                yy = min(max(y + offsets[k, 1], 0), ny - 1)
                row = smooth[zz, yy]
                dst = pad[k]
                dst[0] = row[0]
                dst[1] = row[0]
                dst[nx + 2] = row[nx - 1]
                dst[nx + 3] = row[nx - 1]
                inner = dst[2 : nx + 2]
                for x in range(nx):
                    inner[x] = row[x]
            c = pad[0, x0 + 2 : x1 + 2]
            c_xm2 = pad[0, x0:x1]
            c_xm1 = pad[0, x0 + 1 : x1 + 1]
            c_xp1 = pad[0, x0 + 3 : x1 + 3]
            c_xp2 = pad[0, x0 + 4 : x1 + 4]
            ym2 = pad[1, x0 + 2 : x1 + 2]
            ym1 = pad[2, x0 + 2 : x1 + 2]
            ym1_xm1 = pad[2, x0 + 1 : x1 + 1]
            ym1_xp1 = pad[2, x0 + 3 : x1 + 3]
            yp1 = pad[3, x0 + 2 : x1 + 2]
            yp1_xm1 = pad[3, x0 + 1 : x1 + 1]
            yp1_xp1 = pad[3, x0 + 3 : x1 + 3]
            yp2 = pad[4, x0 + 2 : x1 + 2]
            zm2 = pad[5, x0 + 2 : x1 + 2]
            zm1 = pad[6, x0 + 2 : x1 + 2]
            zm1_xm1 = pad[6, x0 + 1 : x1 + 1]
            zm1_xp1 = pad[6, x0 + 3 : x1 + 3]
            zp1 = pad[7, x0 + 2 : x1 + 2]
            zp1_xm1 = pad[7, x0 + 1 : x1 + 1]
            zp1_xp1 = pad[7, x0 + 3 : x1 + 3]
            zp2 = pad[8, x0 + 2 : x1 + 2]
            zm1_ym1 = pad[9, x0 + 2 : x1 + 2]
            zm1_yp1 = pad[10, x0 + 2 : x1 + 2]
            zp1_ym1 = pad[11, x0 + 2 : x1 + 2]
            zp1_yp1 = pad[12, x0 + 2 : x1 + 2]
            o_zz = hessian[0, z, y, x0:x1]
            o_zy = hessian[1, z, y, x0:x1]
            o_zx = hessian[2, z, y, x0:x1]
            o_yy = hessian[3, z, y, x0:x1]
            o_yx = hessian[4, z, y, x0:x1]
            o_xx = hessian[5, z, y, x0:x1]
            o_lap = laplacian[z, y, x0:x1]
            o_grad = gradient[z, y, x0:x1]
            for x in range(width):
                cx = np.float64(c[x])
                gz = (np.float64(zp1[x]) - np.float64(zm1[x])) * hz
                gy = (np.float64(yp1[x]) - np.float64(ym1[x])) * hy
                gx = (np.float64(c_xp1[x]) - np.float64(c_xm1[x])) * hx
                h_zz = (
                    (np.float64(zp2[x]) - cx) * hz - (cx - np.float64(zm2[x])) * hz
                ) * hz
                h_yy = (
                    (np.float64(yp2[x]) - cx) * hy - (cx - np.float64(ym2[x])) * hy
                ) * hy
                h_xx = (
                    (np.float64(c_xp2[x]) - cx) * hx - (cx - np.float64(c_xm2[x])) * hx
                ) * hx
                h_zy = (
                    (np.float64(zp1_yp1[x]) - np.float64(zm1_yp1[x])) * hz
                    - (np.float64(zp1_ym1[x]) - np.float64(zm1_ym1[x])) * hz
                ) * hy
                h_zx = (
                    (np.float64(zp1_xp1[x]) - np.float64(zm1_xp1[x])) * hz
                    - (np.float64(zp1_xm1[x]) - np.float64(zm1_xm1[x])) * hz
                ) * hx
                h_yx = (
                    (np.float64(yp1_xp1[x]) - np.float64(ym1_xp1[x])) * hy
                    - (np.float64(yp1_xm1[x]) - np.float64(ym1_xm1[x])) * hy
                ) * hx
                o_zz[x] = h_zz
                o_zy[x] = h_zy
                o_zx[x] = h_zx
                o_yy[x] = h_yy
                o_yx[x] = h_yx
                o_xx[x] = h_xx
                o_lap[x] = h_zz + h_yy + h_xx
                o_grad[x] = math.sqrt(gz * gz + gy * gy + gx * gx)


@_jit
def scatter_columns3(features, rows, columns, window, out):  # pragma: no cover
    """Copy feature-major volumes into pixel-major columns within a window:
    ``out[z - z0, y - y0, x - x0, columns[j]] = features[rows[j], z, y, x]``.

    ``features`` is ``(K, Z, Y, X)``; ``window`` int64 ``z0, z1, y0, y1, x0, x1``;
    ``out`` is ``(z1 - z0, y1 - y0, x1 - x0, F)`` (float32, may be a strided view
    whose last axis is contiguous); ``rows`` and ``columns`` int64 of equal length.
    """
    z0, y0, x0 = window[0], window[2], window[4]
    m = rows.shape[0]
    for z in range(z0, window[1]):
        for y in range(y0, window[3]):
            orow = out[z - z0, y - y0]
            for x in range(x0, window[5]):
                px = orow[x - x0]
                for j in range(m):
                    px[columns[j]] = features[rows[j], z, y, x]
