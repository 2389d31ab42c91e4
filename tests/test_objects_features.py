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

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


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
    assert feature_names(cfg, 1, 3)[:3] == ["area", "surface_area", "eccentricity"]


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


# --------------------------------------------------------------------------- small shapes
def _measure(
    image: np.ndarray, labels: np.ndarray, cfg: ObjectFeatureConfig
) -> dict[str, np.ndarray]:
    """Features by name (one value per object, in id order)."""
    geo = measure_geometry(labels, labels.shape)
    x = measure_features(image, labels, geo, cfg, block=labels.shape)
    names = feature_names(cfg, image.shape[0], labels.ndim)
    return {n: x[:, i] for i, n in enumerate(names)}


@pytest.mark.parametrize(("h", "w"), [(4, 6), (5, 10), (3, 3)])
def test_rectangle_features_match_hand_computed_values(h: int, w: int) -> None:
    """An h x w rectangle with a ramp of intensities on a constant background: shape
    and intensity features equal their closed forms."""
    labels = np.zeros((h + 8, w + 8), np.uint16)
    labels[4 : 4 + h, 4 : 4 + w] = 1
    image = np.full((1, *labels.shape), 10.0)
    ramp = np.arange(h * w, dtype=float).reshape(h, w)
    image[0, 4 : 4 + h, 4 : 4 + w] = 100 + ramp
    f = _measure(image, labels, ObjectFeatureConfig(ring=1, quantiles=[0.5]))
    area = h * w
    big, small = max(h, w), min(h, w)
    var_big, var_small = (
        (big**2 - 1) / 12,
        (small**2 - 1) / 12,
    )  # pixel-centre variances
    expected = {
        "area": area,
        "perimeter": 2 * (h - 1) + 2 * (w - 1),  # through the border pixels' centres
        "extent": 1.0,
        "solidity": 1.0,
        "equivalent_diameter_area": np.sqrt(4 * area / np.pi),
        "eccentricity": np.sqrt(1 - var_small / var_big),
        "axis_major_length": 4 * np.sqrt(var_big),
        "axis_minor_length": 4 * np.sqrt(var_small),
        # outline at half a pixel beyond the centres, corners cut by marching squares
        "feret_diameter_max": np.sqrt(max(h**2 + (w - 1) ** 2, (h - 1) ** 2 + w**2)),
        # Hu's first invariant: (mu20 + mu02) / mu00^2 = (var_y + var_x) / area
        "hu_moment_0": (var_big + var_small) / area,
        "mean_c0": 100 + ramp.mean(),
        "std_c0": ramp.std(),
        "min_c0": 100.0,
        "max_c0": 100 + area - 1,
        "integrated_c0": (100 + ramp).sum(),
        "p50_c0": 100 + np.median(ramp),
        # a 1-pixel ring: the 2(h + w) edge neighbours (diagonals are sqrt(2) away)
        "ring_mean_c0": 10.0,
        "ring_std_c0": 0.0,
        "ring_integrated_c0": 10.0 * 2 * (h + w),
        "contrast_c0": 100 + ramp.mean() - 10,
    }
    for name, value in expected.items():
        np.testing.assert_allclose(f[name], value, rtol=1e-5, err_msg=name)


def test_box_features_match_hand_computed_values() -> None:
    """A d x h x w box in 3D: volume, inertia eigenvalues, eccentricity, Feret
    diameter and the surface of the marching-cubes mesh."""
    d, h, w = 3, 5, 9
    labels = np.zeros((d + 4, h + 4, w + 4), np.uint16)
    labels[2 : 2 + d, 2 : 2 + h, 2 : 2 + w] = 1
    image = np.ones((1, *labels.shape))
    f = _measure(image, labels, ObjectFeatureConfig(ring=0, quantiles=[]))
    var = sorted([(n**2 - 1) / 12 for n in (d, h, w)], reverse=True)
    # the inertia tensor's eigenvalues: sums of the variances along the other axes
    inertia = sorted([var[0] + var[1], var[0] + var[2], var[1] + var[2]], reverse=True)
    np.testing.assert_allclose(f["area"], d * h * w)
    for i, v in enumerate(inertia):
        np.testing.assert_allclose(f[f"inertia_eigval_{i}"], v, rtol=1e-5)
    np.testing.assert_allclose(
        f["eccentricity"], np.sqrt(1 - var[2] / var[0]), rtol=1e-5
    )
    feret = max(
        np.sqrt(a**2 + (b - 1) ** 2 + (c - 1) ** 2)
        for a, b, c in ((d, h, w), (h, d, w), (w, d, h))
    )
    np.testing.assert_allclose(f["feret_diameter_max"], feret, rtol=1e-5)
    # the mesh lies half a pixel outside the centres with bevelled edges: between
    # the box through the centres and the box around the pixels
    inner = 2 * ((d - 1) * (h - 1) + (d - 1) * (w - 1) + (h - 1) * (w - 1))
    outer = 2 * (d * h + d * w + h * w)
    assert inner < f["surface_area"][0] < outer
    np.testing.assert_allclose(
        f["equivalent_diameter_area"], (6 * d * h * w / np.pi) ** (1 / 3), rtol=1e-5
    )


def test_enclosed_object_has_an_empty_ring() -> None:
    """An object surrounded by another has no background ring: contrast 0, ring
    integrated intensity 0, ring statistics from its own pixels."""
    labels = np.zeros((12, 12), np.uint16)
    labels[2:10, 2:10] = 1
    labels[5:7, 5:7] = 2
    image = np.zeros((1, 12, 12))
    image[0, labels == 2] = 7.0
    f = _measure(image, labels, ObjectFeatureConfig(ring=1, quantiles=[]))
    assert f["contrast_c0"][1] == 0 and f["ring_integrated_c0"][1] == 0
    assert f["ring_mean_c0"][1] == 7.0


def test_pixel_feature_means_equal_whole_image_features() -> None:
    """Means of the pixel pipeline's features inside each object equal the means of
    the features computed on the whole region at once, for small uneven tiles."""
    from scipy import ndimage as ndi

    from convpaint.config import FeatureConfig
    from convpaint.io.readers import open_image
    from convpaint.normalization import image_statistics
    from convpaint.objects.pixel_features import (
        build_pixel_pipeline,
        pixel_feature_means,
    )
    from convpaint.tiling import plan_block, read_block

    gt = tifffile.imread(SAMPLE / "ground_truth/nuclei_gt.tif")
    labels = ndi.label(gt == 2)[0][:100, :120]
    cfg = FeatureConfig.model_validate(
        {"extractors": [{"name": "filters", "sigmas": [1.0, 2.0]}]}
    )
    with open_image(SAMPLE / "images/nuclei.tif", None) as src:
        pipeline = build_pixel_pipeline(cfg, src)
        geo = measure_geometry(labels, labels.shape)
        tiled = pixel_feature_means(
            src, labels, geo, pipeline, normalize="image", tile=(1, 37, 53)
        )
        norm = image_statistics(src, joint=False).normalization(0)
        block = plan_block(
            ((0, 1), (0, 100), (0, 120)),
            halo=pipeline.halo,
            alignment=pipeline.alignment,
        )
        feats = pipeline.compute(norm(read_block(src.data[0], block)), block.trim)
    feats = feats.reshape(100, 120, -1)
    assert tiled.shape == (len(geo), pipeline.n_features) and len(geo) > 5
    for row, oid in enumerate(geo.ids):
        np.testing.assert_allclose(
            tiled[row], feats[labels == oid].mean(axis=0), rtol=1e-4, atol=1e-5
        )


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
