"""The histogram forest trainer (convpaint.forest_fit) on real features.

Forests are fitted on the scribbled pixels of real benchmark crops (filter-bank
features) and scored against the crops' ground truth next to scikit-learn's
forest; the tables must be valid trees that the evaluator and the model file take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier

from convpaint.evaluation import score
from convpaint.forest import Forest, check_node_tables
from convpaint.forest_fit import bin_features, fit_histogram_forest
from convpaint.model_io import load_model, save_model

from .test_forest import _features


@pytest.fixture(scope="module")
def crops(bench: Path) -> dict[str, tuple[NDArray[np.float32], NDArray, NDArray]]:
    """Features, scribbles and ground truth of two real 256x256 crops (flattened)."""
    from PIL import Image

    out = {}
    d = bench / "drosophila_vnc_sstem"
    out["drosophila"] = (
        _features(tifffile.imread(d / "raw/00.tif")[:256, :256]),
        tifffile.imread(d / "derived/00_scribbles.tif")[:256, :256].ravel(),
        tifffile.imread(d / "derived/00_gt.tif")[:256, :256].ravel(),
    )
    d = bench / "isbi2012_em_membranes"
    out["isbi"] = (
        _features(np.asarray(Image.open(d / "images/0.png"))[:256, :256]),
        tifffile.imread(d / "derived/0_scribbles.tif")[:256, :256].ravel(),
        tifffile.imread(d / "derived/0_gt.tif")[:256, :256].ravel(),
    )
    return out


def _miou(pred: NDArray, truth: NDArray) -> float:
    return float(score(pred.astype(np.int64), truth.astype(np.int64)).miou)


@pytest.mark.parametrize("name", ["drosophila", "isbi"])
def test_as_accurate_as_sklearn_on_real_crops(crops: dict, name: str) -> None:
    X, scribbles, truth = crops[name]
    keep = scribbles > 0
    scores: dict[str, list[float]] = {}
    for seed in range(6):  # single forests of a small crop vary by +-0.03
        fitted = fit_histogram_forest(
            X[keep], scribbles[keep], n_estimators=50, seed=seed
        )
        ours = Forest.from_sklearn(fitted)
        ref = RandomForestClassifier(50, random_state=seed).fit(
            X[keep], scribbles[keep]
        )
        scores.setdefault("hist", []).append(
            _miou(ours.classes[ours.predict_labels(X)], truth)
        )
        scores.setdefault("sk", []).append(_miou(ref.predict(X), truth))
    hist, sk = np.mean(scores["hist"]), np.mean(scores["sk"])
    assert hist >= sk - 0.015, scores
    # the scribbled pixels themselves: trees grown to purity fit them
    np.testing.assert_array_equal(
        ours.classes[ours.predict_labels(X[keep])], scribbles[keep]
    )


def test_tables_are_valid_trees_and_survive_the_model_file(
    crops: dict, tmp_path: Path
) -> None:
    X, scribbles, _ = crops["drosophila"]
    keep = scribbles > 0
    fitted = fit_histogram_forest(X[keep], scribbles[keep], n_estimators=7, seed=3)
    t = fitted.node_tables
    check_node_tables(
        t["left_child"],
        t["right_child"],
        t["feature"],
        t["threshold"],
        t["values"],
        t["node_offsets"],
        n_features=X.shape[1],
        n_classes=fitted.n_classes_,
    )
    leaves = t["left_child"] < 0
    np.testing.assert_allclose(t["values"][leaves].sum(axis=1), 1.0)
    assert fitted.n_estimators == 7 and len(t["max_depths"]) == 7
    np.testing.assert_array_equal(fitted.classes_, np.unique(scribbles[keep]))
    path = save_model(tmp_path / "m.cpm", fitted, {"classes": fitted.classes_.tolist()})
    loaded = load_model(path)
    direct = Forest.from_sklearn(fitted)
    np.testing.assert_array_equal(
        loaded.forest.predict_proba(X), direct.predict_proba(X)
    )
    assert loaded.meta["forest"]["n_estimators"] == 7
    imp = fitted.feature_importances_
    assert imp.shape == (X.shape[1],) and abs(imp.sum() - 1) < 1e-9 and imp.min() >= 0


def test_seed_alone_decides_the_forest(crops: dict) -> None:
    X, scribbles, _ = crops["isbi"]
    keep = scribbles > 0

    def fit(seed: int, n_jobs: int) -> dict[str, NDArray]:
        return fit_histogram_forest(
            X[keep], scribbles[keep], n_estimators=12, seed=seed, n_jobs=n_jobs
        ).node_tables

    one, two, other = fit(5, 1), fit(5, 2), fit(6, 2)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["threshold"], other["threshold"])


def test_parameters_are_honoured(crops: dict) -> None:
    X, scribbles, _ = crops["drosophila"]
    keep = scribbles > 0
    X, y = X[keep], scribbles[keep]
    shallow = fit_histogram_forest(X, y, n_estimators=5, max_depth=3).node_tables
    assert shallow["max_depths"].max() <= 3
    leafy = fit_histogram_forest(X, y, n_estimators=5, min_samples_leaf=25).node_tables
    assert leafy["n_node_samples"][leafy["left_child"] < 0].min() >= 25
    # one feature: every split uses it
    single = fit_histogram_forest(X, y, n_estimators=3, max_features=1 / 57).node_tables
    assert len(np.unique(single["feature"][single["left_child"] >= 0])) > 1
    only = fit_histogram_forest(X[:, :1], y, n_estimators=3).node_tables
    assert set(only["feature"][only["left_child"] >= 0]) == {0}
    # balanced class weights: at the roots, on average over the bootstrap samples,
    # a rare class (10 pixels) weighs as much as a common one (270 pixels)
    rare = fit_histogram_forest(X, y, n_estimators=40, class_weight="balanced")
    t = rare.node_tables
    roots = t["values"][t["node_offsets"][:-1]]
    np.testing.assert_allclose(roots.mean(axis=0), 1 / 4, rtol=0.15)
    plain = fit_histogram_forest(X, y, n_estimators=3).node_tables
    assert plain["values"][0].min() < 0.05
    # balanced per bootstrap sample: exactly equal at every root
    sub = fit_histogram_forest(X, y, n_estimators=3, class_weight="balanced_subsample")
    t = sub.node_tables
    np.testing.assert_allclose(t["values"][t["node_offsets"][:-1]], 1 / 4, rtol=1e-9)


def test_constant_and_few_valued_features() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(1, 4, n)
    X = np.zeros((n, 4), np.float32)
    X[:, 1] = y * 2.5  # three distinct values: exact bins, thresholds in between
    X[:, 2] = rng.normal(size=n)
    X[:, 3] = 7.0
    fitted = fit_histogram_forest(X, y, n_estimators=4, max_features=None)
    t = fitted.node_tables
    split = t["left_child"] >= 0
    assert set(t["feature"][split]) == {1}
    assert set(np.round(t["threshold"][split], 3)) <= {3.75, 6.25}
    ours = Forest.from_sklearn(fitted)
    np.testing.assert_array_equal(ours.classes[ours.predict_labels(X)], y)
    # one class only: a single leaf per tree
    single = fit_histogram_forest(X, np.full(n, 2), n_estimators=2).node_tables
    assert len(single["feature"]) == 2


def test_bins_follow_quantiles_and_keep_equal_values_together() -> None:
    rng = np.random.default_rng(1)
    col = np.concatenate([rng.normal(size=5000), np.zeros(3000)]).astype(np.float32)
    codes, lo, hi, n_bins = bin_features(col[:, None], 64)
    assert n_bins[0] <= 64
    zero_bins = np.unique(codes[0][col == 0])
    assert len(zero_bins) == 1
    # bins are ordered, do not overlap and hold what they claim
    nb = int(n_bins[0])
    assert (lo[0, 1:nb] > hi[0, : nb - 1]).all()
    for b in range(nb):
        inside = col[codes[0] == b]
        assert inside.min() == lo[0, b] and inside.max() == hi[0, b]
    counts = np.bincount(codes[0][col != 0], minlength=nb)
    assert counts.max() < 3 * 5000 / 64


def test_bad_input_is_refused() -> None:
    X = np.ones((10, 2), np.float32)
    with pytest.raises(ValueError, match="finite"):
        fit_histogram_forest(
            np.where(np.eye(10, 2) > 0, np.nan, X), np.arange(10), n_estimators=1
        )
    with pytest.raises(ValueError, match="do not match"):
        fit_histogram_forest(X, np.arange(9), n_estimators=1)
    with pytest.raises(ValueError, match="max_bins"):
        bin_features(X, 300)


def test_config_chooses_the_trainer(tmp_path: Path) -> None:
    """`classifier.algorithm` picks the trainer; both write models that predict."""
    from convpaint import api
    from convpaint.config import parse_config

    from .conftest import SAMPLE

    crop = (slice(256, 448), slice(256, 448))
    tifffile.imwrite(
        tmp_path / "img.tif", tifffile.imread(SAMPLE / "images/nuclei.tif")[crop]
    )
    scr = tifffile.imread(SAMPLE / "annotations/nuclei_scribbles.tif")[crop]
    tifffile.imwrite(tmp_path / "scr.tif", scr)
    for algorithm in ("histogram", "sklearn"):
        raw = {
            "features": [{"name": "filters", "sigmas": [1.0, 3.5]}],
            "classifier": {"n_estimators": 8, "seed": 0, "algorithm": algorithm},
            "train": {
                "images": [str(tmp_path / "img.tif")],
                "annotations": [str(tmp_path / "scr.tif")],
                "model": str(tmp_path / f"{algorithm}.cpm"),
                "report": False,
            },
        }
        api.train(parse_config(raw))
        loaded = load_model(tmp_path / f"{algorithm}.cpm")
        assert loaded.meta["config"]["classifier"]["algorithm"] == algorithm
        assert loaded.forest.n_trees == 8
    default = parse_config({"train": raw["train"]})
    assert default.classifier.algorithm == "histogram"
