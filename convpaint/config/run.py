"""The top-level config file: features, classifier, train and predict sections."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from convpaint.io.resume import RESUMABLE_FORMATS

from .base import StrictModel
from .classifier import RandomForestConfig
from .data import check_axes
from .features import FeatureConfig
from .geometry import SpacingConfig
from .objects import ObjectsConfig
from .tiling import ClusterConfig, TilingConfig

__all__ = [
    "CONFIG_VERSION",
    "OUTPUT_FORMATS",
    "Config",
    "EvaluateSection",
    "PredictSection",
    "TrainSection",
]

CONFIG_VERSION = 1


def check_output_name(value: str) -> str:
    """Return ``value`` if it is a valid output name template, else raise ValueError.

    Fields: ``{stem}`` (required) and ``{relpath}`` (the input's folder relative to the
    common folder of the inputs, as a whole folder name). ``/`` separates folders;
    absolute paths, ``..``, backslashes and format specifications are refused.
    """
    example = "e.g. '{stem}_labels' or '{relpath}/{stem}_labels'"
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(value)
            if name is not None
        ]
    except ValueError as err:
        raise ValueError(
            f"output_name '{value}' is not a valid template ({err}); {example}"
        ) from None
    names = {name for name, _, _ in fields}
    parts = value.split("/")
    if names - {"stem", "relpath"} or any(spec or conv for _, spec, conv in fields):
        problem = "may only use the fields {stem} and {relpath}, without formats"
    elif "stem" not in names:
        problem = "must contain '{stem}'"
    elif "\\" in value or "" in parts or ".." in parts:
        problem = "must be a relative name without '..', '\\' or empty folder names"
    elif "relpath" in names and (
        "{relpath}" not in parts[:-1] or value.count("{relpath}") > 1
    ):
        problem = "must use '{relpath}' once, as a whole folder name"
    else:
        return value
    raise ValueError(f"output_name '{value}' {problem}; {example}")


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

    axes: str | None = None
    """Axes order of the training images, any order of T, C, Z, Y, X (e.g. YX, CYX,
    YXC for RGB, ZYX, CZYX, TZYX). Empty: what the files declare (OME-TIFF, ImageJ,
    OME-Zarr); plain 2-D files are taken as YX (or YXC when RGB)."""

    spacing: SpacingConfig | None = None
    """Voxel size, e.g. {z: 0.5, y: 0.1, x: 0.1}; default: the files' metadata."""

    model: Path = Path("model.cpm")
    """Where the trained model file is written."""

    report: bool = True
    """Write a training report (JSON + PNG: timing, samples per class, stroke-wise
    cross-validation, feature importances) next to the model."""

    _as_list_images = field_validator("images", "annotations", mode="before")(_as_list)

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str | None) -> str | None:
        return None if value is None else check_axes(value)


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
    """Axes order of the inputs; default: what each file declares, else the axes the
    model was trained with."""

    spacing: SpacingConfig | None = None
    """Voxel size of the inputs; default: each file's metadata, else the model's."""

    output_dir: Path = Path("predictions")
    """Folder that receives the results."""

    format: Literal["tif", "zarr", "ome-zarr"] = "tif"
    """Output format: ImageJ-compatible compressed TIFF (BigTIFF over 4 GB), a zarr
    array, or OME-Zarr (NGFF labels that napari and Fiji open)."""

    levels: int = Field(default=1, ge=1, le=12)
    """OME-Zarr only: resolution levels written (each halves Y and X)."""

    output_name: str = "{stem}_labels"
    """Output file name template without suffix: ``{stem}`` is the input's name,
    ``{relpath}`` its folder relative to the common folder of the inputs (a glob's
    folder before the first wildcard), so ``{relpath}/{stem}_labels`` mirrors the
    input tree and files of the same name in different folders stay apart."""

    probabilities: bool = False
    """Also write float32 class probabilities (``{stem}_probabilities``), one channel per class."""

    on_exists: Literal["error", "skip", "overwrite"] = "error"
    """What to do when an output exists: stop with an error, skip that input, or replace it."""

    on_error: Literal["stop", "continue"] = "stop"
    """When an input fails: stop the run, or record the failure and go on with the next
    input (`--keep-going`); the exit status is 1 if any input failed."""

    resume: bool = False
    """zarr and ome-zarr outputs: keep the partial output of a run that stops early
    (time limit, Ctrl-C, error, crash) under ``.NAME.resume.partial`` and continue it
    in the next run instead of starting over (`--resume`); the finished tiles are
    not computed again and the result is the same. Any scheduler."""

    @model_validator(mode="after")
    def _resumable(self) -> PredictSection:
        if self.resume and self.format not in RESUMABLE_FORMATS:
            raise ValueError(
                f"resume needs format zarr or ome-zarr, not {self.format}: a TIFF is "
                "written in order and cannot be continued"
            )
        return self

    _as_list_inputs = field_validator("inputs", mode="before")(_as_list)

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str | None) -> str | None:
        return None if value is None else check_axes(value)

    @field_validator("output_name")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_output_name(value)


#: The output formats, from `predict.format` itself, so that the CLI's --format
#: and the config always accept the same list.
OUTPUT_FORMATS: tuple[str, ...] = get_args(
    PredictSection.model_fields["format"].annotation
)


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
    """Tile shape, threads and scheduler."""

    cluster: ClusterConfig | None = None
    """SLURM cluster settings for `tiling.scheduler: slurm` (needs dask-jobqueue)."""

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
