"""Is prediction throughput independent of stack size? The same tiles, timed in two stacks.

``stack_memory.py`` reports each stack's mean throughput. Its stacks mirror-tile a real
100-plane volume, so their content repeats every 200 planes, and the time per tile
depends on the content (the forest's trees run deeper where the classes are
ambiguous): a 1 GB stack holds only the first 119 planes, a 16 GB stack every part of
the period, so their means differ even where the engine's speed does not.

This benchmark removes the content from the comparison. It predicts both stacks in
one run, each in a fresh ``convpaint predict --resume`` process, and stops each
(SIGTERM) as soon as it has stored every tile of the planes both stacks share in
whole tile slabs. The per-tile completion markers that ``--resume`` keeps give the
time of each tile, so the throughput compared is that of identical tiles::

    python benchmarks/stack_throughput.py --workdir /scratch/stacks          # 1 vs 16 GB
    python benchmarks/stack_throughput.py --workdir /scratch/stacks --repeats 2  # ABBA

``--repeats 2`` runs small, large, large, small, so that a drift of the machine's
speed during the run cancels out. The stacks, the model and the scratch outputs live
in ``--workdir``; stacks already built there by ``stack_memory.py`` are reused.
Writes ``results/stack_throughput.md``.

``--profile MARKERS.json --planes N`` predicts nothing: it reads the tile completion
times that ``stack_memory.py --segment-seconds`` records for a whole stack
(``markers_<model>_<planes>_<format>.json`` in its workdir) and writes the throughput
of every tile slab against its position in the stack (``results/stack_profile.md``
and ``.png``). The pauses between segments (a process stopped, the next starting)
are left out: each counts as one median tile interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import tifffile
from stack_memory import (
    BENCH,
    EDGE,
    MODELS,
    VOLUME,
    TileTimes,
    build_stacks,
    done_folder,
    predict_command,
    train_model,
)

HERE = Path(__file__).resolve().parent

#: Seconds between two tiles' completions beyond which the run was paused.
GAP = 60.0
#: The benchmark stacks repeat their content every this many planes (a 100-plane
#: volume, mirror-tiled).
PERIOD = 200


def time_tiles(
    model: Path, stack: Path, out: Path, threads: int, slabs: int | None, planes: int
) -> dict:
    """Predict ``stack`` until its first ``slabs`` tile slabs are stored; time them.

    ``slabs=None``: the whole slabs before the last one of a ``planes`` stack (a run
    that completes removes its markers). Returns the completion time of every tile in
    those slabs (relative to the first), the tile depth and the number of slabs. The
    process is stopped with SIGTERM once they are all done.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = predict_command(model, stack, out, threads, resume=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tiles = TileTimes(out)
    depth = want = None
    try:
        while proc.poll() is None:
            time.sleep(0.5)  # a tile completed just before the run ends is still seen
            if depth is None:  # the chunk grid, once the labels array exists
                folder = done_folder(out)
                zarray = folder.parent / ".zarray" if folder is not None else None
                if zarray is None or not zarray.exists():
                    continue
                grid = json.loads(zarray.read_text())
                depth = int(grid["chunks"][-3])
                slabs = slabs or max(1, (planes - 1) // depth)  # never the last
                rows, cols = (
                    -(-grid["shape"][i] // grid["chunks"][i]) for i in (-2, -1)
                )
                want = slabs * rows * cols
            tiles.record()
            if sum(_slab(name) < slabs for name in tiles.times) >= want:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
    times = {k: v for k, v in tiles.times.items() if _slab(k) < (slabs or 0)}
    if want is None or len(times) < want:
        raise RuntimeError(
            f"{stack.name}: {len(times)} of {want} tiles timed before the prediction "
            f"ended (exit {proc.returncode}); a run that completes removes its tile "
            f"markers, so time fewer slabs (--slabs) than the stack has. "
            f"{err.decode()[-2000:]}"
        )
    shutil.rmtree(out, ignore_errors=True)
    t0 = min(times.values())
    return {
        "depth": depth,
        "slabs": slabs,
        "times": {k: v - t0 for k, v in times.items()},
    }


def _slab(marker: str) -> int:
    """The Z index of a tile marker named by its chunk-grid index (..., Z, Y, X)."""
    return int(marker.split(".")[-3])


def summarise(label: str, planes: int, run: dict, slabs: int) -> dict:
    """Throughput of the timed tiles, overall and per slab."""
    times = run["times"]
    voxels = slabs * run["depth"] * EDGE * EDGE
    span = max(times.values())  # the first tile's own time is not seen: n-1 tiles
    per_slab = []
    prev = 0.0
    for z in range(slabs):
        end = max(t for k, t in times.items() if _slab(k) == z)
        per_slab.append(end - prev)
        prev = end
    n = len(times)
    seconds = span * n / (n - 1)
    return {
        "stack": label,
        "planes": planes,
        "tiles": n,
        "seconds": seconds,
        "mvox_s": voxels / 1e6 / seconds,
        "slab_seconds": per_slab,
    }


def slab_profile(markers: dict[str, float], planes: int, depth: int) -> list[dict]:
    """Seconds and Mvoxel/s per tile slab, from every tile's completion time.

    Tiles are taken in completion order; each interval is charged to the tile that
    ended it. An interval over ``GAP`` seconds is a pause between two segments and
    counts as the median interval instead; it starts a new segment. Slabs with fewer
    tiles than the others (not predicted yet, or completions not recorded) are left
    out.
    """
    order = sorted(markers.items(), key=lambda kv: kv[1])
    gaps = sorted(b[1] - a[1] for a, b in itertools.pairwise(order))
    median = gaps[len(gaps) // 2]
    nslabs = -(-planes // depth)
    seconds = [0.0] * nslabs
    segment = [0] * nslabs
    count = [0] * nslabs
    current = 1
    for i, (name, t) in enumerate(order):
        dt = median if i == 0 else t - order[i - 1][1]
        if dt > GAP:
            dt, current = median, current + 1
        z = _slab(name)
        seconds[z] += dt
        count[z] += 1
        segment[z] = segment[z] or current
    rows = []
    for z in range(nslabs):
        if count[z] < max(count):
            continue  # not (wholly) predicted, or some completions not recorded
        thick = min(depth, planes - z * depth)
        rows.append(
            {
                "slab": z,
                "planes": (z * depth, z * depth + thick),
                "segment": segment[z],
                "seconds": seconds[z],
                "mvox_s": thick * EDGE * EDGE / 1e6 / seconds[z],
            }
        )
    return rows


def profile(markers: Path, planes: int, depth: int, output: Path) -> str:
    """Write the per-slab throughput table and plot of one whole-stack run."""
    rows = slab_profile(json.loads(markers.read_text()), planes, depth)
    lines = [
        f"Throughput by position in the stack: {planes}x{EDGE}x{EDGE}, "
        f"{len(rows)} tile slabs, from the tile completion times in `{markers.name}` "
        f"(pauses between segments left out). The stack's content repeats every "
        f"{PERIOD} planes.",
        "",
        "| planes | segment | seconds | Mvoxel/s |",
        "|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["planes"]
        lines.append(
            f"| {a}-{b - 1} | {r['segment']} | {r['seconds']:.0f} | {r['mvox_s']:.3f} |"
        )
    whole = [r for r in rows if r["planes"][1] - r["planes"][0] == depth]
    half = len(whole) // 2
    first, last = whole[:half], whole[half:]

    def rate(rs):
        vox = sum(r["planes"][1] - r["planes"][0] for r in rs) * EDGE * EDGE / 1e6
        return vox / sum(r["seconds"] for r in rs)

    lines += [
        "",
        f"First half of the stack {rate(first):.3f} Mvoxel/s, second half "
        f"{rate(last):.3f}; whole stack {rate(rows):.3f}.",
    ]
    text = "\n".join(lines) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    _plot_profile(rows, output.with_suffix(".png"))
    return text


def _plot_profile(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for seg in sorted({r["segment"] for r in rows}):
        rs = [r for r in rows if r["segment"] == seg]
        ax.plot(
            [(r["planes"][0] + r["planes"][1]) / 2 for r in rs],
            [r["mvox_s"] for r in rs],
            marker="o",
            markersize=3,
            linestyle="",
            label=f"segment {seg}",
        )
    top = rows[-1]["planes"][1]
    for z in range(PERIOD, top, PERIOD):
        ax.axvline(z, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel(f"plane (dotted: the content repeats every {PERIOD} planes)")
    ax.set_ylabel("Mvoxel/s per tile slab")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=6, loc="lower right", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=float, default=1, help="GB (uint16)")
    parser.add_argument("--large", type=float, default=16, help="GB (uint16)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="default")
    parser.add_argument(
        "--slabs",
        type=int,
        default=None,
        help="tile slabs to time (default: the small stack's whole slabs before its "
        "last one)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="2: small,large,large,small"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "stack_throughput.md",
        help="the comparison's table (--profile writes results/stack_profile.md)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a whole stack's tile completion times (markers_*.json): write its "
        "throughput by slab, predict nothing",
    )
    parser.add_argument("--planes", type=int, help="the profiled stack's planes")
    parser.add_argument(
        "--depth", type=int, help="the profiled output's tile depth (its z chunk)"
    )
    args = parser.parse_args(argv)
    if args.profile is not None:
        if args.planes is None or args.depth is None:
            parser.error("--profile needs --planes and --depth")
        out = HERE / "results" / "stack_profile.md"
        print(profile(args.profile, args.planes, args.depth, out))
        return 0
    if args.workdir is None:
        parser.error("--workdir is needed (stacks, model and scratch outputs)")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = train_model(work, args.model)
    vol = tifffile.imread(BENCH / VOLUME)
    stacks = {}
    for gb in (args.small, args.large):
        planes = max(1, round(gb * 1e9 / (2 * EDGE * EDGE)))
        stacks[gb] = (planes, build_stacks(vol, planes, work, ["zarr"])["zarr"])
    order = [args.small, args.large]
    if args.repeats > 1:
        order = (order + order[::-1]) * (args.repeats // 2) + order[: args.repeats % 2]
    slabs, depth = args.slabs, None
    rows = []
    for gb in order:
        planes, stack = stacks[gb]
        run = time_tiles(
            model,
            stack,
            work / "throughput_out",
            args.threads,
            slabs,
            stacks[args.small][0],
        )
        if rows and run["depth"] != depth:
            raise SystemExit(
                f"the tile depth differs: {depth} planes before, {run['depth']} in "
                f"{stack.name}; the tiles would not be the same (give both runs the "
                "same tiling)"
            )
        slabs, depth = run["slabs"], run["depth"]  # the same tiles in every later run
        row = summarise(f"{gb:g} GB", planes, run, slabs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = _report(rows, slabs, depth, args)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


def _report(rows: list[dict], slabs: int, depth: int, args) -> str:
    by = {}
    for r in rows:
        by.setdefault(r["stack"], []).append(r["mvox_s"])
    small, large = f"{args.small:g} GB", f"{args.large:g} GB"
    mean = {k: sum(v) / len(v) for k, v in by.items()}
    lines = [
        f"Model `{args.model}`, `convpaint predict --format zarr --resume --threads "
        f"{args.threads}`, a fresh process per run, in the order shown. Timed: the "
        f"first {slabs} tile slabs ({slabs * depth} planes x {EDGE}x{EDGE}), the same "
        "tiles in both stacks, from their completion markers.",
        "",
        "| run | stack | tiles | seconds | Mvoxel/s | seconds per slab |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        per = ", ".join(f"{s:.0f}" for s in r["slab_seconds"])
        lines.append(
            f"| {i} | {r['stack']} ({r['planes']} planes) | {r['tiles']} | "
            f"{r['seconds']:.0f} | {r['mvox_s']:.3f} | {per} |"
        )
    lines += [
        "",
        f"Throughput {large} / {small} on the same tiles: "
        f"{mean[large] / mean[small]:.3f}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
