"""The `convpaint` command: a thin typer layer over :mod:`convpaint.api`.

Streams, for pipelines and batch logs: **stdout carries results only** (one line per
input, or JSON lines with ``--json``); messages, warnings, logs and progress go to
stderr. While a command runs, Python-level prints of any library are redirected to
stderr, and :func:`main` also points file descriptor 1 at stderr (results keep a
private copy of the real stdout), so not even C extensions can reach stdout.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from convpaint._version import __version__
from convpaint.cli_objects import objects_app
from convpaint.cli_shared import Debug, Verbose, evaluate_objects, exists_policy, plain
from convpaint.errors import ConvpaintError

if TYPE_CHECKING:
    from convpaint.batch import Plan
    from convpaint.engine import PredictResult
    from convpaint.io.writers import OutputPaths

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # a bug's traceback: boxed on a terminal, plain (unwrapped, greppable) in logs
    pretty_exceptions_enable=sys.stderr.isatty(),
    add_completion=False,
    # boxed, wrapped rich panels only on a terminal; plain one-line errors in logs
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Pixel classification from sparse scribbles: CNN/filter features + random forest.",
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines.")
]
JsonOut = Annotated[
    bool,
    typer.Option(
        "--json", help="Results as JSON lines on stdout (one object per line)."
    ),
]
Instances = Annotated[
    bool,
    typer.Option(
        "--instances",
        help="Ground truth holds instance ids: 0 -> class 1 (background), objects -> class 2.",
    ),
]
ConfigArg = Annotated[Path, typer.Argument(help="Config file (YAML).", dir_okay=False)]

#: Most threads --threads accepts: beyond it the value is a typo, not a machine.
from convpaint.config.tiling import MAX_THREADS as _MAX_THREADS  # noqa: E402

# --------------------------------------------------------------------------- output


def _error_line(message: str, *, label: str = "error") -> None:
    """One message on stderr: a red label and the text, taken literally (no markup)."""
    err_console.print(Text.assemble((f"{label}:", "bold red"), " ", message))


class _Warnings:
    """Show each distinct warning once, as one ``warning: ...`` line on stderr."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: IO[str] | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        key = (category.__name__, text)
        if key in self.seen:
            return
        self.seen.add(key)
        _error_line(text, label="warning")


