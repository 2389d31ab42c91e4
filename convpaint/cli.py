"""The `convpaint` command: a thin typer layer over :mod:`convpaint.api`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console

from convpaint._version import __version__
from convpaint.cli_objects import objects_app
from convpaint.errors import ConvpaintError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Pixel classification from sparse scribbles: CNN/filter features + random forest.",
)
console = Console()
err_console = Console(stderr=True)

Verbose = Annotated[
    int,
    typer.Option("-v", "--verbose", count=True, help="More logging (-vv for debug)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Debug = Annotated[
    bool, typer.Option("--debug", help="Show the full traceback of errors.")
]
Instances = Annotated[
    bool,
    typer.Option(
        "--instances",
        help="Ground truth holds instance ids: 0 -> class 1 (background), objects -> class 2.",
    ),
]
ConfigArg = Annotated[Path, typer.Argument(help="Config file (YAML).", dir_okay=False)]


def setup_logging(verbose: int) -> None:
    """Rich logging to stderr: WARNING by default, INFO with -v, DEBUG with -vv."""
    from rich.logging import RichHandler

    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger("convpaint")
    root.handlers[:] = [
        RichHandler(console=err_console, show_path=False, show_time=False)
    ]
    root.setLevel(level)
    root.propagate = False


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn a user error into one red message and exit code 1."""
    try:
        yield
    except (ConvpaintError, ValidationError) as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]; no partial output was kept")
        raise typer.Exit(130) from None


def _prepare(verbose: int, quiet: bool) -> None:
    from convpaint import progress

    setup_logging(verbose)
    progress.configure(enabled=not quiet)


def _version(value: bool) -> None:
    if value:
        console.print(f"convpaint {__version__}")
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


@app.command()
def train(
    config: ConfigArg,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing model file.")
    ] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a pixel classifier from the config's train section."""
    _prepare(verbose, quiet)
    from convpaint import api
    from convpaint.config import load_config

    with user_errors(debug):
        result = api.train(load_config(config), overwrite=overwrite)
    counts = ", ".join(f"{c}: {n}" for c, n in result.samples_per_class.items())
    console.print(
        f"[green]Model saved to {result.model}[/] ({result.n_features} features; "
        f"pixels per class {counts}; {result.seconds:.1f} s)"
    )
    if result.cv_accuracy is not None:
        console.print(
            f"Stroke-wise cross-validation: accuracy {result.cv_accuracy:.3f}, "
            f"mIoU {result.cv_miou:.3f}"
        )
    for path in result.report:
        console.print(f"Report: {path}")


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(v) for v in shard.split("/"))
        if n < 1 or not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"expected INDEX/COUNT with 0 <= INDEX < COUNT, got '{shard}'"
        ) from None
    return i, n


