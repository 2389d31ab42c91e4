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
from convpaint.config import Config
from convpaint.config.objects import (
    ObjectCNNConfig,
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
from .features import (
    ObjectGeometry,
    channel_statistics,
    feature_names,
    measure_features,
    measure_geometry,
)
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
    score_objects,
    write_scores,
)
from .segment import SegmentStats, label_mask

__all__ = [
    "ObjectPredictResult",
    "ObjectTrainResult",
    "SegmentResult",
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
    raw, stack = _open_mask(path)
    with stack:
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


def _open_mask(path: Path) -> tuple[Any, Any]:
    """A mask file as a lazy array in its own layout (any numeric dtype)."""
    from contextlib import ExitStack

    from convpaint.io.readers import _open_raw

    stack = ExitStack()
    try:
        raw, _ = _open_raw(path, stack)
    except BaseException:
        stack.close()
        raise
    return raw, stack


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


def _object_inputs(
    data: Any,
    labels: Any,
    geometry: ObjectGeometry,
    classifier: ObjectForestConfig | ObjectCNNConfig,
    block: Sequence[int],
    source: Path,
) -> np.ndarray:
    """Forest features or CNN crops of the given objects of one image."""
    if isinstance(classifier, ObjectForestConfig):
        f = classifier.features
        norm = channel_statistics(data) if f.normalize == "image" else None
        return measure_features(
            data, labels, geometry, f, block=block, normalization=norm, source=source
        )
    from .cnn import extract_crops

    return extract_crops(
        data,
        labels,
        geometry,
        classifier.crop_size,
        block=block,
        normalization=channel_statistics(data),
    )


def _resolve_seed(classifier: ObjectForestConfig | ObjectCNNConfig) -> int:
    if classifier.seed is None:
        classifier.seed = secrets.randbelow(2**31)
    return classifier.seed


@dataclass
class _TrainingSet:
    """Inputs and classes of every labelled training object."""

    x: np.ndarray
    y: NDArray[np.int64]
    n_channels: int
    n_unlabelled: int
    files: list[dict[str, Any]]


def _collect_training(
    t: ObjectTrainSection, classifier: ObjectForestConfig | ObjectCNNConfig
) -> _TrainingSet:
    """Open every training image with its mask and classes; measure or crop the
    labelled objects."""
    images = expand_inputs(t.images, what="objects.train.images")
    stems = [file_stem(p) for p in images]
    masks = pair_files(images, t.instances, what="objects.train.instances", stems=stems)
    tables = pair_files(images, t.classes, what="objects.train.classes", stems=stems)
    from convpaint.runtime import file_sha256 as _sha256

    block = default_block(len(spatial_axes(t.axes)))
    inputs, targets, files = [], [], []
    first: tuple[Path, int] | None = None
    n_unlabelled = 0
    with progress.bar(len(images), "objects", "file") as bar:
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
                    if keep.any():
                        inputs.append(
                            _object_inputs(
                                vol.data,
                                labels,
                                geometry.subset(keep),
                                classifier,
                                block,
                                image,
                            )
                        )
                        targets.append(classes[keep])
            named = {"image": image, "instances": mask, "classes": table}
            files.append(
                {
                    **{k: str(v) for k, v in named.items()},
                    "sha256": {k: _sha256(v) for k, v in named.items()},
                }
            )
            bar.update(1)
    y = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    check_class_counts(y, f"{len(images)} training image(s)")
    assert first is not None
    return _TrainingSet(np.concatenate(inputs), y, first[1], n_unlabelled, files)


def train(config: Config, *, overwrite: bool = False) -> ObjectTrainResult:
    """Train an object classifier from ``objects.train`` and write the model file.

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
    data = _collect_training(t, classifier)
    class_values = sorted(int(c) for c in np.unique(data.y))
    counts = {c: int((data.y == c).sum()) for c in class_values}
    ndim = len(spatial_axes(t.axes))
    logger.info("training on %d objects: %s", len(data.y), counts)
    meta: dict[str, Any] = {
        "kind": classifier.kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": class_values,
        "axes": t.axes,
        "ndim": ndim,
        "n_channels": data.n_channels,
        "classifier": classifier.model_dump(mode="json"),
        "config": objects.model_dump(mode="json"),
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
    if isinstance(classifier, ObjectForestConfig):
        from .forest import fit_forest

        names = feature_names(classifier.features, data.n_channels, ndim)
        nodes, importance = fit_forest(
            data.x, data.y, classifier, seed=seed, n_jobs=_threads()
        )
        arrays = {f"forest/{k}.npy": v for k, v in nodes.arrays().items()}
        meta["feature_names"] = names
        meta["training"]["feature_importances"] = dict(
            zip(names, importance.round(6).tolist(), strict=True)
        )
        result.n_features = len(names)
        result.top_features = [
            (names[i], float(importance[i])) for i in np.argsort(importance)[::-1][:10]
        ]
    else:
        from .cnn import train_cnn

        threads = _threads(classifier.threads)
        state, arch, history = train_cnn(
            data.x,
            np.searchsorted(class_values, data.y),
            classifier,
            n_classes=len(class_values),
            seed=seed,
            threads=threads,
        )
        arrays = {f"cnn/{k}.npy": v for k, v in state.items()}
        meta["network"] = arch
        meta["crop_size"] = classifier.crop_size
        meta["training"]["loss"] = [round(v, 6) for v in history["loss"]]
        meta["training"]["torch_threads"] = threads
        if "weights_sha256" in history:
            meta["training"]["imagenet_weights_sha256"] = history["weights_sha256"]
    meta["versions"] = _versions()
    save_object_model(t.model, meta, arrays)
    logger.info("object model written to %s", t.model)
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


def _predict_probabilities(
    model: ObjectModel,
    predictor: Any,
    data: Any,
    labels: Any,
    geometry: ObjectGeometry,
    *,
    block: Sequence[int],
    threads: int,
    source: Path,
) -> NDArray[np.float64]:
    """Class probabilities ``(n_objects, K)`` from the model's forest or network."""
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
    if isinstance(classifier, ObjectForestConfig):
        names = feature_names(
            classifier.features, int(data.shape[0]), len(geometry.shape)
        )
        if names != meta["feature_names"]:
            raise ModelBundleError(
                f"model '{model.path}' was trained with {len(meta['feature_names'])} "
                f"features but image '{source}' gives {len(names)}; predict images like "
                "the training images"
            )
    x = _object_inputs(data, labels, geometry, classifier, block, source)
    if isinstance(classifier, ObjectForestConfig):
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
    image: Path,
    mask: Path,
    out: Path,
    table: Path,
    *,
    axes: str,
    fmt: Literal["tif", "zarr"],
    threads: int,
) -> ObjectPredictResult:
    """Classify the objects of one image; write its objclass image and table."""
    t0 = time.perf_counter()
    meta = model.meta
    classes = np.asarray(model.classes, np.int64)
    block = default_block(meta["ndim"])
    with open_volume(image, axes) as vol:
        if vol.n_channels != meta["n_channels"]:
            raise DataError(
                f"image '{image}' has {vol.n_channels} channel(s) but model "
                f"'{model.path}' was trained on {meta['n_channels']}; predict "
                f"images like the training images (axes {meta['axes']})"
            )
        labels, stack = open_labels(mask)
        with stack:
            check_same_shape(
                labels, vol.spatial_shape, labels_path=mask, image_path=image
            )
            geometry = measure_geometry(labels, block)
            proba = np.zeros((0, len(classes)))
            if len(geometry):
                proba = _predict_probabilities(
                    model,
                    predictor,
                    vol.data,
                    labels,
                    geometry,
                    block=block,
                    threads=threads,
                    source=image,
                )
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
    columns["area"] = geometry.area.tolist()
    for a, name in enumerate(spatial_axes(axes)):
        columns[f"centroid_{name.lower()}"] = geometry.centroid[:, a].round(2).tolist()
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
) -> list[ObjectPredictResult]:
    """Classify the objects of every input image with an object model.

    Writes per image ``{stem}_objclass`` (each object's pixels = its class),
    ``{stem}_objects.csv`` (object id, class, class probabilities, area, centroid),
    and per run ``objects_summary.csv`` (objects per class per image).

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
                    image,
                    mask,
                    out,
                    tab,
                    axes=use_axes,
                    fmt=fmt,
                    threads=n_threads,
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
) -> dict[str, Any]:
    """Object-level scores of prediction tables against ground-truth objects.

    Parameters
    ----------
    predictions : sequence of str
        Tables ``{stem}_objects.csv`` (columns ``object_id``, ``class``).
    ground_truth_instances, ground_truth_classes : sequence of str
        A ``{stem}`` template or files paired in sorted order.
    output_dir : path
        Receives ``objects_evaluation.csv`` and ``.json``.
    instances : sequence of str, optional
        The instance masks the predictions refer to; default: the ground-truth masks
        (the prediction classified the ground-truth objects).
    iou_threshold : float
        Matching threshold (>= 0.5).

    Returns
    -------
    dict
        ``{"scores": [ObjectScores...], "files": [Path...], "table": str}``.
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
    scores: list[ObjectScores] = []
    for table, gt_mask, gt_table, pr_mask, stem in zip(
        tables, gt_masks, gt_tables, pr_masks, stems, strict=True
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
                f"prediction table '{table}' lists object ids that are not in '{pr_mask}': "
                f"{unknown[:5]}; evaluate a table with the instance mask it was predicted on"
            )
        # predicted objects matched to ground-truth objects without a class are not scored
        unscored = {p for g, p in zip(*matches, strict=True) if int(g) not in truth}
        predicted = {k: v for k, v in predicted.items() if k not in unscored}
        scores.append(
            score_objects(stem, truth, predicted, matches, sorted(set(truth.values())))
        )
    files = write_scores(scores, Path(output_dir))
    return {"scores": scores, "files": files, "table": format_scores(scores)}


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
    return evaluate(
        predictions,
        e.ground_truth_instances,
        e.ground_truth_classes,
        e.output_dir,
        instances=instances,
        iou_threshold=e.iou_threshold,
    )


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
    else:
        out["network"] = meta.get("network")
    return out
