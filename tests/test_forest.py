"""convpaint's forest evaluator against scikit-learn, on real models and features.

Models are fitted with scikit-learn on the scribbled pixels of real benchmark
images (filter-bank features) and predicted on every pixel of the crop; the
evaluator must reproduce ``predict_proba`` (float32 of scikit-learn's float64) and
its argmax exactly, whatever the thread count, and early-stopped labels must equal
the full argmax.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier

from convpaint import api
from convpaint.errors import DataError
from convpaint.forest import Forest, node_arrays
from convpaint.model_io import load_model, save_model

from .conftest import ROOT, SAMPLE, feature_pipeline
from .sklearn_reference import sklearn_forest_from_file

DATA = Path(__file__).resolve().parent / "data"


def _features(image: NDArray) -> NDArray[np.float32]:
    """Default filter-bank features ``(n_pixels, 57)`` of a 2-D image."""
    from convpaint.features.pipeline import Normalization
    from convpaint.tiling import plan_block, read_block

    pipe = feature_pipeline([{"name": "filters"}])
    data = image[None, None].astype(np.float32)  # (C, Z, Y, X)
    norm = Normalization([float(data.mean())], [float(data.std())])
    h, w = image.shape
    block = plan_block(
        ((0, 1), (0, h), (0, w)), halo=pipe.halo, alignment=pipe.alignment
    )  # type: ignore[attr-defined]
    return pipe.compute(norm(read_block(data, block)), block.trim)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def real_data(bench: Path) -> dict[str, tuple[NDArray[np.float32], NDArray]]:
    """Features of two real crops and their scribble labels (0 = unlabelled).

    drosophila: 5 classes (EM, 256x256); isbi: 2 classes (EM, 256x256).
    """
    from PIL import Image

    out = {}
    dros = tifffile.imread(bench / "drosophila_vnc_sstem/raw/00.tif")[:256, :256]
    scr = tifffile.imread(bench / "drosophila_vnc_sstem/derived/00_scribbles.tif")
    out["drosophila"] = (_features(dros), scr[:256, :256].ravel())
    isbi = np.asarray(Image.open(bench / "isbi2012_em_membranes/images/0.png"))
    scr = tifffile.imread(bench / "isbi2012_em_membranes/derived/0_scribbles.tif")
    out["isbi"] = (_features(isbi[:256, :256]), scr[:256, :256].ravel())
    return out


def _fit(
    X: NDArray[np.float32], y: NDArray, **params: object
) -> RandomForestClassifier:
    keep = y > 0
    params = {"n_estimators": 20, "random_state": 0, "n_jobs": 1, **params}
    return RandomForestClassifier(**params).fit(X[keep], y[keep])  # type: ignore[arg-type]


def _edge_rows(
    forest: RandomForestClassifier, X: NDArray[np.float32], n: int = 3000
) -> NDArray[np.float32]:
    """Real rows with one split feature set at, just below and just above a split's
    threshold (as float32: rounded down, up and to nearest)."""
    arrays = node_arrays(forest)
    split = np.flatnonzero(arrays["left_child"] != -1)
    pick = np.random.default_rng(0).choice(split, size=min(n, len(split)))
    t64 = arrays["threshold"][pick]
    near = t64.astype(np.float32)
    down = np.where(near > t64, np.nextafter(near, np.float32(-np.inf)), near)
    up = np.nextafter(down, np.float32(np.inf))
    rows = []
    for values in (down, up, near, np.nextafter(down, np.float32(-np.inf))):
        r = X[np.arange(len(pick)) % len(X)].copy()
        r[np.arange(len(pick)), arrays["feature"][pick]] = values
        rows.append(r)
    return np.concatenate(rows)


def _assert_same_as_sklearn(
    forest: RandomForestClassifier, X: NDArray[np.float32], evaluator: Forest
) -> None:
    ref = forest.predict_proba(X)
    proba = evaluator.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == ref.shape
    np.testing.assert_allclose(proba, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(proba, ref.astype(np.float32))  # even bit-identical
    np.testing.assert_array_equal(evaluator.predict_labels(X), ref.argmax(axis=1))
    index, both = evaluator.predict(X, probabilities=True)
    np.testing.assert_array_equal(index, ref.argmax(axis=1))
    np.testing.assert_array_equal(both, proba)
    np.testing.assert_array_equal(evaluator.classes, forest.classes_)


CASES = {
    # dataset, feature columns (None: all 57), forest parameters
    "5 classes, deep": ("drosophila", None, {}),
    "5 classes, depth 4, balanced, impure leaves": (
        "drosophila",
        None,
        {"max_depth": 4, "min_samples_leaf": 5, "class_weight": "balanced"},
    ),
    "5 classes, 5 features": ("drosophila", slice(0, 5), {"n_estimators": 15}),
    "5 classes, min_samples_leaf 20, all features": (
        "drosophila",
        None,
        {"min_samples_leaf": 20, "max_features": None, "n_estimators": 10},
    ),
    "2 classes, deep": ("isbi", None, {"n_estimators": 30}),
    "2 classes, depth 2, balanced_subsample": (
        "isbi",
        None,
        {"max_depth": 2, "n_estimators": 10, "class_weight": "balanced_subsample"},
    ),
    "2 classes, 1 feature": ("isbi", slice(0, 1), {"n_estimators": 10}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_as_sklearn_on_real_models(
    real_data: dict, tmp_path: Path, case: str
) -> None:
    """Probabilities, labels and early-stopped labels equal scikit-learn's, also for
    rows lying exactly on (and one float32 step around) split thresholds."""
    dataset, columns, params = CASES[case]
    X, y = real_data[dataset]
    if columns is not None:
        X = np.ascontiguousarray(X[:, columns])
    forest = _fit(X, y, **params)
    # through the model file, as prediction gets it
    save_model(tmp_path / "m.cpm", forest, {"classes": forest.classes_.tolist()})
    evaluator = load_model(tmp_path / "m.cpm").forest
    assert evaluator.n_trees == forest.n_estimators
    assert evaluator.n_features == X.shape[1]
    assert evaluator.n_classes == len(forest.classes_)
    _assert_same_as_sklearn(forest, X, evaluator)
    _assert_same_as_sklearn(forest, _edge_rows(forest, X), evaluator)


def test_thresholds_exactly_representable(real_data: dict) -> None:
    """Features on a coarse grid give float32-exact thresholds; rows equal to them go
    left, like scikit-learn."""
    X, y = real_data["drosophila"]
    grid = (np.round(X[:, :6] * 4) / 4).astype(np.float32)
    forest = _fit(grid, y, n_estimators=10)
    thresholds = node_arrays(forest)["threshold"]
    assert (thresholds == thresholds.astype(np.float32)).mean() > 0.5
    evaluator = Forest.from_sklearn(forest)
    _assert_same_as_sklearn(forest, _edge_rows(forest, grid), evaluator)


def test_thread_count_does_not_change_results(real_data: dict) -> None:
    """1, 2 and 3 threads give bit-identical probabilities and labels."""
    X, y = real_data["drosophila"]
    evaluator = Forest.from_sklearn(_fit(X, y, n_estimators=12))
    rows = X[:5000]
    proba = [evaluator.predict_proba(rows, n_jobs=j) for j in (1, 2, 3)]
    labels = [evaluator.predict_labels(rows, n_jobs=j) for j in (1, 2, 3)]
    for p, lab in zip(proba[1:], labels[1:], strict=True):
        np.testing.assert_array_equal(p, proba[0])
        np.testing.assert_array_equal(lab, labels[0])


def test_early_stopping_saves_walks_and_stays_exact(real_data: dict) -> None:
    """Most pixels stop before the last tree, and labels still equal the full argmax."""
    X, y = real_data["isbi"]
    forest = _fit(X, y, n_estimators=40)
    evaluator = Forest.from_sklearn(forest)
    labels = evaluator.predict_labels(X)
    np.testing.assert_array_equal(labels, forest.predict_proba(X).argmax(axis=1))
    assert evaluator.last_walks < 0.8 * len(X) * evaluator.n_trees


def _one_tree(values: list[list[float]]) -> Forest:
    """A stump on feature 0 at 0.5 with the given two leaf values."""
    return Forest.from_node_arrays(
        {
            "left_child": np.array([1, -1, -1]),
            "right_child": np.array([2, -1, -1]),
            "feature": np.array([0, -2, -2]),
            "threshold": np.array([0.5, -2.0, -2.0]),
            "values": np.array([[1.0, 1.0], *values]),
            "node_offsets": np.array([0, 3]),
        },
        classes=[4, 9],
        n_features=1,
    )


def test_ties_go_to_the_lowest_class_and_counts_are_normalised() -> None:
    """A 50/50 leaf predicts the first class; leaves holding counts are divided by
    their sum, as scikit-learn did before it stored fractions."""
    forest = _one_tree([[0.5, 0.5], [3.0, 9.0]])
    X = np.array([[0.5], [0.6]], dtype=np.float32)
    np.testing.assert_array_equal(forest.predict_labels(X), [0, 1])
    np.testing.assert_array_equal(forest.predict_proba(X), [[0.5, 0.5], [0.25, 0.75]])
    assert forest.classes.tolist() == [4, 9]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(bad: float) -> None:
    """NaN or infinite features raise a DataError naming the first bad row."""
    forest = _one_tree([[1.0, 0.0], [0.0, 1.0]])
    X = np.zeros((2000, 1), dtype=np.float32)
    X[1234, 0] = bad
    with pytest.raises(DataError, match="row 1234"):
        forest.predict_labels(X, n_jobs=2)
    with pytest.raises(DataError, match="NaN or infinite"):
        forest.predict_proba(X)
    with pytest.raises(DataError, match="trained on 1 features"):
        forest.predict_proba(np.zeros((3, 2), np.float32))


def test_model_from_the_format_1_release_predicts_the_same(tmp_path: Path) -> None:
    """A model written by the previous release (tests/data) loads, predicts what that
    release predicted, and equals scikit-learn on the same features."""
    model = DATA / "nuclei_v1.cpm"
    expected = np.load(DATA / "nuclei_v1_expected.npz")
    crop = tifffile.imread(SAMPLE / "images/nuclei.tif")[256:448, 256:448]
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    api.predict(
        model, [str(tmp_path / "crop.tif")], tmp_path / "out", probabilities=True
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out/crop_labels.tif"), expected["labels"]
    )
    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "out/crop_probabilities.tif"),
        expected["probabilities"],
        rtol=0,
        atol=1e-6,
    )
    X = _features(crop)
    _assert_same_as_sklearn(
        sklearn_forest_from_file(model), X, load_model(model).forest
    )


def test_prediction_needs_no_sklearn_and_loading_compiles_nothing(
    tmp_path: Path,
) -> None:
    """Loading a model imports neither numba nor scikit-learn; predicting imports numba
    but never scikit-learn."""
    crop = tifffile.imread(SAMPLE / "images/nuclei.tif")[:64, :64]
    tifffile.imwrite(tmp_path / "crop.tif", crop)
    code = f"""
import sys
from convpaint import api
from convpaint.model_io import load_model
load_model({str(DATA / "nuclei_v1.cpm")!r})
print("after load:", "numba" in sys.modules, "sklearn" in sys.modules)
api.predict({str(DATA / "nuclei_v1.cpm")!r}, [{str(tmp_path / "crop.tif")!r}], {str(tmp_path / "o")!r})
print("after predict:", "numba" in sys.modules, "sklearn" in sys.modules)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "after load: False False" in res.stdout
    assert "after predict: True False" in res.stdout


def test_numba_cache_falls_back_to_a_temporary_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where neither the package folder nor the user cache is writable, compiled code
    is cached in a per-user folder under the temporary directory."""
    import numba

    from convpaint import forest

    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(forest, "_writable", lambda folder: False)
    monkeypatch.setattr(forest.tempfile, "gettempdir", lambda: str(tmp_path))
    forest._import_kernels()
    assert numba.config.CACHE_DIR == str(tmp_path / f"convpaint-numba-{os.getuid()}")
