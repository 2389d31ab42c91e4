"""Tests for the training report: strokes, stroke-grouped CV, importances, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import KFold, cross_val_score

from convpaint.report import (
    ABSENT,
    CrossValidation,
    aggregate_importances,
    build_report,
    cross_validate,
    label_strokes,
    stroke_folds,
    write_report,
)


def _forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=25, random_state=0, n_jobs=1)


def _stroke_data(
    n_strokes: int, pixels: int, n_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Class per sample (balanced over strokes, shuffled) and stroke id per sample."""
    stroke_class = rng.permutation(np.arange(n_strokes) % n_classes) + 1
    groups = np.repeat(np.arange(1, n_strokes + 1), pixels)
    return stroke_class[groups - 1], groups


# ---------------------------------------------------------------- label_strokes


def test_separate_strokes_of_one_class_get_different_ids() -> None:
    """Two disconnected scribbles of the same class are two strokes."""
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[1, 1:5] = 1
    labels[7, 3:8] = 1
    strokes = label_strokes(labels)
    assert strokes.dtype == np.int64
    assert strokes[1, 1] > 0 and strokes[7, 3] > 0
    assert strokes[1, 1] != strokes[7, 3]
    assert len(np.unique(strokes[1, 1:5])) == 1
    assert np.all(strokes[labels == 0] == 0)


def test_diagonal_pixels_are_one_stroke_in_2d() -> None:
    """2D strokes use 8-connectivity, so a diagonal line is one stroke."""
    labels = np.eye(6, dtype=np.int32) * 2
    strokes = label_strokes(labels)
    assert set(np.unique(strokes)) == {0, 1}


def test_touching_pixels_of_two_classes_are_different_strokes() -> None:
    """Adjacent pixels of different classes never share a stroke id."""
    labels = np.zeros((5, 8), dtype=np.int16)
    labels[2, 0:4] = 1
    labels[2, 4:8] = 2
    strokes = label_strokes(labels)
    assert len(np.unique(strokes[2, 0:4])) == 1
    assert len(np.unique(strokes[2, 4:8])) == 1
    assert strokes[2, 0] != strokes[2, 7]
    assert set(np.unique(strokes)) == {0, 1, 2}


def test_label_strokes_3d_full_connectivity() -> None:
    """3D uses full connectivity: corner-touching voxels join, distant ones do not."""
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[0, 0, 0] = 1
    labels[1, 1, 1] = 1  # touches (0, 0, 0) only by a corner
    labels[3, 5, 5] = 1
    labels[3, 0, 5] = 3
    strokes = label_strokes(labels)
    assert strokes.shape == labels.shape
    assert strokes[0, 0, 0] == strokes[1, 1, 1]
    ids = {strokes[0, 0, 0], strokes[3, 5, 5], strokes[3, 0, 5]}
    assert len(ids) == 3 and 0 not in ids


def test_label_strokes_rejects_1d_and_handles_empty() -> None:
    """1D input is an error; an image without annotations gives all zeros."""
    with pytest.raises(ValueError):
        label_strokes(np.ones(5, dtype=np.uint8))
    assert not label_strokes(np.zeros((3, 3), dtype=np.uint8)).any()


# ---------------------------------------------------------------- stroke_folds


def test_stroke_folds_keep_strokes_whole_and_cover_every_sample() -> None:
    """No stroke is split between train and test; each sample is tested exactly once."""
    rng = np.random.default_rng(1)
    y, groups = _stroke_data(23, 7, 3, rng)
    folds = stroke_folds(y, groups, n_folds=5, seed=3)
    assert len(folds) == 5
    tested = np.zeros(y.size, dtype=int)
    for train_idx, test_idx in folds:
        assert np.intersect1d(train_idx, test_idx).size == 0
        assert train_idx.size + test_idx.size == y.size
        assert np.intersect1d(groups[train_idx], groups[test_idx]).size == 0
        assert set(y[test_idx]) == {1, 2, 3}  # stratified at stroke level
        assert set(y[train_idx]) == {1, 2, 3}
        tested[test_idx] += 1
    assert np.all(tested == 1)


