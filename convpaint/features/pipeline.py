"""FeaturePipeline: run every extractor on a block, in 2-D planes, 3 views or 3-D.

Blocks are ``(C, Z, Y, X)`` float32 (normalised; 2-D images have ``Z = 1``). How a
stack is featurised is the pipeline's ``dims``:

``planes``
    every Z plane on its own with the 2-D extractors (no context along Z);
``views``
    for each voxel, the 2-D extractors' features of the xy, xz and yz planes through
    it, concatenated (the Convpaint paper's 3-D workflow). When Z steps are coarser
    than the pixels, the xz/yz views are stretched along Z by the integer factor
    nearest the anisotropy (linear interpolation between planes) before extraction,
    and sampled back at the planes;
``3d``
    true 3-D filters (extractors with ``supports_3d``), with per-axis sigmas from the
    voxel size.

Every mode keeps tiles exact: each voxel's value is the same expression wherever the
block starts, provided the block honours :attr:`FeaturePipeline.halo` and
:attr:`FeaturePipeline.alignment` (see :mod:`convpaint.tiling`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import ConfigError, ModelBundleError

from .registry import build_extractor

__all__ = [
    "DIMS",
    "FeaturePipeline",
    "Normalization",
    "view_factor",
]

Dims = Literal["planes", "views", "3d"]
#: How stacks are featurised (see the module docstring).
DIMS: tuple[str, ...] = ("planes", "views", "3d")
_VIEWS = ("xy", "xz", "yz")


def view_factor(spacing: Sequence[float] | None) -> int:
    """Integer stretch of the Z axis that makes xz/yz views roughly isotropic.

    ``spacing`` is the voxel size ``(z, y, x)``; the factor is ``round(z / x)``, at
    least 1 (finer Z steps than pixels are left as they are).
    """
    if spacing is None:
        return 1
    z, _, x = (float(s) for s in spacing)
    return max(1, round(z / x)) if x > 0 else 1


def _axis_scale(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    """Voxel size per axis relative to X (what 3-D filters scale their sigmas by)."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    z, y, x = (float(s) for s in spacing)
    return (z / x, y / x, 1.0)


