"""The random forest: sampling annotated pixels, fitting, predicting a tile.

Fitting uses convpaint's histogram trainer (:mod:`convpaint.forest_fit`) or, with
``classifier.algorithm: sklearn``, scikit-learn (imported only then); prediction
uses convpaint's own evaluator, :class:`convpaint.forest.Forest`, and needs no
scikit-learn.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from convpaint.config import PLANE_TREES, RandomForestConfig
from convpaint.errors import DataError
from convpaint.forest import Forest
from convpaint.warnings import ConvpaintWarning

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

    from convpaint.config.objects import ObjectForestConfig
    from convpaint.forest_fit import FittedForest

__all__ = [
    "FoldForest",
    "cap_per_class",
    "fit_forest",
    "make_forest",
    "predict_tile",
    "predict_tile_labels",
]

logger = logging.getLogger(__name__)

#: Fewer annotated pixels than this in a class give a warning.
_FEW_PIXELS = 20


def make_forest(
    config: RandomForestConfig | ObjectForestConfig,
    *,
    seed: int,
    n_jobs: int,
    n_estimators: int | None = None,
) -> RandomForestClassifier:
    """An unfitted forest built from the config, a pixel or an object classifier's
    (``n_estimators``: another tree count, e.g. for cross-validation folds)."""
    from sklearn.ensemble import RandomForestClassifier

    params = _tree_params(config)
    if n_estimators:
        params["n_estimators"] = n_estimators
    return RandomForestClassifier(**params, random_state=seed, n_jobs=n_jobs)


def _tree_params(
    config: RandomForestConfig | ObjectForestConfig,
) -> dict[str, object]:
    """The forest settings both trainers take, under scikit-learn's names."""
    return {
        "n_estimators": config.n_estimators or PLANE_TREES,
        "max_depth": config.max_depth,
        "min_samples_leaf": config.min_samples_leaf,
        "max_features": config.max_features,
        "class_weight": config.class_weight,
    }


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
) -> RandomForestClassifier | FittedForest:
    """Fit the forest on ``(n, F)`` features and ``(n,)`` class values, with the
    config's ``algorithm`` (see :mod:`convpaint.forest_fit`)."""
    if config.algorithm == "histogram":
        from convpaint.forest_fit import fit_histogram_forest

        return fit_histogram_forest(
            features,
            labels,
            **_tree_params(config),  # type: ignore[arg-type]
            max_bins=config.max_bins,
            seed=seed,
            n_jobs=n_jobs,
        )
    forest = make_forest(config, seed=seed, n_jobs=n_jobs)
    forest.fit(features, labels)
    return forest


class FoldForest:
    """A forest of the config fitted on a seeded sample of its training pixels.

    For cross-validation folds: ``fit`` keeps ``fraction`` of the pixels of every
    class (at least :data:`_FOLD_MIN_PIXELS` of a class, or all it has), in their
    order; ``predict`` uses convpaint's evaluator.

    Parameters
    ----------
    config : RandomForestConfig
        The final forest's settings.
    seed, n_jobs : int
        As for :func:`make_forest` (the seed also draws the sample).
    fraction : float
        Share of each class's pixels fitted on, in ``(0, 1]``.
    """

    def __init__(
        self, config: RandomForestConfig, *, seed: int, n_jobs: int, fraction: float
    ) -> None:
        self.config = config
        self.seed = seed
        self.n_jobs = n_jobs
        self.fraction = fraction
        self.forest: Forest | None = None

    def fit(self, features: NDArray[np.float32], labels: NDArray) -> FoldForest:
        """Fit on the sample; returns self."""
        rng = np.random.default_rng(self.seed)
        keep = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            n = min(
                len(idx), max(_FOLD_MIN_PIXELS, math.ceil(self.fraction * len(idx)))
            )
            keep.append(np.sort(rng.choice(idx, n, replace=False)))
        rows = np.sort(np.concatenate(keep))
        fitted = fit_forest(
            features[rows],
            labels[rows],
            self.config,
            seed=self.seed,
            n_jobs=self.n_jobs,
        )
        self.forest = Forest.from_sklearn(fitted)
        return self

    def predict(self, features: NDArray[np.float32]) -> NDArray:
        """Class values of ``(n, F)`` features."""
        assert self.forest is not None, "fit first"
        index, _ = self.forest.predict(features, n_jobs=self.n_jobs)
        return self.forest.classes[index]


#: Fewest pixels of a class a cross-validation fold's forest is fitted on.
_FOLD_MIN_PIXELS = 50


def predict_tile(
    forest: Forest | RandomForestClassifier,
    features: NDArray[np.float32],
    *,
    n_jobs: int = 1,
) -> NDArray[np.float32]:
    """Class probabilities ``(n, K)`` float32 for ``(n, F)`` features.

    Equal to scikit-learn's ``predict_proba`` (see :mod:`convpaint.forest`). Rows
    are split across ``n_jobs`` threads; results are bit-identical whatever the
    thread count or tiling.

    Raises
    ------
    DataError
        Wrong feature count, or NaN/infinite features.
    """
    return _evaluator(forest).predict_proba(features, n_jobs=n_jobs)


def predict_tile_labels(
    forest: Forest | RandomForestClassifier,
    features: NDArray[np.float32],
    *,
    n_jobs: int = 1,
    probabilities: bool = False,
) -> tuple[NDArray[np.intp], NDArray[np.float32] | None]:
    """Class index ``(n,)`` of each row and, on request, the probabilities.

    Without ``probabilities``, each pixel stops walking trees once its class is
    certain (exact: the same index as the argmax of the full mean); with them, all
    trees are walked. The labels are ``forest.classes[index]``.

    Returns
    -------
    index : ndarray of shape ``(n,)``, intp
    probabilities : ndarray of shape ``(n, K)``, float32, or None

    Raises
    ------
    DataError
        Wrong feature count, or NaN/infinite features.
    """
    return _evaluator(forest).predict(
        features, n_jobs=n_jobs, probabilities=probabilities
    )


def _evaluator(forest: Forest | RandomForestClassifier) -> Forest:
    """convpaint's evaluator of a forest (converting a scikit-learn one)."""
    return forest if isinstance(forest, Forest) else Forest.from_sklearn(forest)
