"""Classical filter bank: Gaussian, LoG, gradient, DoG, structure tensor, Hessian."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PositiveFloat
from scipy import ndimage as ndi

from convpaint.config.features import ExtractorParams

from .registry import register_extractor

__all__ = ["FilterBankExtractor", "FilterBankParams"]

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


def _radius(sigma: float, truncate: float) -> int:
    # scipy.ndimage's kernel half-width for a Gaussian of this sigma
    return int(truncate * float(sigma) + 0.5)


def _eig2(a: NDArray, b: NDArray, c: NDArray, out0: NDArray, out1: NDArray) -> None:
    """Eigenvalues (descending) of the symmetric 2x2 matrices [[a, b], [b, c]]."""
    half_trace = (a + c) * 0.5
    root = np.sqrt(((a - c) * 0.5) ** 2 + b * b)
    np.add(half_trace, root, out=out0)
    np.subtract(half_trace, root, out=out1)


@register_extractor("filters", params=FilterBankParams)
class FilterBankExtractor:
    """Classical multi-scale filter bank computed per channel with scipy.ndimage."""

    def __init__(self, params: FilterBankParams) -> None:
        self.params = params
        self._sigmas = sorted({float(s) for s in params.sigmas})
        self._filters = [f for f in _ALL_FILTERS if f in params.filters]

    @property
    def halo(self) -> int:
        t = self.params.truncate
        worst = 0
        for s in self._sigmas:
            worst = max(worst, _radius(s, t) + 2)  # + second central differences
            if "structure_tensor" in self._filters:
                worst = max(worst, _radius(s * _ST_INNER, t) + 1 + _radius(s, t))
        return worst + 1

    @property
    def alignment(self) -> int:
        return 1

    def n_features(self, n_channels: int) -> int:
        per_sigma = sum(_WIDTH[f] for f in self._filters)
        return n_channels * (int(self.params.intensity) + per_sigma * len(self._sigmas))

    def feature_names(self, n_channels: int) -> list[str]:
        names = []
        for ch in range(n_channels):
            if self.params.intensity:
                names.append(f"filters|filter=intensity|ch={ch}")
            for s in self._sigmas:
                for f in self._filters:
                    for k in range(_WIDTH[f]):
                        suffix = f"|k={k}" if _WIDTH[f] > 1 else ""
                        names.append(f"filters|filter={f}|sigma={s:g}|ch={ch}{suffix}")
        return names

    def fingerprint(self) -> dict[str, Any]:
        return {
            "implementation": "scipy.ndimage+central-differences",
            "dog_ratio": _DOG_RATIO,
            "st_inner": _ST_INNER,
        }

    def __call__(self, image: NDArray[np.float32]) -> NDArray[np.float32]:
        image = np.asarray(image, dtype=np.float32)
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
                i = self._one_scale(plane, s, planes, i)
        return np.ascontiguousarray(planes.transpose(1, 2, 0))

    def _one_scale(self, plane: NDArray, s: float, out: NDArray, i: int) -> int:
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
