"""Orchestration: train a model from a config, predict images with a model.

Everything here returns data and never prints; the CLI formats the results.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from convpaint import progress
from convpaint._version import __version__
from convpaint.classify import (
    cap_per_class,
    check_training_labels,
    fit_forest,
    make_forest,
    predict_tile_labels,
)
from convpaint.config import (
    Config,
    FeatureConfig,
    TilingConfig,
    TrainSection,
    dump_config,
)
from convpaint.errors import ConfigError, DataError, ModelBundleError, OutputExistsError
from convpaint.features.pipeline import FeaturePipeline, Normalization
from convpaint.io.readers import (
    ImageSource,
    expand_inputs,
    file_stem,
    open_image,
    read_labels,
)
from convpaint.io.writers import OutputPaths, ResultWriter, check_existing, plan_outputs
from convpaint.model_io import LoadedModel, load_model, read_meta, save_model
from convpaint.tiling import Block, iter_tiles, plan_block, read_block

__all__ = [
    "PredictResult",
    "TrainResult",
    "available_cpus",
    "evaluate",
    "evaluate_from_config",
    "image_statistics",
    "make_scribbles",
    "model_info",
    "pair_training_files",
    "plan_prediction",
    "predict",
    "predict_from_config",
    "train",
]

logger = logging.getLogger(__name__)

#: Tile edge used to find annotated regions during training.
_TRAIN_TILE = 256
#: Chunk edge for image statistics; fixed so the statistics never depend on tiling.
_STATS_CHUNK = 1024


# --------------------------------------------------------------------------- threads
def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by SLURM's allocation."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        n = min(n, int(slurm))
    return max(1, n)


@contextmanager
def _thread_budget(n: int) -> Iterator[None]:
    """Tell BLAS/OpenMP pools, torch and dask to use ``n`` threads, restoring them after."""
    import dask
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n), dask.config.set(num_workers=n):
            yield
    finally:
        if torch is not None and old is not None:
            torch.set_num_threads(old)


# --------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():  # zarr folder: hash the file names and contents in order
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_statistics(
    source: ImageSource, *, joint: bool
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel (or over all channels when ``joint``).

    Computed in float64 over fixed chunks, so the result never depends on tiling.

    Raises
    ------
    DataError
        If the image contains NaN or infinite values.
    """
    import dask.array as da

    data = source.data.rechunk((source.n_channels, _STATS_CHUNK, _STATS_CHUNK)).astype(
        np.float64
    )
    axis = (0, 1, 2) if joint else (1, 2)
    try:
        s1, s2, finite = da.compute(
            data.sum(axis=axis),
            (data * data).sum(axis=axis),
            da.isfinite(data).all(),
            scheduler="threads",
        )
    except Exception as err:
        raise DataError(
            f"could not read the pixels of '{source.path}' ({type(err).__name__}: {err}); "
            "the file may be corrupt or truncated: re-export it"
        ) from err
    if not bool(finite):
        raise DataError(
            f"image '{source.path}' contains NaN or infinite values; replace them (e.g. "
            "with 0 or the image minimum) before training or predicting"
        )
    n = data.size / (1 if joint else source.n_channels)
    mean = np.atleast_1d(s1 / n)
    var = np.maximum(np.atleast_1d(s2 / n) - mean * mean, 0.0)
    return mean.tolist(), np.sqrt(var).tolist()


def _pool_statistics(
    stats: list[tuple[list[float], list[float], int]],
) -> tuple[list[float], list[float]]:
    """Combine per-image means/stds weighted by pixel counts."""
    w = np.array([n for _, _, n in stats], dtype=np.float64)[:, None]
    means = np.array([m for m, _, _ in stats])
    stds = np.array([s for _, s, _ in stats])
    mean = (w * means).sum(0) / w.sum()
    var = (w * (stds**2 + means**2)).sum(0) / w.sum() - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist()


def _joint(axes: str) -> bool:
    # colour images (YXC) are normalised over all channels together to keep their hues
    return axes == "YXC"


