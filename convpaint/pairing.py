"""Pairing files: training images with annotations, predictions with ground truth."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from convpaint.config import (
    TrainSection,
)
from convpaint.errors import DataError
from convpaint.io.readers import (
    expand_inputs,
    file_stem,
)

logger = logging.getLogger(__name__)


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


def pair_files(
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


def label_stem(path: Path, suffixes: Sequence[str]) -> str:
    stem = file_stem(path)
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem
