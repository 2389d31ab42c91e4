"""Training: features of the annotated pixels only, the forest, the model file, the report."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# a callable scheduler: a named one ("threads") makes dask import dask.distributed
from dask.threaded import get as threaded_get

from convpaint import progress
from convpaint.classify import (
    FoldForest,
    cap_per_class,
    check_training_labels,
    fit_forest,
)
from convpaint.config import (
    Config,
    FeatureConfig,
)
from convpaint.engine import block_features
from convpaint.errors import ConfigError, DataError, OutputExistsError
from convpaint.features.pipeline import FeaturePipeline, Normalization
from convpaint.io.readers import ImageSource, open_image, open_labels
from convpaint.model_io import save_model
from convpaint.normalization import (
    Statistics,
    image_statistics,
    joint_channels,
    pool_statistics,
)
from convpaint.pairing import pair_training_files
from convpaint.runtime import available_cpus, file_sha256, thread_budget, versions
from convpaint.tiling import iter_tiles, plan_block

logger = logging.getLogger(__name__)


#: Tile edge (Y, X) used to find annotated regions during training. Small crops
#: are cheaper than large ones despite their halos: the filter bank's working
#: planes of a 256-px crop stay in the CPU caches (on a 1 Mpx image with 1 %
#: scribbles: 16 crops of 256 px cost 0.19 s of CPU, 4 of 512 px 0.24 s, one of
#: 1024 px 0.26 s).
_TRAIN_TILE = 256
#: Folds of the training report's cross-validation.
_CV_FOLDS = 5
#: Each fold's forest (the final forest's settings) is fitted on this share of the
#: fold's training pixels of every class, so that the five folds together cost
#: less than the fit of the final forest (`benchmarks/speed.py` measures it: small
#: fits are dominated by per-tree costs, so the folds do not shrink in proportion
#: to their pixels). Pixels of one stroke are
#: near-duplicates: a sample of them still carries every training stroke. Measured
#: on eight images of five datasets, the mIoU estimates stay within 0.03 of folds
#: fitted on all their pixels (mean deviation 0.007 at 1/5, 0.010 at 1/10), closer
#: than folds of the full forest's size on all pixels but with 1/5 of the trees.
_CV_SAMPLE = 0.125
#: Planes per training window for features with context along Z (views, 3d).
_TRAIN_DEPTH = 32


@dataclass
class TrainResult:
    """What `train` produced."""

    model: Path
    samples_per_class: dict[int, int]
    n_features: int
    seconds: float
    report: list[Path] = field(default_factory=list)
    cv_accuracy: float | None = None
    cv_miou: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds of the steps: ``reading_s`` (files, checks, statistics),
    ``features_s``, ``fit_s`` and, with the report, ``cross_validation_s``."""


def explicit_features(config: Config, *, colour: bool, stack: bool = False) -> Config:
    """The config with `features.extractors: auto` and `classifier.n_estimators:
    null` replaced by the measured defaults for the training images (what the model
    stores and `check` shows)."""
    if config.features.extractors != "auto" and config.classifier.n_estimators:
        return config
    config = config.model_copy(deep=True)
    if config.features.extractors == "auto":
        config.features.extractors = config.features.resolved(colour, stack)
    config.classifier.n_estimators = config.classifier.resolved_trees(stack)
    return config


def _prefetch_sklearn() -> None:
    """Start importing scikit-learn (about a second) in a background thread.

    Training needs it only for the fit, after reading the images and computing
    the features, which mostly run in compiled code without the GIL: the import
    overlaps them. The modules training itself imports first are imported before
    the thread starts, so that the two threads never import the same module.
    """
    import sys

    if "sklearn.ensemble" in sys.modules:
        return
    import scipy.ndimage  # noqa: F401  (stroke labelling; shared with scikit-learn)
    import tifffile  # noqa: F401

    import convpaint.report  # noqa: F401

    def run() -> None:
        try:
            import sklearn.ensemble  # noqa: F401
        except Exception:  # the fit imports it again, and reports what fails
            pass

    threading.Thread(target=run, name="convpaint-import", daemon=True).start()


def _resolve_seed(config: Config) -> tuple[Config, int]:
    seed = config.classifier.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
        config = config.model_copy(deep=True)
        config.classifier.seed = seed
    return config, seed


@dataclass
class TrainingPair:
    """One opened training image with its lazy annotations.

    ``planes`` lists the ``(t, z)`` planes that hold annotated pixels; only those
    are ever read in full.
    """

    source: ImageSource
    labels: Any
    """Lazy ``(T, Z, Y, X)`` label array."""
    annotations: Path
    planes: list[tuple[int, int]]
    stats: Statistics | None = None


