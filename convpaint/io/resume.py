"""Resumable predictions: keep a stopped zarr output and continue it later.

With ``predict --resume`` (``predict.resume: true``) a zarr or OME-Zarr output is
written under a fixed hidden name, ``.NAME.resume.partial``, instead of one that
changes with every run. Each finished tile leaves an empty marker file in the labels'
partial folder (``.convpaint-done/T.Z.Y.X``, the tile's index in the chunk grid),
created after its labels and probabilities are stored. A run that stops early (SIGTERM
at a job's time limit, Ctrl-C, an error, even ``kill -9`` or a node failure) keeps the
partial folder; the next run with ``--resume`` checks that it belongs to the same
prediction and computes only the tiles without a marker. A tile that was being written
when the run died has no marker and is written again whole.

What must match is kept in ``.convpaint-resume.json`` in the same folder: the model
file's SHA-256, the input (path, size and modification time of the file, or of a zarr
folder's array metadata), the image shape, the classes, the format, levels and
whether probabilities are written. The tile grid and the normalisation statistics are
taken from the partial output instead of being planned or measured again, so the
result equals an uninterrupted run's bit for bit whatever ``--threads`` the later run
has. When the prediction is complete, the markers and the record are removed and the
folder is renamed to its final name, as without ``--resume``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from convpaint.errors import OutputError

from .atomic import RESUMABLE_TAG, partial_paths, remove_path

__all__ = [
    "DONE_FOLDER",
    "MANIFEST",
    "ResumeManifest",
    "ResumeState",
    "input_stamp",
    "mark_done",
    "resume_path",
    "tile_marker",
]

logger = logging.getLogger(__name__)

#: The record of what a partial output belongs to (in the labels' partial folder).
MANIFEST = ".convpaint-resume.json"
#: Folder of per-tile completion markers (in the labels' partial folder).
DONE_FOLDER = ".convpaint-done"
#: Formats that can be resumed: chunked folders written in any order.
RESUMABLE_FORMATS = ("zarr", "ome-zarr")


def resume_path(final: Path | str) -> Path:
    """The fixed temporary name of a resumable output: ``.NAME.resume.partial``."""
    return partial_paths(final, RESUMABLE_TAG)[0]


def input_stamp(path: Path) -> list[int]:
    """Size and modification time (ns) of an input file; for a zarr folder, of its
    array metadata (``.zarray``/``zarr.json``, or level 0's in an OME-Zarr image),
    whose times change when the array is rewritten. Only these few names are
    looked at: listing a large zarr folder can take minutes on a cluster file
    system."""
    path = Path(path)
    target = path
    if path.is_dir():
        names = [".zarray", "zarr.json", "0/.zarray", "0/zarr.json", ".zgroup"]
        target = next((path / n for n in names if (path / n).is_file()), path)
    st = target.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


class ResumeManifest(BaseModel):
    """What a resumable partial output belongs to (``.convpaint-resume.json``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    model_sha256: str
    input: str
    input_stamp: list[int]
    shape_tzyx: list[int]
    classes: list[int]
    format: str
    levels: int
    probabilities: bool
    tile_zyx: list[int]
    """The tile grid (= the zarr chunks) the partial output was started with."""
    stats: dict[str, Any]
    """The normalisation statistics: ``mean``, ``std`` (nested lists), ``dtype``,
    ``voxels``, ``sampled``."""


#: What must agree between a partial output and a resuming run, and what a
#: difference means.
_WHY = {
    "model_sha256": "the model file differs",
    "input": "the input path differs",
    "input_stamp": "the input file was changed since (size or modification time)",
    "shape_tzyx": "the image shape differs",
    "classes": "the model's classes differ",
    "format": "the output format differs",
    "levels": "the OME-Zarr levels differ",
    "probabilities": "probabilities were (not) requested then",
}


def tile_marker(done_dir: Path | str, index: Sequence[int]) -> str:
    """The marker file of the tile with chunk-grid index ``index`` (T, Z, Y, X):
    it exists once the tile's results are stored (:func:`mark_done`)."""
    return os.path.join(done_dir, ".".join(str(int(i)) for i in index))


def mark_done(marker: str) -> None:
    """Create the (empty) marker file ``marker``; call after the tile is stored."""
    os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o644))


