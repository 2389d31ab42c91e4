"""Batch prediction: plan inputs and outputs, run the engine over every input."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from convpaint import progress
from convpaint.config import (
    ClusterConfig,
    Config,
    TilingConfig,
)
from convpaint.engine import PredictResult, predict_image
from convpaint.errors import ConfigError
from convpaint.io.readers import (
    expand_inputs,
)
from convpaint.io.writers import OutputPaths, check_existing, plan_outputs
from convpaint.model_io import load_model
from convpaint.runtime import available_cpus, thread_budget

logger = logging.getLogger(__name__)


def plan_prediction(
    inputs: Sequence[str],
    output_dir: Path,
    *,
    fmt: str = "tif",
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


def predict(
    model_path: Path | str,
    inputs: Sequence[str],
    output_dir: Path | str,
    *,
    axes: str | None = None,
    fmt: str = "tif",
    probabilities: bool = False,
    output_name: str = "{stem}_labels",
    on_exists: Literal["error", "skip", "overwrite"] = "error",
    tiling: TilingConfig | None = None,
    shard: tuple[int, int] | None = None,
    spacing: dict[str, float] | None = None,
    levels: int = 1,
    cluster: ClusterConfig | None = None,
) -> list[PredictResult]:
    """Predict every input with a model, tile by tile, writing labels (and probabilities).

    ``axes`` and ``spacing`` override what the files declare; ``levels`` is the number
    of OME-Zarr resolution levels; ``cluster`` configures ``tiling.scheduler: slurm``.

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
        use_axes = check_axes(axes) if axes else None
    except ValueError as err:
        raise ConfigError(f"predict axes: {err}") from err
    if on_exists == "error":  # fail before any work, not after hours of it
        for _, paths in plan:
            check_existing(paths, on_exists)
    results = []
    with (
        thread_budget(threads),
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
                    predict_image(
                        model,
                        path,
                        paths,
                        axes=use_axes,
                        fmt=fmt,
                        tiling=tiling,
                        threads=threads,
                        spacing=spacing,
                        levels=levels,
                        cluster=cluster,
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
        spacing=p.spacing.as_dict() if p.spacing else None,
        levels=p.levels,
        cluster=config.cluster,
    )
