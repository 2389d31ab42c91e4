"""The ``objects:`` section: segment masks into objects, classify whole objects.

Example::

    objects:
      segment:
        inputs: [predictions/*_labels.tif]
        foreground: [2]
        min_size: 30
        output_dir: instances
      classifier: {kind: forest, n_estimators: 300, seed: 0}
      train:
        images: [images/*.tif]
        instances: instances/{stem}_instances.tif
        classes: classes/{stem}_classes.csv
        axes: YXC
        model: models/cells.cpo
      predict:
        inputs: [raw/*.tif]
        instances: instances/{stem}_instances.tif
        output_dir: objects
      evaluate:
        ground_truth_instances: gt/{stem}_instances.tif
        ground_truth_classes: gt/{stem}_classes.csv
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from .base import StrictModel

__all__ = [
    "OBJECT_AXES",
    "ObjectCNNConfig",
    "ObjectEvaluateSection",
    "ObjectFeatureConfig",
    "ObjectForestConfig",
    "ObjectPredictSection",
    "ObjectTrainSection",
    "ObjectsConfig",
    "SegmentConfig",
    "SplitConfig",
    "check_object_axes",
    "resolve_object_paths",
]

#: Image axes the object commands accept (2D and 3D, channels first or last).
OBJECT_AXES = ("YX", "CYX", "YXC", "ZYX", "CZYX", "ZCYX", "ZYXC")

OnExists = Literal["error", "skip", "overwrite"]


def check_object_axes(value: str) -> str:
    """Return ``value`` upper-cased if the object commands support it, else ValueError."""
    axes = value.strip().upper()
    if axes not in OBJECT_AXES:
        raise ValueError(
            f"axes '{value}' are not supported for objects; use one of "
            f"{', '.join(OBJECT_AXES)} (YXC/ZYXC for RGB files)"
        )
    return axes


def _as_list(cls: type, value: object) -> object:
    """Accept a single path or glob where a list is expected."""
    return [value] if isinstance(value, str | Path) else value


def _check_template(value: str, what: str) -> str:
    if "{stem}" not in value or "/" in value or "\\" in value:
        raise ValueError(
            f"{what} '{value}' must contain '{{stem}}' and no folder separators, "
            "e.g. '{stem}_instances'"
        )
    return value


# --------------------------------------------------------------------------- segment
class SplitConfig(StrictModel):
    """Split touching objects with a distance-transform watershed, object by object.

    Example::

        split: {min_distance: 6}
    """

    min_distance: PositiveInt = 5
    """Smallest distance in pixels between two seeds (maxima of the distance to the
    object's border); roughly the radius of the smallest object to keep whole."""


class SegmentConfig(StrictModel):
    """Turn masks (e.g. predicted label images) into instance masks, block by block.

    Example::

        segment:
          inputs: [predictions/*_labels.tif]
          foreground: [2]
          connectivity: face
          min_size: 30
          split: {min_distance: 6}
          output_dir: instances
    """

    inputs: list[str] | None = None
    """Masks to segment (files, folders, globs): label images or probability maps.
    Default: the label images planned by the pixel ``predict`` section."""

    foreground: list[int] | None = None
    """Pixel values that count as object; default: every value other than 0."""

    threshold: float | None = None
    """For probability or intensity maps: pixels above this value are objects
    (instead of ``foreground``)."""

    connectivity: Literal["face", "full"] = "face"
    """Pixels touching by a face (4-/6-connectivity) or also by an edge or corner
    (8-/26-connectivity) belong to one object."""

    min_size: PositiveInt = 1
    """Objects with fewer pixels are removed (1 keeps everything)."""

    max_size: PositiveInt | None = None
    """Objects with more pixels are removed; null keeps them. Applied after `split`."""

    split: SplitConfig | None = None
    """Split touching objects by a distance-transform watershed; null: no split."""

    block_size: PositiveInt | list[PositiveInt] | None = None
    """Block processed at a time: one edge for every axis, or one per spatial axis
    (Y, X or Z, Y, X); the result does not depend on it. Default: 2048 per axis in
    2D, 256 in 3D."""

    output_dir: Path = Path("instances")
    """Folder that receives the instance masks."""

    output_name: str = "{stem}_instances"
    """Output name template without suffix; ``{stem}`` is the input's stem without a
    trailing ``_labels``/``_mask``/``_probabilities``."""

    format: Literal["tif", "zarr"] = "tif"
    """Output format: compressed TIFF or a zarr array written block by block."""

    on_exists: OnExists = "error"
    """What to do when an output exists: stop, skip that input, or replace it."""

    _as_list_inputs = field_validator("inputs", mode="before")(_as_list)

    @field_validator("output_name")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value, "output_name")

    @field_validator("foreground")
    @classmethod
    def _foreground(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError(
                f"foreground {value} must list positive pixel values, e.g. [2]; "
                "leave it out to use every non-zero value"
            )
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> SegmentConfig:
        if self.foreground is not None and self.threshold is not None:
            raise ValueError(
                "give either foreground (pixel values) or threshold (for probability "
                "maps), not both"
            )
        if self.max_size is not None and self.max_size < self.min_size:
            raise ValueError(
                f"max_size {self.max_size} is smaller than min_size {self.min_size}; "
                "no object could pass"
            )
        return self


# --------------------------------------------------------------------------- classifiers
class ObjectFeatureConfig(StrictModel):
    """Measurements per object that the forest learns from.

    Example::

        features:
          morphology: true
          quantiles: [0.1, 0.5, 0.9]
          ring: 4
          normalize: none
    """

    morphology: bool = True
    """Shape: area, perimeter and circularity (2D), eccentricity, solidity, extent,
    axis lengths, equivalent diameter."""

    intensity: bool = True
    """Per channel: mean, standard deviation, minimum and maximum inside the object."""

    quantiles: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9]
    )
    """Per-channel intensity quantiles inside the object."""

    ring: int = Field(default=4, ge=0, le=64)
    """Width in pixels of the background ring around each object whose mean
    intensity (and the object's contrast to it) is measured; 0 turns it off."""

    normalize: Literal["none", "image"] = "none"
    """Intensities as stored (none), or z-scored per channel with each image's own
    mean and standard deviation (image)."""

    @model_validator(mode="after")
    def _some(self) -> ObjectFeatureConfig:
        if not (self.morphology or self.intensity or self.quantiles or self.ring):
            raise ValueError("every feature group is turned off; enable at least one")
        return self


