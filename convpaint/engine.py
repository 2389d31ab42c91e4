"""The prediction engine: one image, tile by tile, into its output files."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from convpaint import progress
from convpaint.classify import (
    predict_tile,
)
from convpaint.config import (
    FeatureConfig,
    TilingConfig,
)
from convpaint.errors import DataError, ModelBundleError
from convpaint.features.pipeline import FeaturePipeline, Normalization
from convpaint.io.readers import (
    ImageSource,
    open_image,
)
from convpaint.io.writers import OutputPaths, ResultWriter
from convpaint.model_io import LoadedModel
from convpaint.normalization import image_statistics
from convpaint.tiling import Block, iter_tiles, plan_block, read_block

logger = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """One predicted input."""

    input: Path
    outputs: list[Path]
    skipped: bool = False
    seconds: float = 0.0
    class_fractions: dict[int, float] = field(default_factory=dict)
    error: str | None = None
    """Why the input failed (``--keep-going``); None when it did not."""
    skip_reason: str | None = None
    """Why it was skipped: the output exists, or another run is writing it."""


def block_features(
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


def require_model_channels(
    n_channels: int, meta: dict[str, Any], source: Path, model_path: Path
) -> None:
    """Refuse an image whose channel count differs from the model's training images."""
    if n_channels != meta["n_channels"]:
        raise DataError(
            f"image '{source}' has {n_channels} channel(s) but model '{model_path}' was "
            f"trained on {meta['n_channels']}; predict images like the training images "
            f"(axes {meta['axes']}) or train a model for these"
        )


def model_pipeline(
    model: LoadedModel, n_channels: int, source: Path
) -> FeaturePipeline:
    meta = model.meta
    require_model_channels(n_channels, meta, source, model.path)
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
    feats = block_features(source, block, pipeline, norm)
    proba = predict_tile(model.forest, feats, n_jobs=threads)
    del feats
    shape = (tile[1] - tile[0], tile[3] - tile[2])
    idx = proba.argmax(axis=1)
    writer.write(
        tile,
        classes[idx].reshape(shape),
        proba.T.reshape(len(classes), *shape) if with_probabilities else None,
    )
    return np.bincount(idx, minlength=len(classes))


def predict_image(
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
        pipeline = model_pipeline(model, source.n_channels, path)
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
