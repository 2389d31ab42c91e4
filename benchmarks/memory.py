"""Memory benchmark: prediction memory follows the tile size, not the image size.

Trains a small model once on the sample data, writes synthetic large test images as
tiled TIFFs (streamed tile by tile, never held in memory), and predicts every
(image size, tile size) combination in a fresh Python process, recording that
process's peak resident memory (VmHWM) and the prediction's wall time.

    python benchmarks/memory.py                                   # ~3-5 min on 2 cores
    python benchmarks/memory.py --sizes 1024,6144                 # ~8-15 min
    python benchmarks/memory.py --features vgg16+filters --sizes 1024,2048   # ~3-5 min

Prints a table (image size, tile size, peak RSS, wall time, throughput), the fixed
overhead of a process that only imports convpaint + torch and loads the model, and a
conclusion computed from the numbers; writes the same as markdown to
``benchmarks/results/memory.md``.

Peak RSS counts every resident page, file-backed ones included: the disk-backed
memory map in which the TIFF writer assembles the labels adds up to one byte per
image pixel (uint8 labels) as its pages are touched. Those pages are clean after the
flush and reclaimable by the kernel, but they do show in the peak.

Compare images that have several tiles each: at the time of writing, prediction keeps
the previous tile's feature matrix (tile² x n_features x 4 bytes, ~1 GiB for a
1024-px tile with the 249 features of vgg16+filters, 228 MiB with the 57 of the
filter bank) alive while it computes the next one, so every image with two or more
tiles peaks that much above a single-tile image. The conclusion lines say when a
comparison includes such a single-tile image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "nuclei.tif"
SAMPLE_SCRIBBLES = ROOT / "sample_data" / "annotations" / "nuclei_scribbles.tif"
DEFAULT_OUTPUT = HERE / "results" / "memory.md"
#: Edge of the TIFF tiles of the synthetic images (independent of prediction tiles).
FILE_TILE = 512
_MARK = "@@MEMORY@@"
#: --features choices: extractor lists for the config (None: convpaint's default).
FEATURES: dict[str, list[dict] | None] = {
    "default": None,
    "filters": [{"name": "filters"}],
    "vgg16+filters": [
        {"name": "vgg16", "layers": ["conv1_1"], "scalings": [1, 2, 4]},
        {"name": "filters"},
    ],
}

#: Code run in each fresh child process. argv[1] is a JSON job description; the
#: child prints one line ``_MARK + json`` with its measurements.
_CHILD = r"""
import json, os, resource, sys, time

MARK = sys.argv[1]
job = json.loads(sys.argv[2])


def status():
    # VmHWM: peak resident set size of this process (anonymous + file-backed pages).
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])  # KiB
    except OSError:  # not Linux: ru_maxrss (bytes on macOS, KiB elsewhere)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak // 1024 if sys.platform == "darwin" else peak
    return out


t0 = time.perf_counter()
import torch  # noqa: F401  (the fixed cost every prediction pays)
from convpaint import api
from convpaint.model_io import load_model

result = {"import_s": time.perf_counter() - t0}
if job["kind"] == "baseline":
    load_model(job["model"], n_jobs=job["threads"])
    result.update(status())
else:
    from convpaint.config import TilingConfig

    tiling = TilingConfig(tile_size=job["tile"], threads=job["threads"])
    t1 = time.perf_counter()
    res = api.predict(
        job["model"], [job["image"]], job["out_dir"], tiling=tiling,
        probabilities=job["probabilities"], on_exists="overwrite",
    )
    result["predict_s"] = time.perf_counter() - t1
    result["class_fractions"] = {str(k): v for k, v in res[0].class_fractions.items()}
    result.update(status())