def setup_logging(verbose: int) -> None:
    """Logging to stderr: WARNING by default, INFO with -v, DEBUG with -vv.

    On a terminal through rich; otherwise (batch logs) as plain timestamped lines.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger("convpaint")
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=err_console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # tifffile reports every oddity of a file it reads; convpaint's own message says
    # what matters, so its chatter only shows with -vv
    logging.getLogger("tifffile").setLevel(
        logging.DEBUG if verbose >= 2 else logging.ERROR
    )


def _prepare(verbose: int, quiet: bool) -> None:
    from convpaint import progress

    setup_logging(verbose)
    progress.configure(enabled=not quiet)


class _Session:
    """The frame of every command: results to stdout, everything else to stderr,
    SIGTERM as an exception, warnings once, and user errors as one message.

    ``emit`` writes one result line. Exit codes: 1 for a user error (a
    :class:`ConvpaintError`, an invalid setting, a file-system error), 130 for Ctrl-C,
    143 for SIGTERM, 141 when stdout was closed (``| head``). ``describe_stop``
    (set by a command) adds what was finished to an interruption or failure message;
    ``on_stop`` (also optional) runs before exiting, e.g. to print a JSON summary.
    """

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self.out: IO[str] = sys.stdout
        self.describe_stop: Callable[[], str] = lambda: ""
        #: What an interruption left behind (predict --resume keeps its partial output).
        self.interrupt_note = "no partial output was kept."
        self.on_stop: Callable[[str, str], None] = lambda status, message: None
        self._stack: list[Any] = []
        self._warnings = _Warnings()

    def emit(self, line: str) -> None:
        """Write one result line to stdout."""
        self.out.write(line + "\n")
        self.out.flush()

    def __enter__(self) -> _Session:
        from convpaint.signals import terminate_as_exception

        self.out = sys.stdout
        redirect = redirect_stdout(sys.stderr)
        signals = terminate_as_exception()
        caught = warnings.catch_warnings()
        for cm in (redirect, signals, caught):
            cm.__enter__()
            self._stack.append(cm)
        warnings.showwarning = self._warnings.show
        return self

    def _close(self) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._close()
        if err is None:
            return False
        from convpaint.signals import Terminated

        if isinstance(err, (typer.Exit, typer.Abort, typer.BadParameter)):
            return False
        if isinstance(err, BrokenPipeError) or (
            isinstance(err, OSError) and getattr(err, "errno", None) == 32
        ):
            self._silence_stdout()
            _error_line(
                "stdout was closed (broken pipe); stopped. " + self.describe_stop(),
                label="stopped",
            )
            raise typer.Exit(141) from None
        if isinstance(err, KeyboardInterrupt):
            if isinstance(err, Terminated):
                code, what = err.exit_code, f"terminated by {err}"
            else:
                code, what = 130, "interrupted (Ctrl-C)"
            message = f"{what}; {self.interrupt_note} {self.describe_stop()}"
            self._report_stop("interrupted", message.strip())
            _error_line(message.strip(), label="stopped")
            raise typer.Exit(code) from None
        if self.debug:
            return False
        if isinstance(err, ConvpaintError):
            message = str(err)
        elif isinstance(err, ValidationError):
            from convpaint.config import format_validation_errors

            message = "invalid settings:\n  " + "\n  ".join(
                format_validation_errors(err)
            )
        elif isinstance(err, OSError):
            from convpaint.io.atomic import describe_os_error

            message = f"file system error: {describe_os_error(err)}"
        elif isinstance(err, MemoryError):
            message = (
                "out of memory; give the job more memory, or use fewer threads or a "
                "smaller tiling.tile_size (--threads, --tile-size)"
            )
        else:
            return False  # a bug: let the traceback through
        extra = self.describe_stop()
        self._report_stop("failed", message)
        _error_line(message + (f"\n{extra}" if extra else ""))
        raise typer.Exit(1) from None

    def _report_stop(self, status: str, message: str) -> None:
        try:
            self.on_stop(status, message)
        except OSError:
            pass

    def _silence_stdout(self) -> None:
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, self.out.fileno())
            os.close(fd)
        except (OSError, ValueError, AttributeError):
            pass


@contextmanager
def user_errors(debug: bool) -> Iterator[_Session]:
    """Run a command body in a :class:`_Session` (kept for existing callers)."""
    with _Session(debug) as session:
        yield session


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"convpaint {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Pixel classification from sparse scribbles."""


# --------------------------------------------------------------------------- train


@app.command()
def train(
    config: ConfigArg,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing model file.")
    ] = False,
    json_out: JsonOut = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a pixel classifier from the config's train section."""
    _prepare(verbose, quiet)
    with _Session(debug) as s:
        from convpaint import api
        from convpaint.config import load_config

        result = api.train(load_config(config), overwrite=overwrite)
        if json_out:
            s.emit(
                json.dumps(
                    {
                        "type": "model",
                        "model": str(result.model),
                        "n_features": result.n_features,
                        "samples_per_class": {
                            str(c): n for c, n in result.samples_per_class.items()
                        },
                        "seconds": round(result.seconds, 3),
                        "cv_accuracy": result.cv_accuracy,
                        "cv_miou": result.cv_miou,
                        "report": [str(p) for p in result.report],
                    }
                )
            )
            return
        counts = ", ".join(f"{c}: {n}" for c, n in result.samples_per_class.items())
        s.emit(
            f"Model saved to {plain(result.model)} ({result.n_features} features; "
            f"pixels per class {counts}; {result.seconds:.1f} s)"
        )
        if result.cv_accuracy is not None:
            s.emit(
                f"Stroke-wise cross-validation: accuracy {result.cv_accuracy:.3f}, "
                f"mIoU {result.cv_miou:.3f}"
            )
        for path in result.report:
            s.emit(f"Report: {plain(path)}")


