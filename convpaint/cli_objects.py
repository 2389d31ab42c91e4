"""`convpaint objects ...`: a thin typer layer over :mod:`convpaint.objects.api`.

Shared helpers come from :mod:`convpaint.cli_shared`, or from :mod:`convpaint.cli`
inside the commands, so importing this module never imports the main CLI (which
registers this one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from convpaint.cli_shared import Debug, Verbose, evaluate_objects, exists_policy, plain


def _emit(line: str) -> None:
    """Result lines on stdout (plain text: no markup, control characters escaped)."""
    import sys

    for part in str(line).splitlines() or [""]:
        sys.stdout.write(plain(part) + "\n")
    sys.stdout.flush()


objects_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Objects: segment masks into instances, classify whole objects, score them.",
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs.")
]
SkipExisting = Annotated[
    bool,
    typer.Option("--skip-existing", help="Keep existing outputs, skip those inputs."),
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard", help="INDEX/COUNT: every COUNT-th input from INDEX (SLURM arrays)."
    ),
]


def _batch_start(
    verbose: int, quiet: bool, overwrite: bool, skip_existing: bool, shard: str | None
) -> tuple[Literal["error", "skip", "overwrite"] | None, tuple[int, int] | None]:
    """Logging and progress set up; the overwrite policy and the shard, checked."""
    from convpaint.cli import _parse_shard, _prepare

    _prepare(verbose, quiet)
    return exists_policy(overwrite, skip_existing), _parse_shard(shard)


def _config_or_items(
    config: Path | None, items: list[str] | None, flags_form: bool, usage: str
) -> tuple[Path | None, list[str]]:
    """Split the positional arguments into a config file or input paths."""
    if flags_form:
        return None, ([str(config)] if config is not None else []) + list(items or [])
    if config is None or items:
        raise typer.BadParameter(usage)
    return config, []


def _segment_options(**options: object) -> object:
    """Segment settings from command-line options, errors as one line each."""
    from pydantic import ValidationError

    from convpaint.config.objects import SegmentConfig
    from convpaint.errors import ConfigError

    try:
        return SegmentConfig(**options)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = "--" + "-".join(str(p) for p in e["loc"]).replace("_", "-")
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if e["loc"] else msg)
        raise ConfigError("invalid segment options: " + "; ".join(problems)) from err


@objects_app.command()
def segment(
    config: Annotated[
        Path | None,
        typer.Argument(help="Config file (YAML); omit with --output."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Masks: files, folders or quoted globs (with --output)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (config-free form)."),
    ] = None,
    foreground: Annotated[
        list[int] | None,
        typer.Option(
            "--foreground",
            help="Pixel value that is object (repeatable); default: non-zero.",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="For probability maps: above is object."),
    ] = None,
    channel: Annotated[
        int | None,
        typer.Option(
            "--channel", help="Channel of a multi-channel map (from 0), e.g. a class."
        ),
    ] = None,
    connectivity: Annotated[
        str, typer.Option("--connectivity", help="face (4/6-connected) or full (8/26).")
    ] = "face",
    min_size: Annotated[
        int, typer.Option("--min-size", help="Remove smaller objects (pixels).")
    ] = 1,
    max_size: Annotated[
        int | None, typer.Option("--max-size", help="Remove larger objects (pixels).")
    ] = None,
    split: Annotated[
        int | None,
        typer.Option(
            "--split",
            help="Watershed-split touching objects; seeds at least N px apart.",
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option("--block-size", help="Block edge (result does not depend on it)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="tif or zarr.")] = "tif",
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    shard: Shard = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Label objects in masks: `segment CONFIG` or `segment --output DIR MASK...`."""
    from convpaint.cli import user_errors

    policy, part = _batch_start(verbose, quiet, overwrite, skip_existing, shard)
    cfg, items = _config_or_items(
        config,
        inputs,
        output is not None,
        "give a CONFIG file, or --output DIR with MASK files",
    )
    from convpaint.config import load_config
    from convpaint.objects import api

    with user_errors(debug):
        if cfg is None:
            assert output is not None
            params = _segment_options(
                foreground=foreground or None,
                threshold=threshold,
                channel=channel,
                connectivity=connectivity,
                min_size=min_size,
                max_size=max_size,
                split={"min_distance": split} if split else None,
                format=fmt,
                block_size=block_size,
                output_dir=output,
            )
            results = api.segment(items, output, params, on_exists=policy, shard=part)
        else:
            results = api.segment_from_config(
                load_config(cfg), on_exists=policy, shard=part
            )
    for r in results:
        state = (
            "skipped (exists)"
            if r.skipped or r.stats is None
            else (
                f"{r.stats.n_objects} objects ({r.stats.n_removed} removed by size, "
                f"{r.stats.n_split} split), {r.seconds:.1f} s"
            )
        )
        _emit(f"{r.input.name} -> {r.output}  [{state}]")
    _emit(f"{sum(not r.skipped for r in results)} mask(s) segmented")


