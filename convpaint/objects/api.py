"""Orchestration of the object commands: segment, train, predict, evaluate, info.

Everything here returns data and never prints; :mod:`convpaint.cli_objects` formats.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint import progress
from convpaint.config import Config, FeatureConfig
from convpaint.config.objects import (
    ObjectCNNConfig,
    ObjectFeatureConfig,
    ObjectForestConfig,
    ObjectsConfig,
    ObjectTrainSection,
    OnExists,
    SegmentConfig,
    check_object_axes,
)
from convpaint.errors import ConfigError, DataError, ModelBundleError, OutputExistsError
from convpaint.io.readers import expand_inputs, file_stem

from .annotations import check_class_counts, object_classes, read_class_table
from .features import ObjectGeometry, feature_names, measure_geometry
from .inputs import ObjectInputs, stored_pixel
from .io import (
    check_on_exists,
    check_same_shape,
    default_block,
    expand_files,
    label_stem,
    map_labels_to_file,
    open_labels,
    open_volume,
    pair_files,
    spatial_axes,
    write_table,
)
from .model import ObjectModel, load_object_model, read_object_meta, save_object_model
from .scores import (
    ObjectScores,
    format_scores,
    match_objects,
    pool_scores,
    score_objects,
    write_scores,
)
from .segment import SegmentStats, label_mask

__all__ = [
    "ObjectPredictResult",
    "ObjectTrainResult",
    "SegmentResult",
    "check",
    "evaluate",
    "evaluate_from_config",
    "model_info",
    "predict",
    "predict_from_config",
    "segment",
    "segment_from_config",
    "train",
]

logger = logging.getLogger(__name__)

_SEGMENT_SUFFIXES = ("_labels", "_mask", "_probabilities")
#: Formats whose third axis is colour, never Z.
_FLAT = (".png", ".jpg", ".jpeg", ".bmp")


def _threads(requested: int | None = None) -> int:
    from convpaint.api import available_cpus

    return requested or available_cpus()


def _shard(files: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    if shard is None:
        return files
    index, count = shard
    return files[index::count]


def _objects(config: Config) -> ObjectsConfig:
    if config.objects is None:
        raise ConfigError(
            "the config has no objects section; add objects: {train: ..., predict: ...} "
            "(see the README, section Objects)"
        )
    return config.objects


# --------------------------------------------------------------------------- segment
@dataclass
class SegmentResult:
    """One segmented mask."""

    input: Path
    output: Path
    skipped: bool = False
    seconds: float = 0.0
    stats: SegmentStats | None = None


class _Foreground:
    """A lazy boolean view of a mask: selected values, a threshold, or non-zero."""

    def __init__(self, raw: Any, params: SegmentConfig, path: Path) -> None:
        if raw.ndim not in (2, 3) or (raw.ndim == 3 and path.suffix.lower() in _FLAT):
            raise DataError(
                f"mask '{path}' has shape {tuple(raw.shape)}; segment takes one 2D (Y, X) "
                "or 3D (Z, Y, X) label image or probability map (one channel)"
            )
        if (
            params.threshold is None
            and not np.issubdtype(raw.dtype, np.integer)
            and raw.dtype != bool
        ):
            raise DataError(
                f"mask '{path}' holds {raw.dtype} values; set objects.segment.threshold "
                "(e.g. 0.5) for probability maps, or give an integer label image"
            )
        self.raw, self.params = raw, params
        self.shape = tuple(int(s) for s in raw.shape)

    def __getitem__(self, where: tuple[slice, ...]) -> np.ndarray:
        block = np.asarray(self.raw[where])
        if self.params.threshold is not None:
            return block > self.params.threshold
        if self.params.foreground is not None:
            return np.isin(block, self.params.foreground)
        return block != 0


def segment(
    inputs: Sequence[str],
    output_dir: Path | str,
    params: SegmentConfig | None = None,
    *,
    on_exists: OnExists | None = None,
    shard: tuple[int, int] | None = None,
) -> list[SegmentResult]:
    """Label the objects of every input mask and write instance masks.

    Parameters
    ----------
    inputs : sequence of str
        Mask files, folders or globs (label images or probability maps, 2D or 3D).
    output_dir : path
        Folder for ``{stem}_instances.tif`` (or ``.zarr``).
    params : SegmentConfig, optional
        Foreground rule, connectivity, size filter, split, block size, format, name.
    on_exists : {"error", "skip", "overwrite"}, optional
        Overrides ``params.on_exists``.
    shard : (index, count), optional
        Process every ``count``-th input starting at ``index``.

    Raises
    ------
    DataError, OutputExistsError
    """
    params = params or SegmentConfig()
    policy = on_exists or params.on_exists
    files = _shard(expand_inputs(list(inputs), what="objects.segment.inputs"), shard)
    suffix = ".tif" if params.format == "tif" else ".zarr"
    plan = []
    for path in files:
        name = params.output_name.format(stem=label_stem(path, _SEGMENT_SUFFIXES))
        plan.append((path, Path(output_dir) / f"{name}{suffix}"))
    outputs = [out for _, out in plan]
    if len(set(outputs)) != len(outputs):
        raise OutputExistsError(
            "two inputs map to the same output name; rename them or change "
            "objects.segment.output_name"
        )
    if policy == "error":
        for _, out in plan:
            check_on_exists([out], policy)
    results = []
    with progress.bar(len(plan), "segment", "file") as bar:
        for path, out in plan:
            if not check_on_exists([out], policy):
                results.append(SegmentResult(path, out, skipped=True))
                bar.update(1)
                continue
            results.append(_segment_one(path, out, params))
            bar.update(1)
    return results


def _segment_one(path: Path, out: Path, params: SegmentConfig) -> SegmentResult:
    """Label one mask file into ``out``."""
    t0 = time.perf_counter()
    raw, meta, stack = _open_mask(path)
    with stack:
        raw = _one_channel(raw, meta.axes, params, path)
        fg = _Foreground(raw, params, path)
        size = params.block_size or default_block(raw.ndim)
        block = tuple([size] * raw.ndim if isinstance(size, int) else size)
        if len(block) != raw.ndim:
            raise ConfigError(
                f"objects.segment.block_size has {len(block)} values but mask "
                f"'{path}' has {raw.ndim} dimensions; give one value per axis"
            )
        grid = [-(-n // b) for n, b in zip(fg.shape, block, strict=True)]
        with progress.bar(2 * int(np.prod(grid)), path.name, "block") as blocks:
            stats = label_mask(
                fg,
                out,
                connectivity=params.connectivity,
                min_size=params.min_size,
                max_size=params.max_size,
                split_min_distance=params.split.min_distance if params.split else None,
                block=block,
                fmt=params.format,
                attrs={"source": str(path)},
                progress=blocks,
            )
    logger.info("%s: %d objects -> %s", path, stats.n_objects, out)
    return SegmentResult(path, out, seconds=time.perf_counter() - t0, stats=stats)


def _one_channel(raw: Any, axes: str | None, params: SegmentConfig, path: Path) -> Any:
    """The mask without its channel axis (``params.channel``) and a single time
    frame, for files that declare their axes (e.g. ``{stem}_probabilities.tif``)."""
    if axes and "C" in axes:
        c = axes.index("C")
        n = int(raw.shape[c])
        if params.channel is None and n > 1:
            raise DataError(
                f"mask '{path}' has {n} channels (axes {axes}, shape "
                f"{tuple(raw.shape)}); set objects.segment.channel (--channel) to the "
                "one to segment, e.g. the class's probability channel counted from 0"
            )
        channel = params.channel or 0
        if channel >= n:
            raise DataError(
                f"objects.segment.channel is {channel} but mask '{path}' has {n} "
                f"channel(s) (axes {axes}); count channels from 0"
            )
        raw = raw[(slice(None),) * c + (channel,)]
        axes = axes.replace("C", "")
    elif params.channel is not None:
        raise DataError(
            f"objects.segment.channel is {params.channel} but mask '{path}' declares "
            f"no channel axis (axes {axes or 'not declared'}, shape "
            f"{tuple(raw.shape)}); leave channel unset for one-channel masks"
        )
    if axes and "T" in axes and raw.shape[axes.index("T")] == 1:
        raw = raw[(slice(None),) * axes.index("T") + (0,)]
    return raw


def _open_mask(path: Path) -> tuple[Any, Any, Any]:
    """A mask file as a lazy array in its own layout (any numeric dtype), its file
    metadata, and the stack that closes it."""
    from contextlib import ExitStack

    from convpaint.io.readers import _open_raw

    stack = ExitStack()
    try:
        raw, meta = _open_raw(path, stack)
    except BaseException:
        stack.close()
        raise
    return raw, meta, stack


def segment_from_config(
    config: Config,
    *,
    on_exists: OnExists | None = None,
    shard: tuple[int, int] | None = None,
) -> list[SegmentResult]:
    """Run ``objects.segment``; its inputs default to the pixel predict section's outputs."""
    objects = _objects(config)
    params = objects.segment
    if params is None:
        raise ConfigError(
            "the config has no objects.segment section; add objects: {segment: {inputs: "
            "[...], output_dir: instances}}"
        )
    inputs = params.inputs
    if inputs is None:
        if config.predict is None:
            raise ConfigError(
                "objects.segment.inputs is missing and there is no predict section to "
                "take the predicted label images from"
            )
        from convpaint.api import plan_prediction

        p = config.predict
        plan = plan_prediction(
            p.inputs, p.output_dir, fmt=p.format, output_name=p.output_name
        )
        inputs = [str(paths.labels) for _, paths in plan]
    return segment(inputs, params.output_dir, params, on_exists=on_exists, shard=shard)