# --------------------------------------------------------------------------- predict


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``I/N`` or ``auto`` (SLURM job array) -> ``(index, count)``."""
    if shard is None:
        return None
    if shard.strip().lower() == "auto":
        from convpaint.batch import shard_from_slurm

        try:
            return shard_from_slurm()
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    try:
        i, n = (int(v) for v in shard.split("/"))
        if n < 1 or not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"expected INDEX/COUNT with 0 <= INDEX < COUNT, or auto, got '{plain(shard)}'",
            param_hint="--shard",
        ) from None
    return i, n


def _tiling_overrides(
    tile_size: int | None, threads: int | None, scheduler: str | None = None
) -> dict[str, int | str]:
    """--tile-size/--threads/--scheduler checked exactly like the config's tiling section."""
    from convpaint.config import TilingConfig

    given = {
        k: v
        for k, v in (
            ("tile_size", tile_size),
            ("threads", threads),
            ("scheduler", scheduler),
        )
        if v is not None
    }
    try:
        TilingConfig(**given)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = [
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']} "
            f"(got {e.get('input')!r}; the config's tiling section has the same bounds)"
            for e in err.errors()
        ]
        raise typer.BadParameter("; ".join(problems)) from None
    if (threads or 0) > _MAX_THREADS:
        raise typer.BadParameter(
            f"--threads: at most {_MAX_THREADS} (got {threads}); the default is the "
            "CPUs this job may use"
        )
    return given


def _check_output_options(fmt: str | None, output_name: str | None) -> None:
    """--format and --output-name (each when given), checked as in a config."""
    from convpaint.config.run import OUTPUT_FORMATS, check_output_name

    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise typer.BadParameter(
            f"must be one of {', '.join(OUTPUT_FORMATS)}, got '{plain(fmt)}'",
            param_hint="--format",
        )
    if output_name is not None:
        try:
            check_output_name(output_name)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--output-name") from None


def _read_list(source: str) -> list[str]:
    """Paths from ``--inputs-from FILE`` (``-``: stdin), one per line."""
    from convpaint.errors import DataError
    from convpaint.io.readers import read_input_list

    if source == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise typer.BadParameter(
                "'-' reads input paths from stdin, but stdin is a terminal; pipe a list "
                "in, e.g. `find raw -name '*.tif' | convpaint predict -m M -o DIR -`"
            )
        data = (
            sys.stdin.buffer.read()
            if hasattr(sys.stdin, "buffer")
            else sys.stdin.read()
        )
        where = "stdin"
    else:
        path = Path(source)
        where = f"--inputs-from '{plain(source)}'"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"{where}: cannot read the list ({err.strerror})") from err
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    return read_input_list(text, where=where)


def _gather_inputs(items: list[str], inputs_from: str | None) -> list[str]:
    """Positional INPUTs (``-`` = paths from stdin) plus ``--inputs-from``."""
    out: list[str] = []
    if items.count("-") > 1:
        raise typer.BadParameter("'-' (paths from stdin) can be given once")
    for item in items:
        out.extend(_read_list("-") if item == "-" else [item])
    if inputs_from is not None:
        out.extend(_read_list(inputs_from))
    return out