@objects_app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Config file (YAML).", dir_okay=False)],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing model.")
    ] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train an object classifier from the config's objects.train section."""
    from convpaint.cli import _prepare, user_errors

    _prepare(verbose, quiet)
    from convpaint.config import load_config
    from convpaint.objects import api

    with user_errors(debug):
        result = api.train(load_config(config), overwrite=overwrite)
    counts = ", ".join(f"{c}: {n}" for c, n in result.objects_per_class.items())
    _emit(
        f"Object model ({result.kind}) saved to {result.model} (objects per "
        f"class {counts}; {result.n_unlabelled} without class; {result.seconds:.1f} s)"
    )
    if result.top_features:
        top = ", ".join(f"{n} {v:.3f}" for n, v in result.top_features[:5])
        _emit(f"Most important features: {top}")
    if result.cross_validation:
        scores = ", ".join(
            f"{k.replace('_', ' ')} {v:.3f}" for k, v in result.cross_validation.items()
        )
        _emit(f"Estimated macro-F1: {scores}")
    if result.report:
        _emit(f"Report: {result.report[0]} (+ .png), features: {result.report[2]}")


@objects_app.command()
def predict(
    config: Annotated[
        Path | None,
        typer.Argument(help="Config file (YAML); omit with --model."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Images, folders or quoted globs (with --model)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Object model file.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder.")
    ] = None,
    instances: Annotated[
        list[str] | None,
        typer.Option(
            "--instances", "-i", help="Instance masks: a {stem} template, or files."
        ),
    ] = None,
    axes: Annotated[
        str | None, typer.Option("--axes", help="Input axes; default: the model's.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="tif or zarr (objclass image).")
    ] = "tif",
    table_format: Annotated[
        str, typer.Option("--table-format", help="csv or parquet.")
    ] = "csv",
    threads: Annotated[int | None, typer.Option("--threads", help="Threads.")] = None,
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    shard: Shard = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Classify objects: `predict CONFIG` or `predict --model M --output DIR --instances T IMAGE...`."""
    from convpaint.cli import user_errors

    policy, part = _batch_start(verbose, quiet, overwrite, skip_existing, shard)
    cfg, items = _config_or_items(
        config,
        inputs,
        model is not None,
        "give a CONFIG file, or --model/--output/--instances with IMAGE files",
    )
    from convpaint.config import load_config
    from convpaint.objects import api

    with user_errors(debug):
        if cfg is None:
            if output is None or not instances or not items:
                raise typer.BadParameter(
                    "with --model give --output DIR, --instances and IMAGE files"
                )
            if fmt not in ("tif", "zarr") or table_format not in ("csv", "parquet"):
                raise typer.BadParameter(
                    "--format is tif or zarr; --table-format is csv or parquet"
                )
            results = api.predict(
                model,  # type: ignore[arg-type]
                items,
                output,
                instances=instances,
                axes=axes,
                fmt=fmt,  # type: ignore[arg-type]
                table_format=table_format,  # type: ignore[arg-type]
                on_exists=policy or "error",
                shard=part,
                threads=threads,
            )
        else:
            results = api.predict_from_config(
                load_config(cfg), on_exists=policy, shard=part
            )
    for r in results:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(r.counts.items()))
        state = "skipped (exists)" if r.skipped else f"{r.seconds:.1f} s"
        _emit(f"{r.input.name}: {counts or 'no objects'}  [{state}]")
    if results:
        _emit(f"Summary: {results[0].outputs[-1]}")
    done = sum(not r.skipped for r in results)
    _emit(f"{done} image(s) classified, {len(results) - done} skipped")


@objects_app.command()
def evaluate(
    config: Annotated[
        Path | None,
        typer.Argument(help="Config with objects.evaluate (optional).", dir_okay=False),
    ] = None,
    prediction: Annotated[
        list[str] | None,
        typer.Option(
            "--prediction", "-p", help="Prediction tables {stem}_objects.csv (globs)."
        ),
    ] = None,
    ground_truth: Annotated[
        list[str] | None,
        typer.Option(
            "--ground-truth",
            "-g",
            help="Ground-truth instance masks ({stem} template or files).",
        ),
    ] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--classes",
            "-c",
            help="Ground-truth classes: CSV tables ({stem} template or files).",
        ),
    ] = None,
    instances: Annotated[
        list[str] | None,
        typer.Option(
            "--instances",
            "-i",
            help="Masks the predictions refer to; default: the ground truth's.",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the CSV/JSON.")
    ] = Path("evaluation_objects"),
    iou: Annotated[
        float, typer.Option("--iou", help="Matching IoU threshold (>= 0.5).")
    ] = 0.5,
    figures: Annotated[
        bool,
        typer.Option(
            "--figures",
            help="Also write PNGs: objects coloured by predicted class, mistakes "
            "outlined; the confusion matrix.",
        ),
    ] = False,
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image", help="Images under the figures ({stem} template or files)."
        ),
    ] = None,
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """Object-level scores: per-class precision/recall/F1, macro-F1, confusion (and figures)."""
    from convpaint.cli import setup_logging, user_errors

    setup_logging(verbose)
    from convpaint.config import load_config
    from convpaint.objects import api

    with user_errors(debug):
        if config is not None:
            result = api.evaluate_from_config(load_config(config))
        else:
            if not prediction or not ground_truth or not classes:
                raise typer.BadParameter(
                    "give a CONFIG, or --prediction, --ground-truth and --classes"
                )
            result = evaluate_objects(
                prediction,
                ground_truth,
                classes,
                output,
                instances=instances,
                iou=iou,
                figures=figures,
                images=image,
            )
    _emit(result["table"])
    for p in result["files"]:
        _emit(f"written: {p}")


@objects_app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Object model file.", dir_okay=False)],
    debug: Debug = False,
) -> None:
    """Print what an object model file holds."""
    from convpaint.cli import user_errors
    from convpaint.objects import api

    with user_errors(debug):
        summary = api.model_info(model)
    _emit(json.dumps(summary, default=str, indent=2))
