"""RandomForestConfig: the pixel classifier's parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from .base import StrictModel

__all__ = ["PLANE_TREES", "STACK_TREES", "RandomForestConfig"]


#: Trees of `n_estimators: null` for 2-D images and for Z stacks (measured).
PLANE_TREES = 50
STACK_TREES = 100


class RandomForestConfig(StrictModel):
    """Random forest fitted on the annotated pixels.

    Example::

        classifier:
          n_estimators: null        # 50 for 2-D images, 100 for Z stacks
          algorithm: histogram      # or sklearn
          max_depth: null
          class_weight: balanced
          max_samples_per_class: 50000
          seed: 0
    """

    n_estimators: int | None = Field(default=None, ge=1, le=10_000)
    """Number of trees (at most 10000); null (the default) is the measured default:
    50 for 2-D images, 100 for Z stacks. On 2-D images 50 trees were as accurate as
    100 (mean mIoU -0.001 over eight datasets, none losing more than 0.003) at half
    the training and prediction time (`benchmarks/results/accuracy.md`). On stacks
    100 trees gain 0.005 mIoU on the ovule nuclei (mean of 3 seeds) and cost little:
    the 3-D features, not the forest, take most of a stack's time
    (`benchmarks/results/accuracy_3d.md`)."""

    def resolved_trees(self, stack: bool) -> int:
        """The number of trees for 2-D images or (``stack``) Z stacks."""
        if self.n_estimators is not None:
            return self.n_estimators
        return STACK_TREES if stack else PLANE_TREES

    algorithm: Literal["histogram", "sklearn"] = "histogram"
    """How the forest is fitted. `histogram` (the default): convpaint's compiled
    trainer, which finds splits on up to `max_bins` quantile bins per feature (as
    LightGBM does) and fits a 2-D default model ten times faster than scikit-learn,
    as accurately (`benchmarks/results/accuracy.md`). `sklearn`: scikit-learn's
    RandomForestClassifier with exact splits (the only trainer of
    earlier convpaint releases). Both give the same kind of forest and model file."""

    max_bins: int = Field(default=256, ge=2, le=256)
    """Bins per feature for `algorithm: histogram` (2..256)."""

    max_depth: PositiveInt | None = None
    """Maximum depth of each tree; null grows trees until leaves are pure."""

    min_samples_leaf: PositiveInt = 1
    """Minimum number of annotated pixels in a leaf."""

    max_features: Literal["sqrt", "log2"] | float | None = "sqrt"
    """Features tried at each split: 'sqrt', 'log2', a fraction in (0, 1], or null for all."""

    class_weight: Literal["balanced", "balanced_subsample"] | None = None
    """Weight classes inversely to their pixel counts ('balanced') or not at all (null)."""

    max_samples_per_class: PositiveInt | None = 50_000
    """Cap on annotated pixels used per class (a seeded random subset); null uses all."""

    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Random seed for sampling and the forest. Left empty, one is drawn and saved in the model."""

    n_jobs: int | None = Field(default=None, ge=1, le=1024)
    """Threads for fitting and prediction; null uses the `tiling.threads` setting."""
