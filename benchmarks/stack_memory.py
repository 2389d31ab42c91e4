"""Peak memory and throughput of `convpaint predict` on large Z stacks.

Builds uint16 ZYX stacks of the requested sizes by mirror-tiling a real confocal
volume (``plantseg_ovule_nuclei3d/images/1135_mini.tif`` from ``../shared/benchdata``),
written plane by plane as a tiled BigTIFF and as a zarr array (never in memory whole),
trains the default model on that volume's scribbles, then runs a fresh
``convpaint predict`` process per stack and format, and prints the wall time,
throughput (Mvoxel/s) and peak resident memory (the process's VmHWM) per size.

    python benchmarks/stack_memory.py                     # 1, 4 and 16 GB
    python benchmarks/stack_memory.py --sizes 0.25 1 --formats zarr
    python benchmarks/stack_memory.py --model planes --sizes 1 4 16 --tif-max-gb 1
    python benchmarks/stack_memory.py --model planes --sizes 4 --formats zarr --append

Writes ``results/stack_memory.md`` and ``results/stack_memory.png``. The stacks are
built in ``--workdir`` (default: a temporary folder; they need about 2.5x the largest
size in disk space) and removed afterwards unless ``--keep``.

A stack that takes longer than one sitting is measured in segments: with
``--segment-seconds S --workdir DIR`` each prediction runs with ``convpaint predict
--resume`` and is stopped (SIGTERM) after ``S`` seconds; running the same command
again continues it from its partial output (model, stack and segment log stay in
``DIR``) until it completes. Its row then reports the summed seconds of all segments
(each a fresh process) and the highest peak RSS among them. The completion time of
every tile is kept in ``DIR/markers_<model>_<planes>_<format>.json``, for the
throughput profile along the stack (``stack_throughput.py --profile``)::

    python benchmarks/stack_memory.py --sizes 16 --formats zarr --append \
        --workdir /scratch/stacks --segment-seconds 7200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent.parent / "shared" / "benchdata"
VOLUME = "plantseg_ovule_nuclei3d/images/1135_mini.tif"
SCRIBBLES = "plantseg_ovule_nuclei3d/derived/1135_mini_scribbles.tif"
EDGE = 2048  # Y and X of every stack; the size sets the number of planes


def _mirror(vol: np.ndarray, z: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Plane ``z``, window ``[y0:y1, x0:x1]`` of the volume mirror-tiled to any size."""
    from convpaint.tiling import symmetric_index

    iz = symmetric_index(z, z + 1, vol.shape[0])[0]
    iy = symmetric_index(y0, y1, vol.shape[1])
    ix = symmetric_index(x0, x1, vol.shape[2])
    return vol[iz][np.ix_(iy, ix)]


def build_stacks(
    vol: np.ndarray, planes: int, folder: Path, formats: list[str]
) -> dict:
    """Write a ``(planes, EDGE, EDGE)`` uint16 stack as tiled BigTIFF and/or zarr."""
    import zarr

    out = {}
    scaled = (vol.astype(np.uint16) * 257).astype(np.uint16)
    if "tif" in formats:
        path = folder / f"stack_{planes}.tif"
        # with tile=..., tifffile takes the pixels as an iterator of tiles, page by page
        tiles = (
            _mirror(scaled, z, 0, EDGE, 0, EDGE)[y : y + 256, x : x + 256]
            for z in range(planes)
            for y in range(0, EDGE, 256)
            for x in range(0, EDGE, 256)
        )
        tifffile.imwrite(
            path,
            tiles,
            shape=(planes, EDGE, EDGE),
            dtype=np.uint16,
            bigtiff=True,
            tile=(256, 256),
            compression="zlib",
            metadata={"axes": "ZYX"},
        )
        out["tif"] = path
    if "zarr" in formats:
        path = folder / f"stack_{planes}.zarr"
        built = folder / f"stack_{planes}.zarr.built"
        if built.exists():  # a segmented run's stack, complete
            out["zarr"] = path
            return out
        arr = zarr.open_array(
            str(path),
            mode="w",
            shape=(planes, EDGE, EDGE),
            chunks=(16, 512, 512),
            dtype=np.uint16,
            zarr_format=2,
        )
        arr.attrs["axes"] = "ZYX"
        for z0 in range(0, planes, 16):
            z1 = min(planes, z0 + 16)
            arr[z0:z1] = np.stack(
                [_mirror(scaled, z, 0, EDGE, 0, EDGE) for z in range(z0, z1)]
            )
        built.touch()
        out["zarr"] = path
    return out


