"""Batch prediction: plan inputs and outputs, shard them, run the engine over each.

Everything that makes unattended runs safe lives here: output names are checked for
collisions over the *whole* input list before a shard is taken (every task of a job
array refuses alike); each output is claimed exclusively before it is written
(:mod:`convpaint.io.claims`), so concurrent runs never replace each other's results
and runs with ``on_exists="skip"`` share the work; what a killed run left behind is
removed by the next run that claims the output; and with ``on_error="continue"`` a
failing input is recorded and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from convpaint import progress
from convpaint.config import (
    ClusterConfig,
    Config,
    TilingConfig,
)
from convpaint.engine import PredictResult, predict_image
from convpaint.errors import ConfigError, ConvpaintError, OutputBusyError, OutputError
from convpaint.io.atomic import describe_os_error, partial_paths, remove_path
from convpaint.io.claims import Claim, acquire
from convpaint.io.readers import expand_inputs, input_root, open_image
from convpaint.io.resume import RESUMABLE_FORMATS, resume_path
from convpaint.io.writers import (
    OutputPaths,
    check_existing,
    check_output_folder,
    plan_outputs,
)
from convpaint.model_io import load_model
from convpaint.runtime import available_cpus, thread_budget

__all__ = [
    "BatchListener",
    "Plan",
    "list_inputs",
    "plan_batch",
    "plan_prediction",
    "predict",
    "predict_from_config",
    "result_status",
    "shard_from_slurm",
]

logger = logging.getLogger(__name__)

OnExists = Literal["error", "skip", "overwrite"]
OnError = Literal["stop", "continue"]


@dataclass(frozen=True)
class Plan:
    """The inputs of one run with their outputs, after sharding."""

    items: list[tuple[Path, OutputPaths]]
    """This shard's inputs and their outputs, in order."""
    n_total: int
    """Inputs in the whole list, before sharding."""
    digest: str
    """SHA-256 of the whole input list (one path per line): equal in every task of
    a job array exactly when they all saw the same list."""
    root: Path
    """The folder ``{relpath}`` is relative to."""
    shard: tuple[int, int] | None = None


class BatchListener:
    """Hooks to follow a batch as it runs (the CLI prints from them); no-ops here."""

    def planned(self, plan: Plan) -> None:
        """The inputs are known; nothing has been written yet."""

    def started(self, index: int, path: Path, paths: OutputPaths) -> None:
        """Input ``index`` (1-based) of the plan starts."""

    def finished(self, result: PredictResult) -> None:
        """An input is done, skipped or failed (``result.error``)."""


def result_status(result: PredictResult) -> Literal["done", "skipped", "failed"]:
    """``done``, ``skipped`` or ``failed``."""
    if result.error is not None:
        return "failed"
    return "skipped" if result.skipped else "done"