class _Reporter:
    """Prints each finished input (human line or JSON) and the final summary."""

    def __init__(self, session: _Session, json_mode: bool) -> None:
        from convpaint.batch import BatchListener

        self.session = session
        self.json = json_mode
        self.results: list[PredictResult] = []
        self.plan: Plan | None = None
        self.current: Path | None = None
        self.t0 = time.perf_counter()
        self.resume = False
        reporter = self

        class Listener(BatchListener):
            def planned(self, plan: Plan) -> None:
                reporter.plan = plan

            def started(self, index: int, path: Path, paths: OutputPaths) -> None:
                reporter.current = path

            def finished(self, result: PredictResult) -> None:
                reporter.current = None
                reporter.add(result)

        self.listener = Listener()
        session.describe_stop = self.describe
        session.on_stop = self.summary

    def add(self, r: PredictResult) -> None:
        from convpaint.batch import result_status

        self.results.append(r)
        status = result_status(r)
        if self.json:
            self.session.emit(
                json.dumps(
                    {
                        "type": "input",
                        "input": str(r.input),
                        "outputs": [str(p) for p in r.outputs],
                        "status": status,
                        "seconds": round(r.seconds, 3),
                        "class_fractions": {
                            str(c): round(f, 6) for c, f in r.class_fractions.items()
                        },
                        "error": r.error,
                        "skip_reason": r.skip_reason,
                        "resumed_tiles": r.resumed_tiles,
                    }
                )
            )
            return
        outs = ", ".join(plain(p) for p in r.outputs)
        if status == "done":
            resumed = f", {r.resumed_tiles} tiles resumed" if r.resumed_tiles else ""
            line = f"done {plain(r.input)} -> {outs} ({r.seconds:.1f} s{resumed})"
        elif status == "skipped":
            line = f"skipped {plain(r.input)} -> {outs or '-'} ({r.skip_reason})"
        else:
            line = f"failed {plain(r.input)}: {plain(r.error)}"
        self.session.emit(line)

    def set_resume(self, resume: bool) -> None:
        """Word the stop messages for a run that keeps its partial output."""
        self.resume = resume
        if resume:
            self.session.interrupt_note = (
                "the partial output of the input in progress was kept (zarr folder "
                "'.NAME.resume.partial') to be continued."
            )

    def counts(self) -> dict[str, int]:
        from convpaint.batch import result_status

        counts = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            counts[result_status(r)] += 1
        return counts

    def failed(self) -> list[str]:
        return [str(r.input) for r in self.results if r.error is not None]

    def describe(self) -> str:
        """What was finished, for an interruption or failure message."""
        c = self.counts()
        if self.plan is None or (self.current is None and not c["done"] + c["skipped"]):
            return ""
        text = (
            f"{c['done']} of {len(self.plan.items)} input(s) were predicted and "
            f"{c['skipped']} skipped before the stop (listed on stdout)"
        )
        if self.current is not None:
            text += f"; '{plain(self.current)}' was not finished"
        if self.resume:
            return text + "; rerun with --resume --skip-existing to do the rest"
        return text + "; rerun with --skip-existing to do the rest"

    def summary(self, status: str = "ok", error: str | None = None) -> None:
        c = self.counts()
        if status == "ok" and c["failed"]:
            status = "failed"
        if self.plan is None and status == "failed":
            status = "error"  # stopped before any input was looked at
        seconds = time.perf_counter() - self.t0
        if self.json:
            plan = self.plan
            self.session.emit(
                json.dumps(
                    {
                        "type": "summary",
                        "status": status,
                        "inputs": len(plan.items) if plan else None,
                        **c,
                        "failed_inputs": self.failed(),
                        "seconds": round(seconds, 3),
                        "shard": f"{plan.shard[0]}/{plan.shard[1]}"
                        if plan and plan.shard
                        else None,
                        "inputs_in_list": plan.n_total if plan else None,
                        "list_sha256": plan.digest if plan else None,
                        "error": error,
                    }
                )
            )
            return
        if self.plan is None:
            return  # an error before any input: the message on stderr says it all
        self.session.emit(
            f"{c['done']} predicted, {c['skipped']} skipped, {c['failed']} failed "
            f"({len(self.plan.items)} input(s), {seconds:.1f} s)"
        )
        for path in self.failed():
            self.session.emit(f"failed: {plain(path)}")


