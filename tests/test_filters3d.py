"""The 3D filter bank (``features.dims: 3d``) and the compiled eigenvalue solvers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tifffile

from convpaint.features import filterops
from convpaint.features.classical import FilterBankExtractor, FilterBankParams

SIGMAS = [0.7, 1.6, 3.5]
#: ovule voxels are about 0.284 x 0.127 x 0.127 um (z, y, x)
OVULE_SCALE = (2.24, 1.0, 1.0)
_PAIRS = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


def _symmetric(components: np.ndarray) -> np.ndarray:
    """(6, N) upper-triangle components -> (N, 3, 3) float64 matrices."""
    m = np.empty((components.shape[1], 3, 3))
    for k, (i, j) in enumerate(_PAIRS):
        m[:, i, j] = m[:, j, i] = components[k]
    return m


def _degenerate_tensors(rng: np.random.Generator) -> np.ndarray:
    """Symmetric 3x3 matrices with repeated or nearly repeated eigenvalues."""
    mats = []
    for lam in [
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        (-3.0, -3.0, -3.0),
        (2.0, 1.0, 1.0),
        (1.0, 1.0, 2.0),
        (5.0, 0.0, 0.0),  # rank one
        (1.0, 1.0 + 1e-6, 1.0 - 1e-6),
        (1e3, 1e3 + 1e-2, -1.0),
        (-1e-4, 2.0, 2.0 + 1e-7),
    ]:
        for _ in range(40):
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
            mats.append(q @ np.diag(lam) @ q.T)
    # structure tensors of straight edges: v v^T
    v = rng.normal(size=(200, 3))
    mats.extend(np.einsum("ni,nj->nij", v, v))
    m = np.asarray(mats)
    return np.stack([m[:, i, j] for i, j in _PAIRS]).astype(np.float32)


def _eig3(components: np.ndarray) -> np.ndarray:
    out = np.empty((3, components.shape[1]), np.float32)
    filterops.eigvals_sym3(*components, out)
    return out


@pytest.mark.parametrize("case", ["random", "scaled", "degenerate"])
def test_eigvals_sym3_matches_eigvalsh(case: str) -> None:
    """The closed-form 3x3 solver equals np.linalg.eigvalsh (descending) to 1e-5 relative."""
    rng = np.random.default_rng(0)
    if case == "random":
        comps = rng.normal(size=(6, 5000)).astype(np.float32)
    elif case == "scaled":
        comps = (rng.normal(size=(6, 5000)) * 10.0 ** rng.integers(-6, 6, 5000)).astype(
            np.float32
        )
    else:
        comps = _degenerate_tensors(rng)
    ours = _eig3(comps)
    ref = np.linalg.eigvalsh(_symmetric(comps.astype(np.float64)))[:, ::-1].T
    norm = np.maximum(np.abs(ref).max(axis=0), 1e-30)
    assert (np.abs(ours - ref) / norm).max() < 1e-5
    assert np.all(ours[0] >= ours[1]) and np.all(ours[1] >= ours[2])


def test_eigvals_sym2_matches_eigvalsh() -> None:
    """The 2x2 solver equals eigvalsh (descending) on random and repeated eigenvalues."""
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(3, 5000)).astype(np.float32)
    a[:100], b[:100], c[:100] = 2.0, 0.0, 2.0
    out = np.empty((2, a.size), np.float32)
    filterops.eigvals_sym2(a, b, c, out)
    m = np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -2).astype(np.float64)
    ref = np.linalg.eigvalsh(m)[:, ::-1].T
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_eigvals_sym3_is_position_independent() -> None:
    """The same matrix gives the same bits wherever it sits in the array (SIMD or not)."""
    comps = np.random.default_rng(2).normal(size=(6, 1000)).astype(np.float32)
    whole = _eig3(comps)
    for start, stop in [(3, 4), (5, 12), (17, 531), (1, 1000)]:
        np.testing.assert_array_equal(_eig3(comps[:, start:stop]), whole[:, start:stop])


@pytest.fixture(scope="module")
def ovule(bench: Path) -> np.ndarray:
    """A normalised 32x48x56 crop of a real confocal volume (plant nuclei)."""
    vol = tifffile.imread(bench / "plantseg_ovule_nuclei3d/images/1135_mini.tif")
    crop = vol[34:66, 18:66, 28:84].astype(np.float32)
    return (crop - crop.mean()) / crop.std()


def _extractor(**kw: object) -> FilterBankExtractor:
    return FilterBankExtractor(FilterBankParams(**{"sigmas": SIGMAS, **kw}))


def test_volume_layout_and_names(ovule: np.ndarray) -> None:
    """volume() returns (Z, Y, X, F) float32 C-contiguous with one name per feature."""
    e = _extractor()
    image = np.stack([ovule[:12, :20, :24], -ovule[:12, :20, :24]])
    feats = e.volume(image, OVULE_SCALE)
    n = e.volume_n_features(2)
    assert n == 2 * (1 + 10 * len(SIGMAS))
    assert feats.shape == (12, 20, 24, n) and feats.dtype == np.float32
    assert feats.flags["C_CONTIGUOUS"]
    names = e.volume_feature_names(2)
    assert len(names) == n
    assert names[0] == "filters3d|filter=intensity|ch=0"
    assert "filters3d|filter=hessian|sigma=1.6|ch=0|k=2" in names
    assert "filters3d|filter=dog|sigma=3.5|ch=1" in names
    np.testing.assert_array_equal(feats[..., 0], image[0])
    np.testing.assert_array_equal(feats[..., n // 2], image[1])
    k = names.index("filters3d|filter=hessian|sigma=1.6|ch=1|k=0")
    assert np.all(feats[..., k] >= feats[..., k + 1])
    assert np.all(feats[..., k + 1] >= feats[..., k + 2])
    assert FilterBankExtractor.supports_3d


@pytest.mark.parametrize(
    "filters",
    [["gaussian"], ["structure_tensor"], ["dog", "hessian"], ["laplacian", "gradient"]],
)
def test_volume_filter_subsets(ovule: np.ndarray, filters: list[str]) -> None:
    """A subset of filters gives exactly the same columns as the full bank."""
    image = ovule[None, :14, :22, :26]
    full = _extractor()
    part = _extractor(filters=filters, intensity=False)
    names = full.volume_feature_names(1)
    cols = [names.index(n) for n in part.volume_feature_names(1)]
    np.testing.assert_array_equal(
        part.volume(image, OVULE_SCALE), full.volume(image, OVULE_SCALE)[..., cols]
    )


def _mirrored(volume: np.ndarray, halo: tuple[int, int, int]) -> np.ndarray:
    return np.pad(volume, [(h, h) for h in halo], mode="symmetric")


def test_volume_tiles_equal_whole_volume(ovule: np.ndarray) -> None:
    """Uneven sub-blocks extended by the halo give bit-identical features (anisotropic)."""
    e = _extractor()
    halo = e.volume_halo(OVULE_SCALE)
    hz, hy, hx = halo
    assert hz < hy == hx  # fewer voxels of context along the coarse axis
    volume = ovule[:24, :40, :44]
    padded = _mirrored(volume, halo)[None]
    whole = e.volume(padded, OVULE_SCALE)[hz:-hz, hy:-hy, hx:-hx]
    tiled = np.empty_like(whole)
    for z0, z1 in itertools.pairwise([0, 7, 24]):
        for y0, y1 in itertools.pairwise([0, 29, 40]):
            for x0, x1 in itertools.pairwise([0, 17, 44]):
                block = padded[:, z0 : z1 + 2 * hz, y0 : y1 + 2 * hy, x0 : x1 + 2 * hx]
                feats = e.volume(block, OVULE_SCALE)
                tiled[z0:z1, y0:y1, x0:x1] = feats[hz:-hz, hy:-hy, hx:-hx]
    np.testing.assert_array_equal(tiled, whole)


def test_volume_region_and_out(ovule: np.ndarray) -> None:
    """region= returns exactly that part of the block; out= may be a strided view."""
    e = _extractor(sigmas=[0.7, 3.5])
    image = np.stack([ovule[:20, :30, :34], ovule[-20:, -30:, -34:]])
    whole = e.volume(image, OVULE_SCALE)
    for region in [
        (slice(0, 3), slice(0, 4), slice(0, 5)),
        (slice(6, 15), slice(11, 30), slice(2, 29)),
        (slice(0, 20), slice(0, 30), slice(0, 34)),
    ]:
        np.testing.assert_array_equal(
            e.volume(image, OVULE_SCALE, region=region), whole[region]
        )
    n = e.volume_n_features(2)
    buf = np.full((9, 19, 27, n + 3), -1.0, np.float32)
    region = (slice(6, 15), slice(11, 30), slice(2, 29))
    got = e.volume(image, OVULE_SCALE, region=region, out=buf[..., 1 : 1 + n])
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[..., 1 : 1 + n], whole[region])
    assert np.all(buf[..., 0] == -1) and np.all(buf[..., 1 + n :] == -1)


def test_volume_halo_covers_dependencies(ovule: np.ndarray) -> None:
    """Changing voxels beyond the halo never changes the features of a block's centre."""
    scale = (3.0, 1.0, 1.0)
    e = _extractor(sigmas=[1.0, 2.5])
    hz, hy, hx = e.volume_halo(scale)
    centre = (slice(hz, hz + 3), slice(hy, hy + 4), slice(hx, hx + 5))
    block = ovule[None, : 2 * hz + 3, : 2 * hy + 4, : 2 * hx + 5]
    ref = e.volume(block, scale)[centre]
    bigger = np.pad(block, [(0, 0), (4, 3), (5, 2), (2, 6)], mode="reflect") * 0 + 50.0
    bigger[:, 4:-3, 5:-2, 2:-6] = block
    shifted = (slice(4 + hz, 7 + hz), slice(5 + hy, 9 + hy), slice(2 + hx, 7 + hx))
    np.testing.assert_array_equal(e.volume(bigger, scale)[shifted], ref)


def _column(e: FilterBankExtractor, feats: np.ndarray, name: str) -> np.ndarray:
    return feats[..., e.volume_feature_names(1).index(name)]


def test_volume_isotropic_hessian_equals_skimage(ovule: np.ndarray) -> None:
    """With cubic voxels the Hessian eigenvalues are scikit-image's (same definition)."""
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    sigma = 1.6
    e = _extractor(filters=["hessian"], sigmas=[sigma])
    feats = e.volume(ovule[None], (1.0, 1.0, 1.0))
    h = hessian_matrix(
        ovule.astype(np.float64), sigma, mode="reflect", use_gaussian_derivatives=False
    )
    ref = hessian_matrix_eigvals(h)
    inner = (slice(2, -2),) * 3
    for k in range(3):
        ours = _column(e, feats, f"filters3d|filter=hessian|sigma={sigma:g}|ch=0|k={k}")
        np.testing.assert_allclose(ours[inner], ref[k][inner], atol=2e-5)


def test_volume_anisotropic_agrees_with_skimage(ovule: np.ndarray) -> None:
    """With anisotropic voxels the Hessian is scikit-image's with per-axis sigmas and
    spacing-scaled derivatives, and the structure tensor follows its definition."""
    from scipy import ndimage as ndi
    from skimage.feature import hessian_matrix

    scale = (3.0, 1.0, 1.0)
    sigma = 1.6
    per_axis = tuple(sigma / s for s in scale)
    e = _extractor(filters=["structure_tensor", "hessian"], sigmas=[sigma])
    feats = e.volume(ovule[None], scale)
    # block faces are handled differently (clamped vs one-sided differences)
    inner = tuple(slice(h, -h) for h in e.volume_halo(scale))

    h = hessian_matrix(
        ovule.astype(np.float64),
        per_axis,
        mode="reflect",
        use_gaussian_derivatives=False,
    )
    m = np.empty((*ovule.shape, 3, 3))
    for (i, j), hij in zip(_PAIRS, h, strict=True):
        m[..., i, j] = m[..., j, i] = hij / (scale[i] * scale[j])
    ref = np.moveaxis(np.linalg.eigvalsh(m)[..., ::-1], -1, 0)
    for k in range(3):
        ours = _column(e, feats, f"filters3d|filter=hessian|sigma={sigma:g}|ch=0|k={k}")
        np.testing.assert_allclose(ours[inner], ref[k][inner], atol=2e-5)

    # the definition: central differences (x-pixel units) of the image smoothed at
    # the inner scale sigma / 2, products smoothed at sigma
    vol = ovule.astype(np.float64)
    inner_smooth = ndi.gaussian_filter(vol, [0.5 * p for p in per_axis], mode="reflect")
    grads = np.gradient(inner_smooth, *scale)
    m = np.empty((*ovule.shape, 3, 3))
    for i, j in _PAIRS:
        m[..., i, j] = m[..., j, i] = ndi.gaussian_filter(
            grads[i] * grads[j], per_axis, mode="reflect"
        )
    ref = np.moveaxis(np.linalg.eigvalsh(m)[..., ::-1], -1, 0)
    for k in range(3):
        ours = _column(
            e, feats, f"filters3d|filter=structure_tensor|sigma={sigma:g}|ch=0|k={k}"
        )
        np.testing.assert_allclose(ours[inner], ref[k][inner], atol=2e-5)


