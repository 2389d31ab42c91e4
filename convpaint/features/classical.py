"""Classical filter bank: Gaussian, LoG, gradient, DoG, structure tensor, Hessian.

Two implementations of the same definitions compute the 2D features:
``implementation: fast`` (the default) runs float32 separable convolutions compiled
with numba (:mod:`convpaint.features.filterops`) and writes every feature straight
into the channels-last output; ``implementation: scipy`` is the original
scipy.ndimage code (float64 convolutions, planes, one transpose). They differ by
float rounding (typically 1e-7, at most ~1e-4 of a feature's range), so a model
keeps the one it was trained with:
model files written before the fast path existed name no implementation and are
read as ``scipy`` (see :func:`upgrade_stored_params`).

:meth:`FilterBankExtractor.volume` computes true 3D features (``features.dims: 3d``)
with per-axis sigmas for anisotropic voxels, with the fast kernels only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PositiveFloat
from scipy import ndimage as ndi

from convpaint.config.features import ExtractorParams

from .base import crop_into
from .registry import register_extractor

__all__ = ["FilterBankExtractor", "FilterBankParams", "upgrade_stored_params"]

FilterName = Literal[
    "gaussian", "laplacian", "gradient", "dog", "structure_tensor", "hessian"
]
_ALL_FILTERS: list[FilterName] = [
    "gaussian",
    "laplacian",
    "gradient",
    "dog",
    "structure_tensor",
    "hessian",
]
#: The narrower Gaussian of the difference of Gaussians, as a fraction of sigma.
_DOG_RATIO = 0.625
#: Inner (derivative) scale of the structure tensor, as a fraction of sigma.
_ST_INNER = 0.5
#: Number of output features of each filter per channel and sigma.
_WIDTH = {
    "gaussian": 1,
    "laplacian": 1,
    "gradient": 1,
    "dog": 1,
    "structure_tensor": 2,
    "hessian": 2,
}
#: The same in 3D (three eigenvalues).
_WIDTH_3D = {**_WIDTH, "structure_tensor": 3, "hessian": 3}
#: Column of each filter's first output in the compiled kernels' slot tables.
_SLOT = {
    "gaussian": 0,
    "laplacian": 1,
    "gradient": 2,
    "dog": 3,
    "structure_tensor": 4,
    "hessian": 6,
}
_SLOT_3D = {**_SLOT, "hessian": 7}
#: Fingerprint of the original scipy.ndimage implementation (stored in older models).
_SCIPY_FINGERPRINT = {
    "implementation": "scipy.ndimage+central-differences",
    "dog_ratio": _DOG_RATIO,
    "st_inner": _ST_INNER,
}


class FilterBankParams(ExtractorParams):
    """Parameters of the ``filters`` extractor (ilastik-style filter bank).

    Example::

        - name: filters
          sigmas: [0.7, 1.6, 3.5]
          filters: [gaussian, gradient, hessian]
    """

    name: Literal["filters"] = "filters"
    """Extractor name."""

    sigmas: list[PositiveFloat] = Field(
        default_factory=lambda: [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0], min_length=1
    )
    """Gaussian scales in pixels; every filter is computed at each."""

    filters: list[FilterName] = Field(
        default_factory=lambda: list(_ALL_FILTERS), min_length=1
    )
    """Filters to compute: gaussian (smoothed intensity), laplacian (LoG), gradient
    (gradient magnitude), dog (difference of Gaussians, sigma minus 0.625*sigma),
    structure_tensor (2 eigenvalues, inner scale sigma/2), hessian (2 eigenvalues).
    Derivatives are central differences of the Gaussian-smoothed image."""

    intensity: bool = True
    """Also include the normalised raw intensity of each channel."""

    truncate: float = Field(default=4.0, ge=2.0, le=6.0)
    """Gaussian kernels are cut at this many standard deviations."""

    implementation: Literal["fast", "scipy"] = "fast"
    """How the 2D features are computed: 'fast' (float32 separable convolutions
    compiled with numba, written straight into the feature layout; several times
    faster) or 'scipy' (scipy.ndimage, the implementation of convpaint 0.1, which
    its models keep using). Same filters; the numbers agree to float rounding."""


def upgrade_stored_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Extractor params as stored in a model file, made explicit for this version.

    Model files written before the fast implementations existed store ``filters``
    and ``vgg16`` params without ``implementation``; their features came from
    scipy.ndimage and torch, so they must keep using them (the models'
    fingerprints say so). Call this on each stored extractor mapping before
    validating it; other extractors pass through.

    Parameters
    ----------
    raw : mapping
        One stored extractor specification (``{"name": ..., ...}``).

    Returns
    -------
    dict
        A copy, with ``implementation: scipy`` added to old ``filters`` entries and
        ``implementation: torch`` to old ``vgg16`` ones.
    """
    out = dict(raw)
    if "implementation" not in out:
        if out.get("name") == "filters":
            out["implementation"] = "scipy"
        elif out.get("name") == "vgg16":
            out["implementation"] = "torch"
    return out