@app.command()
def predict(
    config: Annotated[
        str | None,
        typer.Argument(
            help="Config file (YAML); with --model, the first INPUT instead.",
            show_default=False,
        ),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Images, folders or quoted globs (with --model); '-' reads paths "
            "from stdin, one per line.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model file (config-free form)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (config-free form)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Output format (config-free form): tif or zarr. Default: tif.",
            show_default=False,
        ),
    ] = None,
    output_name: Annotated[
        str | None,
        typer.Option(
            "--output-name",
            help="Output name template (config-free form): {stem}, {relpath}; "
            "default {stem}_labels.",
            show_default=False,
        ),
    ] = None,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write class probabilities.")
    ] = False,
    axes: Annotated[
        str | None, typer.Option("--axes", help="Input axes; default: the model's.")
    ] = None,
    inputs_from: Annotated[
        str | None,
        typer.Option(
            "--inputs-from",
            help="File listing input paths, one per line ('-': stdin); e.g. written "
            "by `convpaint plan`. Replaces predict.inputs in the config form.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Keep existing outputs and skip those inputs (also those another "
            "run is writing).",
        ),
    ] = False,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="Record a failing input and go on (config: predict.on_error: "
            "continue); exit 1 if any failed.",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="zarr/ome-zarr: keep the partial output of a run that stops early "
            "and continue it in the next run with --resume (config: predict.resume).",
        ),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="INDEX/COUNT: predict every COUNT-th input from INDEX; auto: from "
            "the SLURM job array (SLURM_ARRAY_TASK_ID/MIN/MAX/COUNT).",
        ),
    ] = None,
    tile_size: Annotated[
        int | None, typer.Option("--tile-size", help="Tile edge (16..16384).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Threads (1..1024).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Where tiles run: threads (default), tcp://HOST:PORT (a dask "
            "scheduler), or slurm (the config's cluster section).",
        ),
    ] = None,
    json_out: JsonOut = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict label images: `predict CONFIG` or `predict --model M --output DIR INPUT...`."""
    _prepare(verbose, quiet)
    on_exists = exists_policy(overwrite, skip_existing)
    on_error: Literal["stop", "continue"] | None = "continue" if keep_going else None
    part = _parse_shard(shard)
    tiling_given = _tiling_overrides(tile_size, threads, scheduler)
    if scheduler == "slurm" and model is not None:
        raise typer.BadParameter(
            "slurm needs the cluster section of a config file; use the config form "
            "(predict CONFIG) or start the cluster yourself and give its tcp:// address",
            param_hint="--scheduler",
        )
    _check_output_options(fmt, output_name)
    positional = ([config] if config is not None else []) + list(inputs or [])
    if model is None:
        config_free = {
            "--output": output is not None,
            "--format": fmt is not None,
            "--output-name": output_name is not None,
            "--probabilities": probabilities,
            "--axes": axes is not None,
        }
        given = [name for name, used in config_free.items() if used]
        if given:
            raise typer.BadParameter(
                f"{', '.join(given)}: only for the config-free form (--model M "
                "--output DIR INPUT...); with a config, set predict.output_dir, format, "
                "output_name, probabilities or axes in its predict section"
            )
        if len(positional) != 1:
            raise typer.BadParameter(
                "give one CONFIG file (inputs come from predict.inputs or "
                "--inputs-from), or --model M --output DIR with INPUT files"
            )
    elif output is None or not (positional or inputs_from):
        raise typer.BadParameter(
            "with --model give --output DIR and at least one INPUT"
        )

    with _Session(debug) as s:
        from convpaint import batch
        from convpaint.config import TilingConfig, load_config

        report = _Reporter(s, json_out)
        report.set_resume(resume)
        if model is not None:
            items = _gather_inputs(positional, inputs_from)
            batch.predict(
                model,
                items,
                output,  # type: ignore[arg-type]
                axes=axes,
                fmt=fmt or "tif",
                probabilities=probabilities,
                output_name=output_name or "{stem}_labels",
                on_exists=on_exists or "error",
                on_error=on_error or "stop",
                tiling=TilingConfig(**tiling_given),  # type: ignore[arg-type]
                shard=part,
                listener=report.listener,
                resume=resume,
            )
        else:
            cfg = load_config(positional[0])
            report.set_resume(resume or bool(cfg.predict and cfg.predict.resume))
            if tiling_given:
                cfg.tiling = TilingConfig.model_validate(
                    {**cfg.tiling.model_dump(), **tiling_given}
                )
            batch.predict_from_config(
                cfg,
                on_exists=on_exists,
                on_error=on_error,
                shard=part,
                inputs=_gather_inputs([], inputs_from) if inputs_from else None,
                listener=report.listener,
                resume=True if resume else None,
            )
        report.summary()
        if report.failed():
            raise typer.Exit(1)


# --------------------------------------------------------------------------- plan


@app.command()
def plan(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="A config file (*.yaml: its predict section), or images, folders, "
            "quoted globs; '-' reads paths from stdin.",
            show_default=False,
        ),
    ],
    inputs_from: Annotated[
        str | None,
        typer.Option("--inputs-from", help="Also the paths listed in this file."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output folder: check the output names too."
        ),
    ] = None,
    output_name: Annotated[
        str | None,
        typer.Option("--output-name", help="Output name template (with --output)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Output format (with --output).")
    ] = "tif",
    shard: Annotated[
        str | None,
        typer.Option("--shard", help="Only this shard's inputs: INDEX/COUNT or auto."),
    ] = None,
    json_out: JsonOut = False,
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """List the inputs a predict run takes, one path per line (for --inputs-from).

    `convpaint plan "raw/**/*.tif" > inputs.txt` freezes the list, so that every task
    of a job array shards the same files even while the folder changes. With an
    output folder (or a config) the output names are checked for collisions too.
    """
    setup_logging(verbose)
    part = _parse_shard(shard)
    _check_output_options(fmt, output_name)
    is_config = len(sources) == 1 and sources[0].lower().endswith((".yaml", ".yml"))
    with _Session(debug) as s:
        from convpaint import batch
        from convpaint.config import load_config
        from convpaint.errors import ConfigError, DataError

        if is_config:
            cfg = load_config(sources[0])
            if cfg.predict is None:
                raise ConfigError(
                    f"{sources[0]}: no predict section to plan; add predict: {{inputs, ...}}"
                )
            p = cfg.predict
            patterns = (
                _gather_inputs([], inputs_from) if inputs_from else list(p.inputs)
            )
            the_plan = batch.plan_batch(
                patterns,
                p.output_dir,
                fmt=p.format,
                probabilities=p.probabilities,
                output_name=p.output_name,
                shard=part,
            )
            with_outputs = True
        else:
            patterns = _gather_inputs(sources, inputs_from)
            if output is not None:
                the_plan = batch.plan_batch(
                    patterns,
                    output,
                    fmt=fmt,
                    output_name=output_name or "{stem}_labels",
                    shard=part,
                )
            else:  # no outputs to name: just the list
                files, total, digest = batch.list_inputs(patterns, shard=part)
                the_plan = batch.Plan(
                    [(f, None) for f in files],  # type: ignore[misc]
                    total,
                    digest,
                    Path.cwd(),
                    part,
                )
            with_outputs = output is not None
        for path, paths in the_plan.items:
            if json_out:
                record: dict[str, Any] = {"input": str(path)}
                if with_outputs and paths is not None:
                    record["outputs"] = [str(o) for o in paths.all]
                    record["exists"] = bool(paths.existing())
                s.emit(json.dumps(record))
            else:
                text = str(path)
                if "\n" in text or "\r" in text:
                    raise DataError(
                        f"input {plain(text)!r} has a line break in its name and cannot "
                        "be listed one per line; rename it (or use --json)"
                    )
                s.emit(text)


# --------------------------------------------------------------------------- others


@app.command()
def scribbles(
    ground_truth: Annotated[
        list[str],
        typer.Argument(help="Dense ground-truth label images (files, folders, globs)."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")],
    fraction: Annotated[
        float,
        typer.Option(
            "--fraction", help="Share of labelled pixels to scribble (0.01 = 1 %)."
        ),
    ] = 0.01,
    width: Annotated[int, typer.Option("--width", help="Stroke width in pixels.")] = 2,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed (same seed, same scribbles).")
    ] = 0,
    instances: Instances = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing scribble files.")
    ] = False,
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """Draw human-like scribbles from dense ground truth (for benchmarks and tests)."""
    setup_logging(verbose)
    with _Session(debug) as s:
        from convpaint import api

        paths = api.make_scribbles(
            ground_truth,
            output,
            fraction=fraction,
            width=width,
            seed=seed,
            instances=instances,
            on_exists="overwrite" if overwrite else "error",
        )
        for p in paths:
            s.emit(plain(p))
        s.emit(f"{len(paths)} scribble file(s) written")


@app.command()
def evaluate(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Config with an evaluate section (optional).", dir_okay=False
        ),
    ] = None,
    prediction: Annotated[
        list[str] | None,
        typer.Option(
            "--prediction", "-p", help="Predicted label images (repeatable; globs)."
        ),
    ] = None,
    ground_truth: Annotated[
        list[str] | None,
        typer.Option(
            "--ground-truth",
            "-g",
            help="Ground truth: files/globs (sorted pairing) or a {stem} template.",
        ),
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image", help="Images for --figures (files or {stem} template)."
        ),
    ] = None,
    scribbles_: Annotated[
        list[str] | None,
        typer.Option(
            "--scribbles", help="Scribbles for --figures (files or {stem} template)."
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Folder for the CSV/JSON (and PNG) results."
        ),
    ] = Path("evaluation"),
    figures: Annotated[
        bool,
        typer.Option(
            "--figures", help="Also write comparison and confusion-matrix PNGs."
        ),
    ] = False,
    instances: Instances = False,
    objects: Annotated[
        bool,
        typer.Option(
            "--objects",
            help="Object level: -p object tables ({stem}_objects.csv), -g ground-truth "
            "instance masks, --classes their classes (implied when -p are tables).",
        ),
    ] = False,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--classes",
            "-c",
            help="Object level: ground-truth classes (CSV tables; files or {stem} template).",
        ),
    ] = None,
    predicted_instances: Annotated[
        list[str] | None,
        typer.Option(
            "--predicted-instances",
            help="Object level: masks the tables refer to; default: the ground truth's.",
        ),
    ] = None,
    iou: Annotated[
        float,
        typer.Option("--iou", help="Object level: matching IoU threshold (>= 0.5)."),
    ] = 0.5,
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """Score predictions against ground truth: per-class IoU, mIoU, precision, recall,
    accuracy; with object tables, per-class object precision, recall and F1."""
    setup_logging(verbose)
    if config is None and (not prediction or not ground_truth):
        raise typer.BadParameter("give a CONFIG, or --prediction and --ground-truth")
    tables = bool(prediction) and all(
        Path(p).suffix.lower() in (".csv", ".parquet") for p in prediction or []
    )
    object_level = config is None and (objects or tables)
    if object_level and not classes:
        raise typer.BadParameter(
            "object-level evaluation needs --classes (the ground-truth classes)"
        )
    with _Session(debug) as s:
        from convpaint import api
        from convpaint.config import load_config
        from convpaint.objects import api as objects_api

        if config is not None:
            # the pixel evaluate section, the objects.evaluate section, or both
            cfg = load_config(config)
            by_objects = cfg.objects is not None and cfg.objects.evaluate is not None
            results = []
            if cfg.evaluate is not None or not by_objects:
                results.append(api.evaluate_from_config(cfg))
            if by_objects:
                results.append(objects_api.evaluate_from_config(cfg))
        elif object_level:
            results = [
                evaluate_objects(
                    prediction,  # type: ignore[arg-type]
                    ground_truth,  # type: ignore[arg-type]
                    classes,  # type: ignore[arg-type]
                    output,
                    instances=predicted_instances,
                    iou=iou,
                    figures=figures,
                    images=image,
                )
            ]
        else:
            results = [
                api.evaluate(
                    prediction,  # type: ignore[arg-type]
                    ground_truth,  # type: ignore[arg-type]
                    output,
                    images=image,
                    scribbles=scribbles_,
                    figures=figures,
                    instances=instances,
                )
            ]
        for result in results:
            s.emit(result["table"])
            for p in result["files"]:
                s.emit(f"written: {plain(p)}")


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(help="Where to write the template.", dir_okay=False)
    ] = Path("convpaint.yaml"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Write a commented template config."""
    with _Session(debug) as s:
        from convpaint.errors import OutputExistsError
        from convpaint.io.atomic import atomic_output

        if os.path.lexists(path) and not overwrite:
            raise OutputExistsError(f"'{path}' exists; pass --overwrite to replace it")
        text = (resources.files("convpaint") / "templates" / "config.yaml").read_text()
        with atomic_output(path) as tmp:
            tmp.write_text(text)
        s.emit(
            f"Template written to {plain(path)}; edit it, then run "
            f"`convpaint check {plain(path)}`"
        )