# --------------------------------------------------------------------------- training
@dataclass
class ObjectTrainResult:
    """What objects training produced."""

    model: Path
    kind: str
    objects_per_class: dict[int, int]
    n_images: int
    n_unlabelled: int
    seconds: float
    n_features: int | None = None
    top_features: list[tuple[str, float]] = field(default_factory=list)
    report: list[Path] = field(default_factory=list)
    """The report JSON and PNG and the feature table (empty with ``report: false``)."""
    cross_validation: dict[str, float] = field(default_factory=dict)
    """Macro-F1 of the report's estimates (``by_object``, ``by_image`` or
    ``validation``) that could be computed."""


def _resolve_seed(classifier: ObjectForestConfig | ObjectCNNConfig) -> int:
    if classifier.seed is None:
        classifier.seed = secrets.randbelow(2**31)
    return classifier.seed


@dataclass
class _TrainingImage:
    """One training image with its mask, classes and labelled objects."""

    image: Path
    mask: Path
    classes_path: Path
    geometry: ObjectGeometry
    """The labelled objects only."""
    classes: NDArray[np.int64]


@dataclass
class _TrainingSet:
    """Inputs and classes of every labelled training object."""

    x: np.ndarray
    y: NDArray[np.int64]
    image: NDArray[np.int64]
    """Index of each object's training image."""
    items: list[_TrainingImage]
    n_channels: int
    n_unlabelled: int
    files: list[dict[str, Any]]


def _scan_training(
    t: ObjectTrainSection,
) -> tuple[list[_TrainingImage], int, int, list[dict[str, Any]]]:
    """Open every training image with its mask and classes and check them; keep the
    labelled objects' geometry. Everything the user can get wrong fails here, before
    any measurement."""
    from convpaint.runtime import file_sha256

    images = expand_inputs(t.images, what="objects.train.images")
    stems = [file_stem(p) for p in images]
    masks = pair_files(images, t.instances, what="objects.train.instances", stems=stems)
    tables = pair_files(images, t.classes, what="objects.train.classes", stems=stems)
    block = default_block(len(spatial_axes(t.axes)))
    items, files = [], []
    first: tuple[Path, int] | None = None
    n_unlabelled = 0
    for image, mask, table in zip(images, masks, tables, strict=True):
        with open_volume(image, t.axes) as vol:
            if first is not None and vol.n_channels != first[1]:
                raise DataError(
                    f"training image '{image}' has {vol.n_channels} channels but "
                    f"'{first[0]}' has {first[1]}; all training images need the "
                    "same channels"
                )
            first = first or (image, vol.n_channels)
            labels, stack = open_labels(mask)
            with stack:
                check_same_shape(
                    labels, vol.spatial_shape, labels_path=mask, image_path=image
                )
                geometry = measure_geometry(labels, block)
                classes = object_classes(
                    geometry.ids,
                    labels,
                    table,
                    mask_path=mask,
                    block=block,
                    unlabelled=t.unlabelled,
                )
        keep = classes > 0
        n_unlabelled += int((~keep).sum())
        items.append(
            _TrainingImage(image, mask, table, geometry.subset(keep), classes[keep])
        )
        named = {"image": image, "instances": mask, "classes": table}
        files.append(
            {
                **{k: str(v) for k, v in named.items()},
                "sha256": {k: file_sha256(v) for k, v in named.items()},
            }
        )
    y = np.concatenate([it.classes for it in items])
    check_class_counts(y, f"{len(images)} training image(s)")
    assert first is not None
    return items, first[1], n_unlabelled, files


def _collect_training(t: ObjectTrainSection, inputs: ObjectInputs) -> _TrainingSet:
    """Check the training data, then measure (or cut patches of) the labelled
    objects; resolves ``crop_size: auto`` from the training objects."""
    items, n_channels, n_unlabelled, files = _scan_training(t)
    classifier = inputs.classifier
    if isinstance(classifier, ObjectCNNConfig) and classifier.crop_size == "auto":
        from .cnn import auto_crop_size

        low = np.concatenate([it.geometry.low for it in items])
        high = np.concatenate([it.geometry.high for it in items])
        classifier.crop_size = auto_crop_size(low, high)
        logger.info("patch size %d px from the objects' extent", classifier.crop_size)
    xs = []
    with progress.bar(len(items), "objects", "file") as bar:
        for it in items:
            if len(it.geometry):
                with open_volume(it.image, t.axes) as vol:
                    labels, stack = open_labels(it.mask)
                    with stack:
                        xs.append(inputs(vol, labels, it.geometry))
            bar.update(1)
    return _TrainingSet(
        x=np.concatenate(xs),
        y=np.concatenate([it.classes for it in items]),
        image=np.concatenate(
            [np.full(len(it.classes), i, np.int64) for i, it in enumerate(items)]
        ),
        items=items,
        n_channels=n_channels,
        n_unlabelled=n_unlabelled,
        files=files,
    )


def _training_table(
    data: _TrainingSet, names: list[str] | None, ndim: int, axes: str
) -> dict[str, list[Any]]:
    """Columns of the training objects' table: image, object id, class, centroid,
    area and (forest) the features."""
    columns: dict[str, list[Any]] = {
        "image": [str(it.image) for it in data.items for _ in it.classes],
        "object_id": np.concatenate([it.geometry.ids for it in data.items]).tolist(),
        "class": data.y.tolist(),
    }
    centroid = np.concatenate([it.geometry.centroid for it in data.items])
    for a, name in enumerate(spatial_axes(axes)):
        columns[f"centroid_{name.lower()}"] = centroid[:, a].round(2).tolist()
    columns["area"] = np.concatenate([it.geometry.area for it in data.items]).tolist()
    for i, name in enumerate(names or []):
        if name != "area":
            columns[name] = data.x[:, i].tolist()
    return columns


def _forest_cv(
    data: _TrainingSet,
    classifier: ObjectForestConfig,
    *,
    folds: int,
    seed: int,
    n_jobs: int,
) -> dict[str, Any]:
    """Cross-validation of the forest by object and by image (see the report)."""
    from .forest import fit_forest
    from .report import cross_validate_objects

    def fit_predict(x: NDArray, y: NDArray, x_test: NDArray) -> NDArray:
        nodes, _ = fit_forest(x, y, classifier, seed=seed, n_jobs=n_jobs)
        classes = np.unique(y)
        return classes[nodes.predict_proba(x_test).argmax(axis=1)]

    return cross_validate_objects(
        data.x,
        data.y,
        data.image,
        fit_predict,
        n_folds=folds,
        seed=seed,
        image_names=[it.image.name for it in data.items],
    )