def _stretch_z(view: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Linear interpolation of ``(C, Z, W)`` to ``(C, Z * factor, W)``.

    Row ``k`` holds plane ``k // factor`` blended towards the next plane by
    ``(k % factor) / factor``; the last plane is repeated beyond the end. Each row is
    the same expression wherever the block starts (origins are multiples of
    ``factor``), so views stay tile-exact.
    """
    if factor == 1:
        return view
    n = view.shape[1]
    k = np.arange(n * factor)
    lo = k // factor
    hi = np.minimum(lo + 1, n - 1)
    w = ((k % factor) / factor).astype(np.float32)[None, :, None]
    a = view[:, lo]
    return a + (view[:, hi] - a) * w


class FeaturePipeline:
    """The concatenated extractors of one model, for images with ``n_channels``.

    Parameters
    ----------
    specs : list of extractor params models
        As validated by :class:`convpaint.config.FeatureConfig`.
    n_channels : int
        Channels of the images (canonical ``C``).
    dims : {"planes", "views", "3d"}
        How stacks are featurised; 2-D images use ``planes``.
    spacing : (z, y, x) floats, optional
        Voxel size; sets the view stretch factor and the 3-D filters' anisotropy.

    Raises
    ------
    ConfigError
        ``dims: 3d`` with an extractor that has no 3-D form.
    """

    def __init__(
        self,
        specs: Sequence[Any],
        n_channels: int,
        *,
        dims: Dims = "planes",
        spacing: Sequence[float] | None = None,
    ) -> None:
        if dims not in DIMS:
            raise ConfigError(
                f"features.dims: unknown mode '{dims}'; use one of {DIMS}"
            )
        self.specs = list(specs)
        self.n_channels = n_channels
        self.dims = dims
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.extractors = [build_extractor(spec) for spec in self.specs]
        if dims == "3d":
            flat = [
                s.name
                for s, e in zip(self.specs, self.extractors, strict=True)
                if not getattr(e, "supports_3d", False)
            ]
            if flat:
                raise ConfigError(
                    f"features.dims: 3d needs extractors with a 3-D form, but "
                    f"{', '.join(flat)} work(s) on 2-D planes only; use dims: views "
                    "(xy, xz and yz planes) or planes, or only the 'filters' extractor"
                )
            scale = _axis_scale(self.spacing)
            self._scale = scale
            self.widths = [e.volume_n_features(n_channels) for e in self.extractors]
            halos = [e.volume_halo(scale) for e in self.extractors]
            self.halo = tuple(max(h[i] for h in halos) for i in range(3))
            self.alignment = (1, 1, 1)
        else:
            self.widths = [e.n_features(n_channels) for e in self.extractors]
            h = max(e.halo for e in self.extractors)
            a = math.lcm(*(e.alignment for e in self.extractors))
            self.halo_2d, self.alignment_2d = h, a
            if dims == "planes":
                self.halo = (0, h, h)
                self.alignment = (1, a, a)
            else:
                r = self.factor = view_factor(self.spacing)
                # stretched rows beyond the last plane repeat it: keep them in the halo
                self.halo = (math.ceil((h + r - 1) / r), h, h)
                self.alignment = (a // math.gcd(a, r), a, a)
        self.n_per_view = sum(self.widths)
        self.n_features = self.n_per_view * (3 if dims == "views" else 1)

    # ---------------------------------------------------------------- description
    def feature_names(self) -> list[str]:
        """One name per feature column."""
        names: list[str] = []
        for e in self.extractors:
            if self.dims == "3d":
                names.extend(e.volume_feature_names(self.n_channels))
            else:
                names.extend(e.feature_names(self.n_channels))
        if self.dims == "views":
            return [f"view={v}|{n}" for v in _VIEWS for n in names]
        return names

    def fingerprints(self) -> list[dict[str, Any]]:
        """What identifies each extractor's numbers (weights hashes, implementation)."""
        return [e.fingerprint() for e in self.extractors]

    def describe(self) -> dict[str, Any]:
        """The geometry stored in a model: mode, spacing, halo and alignment."""
        out: dict[str, Any] = {
            "dims": self.dims,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "halo": list(self.halo),
            "alignment": list(self.alignment),
        }
        if self.dims == "views":
            out["view_factor"] = self.factor
        return out

    def check_against(
        self, n_features: int, fingerprints: list[dict[str, Any]]
    ) -> None:
        """Refuse to predict when features differ from those the model was trained on."""
        if n_features != self.n_features:
            raise ModelBundleError(
                f"the model was trained with {n_features} features but its extractors now "
                f"produce {self.n_features} for {self.n_channels}-channel images; the input "
                "differs from the training data or convpaint changed: retrain the model"
            )
        now = self.fingerprints()
        for i, (old, new) in enumerate(zip(fingerprints, now, strict=True)):
            if old != new:
                raise ModelBundleError(
                    f"extractor {i} ({self.specs[i].name}) differs from training: stored "
                    f"{old}, found {new}; use the same weights file as for training or retrain"
                )

    # ---------------------------------------------------------------- computation
    def _plane(
        self,
        plane: NDArray[np.float32],
        region: tuple[slice, slice],
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Concatenated 2-D features ``(h, w, F2)`` of ``region`` of a ``(C, H, W)``
        plane, written into ``out`` when given (a view whose pixels' features are
        adjacent). Extractors that can restrict their work to the region do so."""
        h = region[0].stop - region[0].start
        w = region[1].stop - region[1].start
        if out is None:
            out = np.empty((h, w, self.n_per_view), dtype=np.float32)
        f0 = 0
        for extractor, width in zip(self.extractors, self.widths, strict=True):
            dst = out[..., f0 : f0 + width]
            if getattr(extractor, "supports_region", False):
                extractor(plane, region=region, out=dst)
            else:
                dst[...] = extractor(plane)[region]
            f0 += width
        return out

    def compute(
        self,
        block: NDArray[np.float32],
        trim: tuple[slice, ...],
        mask: NDArray[np.bool_] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Features of the trimmed region of a normalised extended block.

        Parameters
        ----------
        block : array of shape ``(C, Ze, Ye, Xe)``, float32
            Normalised extended block (see :mod:`convpaint.tiling`). A ``(C, Ye, Xe)``
            block is taken as one plane.
        trim : tuple of slices
            The tile inside the block, ``(z, y, x)`` (or ``(y, x)`` for a plane).
        mask : bool array of the tile's shape, optional
            Only these voxels are returned (training).
        out : array of shape ``(n_voxels, F)``, float32, C-contiguous, optional
            Where to write the result (a buffer reused from tile to tile saves
            the page faults of fresh memory).

        Returns
        -------
        array of shape ``(n_voxels, F)``, float32, C-contiguous
            Voxels of the tile (or of ``mask``) in C order, the layout the forest reads.
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 3:
            block = block[:, None]
            trim = (slice(0, 1), *trim)
            if mask is not None:
                mask = mask[None]
        zs, ys, xs = trim
        shape = (zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start)
        n = int(mask.sum()) if mask is not None else math.prod(shape)
        if out is None:
            out = np.empty((n, self.n_features), dtype=np.float32)
        elif (
            out.shape != (n, self.n_features)
            or out.dtype != np.float32
            or not out.flags.c_contiguous
        ):
            raise ValueError(
                f"out must be C-contiguous float32 of shape {(n, self.n_features)}, "
                f"got {out.dtype} {out.shape}"
            )
        grid = out.reshape(*shape, self.n_features) if mask is None else None

        def target(f0: int, width: int) -> NDArray[np.float32]:
            """Where features of columns ``f0:f0+width`` go: the output grid itself,
            or a temporary ``(Tz, Ty, Tx, width)`` array when a mask selects voxels."""
            if grid is not None:
                return grid[..., f0 : f0 + width]
            return np.empty((*shape, width), dtype=np.float32)

        def done(f0: int, feats: NDArray[np.float32]) -> None:
            if grid is None:
                out[:, f0 : f0 + feats.shape[-1]] = feats[mask]

        if self.dims == "3d":
            f0 = 0
            for extractor, width in zip(self.extractors, self.widths, strict=True):
                dst = target(f0, width)
                extractor.volume(block, self._scale, region=(zs, ys, xs), out=dst)
                done(f0, dst)
                f0 += width
            return out
        width = self.n_per_view
        # xy: each plane of the tile
        xy = target(0, width)
        for i, z in enumerate(range(zs.start, zs.stop)):
            self._plane(block[:, z], (ys, xs), xy[i])
        done(0, xy)
        del xy
        if self.dims == "planes":
            return out
        r = self.factor
        # rows of the stretched views that hold the tile's planes
        rows = slice(zs.start * r, (zs.stop - 1) * r + 1)
        # xz: one (C, Z*r, X) view per row y of the tile -> (Tz, Tx, F2) each
        xz = target(width, width)
        for j, y in enumerate(range(ys.start, ys.stop)):
            view = _stretch_z(block[:, :, y, :], r)
            if r == 1:
                self._plane(view, (zs, xs), xz[:, j])
            else:
                xz[:, j] = self._plane(view, (rows, xs))[::r]
        done(width, xz)
        del xz
        yz = target(2 * width, width)
        for k, x in enumerate(range(xs.start, xs.stop)):
            view = _stretch_z(block[:, :, :, x], r)
            if r == 1:
                self._plane(view, (zs, ys), yz[:, :, k])
            else:
                yz[:, :, k] = self._plane(view, (rows, ys))[::r]
        done(2 * width, yz)
        return out


class Normalization:
    """Per-channel (or joint) mean and standard deviation, optionally per plane.

    ``mean`` and ``std`` are sequences of one value per channel (global statistics)
    or arrays of shape ``(C, Z)`` (one value per channel and Z plane, ``plane``
    normalisation). Blocks are ``(C, Z, Y, X)`` (or ``(C, Y, X)``); for per-plane
    statistics the caller passes the global plane index of each block plane.
    """

    def __init__(self, mean: Any, std: Any) -> None:
        m = np.asarray(mean, dtype=np.float32)
        s = np.asarray(std, dtype=np.float32)
        self.per_plane = m.ndim == 2
        self.mean = m if self.per_plane else m.reshape(-1)
        self.std = np.where(s > 0, s, np.float32(1.0))
        if not self.per_plane:
            self.std = self.std.reshape(-1)

    def __call__(
        self, block: NDArray, planes: NDArray[np.intp] | None = None
    ) -> NDArray[np.float32]:
        """Return ``(block - mean) / std`` as float32.

        ``planes``: global Z index of each plane of a ``(C, Z, Y, X)`` block (needed
        for per-plane statistics).
        """
        out = np.asarray(block, dtype=np.float32).copy()
        extra = (1,) * (out.ndim - 1)
        if self.per_plane:
            if planes is None:
                raise ValueError(
                    "per-plane normalisation needs the block's plane indices"
                )
            shape = (self.mean.shape[0], len(planes)) + (1,) * (out.ndim - 2)
            out -= self.mean[:, planes].reshape(shape)
            out /= self.std[:, planes].reshape(shape)
            return out
        out -= self.mean.reshape(-1, *extra)
        out /= self.std.reshape(-1, *extra)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form (what the model file stores)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