class ResumeState:
    """One input's resumable outputs: the partial folders, the record, the markers.

    Use :meth:`open` before planning the prediction, :meth:`start` once the writer
    has created (or reopened) the outputs, :meth:`mark` after each stored tile and
    :meth:`finish` just before the outputs are renamed into place; the tasks mark
    each stored tile in :attr:`done_dir` (:func:`mark_done`).
    """

    def __init__(self, labels: Path, identity: dict[str, Any]) -> None:
        self.labels_final = Path(labels)
        self.partial = resume_path(labels)
        self.identity = identity
        self.manifest: ResumeManifest | None = None
        self.done: set[str] = set()

    @classmethod
    def open(
        cls,
        labels: Path,
        probabilities: Path | None,
        *,
        model_sha256: str,
        input_path: Path,
        shape_tzyx: Sequence[int],
        classes: Sequence[int],
        fmt: str,
        levels: int,
    ) -> ResumeState:
        """Read and check the partial output of ``labels`` if there is one.

        Raises
        ------
        OutputError
            A partial output exists but belongs to another prediction (the message
            says what differs and how to start afresh), or its probabilities are
            missing.
        """
        identity = {
            "model_sha256": model_sha256,
            "input": str(Path(input_path).resolve()),
            "input_stamp": input_stamp(Path(input_path)),
            "shape_tzyx": [int(v) for v in shape_tzyx],
            "classes": [int(c) for c in classes],
            "format": fmt,
            "levels": int(levels),
            "probabilities": probabilities is not None,
        }
        state = cls(labels, identity)
        partials = [resume_path(p) for p in (labels, probabilities) if p is not None]
        if not os.path.lexists(state.partial):
            # a probabilities partial without labels: an unusable leftover
            for p in partials[1:]:
                if os.path.lexists(p):
                    logger.warning("removing '%s': its labels' partial is gone", p)
                    remove_path(p)
            return state
        record = state.partial / MANIFEST
        try:
            manifest = ResumeManifest.model_validate_json(record.read_bytes())
        except (OSError, ValueError, ValidationError):
            # the run died while creating its outputs: nothing computed to keep
            logger.warning(
                "removing '%s': a partial output without a readable %s (its run "
                "stopped while creating it)",
                state.partial,
                MANIFEST,
            )
            for p in partials:
                remove_path(p)
            return state
        stored = manifest.model_dump()
        differs = [k for k in _WHY if stored[k] != identity[k]]
        if differs:
            why = "; ".join(
                f"{_WHY[k]} (then {stored[k]!r}, now {identity[k]!r})" for k in differs
            )
            raise OutputError(
                f"cannot resume '{labels}': its partial output '{state.partial}' was "
                f"started by another prediction: {why}. Delete "
                f"'{state.partial}'"
                + (f" and '{partials[1]}'" if len(partials) > 1 else "")
                + " to start afresh, or resume with the model, input and options it "
                "was started with"
            )
        for p in partials[1:]:
            if not p.is_dir():
                raise OutputError(
                    f"cannot resume '{labels}': the partial probabilities '{p}' that "
                    f"belong to '{state.partial}' are missing; delete '{state.partial}' "
                    "to start afresh"
                )
        state.manifest = manifest
        try:
            state.done = set(os.listdir(state.partial / DONE_FOLDER))
        except FileNotFoundError:
            state.done = set()
        return state

    @property
    def resuming(self) -> bool:
        """True when an earlier run's partial output is continued."""
        return self.manifest is not None

    @property
    def tile(self) -> tuple[int, int, int] | None:
        """The stored tile grid ``(z, y, x)``, or None for a fresh start."""
        if self.manifest is None:
            return None
        z, y, x = self.manifest.tile_zyx
        return (z, y, x)

    def statistics(self) -> tuple[np.ndarray, np.ndarray, int, bool] | None:
        """The stored ``mean, std, voxels, sampled``, or None for a fresh start."""
        if self.manifest is None:
            return None
        s = self.manifest.stats
        dtype = np.dtype(s["dtype"])
        return (
            np.asarray(s["mean"], dtype=dtype),
            np.asarray(s["std"], dtype=dtype),
            int(s["voxels"]),
            bool(s["sampled"]),
        )

    def start(
        self,
        tile: Sequence[int],
        mean: np.ndarray,
        std: np.ndarray,
        voxels: int,
        sampled: bool,
    ) -> None:
        """Record what the partial output belongs to (a fresh start only); the
        record is written under a temporary name and renamed, so it is either
        whole or absent."""
        if self.manifest is not None:
            return
        mean, std = np.asarray(mean), np.asarray(std)
        manifest = ResumeManifest(
            **self.identity,
            tile_zyx=[int(v) for v in tile],
            stats={
                "mean": mean.tolist(),
                "std": std.tolist(),
                "dtype": str(np.result_type(mean, std)),
                "voxels": int(voxels),
                "sampled": bool(sampled),
            },
        )
        (self.partial / DONE_FOLDER).mkdir(exist_ok=True)
        tmp = self.partial / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest.model_dump(), indent=1), encoding="utf-8")
        os.replace(tmp, self.partial / MANIFEST)
        self.manifest = manifest

    @property
    def done_dir(self) -> Path:
        """The folder of the tiles' markers (see :func:`tile_marker`)."""
        return self.partial / DONE_FOLDER

    def finish(self) -> None:
        """Remove the markers and the record (the outputs are complete)."""
        remove_path(self.partial / DONE_FOLDER)
        remove_path(self.partial / MANIFEST)