def train(config: Config, *, overwrite: bool = False) -> ObjectTrainResult:
    """Train an object classifier from ``objects.train`` and write the model file.

    With ``objects.train.report`` (default), also writes ``{model}_report.json`` /
    ``.png`` and ``{model}_features.csv`` next to the model.

    Raises
    ------
    ConfigError, DataError, OutputExistsError, WeightsError
    """
    from convpaint.runtime import versions as _versions

    t0 = time.perf_counter()
    objects = _objects(config).model_copy(deep=True)
    t = objects.train
    if t is None:
        raise ConfigError(
            "the config has no objects.train section; add objects: {train: {images, "
            "instances, classes, model}}"
        )
    if t.model.exists() and not overwrite:
        raise OutputExistsError(
            f"model '{t.model}' exists; pass --overwrite to replace it or change "
            "objects.train.model"
        )
    classifier = objects.classifier
    seed = _resolve_seed(classifier)
    ndim = len(spatial_axes(t.axes))
    threads = _threads(getattr(classifier, "threads", None))
    inputs = ObjectInputs(classifier, default_block(ndim), threads)
    data = _collect_training(t, inputs)
    class_values = sorted(int(c) for c in np.unique(data.y))
    counts = {c: int((data.y == c).sum()) for c in class_values}
    logger.info("training on %d objects: %s", len(data.y), counts)
    meta: dict[str, Any] = {
        "kind": classifier.kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": class_values,
        "axes": t.axes,
        "ndim": ndim,
        "n_channels": data.n_channels,
        "training": {
            "files": data.files,
            "objects_per_class": {str(c): n for c, n in counts.items()},
            "unlabelled_objects": data.n_unlabelled,
            "seed": seed,
        },
    }
    result = ObjectTrainResult(
        model=t.model,
        kind=classifier.kind,
        objects_per_class=counts,
        n_images=len(data.files),
        n_unlabelled=data.n_unlabelled,
        seconds=0.0,
    )
    report: dict[str, Any] = {
        "kind": classifier.kind,
        "model": str(t.model),
        "n_images": len(data.items),
        "n_objects": len(data.y),
        "objects_per_class": counts,
        "objects_per_image": {it.image.name: len(it.classes) for it in data.items},
        "unlabelled_objects": data.n_unlabelled,
        "seed": seed,
    }
    names: list[str] | None = None
    if isinstance(classifier, ObjectForestConfig):
        from .forest import fit_forest
        from .report import importance_groups

        names = inputs.names(data.n_channels, ndim)
        nodes, importance = fit_forest(
            data.x, data.y, classifier, seed=seed, n_jobs=threads
        )
        report["training_seconds"] = time.perf_counter() - t0
        arrays = {f"forest/{k}.npy": v for k, v in nodes.arrays().items()}
        meta["feature_names"] = names
        if inputs.pixel is not None:
            meta["pixel_features"] = inputs.pixel
        meta["training"]["feature_importances"] = dict(
            zip(names, importance.round(6).tolist(), strict=True)
        )
        result.n_features = len(names)
        result.top_features = [
            (names[i], float(importance[i])) for i in np.argsort(importance)[::-1][:10]
        ]
        if t.report:
            report["feature_importance"] = importance_groups(names, importance)
            report["cross_validation"] = _forest_cv(
                data, classifier, folds=t.cv_folds, seed=seed, n_jobs=threads
            )
            for key, cv in report["cross_validation"].items():
                if "macro_f1" in cv:
                    result.cross_validation[key] = cv["macro_f1"]
    else:
        from .cnn import train_cnn
        from .report import classification_scores

        state, arch, history = train_cnn(
            data.x,
            np.searchsorted(class_values, data.y),
            classifier,
            n_classes=len(class_values),
            seed=seed,
            threads=threads,
        )
        report["training_seconds"] = time.perf_counter() - t0
        arrays = {f"cnn/{k}.npy": v for k, v in state.items()}
        meta["network"] = arch
        meta["crop_size"] = classifier.crop_size
        meta["training"]["loss"] = [round(v, 6) for v in history["loss"]]
        meta["training"]["validation_loss"] = [round(v, 6) for v in history["val_loss"]]
        meta["training"]["epochs_run"] = history["epochs_run"]
        meta["training"]["best_epoch"] = history.get("best_epoch")
        meta["training"]["torch_threads"] = threads
        if "weights_sha256" in history:
            meta["training"]["imagenet_weights_sha256"] = history["weights_sha256"]
        report["history"] = {
            k: history[k]
            for k in ("loss", "val_loss", "val_accuracy", "epochs_run", "n_train")
        }
        report["history"]["best_epoch"] = history.get("best_epoch")
        report["patch_size"] = classifier.crop_size
        if "validation" in history:
            v = history["validation"]
            scores = classification_scores(
                np.asarray(class_values)[v["true"]],
                np.asarray(class_values)[v["predicted"]],
                class_values,
            )
            report["validation"] = {
                "method": "held-out share of the training objects (per class, "
                "seeded); scores of the network kept (lowest validation loss)",
                **scores,
            }
            result.cross_validation["validation"] = scores["macro_f1"]
        else:
            report["validation"] = {
                "skipped_reason": "no validation share (validation_fraction 0, or "
                "classes too small to spare objects)"
            }
    # the resolved settings: drawn seed, patch size, explicit pixel extractors
    if inputs.pixel is not None and isinstance(classifier, ObjectForestConfig):
        pixel = classifier.features.pixel_features
        assert pixel is not None
        classifier.features.pixel_features = FeatureConfig.model_validate(
            {**pixel.model_dump(mode="json"), "extractors": inputs.pixel["extractors"]}
        )
    meta["classifier"] = classifier.model_dump(mode="json")
    meta["config"] = objects.model_dump(mode="json")
    meta["versions"] = _versions()
    save_object_model(t.model, meta, arrays)
    logger.info("object model written to %s", t.model)
    if t.report:
        from .report import report_paths, write_training_report

        json_path, png_path, table_path = report_paths(t.model, t.table_format)
        write_training_report(report, json_path, png_path)
        write_table(table_path, _training_table(data, names, ndim, t.axes))
        result.report = [json_path, png_path, table_path]
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- predict
@dataclass
class ObjectPredictResult:
    """One classified image."""

    input: Path
    outputs: list[Path]
    skipped: bool = False
    seconds: float = 0.0
    counts: dict[int, int] = field(default_factory=dict)


def _outputs(
    image: Path, output_dir: Path, fmt: str, table_format: str
) -> tuple[Path, Path]:
    stem = file_stem(image)
    suffix = ".tif" if fmt == "tif" else ".zarr"
    return (
        output_dir / f"{stem}_objclass{suffix}",
        output_dir / f"{stem}_objects.{table_format}",
    )


def _model_inputs(model: ObjectModel, threads: int) -> ObjectInputs:
    """How the model measures objects, rebuilt from its file."""
    from pydantic import TypeAdapter

    from convpaint.config.objects import ObjectClassifierConfig

    meta = model.meta
    try:
        classifier = TypeAdapter(ObjectClassifierConfig).validate_python(
            meta["classifier"]
        )
    except Exception as err:
        raise ModelBundleError(
            f"model '{model.path}' holds classifier settings this convpaint cannot read "
            f"({err}); use the convpaint version it was trained with"
        ) from err
    if isinstance(classifier, ObjectCNNConfig) and not isinstance(
        classifier.crop_size, int
    ):
        classifier.crop_size = int(meta["crop_size"])
    return ObjectInputs(
        classifier,
        default_block(meta["ndim"]),
        threads,
        pixel=stored_pixel(meta, model.path),
    )


def _check_feature_names(
    model: ObjectModel, inputs: ObjectInputs, n_channels: int, source: Path
) -> list[str]:
    """The forest's feature names, refused when this image or convpaint would give
    other features than the model was trained with."""
    names = inputs.names(n_channels, model.meta["ndim"])
    stored = model.meta["feature_names"]
    if names != stored:
        diff = next(
            (f"'{a}' vs '{b}'" for a, b in zip(stored, names, strict=False) if a != b),
            f"{len(stored)} vs {len(names)} columns",
        )
        raise ModelBundleError(
            f"model '{model.path}' was trained with {len(stored)} features but image "
            f"'{source}' gives {len(names)} (first difference: {diff}); predict images "
            "like the training images, with the convpaint version that trained the "
            "model, or retrain it"
        )
    return names


def _predict_probabilities(
    model: ObjectModel,
    predictor: Any,
    inputs: ObjectInputs,
    x: NDArray[np.float32],
    *,
    threads: int,
) -> NDArray[np.float64]:
    """Class probabilities ``(n_objects, K)`` from the model's forest or network."""
    if model.kind == "forest":
        return predictor.predict_proba(x)
    from .cnn import predict_cnn

    return predict_cnn(predictor, x, n_classes=len(model.classes), threads=threads)


def _summary_path(output_dir: Path, shard: tuple[int, int] | None) -> Path:
    if shard is None:
        return output_dir / "objects_summary.csv"
    return output_dir / f"objects_summary_shard{shard[0]}of{shard[1]}.csv"