class ObjectForestConfig(StrictModel):
    """A random forest on per-object measurements.

    Example::

        classifier:
          kind: forest
          n_estimators: 300
          class_weight: balanced
          seed: 0
    """

    kind: Literal["forest"] = "forest"
    """Classifier kind."""

    n_estimators: PositiveInt = 300
    """Number of trees."""

    max_depth: PositiveInt | None = None
    """Maximum depth of each tree; null grows trees until leaves are pure."""

    min_samples_leaf: PositiveInt = 1
    """Minimum number of objects in a leaf."""

    max_features: Literal["sqrt", "log2"] | float | None = "sqrt"
    """Features tried at each split: 'sqrt', 'log2', a fraction in (0, 1], or null."""

    class_weight: Literal["balanced", "balanced_subsample"] | None = "balanced"
    """Weight classes inversely to their object counts, or not at all (null)."""

    seed: int | None = Field(default=None, ge=0)
    """Random seed; left empty, one is drawn and saved in the model."""

    features: ObjectFeatureConfig = Field(default_factory=ObjectFeatureConfig)
    """Which measurements to use."""


class ObjectCNNConfig(StrictModel):
    """A small convolutional network on a crop around each object (torch, CPU).

    The input is the normalised image crop plus one channel that marks the object's
    own pixels, centred on the object.

    Example::

        classifier:
          kind: cnn
          crop_size: 48
          epochs: 30
          seed: 0
    """

    kind: Literal["cnn"] = "cnn"
    """Classifier kind."""

    architecture: Literal["small", "resnet18"] = "small"
    """'small': four convolution blocks (2D or 3D), trained from scratch; 'resnet18':
    torchvision ResNet18 (2D only) started from the ImageNet weights in `weights`."""

    weights: Path | None = None
    """ResNet18 ImageNet state dict (torchvision ``resnet18-*.pth``); required for
    'resnet18', unused otherwise."""

    width: PositiveInt = 16
    """Channels of the first block of the small network (doubled per block)."""

    crop_size: int = Field(default=48, ge=16, le=512)
    """Edge of the crop around each object in pixels (per spatial axis); objects
    larger than this are cut, not rescaled."""

    epochs: PositiveInt = 30
    """Passes over the training objects."""

    batch_size: PositiveInt = 32
    """Objects per optimisation step."""

    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    """Adam learning rate."""

    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    """Adam weight decay."""

    augment: bool = True
    """Random flips and 90-degree rotations during training."""

    class_weight: Literal["balanced"] | None = "balanced"
    """Weight the loss inversely to the class counts, or not at all (null)."""

    seed: int | None = Field(default=None, ge=0)
    """Random seed for initialisation, shuffling and augmentation; left empty, one is
    drawn and saved in the model."""

    threads: PositiveInt | None = None
    """Torch threads; left empty, the CPUs this process may use. Runs with the same
    seed and thread count give identical models."""

    @model_validator(mode="after")
    def _weights(self) -> ObjectCNNConfig:
        if self.architecture == "resnet18" and self.weights is None:
            raise ValueError(
                "architecture resnet18 needs weights: the path of torchvision's "
                "ImageNet state dict (resnet18-f37072fd.pth); or use architecture small"
            )
        return self