def shard_from_slurm(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """This task's ``(index, count)`` in a SLURM job array (``--shard auto``).

    The array's indices must form one arithmetic sequence (``--array=0-19``,
    ``1-20``, ``0-99:10``; a ``%`` throttle is fine): the task with id
    ``SLURM_ARRAY_TASK_ID`` gets shard ``(id - MIN) / STEP`` of ``COUNT``.

    Raises
    ------
    ValueError
        Not in a job array, or an index list that cannot be numbered (``1,3,7``); the
        message says what was found and to use ``--shard INDEX/COUNT`` instead.
    """
    env = os.environ if environ is None else environ
    names = ("ID", "MIN", "MAX", "COUNT", "STEP")
    raw = {n: env.get(f"SLURM_ARRAY_TASK_{n}") for n in names}
    if raw["ID"] is None:
        raise ValueError(
            "--shard auto needs SLURM_ARRAY_TASK_ID, which is not set: this is not a "
            "SLURM job array task; submit with sbatch --array=..., or give --shard "
            "INDEX/COUNT"
        )
    try:
        vals = {n: int(v) for n, v in raw.items() if v not in (None, "")}
    except ValueError:
        found = ", ".join(f"SLURM_ARRAY_TASK_{n}={v}" for n, v in raw.items() if v)
        raise ValueError(
            f"--shard auto: SLURM array variables are not integers ({found}); "
            "give --shard INDEX/COUNT"
        ) from None
    task = vals["ID"]
    low = vals.get("MIN", 0)
    step = vals.get("STEP")
    count = vals.get("COUNT")
    high = vals.get("MAX")
    if step is None and count is not None and high is not None:
        step = (high - low) // (count - 1) if count > 1 else 1
    step = step or 1
    if count is None:
        if high is None:
            raise ValueError(
                "--shard auto: SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_MAX are both "
                "missing, so the number of tasks is unknown; give --shard INDEX/COUNT"
            )
        count = (high - low) // step + 1
    found = f"task id {task}, min {low}, max {high}, step {step}, count {count}"
    index, rest = divmod(task - low, step)
    consistent = (
        count >= 1
        and step >= 1
        and rest == 0
        and 0 <= index < count
        and (high is None or high == low + (count - 1) * step)
    )
    if not consistent:
        raise ValueError(
            f"--shard auto: the SLURM array is not one evenly spaced range ({found}), "
            "so tasks cannot be numbered 0..COUNT-1; use --array=A-B or A-B:STEP, or "
            "give --shard INDEX/COUNT yourself"
        )
    return index, count


def _digest(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(os.fsencode(path) + b"\n")
    return h.hexdigest()


def list_inputs(
    inputs: Sequence[str], *, shard: tuple[int, int] | None = None
) -> tuple[list[Path], int, str]:
    """This shard's input files, the size of the whole list and its digest."""
    files = expand_inputs(list(inputs), what="predict.inputs")
    mine = files[shard[0] :: shard[1]] if shard is not None else files
    return mine, len(files), _digest(files)


def plan_batch(
    inputs: Sequence[str],
    output_dir: Path,
    *,
    fmt: str = "tif",
    probabilities: bool = False,
    output_name: str = "{stem}_labels",
    shard: tuple[int, int] | None = None,
) -> Plan:
    """Expand the inputs, name every output, check the names, then take the shard.

    Raises
    ------
    DataError
        An input is missing or a pattern matches nothing.
    OutputExistsError
        Two inputs of the whole list would write one output, or an output would
        replace an input.
    """
    files = expand_inputs(list(inputs), what="predict.inputs")
    root = input_root(list(inputs))
    outputs = plan_outputs(
        files,
        Path(output_dir),
        name=output_name,
        fmt=fmt,
        probabilities=probabilities,
        root=root,
    )
    items = list(zip(files, outputs, strict=True))
    if shard is not None:
        index, count = shard
        items = items[index::count]
    return Plan(items, len(files), _digest(files), root, shard)


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
    return plan_batch(
        inputs,
        output_dir,
        fmt=fmt,
        probabilities=probabilities,
        output_name=output_name,
        shard=shard,
    ).items


_TOKEN = re.compile(r"^[0-9a-f]{8,32}$")


def _claim_outputs(paths: OutputPaths) -> list[Claim]:
    """Claim every output of one input; remove what a dead holder left behind."""
    claims: list[Claim] = []
    try:
        for out in paths.all:
            claim, broken = acquire(out)
            claims.append(claim)
            if broken is not None and _TOKEN.match(broken.token):
                for leftover in partial_paths(out, broken.token):
                    if os.path.lexists(leftover):
                        logger.warning(
                            "removing '%s', left by a run that was killed", leftover
                        )
                        remove_path(leftover)
    except BaseException:
        for claim in claims:
            claim.release()
        raise
    return claims


def _pixels(path: Path, axes: str | None, fallback: str) -> int | None:
    """Voxels of an input (header only), for the Mpx/s of progress lines."""
    try:
        with open_image(path, axes, fallback=fallback) as source:
            return math.prod(source.shape_tzyx)
    except Exception:  # the engine reports the real problem
        return None


def _predict_one(
    model: object,
    path: Path,
    paths: OutputPaths,
    *,
    axes: str | None,
    fmt: str,
    tiling: TilingConfig,
    threads: int,
    on_exists: OnExists,
    spacing: dict[str, float] | None,
    levels: int,
    cluster: ClusterConfig | None,
    resume: bool,
) -> PredictResult:
    try:
        claims = _claim_outputs(paths)
    except OutputBusyError as err:
        if on_exists != "skip":
            raise
        logger.info("skipping %s: %s", path, err)
        return PredictResult(
            input=path,
            outputs=[],
            skipped=True,
            skip_reason="another run is writing it",
        )
    try:
        # decided again under the claim: another run may have finished it meanwhile
        if not check_existing(paths, on_exists):
            return PredictResult(
                input=path, outputs=paths.existing(), skipped=True, skip_reason="exists"
            )
        logger.info("predicting %s -> %s", path, paths.labels)
        if not resume and os.path.lexists(resume_path(paths.labels)):
            logger.warning(
                "'%s' holds the partial result of an earlier --resume run; it is left "
                "alone and this input is predicted afresh (continue it with --resume, "
                "or delete it)",
                resume_path(paths.labels),
            )
        return predict_image(
            model,  # type: ignore[arg-type]
            path,
            paths,
            axes=axes,
            fmt=fmt,  # type: ignore[arg-type]
            tiling=tiling,
            threads=threads,
            spacing=spacing,
            levels=levels,
            cluster=cluster,
            resume=resume,
        )
    finally:
        for claim in claims:
            claim.release()


def _as_user_error(err: Exception, path: Path, paths: OutputPaths) -> ConvpaintError:
    if isinstance(err, ConvpaintError):
        return err
    assert isinstance(err, OSError)
    return OutputError(
        f"file system error while predicting '{path}' into '{paths.labels}': "
        f"{describe_os_error(err)}"
    )


def predict(
    model_path: Path | str,
    inputs: Sequence[str],
    output_dir: Path | str,
    *,
    axes: str | None = None,
    fmt: str = "tif",
    probabilities: bool = False,
    output_name: str = "{stem}_labels",
    on_exists: OnExists = "error",
    on_error: OnError = "stop",
    tiling: TilingConfig | None = None,
    shard: tuple[int, int] | None = None,
    spacing: dict[str, float] | None = None,
    levels: int = 1,
    cluster: ClusterConfig | None = None,
    listener: BatchListener | None = None,
    resume: bool = False,
) -> list[PredictResult]:
    """Predict every input with a model, tile by tile, writing labels (and probabilities).

    Parameters
    ----------
    model_path : path
        The model file.
    inputs : list of str
        Files, folders or glob patterns; an existing path is always taken literally.
    output_dir : path
        Where the outputs go (named by ``output_name``, see
        :func:`convpaint.io.writers.plan_outputs`).
    on_exists : {"error", "skip", "overwrite"}
        An existing output: stop before any work, skip its input, or replace it. With
        ``skip``, an output another run is writing is skipped too.
    on_error : {"stop", "continue"}
        A failing input (bad file, full disk ...): raise at once, or record it in its
        result (``error``) and go on.
    shard : (index, count), optional
        Predict only inputs ``index, index + count, ...`` of the whole sorted list.
    axes, spacing : optional
        Override what the files declare (axes default to the files' own, else the
        model's).
    levels : int
        OME-Zarr resolution levels.
    cluster : ClusterConfig, optional
        The SLURM cluster of ``tiling.scheduler: slurm``.
    listener : BatchListener, optional
        Told about the plan and each input as it starts and ends.
    resume : bool
        Continue the partial outputs of earlier runs that stopped early, and keep
        this run's partial output if it stops (zarr and OME-Zarr, any scheduler;
        see :mod:`convpaint.io.resume`).

    Returns
    -------
    list of PredictResult
        One per input of the shard, in order.

    Raises
    ------
    DataError, ModelBundleError, OutputExistsError, OutputBusyError, OutputError,
    WeightsError
        With ``on_error="stop"``: the first failure (the listener has already heard
        about every finished input). KeyboardInterrupt and
        :class:`convpaint.signals.Terminated` pass through after the output in
        progress was removed and its claim released.
    """
    tiling = tiling or TilingConfig()
    listener = listener or BatchListener()
    if resume and fmt not in RESUMABLE_FORMATS:
        raise ConfigError(
            f"--resume (predict.resume) needs zarr or ome-zarr output, not {fmt}: a "
            "TIFF is written in order and cannot be continued; use --format zarr"
        )
    plan = plan_batch(
        inputs,
        Path(output_dir),
        fmt=fmt,
        probabilities=probabilities,
        output_name=output_name,
        shard=shard,
    )
    logger.info(
        "%d input(s) of %d in this run (list sha256 %s)",
        len(plan.items),
        plan.n_total,
        plan.digest[:12],
    )
    threads = tiling.threads or available_cpus()
    model = load_model(model_path, n_jobs=threads)
    from convpaint.config import check_axes

    try:
        use_axes = check_axes(axes) if axes else None
    except ValueError as err:
        raise ConfigError(f"predict axes: {err}") from err
    # fail before any work, not after hours of it: existing outputs (policy "error")
    # and anything in an output's place that convpaint did not write
    for folder in sorted({paths.labels.parent for _, paths in plan.items}):
        check_output_folder(folder)
    for _, paths in plan.items:
        check_existing(paths, on_exists)
    listener.planned(plan)
    results: list[PredictResult] = []
    n = len(plan.items)
    with (
        thread_budget(threads),
        progress.bar(n, "images", "file") as pbar_files,
    ):
        for index, (path, paths) in enumerate(plan.items, 1):
            listener.started(index, path, paths)
            voxels = (
                _pixels(path, use_axes, model.meta["axes"])
                if progress.wants_rates()
                else None
            )
            progress.set_item(index, n, path.name, voxels)
            try:
                result = _predict_one(
                    model,
                    path,
                    paths,
                    axes=use_axes,
                    fmt=fmt,
                    tiling=tiling,
                    threads=threads,
                    on_exists=on_exists,
                    spacing=spacing,
                    levels=levels,
                    cluster=cluster,
                    resume=resume,
                )
            except (ConvpaintError, OSError) as err:
                error = _as_user_error(err, path, paths)
                result = PredictResult(input=path, outputs=[], error=str(error))
                results.append(result)
                listener.finished(result)
                if on_error == "stop":
                    if error is err:
                        raise
                    raise error from err
                logger.warning(
                    "'%s' failed, going on with the next input: %s", path, error
                )
                pbar_files.update(1)
                continue
            results.append(result)
            listener.finished(result)
            pbar_files.update(1)
    return results


def predict_from_config(
    config: Config,
    *,
    on_exists: OnExists | None = None,
    on_error: OnError | None = None,
    shard: tuple[int, int] | None = None,
    inputs: Sequence[str] | None = None,
    listener: BatchListener | None = None,
    resume: bool | None = None,
) -> list[PredictResult]:
    """Run the config's predict section (see :func:`predict`).

    ``on_exists``, ``on_error``, ``resume`` and ``inputs`` (a frozen list replacing
    ``predict.inputs``) override the config for this run.
    """
    if config.predict is None:
        raise ConfigError(
            "the config has no predict section; add predict: {model, inputs, output_dir}"
        )
    p = config.predict
    assert p.model is not None  # resolve_paths fills it from train.model
    return predict(
        p.model,
        list(inputs) if inputs is not None else p.inputs,
        p.output_dir,
        axes=p.axes,
        fmt=p.format,
        probabilities=p.probabilities,
        output_name=p.output_name,
        on_exists=on_exists or p.on_exists,
        on_error=on_error or p.on_error,
        tiling=config.tiling,
        shard=shard,
        spacing=p.spacing.as_dict() if p.spacing else None,
        levels=p.levels,
        cluster=config.cluster,
        listener=listener,
        resume=p.resume if resume is None else resume,
    )
