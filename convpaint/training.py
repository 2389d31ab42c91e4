"""Training: features of the annotated pixels only, the forest, the model file, the report."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convpaint import progress
from convpaint.classify import (
    cap_per_class,
    check_training_labels,
    fit_forest,
    make_forest,
)
from convpaint.config import (
    Config,
    FeatureConfig,
)
from convpaint.engine import block_features
from convpaint.errors import ConfigError, DataError, OutputExistsError
from convpaint.features.pipeline import FeaturePipeline, Normalization
from convpaint.io.readers import (
    ImageSource,
    open_image,
    read_labels,
)
from convpaint.model_io import save_model
from convpaint.normalization import image_statistics, joint_channels, pool_statistics
from convpaint.pairing import pair_training_files
from convpaint.runtime import available_cpus, file_sha256, thread_budget, versions
from convpaint.tiling import iter_tiles, plan_block

logger = logging.getLogger(__name__)


#: Tile edge used to find annotated regions during training.
_TRAIN_TILE = 256


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


def explicit_features(config: Config) -> Config:
    """The config with `features.extractors: auto` replaced by the measured default
    for the training axes (what the model stores and `check` shows)."""
    if config.train is None or config.features.extractors != "auto":
        return config
    config = config.model_copy(deep=True)
    config.features.extractors = config.features.resolved(config.train.axes)
    return config


def _resolve_seed(config: Config) -> tuple[Config, int]:
    seed = config.classifier.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
        config = config.model_copy(deep=True)
        config.classifier.seed = seed
    return config, seed


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def open_training_pair(
    img_path: Path, ann_path: Path, axes: str, first: tuple[Path, int] | None
) -> tuple[ImageSource, np.ndarray]:
    """Open a training image lazily and read its annotations, checking both.

    ``first`` is the first training image and its channel count, which every other
    image must share. The caller closes the returned source.
    """
    source = open_image(img_path, axes)
    try:
        if first is not None and source.n_channels != first[1]:
            raise DataError(
                f"training image '{img_path}' has {source.n_channels} channels but "
                f"'{first[0]}' has {first[1]}; all training images need the same channels"
            )
        labels = read_labels(ann_path, shape_yx=source.shape_yx, image=img_path)
        if not labels.any():
            raise DataError(
                f"annotations '{ann_path}' contain no labelled pixel (all 0); draw "
                "scribbles or remove this pair from the training set"
            )
    except BaseException:
        source.close()
        raise
    return source, labels


def _collect(pairs: list[tuple[Path, Path]], axes: str) -> dict[str, Any]:
    """Open every pair, check it, compute statistics; return what sampling needs."""
    items: list[dict[str, Any]] = []
    first: tuple[Path, int] | None = None
    try:
        for img_path, ann_path in pairs:
            source, labels = open_training_pair(img_path, ann_path, axes, first)
            items.append(
                {
                    "source": source,
                    "labels": labels,
                    "ann": ann_path,
                    "pixels": source.shape_yx[0] * source.shape_yx[1],
                }
            )
            first = first or (img_path, source.n_channels)
            items[-1]["mean"], items[-1]["std"] = image_statistics(
                source, joint=joint_channels(axes)
            )
    except BaseException:
        for it in items:
            it["source"].close()
        raise
    pooled = pool_statistics([(i["mean"], i["std"], i["pixels"]) for i in items])
    return {"items": items, "n_channels": first[1] if first else None, "pooled": pooled}


def _annotated_crops(labels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the annotations inside each training tile that has any."""
    crops = []
    for ty0, ty1, tx0, tx1 in iter_tiles(labels.shape, _TRAIN_TILE):
        sub = labels[ty0:ty1, tx0:tx1] > 0
        if sub.any():
            by0, by1, bx0, bx1 = _bbox(sub)
            crops.append((ty0 + by0, ty0 + by1, tx0 + bx0, tx0 + bx1))
    return crops