ObjectClassifierConfig = Annotated[
    ObjectForestConfig | ObjectCNNConfig, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- sections
class ObjectTrainSection(StrictModel):
    """Training images, their instance masks and the class of each object.

    Example::

        train:
          images: [images/*.tif]
          instances: instances/{stem}_instances.tif
          classes: classes/{stem}_classes.csv
          axes: YXC
          model: models/cells.cpo
    """

    images: list[str] = Field(min_length=1)
    """Image files, folders or globs (relative to the config file)."""

    instances: list[str] = Field(min_length=1)
    """Instance masks (0 = background, one integer id per object): a template with
    ``{stem}`` (the image's name without suffix), or files paired in sorted order."""

    classes: list[str] = Field(min_length=1)
    """Object classes, template or sorted files: a CSV table with columns
    ``object_id,class``, or a label image whose painted classes (1..K) mark the
    objects they touch."""

    axes: str = "YX"
    """Axes of the images: YX, CYX, YXC, ZYX, CZYX, ZCYX or ZYXC."""

    unlabelled: Literal["skip", "error"] = "skip"
    """Objects without a class are left out of training (skip) or refused (error)."""

    model: Path = Path("objects.cpo")
    """Where the object model file is written."""

    _as_lists = field_validator("images", "instances", "classes", mode="before")(
        _as_list
    )

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str) -> str:
        return check_object_axes(value)


class ObjectPredictSection(StrictModel):
    """Images and instance masks to classify, and where the results go.

    Example::

        predict:
          inputs: [raw/*.tif]
          instances: instances/{stem}_instances.tif
          output_dir: objects
    """

    model: Path | None = None
    """Object model file; defaults to ``objects.train.model``."""

    inputs: list[str] = Field(min_length=1)
    """Image files, folders or globs."""

    instances: list[str] = Field(min_length=1)
    """Instance masks: a template with ``{stem}`` or files paired in sorted order."""

    axes: str | None = None
    """Axes of the inputs; default: the model's training axes."""

    output_dir: Path = Path("objects")
    """Folder for ``{stem}_objclass``, ``{stem}_objects`` tables and the summary."""

    format: Literal["tif", "zarr"] = "tif"
    """Format of the ``{stem}_objclass`` image."""

    table_format: Literal["csv", "parquet"] = "csv"
    """Format of the per-image tables; parquet needs pyarrow."""

    on_exists: OnExists = "error"
    """What to do when an output exists: stop, skip that input, or replace it."""

    _as_lists = field_validator("inputs", "instances", mode="before")(_as_list)

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str | None) -> str | None:
        return None if value is None else check_object_axes(value)