@app.command()
def check(
    config: ConfigArg,
    schema: Annotated[
        bool,
        typer.Option("--schema", help="Print the JSON schema of the config instead."),
    ] = False,
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """Validate a config; print the resolved settings and planned inputs/outputs."""
    setup_logging(verbose)
    with _Session(debug) as s:
        from convpaint import api
        from convpaint.config import Config, load_config

        if schema:
            s.emit(json.dumps(Config.model_json_schema(), indent=2))
            return
        cfg = load_config(config)
        the_plan = api.check(cfg)
        s.emit("Resolved config")
        s.emit(the_plan["config"].rstrip("\n"))
        if the_plan["train"]:
            s.emit(f"Training pairs ({len(the_plan['train'])})")
            for img, ann, shape, axes in the_plan["train"]:
                s.emit(f"  {plain(img)}  +  {plain(ann)}  shape {shape} axes {axes}")
        if the_plan["predict"]:
            s.emit(f"Planned predictions ({len(the_plan['predict'])})")
            for src, dst, state in the_plan["predict"]:
                s.emit(f"  {plain(src)}  ->  {plain(dst)}  ({state})")
        if cfg.objects is not None:
            from convpaint.objects import api as objects_api

            objects_plan = objects_api.check(cfg)
            for mask, dst, state in objects_plan["segment"]:
                s.emit(f"  segment {plain(mask)}  ->  {plain(dst)}  ({state})")
            for img, inst, cls, shape in objects_plan["train"]:
                s.emit(
                    f"  objects train {plain(img)}  +  {plain(inst)}  +  {plain(cls)}"
                    f"  shape {shape}"
                )
            for img, inst, table, state in objects_plan["predict"]:
                s.emit(
                    f"  objects predict {plain(img)}  +  {plain(inst)}  ->  "
                    f"{plain(table)}  ({state})"
                )
        s.emit("config OK")


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Model file.", dir_okay=False)],
    debug: Debug = False,
) -> None:
    """Print what a model file holds (JSON)."""
    with _Session(debug) as s:
        from convpaint import api

        summary = api.model_info(model)
        s.emit(json.dumps(summary, default=str, indent=2))


