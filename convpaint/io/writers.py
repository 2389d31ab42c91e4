"""Stream predicted labels and probabilities to TIFF or zarr, atomically."""

from __future__ import annotations

import logging
import mmap
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import OutputError, OutputExistsError

from .atomic import atomic_output, is_convpaint_output, remove_path
from .readers import file_stem

__all__ = [
    "OUTPUT_SUFFIXES",
    "OutputPaths",
    "ResultWriter",
    "check_existing",
    "check_output_folder",
    "label_dtype",
    "plan_outputs",
]

logger = logging.getLogger(__name__)

OnExists = Literal["error", "skip", "overwrite"]


def label_dtype(classes: list[int]) -> np.dtype:
    """Smallest unsigned integer dtype that holds every class value."""
    top = max(classes) if classes else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


#: File suffix of each output format (the formats themselves: ``OUTPUT_FORMATS``).
OUTPUT_SUFFIXES = {"tif": ".tif", "zarr": ".zarr"}


@dataclass(frozen=True)
class OutputPaths:
    """Where one input's results go."""

    labels: Path
    probabilities: Path | None

    @property
    def all(self) -> list[Path]:
        """Every output path (labels first)."""
        return [p for p in (self.labels, self.probabilities) if p is not None]

    def existing(self) -> list[Path]:
        """The outputs that already exist."""
        return [p for p in self.all if os.path.lexists(p)]


def _relpath(path: Path, root: Path) -> str:
    try:
        rel = path.parent.relative_to(root)
    except ValueError as err:
        raise OutputError(
            f"input '{path}' is not inside '{root}', the folder that '{{relpath}}' in "
            "the output name is relative to; give inputs below one common folder"
        ) from err
    return rel.as_posix()


def plan_outputs(
    inputs: list[Path],
    output_dir: Path,
    *,
    name: str = "{stem}_labels",
    fmt: str = "tif",
    probabilities: bool = False,
    root: Path | None = None,
) -> list[OutputPaths]:
    """Output paths for every input.

    ``name`` is a template with ``{stem}`` (the input's name without suffix) and
    optionally ``{relpath}`` (the input's folder relative to ``root``, so that outputs
    mirror the input tree). Probabilities go next to the labels as
    ``{stem}_probabilities``.

    Raises
    ------
    OutputExistsError
        Two inputs would write one output, or an output would replace an input. The
        whole list is checked, so that every shard of a job array refuses alike.
    """
    suffix = OUTPUT_SUFFIXES[fmt]
    if root is None and "{relpath}" in name:
        parents = [str(p.parent) for p in inputs]
        root = Path(os.path.commonpath(parents)) if parents else output_dir
    sources = {os.path.normcase(os.path.abspath(p)): p for p in inputs}
    plans: list[OutputPaths] = []
    seen: dict[str, Path] = {}
    for path in inputs:
        stem = file_stem(path)
        fields = {"stem": stem}
        if root is not None:
            fields["relpath"] = _relpath(path, root) or "."
        labels = Path(
            os.path.abspath(output_dir / (name.format(**fields) + suffix))
        )
        probs = (
            labels.with_name(f"{stem}_probabilities{suffix}") if probabilities else None
        )
        plan = OutputPaths(labels, probs)
        for out in plan.all:
            key = os.path.normcase(os.path.abspath(out))
            if key in sources:
                raise OutputExistsError(
                    f"the output of input '{path}' would be '{out}', which is the input "
                    f"'{sources[key]}' itself; choose another output folder or name"
                )
            if key in seen:
                raise OutputExistsError(
                    f"inputs '{seen[key]}' and '{path}' would both write '{out}'; "
                    "rename one, mirror the input folders in the output name "
                    "(output_name: '{relpath}/{stem}_labels', --output-name), or predict "
                    "them into different output folders"
                )
            seen[key] = path
        plans.append(plan)
    return plans


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder that cannot be one: the path, or a folder above it, is
    a file. (Permissions and free space are found out by writing.)

    Raises
    ------
    OutputError
        Naming the file that is in the way.
    """
    for parent in (folder, *folder.parents):
        if parent.is_dir():
            return
        if os.path.lexists(parent):
            raise OutputError(
                f"output folder '{folder}' cannot be created: '{parent}' is a file, not "
                "a folder; choose another output folder"
            )


def check_existing(plan: OutputPaths, on_exists: OnExists) -> bool:
    """Apply the overwrite policy; return False when the input is to be skipped.

    Whatever the policy, an output path taken by something convpaint cannot have
    written (a folder where a TIFF goes; a folder without convpaint's zarr marker; a
    file where a zarr folder goes) is refused: it is never skipped as if done, and
    never deleted.

    Raises
    ------
    OutputExistsError
        An output exists and ``on_exists`` is ``error``.
    OutputError
        Something other than a convpaint output is in an output's place.
    """
    existing = plan.existing()
    for path in existing:
        zarr_like = path.suffix.lower() == ".zarr"
        is_dir = path.is_dir() and not path.is_symlink()
        if (is_dir and not (zarr_like and is_convpaint_output(path))) or (
            zarr_like and not is_dir
        ):
            kind = "folder" if is_dir else "file"
            raise OutputError(
                f"'{path}' is a {kind} that convpaint did not write as an output; it "
                "is left untouched and this input is not predicted. Move it away or "
                "choose another output folder or name"
            )
    if not existing:
        return True
    if on_exists == "skip":
        logger.info("skipping: %s exists", existing[0])
        return False
    if on_exists == "error":
        raise OutputExistsError(
            f"output '{existing[0]}' exists; pass --overwrite to replace it or "
            "--skip-existing to keep it (config: predict.on_exists)"
        )
    return True


class ResultWriter:
    """Accepts tiles of labels (and probabilities) and writes complete files at the end.

    TIFF outputs are assembled in a disk-backed memory map next to the output (memory
    stays bounded by the tile size) and written as an ImageJ-compatible, zlib-compressed
    hyperstack; zarr outputs are written chunk by chunk. Either way the final names only
    appear after :meth:`finish`, and :meth:`abort` removes every temporary file.
    """

    def __init__(
        self,
        paths: OutputPaths,
        *,
        shape_yx: tuple[int, int],
        classes: list[int],
        fmt: Literal["tif", "zarr"],
        chunk: int,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.paths = paths
        self.fmt = fmt
        self.classes = list(classes)
        self.dtype = label_dtype(self.classes)
        self.attrs = attrs or {}
        self._stack = ExitStack()
        self._targets: list[tuple[Path, Any]] = []
        n = len(self.classes)
        self._labels = self._open(paths.labels, shape_yx, self.dtype, chunk, "YX")
        self._probs = (
            self._open(
                paths.probabilities, (n, *shape_yx), np.dtype(np.float32), chunk, "CYX"
            )
            if paths.probabilities is not None
            else None
        )

    def _open(
        self,
        final: Path,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunk: int,
        axes: str,
    ) -> Any:
        tmp = self._stack.enter_context(atomic_output(final))
        if self.fmt == "zarr":
            import zarr

            chunks = (*shape[:-2], min(chunk, shape[-2]), min(chunk, shape[-1]))
            arr = zarr.open_array(
                str(tmp),
                mode="w",
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                zarr_format=2,
                fill_value=0,
            )
            arr.attrs.update(
                {
                    "_ARRAY_DIMENSIONS": [a.lower() for a in axes],
                    "axes": axes,
                    **self.attrs,
                }
            )
            if axes == "CYX":
                arr.attrs["classes"] = self.classes
            self._targets.append((tmp, arr))
            return arr
        raw = tmp.with_name(tmp.name + ".raw")
        self._stack.callback(remove_path, raw)
        mm = np.lib.format.open_memmap(raw, mode="w+", dtype=dtype, shape=shape)
        self._targets.append((tmp, (mm, axes)))
        return mm

    def write(
        self,
        tile: tuple[int, int, int, int],
        labels: NDArray,
        probabilities: NDArray | None = None,
    ) -> None:
        """Store one tile: labels ``(y, x)``, probabilities ``(K, y, x)``."""
        y0, y1, x0, x1 = tile
        self._labels[y0:y1, x0:x1] = labels
        if self._probs is not None and probabilities is not None:
            self._probs[:, y0:y1, x0:x1] = probabilities
        if self.fmt == "tif":
            self._release_pages()

    def _release_pages(self) -> None:
        """Flush the disk-backed maps and drop their pages from resident memory.

        The pages are file-backed, so the kernel could reclaim them anyway, but they
        would count towards the job's memory (cgroups, SLURM) until it does.
        """
        for _, (mm, _) in self._targets:
            mm.flush()
            raw = getattr(mm, "_mmap", None)
            if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
                raw.madvise(mmap.MADV_DONTNEED)

    def finish(self) -> list[Path]:
        """Write the final files and move them into place."""
        import tifffile

        for tmp, target in self._targets:
            if self.fmt == "tif":
                mm, axes = target
                mm.flush()
                imagej = mm.dtype in (np.uint8, np.uint16, np.float32)
                with tifffile.TiffWriter(
                    tmp, bigtiff=mm.nbytes > 2**31, imagej=imagej
                ) as tw:
                    tw.write(
                        mm,
                        compression="zlib",
                        metadata={"axes": axes},
                        rowsperstrip=64,
                    )
        self._stack.close()  # renames every temporary output into place
        return [
            p for p in (self.paths.labels, self.paths.probabilities) if p is not None
        ]

    def abort(self) -> None:
        """Remove every temporary file; the final names are untouched."""
        self._targets.clear()
        # atomic_output removes its temporary when the block exits with an exception
        try:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass
