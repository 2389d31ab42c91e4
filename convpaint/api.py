"""The public API: training, prediction and the file-level tools behind the CLI.

Training lives in :mod:`convpaint.training`, batch prediction in :mod:`convpaint.batch`
(over the engine in :mod:`convpaint.engine`); this module re-exports them and holds the
small commands (check, info, scribbles, evaluate). Nothing here prints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from convpaint.batch import PredictResult, plan_prediction, predict, predict_from_config
from convpaint.config import (
    Config,
    dump_config,
)
from convpaint.engine import require_model_channels
from convpaint.errors import ConfigError, DataError, OutputExistsError
from convpaint.features.pipeline import FeaturePipeline
from convpaint.io.readers import (
    expand_inputs,
    open_image,
)
from convpaint.model_io import read_meta
from convpaint.model_meta import parse_meta
from convpaint.normalization import image_statistics
from convpaint.pairing import label_stem, pair_files, pair_training_files
from convpaint.runtime import available_cpus
from convpaint.training import TrainResult, explicit_features, open_training_pair, train

__all__ = [
    "PredictResult",
    "TrainResult",
    "available_cpus",
    "check",
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
        "geometry": meta.get("geometry"),
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

    Returns the resolved config as YAML, the training pairs with their shapes (and
    the annotated planes), and the planned prediction outputs.
    """
    out: dict[str, Any] = {"train": [], "predict": []}
    if config.train is not None:
        t = config.train
        spacing = t.spacing.as_dict() if t.spacing else None
        first = None
        try:
            for img, ann in pair_training_files(t):
                pair = open_training_pair(
                    img, ann, axes=t.axes, spacing=spacing, first=first
                )
                if first is None:
                    first = pair.source
                else:
                    pair.source.close()
                out["train"].append(
                    (str(img), str(ann), pair.source.file_shape, pair.source.axes)
                )
            if first is not None:
                config = explicit_features(
                    config, colour=first.is_colour, stack=first.is_stack
                )
                dims = config.features.resolved_dims(first.is_stack)
                FeaturePipeline(
                    config.features.extractors,
                    first.n_channels,
                    dims=dims,  # type: ignore[arg-type]
                    spacing=first.spacing,
                )
        finally:
            if first is not None:
                first.close()
    out["config"] = dump_config(config)
    if config.predict is not None:
        p = config.predict
        meta = (
            parse_meta(read_meta(p.model), p.model)
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
                with open_image(
                    src_path,
                    p.axes,
                    spacing=p.spacing.as_dict() if p.spacing else None,
                ) as src:
                    require_model_channels(
                        src.n_channels,
                        meta,
                        src_path,
                        Path(p.model),  # type: ignore[arg-type]
                    )
            state = "exists" if paths.existing() else "new"
            out["predict"].append((str(src_path), str(paths.labels), state))
    return out


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
            name.format(stem=label_stem(path, ("_gt", "_mask"))) + ".tif"
        )
        outputs.append(_write_label_tiff(out, scr, on_exists))
    return outputs


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
    stems = [label_stem(p, ("_labels",)) for p in preds]
    gts = pair_files(preds, ground_truth, stems, "ground truth")
    imgs = (
        pair_files(preds, images, stems, "images") if figures else [None] * len(preds)
    )
    scrs = (
        pair_files(preds, scribbles, stems, "scribbles")
        if figures
        else [None] * len(preds)
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