def _annotated_planes(labels: Any, path: Path) -> list[tuple[int, int]]:
    """The ``(t, z)`` planes with labelled voxels, checking the values on the way
    (one pass over the label file, plane by plane, never all of it in memory)."""
    import dask.array as da

    lab = labels.rechunk((1, 1, *labels.shape[2:]), method="tasks")
    checks = [(lab > 0).any(axis=(2, 3)), lab.min()]
    if np.issubdtype(lab.dtype, np.floating):
        checks.append((~da.isfinite(lab) | (lab != da.round(lab))).any())
    try:
        results = da.compute(*checks, scheduler=threaded_get)
    except DataError:
        raise  # the reader's own located message (negative or non-integer labels)
    except Exception as err:
        raise DataError(
            f"could not read annotations '{path}' ({type(err).__name__}: {err}); the "
            "file may be corrupt or truncated"
        ) from err
    if len(results) == 3 and bool(results[2]):
        raise DataError(
            f"annotations '{path}' hold non-integer values (dtype {lab.dtype}); save "
            "them as an integer label image (0 = unlabelled, 1..K = classes)"
        )
    if results[1] < 0:
        raise DataError(
            f"annotations '{path}' contain negative values (min {results[1]}); use 0 "
            "for unlabelled and positive values for classes"
        )
    flags = np.asarray(results[0])
    return [(int(t), int(z)) for t, z in zip(*np.nonzero(flags), strict=True)]


def open_training_pair(
    img_path: Path,
    ann_path: Path,
    *,
    axes: str | None,
    spacing: dict[str, float] | None,
    first: ImageSource | None,
) -> TrainingPair:
    """Open a training image lazily and its annotations, checking both.

    ``first`` is the first training image, whose channels (and kind: 2-D or stack)
    every other image must share. The caller closes the returned source.
    """
    source = open_image(img_path, axes, spacing=spacing)
    try:
        if first is not None and source.n_channels != first.n_channels:
            raise DataError(
                f"training image '{img_path}' has {source.n_channels} channels but "
                f"'{first.path}' has {first.n_channels}; all training images need the "
                "same channels"
            )
        if first is not None and source.is_stack != first.is_stack:
            kinds = {True: "a Z stack", False: "2-D"}
            raise DataError(
                f"training image '{img_path}' is {kinds[source.is_stack]} (axes "
                f"{source.axes}) but '{first.path}' is {kinds[first.is_stack]} (axes "
                f"{first.axes}); train 2-D images and stacks in separate models"
            )
        labels = open_labels(ann_path, image=source)
        planes = _annotated_planes(labels, ann_path)
        if not planes:
            raise DataError(
                f"annotations '{ann_path}' contain no labelled pixel (all 0); draw "
                "scribbles or remove this pair from the training set"
            )
    except BaseException:
        source.close()
        raise
    return TrainingPair(source, labels, ann_path, planes)


def _collect(
    pairs: list[tuple[Path, Path]],
    *,
    axes: str | None,
    spacing: dict[str, float] | None,
    per_plane: bool,
) -> list[TrainingPair]:
    """Open every pair, check it, compute its statistics."""
    items: list[TrainingPair] = []
    try:
        for img_path, ann_path in pairs:
            item = open_training_pair(
                img_path,
                ann_path,
                axes=axes,
                spacing=spacing,
                first=items[0].source if items else None,
            )
            items.append(item)
            item.stats = image_statistics(
                item.source,
                joint=joint_channels(item.source),
                per_plane=per_plane,
            )
    except BaseException:
        for it in items:
            it.source.close()
        raise
    return items


