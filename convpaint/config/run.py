"""The top-level config file: features, classifier, train and predict sections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import StrictModel
from .classifier import RandomForestConfig
from .data import check_axes
from .features import FeatureConfig
from .objects import ObjectsConfig
from .tiling import TilingConfig

__all__ = [
    "CONFIG_VERSION",
    "Config",
    "EvaluateSection",
    "PredictSection",
    "TrainSection",
]

CONFIG_VERSION = 1


def _as_list(cls: type, value: object) -> object:
    """Accept a single path or glob where a list is expected."""
    return [value] if isinstance(value, str | Path) else value


class TrainSection(StrictModel):
    """Training data and where the model goes.

    Example::

        train:
          images: [images/*.tif]
          annotations: annotations/{stem}_scribbles.tif
          axes: YX
          model: models/membranes.cpm
    """

    images: list[str] = Field(min_length=1)
    """Image files, folders or glob patterns (relative to the config file)."""

    annotations: list[str] = Field(min_length=1)
    """Either one template containing ``{stem}`` (the image file name without its
    suffix), e.g. ``annotations/{stem}_scribbles.tif``, or files/globs that pair one
    to one with the sorted images. Label images: 0 = unlabelled, positive values = classes."""

    axes: str = "YX"
    """Axes order of the training images: YX, CYX, or YXC (RGB/RGBA)."""

    model: Path = Path("model.cpm")
    """Where the trained model file is written."""

    report: bool = True
    """Write a training report (JSON + PNG: timing, samples per class, stroke-wise
    cross-validation, feature importances) next to the model."""

    _as_list_images = field_validator("images", "annotations", mode="before")(_as_list)

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str) -> str:
        return check_axes(value)


class PredictSection(StrictModel):
    """Inputs to predict and where the results go.

    Example::

        predict:
          model: models/membranes.cpm
          inputs: ["raw/**/*.tif"]
          output_dir: predictions
          format: tif
          probabilities: false
    """

    model: Path | None = None
    """Model file; defaults to `train.model` of the same config."""

    inputs: list[str] = Field(min_length=1)
    """Image files, folders or glob patterns (relative to the config file)."""

    axes: str | None = None
    """Axes order of the inputs; defaults to the axes the model was trained with."""

    output_dir: Path = Path("predictions")
    """Folder that receives the results."""

    format: Literal["tif", "zarr"] = "tif"
    """Output format: ImageJ-compatible compressed TIFF, or a zarr array."""

    output_name: str = "{stem}_labels"
    """Output file name template without suffix; ``{stem}`` is the input name."""

    probabilities: bool = False
    """Also write float32 class probabilities (``{stem}_probabilities``), one channel per class."""

    on_exists: Literal["error", "skip", "overwrite"] = "error"
    """What to do when an output exists: stop with an error, skip that input, or replace it."""

    _as_list_inputs = field_validator("inputs", mode="before")(_as_list)

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str | None) -> str | None:
        return None if value is None else check_axes(value)

    @field_validator("output_name")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{stem}" not in value or "/" in value or "\\" in value:
            raise ValueError(
                f"output_name '{value}' must contain '{{stem}}' and no folder separators, "
                "e.g. '{stem}_labels'"
            )
        return value


class EvaluateSection(StrictModel):
    """Scoring predictions against dense ground truth (`convpaint evaluate CONFIG`).

    Example::

        evaluate:
          ground_truth: ground_truth/{stem}_gt.tif
          output_dir: evaluation
          figures: true
    """

    predictions: list[str] | None = None
    """Label images to score; default: the outputs planned by the predict section."""

    ground_truth: list[str] = Field(min_length=1)
    """A template with ``{stem}`` (the input image's stem, i.e. the prediction name
    without ``_labels``), or files/globs paired one to one with the sorted predictions.
    0 in the ground truth = not evaluated."""

    images: list[str] | None = None
    """Images for the figures (template or list); default: the predict section's inputs."""

    scribbles: list[str] | None = None
    """Training scribbles for the figures (template or list); optional."""

    output_dir: Path = Path("evaluation")
    """Where the CSV/JSON tables (and figures) are written."""

    figures: bool = False
    """Also write PNGs: image | scribbles | prediction | errors, and the confusion matrix."""

    instances: bool = False
    """The ground truth holds instance ids: map 0 -> background (1), >0 -> object (2)."""

    _as_lists = field_validator(
        "predictions", "ground_truth", "images", "scribbles", mode="before"
    )(_as_list)


class Config(StrictModel):
    """One convpaint run: what features, which classifier, what to train and predict.

    Relative paths are resolved against the folder that holds the config file.
    """

    version: int = CONFIG_VERSION
    """Config format version; written by `convpaint init`."""

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    """Feature extractors (see `convpaint extractors`)."""

    classifier: RandomForestConfig = Field(default_factory=RandomForestConfig)
    """Random forest settings."""

    tiling: TilingConfig = Field(default_factory=TilingConfig)
    """Tile size and threads."""

    train: TrainSection | None = None
    """Training data and model path (needed by `convpaint train`)."""

    predict: PredictSection | None = None
    """Prediction inputs and outputs (needed by `convpaint predict CONFIG`)."""

    evaluate: EvaluateSection | None = None
    """Scoring against ground truth (needed by `convpaint evaluate CONFIG`)."""

    objects: ObjectsConfig | None = None
    """Object segmentation and classification (`convpaint objects ...`)."""

    @model_validator(mode="after")
    def _predict_model(self) -> Config:
        if (
            self.predict is not None
            and self.predict.model is None
            and self.train is None
        ):
            raise ValueError(
                "predict.model is missing: name the model file, or add a train section "
                "whose train.model is used"
            )
        return self