def test_volume_structure_tensor_resembles_skimage(ovule: np.ndarray) -> None:
    """Structure-tensor eigenvalues correlate with scikit-image's (Sobel derivatives of
    the inner-smoothed volume), in the same descending order."""
    from scipy import ndimage as ndi
    from skimage.feature import structure_tensor, structure_tensor_eigenvalues

    sigma = 1.6
    e = _extractor(filters=["structure_tensor"], sigmas=[sigma])
    feats = e.volume(ovule[None], (1.0, 1.0, 1.0))
    smoothed = ndi.gaussian_filter(
        ovule.astype(np.float64), 0.5 * sigma, mode="reflect"
    )
    sk = structure_tensor_eigenvalues(structure_tensor(smoothed, sigma, mode="reflect"))
    inner = (slice(3, -3),) * 3
    for k in range(3):
        ours = _column(
            e, feats, f"filters3d|filter=structure_tensor|sigma={sigma:g}|ch=0|k={k}"
        )
        r = np.corrcoef(ours[inner].ravel(), sk[k][inner].ravel())[0, 1]
        assert r > 0.9, (k, r)
    assert np.all(sk[0] >= sk[1]) and np.all(sk[1] >= sk[2])


def test_volume_gaussian_and_derivatives_match_scipy(ovule: np.ndarray) -> None:
    """Gaussian, LoG and gradient magnitude follow scipy/numpy with per-axis sigmas."""
    from scipy import ndimage as ndi

    scale = (2.0, 1.0, 1.0)
    sigma = 3.5
    e = _extractor(filters=["gaussian", "laplacian", "gradient", "dog"], sigmas=[sigma])
    feats = e.volume(ovule[None], scale)
    vol = ovule.astype(np.float64)
    g = ndi.gaussian_filter(vol, [sigma / s for s in scale], mode="reflect")
    narrow = ndi.gaussian_filter(
        vol, [0.625 * sigma / s for s in scale], mode="reflect"
    )
    grads = np.gradient(g, *scale)
    lap = sum(
        np.gradient(gi, s, axis=i)
        for i, (gi, s) in enumerate(zip(grads, scale, strict=True))
    )
    inner = (slice(2, -2),) * 3
    expect = {
        "gaussian": g,
        "dog": g - narrow,
        "laplacian": lap,
        "gradient": np.sqrt(sum(gi * gi for gi in grads)),
    }
    for name, ref in expect.items():
        ours = _column(e, feats, f"filters3d|filter={name}|sigma={sigma:g}|ch=0")
        np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-5)


def test_volume_refuses_scipy_implementation_and_bad_input() -> None:
    """3D exists in the fast implementation only; shapes and scales are checked."""
    image = np.zeros((1, 4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="fast implementation"):
        _extractor(implementation="scipy").volume(image, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(C, Z, Y, X\)"):
        _extractor().volume(image[0], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        _extractor().volume(image, (0.0, 1.0, 1.0))
