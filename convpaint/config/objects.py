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
from .features import FeatureConfig

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

    channel: int | None = Field(default=None, ge=0)
    """For maps with a channel axis, such as ``{stem}_probabilities.tif`` (one channel
    per class, in the model's class order): the channel to use, counted from 0.
    Required when a mask has several channels."""

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
          intensity: true
          quantiles: [0.1, 0.5, 0.9]
          ring: 4
          normalize: none
          pixel_features: {extractors: [{name: filters, sigmas: [1.0, 2.0, 4.0]}]}
    """

    morphology: bool = True
    """Shape: area (the voxel count in 3D), perimeter (2D) or surface area (3D),
    circularity (2D), eccentricity, solidity, extent, axis lengths, equivalent
    diameter, maximum Feret diameter, and moments (the seven Hu moments in 2D, the
    three inertia-tensor eigenvalues in 3D)."""

    intensity: bool = True
    """Per channel: mean, standard deviation, minimum, maximum and integrated
    intensity (the sum) inside the object, and in the ring when ``ring`` > 0."""

    quantiles: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9]
    )
    """Per-channel intensity quantiles inside the object (and in the ring)."""

    ring: int = Field(default=4, ge=0, le=64)
    """Width in pixels of the background band around each object (background pixels
    within this distance): its mean, the object's contrast to it (mean inside minus
    mean in the ring) and the statistics chosen by ``intensity`` and ``quantiles``
    are measured there; 0 turns the ring off."""

    normalize: Literal["none", "image"] = "none"
    """Intensities as stored (none), or z-scored per channel with each image's own
    mean and standard deviation (image)."""

    pixel_features: FeatureConfig | None = None
    """Optional: the mean inside each object of convpaint's per-pixel features (the
    extractors of pixel classification, e.g. ``{extractors: [{name: filters}]}`` or
    ``{extractors: [{name: vgg16}]}``), computed tile by tile over the image with the
    pixel pipeline. ``normalize`` here is ``image`` or ``plane``; null: none."""

    @field_validator("pixel_features")
    @classmethod
    def _pixel_normalize(cls, value: FeatureConfig | None) -> FeatureConfig | None:
        if value is not None and value.normalize == "training":
            raise ValueError(
                "normalize: training is not available for object pixel features; "
                "use image (each image's own statistics) or plane"
            )
        return value

    @model_validator(mode="after")
    def _some(self) -> ObjectFeatureConfig:
        if not (
            self.morphology
            or self.intensity
            or self.quantiles
            or self.ring
            or self.pixel_features
        ):
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

    kind: Literal["forest", "objects-forest"] = "forest"
    """Classifier kind (``objects-forest`` is accepted as another name)."""

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

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return "forest"


class ObjectCNNConfig(StrictModel):
    """A small convolutional network on a patch around each object (torch, CPU).

    The input is the image patch centred on the object (one input plane per channel,
    z-scored with the image's statistics), plus one plane that marks the object's own
    pixels.

    Example::

        classifier:
          kind: cnn
          crop_size: auto
          context_dilation: null
          epochs: 30
          validation_fraction: 0.1
          seed: 0
    """

    kind: Literal["cnn", "objects-cnn"] = "cnn"
    """Classifier kind (``objects-cnn`` is accepted as another name)."""

    architecture: Literal["small", "resnet18"] = "small"
    """'small': four convolution blocks (2D or 3D), trained from scratch; 'resnet18':
    torchvision ResNet18 (2D only) started from the ImageNet weights in `weights`."""

    weights: Path | None = None
    """ResNet18 ImageNet state dict (torchvision ``resnet18-*.pth``); required for
    'resnet18', unused otherwise."""

    width: PositiveInt = 16
    """Channels of the first block of the small network (doubled per block)."""

    crop_size: int | Literal["auto"] = "auto"
    """Edge of the patch around each object in pixels (per spatial axis). 'auto':
    1.4 times the objects' extent (the median over the training objects of the
    longest bounding-box edge), rounded up to a multiple of 4 and kept within
    16..512; the model stores the value used. Objects larger than the patch are
    cut, not rescaled."""

    context_dilation: int | None = Field(default=None, ge=0, le=256)
    """Mask the context: the image is multiplied by the object's mask dilated by this
    many pixels, so the network sees the object and a thin band around it only;
    null keeps the whole patch."""

    epochs: PositiveInt = 30
    """Maximum passes over the training objects."""

    batch_size: PositiveInt = 32
    """Objects per optimisation step."""

    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    """Adam learning rate."""

    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    """Adam weight decay."""

    augment: bool = True
    """Random flips and 90-degree rotations (in Y/X; flips along Z too in 3D) during
    training."""

    intensity_jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    """Random intensity changes during training: each patch channel is scaled by a
    factor in [1 - j, 1 + j] and shifted by an offset in [-j, j] (in units of the
    image's standard deviation); 0 turns it off."""

    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    """Share of the training objects (per class, seeded) held out to stop early: the
    network of the epoch with the lowest validation loss is kept. 0 trains all
    epochs on every object."""

    patience: PositiveInt = 5
    """Stop after this many epochs without a lower validation loss."""

    class_weight: Literal["balanced"] | None = "balanced"
    """Weight the loss inversely to the class counts, or not at all (null)."""

    seed: int | None = Field(default=None, ge=0)
    """Random seed for initialisation, the validation split, shuffling and
    augmentation; left empty, one is drawn and saved in the model."""

    threads: PositiveInt | None = None
    """Torch threads; left empty, the CPUs this process may use. Runs with the same
    seed and thread count give identical models."""

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return "cnn"

    @field_validator("crop_size")
    @classmethod
    def _crop(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 16 <= value <= 512:
            raise ValueError(
                f"crop_size {value} is outside 16..512; give a patch edge in pixels "
                "or 'auto'"
            )
        return value

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

    report: bool = True
    """Write the training report next to the model: ``{model}_report.json`` and
    ``.png`` (objects per class, feature importances, cross-validation by object and
    by image for the forest; the validation curve for the network) and the table of
    the training objects' features, ``{model}_features.csv`` (or ``.parquet``)."""

    cv_folds: int = Field(default=5, ge=2, le=20)
    """Folds of the object-wise cross-validation in the report (fewer when a class
    has fewer objects)."""

    table_format: Literal["csv", "parquet"] = "csv"
    """Format of the training feature table; parquet needs pyarrow."""

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

    table_features: bool = True
    """Add each object's measurements to its table row: the model's features for a
    forest; shape and intensity measurements (the forest's defaults) for a network."""

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
    """Where the CSV/JSON scores (and figures) are written."""

    figures: bool = False
    """Also write, per image, a PNG of the objects coloured by predicted class with
    mistakes outlined, and the confusion-matrix plot."""

    images: list[str] | None = None
    """Images shown under the objects in the figures (template or sorted files);
    default: the predict section's inputs, else none (objects on black)."""

    _as_lists = field_validator(
        "predictions",
        "instances",
        "ground_truth_instances",
        "ground_truth_classes",
        "images",
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

    @field_validator("classifier", mode="before")
    @classmethod
    def _default_kind(cls, value: object) -> object:
        # settings without a kind are the forest's (its defaults need no kind either)
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "forest", **value}
        return value

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
    if isinstance(objects.classifier, ObjectForestConfig):
        pixel = objects.classifier.features.pixel_features
        for spec in pixel.extractors if pixel and pixel.extractors != "auto" else []:
            weights = getattr(spec, "weights", None)
            if weights is not None:
                spec.weights = Path(join(weights))  # type: ignore[attr-defined]
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
            "images",
        )
        e.output_dir = Path(join(e.output_dir))
    return objects
