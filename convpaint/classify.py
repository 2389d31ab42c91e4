"""The random forest: sampling annotated pixels, fitting, predicting a tile."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from convpaint.config import RandomForestConfig
from convpaint.errors import DataError
from convpaint.warnings import ConvpaintWarning

__all__ = ["cap_per_class", "fit_forest", "make_forest", "predict_tile"]

logger = logging.getLogger(__name__)

#: Fewer annotated pixels than this in a class give a warning.
_FEW_PIXELS = 20


def make_forest(
    config: RandomForestConfig, *, seed: int, n_jobs: int
) -> RandomForestClassifier:
    """An unfitted forest built from the config."""
    return RandomForestClassifier(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth,
        min_samples_leaf=config.min_samples_leaf,
        max_features=config.max_features,
        class_weight=config.class_weight,
        random_state=seed,
        n_jobs=n_jobs,
    )


def cap_per_class(y: NDArray, cap: int | None, *, seed: int) -> NDArray[np.intp]:
    """Indices of at most ``cap`` samples per class (seeded, order kept)."""
    if cap is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def check_training_labels(y: NDArray, *, where: str) -> None:
    """Refuse training data without at least two classes; warn about tiny classes."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 0:
        raise DataError(
            f"{where}: the annotations contain no labelled pixel (all 0); draw scribbles "
            "with values 1..K for K >= 2 classes"
        )
    if len(classes) < 2:
        raise DataError(
            f"{where}: the annotations contain only class {int(classes[0])} "
            f"({int(counts[0])} pixels); a classifier needs at least two classes: "
            "scribble some background too"
        )
    for c, n in zip(classes, counts, strict=True):
        if n < _FEW_PIXELS:
            warnings.warn(
                f"class {int(c)} has only {int(n)} annotated pixels; predictions for it "
                "will be unreliable — draw more scribbles",
                ConvpaintWarning,
                stacklevel=2,
            )


def fit_forest(
    features: NDArray[np.float32],
    labels: NDArray,
    config: RandomForestConfig,
    *,
    seed: int,
    n_jobs: int,
) -> RandomForestClassifier:
    """Fit the forest on ``(n, F)`` features and ``(n,)`` class values."""
    forest = make_forest(config, seed=seed, n_jobs=n_jobs)
    forest.fit(features, labels)
    return forest


def predict_tile(
    forest: RandomForestClassifier, features: NDArray[np.float32], *, n_jobs: int = 1
) -> NDArray[np.float32]:
    """Class probabilities ``(n, K)`` float32 for ``(n, F)`` features.

    Rows are split across ``n_jobs`` threads, each summing the trees in the same
    order, so results are bit-identical whatever the thread count or tiling
    (scikit-learn's own threaded prediction adds trees in completion order).
    """
    if not np.all(np.isfinite(features)):
        raise DataError("features contain NaN or infinite values")
    forest.n_jobs = 1
    n = len(features)
    if n_jobs <= 1 or n < 4096:
        return forest.predict_proba(features).astype(np.float32, copy=False)
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((n, forest.n_classes_), dtype=np.float32)
    bounds = np.linspace(0, n, n_jobs + 1).astype(int)

    def run(i: int) -> None:
        a, b = bounds[i], bounds[i + 1]
        out[a:b] = forest.predict_proba(features[a:b])

    with ThreadPoolExecutor(n_jobs) as pool:
        list(pool.map(run, range(n_jobs)))
    return out


def forest_from_trees(
    trees: list[DecisionTreeClassifier], classes: NDArray, n_features: int, n_jobs: int
) -> RandomForestClassifier:
    """Assemble a fitted forest from fitted trees (used by the model loader)."""
    forest = RandomForestClassifier(n_estimators=len(trees), n_jobs=n_jobs)
    forest.estimators_ = trees
    forest.estimator_ = DecisionTreeClassifier()
    forest.classes_ = np.asarray(classes)
    forest.n_classes_ = len(classes)
    forest.n_outputs_ = 1
    forest.n_features_in_ = n_features
    return forest