def _counts_from_table(path: Path) -> dict[int, int]:
    classes = read_class_table(path)
    values, counts = np.unique(list(classes.values()), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _predict_one(
    model: ObjectModel,
    predictor: Any,
    inputs: ObjectInputs,
    image: Path,
    mask: Path,
    out: Path,
    table: Path,
    *,
    axes: str,
    fmt: Literal["tif", "zarr"],
    threads: int,
    table_features: bool,
) -> ObjectPredictResult:
    """Classify the objects of one image; write its objclass image and table."""
    t0 = time.perf_counter()
    meta = model.meta
    classes = np.asarray(model.classes, np.int64)
    block = default_block(meta["ndim"])
    names: list[str] = []
    features = np.zeros((0, 0), np.float32)
    with open_volume(image, axes) as vol:
        if vol.n_channels != meta["n_channels"]:
            raise DataError(
                f"image '{image}' has {vol.n_channels} channel(s) but model "
                f"'{model.path}' was trained on {meta['n_channels']}; predict "
                f"images like the training images (axes {meta['axes']})"
            )
        if model.kind == "forest":
            names = _check_feature_names(model, inputs, vol.n_channels, image)
        labels, stack = open_labels(mask)
        with stack:
            check_same_shape(
                labels, vol.spatial_shape, labels_path=mask, image_path=image
            )
            geometry = measure_geometry(labels, block)
            proba = np.zeros((0, len(classes)))
            if len(geometry):
                x = inputs(vol, labels, geometry)
                proba = _predict_probabilities(
                    model, predictor, inputs, x, threads=threads
                )
                if model.kind == "forest":
                    features = x
                elif table_features:
                    shown = ObjectFeatureConfig()
                    names = feature_names(shown, vol.n_channels, meta["ndim"])
                    features = inputs.features(vol, labels, geometry, shown)
            else:
                logger.warning("instances '%s' contain no object", mask)
            predicted = classes[proba.argmax(axis=1)] if len(proba) else classes[:0]
            map_labels_to_file(
                labels,
                geometry.ids,
                predicted,
                out,
                fmt=fmt,
                block=block,
                attrs={"source": str(image), "instances": str(mask)},
            )
    columns: dict[str, Any] = {
        "object_id": geometry.ids.tolist(),
        "class": predicted.tolist(),
    }
    for i, c in enumerate(classes):
        columns[f"probability_{c}"] = proba[:, i].round(6).tolist()
    for a, name in enumerate(spatial_axes(axes)):
        columns[f"centroid_{name.lower()}"] = geometry.centroid[:, a].round(2).tolist()
    columns["area"] = geometry.area.tolist()
    if table_features:
        for i, name in enumerate(names):
            if name != "area":  # the pixel count, already there
                columns[name] = features[:, i].tolist() if len(features) else []
    write_table(table, columns)
    values, counts = np.unique(predicted, return_counts=True)
    return ObjectPredictResult(
        image,
        [out, table],
        seconds=time.perf_counter() - t0,
        counts=dict(zip(values.tolist(), counts.tolist(), strict=True)),
    )


def predict(
    model_path: Path | str,
    inputs: Sequence[str],
    output_dir: Path | str,
    *,
    instances: Sequence[str],
    axes: str | None = None,
    fmt: Literal["tif", "zarr"] = "tif",
    table_format: Literal["csv", "parquet"] = "csv",
    on_exists: OnExists = "error",
    shard: tuple[int, int] | None = None,
    threads: int | None = None,
    table_features: bool = True,
) -> list[ObjectPredictResult]:
    """Classify the objects of every input image with an object model.

    Writes per image ``{stem}_objclass`` (each object's pixels = its class),
    ``{stem}_objects.csv`` (object id, class, class probabilities, centroid, area
    and, with ``table_features``, the object's measurements), and per run
    ``objects_summary.csv`` (objects per class per image).

    Raises
    ------
    ConfigError, DataError, ModelBundleError, OutputExistsError
    """
    output_dir = Path(output_dir)
    files = _shard(expand_inputs(list(inputs), what="objects.predict.inputs"), shard)
    masks = pair_files(
        files,
        list(instances),
        what="objects.predict.instances",
        stems=[file_stem(p) for p in files],
    )
    model = load_object_model(model_path)
    meta = model.meta
    try:
        use_axes = check_object_axes(axes or meta["axes"])
    except ValueError as err:
        raise ConfigError(f"objects.predict.axes: {err}") from err
    if len(spatial_axes(use_axes)) != meta["ndim"]:
        raise DataError(
            f"axes '{use_axes}' are {len(spatial_axes(use_axes))}D but model "
            f"'{model.path}' was trained on {meta['ndim']}D images (axes {meta['axes']})"
        )
    plan = [
        (f, m, *_outputs(f, output_dir, fmt, table_format))
        for f, m in zip(files, masks, strict=True)
    ]
    seen: dict[Path, Path] = {}
    for f, _, out, _ in plan:
        if out in seen:
            raise OutputExistsError(
                f"inputs '{seen[out]}' and '{f}' would both write '{out}'; rename one"
            )
        seen[out] = f
    if on_exists == "error":
        for _, _, out, tab in plan:
            check_on_exists([out, tab], on_exists)
    n_threads = _threads(threads)
    predictor = model.network() if model.kind == "cnn" else model.forest()
    inputs = _model_inputs(model, n_threads)
    classes = model.classes
    results = []
    with progress.bar(len(plan), "objects", "file") as bar:
        for image, mask, out, tab in plan:
            # "error" was checked above; with "skip", a half-finished input (objclass
            # written, table not) is predicted again
            if on_exists == "skip" and out.exists() and tab.exists():
                results.append(
                    ObjectPredictResult(
                        image, [out, tab], skipped=True, counts=_counts_from_table(tab)
                    )
                )
                bar.update(1)
                continue
            results.append(
                _predict_one(
                    model,
                    predictor,
                    inputs,
                    image,
                    mask,
                    out,
                    tab,
                    axes=use_axes,
                    fmt=fmt,
                    threads=n_threads,
                    table_features=table_features,
                )
            )
            bar.update(1)
    summary = {"image": [str(r.input) for r in results]}
    summary["objects"] = [sum(r.counts.values()) for r in results]
    for c in classes:
        summary[f"class_{c}"] = [r.counts.get(c, 0) for r in results]
    path = write_table(_summary_path(output_dir, shard), summary)
    for r in results:
        r.outputs.append(path)
    return results


def predict_from_config(
    config: Config,
    *,
    on_exists: OnExists | None = None,
    shard: tuple[int, int] | None = None,
) -> list[ObjectPredictResult]:
    """Run ``objects.predict`` (see :func:`predict`)."""
    p = _objects(config).predict
    if p is None:
        raise ConfigError(
            "the config has no objects.predict section; add objects: {predict: {inputs, "
            "instances, output_dir}}"
        )
    assert p.model is not None  # filled from objects.train.model when the config loads
    return predict(
        p.model,
        p.inputs,
        p.output_dir,
        instances=p.instances,
        axes=p.axes,
        fmt=p.format,
        table_format=p.table_format,
        table_features=p.table_features,
        on_exists=on_exists or p.on_exists,
        shard=shard,
    )


# --------------------------------------------------------------------------- evaluate
def evaluate(
    predictions: Sequence[str],
    ground_truth_instances: Sequence[str],
    ground_truth_classes: Sequence[str],
    output_dir: Path | str,
    *,
    instances: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    figures: bool = False,
    images: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Object-level scores of prediction tables against ground-truth objects.

    Parameters
    ----------
    predictions : sequence of str
        Tables ``{stem}_objects.csv`` (columns ``object_id``, ``class``).
    ground_truth_instances, ground_truth_classes : sequence of str
        A ``{stem}`` template or files paired in sorted order.
    output_dir : path
        Receives ``objects_evaluation.csv``, ``.json`` and
        ``objects_evaluation_confusion.csv`` (and the figures).
    instances : sequence of str, optional
        The instance masks the predictions refer to; default: the ground-truth masks
        (the prediction classified the ground-truth objects).
    iou_threshold : float
        Matching threshold (>= 0.5).
    figures : bool
        Also write ``{stem}_objects.png`` per image (objects coloured by predicted
        class, mistakes outlined) and ``objects_confusion.png``.
    images : sequence of str, optional
        Images shown under the objects in the figures (template or sorted files).

    Returns
    -------
    dict
        ``{"scores": [ObjectScores...], "files": [Path...], "table": str}``.

    Raises
    ------
    DataError
        Missing or unpaired files, shapes that differ, ids a table lists that its
        mask lacks.
    """
    tables = expand_files(list(predictions), what="predictions")
    stems = [label_stem(p, ("_objects",)) for p in tables]
    gt_masks = pair_files(
        tables, list(ground_truth_instances), what="ground truth instances", stems=stems
    )
    gt_tables = pair_files(
        tables, list(ground_truth_classes), what="ground truth classes", stems=stems
    )
    pr_masks = (
        pair_files(tables, list(instances), what="instances", stems=stems)
        if instances
        else gt_masks
    )
    backgrounds: list[Path | None] = (
        list(pair_files(tables, list(images), what="images", stems=stems))
        if figures and images
        else [None] * len(tables)
    )
    out_dir = Path(output_dir)
    scores: list[ObjectScores] = []
    files: list[Path] = []
    for table, gt_mask, gt_table, pr_mask, stem, background in zip(
        tables, gt_masks, gt_tables, pr_masks, stems, backgrounds, strict=True
    ):
        gt_labels, gt_stack = open_labels(gt_mask, what="ground truth instances")
        with gt_stack:
            block = default_block(gt_labels.ndim)
            geometry = measure_geometry(gt_labels, block)
            gt_cls = object_classes(
                geometry.ids,
                gt_labels,
                gt_table,
                mask_path=gt_mask,
                block=block,
                unlabelled="skip",
            )
            truth = {
                int(i): int(c)
                for i, c in zip(geometry.ids, gt_cls, strict=True)
                if c > 0
            }
            predicted = read_class_table(table)
            if pr_mask == gt_mask:
                matches = (geometry.ids, geometry.ids)
                pr_ids = set(geometry.ids.tolist())
            else:
                pr_labels, pr_stack = open_labels(pr_mask)
                with pr_stack:
                    check_same_shape(
                        pr_labels,
                        tuple(gt_labels.shape),
                        labels_path=pr_mask,
                        image_path=gt_mask,
                    )
                    matches = match_objects(
                        gt_labels, pr_labels, block=block, iou_threshold=iou_threshold
                    )
                    pr_ids = set(measure_geometry(pr_labels, block).ids.tolist())
            unknown = sorted(set(predicted) - pr_ids)
            if unknown:
                raise DataError(
                    f"prediction table '{table}' lists object ids that are not in "
                    f"'{pr_mask}': {unknown[:5]}; evaluate a table with the instance "
                    "mask it was predicted on"
                )
            # predicted objects matched to ground-truth objects without a class are
            # not scored
            unscored = {p for g, p in zip(*matches, strict=True) if int(g) not in truth}
            predicted = {k: v for k, v in predicted.items() if k not in unscored}
            score = score_objects(
                stem, truth, predicted, matches, sorted(set(truth.values()))
            )
            scores.append(score)
            if figures:
                files.append(
                    _evaluation_figure(
                        out_dir / f"{stem}_objects.png",
                        score,
                        truth,
                        predicted,
                        matches,
                        gt_labels,
                        pr_mask,
                        same=pr_mask == gt_mask,
                        background=background,
                    )
                )
    files = write_scores(scores, out_dir) + files
    if figures:
        from convpaint.evaluation import plot_confusion

        pooled = pool_scores(scores)
        files.append(
            plot_confusion(
                np.asarray(pooled.confusion).reshape(
                    len(pooled.classes), len(pooled.classes)
                ),
                pooled.classes,
                out_dir / "objects_confusion.png",
            )
        )
    return {"scores": scores, "files": files, "table": format_scores(scores)}


def _evaluation_figure(
    path: Path,
    score: ObjectScores,
    truth: dict[int, int],
    predicted: dict[int, int],
    matches: tuple[NDArray[np.int64], NDArray[np.int64]],
    gt_labels: Any,
    pr_mask: Path,
    *,
    same: bool,
    background: Path | None,
) -> Path:
    """One image's figure: objects coloured by predicted class, mistakes outlined."""
    from convpaint.io.readers import open_image

    from .figures import display_plane, mistakes, plane_step, plot_objects

    step = plane_step(tuple(gt_labels.shape))
    gt_plane = display_plane(gt_labels, step)
    if same:
        pr_plane = gt_plane
    else:
        pr_labels, stack = open_labels(pr_mask)
        with stack:
            pr_plane = display_plane(pr_labels, step)
    wrong, missed = mistakes(truth, predicted, matches)
    image = None
    if background is not None:
        with open_image(background, None) as src:
            data = src.data[0] if src.is_stack else src.data[0, :, 0]
            image = display_plane(data, step, channels=True)
        if image.shape[-2:] != gt_plane.shape:
            raise DataError(
                f"image '{background}' has spatial shape {tuple(data.shape[1:])} but "
                f"ground truth has {tuple(gt_labels.shape)}; give the images the "
                "predictions were made on"
            )
    title = (
        f"{score.name}: macro-F1 {score.macro_f1:.3f}, {len(wrong)} wrong or "
        f"unmatched, {len(missed)} missed"
    )
    return plot_objects(
        path,
        image=image,
        predicted_labels=pr_plane,
        predicted=predicted,
        wrong=wrong,
        truth_labels=gt_plane,
        missed=missed,
        classes=score.classes,
        title=title,
    )


def evaluate_from_config(config: Config) -> dict[str, Any]:
    """Run ``objects.evaluate``; predictions default to the ``objects.predict`` tables."""
    objects = _objects(config)
    e = objects.evaluate
    if e is None:
        raise ConfigError(
            "the config has no objects.evaluate section; add objects: {evaluate: "
            "{ground_truth_instances, ground_truth_classes}}"
        )
    predictions, instances = e.predictions, e.instances
    if predictions is None:
        p = objects.predict
        if p is None:
            raise ConfigError(
                "objects.evaluate.predictions is missing and there is no objects.predict "
                "section to take the prediction tables from"
            )
        files = expand_inputs(p.inputs, what="objects.predict.inputs")
        predictions = [
            str(_outputs(f, p.output_dir, p.format, p.table_format)[1]) for f in files
        ]
        if instances is None:
            instances = p.instances
    images = e.images
    if images is None and e.figures and objects.predict is not None:
        images = objects.predict.inputs if e.predictions is None else None
    return evaluate(
        predictions,
        e.ground_truth_instances,
        e.ground_truth_classes,
        e.output_dir,
        instances=instances,
        iou_threshold=e.iou_threshold,
        figures=e.figures,
        images=images,
    )


# --------------------------------------------------------------------------- check
def check(config: Config) -> dict[str, list[tuple[str, ...]]]:
    """What the objects section would read and write, without computing anything.

    Opens every training image, mask and class file lazily (headers only) and checks
    their pairing and shapes; plans the segment and predict outputs.

    Returns
    -------
    dict
        ``"segment"``: (mask, output, state); ``"train"``: (image, instances,
        classes, shape); ``"predict"``: (image, instances, output, state).

    Raises
    ------
    ConfigError, DataError
    """
    out: dict[str, list[tuple[str, ...]]] = {"segment": [], "train": [], "predict": []}
    objects = config.objects
    if objects is None:
        return out
    seg = objects.segment
    if seg is not None and (seg.inputs is not None or config.predict is not None):
        if seg.inputs is not None:
            masks = expand_inputs(list(seg.inputs), what="objects.segment.inputs")
        else:
            from convpaint.api import plan_prediction

            p = config.predict
            assert p is not None
            masks = [
                paths.labels
                for _, paths in plan_prediction(
                    p.inputs, p.output_dir, fmt=p.format, output_name=p.output_name
                )
            ]
        suffix = ".tif" if seg.format == "tif" else ".zarr"
        for mask in masks:
            name = seg.output_name.format(stem=label_stem(mask, _SEGMENT_SUFFIXES))
            target = seg.output_dir / f"{name}{suffix}"
            state = "exists" if target.exists() else "new"
            out["segment"].append((str(mask), str(target), state))
    t = objects.train
    if t is not None:
        images = expand_inputs(t.images, what="objects.train.images")
        stems = [file_stem(p) for p in images]
        masks = pair_files(
            images, t.instances, what="objects.train.instances", stems=stems
        )
        tables = pair_files(
            images, t.classes, what="objects.train.classes", stems=stems
        )
        for image, mask, table in zip(images, masks, tables, strict=True):
            with open_volume(image, t.axes) as vol:
                labels, stack = open_labels(mask)
                with stack:
                    check_same_shape(
                        labels, vol.spatial_shape, labels_path=mask, image_path=image
                    )
                shape = str(tuple(vol.data.shape))
            out["train"].append((str(image), str(mask), str(table), shape))
    p = objects.predict
    if p is not None:
        files = expand_inputs(p.inputs, what="objects.predict.inputs")
        masks = pair_files(
            files,
            p.instances,
            what="objects.predict.instances",
            stems=[file_stem(f) for f in files],
        )
        for image, mask in zip(files, masks, strict=True):
            image_out, table = _outputs(image, p.output_dir, p.format, p.table_format)
            state = "exists" if image_out.exists() or table.exists() else "new"
            out["predict"].append((str(image), str(mask), str(table), state))
    return out


# --------------------------------------------------------------------------- info
def model_info(path: Path | str) -> dict[str, Any]:
    """What an object model holds (reads only its metadata)."""
    meta = read_object_meta(path)
    out = {
        "file": str(path),
        "kind": meta.get("kind"),
        "created": meta.get("created"),
        "classes": meta.get("classes"),
        "axes": meta.get("axes"),
        "channels": meta.get("n_channels"),
        "classifier": meta.get("classifier"),
        "training": {
            k: v
            for k, v in meta.get("training", {}).items()
            if k != "feature_importances"
        },
        "versions": meta.get("versions"),
    }
    if meta.get("kind") == "forest":
        out["features"] = len(meta.get("feature_names", []))
        pixel = meta.get("pixel_features")
        if pixel:
            out["pixel_features"] = {
                k: pixel.get(k)
                for k in ("extractors", "dims", "normalize", "n_features")
            }
    else:
        out["network"] = meta.get("network")
        out["patch_size"] = meta.get("crop_size")
    return out
