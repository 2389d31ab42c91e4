"""Feature-extraction speed: seconds per megapixel, old and new, side by side.

Runs each extractor the way prediction does on a real image (NIH3T3 nuclei, 1024 x
1344 by default, z-scored): tiles of ``--tile`` pixels, each read with the
extractor's halo from the mirror-padded image, features trimmed to the tile and
copied into the classifier's ``(pixels, F)`` rows; with one thread and with two
(two tiles in flight for the compiled filter bank and scipy, whose kernels release
the GIL; one tile at a time with two torch threads for networks). Variants run
alternately, ``--repeats`` times each, in one process; the table shows the best and
the median time per megapixel of output.

    python benchmarks/features_speed.py                 # filters: scipy vs fast
    python benchmarks/features_speed.py --vgg16         # also VGG16 conv1_1 (1, 2, 4)

Writes ``results/features_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = (
    HERE.parent.parent / "shared" / "benchdata" / "nih3t3_coelho2009/images/dna-0.png"
)


def load_image(path: Path) -> np.ndarray:
    """A grayscale image as a z-scored ``(1, Y, X)`` float32 array."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        img = np.asarray(Image.open(path), dtype=np.float32)
    else:
        import tifffile

        img = tifffile.imread(path).astype(np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    return ((img - img.mean()) / img.std())[None]


def _tiles(shape: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    h, w = shape
    return [
        (y, min(y + tile, h), x, min(x + tile, w))
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]


def run_tiled(
    extractor: object,
    padded: np.ndarray,
    shape: tuple[int, int],
    halo: int,
    alignment: int,
    tile: int,
    workers: int,
    use_region: bool,
) -> float:
    """Seconds to compute the features of every tile (into one ``(pixels, F)`` array
    per tile, as the classifier reads them)."""
    n_features = extractor.n_features(padded.shape[0])  # type: ignore[attr-defined]

    def one(t: tuple[int, int, int, int]) -> None:
        y0, y1, x0, x1 = t
        a = alignment
        ey0, ex0 = ((y0 - halo) // a) * a, ((x0 - halo) // a) * a
        ey1, ex1 = -((-(y1 + halo)) // a) * a, -((-(x1 + halo)) // a) * a
        block = padded[:, ey0 + pad : ey1 + pad, ex0 + pad : ex1 + pad]
        region = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        rows = np.empty(((y1 - y0) * (x1 - x0), n_features), np.float32)
        grid = rows.reshape(y1 - y0, x1 - x0, n_features)
        if use_region:
            extractor(block, region=region, out=grid)  # type: ignore[operator]
        else:
            grid[...] = extractor(block)[region]  # type: ignore[operator]

    pad = (padded.shape[1] - shape[0]) // 2
    tiles = _tiles(shape, tile)
    t0 = time.perf_counter()
    if workers == 1:
        for t in tiles:
            one(t)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, tiles))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument(
        "--vgg16", action="store_true", help="also VGG16 conv1_1 at scalings 1, 2, 4"
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "features_speed.md"
    )
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from convpaint.features.registry import build_extractor, params_model

    image = load_image(args.image)
    shape = image.shape[1:]
    mpx = shape[0] * shape[1] / 1e6
    filters = params_model("filters")
    vgg16 = params_model("vgg16")
    # (name, extractor, region/out, kind): compiled and scipy kernels release the GIL
    # and run one tile per thread; torch runs one tile at a time on all threads
    variants: list[tuple[str, object, bool, str]] = [
        (
            "filters, scipy (convpaint 0.1)",
            build_extractor(filters(implementation="scipy")),
            False,
            "tiles",
        ),
        ("filters, fast", build_extractor(filters()), False, "tiles"),
        ("filters, fast, region/out", build_extractor(filters()), True, "tiles"),
    ]
    if args.vgg16:
        variants += [
            (
                "vgg16 conv1_1 x1,2,4, torch (convpaint 0.1)",
                build_extractor(vgg16(implementation="torch")),
                False,
                "torch",
            ),
            ("vgg16 conv1_1 x1,2,4, fast", build_extractor(vgg16()), False, "tiles"),
            (
                "vgg16 conv1_1 x1,2,4, fast, region/out",
                build_extractor(vgg16()),
                True,
                "tiles",
            ),
        ]
    halo = max(e.halo for _, e, _, _ in variants)  # type: ignore[attr-defined]
    alignment = int(np.lcm.reduce([e.alignment for _, e, _, _ in variants]))  # type: ignore[attr-defined]
    pad = halo + alignment
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")

    def runner(
        extractor: object, region: bool, kind: str, threads: int
    ) -> Callable[[], float]:
        def run() -> float:
            if kind == "torch":
                import torch

                torch.set_num_threads(threads)
            with threadpool_limits(limits=threads if kind == "torch" else 1):
                return run_tiled(
                    extractor,
                    padded,
                    shape,
                    extractor.halo,  # type: ignore[attr-defined]
                    extractor.alignment,  # type: ignore[attr-defined]
                    args.tile,
                    1 if kind == "torch" else threads,
                    region,
                )

        return run

    load_before = os.getloadavg()[0]
    # warm-up: compile or load cached kernels, fault in memory
    for _, e, region, kind in variants:
        runner(e, region, kind, 1)()
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for threads in args.threads:
            for name, e, region, kind in variants:
                sec = runner(e, region, kind, threads)()
                times.setdefault((name, threads), []).append(sec / mpx)
                print(
                    f"{name:34s} {threads} thread(s): {sec / mpx:.3f} s/Mpx",
                    file=sys.stderr,
                )

    load_after = os.getloadavg()[0]
    lines = [
        f"Image: `{args.image.name}` ({shape[0]} x {shape[1]}, {mpx:.2f} Mpx), tiles of "
        f"{args.tile} px plus the halo, {args.repeats} runs each, alternating; "
        f"wall seconds per megapixel of output (best / median). Machine: "
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, load average "
        f"{load_before:.1f} before and {load_after:.1f} after the runs (other jobs "
        "on the machine count).",
        "",
        "| features | F | "
        + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in args.threads)
        + " |",
        "|---|---|" + "---|" * len(args.threads),
    ]
    for name, e, _, _ in variants:
        ref = variants[0][0] if name.startswith("filters") else variants[3][0]
        cells = []
        for t in args.threads:
            ts = times[(name, t)]
            speedup = min(times[(ref, t)]) / min(ts)
            cells.append(
                f"{min(ts):.3f} / {statistics.median(ts):.3f} ({speedup:.1f}x)"
            )
        lines.append(f"| {name} | {e.n_features(1)} | " + " | ".join(cells) + " |")  # type: ignore[attr-defined]
    lines.append("")
    lines.append(
        "(N.Nx): speed relative to convpaint 0.1's implementation of the same "
        "features with the same threads. "
        "*region/out*: the extractor computes only the tile and writes it straight into "
        "the classifier's rows (`extractor(block, region=..., out=...)`) instead of "
        "returning the whole block for the pipeline to trim and copy."
    )
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