def _radius(sigma: float, truncate: float) -> int:
    # scipy.ndimage's kernel half-width for a Gaussian of this sigma
    return int(truncate * float(sigma) + 0.5)


def _eig2(a: NDArray, b: NDArray, c: NDArray, out0: NDArray, out1: NDArray) -> None:
    """Eigenvalues (descending) of the symmetric 2x2 matrices [[a, b], [b, c]]."""
    half_trace = (a + c) * 0.5
    root = np.sqrt(((a - c) * 0.5) ** 2 + b * b)
    np.add(half_trace, root, out=out0)
    np.subtract(half_trace, root, out=out1)


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """A float32 work array of ``shape``, reused by later calls in this thread.

    Fresh memory costs a page fault per 4 KiB on first touch, as much as the
    arithmetic for small sigmas; the work arrays of one block are kept per thread
    (contents undefined) and grown when a larger block comes.
    """
    pool = _SCRATCH.__dict__.setdefault("pool", {})
    size = int(np.prod(shape))
    buf = pool.get(name)
    if buf is None or buf.size < size:
        buf = pool[name] = np.empty(size, np.float32)
    return buf[:size].reshape(shape)


def _halo_1d(
    sigmas: Sequence[float], truncate: float, structure_tensor: bool, spacing: float
) -> int:
    """Context along one axis whose Gaussian sigmas are ``sigma / spacing`` samples."""
    worst = 0
    for s in sigmas:
        r = _radius(s / spacing, truncate)
        worst = max(worst, r + 2)  # + second central differences
        if structure_tensor:
            worst = max(worst, _radius(s * _ST_INNER / spacing, truncate) + 1 + r)
    return worst + 1


