"""N-D feature geometry: planes and views are tile-exact on real volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from convpaint.features.pipeline import _stretch_z, view_factor

from .conftest import assert_halo_suffices, feature_pipeline, tiled_features

FILTERS = [
    {"name": "filters", "sigmas": [1.0, 2.0], "filters": ["gaussian", "hessian"]}
]
VGG = [{"name": "vgg16", "scalings": [1, 2]}]


@pytest.fixture(scope="module")
def volume(bench: Path) -> np.ndarray:
    """A (1, 20, 44, 40) crop of a real confocal nuclei volume, z-scored."""
    vol = tifffile.imread(bench / "plantseg_ovule_nuclei3d/images/1135_mini.tif")
    crop = vol[30:50, 20:64, 30:70].astype(np.float32)
    return ((crop - crop.mean()) / crop.std())[None]


def test_view_factor_rounds_the_anisotropy() -> None:
    """xz/yz views are stretched by the integer nearest z/x, never below 1."""
    assert view_factor(None) == 1
    assert view_factor((0.5, 0.1, 0.1)) == 5
    assert view_factor((0.26, 0.1, 0.1)) == 3
    assert view_factor((0.05, 0.1, 0.1)) == 1


def test_stretch_is_linear_between_planes() -> None:
    """Stretched rows interpolate linearly between neighbouring planes."""
    view = np.arange(3, dtype=np.float32).reshape(1, 3, 1) * 3
    out = _stretch_z(view, 3)
    np.testing.assert_allclose(out[0, :, 0], [0, 1, 2, 3, 4, 5, 6, 6, 6])


@pytest.mark.parametrize(
    ("dims", "spacing", "specs"),
    [
        ("planes", None, FILTERS),
        ("views", None, FILTERS),
        ("views", (3.0, 1.0, 1.0), FILTERS),
        ("views", (2.0, 1.0, 1.0), VGG),
        ("3d", (2.24, 1.0, 1.0), FILTERS),
    ],
)
def test_stack_features_tiled_equal_whole(
    volume: np.ndarray, dims: str, spacing: tuple | None, specs: list
) -> None:
    """Uneven tiles in every axis give bit-identical features to the whole volume."""
    pipe = feature_pipeline(specs, dims=dims, spacing=spacing)
    whole = tiled_features(volume, pipe, (100, 100, 100))
    tiled = tiled_features(volume, pipe, (7, 17, 23))
    assert whole.shape == (*volume.shape[1:], pipe.n_features)
    np.testing.assert_array_equal(tiled, whole)
    assert np.isfinite(whole).all()


def test_views_halo_covers_dependencies(volume: np.ndarray) -> None:
    """Voxels beyond the views halo (in Z too) never change a tile's features."""
    pipe = feature_pipeline(FILTERS, dims="views", spacing=(2.0, 1.0, 1.0))
    big = np.pad(volume, ((0, 0), (10, 10), (0, 0), (0, 0)), mode="symmetric")
    hz = pipe.halo[0]
    tile = ((hz + 2, hz + 6), (20, 30), (15, 25))
    assert_halo_suffices(pipe, big, tile)


def test_views_concatenate_three_planes(volume: np.ndarray) -> None:
    """views = xy features, then xz, then yz; the xy part equals planes mode."""
    planes = feature_pipeline(FILTERS, dims="planes")
    views = feature_pipeline(FILTERS, dims="views")
    assert views.n_features == 3 * planes.n_features
    names = views.feature_names()
    assert names[0].startswith("view=xy|") and names[-1].startswith("view=yz|")
    fv = tiled_features(volume, views, (100, 100, 100))
    fp = tiled_features(volume, planes, (100, 100, 100))
    np.testing.assert_array_equal(fv[..., : planes.n_features], fp)
    # the xz part of voxel (z, y, x) is the xy part of the transposed volume
    transposed = np.ascontiguousarray(volume.transpose(0, 2, 1, 3))  # (C, Y, Z, X)
    ft = tiled_features(transposed, planes, (100, 100, 100))
    xz = fv[..., planes.n_features : 2 * planes.n_features]
    np.testing.assert_allclose(xz, ft.transpose(1, 0, 2, 3), rtol=1e-5, atol=1e-5)


def test_3d_refuses_flat_extractors() -> None:
    """dims: 3d with an extractor that has no 3-D form names it and the way out."""
    from convpaint.errors import ConfigError

    with pytest.raises(ConfigError, match="vgg16 work"):
        feature_pipeline(VGG, dims="3d")


def test_planes_have_no_z_context(volume: np.ndarray) -> None:
    """planes mode has no halo along Z: each plane is featurised alone."""
    pipe = feature_pipeline(FILTERS, dims="planes")
    assert pipe.halo[0] == 0 and pipe.alignment[0] == 1
