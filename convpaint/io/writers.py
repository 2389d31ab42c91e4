"""Stream predicted labels and probabilities to TIFF or zarr, atomically."""

from __future__ import annotations

import logging
import mmap
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import OutputExistsError

from .atomic import atomic_output, remove_path
from .readers import file_stem

__all__ = ["OutputPaths", "ResultWriter", "label_dtype", "plan_outputs"]

logger = logging.getLogger(__name__)

OnExists = Literal["error", "skip", "overwrite"]


def label_dtype(classes: list[int]) -> np.dtype:
    """Smallest unsigned integer dtype that holds every class value."""
    top = max(classes) if classes else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


@dataclass(frozen=True)
class OutputPaths:
    """Where one input's results go."""

    labels: Path
    probabilities: Path | None

    def existing(self) -> list[Path]:
        """The outputs that already exist."""
        return [
            p for p in (self.labels, self.probabilities) if p is not None and p.exists()
        ]


def plan_outputs(
    inputs: list[Path],
    output_dir: Path,
    *,
    name: str = "{stem}_labels",
    fmt: Literal["tif", "zarr"] = "tif",
    probabilities: bool = False,
) -> list[OutputPaths]:
    """Output paths for every input, refusing two inputs that map to one output."""
    suffix = ".tif" if fmt == "tif" else ".zarr"
    plans, seen = [], {}
    for path in inputs:
        stem = file_stem(path)
        labels = output_dir / (name.format(stem=stem) + suffix)
        probs = (
            output_dir / (f"{stem}_probabilities{suffix}") if probabilities else None
        )
        if labels in seen:
            raise OutputExistsError(
                f"inputs '{seen[labels]}' and '{path}' would both write '{labels}'; "
                "rename one, or predict them into different output folders"
            )
        seen[labels] = path
        plans.append(OutputPaths(labels, probs))
    return plans


def check_existing(plan: OutputPaths, on_exists: OnExists) -> bool:
    """Apply the overwrite policy; return False when the input is to be skipped."""
    existing = plan.existing()
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