def test_stroke_folds_reproducible_for_a_seed() -> None:
    """The same seed gives identical folds; another seed gives different ones."""
    rng = np.random.default_rng(2)
    y, groups = _stroke_data(30, 4, 2, rng)
    a = stroke_folds(y, groups, n_folds=4, seed=11)
    b = stroke_folds(y, groups, n_folds=4, seed=11)
    c = stroke_folds(y, groups, n_folds=4, seed=12)
    assert all(
        np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
        for (tr1, te1), (tr2, te2) in zip(a, b, strict=True)
    )
    assert any(
        not np.array_equal(te1, te2) for (_, te1), (_, te2) in zip(a, c, strict=True)
    )


def test_stroke_folds_reduced_to_fewest_strokes_of_a_class() -> None:
    """Fewest strokes of a class (3) caps the folds; a single-stroke class gives []."""
    y = np.array([1] * 10 + [2] * 3)
    groups = np.array([*range(10), 20, 21, 22])
    folds = stroke_folds(y, groups, n_folds=5)
    assert len(folds) == 3
    for _, test_idx in folds:
        assert set(y[test_idx]) == {1, 2}
    assert stroke_folds(np.array([1, 1, 2, 2]), np.array([1, 2, 3, 3])) == []


# ---------------------------------------------------------------- cross_validate


def test_cross_validate_separable_problem_is_near_perfect() -> None:
    """Features = class + small noise gives accuracy and mIoU near 1."""
    rng = np.random.default_rng(0)
    y, groups = _stroke_data(30, 20, 3, rng)
    X = (y[:, None] + 0.05 * rng.standard_normal((y.size, 4))).astype(np.float32)
    cv = cross_validate(X, y, groups, _forest, n_folds=5, seed=0)
    assert cv.skipped_reason is None
    assert cv.n_folds == 5 and cv.n_folds_requested == 5
    assert cv.classes == [1, 2, 3]
    assert cv.confusion.shape == (3, 3) and cv.confusion.sum() == y.size
    assert cv.accuracy > 0.98 and cv.miou > 0.95
    assert len(cv.fold_accuracy) == 5
    assert set(cv.per_class_iou) == {1, 2, 3}
    assert cv.strokes_per_class == {1: 10, 2: 10, 3: 10}


def test_cross_validate_is_honest_where_only_stroke_identity_is_learnable() -> None:
    """Only stroke identity is learnable: stroke CV ~ chance, pixel-level KFold ~ 1."""
    rng = np.random.default_rng(4)
    n_strokes, pixels = 200, 8
    y, groups = _stroke_data(n_strokes, pixels, 2, rng)
    offsets = rng.standard_normal((n_strokes, 5)) * 3.0
    X = offsets[groups - 1] + 0.05 * rng.standard_normal((y.size, 5))
    X = X.astype(np.float32)

    cv = cross_validate(X, y, groups, _forest, n_folds=5, seed=0)
    assert cv.skipped_reason is None
    assert 0.3 < cv.accuracy < 0.7

    naive = cross_val_score(_forest(), X, y, cv=KFold(5, shuffle=True, random_state=0))
    assert naive.mean() > 0.95
    assert naive.mean() - cv.accuracy > 0.25


def test_cross_validate_single_stroke_class_is_skipped_with_reason() -> None:
    """A class with one stroke cannot be held out: CV is skipped and says why."""
    rng = np.random.default_rng(5)
    y = np.array([1] * 40 + [2] * 10)
    groups = np.array([1] * 20 + [2] * 20 + [3] * 10)
    X = rng.standard_normal((y.size, 3)).astype(np.float32)
    calls = []

    def make() -> RandomForestClassifier:
        calls.append(1)
        return _forest()

    cv = cross_validate(X, y, groups, make)
    assert cv.skipped_reason is not None and "single stroke" in cv.skipped_reason
    assert "2" in cv.skipped_reason
    assert cv.n_folds == 0 and not calls
    assert math.isnan(cv.accuracy) and math.isnan(cv.miou)
    assert cv.strokes_per_class == {1: 2, 2: 1}


def test_cross_validate_single_class_is_skipped() -> None:
    """Only one annotated class gives a skipped_reason, not a crash."""
    X = np.zeros((6, 2), dtype=np.float32)
    cv = cross_validate(X, np.ones(6, dtype=int), np.arange(6), _forest)
    assert cv.skipped_reason is not None and "one class" in cv.skipped_reason


# ---------------------------------------------------------------- importances


def test_aggregate_importances_sums_correctly() -> None:
    """Totals per extractor, per key and value add up; top features are sorted."""
    names = [
        "vgg16|layer=conv1_1|scale=1|ch=0|unit=0",
        "vgg16|layer=conv1_1|scale=2|ch=0|unit=0",
        "vgg16|layer=conv2_1|scale=2|ch=0|unit=5",
        "filters|filter=gaussian|sigma=1.6|ch=0",
        "filters|filter=gaussian|sigma=10|ch=0",
        "filters|filter=hessian_eig|sigma=1.6|ch=0|k=0",
        "filters|filter=hessian_eig|sigma=1.6|ch=0|k=1",
        "intensity|ch=0",
    ]
    imp = np.array([0.05, 0.10, 0.15, 0.20, 0.05, 0.25, 0.10, 0.10])
    agg = aggregate_importances(imp, names)

    assert agg["total"] == pytest.approx(1.0)
    assert agg["by_extractor"] == pytest.approx(
        {"vgg16": 0.30, "filters": 0.60, "intensity": 0.10}
    )
    assert sum(agg["by_extractor"].values()) == pytest.approx(imp.sum())
    vgg = agg["by_extractor_key"]["vgg16"]
    assert vgg["scale"] == pytest.approx({"1": 0.05, "2": 0.25})
    assert vgg["layer"] == pytest.approx({"conv1_1": 0.15, "conv2_1": 0.15})
    flt = agg["by_extractor_key"]["filters"]
    assert flt["filter"] == pytest.approx({"gaussian": 0.25, "hessian_eig": 0.35})
    assert flt["sigma"] == pytest.approx({"1.6": 0.55, "10": 0.05})
    assert list(flt["sigma"]) == ["1.6", "10"]  # numeric, not string, order
    assert flt["k"] == pytest.approx({"0": 0.25, "1": 0.10, ABSENT: 0.25})
    for extractor, keys in agg["by_extractor_key"].items():
        for values in keys.values():
            assert sum(values.values()) == pytest.approx(agg["by_extractor"][extractor])

    top = agg["top_features"]
    assert len(top) == len(names)
    assert top[0] == {"name": names[5], "importance": pytest.approx(0.25)}
    assert [t["importance"] for t in top] == sorted(imp, reverse=True)
    many = aggregate_importances(
        np.arange(30.0), [f"intensity|ch={i}" for i in range(30)]
    )
    assert len(many["top_features"]) == 20
    assert many["top_features"][0]["name"] == "intensity|ch=29"


def test_aggregate_importances_rejects_length_mismatch() -> None:
    """Different numbers of importances and names are an error."""
    with pytest.raises(ValueError):
        aggregate_importances(np.ones(3), ["a", "b"])


# ---------------------------------------------------------------- report files


def _report(cv: CrossValidation) -> dict:
    names = [
        f"filters|filter={f}|sigma={s}|ch=0"
        for f in ("gaussian", "gradient_magnitude")
        for s in ("0.7", "1.6", "3.5")
    ] + [
        f"vgg16|layer=conv1_1|scale={s}|ch=0|unit={u}"
        for s in (1, 2)
        for u in range(40)
    ]
    imp = np.random.default_rng(0).random(len(names))
    return build_report(
        training_seconds=np.float64(1.25),
        samples_per_class={np.int64(1): np.int64(120), 2: 80},
        cv=cv,
        importances=aggregate_importances(imp / imp.sum(), names),
        extra={"config": Path("cfg.yaml"), "nan": float("nan"), "arr": np.arange(3)},
    )