@app.command()
def extractors() -> None:
    """List the registered feature extractors with their settings."""
    with _Session(False) as s:
        from convpaint.features.registry import list_extractors

        found = list_extractors()
        for name, (cls, params) in found.items():
            s.emit(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
            for key, fld in params.model_fields.items():
                if key == "name":
                    continue
                default = fld.default_factory() if fld.default_factory else fld.default  # type: ignore[call-arg]
                desc = " ".join((fld.description or "").split())
                s.emit(f"  {key} = {default!r}  {desc}")
            halo = cls(params()).halo
            s.emit(f"  (default halo {halo} px)")


# --------------------------------------------------------------------------- main


def _private_stdout() -> None:
    """Keep the real stdout for results only; send file descriptor 1 to stderr.

    Libraries (and their C code) that write to fd 1 then land in stderr, while
    ``sys.stdout`` (what the commands write results to) is a private duplicate of the
    original stdout.
    """
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        if fd != 1:
            return
        saved = os.dup(1)
        os.dup2(sys.stderr.fileno(), 1)
    except (AttributeError, OSError, ValueError):
        return
    sys.stdout = open(
        saved,
        "w",
        encoding="utf-8",
        errors="backslashreplace",
        buffering=1,
        closefd=True,
    )


app.add_typer(objects_app, name="objects")


def main() -> None:
    """Entry point of the `convpaint` script."""
    _private_stdout()
    try:
        sys.stderr.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    # The modules imported so far, and those the command imports, live until the
    # process exits: freezing them keeps the cyclic garbage collector from walking
    # them over and over during the run, and from doing so one last time at exit
    # (about half a second of a short command).
    gc.freeze()
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