def _features_of_block(
    source: ImageSource,
    block: Block,
    pipeline: FeaturePipeline,
    norm: Normalization,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    try:
        raw = read_block(source.data, block)
    except Exception as err:
        raise DataError(
            f"could not read pixels {block.tile} of '{source.path}' ({type(err).__name__}: "
            f"{err}); the file may be corrupt or truncated"
        ) from err
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise DataError(
            f"image '{source.path}' contains NaN or infinite values near pixels {block.tile}; "
            "replace them before predicting"
        )
    return pipeline.compute(norm(raw), block.trim, mask)


# --------------------------------------------------------------------------- training
def pair_training_files(train: TrainSection) -> list[tuple[Path, Path]]:
    """Match every training image with its annotation file.

    Raises
    ------
    DataError
        Missing files, or lists of different lengths.
    """
    images = expand_inputs(train.images, what="train.images")
    templ = train.annotations
    if len(templ) == 1 and "{stem}" in templ[0]:
        pairs = []
        for img in images:
            ann = Path(templ[0].format(stem=file_stem(img)))
            if not ann.exists():
                raise DataError(
                    f"train.annotations: no annotation file for image '{img}': expected "
                    f"'{ann}' (from the template '{templ[0]}'); draw scribbles for it or "
                    "remove the image from train.images"
                )
            pairs.append((img, ann))
        return pairs
    anns = expand_inputs(templ, what="train.annotations")
    if len(anns) != len(images):
        raise DataError(
            f"train: {len(images)} images but {len(anns)} annotation files; they pair one "
            "to one in sorted order, or use a template such as "
            "'annotations/{stem}_scribbles.tif'"
        )
    return list(zip(images, anns, strict=True))


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


def _explicit_features(config: Config) -> Config:
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


def _open_training_pair(
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
            source, labels = _open_training_pair(img_path, ann_path, axes, first)
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
                source, joint=_joint(axes)
            )
    except BaseException:
        for it in items:
            it["source"].close()
        raise
    pooled = _pool_statistics([(i["mean"], i["std"], i["pixels"]) for i in items])
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
                xs.append(_features_of_block(it["source"], block, pipeline, norm, mask))
                ys.append(lab[mask])
                groups.append(strokes[window][mask] + group_offset)
                pbar.update(1)
            group_offset += int(strokes.max()) + 1
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


def _versions() -> dict[str, str]:
    import sklearn

    out = {
        "convpaint": __version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.__version__
    return out


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
    config = _explicit_features(config)
    threads = config.tiling.threads or available_cpus()
    n_jobs = config.classifier.n_jobs or threads
    t0 = time.perf_counter()
    pairs = pair_training_files(train_cfg)
    logger.info("training on %d image/annotation pair(s)", len(pairs))
    with _thread_budget(threads):
        gathered = _collect(pairs, train_cfg.axes)
    items = gathered["items"]
    try:
        pipeline = FeaturePipeline(config.features.extractors, gathered["n_channels"])
        logger.info("%d features, halo %d px", pipeline.n_features, pipeline.halo)
        with _thread_budget(threads):
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
        "versions": _versions(),
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
            "joint_channels": _joint(train_cfg.axes),
            "training": {"mean": gathered["pooled"][0], "std": gathered["pooled"][1]},
        },
        "training": {
            "seed": seed,
            "samples_per_class": {str(k): v for k, v in samples.items()},
            "seconds": round(train_seconds, 3),
            "files": [
                {
                    "image": str(img),
                    "image_sha256": _sha256(img),
                    "annotations": str(ann),
                    "annotations_sha256": _sha256(ann),
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


# --------------------------------------------------------------------------- prediction
@dataclass
class PredictResult:
    """One predicted input."""

    input: Path
    outputs: list[Path]
    skipped: bool = False
    seconds: float = 0.0
    class_fractions: dict[int, float] = field(default_factory=dict)


def _require_model_channels(
    n_channels: int, meta: dict[str, Any], source: Path, model_path: Path
) -> None:
    """Refuse an image whose channel count differs from the model's training images."""
    if n_channels != meta["n_channels"]:
        raise DataError(
            f"image '{source}' has {n_channels} channel(s) but model '{model_path}' was "
            f"trained on {meta['n_channels']}; predict images like the training images "
            f"(axes {meta['axes']}) or train a model for these"
        )


def _model_pipeline(
    model: LoadedModel, n_channels: int, source: Path
) -> FeaturePipeline:
    meta = model.meta
    _require_model_channels(n_channels, meta, source, model.path)
    try:
        specs = FeatureConfig.model_validate(
            {"extractors": meta["extractors"]}
        ).extractors
    except Exception as err:
        raise ModelBundleError(
            f"model '{model.path}' names extractors this convpaint cannot build ({err}); "
            "install the convpaint version it was trained with"
        ) from err
    pipeline = FeaturePipeline(specs, n_channels)
    pipeline.check_against(int(meta["n_features"]), meta["fingerprints"])
    return pipeline


def plan_prediction(
    inputs: Sequence[str],
    output_dir: Path,
    *,
    fmt: Literal["tif", "zarr"] = "tif",
    probabilities: bool = False,
    output_name: str = "{stem}_labels",
    shard: tuple[int, int] | None = None,
) -> list[tuple[Path, OutputPaths]]:
    """Inputs (expanded, sorted, optionally one shard of them) and their outputs."""
    files = expand_inputs(list(inputs), what="predict.inputs")
    if shard is not None:
        index, count = shard
        files = files[index::count]
    outputs = plan_outputs(
        files, output_dir, name=output_name, fmt=fmt, probabilities=probabilities
    )
    return list(zip(files, outputs, strict=True))


def _predict_tile_into(
    writer: ResultWriter,
    source: ImageSource,
    tile: tuple[int, int, int, int],
    pipeline: FeaturePipeline,
    norm: Normalization,
    model: LoadedModel,
    classes: np.ndarray,
    threads: int,
    *,
    with_probabilities: bool,
) -> np.ndarray:
    """Predict one tile and hand it to the writer; return the per-class pixel counts.

    A function of its own so the tile's feature matrix is freed before the next tile's
    is built (peak memory = one tile, not two).
    """
    block = plan_block(tile, halo=pipeline.halo, alignment=pipeline.alignment)
    feats = _features_of_block(source, block, pipeline, norm)
    idx, proba = predict_tile_labels(
        model.forest, feats, n_jobs=threads, probabilities=with_probabilities
    )
    del feats
    shape = (tile[1] - tile[0], tile[3] - tile[2])
    writer.write(
        tile,
        classes[idx].reshape(shape),
        proba.T.reshape(len(classes), *shape) if proba is not None else None,
    )
    return np.bincount(idx, minlength=len(classes))


def _predict_one(
    model: LoadedModel,
    path: Path,
    paths: OutputPaths,
    *,
    axes: str,
    fmt: Literal["tif", "zarr"],
    tiling: TilingConfig,
    threads: int,
) -> PredictResult:
    t0 = time.perf_counter()
    meta = model.meta
    classes = np.asarray(meta["classes"])
    with open_image(path, axes) as source:
        pipeline = _model_pipeline(model, source.n_channels, path)
        norm_cfg = meta["normalization"]
        if norm_cfg["mode"] == "image":
            norm = Normalization(
                *image_statistics(source, joint=norm_cfg["joint_channels"])
            )
        else:
            norm = Normalization(
                norm_cfg["training"]["mean"], norm_cfg["training"]["std"]
            )
        tiles = list(iter_tiles(source.shape_yx, tiling.tile_size))
        writer = ResultWriter(
            paths,
            shape_yx=source.shape_yx,
            classes=classes.tolist(),
            fmt=fmt,
            chunk=min(tiling.tile_size, 1024),
            attrs={"convpaint_model": str(model.path), "source": str(path)},
        )
        counts = np.zeros(len(classes), dtype=np.int64)
        try:
            with progress.bar(len(tiles), path.name, "tile") as pbar:
                for tile in tiles:
                    counts += _predict_tile_into(
                        writer,
                        source,
                        tile,
                        pipeline,
                        norm,
                        model,
                        classes,
                        threads,
                        with_probabilities=paths.probabilities is not None,
                    )
                    pbar.update(1)
            outputs = writer.finish()
        except BaseException:
            writer.abort()
            raise
    total = max(int(counts.sum()), 1)
    return PredictResult(
        input=path,
        outputs=outputs,
        seconds=time.perf_counter() - t0,
        class_fractions={
            int(c): float(n) / total for c, n in zip(classes, counts, strict=True)
        },
    )


def predict(
    model_path: Path | str,
    inputs: Sequence[str],
    output_dir: Path | str,
    *,
    axes: str | None = None,
    fmt: Literal["tif", "zarr"] = "tif",
    probabilities: bool = False,
    output_name: str = "{stem}_labels",
    on_exists: Literal["error", "skip", "overwrite"] = "error",
    tiling: TilingConfig | None = None,
    shard: tuple[int, int] | None = None,
) -> list[PredictResult]:
    """Predict every input with a model, tile by tile, writing labels (and probabilities).

    Raises
    ------
    DataError, ModelBundleError, OutputExistsError, WeightsError
    """
    tiling = tiling or TilingConfig()
    plan = plan_prediction(
        inputs,
        Path(output_dir),
        fmt=fmt,
        probabilities=probabilities,
        output_name=output_name,
        shard=shard,
    )
    threads = tiling.threads or available_cpus()
    model = load_model(model_path, n_jobs=threads)
    from convpaint.config import check_axes

    try:
        use_axes = check_axes(axes or model.meta["axes"])
    except ValueError as err:
        raise ConfigError(f"predict axes: {err}") from err
    if on_exists == "error":  # fail before any work, not after hours of it
        for _, paths in plan:
            check_existing(paths, on_exists)
    results = []
    with (
        _thread_budget(threads),
        progress.bar(len(plan), "images", "file") as pbar_files,
    ):
        for path, paths in plan:
            if not check_existing(paths, on_exists):
                results.append(
                    PredictResult(input=path, outputs=paths.existing(), skipped=True)
                )
            else:
                logger.info("predicting %s -> %s", path, paths.labels)
                results.append(
                    _predict_one(
                        model,
                        path,
                        paths,
                        axes=use_axes,
                        fmt=fmt,
                        tiling=tiling,
                        threads=threads,
                    )
                )
            pbar_files.update(1)
    return results


def predict_from_config(
    config: Config,
    *,
    on_exists: Literal["error", "skip", "overwrite"] | None = None,
    shard: tuple[int, int] | None = None,
) -> list[PredictResult]:
    """Run the config's predict section (see :func:`predict`)."""
    if config.predict is None:
        raise ConfigError(
            "the config has no predict section; add predict: {model, inputs, output_dir}"
        )
    p = config.predict
    assert p.model is not None  # resolve_paths fills it from train.model
    return predict(
        p.model,
        p.inputs,
        p.output_dir,
        axes=p.axes,
        fmt=p.format,
        probabilities=p.probabilities,
        output_name=p.output_name,
        on_exists=on_exists or p.on_exists,
        tiling=config.tiling,
        shard=shard,
    )


# --------------------------------------------------------------------------- info/check
def model_info(path: Path | str) -> dict[str, Any]:
    """A summary of a model file (reads only its metadata)."""
    meta = read_meta(path)
    return {
        "file": str(path),
        "created": meta.get("created"),
        "versions": meta.get("versions"),
        "classes": meta.get("classes"),
        "axes": meta.get("axes"),
        "channels": meta.get("n_channels"),
        "features": meta.get("n_features"),
        "halo": meta.get("halo"),
        "extractors": meta.get("extractors"),
        "weights": meta.get("fingerprints"),
        "normalization": meta.get("normalization"),
        "forest": {
            k: v for k, v in meta.get("forest", {}).items() if k != "array_sha256"
        },
        "training": meta.get("training"),
    }


def check(config: Config) -> dict[str, Any]:
    """Validate a config against the files it names without computing anything.

    Returns the resolved config as YAML, the training pairs with their shapes, and the
    planned prediction outputs.
    """
    config = _explicit_features(config)
    out: dict[str, Any] = {"config": dump_config(config), "train": [], "predict": []}
    if config.train is not None:
        first: tuple[Path, int] | None = None
        for img, ann in pair_training_files(config.train):
            src, _ = _open_training_pair(img, ann, config.train.axes, first)
            with src:
                first = first or (img, src.n_channels)
                out["train"].append((str(img), str(ann), src.file_shape))
        FeaturePipeline(
            config.features.resolved(config.train.axes), first[1] if first else 1
        )
    if config.predict is not None:
        p = config.predict
        meta = (
            read_meta(p.model)
            if p.model is not None and Path(p.model).exists()
            else None
        )
        for src_path, paths in plan_prediction(
            p.inputs,
            p.output_dir,
            fmt=p.format,
            probabilities=p.probabilities,
            output_name=p.output_name,
        ):
            if meta is not None:  # header-only look: axes and channels fit the model?
                with open_image(src_path, p.axes or meta["axes"]) as src:
                    _require_model_channels(
                        src.n_channels, meta, src_path, Path(p.model)
                    )
            state = "exists" if paths.existing() else "new"
            out["predict"].append((str(src_path), str(paths.labels), state))
    return out


# --------------------------------------------------------------------------- scribbles
def _read_plain(path: Path) -> np.ndarray:
    """Read a whole label/image file (ground truth, scribbles) into memory."""
    from contextlib import ExitStack

    from convpaint.io.readers import _open_raw

    with ExitStack() as stack:
        raw, _ = _open_raw(Path(path), stack)
        try:
            return np.asarray(raw.compute())
        except Exception as err:
            raise DataError(
                f"could not read '{path}' ({type(err).__name__}: {err})"
            ) from err


def _label_stem(path: Path, suffixes: Sequence[str]) -> str:
    stem = file_stem(path)
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _write_label_tiff(path: Path, labels: np.ndarray, on_exists: str) -> Path:
    import tifffile

    from convpaint.io.atomic import atomic_output

    if path.exists():
        if on_exists == "error":
            raise OutputExistsError(f"'{path}' exists; pass --overwrite to replace it")
        if on_exists == "skip":
            return path
    axes = "YX" if labels.ndim == 2 else "ZYX"
    imagej = labels.dtype in (np.uint8, np.uint16)
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, labels, imagej=imagej, metadata={"axes": axes}, compression="zlib"
        )
    return path


def make_scribbles(
    ground_truth: Sequence[str],
    output_dir: Path | str,
    *,
    fraction: float = 0.01,
    width: int = 2,
    seed: int = 0,
    instances: bool = False,
    name: str = "{stem}_scribbles",
    on_exists: Literal["error", "skip", "overwrite"] = "error",
) -> list[Path]:
    """Write human-like scribbles drawn from dense ground truth, one file per input.

    The output is ``{stem}_scribbles.tif`` where ``stem`` is the ground-truth file's
    stem without a trailing ``_gt``/``_mask``, so it matches the usual training
    template ``annotations/{stem}_scribbles.tif``. Each file gets its own seed
    derived from ``seed`` and its position, so results are reproducible.
    """
    from convpaint.scribbles import generate_scribbles, instance_to_semantic

    files = expand_inputs(list(ground_truth), what="ground truth")
    outputs = []
    for i, path in enumerate(files):
        gt = _read_plain(path)
        if gt.ndim == 3 and gt.shape[-1] in (3, 4) and gt.shape[0] > 4:
            raise DataError(
                f"ground truth '{path}' looks like an RGB image {gt.shape}; expected labels"
            )
        if instances:
            gt = instance_to_semantic(gt)
        try:
            scr = generate_scribbles(gt, fraction=fraction, width=width, seed=seed + i)
        except DataError as err:
            raise DataError(f"ground truth '{path}': {err}") from err
        out = Path(output_dir) / (
            name.format(stem=_label_stem(path, ("_gt", "_mask"))) + ".tif"
        )
        outputs.append(_write_label_tiff(out, scr, on_exists))
    return outputs


# --------------------------------------------------------------------------- evaluate
def _pair(
    targets: list[Path], spec: Sequence[str] | None, stems: list[str], what: str
) -> list[Path | None]:
    """Pair files with ``targets`` by a {stem} template or one to one in sorted order."""
    if not spec:
        return [None] * len(targets)
    if len(spec) == 1 and "{stem}" in spec[0]:
        out = []
        for stem in stems:
            p = Path(spec[0].format(stem=stem))
            if not p.exists():
                raise DataError(
                    f"{what}: '{p}' does not exist (from the template '{spec[0]}')"
                )
            out.append(p)
        return list(out)
    files = expand_inputs(list(spec), what=what)
    if len(files) != len(targets):
        raise DataError(
            f"{what}: {len(files)} files for {len(targets)} predictions; give one per "
            "prediction (sorted order) or a template such as 'gt/{stem}_gt.tif'"
        )
    return list(files)


def evaluate(
    predictions: Sequence[str],
    ground_truth: Sequence[str],
    output_dir: Path | str,
    *,
    images: Sequence[str] | None = None,
    scribbles: Sequence[str] | None = None,
    figures: bool = False,
    instances: bool = False,
) -> dict[str, Any]:
    """Score label images against ground truth; write CSV/JSON tables (and figures).

    Returns ``{"scores": [ImageScores...], "mean": ImageScores, "files": [Path...],
    "table": str}``.
    """
    from convpaint import evaluation as ev
    from convpaint.scribbles import instance_to_semantic

    preds = expand_inputs(list(predictions), what="predictions")
    stems = [_label_stem(p, ("_labels",)) for p in preds]
    gts = _pair(preds, ground_truth, stems, "ground truth")
    imgs = _pair(preds, images, stems, "images") if figures else [None] * len(preds)
    scrs = (
        _pair(preds, scribbles, stems, "scribbles") if figures else [None] * len(preds)
    )
    out_dir = Path(output_dir)
    scores, files = [], []
    for pred_path, gt_path, img_path, scr_path, stem in zip(
        preds, gts, imgs, scrs, stems, strict=True
    ):
        pred = _read_plain(pred_path)
        gt = _read_plain(gt_path)  # type: ignore[arg-type]
        if instances:
            gt = instance_to_semantic(gt)
        try:
            s = ev.score(pred, gt, name=stem)
        except DataError as err:
            raise DataError(f"'{pred_path}' vs '{gt_path}': {err}") from err
        scores.append(s)
        if figures:
            image = _read_plain(img_path) if img_path is not None else pred
            scr = _read_plain(scr_path) if scr_path is not None else None
            files.append(
                ev.plot_comparison(
                    image, scr, pred, gt, out_dir / f"{stem}_comparison.png", title=stem
                )
            )
    files.extend(ev.write_scores(scores, out_dir))
    mean = ev.summarize(scores)
    if figures:
        files.append(
            ev.plot_confusion(
                mean.confusion, mean.classes, out_dir / "evaluation_confusion.png"
            )
        )
    return {
        "scores": scores,
        "mean": mean,
        "files": files,
        "table": ev.format_table(scores),
    }


def evaluate_from_config(config: Config) -> dict[str, Any]:
    """Run the config's evaluate section (see :func:`evaluate`)."""
    if config.evaluate is None:
        raise ConfigError(
            "the config has no evaluate section; add evaluate: {ground_truth, output_dir}"
        )
    e = config.evaluate
    predictions = e.predictions
    images = e.images
    if predictions is None:
        if config.predict is None:
            raise ConfigError(
                "evaluate.predictions is missing and there is no predict section to take them from"
            )
        plan = plan_prediction(
            config.predict.inputs,
            config.predict.output_dir,
            fmt=config.predict.format,
            output_name=config.predict.output_name,
        )
        predictions = [str(paths.labels) for _, paths in plan]
        if images is None:
            images = [str(src) for src, _ in plan]
    return evaluate(
        predictions,
        e.ground_truth,
        e.output_dir,
        images=images,
        scribbles=e.scribbles,
        figures=e.figures,
        instances=e.instances,
    )