#: The models compared: convpaint's default for stacks, and the 2-D default features
#: plane by plane (several times faster, so that the largest stacks finish).
MODELS = {
    "default": {},
    "planes": {"features": {"extractors": [{"name": "filters"}], "dims": "planes"}},
}


def train_model(folder: Path, kind: str = "default") -> Path:
    """A model trained on the real volume's scribbles (3 planes)."""
    from convpaint import api
    from convpaint.config import parse_config

    vol = tifffile.imread(BENCH / VOLUME)
    img = folder / "train.tif"
    tifffile.imwrite(
        img, (vol.astype(np.uint16) * 257), imagej=True, metadata={"axes": "ZYX"}
    )
    scr = folder / "train_scr.tif"
    tifffile.imwrite(
        scr, tifffile.imread(BENCH / SCRIBBLES), imagej=True, metadata={"axes": "ZYX"}
    )
    model = folder / f"model_{kind}.cpm"
    if model.exists():  # a segmented run continues with the model it started with
        return model
    api.train(
        parse_config(
            {
                **MODELS[kind],
                "classifier": {"seed": 0},
                "train": {
                    "images": [str(img)],
                    "annotations": [str(scr)],
                    "model": str(model),
                    "report": False,
                },
            }
        ),
        overwrite=True,
    )
    return model


def predict_command(
    model: Path, stack: Path, out: Path, threads: int, resume: bool
) -> list[str]:
    """The `convpaint predict` command line of one benchmark prediction (zarr)."""
    return [
        sys.executable,
        "-m",
        "convpaint",
        "predict",
        "--model",
        str(model),
        "--output",
        str(out),
        "--format",
        "zarr",
        "--resume" if resume else "--overwrite",
        "-q",
        "--threads",
        str(threads),
        str(stack),
    ]


def predict(
    model: Path,
    stack: Path,
    out: Path,
    threads: int,
    budget: float | None = None,
    on_poll: Callable[[float, int], None] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> dict:
    """Run one fresh `convpaint predict` process; return its time and peak RSS.

    With ``budget`` (seconds) the prediction runs with ``--resume`` and is stopped
    with SIGTERM when the budget is spent; ``finished`` says whether it completed.
    ``on_poll(seconds, peak_rss)`` is called about every 30 seconds meanwhile,
    ``on_tick()`` about every 2 seconds.
    """
    cmd = predict_command(model, stack, out, threads, resume=budget is not None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    status_path = Path(f"/proc/{proc.pid}/status")
    stopped = False
    polled = ticked = t0
    while proc.poll() is None:
        now = time.perf_counter()
        if on_tick is not None and now - ticked > 2:
            on_tick()
            ticked = now
        if on_poll is not None and now - polled > 30:
            on_poll(now - t0, peak)
            polled = now
        if budget is not None and not stopped and now - t0 > budget:
            proc.send_signal(signal.SIGTERM)
            stopped = True
        try:
            for line in status_path.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.5)
    seconds = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode != 0 and not (stopped and proc.returncode == 143):
        raise RuntimeError(
            f"predict failed ({proc.returncode}): {err.decode()[-2000:]}"
        )
    return {"seconds": seconds, "peak_rss": peak, "finished": proc.returncode == 0}


class TileTimes:
    """Completion times of a resumable prediction's tiles, recorded while it runs.

    ``convpaint predict --resume`` leaves one marker file per stored tile (named by
    the tile's chunk-grid index) and removes them all when the prediction completes;
    :meth:`record`, called every few seconds, keeps each new marker's time. With a
    ``path`` the times are kept in a JSON file ({marker: time}) across segments.
    """

    def __init__(self, out: Path, path: Path | None = None):
        self.out, self.path = out, path
        self.times: dict[str, float] = {}
        if path is not None and path.exists():
            self.times = json.loads(path.read_text())

    def record(self) -> None:
        folder = done_folder(self.out)
        if folder is None:
            return
        try:
            names = os.listdir(folder)
        except FileNotFoundError:  # completed meanwhile
            return
        for name in names:
            if name not in self.times:
                try:
                    self.times[name] = (folder / name).stat().st_mtime
                except FileNotFoundError:
                    pass

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.times))
            os.replace(tmp, self.path)


def done_folder(out: Path) -> Path | None:
    """The tile markers' folder of a resumable prediction into ``out`` (inside the
    labels' partial folder), or None before it exists and after completion."""
    from convpaint.io.resume import DONE_FOLDER

    found = sorted(out.glob(f".*.resume.partial/{DONE_FOLDER}"))
    return found[0] if found else None


def _tiles_done(out: Path) -> int:
    """Tiles a resumable prediction in ``out`` has stored so far."""
    folder = done_folder(out)
    try:
        return len(os.listdir(folder)) if folder is not None else 0
    except FileNotFoundError:  # completed meanwhile
        return 0


def predict_segment(
    model: Path, stack: Path, out: Path, threads: int, budget: float, log: Path
) -> dict | None:
    """One segment of a resumable prediction; the summed result once complete.

    The segment's entry in ``log`` is updated every 30 seconds while it runs, so a
    segment whose driver was killed (the end of a session) still counts, up to
    30 seconds short; such entries are marked ``killed``.
    """
    segments = json.loads(log.read_text()) if log.exists() else []
    for seg in segments:
        if seg.pop("open", False):
            seg["killed"] = True
    entry = {"seconds": 0.0, "peak_rss": 0, "tiles_before": _tiles_done(out)}
    entry |= {"tiles_after": entry["tiles_before"], "finished": False, "open": True}
    segments.append(entry)

    def save() -> None:
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text(json.dumps(segments, indent=1))
        os.replace(tmp, log)

    times = TileTimes(out, log.with_name(log.name.replace("segments_", "markers_")))

    def poll(seconds: float, peak: int) -> None:
        entry.update(seconds=seconds, peak_rss=peak, tiles_after=_tiles_done(out))
        save()
        times.save()

    save()
    res = predict(
        model, stack, out, threads, budget, on_poll=poll, on_tick=times.record
    )
    times.save()
    entry.update(
        seconds=res["seconds"],
        peak_rss=res["peak_rss"],
        tiles_after=_tiles_done(out),
        finished=res["finished"],
    )
    entry.pop("open")
    save()
    print(json.dumps({"segment": len(segments), **entry}), flush=True)
    if not res["finished"]:
        return None
    log.unlink()  # complete: a later run of this size starts afresh
    return {
        "seconds": sum(s["seconds"] for s in segments),
        "peak_rss": max(s["peak_rss"] for s in segments),
        "segments": len(segments),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        nargs="*",
        type=float,
        default=[1, 4, 16],
        help="stack sizes in GB (uint16)",
    )
    parser.add_argument("--formats", nargs="*", default=["tif", "zarr"])
    parser.add_argument(
        "--tif-max-gb",
        type=float,
        default=None,
        help="build and predict the TIFF only for stacks up to this size",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="default")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=None,
        help="predict with --resume, stopping each run after this many seconds; "
        "rerun the command to continue (needs --workdir)",
    )
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep this model's earlier rows (other sizes) in the results",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "stack_memory.md"
    )
    args = parser.parse_args(argv)
    if args.segment_seconds is not None and args.workdir is None:
        parser.error("--segment-seconds needs --workdir (it keeps the partial run)")
    segmented = args.segment_seconds is not None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="convpaint-stacks-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        model = train_model(work, args.model)
        vol = tifffile.imread(BENCH / VOLUME)
        for gb in args.sizes:
            planes = max(1, round(gb * 1e9 / (2 * EDGE * EDGE)))
            t0 = time.perf_counter()
            formats = [
                f
                for f in args.formats
                if f != "tif" or args.tif_max_gb is None or gb <= args.tif_max_gb
            ]
            stacks = build_stacks(vol, planes, work, formats)
            print(
                f"built {planes} x {EDGE}^2 in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            for fmt, path in stacks.items():
                out = work / f"out_{planes}_{fmt}"
                if segmented:
                    res = predict_segment(
                        model,
                        path,
                        out,
                        args.threads,
                        args.segment_seconds,
                        work / f"segments_{args.model}_{planes}_{fmt}.json",
                    )
                    if res is None:
                        print(
                            "stopped after --segment-seconds; run the same command "
                            "again to continue",
                            file=sys.stderr,
                        )
                        return 3
                else:
                    res = predict(model, path, out, args.threads)
                voxels = planes * EDGE * EDGE
                row = {
                    "model": args.model,
                    "size_gb": voxels * 2 / 1e9,
                    "format": fmt,
                    "shape": f"{planes}x{EDGE}x{EDGE}",
                    "seconds": res["seconds"],
                    "mvox_s": voxels / 1e6 / res["seconds"],
                    "peak_rss_mib": res["peak_rss"] / 2**20,
                    "segments": res.get("segments", 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(out, ignore_errors=True)
            for path in stacks.values():
                if not args.keep and not segmented:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = _table(rows, args.model, args.threads)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # results accumulate per model: one table per model, one plot over all runs
    raw = args.output.with_suffix(".json")
    runs = json.loads(raw.read_text()) if raw.exists() else []
    done = {(r["shape"], r["format"]) for r in rows}
    runs = [
        r
        for r in runs
        if r.get("model") != args.model
        or (args.append and (r["shape"], r["format"]) not in done)
    ] + rows
    runs.sort(key=lambda r: (r["model"], r["size_gb"], r["format"]))
    raw.write_text(json.dumps(runs, indent=1))
    tables = []
    for model in sorted({r["model"] for r in runs}):
        tables.append(
            _table([r for r in runs if r["model"] == model], model, args.threads)
        )
    args.output.write_text("\n".join(tables))
    _plot(runs, args.output.with_suffix(".png"))
    return 0


def _table(rows: list[dict], model: str, threads: int) -> str:
    lines = [
        f"Model `{model}` (trained on {VOLUME}), `convpaint predict --format zarr "
        f"--threads {threads}`, a fresh process per stack; uint16 ZYX stacks of "
        f"{EDGE}x{EDGE} planes mirror-tiled from the real volume. Peak RSS = VmHWM.",
        "",
        "| stack | input | voxels | seconds | Mvoxel/s | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        parts = r.get("segments", 1)
        seg = f" [{parts} resumed segments]" if parts > 1 else ""
        lines.append(
            f"| {r['size_gb']:.2f} GB ({r['shape']}){seg} | {r['format']} | "
            f"{r['size_gb'] / 2 * 1e3:,.0f} M | {r['seconds']:.0f} | {r['mvox_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for key in sorted({(r.get("model", "default"), r["format"]) for r in rows}):
        rs = sorted(
            (r for r in rows if (r.get("model", "default"), r["format"]) == key),
            key=lambda r: r["size_gb"],
        )
        sizes = [r["size_gb"] for r in rs]
        label = f"{key[0]} model, {key[1]} input"
        ax1.plot(sizes, [r["peak_rss_mib"] / 1024 for r in rs], marker="o", label=label)
        ax2.plot(sizes, [r["mvox_s"] for r in rs], marker="o", label=label)
    ticks = sorted({round(r["size_gb"], 2) for r in rows})
    for ax, label in ((ax1, "peak RSS (GiB)"), (ax2, "Mvoxel/s")):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("stack size (GB, uint16)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.set_ylim(0, 2.2)
    ax1.axhline(2e9 / 2**30, color="grey", linestyle=":", linewidth=1)  # 2 GB
    ax2.set_ylim(bottom=0)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