def _sample_features(
    items: list[dict[str, Any]],
    pipeline: FeaturePipeline,
    features: FeatureConfig,
    pooled: tuple[list[float], list[float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every annotated pixel, computed only in crops around the scribbles."""
    from convpaint.report import label_strokes

    xs, ys, groups = [], [], []
    group_offset = 0
    crops = [_annotated_crops(it["labels"]) for it in items]
    with progress.bar(
        sum(map(len, crops)), "features of annotated regions", "crop"
    ) as pbar:
        for it, item_crops in zip(items, crops, strict=True):
            labels = it["labels"]
            strokes = label_strokes(labels)
            if features.normalize == "image":
                norm = Normalization(it["mean"], it["std"])
            else:
                norm = Normalization(*pooled)
            for crop in item_crops:
                window = (slice(crop[0], crop[1]), slice(crop[2], crop[3]))
                lab = labels[window]
                mask = lab > 0
                block = plan_block(
                    crop, halo=pipeline.halo, alignment=pipeline.alignment
                )
                xs.append(block_features(it["source"], block, pipeline, norm, mask))
                ys.append(lab[mask])
                groups.append(strokes[window][mask] + group_offset)
                pbar.update(1)
            group_offset += int(strokes.max()) + 1
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


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
    config = explicit_features(config)
    threads = config.tiling.threads or available_cpus()
    n_jobs = config.classifier.n_jobs or threads
    t0 = time.perf_counter()
    pairs = pair_training_files(train_cfg)
    logger.info("training on %d image/annotation pair(s)", len(pairs))
    with thread_budget(threads):
        gathered = _collect(pairs, train_cfg.axes)
    items = gathered["items"]
    try:
        pipeline = FeaturePipeline(config.features.extractors, gathered["n_channels"])
        logger.info("%d features, halo %d px", pipeline.n_features, pipeline.halo)
        with thread_budget(threads):
            fingerprints = pipeline.fingerprints()
            X, y, groups = _sample_features(
                items, pipeline, config.features, gathered["pooled"]
            )
            check_training_labels(y, where=f"train.annotations ({len(pairs)} file(s))")
            keep = cap_per_class(y, config.classifier.max_samples_per_class, seed=seed)
            X, y, groups = X[keep], y[keep], groups[keep]
            forest = fit_forest(X, y, config.classifier, seed=seed, n_jobs=n_jobs)
            train_seconds = time.perf_counter() - t0
            cv = None
            if train_cfg.report:
                from convpaint.report import cross_validate

                cv = cross_validate(
                    X,
                    y,
                    groups,
                    lambda: make_forest(config.classifier, seed=seed, n_jobs=n_jobs),
                    seed=seed,
                )
    finally:
        for it in items:
            it["source"].close()
    classes, counts = np.unique(y, return_counts=True)
    samples = {int(c): int(n) for c, n in zip(classes, counts, strict=True)}
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config.model_dump(mode="json"),
        "extractors": [s.model_dump(mode="json") for s in config.features.extractors],
        "fingerprints": fingerprints,
        "axes": train_cfg.axes,
        "n_channels": pipeline.n_channels,
        "classes": [int(c) for c in forest.classes_],
        "n_features": pipeline.n_features,
        "feature_names": pipeline.feature_names(),
        "halo": pipeline.halo,
        "alignment": pipeline.alignment,
        "normalization": {
            "mode": config.features.normalize,
            "joint_channels": joint_channels(train_cfg.axes),
            "training": {"mean": gathered["pooled"][0], "std": gathered["pooled"][1]},
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
                    "labelled_pixels": int((it["labels"] > 0).sum()),
                }
                for (img, ann), it in zip(pairs, items, strict=True)
            ],
        },
    }
    save_model(model_path, forest, meta)
    result = TrainResult(
        model=model_path,
        samples_per_class=samples,
        n_features=pipeline.n_features,
        seconds=train_seconds,
    )
    if train_cfg.report and cv is not None:
        from convpaint.report import aggregate_importances, build_report, write_report

        report = build_report(
            training_seconds=train_seconds,
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