print(MARK + json.dumps(result), flush=True)
"""


# --------------------------------------------------------------------------- helpers
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from err
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _mib(kib: float) -> float:
    return kib / 1024.0


def train_model(workdir: Path, features: str, threads: int) -> tuple[Path, int]:
    """Train the benchmark model once on the sample data; return its path and width."""
    from convpaint import api
    from convpaint.config import parse_config

    model = workdir / f"model_{features.replace('+', '_')}.cpm"
    raw: dict = {
        "classifier": {"n_estimators": 50, "seed": 0},
        "tiling": {"threads": threads},
        "train": {
            "images": [str(SAMPLE_IMAGE)],
            "annotations": [str(SAMPLE_SCRIBBLES)],
            "axes": "YX",
            "model": str(model),
            "report": False,
        },
    }
    if FEATURES[features] is not None:
        raw["features"] = FEATURES[features]
    result = api.train(parse_config(raw), overwrite=True)
    print(
        f"trained model ({features} features: {result.n_features} per pixel, "
        f"{sum(result.samples_per_class.values())} samples) in {result.seconds:.1f} s"
    )
    return model, result.n_features


def write_synthetic_image(path: Path, size: int, seed: int = 0) -> None:
    """A ``size`` x ``size`` uint16 tiled TIFF built from the sample image plus noise.

    Tiles are generated one at a time and streamed to tifffile, so memory stays at one
    tile whatever the size. Each tile is the sample image tiled (np.tile) to the file
    tile, randomly flipped/rotated, with Poisson-like noise added.
    """
    sample = tifffile.imread(SAMPLE_IMAGE).astype(np.float32)
    reps = (-(-FILE_TILE // sample.shape[0]), -(-FILE_TILE // sample.shape[1]))
    base = np.tile(sample, reps)[:FILE_TILE, :FILE_TILE]
    rng = np.random.default_rng(seed)
    n_tiles = (-(-size // FILE_TILE)) ** 2

    def tiles():
        for _ in range(n_tiles):
            block = np.rot90(base, k=int(rng.integers(4)))
            if rng.integers(2):
                block = block[:, ::-1]
            noisy = block + rng.normal(0.0, 1.0, block.shape).astype(
                np.float32
            ) * np.sqrt(np.maximum(block, 1.0))
            yield np.clip(noisy, 0, 65535).astype(np.uint16)

    tifffile.imwrite(
        path,
        data=tiles(),
        shape=(size, size),
        dtype="uint16",
        tile=(FILE_TILE, FILE_TILE),
    )


def run_child(job: dict) -> dict:
    """Run one measurement in a fresh interpreter; return its measurements."""
    env = dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, _MARK, json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(
            f"child process failed (exit code {proc.returncode}) for job {job}"
        )
    out = json.loads(lines[-1][len(_MARK) :])
    out["process_s"] = wall
    return out


def n_tiles(size: int, tile: int) -> int:
    """Prediction tiles of a ``size`` x ``size`` image."""
    return (-(-size // tile)) ** 2


def _fmt_row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))


def conclusion(rows: list[dict], baseline_mib: float) -> list[str]:
    """Sentences computed from the table: image-size and tile-size ratios."""
    out = []
    sizes = sorted({r["size"] for r in rows})
    tiles = sorted({r["tile"] for r in rows})
    by = {(r["size"], r["tile"]): r for r in rows}
    if len(sizes) >= 2:
        s0, s1 = sizes[0], sizes[-1]
        px = (s1 / s0) ** 2
        for t in tiles:
            if (s0, t) in by and (s1, t) in by:
                a, b = by[(s0, t)]["peak_mib"], by[(s1, t)]["peak_mib"]
                da_, db = a - baseline_mib, b - baseline_mib
                extra = f", above baseline {da_:.0f} -> {db:.0f} MiB" if da_ > 0 else ""
                note = ""
                if n_tiles(s0, t) == 1 < n_tiles(s1, t):
                    note = (
                        "; the smaller image is a single tile, so this includes the one-off "
                        "cost of a second tile (see the module docstring)"
                    )
                out.append(
                    f"tile {t}: peak RSS grows x{b / a:.2f} ({a:.0f} -> {b:.0f} MiB{extra}) "
                    f"for a x{px:.1f} larger image ({s0}² -> {s1}², {n_tiles(s0, t)} -> "
                    f"{n_tiles(s1, t)} tiles){note}"
                )
    if len(tiles) >= 2:
        t0, t1 = tiles[0], tiles[-1]
        for s in sizes:
            if (s, t0) in by and (s, t1) in by and s > t0:
                a, b = by[(s, t0)]["peak_mib"], by[(s, t1)]["peak_mib"]
                eff = min(t1, s)
                note = (
                    f" (effective tile {eff}, the image is smaller)" if eff < t1 else ""
                )
                out.append(
                    f"image {s}²: peak RSS grows x{b / a:.2f} ({a:.0f} -> {b:.0f} MiB) from "
                    f"tile {t0} to tile {t1}{note}, x{(eff / t0) ** 2:.0f} more pixels per tile"
                )
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Show that convpaint's prediction memory follows the tile size, not the "
            "image size: train a small model on the sample data, predict synthetic "
            "square images of several sizes with several tile sizes, each in a fresh "
            "process, and report each process's peak resident memory (VmHWM) and wall "
            "time. The defaults take about 3-5 minutes on 2 busy cores. Prediction there "
            "runs at roughly 0.1-0.2 Mpx/s with the filter bank (the default for "
            "grayscale images) and 0.03-0.1 Mpx/s with vgg16+filters, so budget about "
            "6 s (vgg16+filters: 20 s) per Mpx per tile size."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=[1024, 3072],
        help="edges (px) of the square synthetic test images, comma-separated",
    )
    parser.add_argument(
        "--tiles",
        type=_int_list,
        default=[256, 1024],
        help="prediction tile sizes (tiling.tile_size), comma-separated",
    )
    parser.add_argument(
        "--features",
        choices=list(FEATURES),
        default="default",
        help="model features: convpaint's defaults (what a config without a features "
        "section gets: 'auto'), the classical filter bank only, or VGG16 conv1_1 at "
        "scalings 1, 2, 4 plus the filter bank (249 features, ~4x slower, ~3 GiB per "
        "1024-px tile)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="tiling.threads for every prediction"
    )
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="also write probability maps (the writer's memory map then holds "
        "4 bytes per class per pixel more)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the model, test images and predictions (kept); default: a "
        "temporary folder, removed at the end",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="markdown file the results table is written to",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="convpaint_memory_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        model, n_features = train_model(workdir, args.features, args.threads)

        images = {}
        for size in sorted(set(args.sizes)):
            path = workdir / f"synthetic_{size}.tif"
            t0 = time.perf_counter()
            write_synthetic_image(path, size)
            images[size] = path
            print(
                f"wrote {path.name}: {size}x{size} uint16 ({size * size / 1e6:.1f} Mpx, "
                f"{path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s"
            )

        base = run_child(
            {"kind": "baseline", "model": str(model), "threads": args.threads}
        )
        baseline_mib = _mib(base["VmHWM"])
        print(
            f"baseline (fresh process: import torch + convpaint, load the model): "
            f"peak RSS {baseline_mib:.0f} MiB, imports {base['import_s']:.1f} s"
        )

        rows = []
        headers = [
            "image",
            "Mpx",
            "tile",
            "tiles",
            "peak RSS MiB",
            "above baseline",
            "wall s",
            "Mpx/s",
        ]
        widths = [11, 6, 5, 5, 12, 14, 7, 6]
        print()
        print(_fmt_row(headers, widths), flush=True)
        for size in sorted(images):
            for tile in sorted(set(args.tiles)):
                out_dir = workdir / f"pred_{size}_{tile}"
                job = {
                    "kind": "predict",
                    "model": str(model),
                    "image": str(images[size]),
                    "out_dir": str(out_dir),
                    "tile": tile,
                    "threads": args.threads,
                    "probabilities": args.probabilities,
                }
                m = run_child(job)
                shutil.rmtree(out_dir, ignore_errors=True)
                mpx = size * size / 1e6
                row = {
                    "size": size,
                    "tile": tile,
                    "tiles": n_tiles(size, tile),
                    "mpx": mpx,
                    "peak_mib": _mib(m["VmHWM"]),
                    "predict_s": m["predict_s"],
                    "process_s": m["process_s"],
                }
                rows.append(row)
                print(
                    _fmt_row(
                        [
                            f"{size}x{size}",
                            f"{mpx:.1f}",
                            str(tile),
                            str(row["tiles"]),
                            f"{row['peak_mib']:.0f}",
                            f"{row['peak_mib'] - baseline_mib:+.0f}",
                            f"{m['predict_s']:.1f}",
                            f"{mpx / m['predict_s']:.3f}",
                        ],
                        widths,
                    ),
                    flush=True,
                )

        lines = conclusion(rows, baseline_mib)
        print()
        print(f"baseline RSS (imports + model): {baseline_mib:.0f} MiB")
        for line in lines:
            print("conclusion: " + line)
        total = time.perf_counter() - t_start
        print(f"total {total:.0f} s")

        write_markdown(args, n_features, rows, baseline_mib, base, lines, total)
        print(f"wrote {args.output}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def write_markdown(args, n_features, rows, baseline_mib, base, lines, total) -> None:
    import convpaint

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "n/a"
    out = [
        "# Prediction memory vs image size and tile size",
        "",
        f"Generated by `benchmarks/memory.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"convpaint {convpaint.__version__}, torch {torch_version}).",
        "",
        f"Model: {args.features} features ({n_features} per pixel), 50 trees, trained on "
        "the sample nuclei image. "
        f"Prediction: `tiling.threads = {args.threads}`"
        f"{', with probability maps' if args.probabilities else ', labels only'}; each run "
        "in a fresh process. Peak RSS is the process's VmHWM (anonymous + file-backed "
        "pages); wall time is the `api.predict` call only.",
        "",
        f"Baseline (fresh process that imports torch + convpaint and loads the model): "
        f"**{baseline_mib:.0f} MiB** (imports {base['import_s']:.1f} s).",
        "",
        "| image | Mpx | tile | tiles | peak RSS (MiB) | above baseline (MiB) | wall (s) | Mpx/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['size']}×{r['size']} | {r['mpx']:.1f} | {r['tile']} | {r['tiles']} | "
            f"{r['peak_mib']:.0f} | "
            f"{r['peak_mib'] - baseline_mib:+.0f} | {r['predict_s']:.1f} | "
            f"{r['mpx'] / r['predict_s']:.3f} |"
        )
    out += ["", "Conclusions:", ""] + [f"- {line}" for line in lines]
    out += ["", f"Total run time {total:.0f} s.", ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
