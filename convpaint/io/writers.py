"""Stream predicted labels and probabilities to TIFF, zarr or OME-Zarr, atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import OutputError, OutputExistsError

from .atomic import atomic_output, is_convpaint_output, remove_path
from .axes import LABEL_AXES, check_axes, probability_axes
from .ome_zarr import (
    build_levels,
    image_label_attrs,
    level_count,
    multiscales_attrs,
    omero_attrs,
)
from .readers import file_stem
from .resume import RESUMABLE_FORMATS
from .tiff_out import TiffStream, plan_tiff, write_tiff
from .zarr_out import ZarrTarget, create_zarr_array

__all__ = [
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "OutputFormat",
    "OutputPaths",
    "ResultWriter",
    "apply_on_exists",
    "check_existing",
    "check_output_folder",
    "label_dtype",
    "plan_outputs",
]

logger = logging.getLogger(__name__)

OnExists = Literal["error", "skip", "overwrite"]

#: Output formats, and the suffix each one's files get.
OutputFormat = Literal["tif", "zarr", "ome-zarr"]
OUTPUT_FORMATS: tuple[str, ...] = ("tif", "zarr", "ome-zarr")
OUTPUT_SUFFIXES = {"tif": ".tif", "zarr": ".zarr", "ome-zarr": ".ome.zarr"}


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
        labels = Path(os.path.abspath(output_dir / (name.format(**fields) + suffix)))
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
    return apply_on_exists(existing, on_exists, setting="predict.on_exists")


def apply_on_exists(
    existing: list[Path],
    on_exists: OnExists,
    *,
    setting: str,
    log: logging.Logger = logger,
) -> bool:
    """The overwrite policy for an input whose ``existing`` outputs were found;
    False means skip the input (logged on ``log``).

    Raises
    ------
    OutputExistsError
        An output exists and ``on_exists`` is ``error`` (the message names the
        config ``setting``).
    """
    if not existing:
        return True
    if on_exists == "skip":
        log.info("skipping: %s exists", existing[0])
        return False
    if on_exists == "error":
        raise OutputExistsError(
            f"output '{existing[0]}' exists; pass --overwrite to replace it or "
            f"--skip-existing to keep it (config: {setting})"
        )
    return True


class ResultWriter:
    """Targets that prediction tasks store results into, and complete files at the end.

    The engine stores labels (and probabilities) chunk by chunk into
    :attr:`labels_target` and :attr:`probabilities_target`, e.g. with
    ``dask.array.store(..., lock=False)`` from threads or ``dask.distributed``
    worker processes (the targets pickle; workers must see the output folder).
    Then :meth:`finish` completes the files; on any failure :meth:`abort` removes
    everything written.

    Nothing appears under a final name before :meth:`finish` returns: every output
    is written under a hidden temporary name in the output folder (``.NAME.*.partial``)
    and renamed into place when complete. For zarr and OME-Zarr folders the rename
    is the completion signal: a job that waits for ``NAME.zarr`` to exist can open it
    lazily (``dask.array.from_zarr``) and read complete data. An existing output is
    replaced only by a complete new one (callers decide beforehand whether that is
    allowed: :func:`check_existing`).

    Formats (:data:`OUTPUT_FORMATS`):

    - ``zarr``: one zarr v2 array per output in the output's layout (``out_axes``;
      probabilities add C in NGFF order), attributes ``_ARRAY_DIMENSIONS``,
      ``axes``, ``classes``, ``spacing``/``unit`` and ``attrs``.
    - ``ome-zarr``: an NGFF 0.4 image group per output with ``levels`` resolution
      levels; the labels carry ``image-label`` metadata (napari and Fiji open them
      as labels), the probabilities are an image with one channel per class.
    - ``tif``: with ``stream`` (tasks in threads of this process), labels that
      go to an ImageJ hyperstack are written into the file while they arrive,
      strip by strip (:class:`~convpaint.io.tiff_out.TiffStream`); otherwise
      results go to a temporary zarr array first, then are streamed into an
      ImageJ hyperstack (OME BigTIFF beyond 4 GB) one plane at a time
      (:func:`~convpaint.io.tiff_out.write_tiff`).

    Parameters
    ----------
    paths : OutputPaths
        Final output paths (probabilities None: labels only).
    shape_tzyx : tuple of int
        ``(T, Z, Y, X)`` of the image.
    out_axes : str
        Axes of the label output: the input's non-C axes in canonical order (a
        subset of ``TZYX`` with Y and X; see :func:`~convpaint.io.axes.output_axes`).
        T or Z left out must have size 1.
    classes : list of int
        Class values (positive); labels use :func:`label_dtype` of them and the
        probabilities one channel per class, in this order.
    fmt : {"tif", "zarr", "ome-zarr"}
        Output format.
    chunks_tzyx : tuple of int
        Chunk shape ``(t, z, y, x)`` of the targets (clipped to the shape). Store
        regions aligned to it (the last chunk per axis may be smaller) so that no
        two tasks write one chunk.
    spacing : tuple of float, optional
        Pixel size ``(z, y, x)`` written to the outputs' metadata.
    unit : str, optional
        NGFF length unit of ``spacing`` (``"micrometer"``).
    attrs : dict, optional
        Provenance, e.g. ``{"convpaint_model": ..., "source": ...}``: zarr
        attributes, ImageJ ``Info`` or OME ``Description``. ``source``, when it is
        a zarr image, also becomes the OME-Zarr labels' ``image-label`` source.
    levels : int
        Resolution levels of OME-Zarr outputs (1: full resolution only); other
        formats accept only 1.
    stream : bool
        Every block is stored from a thread of this process (the local
        scheduler), so a TIFF of labels can be written as they arrive instead of
        through a temporary zarr array.
    resume : bool
        zarr and OME-Zarr only: write under the fixed name of
        :func:`~convpaint.io.resume.resume_path`, reopen what an earlier run left
        there (the caller has checked it with
        :class:`~convpaint.io.resume.ResumeState`) and keep it when the run fails.

    Attributes
    ----------
    labels_target : ZarrTarget or TiffStream
        Shape ``(T, Z, Y, X)``, dtype :attr:`dtype`.
    probabilities_target : ZarrTarget or None
        Shape ``(T, K, Z, Y, X)``, float32, K = ``len(classes)``.
    """

    def __init__(
        self,
        paths: OutputPaths,
        *,
        shape_tzyx: tuple[int, int, int, int],
        out_axes: str,
        classes: list[int],
        fmt: OutputFormat,
        chunks_tzyx: tuple[int, int, int, int],
        spacing: tuple[float, float, float] | None = None,
        unit: str | None = None,
        attrs: dict[str, Any] | None = None,
        levels: int = 1,
        stream: bool = False,
        resume: bool = False,
    ) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"fmt must be one of {OUTPUT_FORMATS}, not {fmt!r}")
        out_axes = check_axes(out_axes, channels=False)
        shape_tzyx = tuple(int(s) for s in shape_tzyx)  # type: ignore[assignment]
        sizes = dict(zip(LABEL_AXES, shape_tzyx, strict=True))
        if "".join(a for a in LABEL_AXES if a in out_axes) != out_axes or any(
            sizes[a] != 1 for a in LABEL_AXES if a not in out_axes
        ):
            raise ValueError(
                f"out_axes {out_axes} must be a subset of TZYX in that order, leaving "
                f"out only axes of size 1 (shape_tzyx {shape_tzyx})"
            )
        if len(chunks_tzyx) != 4 or min(chunks_tzyx) < 1:
            raise ValueError(f"chunks_tzyx must be 4 positive sizes, not {chunks_tzyx}")
        if levels < 1 or (levels > 1 and fmt != "ome-zarr"):
            raise ValueError(f"levels={levels}: more than 1 only for fmt='ome-zarr'")
        if resume and fmt not in RESUMABLE_FORMATS:
            raise ValueError(f"resume needs fmt in {RESUMABLE_FORMATS}, not {fmt!r}")
        self.resume = resume
        self.paths = paths
        self.fmt = fmt
        self.shape_tzyx = shape_tzyx
        self.out_axes = out_axes
        self.classes = [int(c) for c in classes]
        self.dtype = label_dtype(self.classes)
        self.chunks_tzyx = tuple(
            min(int(c), s) for c, s in zip(chunks_tzyx, shape_tzyx, strict=True)
        )
        self.spacing = spacing
        self.unit = unit
        self.attrs = dict(attrs or {})
        self.stream = stream
        self.levels = (
            level_count(shape_tzyx[2:], levels) if fmt == "ome-zarr" else 1  # type: ignore[arg-type]
        )
        self._stack = ExitStack()
        self._finishers: list[Callable[[], None]] = []
        self._done = False
        try:
            self.labels_target: ZarrTarget | TiffStream = self._open(
                paths.labels, probabilities=False
            )
            self.probabilities_target: ZarrTarget | None = (
                self._open(paths.probabilities, probabilities=True)
                if paths.probabilities is not None
                else None
            )
        except BaseException:
            self.abort()
            raise

    # --- creating the targets ---------------------------------------------------

    def _layout(self, probabilities: bool) -> tuple[str, tuple[int, ...], str]:
        """Engine layout axes, its shape, and the axes stored in the output."""
        if probabilities:
            t, z, y, x = self.shape_tzyx
            return (
                "TCZYX",
                (t, len(self.classes), z, y, x),
                probability_axes(self.out_axes, self.fmt),
            )
        return LABEL_AXES, self.shape_tzyx, self.out_axes

    def _chunks(self, layout: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        per_axis = dict(zip(LABEL_AXES, self.chunks_tzyx, strict=True))
        per_axis["C"] = shape[layout.index("C")] if "C" in layout else 1
        return tuple(per_axis[a] for a in layout)

    def _zarr_attrs(self, axes: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "_ARRAY_DIMENSIONS": [a.lower() for a in axes],
            "axes": axes,
            "classes": self.classes,
        }
        if self.spacing is not None:
            attrs["spacing"] = {
                a: float(v)
                for a, v in zip("zyx", self.spacing, strict=True)
                if a.upper() in axes
            }
        if self.unit:
            attrs["unit"] = self.unit
        return {**attrs, **self.attrs}

    def _open(self, final: Path, *, probabilities: bool) -> Any:
        layout, shape, axes = self._layout(probabilities)
        dtype = np.dtype(np.float32) if probabilities else self.dtype
        chunks = self._chunks(layout, shape)
        keep = tuple(a in axes for a in layout)
        if self.resume:
            tmp = self._stack.enter_context(atomic_output(final, resumable=True))
            if tmp.is_dir():  # an earlier run's partial output: continue it
                if self.fmt == "zarr":
                    return ZarrTarget(tmp, shape=shape, keep=keep)
                self._add_levels(tmp, axes, probabilities)
                return ZarrTarget(tmp / "0", shape=shape, keep=keep)
        else:
            tmp = self._stack.enter_context(atomic_output(final))
        if self.fmt == "tif" and self.stream and not probabilities:
            plan = plan_tiff(
                shape,
                dtype,
                source_axes=layout,
                out_axes=axes,
                spacing=self.spacing,
                unit=self.unit,
                info={**self.attrs, "classes": self.classes},
            )
            if plan.imagej:
                stream = TiffStream(
                    tmp,
                    shape=shape,  # type: ignore[arg-type]
                    chunks=chunks,  # type: ignore[arg-type]
                    dtype=dtype,
                    plan=plan,
                )
                # stopped before the temporary file is removed (callbacks run last
                # in, first out), and after finish() on success (then a no-op)
                self._stack.callback(stream.abort)
                self._finishers.append(stream.finish)
                return stream
        if self.fmt == "tif":
            # scratch array in the engine's layout, one plane per chunk, so that the
            # TIFF can be written plane by plane without decompressing neighbours
            # (finer chunks than the engine's blocks still never get shared)
            # named after the temporary, so a later run that finds this run dead
            # removes it with the rest of its partial files
            scratch = tmp.with_name(tmp.name + ".scratch.zarr")
            self._stack.callback(remove_path, scratch)
            plane_chunks = tuple(
                c if a in "YX" else 1 for a, c in zip(layout, chunks, strict=True)
            )
            create_zarr_array(
                scratch, shape=shape, chunks=plane_chunks, dtype=dtype, fast=True
            )
            self._finishers.append(
                lambda: self._write_tiff(tmp, scratch, layout, axes, probabilities)
            )
            return ZarrTarget(scratch, shape=shape, keep=(True,) * len(shape))
        stored_shape = tuple(n for n, k in zip(shape, keep, strict=True) if k)
        stored_chunks = tuple(c for c, k in zip(chunks, keep, strict=True) if k)
        if self.fmt == "zarr":
            create_zarr_array(
                tmp,
                shape=stored_shape,
                chunks=stored_chunks,
                dtype=dtype,
                attrs=self._zarr_attrs(axes),
            )
            return ZarrTarget(tmp, shape=shape, keep=keep)
        import zarr

        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        name = final.name.removesuffix(".ome.zarr").removesuffix(".zarr")
        group_attrs = multiscales_attrs(
            axes,
            spacing=self.spacing,
            unit=self.unit,
            levels=self.levels,
            name=name,
            method="mean" if probabilities else "nearest",
        )
        if probabilities:
            group_attrs |= omero_attrs(self.classes)
        else:
            group_attrs |= image_label_attrs(
                self.classes, source=self.attrs.get("source"), final=final
            )
        group.attrs.update({**group_attrs, "classes": self.classes, **self.attrs})
        create_zarr_array(
            Path(tmp) / "0",
            shape=stored_shape,
            chunks=stored_chunks,
            dtype=dtype,
            nested=True,
        )
        self._add_levels(tmp, axes, probabilities)
        return ZarrTarget(Path(tmp) / "0", shape=shape, keep=keep)

    def _add_levels(self, group: Path, axes: str, probabilities: bool) -> None:
        """Compute the OME-Zarr group's levels above 0 when finishing."""
        if self.levels > 1:
            self._finishers.append(
                lambda: build_levels(
                    group,
                    axes=axes,
                    levels=self.levels,
                    method="mean" if probabilities else "nearest",
                )
            )

    def _write_tiff(
        self, tmp: Path, scratch: Path, layout: str, axes: str, probabilities: bool
    ) -> None:
        import zarr

        source = zarr.open_array(str(scratch), mode="r", zarr_format=2)
        write_tiff(
            tmp,
            source,
            source_axes=layout,
            out_axes=axes,
            spacing=self.spacing,
            unit=self.unit,
            info={**self.attrs, "classes": self.classes},
        )
        remove_path(scratch)

    # --- storing and finishing ------------------------------------------------------

    def write(
        self,
        region: tuple[slice, slice, slice, slice],
        labels: NDArray,
        probabilities: NDArray | None = None,
    ) -> None:
        """Store one block from the calling process (a convenience for serial loops).

        Parameters
        ----------
        region : tuple of slice
            ``(t, z, y, x)`` slices, aligned to :attr:`chunks_tzyx`.
        labels : numpy.ndarray
            Shape of the region.
        probabilities : numpy.ndarray, optional
            Shape ``(t, K, z, y, x)`` of the region; ignored without a
            probabilities output.
        """
        self.labels_target[region] = labels
        if self.probabilities_target is not None and probabilities is not None:
            t, z, y, x = region
            self.probabilities_target[t, slice(None), z, y, x] = probabilities

    def finish(self, before_rename: Callable[[], None] | None = None) -> list[Path]:
        """Complete every output and move it to its final name.

        TIFF files are written from their scratch arrays, OME-Zarr levels above 0
        are computed (with dask's current scheduler), ``before_rename`` is called
        (e.g. :meth:`~convpaint.io.resume.ResumeState.finish`), then the temporary
        names are renamed. On failure everything is removed (a resumable output is
        kept) and the error propagates.

        Returns
        -------
        list of Path
            The final paths: labels, then probabilities if any.
        """
        try:
            for finisher in self._finishers:
                finisher()
            if before_rename is not None:
                before_rename()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._stack.close()  # renames every temporary output into place
        return [
            p for p in (self.paths.labels, self.paths.probabilities) if p is not None
        ]

    def abort(self) -> None:
        """Remove every temporary file (a resumable output is kept, to be
        continued); the final names are untouched."""
        self._finishers.clear()
        self._done = True
        # atomic_output removes its temporary when the block exits with an exception
        try:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Abort on an exception, or when :meth:`finish` was never called."""
        if not self._done:
            self.abort()