def _bbox(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per axis of the True voxels of ``mask``."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        out.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(out)


def _crops(
    labels: np.ndarray, z0: int, tile: tuple[int, int, int]
) -> list[tuple[tuple[int, int], ...]]:
    """Bounding boxes (global ``(z, y, x)`` spans) of the annotations inside each
    ``tile``-sized piece of a ``(Z, Y, X)`` label window starting at plane ``z0``."""
    crops = []
    for piece in iter_tiles(labels.shape, tile):
        sub = labels[tuple(slice(a, b) for a, b in piece)] > 0
        if sub.any():
            box = _bbox(sub)
            crops.append(
                tuple(
                    (p0 + b0 + off, p0 + b1 + off)
                    for (p0, _), (b0, b1), off in zip(
                        piece, box, (z0, 0, 0), strict=True
                    )
                )
            )
    return crops


def _windows(planes: list[tuple[int, int]], depth: int) -> list[tuple[int, int, int]]:
    """Group annotated ``(t, z)`` planes into ``(t, z0, z1)`` windows of at most
    ``depth`` planes, aligned to multiples of ``depth``."""
    out: dict[tuple[int, int], None] = {}
    for t, z in planes:
        out[(t, z // depth)] = None
    return [(t, k * depth, (k + 1) * depth) for t, k in out]


def _sample_features(
    items: list[TrainingPair],
    pipeline: FeaturePipeline,
    features: FeatureConfig,
    pooled: tuple[list[float], list[float]],
    threads: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Features of every annotated voxel, computed only in crops around the scribbles.

    Annotated planes are read in windows of :data:`_TRAIN_DEPTH` planes (one plane for
    `planes` features); in each window, every ``_TRAIN_DEPTH x 256 x 256`` piece with
    annotations is one crop: its annotations' bounding box, computed with the
    pipeline's halo in every axis. Crops run in parallel on ``threads`` threads;
    their samples are concatenated in grid order.
    """
    from concurrent.futures import ThreadPoolExecutor

    from convpaint.report import label_strokes

    depth = 1 if pipeline.dims == "planes" else _TRAIN_DEPTH
    tile = (depth, _TRAIN_TILE, _TRAIN_TILE)
    xs, ys, groups = [], [], []
    per_file: list[int] = []
    group_offset = 0
    windows = [_windows(it.planes, depth) for it in items]
    with (
        progress.bar(
            sum(map(len, windows)), "features of annotated regions", "window"
        ) as pbar,
        ThreadPoolExecutor(threads, thread_name_prefix="convpaint-train") as pool,
    ):
        for it, item_windows in zip(items, windows, strict=True):
            per_file.append(0)
            n_z = it.source.shape_tzyx[1]
            for t, z0, z1 in item_windows:
                z1 = min(z1, n_z)
                lab = np.asarray(it.labels[t, z0:z1].compute(scheduler=threaded_get))
                # strokes are drawn on planes: number them plane by plane
                strokes = np.zeros(lab.shape, dtype=np.int64)
                for k in range(lab.shape[0]):
                    s = label_strokes(lab[k])
                    strokes[k] = np.where(s > 0, s + group_offset, 0)
                    group_offset += int(s.max()) + 1
                if features.normalize == "training":
                    norm = Normalization(*pooled)
                else:
                    norm = it.stats.normalization(t)  # type: ignore[union-attr]
                crops = _crops(lab, z0, tile)
                pieces = [
                    tuple(
                        slice(a - off, b - off)
                        for (a, b), off in zip(crop, (z0, 0, 0), strict=True)
                    )
                    for crop in crops
                ]

                def one(
                    job: tuple[tuple[tuple[int, int], ...], tuple[slice, ...]],
                    source: ImageSource = it.source,
                    t: int = t,
                    norm: Normalization = norm,
                    lab: np.ndarray = lab,
                ) -> np.ndarray:
                    crop, piece = job
                    block = plan_block(
                        crop, halo=pipeline.halo, alignment=pipeline.alignment
                    )
                    mask = lab[piece] > 0
                    return block_features(source, t, block, pipeline, norm, mask)

                # one thread budget: crops in parallel, each on its share of it
                workers = max(1, min(threads, len(crops)))
                with thread_budget(max(1, threads // workers)):
                    xs.extend(pool.map(one, zip(crops, pieces, strict=True)))
                for piece in pieces:
                    window_lab = lab[piece]
                    mask = window_lab > 0
                    ys.append(window_lab[mask])
                    groups.append(strokes[piece][mask])
                    per_file[-1] += int(mask.sum())
                pbar.update(1)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), per_file


def train(config: Config, *, overwrite: bool = False) -> TrainResult:
    """Train a model from a validated config whose paths are resolved.

    Features are computed only in crops around the annotated pixels (bounding box of
    the scribbles in each 256-px tile, plus the halo); the forest is fitted on them and
    saved, with everything needed to reproduce and check predictions, to
    ``config.train.model``.

    Raises
    ------
    ConfigError, DataError, ModelBundleError, WeightsError, OutputExistsError
    """
    if config.train is None:
        raise ConfigError(
            "the config has no train section; add train: {images, annotations, model}"
        )
    train_cfg = config.train
    model_path = Path(train_cfg.model)
    if model_path.exists() and not overwrite:
        raise OutputExistsError(
            f"model '{model_path}' exists; pass --overwrite to replace it or change train.model"
        )
    config, seed = _resolve_seed(config)
    threads = config.tiling.threads or available_cpus()
    n_jobs = config.classifier.n_jobs or threads
    t0 = time.perf_counter()
    if config.classifier.algorithm == "sklearn":
        _prefetch_sklearn()
    pairs = pair_training_files(train_cfg)
    logger.info("training on %d image/annotation pair(s)", len(pairs))
    spacing = train_cfg.spacing.as_dict() if train_cfg.spacing else None
    with thread_budget(threads):
        items = _collect(
            pairs,
            axes=train_cfg.axes,
            spacing=spacing,
            per_plane=config.features.normalize == "plane",
        )
    try:
        first = items[0].source
        config = explicit_features(config, colour=first.is_colour, stack=first.is_stack)
        dims = config.features.resolved_dims(first.is_stack)
        pooled = pool_statistics([it.stats for it in items])  # type: ignore[misc]
        pipeline = FeaturePipeline(
            config.features.extractors,
            first.n_channels,
            dims=dims,  # type: ignore[arg-type]
            spacing=first.spacing if dims != "planes" else None,
        )
        logger.info(
            "%d features (%s), halo %s", pipeline.n_features, dims, pipeline.halo
        )
        with thread_budget(threads):
            fingerprints = pipeline.fingerprints()
            t1 = time.perf_counter()
            X, y, groups, per_file = _sample_features(
                items, pipeline, config.features, pooled, threads
            )
            t2 = time.perf_counter()
            check_training_labels(y, where=f"train.annotations ({len(pairs)} file(s))")
            keep = cap_per_class(y, config.classifier.max_samples_per_class, seed=seed)
            X, y, groups = X[keep], y[keep], groups[keep]
            forest = fit_forest(X, y, config.classifier, seed=seed, n_jobs=n_jobs)
            t3 = time.perf_counter()
            train_seconds = t3 - t0
            timings = {
                "reading_s": t1 - t0,
                "features_s": t2 - t1,
                "fit_s": t3 - t2,
            }
            cv = None
            if train_cfg.report:
                from convpaint.report import cross_validate

                cv = cross_validate(
                    X,
                    y,
                    groups,
                    lambda: FoldForest(
                        config.classifier,
                        seed=seed,
                        n_jobs=1,
                        fraction=_CV_SAMPLE,
                    ),
                    n_folds=_CV_FOLDS,
                    seed=seed,
                    sample_fraction=_CV_SAMPLE,
                    # small fits: folds side by side beat threads inside each fit
                    n_jobs=n_jobs,
                )
                timings["cross_validation_s"] = time.perf_counter() - t3
    finally:
        for it in items:
            it.source.close()
    classes, counts = np.unique(y, return_counts=True)
    samples = {int(c): int(n) for c, n in zip(classes, counts, strict=True)}
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config.model_dump(mode="json"),
        "extractors": [s.model_dump(mode="json") for s in config.features.extractors],
        "fingerprints": fingerprints,
        "axes": first.axes,
        "n_channels": pipeline.n_channels,
        "classes": [int(c) for c in forest.classes_],
        "n_features": pipeline.n_features,
        "feature_names": pipeline.feature_names(),
        "halo": pipeline.halo_2d if dims != "3d" else max(pipeline.halo),
        "alignment": pipeline.alignment[-1],
        "geometry": pipeline.describe(),
        "normalization": {
            "mode": config.features.normalize,
            "joint_channels": joint_channels(first),
            "training": {"mean": pooled[0], "std": pooled[1]},
        },
        "training": {
            "seed": seed,
            "samples_per_class": {str(k): v for k, v in samples.items()},
            "seconds": round(train_seconds, 3),
            "files": [
                {
                    "image": str(img),
                    "image_sha256": file_sha256(img),
                    "annotations": str(ann),
                    "annotations_sha256": file_sha256(ann),
                    "labelled_pixels": n,
                    "annotated_planes": len(it.planes),
                }
                for (img, ann), it, n in zip(pairs, items, per_file, strict=True)
            ],
        },
    }
    save_model(model_path, forest, meta)
    result = TrainResult(
        model=model_path,
        samples_per_class=samples,
        n_features=pipeline.n_features,
        seconds=train_seconds,
        timings=timings,
    )
    if train_cfg.report and cv is not None:
        from convpaint.report import aggregate_importances, build_report, write_report

        report = build_report(
            training_seconds=train_seconds,
            timings=timings,
            samples_per_class=samples,
            cv=cv,
            importances=aggregate_importances(
                forest.feature_importances_, pipeline.feature_names()
            ),
            extra={
                "model": str(model_path),
                "n_features": pipeline.n_features,
                "seed": seed,
            },
        )
        stem = model_path.with_suffix("")
        result.report = list(
            write_report(
                report, Path(f"{stem}_report.json"), Path(f"{stem}_report.png")
            )
        )
        result.cv_accuracy, result.cv_miou = cv.accuracy, cv.miou
    return result
