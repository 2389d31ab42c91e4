"""Object classification benchmark: leave-one-image-out macro-F1 on real object sets,
and the block-wise segmenter's memory against whole-image scipy labelling.

Uses ``../shared/benchdata/objects/<set>/`` (``images/``, ``instances/``,
``classes/``; Ki67− vs Ki67+ cells, non-commercial licence: read in place, never
copied into the repository). For each image of a set, a model is trained on the
other images through the public API (``convpaint.objects.api.train``) and predicts
the held-out image's objects (``api.predict``); the held-out predictions of all
folds are then scored together (``api.evaluate``: pooled per-class F1 over all
objects, macro-F1 = mean over the two classes). The majority baseline predicts the
training folds' most frequent class for every object.

    python benchmarks/objects.py                        # all sets and methods
    python benchmarks/objects.py --methods forest --sets deepliif_ki67_ihc
    python benchmarks/objects.py --segment-memory       # only the segmenter part
    python benchmarks/objects.py --no-segment-memory    # only the classifiers

Sets: ``deepliif_ki67_ihc`` (4 RGB tiles), ``deepliif_ki67_mpif`` (2 tiles, DAPI,
LAP2 as RGB, Ki67), and ``deepliif_ki67_mpif-noki67``: the same without the Ki67
channel (channels 0-3 written to a temporary folder), a harder morphology/texture
task. Writes the table to ``results/objects.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile

from convpaint._version import __version__

HERE = Path(__file__).resolve().parent
DEFAULT_BENCH = HERE.parent.parent / "shared" / "benchdata" / "objects"
SETS = {
    "deepliif_ki67_ihc": ("deepliif_ki67_ihc", "YXC", None),
    "deepliif_ki67_mpif": ("deepliif_ki67_mpif", "CYX", None),
    "deepliif_ki67_mpif-noki67": ("deepliif_ki67_mpif", "CYX", [0, 1, 2, 3]),
}
METHODS = ("majority", "forest", "forest-pixel", "cnn", "cnn-masked")
#: What a default run measures (cnn-masked: Svetlana's context masking, on request).
DEFAULT_METHODS = ("majority", "forest", "forest-pixel", "cnn")


def _prepare(root: Path, channels: list[int] | None, work: Path) -> Path:
    """The set's image folder, or a temporary copy with only some channels."""
    if channels is None:
        return root / "images"
    out = work / "images"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "images").glob("*.tif")):
        tifffile.imwrite(out / path.name, tifffile.imread(path)[channels])
    return out


def _classifier(method: str, seed: int) -> dict:
    if method == "forest":
        return {"kind": "forest", "seed": seed}
    if method == "forest-pixel":  # + means of the filter bank's pixel features
        pixel = {"extractors": [{"name": "filters", "sigmas": [1.0, 2.0, 4.0]}]}
        return {"kind": "forest", "seed": seed, "features": {"pixel_features": pixel}}
    if method == "cnn-masked":
        return {"kind": "cnn", "seed": seed, "context_dilation": 4}
    return {"kind": "cnn", "seed": seed}


def _majority_table(train_tables: list[Path], mask: Path, out: Path) -> None:
    from convpaint.objects.annotations import read_class_table
    from convpaint.objects.io import write_table

    counts: dict[int, int] = {}
    for t in train_tables:
        for c in read_class_table(t).values():
            counts[c] = counts.get(c, 0) + 1
    top = max(counts, key=lambda c: counts[c])
    ids = np.unique(tifffile.imread(mask))
    ids = ids[ids > 0]
    write_table(out, {"object_id": ids.tolist(), "class": [top] * len(ids)})