@register_extractor("filters", params=FilterBankParams)
class FilterBankExtractor:
    """Classical multi-scale filter bank computed per channel.

    2D blocks go through :meth:`__call__`, 3D blocks (``features.dims: 3d``) through
    :meth:`volume`; see the module docstring for the two 2D implementations.
    """

    #: The pipeline asks extractors for true 3D features only when this is set.
    supports_3d = True
    #: ``__call__`` and :meth:`volume` take ``region=`` and ``out=`` (compute only the
    #: tile inside the halo and write it straight into the classifier's rows).
    supports_region = True

    def __init__(self, params: FilterBankParams) -> None:
        self.params = params
        self._sigmas = sorted({float(s) for s in params.sigmas})
        self._filters = [f for f in _ALL_FILTERS if f in params.filters]

    @property
    def halo(self) -> int:
        return _halo_1d(
            self._sigmas,
            self.params.truncate,
            "structure_tensor" in self._filters,
            1.0,
        )

    @property
    def alignment(self) -> int:
        return 1

    def n_features(self, n_channels: int) -> int:
        per_sigma = sum(_WIDTH[f] for f in self._filters)
        return n_channels * (int(self.params.intensity) + per_sigma * len(self._sigmas))

    def feature_names(self, n_channels: int) -> list[str]:
        return self._names("filters", _WIDTH, n_channels)

    def _names(self, prefix: str, widths: dict[str, int], n_channels: int) -> list[str]:
        names = []
        for ch in range(n_channels):
            if self.params.intensity:
                names.append(f"{prefix}|filter=intensity|ch={ch}")
            for s in self._sigmas:
                for f in self._filters:
                    for k in range(widths[f]):
                        suffix = f"|k={k}" if widths[f] > 1 else ""
                        names.append(f"{prefix}|filter={f}|sigma={s:g}|ch={ch}{suffix}")
        return names

    def fingerprint(self) -> dict[str, Any]:
        if self.params.implementation == "scipy":
            return dict(_SCIPY_FINGERPRINT)
        return {
            "implementation": "numba-separable-float32",
            "version": 1,
            "dog_ratio": _DOG_RATIO,
            "st_inner": _ST_INNER,
        }

    def __call__(
        self,
        image: NDArray[np.float32],
        *,
        region: tuple[slice, slice] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Features of a normalised 2D block.

        Parameters
        ----------
        image : array of shape ``(C, Y, X)``, float32
            The block (extended by the halo, see :mod:`convpaint.tiling`).
        region : (slice, slice), optional
            Only this part of the block (e.g. the tile inside its halo) is returned:
            the features of the rest are never computed.
        out : array of shape ``(h, w, F)``, float32, optional
            Where to write the result (``h, w``: the region's size), e.g. the
            classifier's input rows; it may be a view with strided rows and pixels
            as long as each pixel's ``F`` features are adjacent.

        Returns
        -------
        array of shape ``(h, w, F)``, float32
            ``out`` if given, else a new C-contiguous array; ``F = n_features(C)``,
            in the order of :meth:`feature_names`.
        """
        image = np.asarray(image, dtype=np.float32)
        if self.params.implementation == "fast":
            return self._call_fast(image, region, out)
        return crop_into(self._call_scipy(image), region, out)

    # --- 3D -------------------------------------------------------------------------
    def volume_halo(self, scale: tuple[float, float, float]) -> tuple[int, int, int]:
        """Context in voxels each 3D feature needs, per axis ``(z, y, x)``.

        Parameters
        ----------
        scale : (float, float, float)
            Each axis's voxel size relative to x's (``(5.0, 1.0, 1.0)``: z steps
            are five times the pixel size); sigmas along axis ``i`` are
            ``sigma / scale[i]`` voxels.
        """
        st = "structure_tensor" in self._filters
        t = self.params.truncate
        return (
            _halo_1d(self._sigmas, t, st, float(scale[0])),
            _halo_1d(self._sigmas, t, st, float(scale[1])),
            _halo_1d(self._sigmas, t, st, float(scale[2])),
        )

    def volume_n_features(self, n_channels: int) -> int:
        """Number of 3D features for an image with ``n_channels`` channels."""
        per_sigma = sum(_WIDTH_3D[f] for f in self._filters)
        return n_channels * (int(self.params.intensity) + per_sigma * len(self._sigmas))

    def volume_feature_names(self, n_channels: int) -> list[str]:
        """One name per 3D feature, ``filters3d|filter=...|sigma=...|ch=...[|k=...]``."""
        return self._names("filters3d", _WIDTH_3D, n_channels)

    def volume(
        self,
        image: NDArray[np.float32],
        scale: tuple[float, float, float],
        *,
        region: tuple[slice, slice, slice] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """True 3D features of a normalised block, with anisotropic sigmas.

        Per channel: the intensity (if enabled), then per sigma the Gaussian, LoG,
        gradient magnitude, DoG, structure-tensor eigenvalues (3, descending) and
        Hessian eigenvalues (3, descending). Gaussian sigmas along axis ``i`` are
        ``sigma / scale[i]`` voxels (as ilastik does); derivatives are central
        differences of the smoothed volume in units of x-pixels (divided by
        ``scale[i]``), so features are comparable between axes. Values within
        :meth:`volume_halo` of the block's faces may be wrong (the tiler trims
        them); all others are bit-identical wherever the block starts.

        Parameters
        ----------
        image : array of shape ``(C, Z, Y, X)``, float32
            The block.
        scale : (float, float, float)
            Voxel size per axis relative to x (see :meth:`volume_halo`).
        region : (slice, slice, slice), optional
            Only this part of the block (the tile inside its halo) is returned; the
            last filter stages run there only, which saves most of the work when
            the halo is wide.
        out : array of shape ``(z, y, x, F)``, float32, optional
            Where to write the result (the region's size); may be a view whose
            voxels are strided, as long as each voxel's features are adjacent.

        Returns
        -------
        array of shape ``(z, y, x, F)``, float32
            ``out`` if given, else a new C-contiguous array; ``F =
            volume_n_features(C)``, in the order of :meth:`volume_feature_names`.

        Raises
        ------
        ValueError
            For ``implementation: scipy`` (3D exists in the fast implementation
            only), a non-4D image or a non-positive scale.
        """
        if self.params.implementation != "fast":
            raise ValueError(
                "filters: 3D features exist in the fast implementation only; "
                "remove 'implementation: scipy' from the filters settings"
            )
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 4:
            raise ValueError(
                f"filters: volume() needs a (C, Z, Y, X) block, got shape {image.shape}"
            )
        spacing = tuple(float(v) for v in scale)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"filters: scale must be 3 positive numbers, got {scale}")
        return self._volume_fast(image, spacing, region, out)  # type: ignore[arg-type]

    # --- fast implementation (numba kernels) ------------------------------------------
    def _slot_table(
        self, slot: dict[str, int], widths: dict[str, int], n: int, col: int
    ) -> NDArray[np.int64]:
        """Per sigma, the output column of each kernel slot (-1: not computed)."""
        table = np.full((len(self._sigmas), n), -1, dtype=np.int64)
        for i in range(len(self._sigmas)):
            for f in self._filters:
                for k in range(widths[f]):
                    table[i, slot[f] + k] = col
                    col += 1
        return table

    def _columns2(self) -> NDArray[np.int64]:
        """One channel's column of the intensity and of each sigma's kernel slots
        (see :func:`filterops.assemble2`); -1 where a feature is not computed."""
        table = np.full(1 + 8 * len(self._sigmas), -1, dtype=np.int64)
        col = 0
        if self.params.intensity:
            table[0] = 0
            col = 1
        for i in range(len(self._sigmas)):
            for f in self._filters:
                for k in range(_WIDTH[f]):
                    table[1 + 8 * i + _SLOT[f] + k] = col
                    col += 1
        return table

    def _call_fast(
        self,
        image: NDArray[np.float32],
        region: tuple[slice, slice] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        from . import filterops as ops

        n_ch, ny, nx = image.shape
        ys, xs = region if region is not None else (slice(0, ny), slice(0, nx))
        y0, y1, _ = ys.indices(ny)
        x0, x1, _ = xs.indices(nx)
        n_feat = self.n_features(n_ch)
        if out is None:
            out = np.empty((y1 - y0, x1 - x0, n_feat), dtype=np.float32)
        elif out.shape != (y1 - y0, x1 - x0, n_feat) or out.dtype != np.float32:
            raise ValueError(
                f"filters: out must be float32 of shape {(y1 - y0, x1 - x0, n_feat)}, "
                f"got {out.dtype} {out.shape}"
            )
        t = self.params.truncate
        want = set(self._filters)
        n_sig = len(self._sigmas)

        def window(margin: int) -> tuple[int, int, int, int]:
            """The region grown by ``margin`` pixels, inside the block."""
            return (
                max(y0 - margin, 0),
                min(y1 + margin, ny),
                max(x0 - margin, 0),
                min(x1 + margin, nx),
            )

        # the distinct Gaussians the features read (a DoG's narrow scale may
        # coincide with another sigma: the same kernel gives the same numbers),
        # each computed where it is read: the region and two pixels for the
        # derivative stencils, more where it is a structure tensor's inner scale
        kernels: dict[bytes, int] = {}
        weights: list[NDArray[np.float32]] = []
        margins: list[int] = []

        def plane_of(sigma: float, margin: int = 2) -> int:
            w = ops.gaussian_weights(sigma, t)
            key = w.tobytes()
            if key not in kernels:
                kernels[key] = len(weights)
                weights.append(w)
                margins.append(margin)
            g = kernels[key]
            margins[g] = max(margins[g], margin)
            return g

        i_smooth = np.array([plane_of(s) for s in self._sigmas], dtype=np.int64)
        i_narrow = (
            np.array([plane_of(s * _DOG_RATIO) for s in self._sigmas], dtype=np.int64)
            if "dog" in want
            else i_smooth
        )
        inner_plane: list[int | None] = []
        for s in self._sigmas:
            w_inner = ops.gaussian_weights(s * _ST_INNER, t)
            g = kernels.get(w_inner.tobytes())
            if g is not None and "structure_tensor" in want:
                margins[g] = max(margins[g], _radius(s, t) + 1)
            inner_plane.append(g)
        smooth = _scratch("smooth", (len(weights), ny, nx))
        tmp = _scratch("tmp", (3, ny, nx))
        if "structure_tensor" in want:
            tensor = _scratch("tensor", (n_sig, 3, ny, nx))
            products = _scratch("products", (3, ny, nx))
        else:
            tensor = np.zeros((1, 3, 1, 1), np.float32)  # never read
        columns = self._columns2()
        per_channel = n_feat // n_ch
        bounds = np.array([y0, y1, x0, x1], dtype=np.int64)
        for ch in range(n_ch):
            plane = np.ascontiguousarray(image[ch])
            for g, w in enumerate(weights):
                _gaussian2(plane, w, smooth[g], tmp[0], window(margins[g]))
            if "structure_tensor" in want:
                for i, s in enumerate(self._sigmas):
                    r = _radius(s, t)
                    g = inner_plane[i]
                    if g is None:
                        inner = tmp[1]
                        w_inner = ops.gaussian_weights(s * _ST_INNER, t)
                        _gaussian2(plane, w_inner, inner, tmp[0], window(r + 1))
                    else:
                        inner = smooth[g]
                    wy0, wy1, wx0, wx1 = window(r)
                    ops.gradient_products2(
                        inner, products, np.array([wy0, wy1, wx0, wx1], dtype=np.int64)
                    )
                    w = weights[i_smooth[i]]
                    ops.convolve_middle(products, w, tmp, 0, 3, y0, y1, wx0, wx1)
                    for k in range(3):
                        ops.convolve_last(tmp[k], w, tensor[i, k], y0, y1, x0, x1)
            dst = out[:, :, ch * per_channel : (ch + 1) * per_channel]
            ops.assemble2(
                plane, smooth, i_smooth, i_narrow, tensor, columns, bounds, dst
            )
        return out

    def _volume_fast(
        self,
        image: NDArray[np.float32],
        spacing: tuple[float, float, float],
        region: tuple[slice, slice, slice] | None,
        out: NDArray[np.float32] | None,
    ) -> NDArray[np.float32]:
        from . import filterops as ops

        n_ch, nz, ny, nx = image.shape
        shape = (nz, ny, nx)
        bounds = [
            sl.indices(n)[:2]
            for sl, n in zip(region or (slice(None),) * 3, shape, strict=True)
        ]
        n_feat = self.volume_n_features(n_ch)
        size = tuple(b - a for a, b in bounds)
        if out is None:
            out = np.empty((*size, n_feat), dtype=np.float32)
        elif out.shape != (*size, n_feat) or out.dtype != np.float32:
            raise ValueError(
                f"filters: out must be float32 of shape {(*size, n_feat)}, "
                f"got {out.dtype} {out.shape}"
            )
        t = self.params.truncate
        want = set(self._filters)
        inv_spacing = np.array([1.0 / v for v in spacing], dtype=np.float64)

        def kernel(sigma: float) -> tuple[NDArray[np.float32], ...]:
            return tuple(ops.gaussian_weights(sigma / v, t) for v in spacing)

        def window(margins: Sequence[int]) -> NDArray[np.int64]:
            """The region grown by ``margins`` voxels per axis, inside the block."""
            return np.array(
                [
                    v
                    for (a, b), m, n in zip(bounds, margins, shape, strict=True)
                    for v in (max(a - m, 0), min(b + m, n))
                ],
                dtype=np.int64,
            )

        exact = window((0, 0, 0))
        # one sigma's features, feature-major, in kernel slot order (see _SLOT_3D)
        feats = _scratch("v_features", (10, *shape))
        work = _scratch("v_work", (6, *shape))
        tmp = _scratch("v_tmp", (7, *shape))
        inner = _scratch("v_inner", shape)
        slots = self._slot_table(_SLOT_3D, _WIDTH_3D, 10, int(self.params.intensity))
        per_channel = n_feat // n_ch
        zs, ys, xs = (slice(a, b) for a, b in bounds)
        for ch in range(n_ch):
            plane = np.ascontiguousarray(image[ch])
            dst = out[..., ch * per_channel : (ch + 1) * per_channel]
            if self.params.intensity:
                dst[..., 0] = plane[zs, ys, xs]
            for i, s in enumerate(self._sigmas):
                radii = [w.shape[0] - 1 for w in kernel(s)]
                _gaussian3(plane, kernel(s), feats[0], tmp[6], window((2, 2, 2)))
                if "dog" in want:
                    _gaussian3(plane, kernel(s * _DOG_RATIO), feats[3], tmp[6], exact)
                    narrow = feats[3, zs, ys, xs]
                    np.subtract(feats[0, zs, ys, xs], narrow, out=narrow)
                if "structure_tensor" in want:
                    _gaussian3(
                        plane,
                        kernel(s * _ST_INNER),
                        inner,
                        tmp[6],
                        window([r + 1 for r in radii]),
                    )
                    ops.gradient_products3(inner, inv_spacing, work, window(radii))
                    for k in range(6):
                        _gaussian3(work[k], kernel(s), tmp[k], tmp[6], exact)
                    ops.eigvals_sym3_window(tmp[:6], feats[4:7], exact)
                if want & {"laplacian", "gradient", "hessian"}:
                    ops.derivatives3(
                        feats[0], inv_spacing, work, feats[1], feats[2], exact
                    )
                    if "hessian" in want:
                        ops.eigvals_sym3_window(work, feats[7:10], exact)
                active = np.flatnonzero(slots[i] >= 0)
                ops.scatter_columns3(
                    feats, active.astype(np.int64), slots[i][active], exact, dst
                )
        return out

    # --- scipy implementation (convpaint 0.1; kept bit for bit for its models) --------
    def _call_scipy(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        n_ch = image.shape[0]
        # planes first (what scipy writes fast), one blocked transpose at the end
        planes = np.empty((self.n_features(n_ch), *image.shape[1:]), dtype=np.float32)
        i = 0
        for ch in range(n_ch):
            plane = image[ch]
            if self.params.intensity:
                planes[i] = plane
                i += 1
            for s in self._sigmas:
                i = self._one_scale_scipy(plane, s, planes, i)
        return np.ascontiguousarray(planes.transpose(1, 2, 0))

    def _one_scale_scipy(self, plane: NDArray, s: float, out: NDArray, i: int) -> int:
        """Fill ``out[i:]`` with this sigma's filters; return the number written.

        Derivatives are central differences of the Gaussian-smoothed image (like
        scikit-image's Hessian), so one smoothing serves gradient, Hessian and LoG.
        """
        t = self.params.truncate
        want = set(self._filters)
        smooth = ndi.gaussian_filter(plane, s, mode="reflect", truncate=t)
        gy = gx = None
        if want & {"gradient", "hessian", "laplacian"}:
            gy, gx = np.gradient(smooth)
        hyy = hxy = hxx = None
        if want & {"hessian", "laplacian"}:
            hyy, hxy = np.gradient(gy)
            hxx = np.gradient(gx, axis=1)
        for f in self._filters:
            if f == "gaussian":
                out[i] = smooth
            elif f == "laplacian":
                np.add(hyy, hxx, out=out[i])
            elif f == "gradient":
                np.sqrt(gy * gy + gx * gx, out=out[i])
            elif f == "dog":
                narrow = ndi.gaussian_filter(
                    plane, s * _DOG_RATIO, mode="reflect", truncate=t
                )
                np.subtract(smooth, narrow, out=out[i])
            elif f == "structure_tensor":
                inner = ndi.gaussian_filter(
                    plane, s * _ST_INNER, mode="reflect", truncate=t
                )
                iy, ix = np.gradient(inner)
                jyy = ndi.gaussian_filter(iy * iy, s, mode="reflect", truncate=t)
                jxy = ndi.gaussian_filter(iy * ix, s, mode="reflect", truncate=t)
                jxx = ndi.gaussian_filter(ix * ix, s, mode="reflect", truncate=t)
                _eig2(jyy, jxy, jxx, out[i], out[i + 1])
            elif f == "hessian":
                _eig2(hyy, hxy, hxx, out[i], out[i + 1])
            i += _WIDTH[f]
        return i


def _gaussian2(
    plane: NDArray[np.float32],
    weights: NDArray[np.float32],
    out: NDArray[np.float32],
    tmp: NDArray[np.float32],
    window: tuple[int, int, int, int],
) -> None:
    """Separable Gaussian of a ``(Y, X)`` plane (columns into ``tmp``, then rows),
    written to ``out`` in ``window`` ``(y0, y1, x0, x1)`` only; mirrored edges."""
    from . import filterops as ops

    y0, y1, x0, x1 = window
    r = weights.shape[0] - 1
    nx = plane.shape[1]
    ops.convolve_middle(
        plane[None], weights, tmp[None], 0, 1, y0, y1, max(x0 - r, 0), min(x1 + r, nx)
    )
    ops.convolve_last(tmp, weights, out, y0, y1, x0, x1)


def _gaussian3(
    volume: NDArray[np.float32],
    weights: tuple[NDArray[np.float32], ...],
    out: NDArray[np.float32],
    tmp: NDArray[np.float32],
    window: NDArray[np.int64],
) -> None:
    """Separable anisotropic Gaussian of a ``(Z, Y, X)`` volume (z, y, then x),
    written to ``out`` in ``window`` (``z0, z1, y0, y1, x0, x1``) only."""
    from . import filterops as ops

    ny, nx = volume.shape[1:]
    z0, z1, y0, y1, x0, x1 = (int(v) for v in window)
    ry, rx = weights[1].shape[0] - 1, weights[2].shape[0] - 1
    ylo, yhi = max(y0 - ry, 0), min(y1 + ry, ny)
    xlo, xhi = max(x0 - rx, 0), min(x1 + rx, nx)
    ops.convolve_outer(
        volume, weights[0], out, np.array([z0, z1, ylo, yhi, xlo, xhi], np.int64)
    )
    ops.convolve_middle(out, weights[1], tmp, z0, z1, y0, y1, xlo, xhi)
    ops.convolve_last3(tmp, weights[2], out, window)