class ObjectEvaluateSection(StrictModel):
    """Object-level scores against ground-truth objects and classes.

    Example::

        evaluate:
          ground_truth_instances: gt/{stem}_instances.tif
          ground_truth_classes: gt/{stem}_classes.csv
          output_dir: evaluation_objects
    """

    predictions: list[str] | None = None
    """Prediction tables ``{stem}_objects.csv``; default: the predict section's."""

    instances: list[str] | None = None
    """Instance masks the predictions refer to (template or sorted files); default:
    the predict section's, or the ground-truth instances."""

    ground_truth_instances: list[str] = Field(min_length=1)
    """Ground-truth instance masks: template with ``{stem}`` or sorted files."""

    ground_truth_classes: list[str] = Field(min_length=1)
    """Ground-truth classes: CSV tables (``object_id,class``), template or sorted files."""

    iou_threshold: float = Field(default=0.5, ge=0.5, lt=1.0)
    """A predicted object matches a ground-truth object when their IoU exceeds this
    (0.5 or more makes matches unique)."""

    output_dir: Path = Path("evaluation_objects")
    """Where the CSV/JSON scores are written."""

    _as_lists = field_validator(
        "predictions",
        "instances",
        "ground_truth_instances",
        "ground_truth_classes",
        mode="before",
    )(_as_list)


class ObjectsConfig(StrictModel):
    """Object segmentation and classification (`convpaint objects ...`)."""

    segment: SegmentConfig | None = None
    """Masks -> instance masks (`convpaint objects segment CONFIG`)."""

    classifier: ObjectClassifierConfig = Field(default_factory=ObjectForestConfig)
    """``kind: forest`` (measurements + random forest) or ``kind: cnn``."""

    train: ObjectTrainSection | None = None
    """Training data (`convpaint objects train CONFIG`)."""

    predict: ObjectPredictSection | None = None
    """Prediction inputs and outputs (`convpaint objects predict CONFIG`)."""

    evaluate: ObjectEvaluateSection | None = None
    """Scoring (`convpaint objects evaluate CONFIG`)."""

    @model_validator(mode="after")
    def _predict_model(self) -> ObjectsConfig:
        if (
            self.predict is not None
            and self.predict.model is None
            and self.train is None
        ):
            raise ValueError(
                "objects.predict.model is missing: name the model file, or add an "
                "objects.train section whose model is used"
            )
        return self


def resolve_object_paths(
    objects: ObjectsConfig, join: Callable[[str | Path], str]
) -> ObjectsConfig:
    """Return a copy whose relative paths, globs and templates went through ``join``
    (which makes a path relative to the config file's folder absolute)."""
    objects = objects.model_copy(deep=True)

    def lists(section: StrictModel | None, *names: str) -> None:
        for name in names:
            values = getattr(section, name)
            if values is not None:
                setattr(section, name, [join(v) for v in values])

    if objects.segment is not None:
        lists(objects.segment, "inputs")
        objects.segment.output_dir = Path(join(objects.segment.output_dir))
    if isinstance(objects.classifier, ObjectCNNConfig) and objects.classifier.weights:
        objects.classifier.weights = Path(join(objects.classifier.weights))
    if objects.train is not None:
        lists(objects.train, "images", "instances", "classes")
        objects.train.model = Path(join(objects.train.model))
    if objects.predict is not None:
        p = objects.predict
        lists(p, "inputs", "instances")
        p.output_dir = Path(join(p.output_dir))
        if p.model is None and objects.train is not None:
            p.model = objects.train.model
        elif p.model is not None:
            p.model = Path(join(p.model))
    if objects.evaluate is not None:
        e = objects.evaluate
        lists(
            e,
            "predictions",
            "instances",
            "ground_truth_instances",
            "ground_truth_classes",
        )
        e.output_dir = Path(join(e.output_dir))
    return objects
