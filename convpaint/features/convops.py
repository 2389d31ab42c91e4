"""Compiled kernels for VGG16's first layer (conv1_1) on an image pyramid.

Block-mean downsampling, the 3x3 convolution written straight into the channels-last
feature layout, and bilinear upsampling into that layout (half-pixel sample centres,
edges clamped). Like :mod:`convpaint.features.filterops`: numba, GIL released, one
thread, no ``fastmath``, every output value one fixed sequence of operations on its
neighbourhood, so tiles equal the whole image bit for bit (for blocks whose origin
is a multiple of the pyramid factor).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .filterops import _jit

__all__ = ["conv3x3", "downsample_mean", "phases", "upsample_linear"]


@_jit
def downsample_mean(image, factor, out):  # pragma: no cover - compiled
    """Block means of ``(C, H, W)`` float32 over ``factor x factor`` blocks into
    ``out`` ``(C, H // factor, W // factor)``; rows of a block summed in order."""
    n_ch, h, w = out.shape
    scale = np.float32(1.0 / (factor * factor))
    acc = np.empty(w, np.float32)
    for c in range(n_ch):
        for y in range(h):
            for x in range(w):
                acc[x] = 0.0
            for dy in range(factor):
                row = image[c, y * factor + dy]
                for dx in range(factor):
                    part = row[dx : dx + w * factor : factor]
                    for x in range(w):
                        acc[x] += part[x]
            dst = out[c, y]
            for x in range(w):
                dst[x] = acc[x] * scale


@_jit
def conv3x3(image, weights, bias, window, out):  # pragma: no cover - compiled
    """3x3 convolution with zero padding, channels-last output.

    ``image`` is ``(C, H, W)``; ``weights`` ``(C * 9, F)`` (row ``9 c + 3 dy + dx``:
    the weights of input channel ``c`` at offset ``(dy - 1, dx - 1)``); ``bias``
    ``(F,)``; ``window`` int64 ``y0, y1, x0, x1``: the outputs computed; ``out``
    ``(y1 - y0, x1 - x0, F)`` (float32, may be a view whose pixels are strided, with
    each pixel's ``F`` values adjacent). ``out[y - y0, x - x0] = bias + the taps``,
    added in row order of ``weights``; vectorised over ``F``.
    """
    n_ch, h, w = image.shape
    n_out = bias.shape[0]
    y0, y1, x0, x1 = window[0], window[1], window[2], window[3]
    width = x1 - x0
    # the three input rows around y, zero-padded, per channel
    pad = np.zeros((n_ch, 3, w + 2), np.float32)
    acc = np.empty((width, n_out), np.float32)
    for y in range(y0, y1):
        for c in range(n_ch):
            for dy in range(3):
                yy = y + dy - 1
                dst = pad[c, dy, 1 : w + 1]
                if 0 <= yy < h:
                    src = image[c, yy]
                    for x in range(w):
                        dst[x] = src[x]
                else:
                    for x in range(w):
                        dst[x] = 0.0
        for x in range(width):
            a = acc[x]
            for o in range(n_out):
                a[o] = bias[o]
        for c in range(n_ch):
            for dy in range(3):
                for dx in range(3):
                    line = pad[c, dy, x0 + dx : x1 + dx]
                    wt = weights[9 * c + 3 * dy + dx]
                    for x in range(width):
                        v = line[x]
                        a = acc[x]
                        for o in range(n_out):
                            a[o] += wt[o] * v
        orow = out[y - y0]
        for x in range(width):
            a = acc[x]
            px = orow[x]
            for o in range(n_out):
                px[o] = a[o]


def phases(factor: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per output phase ``p`` of upsampling by ``factor`` on the half-pixel grid: the
    offset of the lower coarse sample and the weight of the upper one."""
    lows, weights = [], []
    for p in range(factor):
        pos = (p + 0.5) / factor - 0.5
        lo = math.floor(pos)
        lows.append(lo)
        weights.append(pos - lo)
    return np.array(lows, np.int64), np.array(weights, np.float32)


@_jit
def upsample_linear(coarse, factor, lows, weights, window, out):  # pragma: no cover
    """Bilinear upsampling of channels-last ``(h, w, F)`` by ``factor``, rows
    ``y0:y1`` and columns ``x0:x1`` (``window``, int64) of the result into ``out``
    ``(y1 - y0, x1 - x0, F)`` (may be a view with strided pixels).

    Separable, one output row at a time: output ``r * factor + p`` (along either
    axis) is ``a + t (b - a)`` of coarse ``r + lows[p]`` and the next one, with
    ``t = weights[p]``, clamped at the edges (see :func:`phases`); rows first.
    """
    h, w, n = coarse.shape
    y0, y1, x0, x1 = window[0], window[1], window[2], window[3]
    row = np.empty((w, n), np.float32)
    for y in range(y0, y1):
        r = y // factor
        p = y - r * factor
        lo = min(max(r + lows[p], 0), h - 1)
        hi = min(max(r + lows[p] + 1, 0), h - 1)
        t = weights[p]
        a = coarse[lo]
        b = coarse[hi]
        for x in range(w):
            ax = a[x]
            bx = b[x]
            dx = row[x]
            for o in range(n):
                dx[o] = ax[o] + t * (bx[o] - ax[o])
        orow = out[y - y0]
        for x in range(x0, x1):
            q = x // factor
            pp = x - q * factor
            left = row[min(max(q + lows[pp], 0), w - 1)]
            right = row[min(max(q + lows[pp] + 1, 0), w - 1)]
            u = weights[pp]
            px = orow[x - x0]
            for o in range(n):
                px[o] = left[o] + u * (right[o] - left[o])