@app.command()
def predict(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Config file (YAML); omit when using --model.", dir_okay=False
        ),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Images, folders or quoted globs (with --model)."),
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
        str, typer.Option("--format", help="tif or zarr (config-free form).")
    ] = "tif",
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write class probabilities.")
    ] = False,
    axes: Annotated[
        str | None, typer.Option("--axes", help="Input axes; default: the model's.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs.")
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="Keep existing outputs, skip those inputs."
        ),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="INDEX/COUNT: predict every COUNT-th input from INDEX (SLURM arrays).",
        ),
    ] = None,
    tile_size: Annotated[
        int | None, typer.Option("--tile-size", help="Tile edge (config-free form).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Threads (config-free form).")
    ] = None,
    verbose: Verbose = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict label images: `predict CONFIG` or `predict --model M --output DIR INPUT...`."""
    _prepare(verbose, quiet)
    if overwrite and skip_existing:
        raise typer.BadParameter("use either --overwrite or --skip-existing")
    on_exists: Literal["error", "skip", "overwrite"] | None = (
        "overwrite" if overwrite else "skip" if skip_existing else None
    )
    part = _parse_shard(shard)
    from convpaint import api
    from convpaint.config import TilingConfig, load_config

    with user_errors(debug):
        if model is not None:
            items = ([str(config)] if config is not None else []) + list(inputs or [])
            if not items or output is None:
                raise typer.BadParameter(
                    "with --model give --output DIR and at least one INPUT"
                )
            if fmt not in ("tif", "zarr"):
                raise typer.BadParameter(f"--format must be tif or zarr, got '{fmt}'")
            tiling = TilingConfig(
                **{
                    k: v
                    for k, v in {"tile_size": tile_size, "threads": threads}.items()
                    if v
                }
            )
            results = api.predict(
                model,
                items,
                output,
                axes=axes,
                fmt=fmt,
                probabilities=probabilities,  # type: ignore[arg-type]
                on_exists=on_exists or "error",
                tiling=tiling,
                shard=part,
            )
        else:
            if config is None or inputs:
                raise typer.BadParameter(
                    "give a CONFIG file, or --model/--output with INPUT files"
                )
            results = api.predict_from_config(
                load_config(config), on_exists=on_exists, shard=part
            )
    done = [r for r in results if not r.skipped]
    for r in results:
        state = "skipped (exists)" if r.skipped else f"{r.seconds:.1f} s"
        console.print(
            f"{r.input.name} -> {', '.join(str(p) for p in r.outputs)}  [{state}]"
        )
    console.print(
        f"[green]{len(done)} image(s) predicted[/], {len(results) - len(done)} skipped"
    )


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
    from convpaint import api

    with user_errors(debug):
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
        console.print(str(p), highlight=False)
    console.print(f"[green]{len(paths)} scribble file(s) written[/]")


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
    verbose: Verbose = 0,
    debug: Debug = False,
) -> None:
    """Score predictions against ground truth: per-class IoU, mIoU, precision, recall, accuracy."""
    setup_logging(verbose)
    from convpaint import api
    from convpaint.config import load_config

    with user_errors(debug):
        if config is not None:
            result = api.evaluate_from_config(load_config(config))
        else:
            if not prediction or not ground_truth:
                raise typer.BadParameter(
                    "give a CONFIG, or --prediction and --ground-truth"
                )
            result = api.evaluate(
                prediction,
                ground_truth,
                output,
                images=image,
                scribbles=scribbles_,
                figures=figures,
                instances=instances,
            )
    console.print(result["table"], highlight=False, markup=False)
    for p in result["files"]:
        console.print(f"written: {p}", highlight=False)


@app.command()
def init(
    path: Annotated[
        Path, typer.Argument(help="Where to write the template.", dir_okay=False)
    ] = Path("convpaint.yaml"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
) -> None:
    """Write a commented template config."""
    from convpaint.io.atomic import atomic_output

    if path.exists() and not overwrite:
        err_console.print(
            f"[bold red]error:[/] '{path}' exists; pass --overwrite to replace it"
        )
        raise typer.Exit(1)
    text = (resources.files("convpaint") / "templates" / "config.yaml").read_text()
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    console.print(
        f"Template written to {path}; edit it, then run `convpaint check {path}`"
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
    from convpaint import api
    from convpaint.config import Config, load_config

    if schema:
        import json

        console.print_json(json.dumps(Config.model_json_schema()))
        return
    with user_errors(debug):
        plan = api.check(load_config(config))
    console.print("[bold]Resolved config[/]")
    console.print(plan["config"], highlight=False, markup=False)
    if plan["train"]:
        console.print(f"[bold]Training pairs[/] ({len(plan['train'])})")
        for img, ann, shape in plan["train"]:
            console.print(
                f"  {img}  +  {ann}  shape {shape}", highlight=False, soft_wrap=True
            )
    if plan["predict"]:
        console.print(f"[bold]Planned predictions[/] ({len(plan['predict'])})")
        for src, dst, state in plan["predict"]:
            console.print(
                f"  {src}  ->  {dst}  ({state})", highlight=False, soft_wrap=True
            )
    console.print("[green]config OK[/]")


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Model file.", dir_okay=False)],
    debug: Debug = False,
) -> None:
    """Print what a model file holds."""
    import json

    from convpaint import api

    with user_errors(debug):
        summary = api.model_info(model)
    console.print_json(json.dumps(summary, default=str))


@app.command()
def extractors() -> None:
    """List the registered feature extractors with their settings."""
    from convpaint.features.registry import list_extractors

    for name, (cls, params) in list_extractors().items():
        console.print(f"[bold]{name}[/]: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for key, fld in params.model_fields.items():
            if key == "name":
                continue
            default = fld.default_factory() if fld.default_factory else fld.default  # type: ignore[call-arg]
            desc = " ".join((fld.description or "").split())
            console.print(f"  {key} = {default!r}  {desc}", highlight=False)
        halo = cls(params()).halo
        console.print(f"  (default halo {halo} px)")


app.add_typer(objects_app, name="objects")


def main() -> None:
    """Entry point of the `convpaint` script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