def run_set(name: str, bench: Path, methods: list[str], seed: int) -> list[dict]:
    """Leave-one-image-out for one set; returns one result row per method."""
    from convpaint.config import parse_config
    from convpaint.objects import api

    folder, axes, channels = SETS[name]
    root = bench / folder
    rows = []
    with tempfile.TemporaryDirectory(prefix="cp-objects-") as tmp:
        work = Path(tmp)
        images_dir = _prepare(root, channels, work)
        images = sorted(images_dir.glob("*.tif"))
        instances = str(root / "instances" / "{stem}_instances.tif")
        classes = str(root / "classes" / "{stem}_classes.csv")
        for method in methods:
            out = work / method / "predictions"
            seconds, cpu, load = [], [], []
            for held in images:
                stem = held.stem
                train_images = [str(p) for p in images if p != held]
                if method == "majority":
                    tables = [
                        root / "classes" / f"{p.stem}_classes.csv"
                        for p in images
                        if p != held
                    ]
                    out.mkdir(parents=True, exist_ok=True)
                    _majority_table(
                        tables,
                        root / "instances" / f"{stem}_instances.tif",
                        out / f"{stem}_objects.csv",
                    )
                    continue
                config = parse_config(
                    {
                        "objects": {
                            "classifier": _classifier(method, seed),
                            "train": {
                                "images": train_images,
                                "instances": instances,
                                "classes": classes,
                                "axes": axes,
                                "model": str(work / method / f"model_{stem}.cpo"),
                                # time the training itself; the report refits the
                                # forest per fold
                                "report": False,
                            },
                        }
                    }
                )
                t0, c0 = time.perf_counter(), time.process_time()
                api.train(config)
                seconds.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                load.append(os.getloadavg()[0])
                api.predict(
                    work / method / f"model_{stem}.cpo",
                    [str(held)],
                    out,
                    instances=[instances],
                    axes=axes,
                )
            result = api.evaluate(
                [str(out / "*_objects.csv")],
                [instances],
                [classes],
                work / method / "scores",
            )
            pooled = json.loads(
                (work / method / "scores/objects_evaluation.json").read_text()
            )["pooled"]
            per_image = [s.macro_f1 for s in result["scores"]]
            rows.append(
                {
                    "set": name,
                    "method": method,
                    "images": len(images),
                    "objects": pooled["n_truth"],
                    "macro_f1": pooled["macro_f1"],
                    "f1": {k: v["f1"] for k, v in pooled["per_class"].items()},
                    "accuracy": pooled["accuracy"],
                    "per_image_macro_f1": per_image,
                    "train_s": float(np.mean(seconds)) if seconds else 0.0,
                    "train_cpu_s": float(np.mean(cpu)) if cpu else 0.0,
                    "load": float(np.mean(load)) if load else float("nan"),
                }
            )
            print(
                f"{name:28s} {method:9s} macro-F1 {pooled['macro_f1']:.3f}  "
                f"F1 {rows[-1]['f1']}  train {rows[-1]['train_s']:.1f} s/fold",
                flush=True,
            )
    return rows


# --------------------------------------------------------------------------- memory
_MEMORY_CHILD = r"""
import sys, time, json
from pathlib import Path
import numpy as np, dask.array as da
from scipy import ndimage as ndi
mode, size, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def blobs(block, block_info=None):
    # deterministic blobs per block; the mask is never held whole in "blockwise" mode
    loc = block_info[None]["chunk-location"]
    rng = np.random.default_rng(loc[0] * 100003 + loc[1])
    return ndi.gaussian_filter(rng.random(block.shape, dtype=np.float32), 2) > 0.5

mask = da.zeros((size, size), dtype=bool, chunks=1024).map_blocks(blobs, dtype=bool)
def hwm():
    # VmHWM, not ru_maxrss: ru_maxrss survives execve and would report the parent's peak
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

from convpaint.objects.segment import label_mask
import tifffile
base = hwm()
t0 = time.perf_counter()
if mode == "blockwise":
    stats = label_mask(mask, out, block=(1024, 1024))
    n = stats.n_objects
else:
    whole = mask.compute()
    labels, n = ndi.label(whole)
    tifffile.imwrite(out, labels.astype(np.uint32), compression="zlib")
print(json.dumps({"peak_mib": hwm(), "base_mib": base,
                  "seconds": time.perf_counter() - t0, "objects": int(n)}))
"""