def _check_written(tmp_path: Path, report: dict) -> dict:
    json_path, png_path = write_report(
        report, tmp_path / "out" / "m.json", tmp_path / "out" / "m.png"
    )
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with json_path.open(encoding="utf-8") as fh:
        loaded = json.load(fh)
    assert loaded == report
    assert not list((tmp_path / "out").glob("*.partial"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.json", "m.png"]
    return loaded


def test_write_report_json_round_trip_and_png(tmp_path: Path) -> None:
    """A report with CV results round-trips through JSON and renders a PNG."""
    rng = np.random.default_rng(0)
    y, groups = _stroke_data(12, 10, 2, rng)
    X = (y[:, None] + 0.1 * rng.standard_normal((y.size, 2))).astype(np.float32)
    report = _report(cross_validate(X, y, groups, _forest, n_folds=3))
    loaded = _check_written(tmp_path, report)
    assert loaded["samples_per_class"] == {"1": 120, "2": 80}
    assert loaded["training_seconds"] == 1.25
    assert loaded["extra"] == {"config": "cfg.yaml", "nan": None, "arr": [0, 1, 2]}
    assert loaded["cross_validation"]["n_folds"] == 3
    assert loaded["cross_validation"]["skipped_reason"] is None
    assert len(loaded["feature_importance"]["top_features"]) == 20


def test_write_report_with_skipped_cv(tmp_path: Path) -> None:
    """A skipped CV is written with its reason and NaN scores as null."""
    y = np.array([1] * 5 + [2] * 5)
    cv = cross_validate(np.zeros((10, 1), np.float32), y, y, _forest)
    loaded = _check_written(tmp_path, _report(cv))
    assert loaded["cross_validation"]["accuracy"] is None
    assert loaded["cross_validation"]["miou"] is None
    assert "single stroke" in loaded["cross_validation"]["skipped_reason"]


def test_training_is_independent_of_threads_and_the_report_times_its_steps(
    bench: Path, tmp_path: Path
) -> None:
    """Crops computed on 1 or 2 threads give the same model; the report records the
    step timings and folds of ceil(n_estimators / 5) trees."""
    import tifffile
    from PIL import Image

    from convpaint import api
    from convpaint.config import parse_config
    from convpaint.model_io import load_model

    img = np.asarray(Image.open(bench / "isbi2012_em_membranes/images/0.png"))
    scr = tifffile.imread(bench / "isbi2012_em_membranes/derived/0_scribbles.tif")
    tifffile.imwrite(tmp_path / "img.tif", img[:400, :450])  # several 256-px crops
    tifffile.imwrite(tmp_path / "scr.tif", scr[:400, :450])
    forests = []
    for threads, report in ((1, False), (2, True)):
        raw = {
            "features": [{"name": "filters", "sigmas": [1.0, 3.0]}],
            "classifier": {"n_estimators": 12, "seed": 0},
            "tiling": {"threads": threads},
            "train": {
                "images": [str(tmp_path / "img.tif")],
                "annotations": [str(tmp_path / "scr.tif")],
                "axes": "YX",
                "model": str(tmp_path / f"m{threads}.cpm"),
                "report": report,
            },
        }
        result = api.train(parse_config(raw))
        assert set(result.timings) >= {"reading_s", "features_s", "fit_s"}
        forests.append(load_model(tmp_path / f"m{threads}.cpm").forest)
    a, b = forests
    for name in ("_child", "_feature", "_threshold", "_leaf_value"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    saved = json.loads((tmp_path / "m2_report.json").read_text())
    assert saved["timings"]["cross_validation_s"] > 0
    assert saved["cross_validation"]["fold_sample_fraction"] == 0.125
