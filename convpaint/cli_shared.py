"""Pieces both command-line modules use (:mod:`convpaint.cli` and
:mod:`convpaint.cli_objects`).

A module of its own, so that the objects commands can import them at module level
without importing the main CLI (which registers them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

Verbose = Annotated[
    int,
    typer.Option("-v", "--verbose", count=True, help="More logging (-vv for debug)."),
]
Debug = Annotated[
    bool, typer.Option("--debug", help="Show the full traceback of errors.")
]


def plain(text: object) -> str:
    """``text`` on one line: control characters (newlines in file names, escape
    sequences) and undecodable bytes are shown escaped, never interpreted."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def exists_policy(
    overwrite: bool, skip_existing: bool
) -> Literal["error", "skip", "overwrite"] | None:
    """``--overwrite``/``--skip-existing`` as an ``on_exists`` policy (None: neither)."""
    if overwrite and skip_existing:
        raise typer.BadParameter("use either --overwrite or --skip-existing")
    return "overwrite" if overwrite else "skip" if skip_existing else None


def evaluate_objects(
    prediction: list[str],
    ground_truth: list[str],
    classes: list[str],
    output: Path,
    *,
    instances: list[str] | None,
    iou: float,
    figures: bool,
    images: list[str] | None,
) -> dict[str, Any]:
    """Object-level scores from the command-line options (``--iou`` checked)."""
    if not 0.5 <= iou < 1.0:
        raise typer.BadParameter(f"--iou must be in [0.5, 1), got {iou}")
    from convpaint.objects import api

    return api.evaluate(
        prediction,
        ground_truth,
        classes,
        output,
        instances=instances,
        iou_threshold=iou,
        figures=figures,
        images=images,
    )