def segment_memory(sizes: list[int]) -> list[dict]:
    """Peak RSS of block-wise labelling vs whole-image scipy, each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cp-seg-") as tmp:
        for size in sizes:
            for mode in ("blockwise", "scipy"):
                res = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        _MEMORY_CHILD,
                        mode,
                        str(size),
                        f"{tmp}/{mode}.tif",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(res.stdout.strip().splitlines()[-1])
                r.update({"size": size, "mode": mode})
                rows.append(r)
                print(
                    f"segment {size}² {mode:9s}: peak {r['peak_mib']:.0f} MiB "
                    f"(start {r['base_mib']:.0f}), {r['seconds']:.1f} s, {r['objects']} objects",
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------- report
def _markdown(
    rows: list[dict], memory: list[dict], args: argparse.Namespace, total: float
) -> str:
    lines = [
        "# Object classification: leave-one-image-out",
        "",
        f"Generated by `benchmarks/objects.py` on {datetime.now():%Y-%m-%d %H:%M} "
        f"({platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}, convpaint {__version__}); seed {args.seed}, "
        "default settings (forest: 300 trees, measurements of shape, intensity, quantiles "
        "and a 4-px background ring; forest-pixel: the same plus the means of the filter "
        "bank's pixel features at sigma 1, 2, 4; cnn: small network, patch 1.4x the "
        "objects' extent, at most 30 epochs with early stopping on 10 % of the objects; "
        "cnn-masked: context outside the object's mask dilated by 4 px set to 0).",
        "",
        "Pooled over all held-out objects of a set: F1 per class (1 = Ki67−, 2 = Ki67+), "
        "macro-F1 (their mean), accuracy; per-image macro-F1 in brackets (held-out image "
        "order: sorted names). Train: mean wall-clock and CPU seconds per fold; *load*: "
        "the machine's 1-minute load average after each fold's training (other jobs "
        "shared these CPUs, which inflates wall-clock times).",
        "",
    ]
    if rows:
        lines += [
            "| set | objects | method | macro-F1 | F1 Ki67− | F1 Ki67+ | accuracy "
            "| per-image macro-F1 | train wall (s) | train CPU (s) | load |",
            "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in rows:
            per = ", ".join(
                "nan" if v != v else f"{v:.2f}" for v in r["per_image_macro_f1"]
            )
            lines.append(
                f"| {r['set']} | {r['objects']} | {r['method']} | **{r['macro_f1']:.3f}** | "
                f"{r['f1'].get('1', float('nan')):.3f} | {r['f1'].get('2', float('nan')):.3f} | "
                f"{r['accuracy']:.3f} | [{per}] | {r['train_s']:.1f} | "
                f"{r.get('train_cpu_s', float('nan')):.1f} | {r.get('load', float('nan')):.1f} |"
            )
    if memory:
        lines += [
            "",
            "## Segmenter memory",
            "",
            "Random blobs (generated lazily per 1024² block), labelled into a uint32 TIFF; "
            "each run in a fresh process; peak RSS is VmHWM, *start* the process after its "
            "imports (numpy, scipy, dask, zarr, tifffile, convpaint).",
            "",
            "| mask | method | objects | start (MiB) | peak RSS (MiB) | above start (MiB) | time (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for m in memory:
            lines.append(
                f"| {m['size']}² | {m['mode']} | {m['objects']} | {m['base_mib']:.0f} | "
                f"{m['peak_mib']:.0f} | {m['peak_mib'] - m['base_mib']:.0f} | {m['seconds']:.1f} |"
            )
    lines += ["", f"Total run time {total:.0f} s.", ""]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--segment-memory", action="store_true", help="only the segmenter part"
    )
    parser.add_argument(
        "--no-segment-memory",
        action="store_true",
        help="only the classification part (keeps the last segmenter results)",
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[4096, 8192])
    parser.add_argument("--output", type=Path, default=HERE / "results" / "objects.md")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows: list[dict] = []
    raw = args.output.with_suffix(".json")
    if args.segment_memory:  # keep the classification results of the last full run
        rows = json.loads(raw.read_text())["classification"] if raw.is_file() else []
    else:
        if not args.bench.is_dir():
            print(f"benchmark data not found at {args.bench}", file=sys.stderr)
            return 1
        for name in args.sets:
            rows += run_set(name, args.bench, args.methods, args.seed)
    if args.no_segment_memory:
        memory = json.loads(raw.read_text())["segment_memory"] if raw.is_file() else []
    else:
        memory = segment_memory(args.sizes)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps({"classification": rows, "segment_memory": memory}, indent=1)
    )
    text = _markdown(rows, memory, args, time.perf_counter() - t0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
