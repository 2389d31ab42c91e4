"""Object geometry, measurements, class annotations and the numpy forest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops

from convpaint.config.objects import ObjectFeatureConfig, ObjectForestConfig
from convpaint.errors import DataError
from convpaint.objects.annotations import check_class_counts, object_classes
from convpaint.objects.features import feature_names, measure_features, measure_geometry
from convpaint.objects.forest import fit_forest


@pytest.fixture(scope="module")
def ihc(bench: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real Ki67 IHC tile (C, Y, X) and its instance mask."""
    root = bench / "objects/deepliif_ki67_ihc"
    image = tifffile.imread(root / "images/6_2.tif").transpose(2, 0, 1)
    return image, tifffile.imread(root / "instances/6_2_instances.tif")


def test_geometry_matches_regionprops(ihc: tuple[np.ndarray, np.ndarray]) -> None:
    """Areas, boxes and centroids merged over blocks equal regionprops on the whole mask."""
    _, labels = ihc
    geo = measure_geometry(labels, (100, 77))
    props = regionprops(labels)
    np.testing.assert_array_equal(geo.ids, [p.label for p in props])
    np.testing.assert_array_equal(geo.area, [p.area for p in props])
    np.testing.assert_array_equal(geo.low, [p.bbox[:2] for p in props])
    np.testing.assert_array_equal(geo.high, [p.bbox[2:] for p in props])
    np.testing.assert_allclose(geo.centroid, [p.centroid for p in props], atol=1e-9)


def test_features_do_not_depend_on_blocks(ihc: tuple[np.ndarray, np.ndarray]) -> None:
    """Measurements are identical for small uneven blocks and one whole-image block,
    and the per-channel means equal regionprops' intensity means."""
    image, labels = ihc
    cfg = ObjectFeatureConfig(ring=3)
    geo = measure_geometry(labels, (512, 512))
    whole = measure_features(image, labels, geo, cfg, block=(512, 512))
    tiled = measure_features(image, labels, geo, cfg, block=(61, 97))
    np.testing.assert_array_equal(tiled, whole)
    names = feature_names(cfg, 3, 2)
    assert whole.shape == (len(geo), len(names))
    props = regionprops(labels, intensity_image=image[1])
    np.testing.assert_allclose(
        whole[:, names.index("mean_c1")], [p.intensity_mean for p in props], rtol=1e-5
    )
    np.testing.assert_allclose(whole[:, names.index("area")], [p.area for p in props])
    # the contrast to the background ring separates brown (Ki67+) from blue nuclei
    assert np.isfinite(whole).all()


def test_3d_features_and_geometry(bench: Path) -> None:
    """3D masks give 3D shape measurements, independent of the block."""
    labels = tifffile.imread(bench / "plantseg_ovule_nuclei3d/masks/1135_mini.tif")[:50]
    image = tifffile.imread(bench / "plantseg_ovule_nuclei3d/images/1135_mini.tif")[
        None, :50
    ]
    cfg = ObjectFeatureConfig(quantiles=[0.5], ring=2)
    geo = measure_geometry(labels, (50, 100, 100))
    a = measure_features(image, labels, geo, cfg, block=(50, 100, 100))
    b = measure_features(image, labels, geo, cfg, block=(13, 40, 27))
    np.testing.assert_array_equal(a, b)
    assert feature_names(cfg, 1, 3)[:3] == ["area", "extent", "solidity"]


def test_numpy_forest_equals_scikit_learn() -> None:
    """The node-array evaluator reproduces RandomForestClassifier.predict_proba."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.where(x[:, 0] + x[:, 1] > 0, 2, 5)
    y[:15] = 7
    cfg = ObjectForestConfig(n_estimators=30, min_samples_leaf=2)
    nodes, importance = fit_forest(x, y, cfg, seed=3, n_jobs=1)
    assert nodes.validate() is None and importance.shape == (8,)
    ref = RandomForestClassifier(
        n_estimators=30, min_samples_leaf=2, class_weight="balanced", random_state=3
    ).fit(x, y)
    test = rng.normal(size=(500, 8))
    np.testing.assert_array_equal(nodes.predict_proba(test), ref.predict_proba(test))


# --------------------------------------------------------------------------- classes
def _mask() -> np.ndarray:
    m = np.zeros((20, 30), np.uint16)
    m[2:6, 2:6] = 3
    m[10:15, 10:15] = 7
    m[2:5, 20:25] = 9
    return m


@pytest.mark.parametrize(
    ("table", "phrases"),
    [
        ("object_id,class\n3,1\n7,2\n42,1\n", ["not in", "42"]),  # unknown id
        ("id,label\n3,1\n", ["lacks the column", "object_id"]),  # wrong header
        ("object_id,class\n3,1\n3,2\n", ["appears twice", "line 3"]),  # duplicate
        ("object_id,class\n3,x\n", ["not an integer", "line 2"]),  # non-integer class
        ("object_id,class\n3,-1\n", ["negative"]),
    ],
)
def test_bad_class_tables_are_located(
    tmp_path: Path, table: str, phrases: list[str]
) -> None:
    """Malformed class tables give a DataError naming the file, line and problem."""
    path = tmp_path / "c.csv"
    path.write_text(table)
    m = _mask()
    with pytest.raises(DataError) as err:
        object_classes(
            np.array([3, 7, 9]),
            m,
            path,
            mask_path=tmp_path / "m.tif",
            block=(20, 30),
            unlabelled="skip",
        )
    for phrase in phrases:
        assert phrase in str(err.value)
    assert "c.csv" in str(err.value)


def test_painted_classes_and_their_errors(tmp_path: Path) -> None:
    """Painted label images give each touched object its class; two classes on one
    object, or (when required) objects without class, are refused."""
    m = _mask()
    paint = np.zeros_like(m)
    paint[3, 3] = 2
    paint[12, 12:14] = 1
    paint[0, 0] = 5  # on the background: ignored
    tifffile.imwrite(tmp_path / "p.tif", paint)
    ids = np.array([3, 7, 9])
    kw = {"mask_path": tmp_path / "m.tif", "block": (7, 11)}
    got = object_classes(ids, m, tmp_path / "p.tif", unlabelled="skip", **kw)
    np.testing.assert_array_equal(got, [2, 1, 0])
    with pytest.raises(DataError, match="no class"):
        object_classes(ids, m, tmp_path / "p.tif", unlabelled="error", **kw)
    paint[13, 13] = 2
    tifffile.imwrite(tmp_path / "p.tif", paint)
    with pytest.raises(DataError, match="more than one class"):
        object_classes(ids, m, tmp_path / "p.tif", unlabelled="skip", **kw)
    with pytest.raises(DataError, match="contain no object"):
        object_classes(ids[:0], m * 0, tmp_path / "p.tif", unlabelled="skip", **kw)


@pytest.mark.parametrize(
    ("classes", "phrase"),
    [
        ([0, 0, 0], "no object has a class"),
        ([1, 1, 1], "at least two classes"),
        ([1, 1, 2], "only one labelled object"),
    ],
)
def test_class_counts_are_checked(classes: list[int], phrase: str) -> None:
    """Training needs two classes with two objects each."""
    with pytest.raises(DataError, match=phrase):
        check_class_counts(np.array(classes), "the training set")
