"""Speed benchmark: convpaint against the reference Convpaint, side by side, one run.

Builds 2048² and 4096² test images by mirror-tiling a real crop of
``../shared/benchdata`` (NIH3T3 ``dna-0``: 1024 x 1024; HeLa ``t13``: 700 x 1024),
draws 1 % scribbles on the crop's ground truth (``convpaint.scribbles``, width 2,
seed 0), trains both tools on the crop and predicts the large images, alternating
between the tools, at least twice each:

- convpaint: the whole ``convpaint predict`` process (start-up, imports, model
  load, reading, statistics, writing the TIFF), default model and the ``vgg16``
  preset (the reference's own features: VGG16 conv1_1 at scalings 1, 2, 4);
- the reference (napari-convpaint 1.2.0, CatBoost, ``../shared/reference``): its
  in-memory ``segment()`` call alone, as ``segment.py`` times it, with ``--tile`` at
  4096² (untiled it needs about 1.5 GB per Mpx).

Training: convpaint's ``train`` (features + forest, report off) against the
reference's ``train()``, both on the crops; the cost of the training report's
cross-validation against the forest fit (``timings`` in the report).

Memory and size sweep (``--sweep``): throughput and peak RSS against image size
(default 1k² to 8k², plus 16k² for convpaint). The reference runs untiled under a
resident-memory watchdog (``--ref-memory-gb``, or what the machine has available
less 1 GiB) and stops where it runs out of memory; its tiled mode is measured too.

    python benchmarks/speed.py                       # main table, ~20 min on 2 cores
    python benchmarks/speed.py --sweep               # + size sweep (~25 min more)
    python benchmarks/speed.py --from-json benchmarks/results/speed.json   # re-render

Writes ``benchmarks/results/speed.md``, ``speed.json`` and (with the sweep)
``speed.png``. Seconds are medians over the runs; the ratio is the reference's
median over convpaint's. Peak RSS: convpaint's whole process (ru_maxrss); the
reference's prediction phase (VmHWM reset before ``segment()``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
DEFAULT_BENCH = SHARED / "benchdata"
DEFAULT_SEGMENT = SHARED / "reference" / "segment.py"
DEFAULT_REF_PYTHON = (
    Path.home() / ".cache" / "convpaint-reference" / "venv" / "bin" / "python"
)

#: name -> (image, ground truth, crop rows, crop columns)
CROPS: dict[str, tuple[str, str, slice, slice]] = {
    "nih3t3": (
        "nih3t3_coelho2009/images/dna-0.png",
        "nih3t3_coelho2009/derived/dna-0_gt.tif",
        slice(0, 1024),
        slice(160, 1184),
    ),
    "hela": (
        "ctc_fluo_n2dl_hela/images/t13.tif",
        "ctc_fluo_n2dl_hela/derived/t13_gt.tif",
        slice(0, 700),
        slice(38, 1062),
    ),
}
#: convpaint feature presets compared (None: the default model).
PRESETS: dict[str, list[dict[str, Any]] | None] = {
    "default": None,
    "vgg16": [{"name": "vgg16"}],
}
_OOM_MARKERS = (
    "MemoryError",
    "out of memory",
    "can't allocate memory",
    "Cannot allocate",
)


# --------------------------------------------------------------------------- data
def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".png":
        from PIL import Image

        return np.asarray(Image.open(path))
    return tifffile.imread(path)


def mirror_tile(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` extended to ``size`` x ``size`` by mirroring (d c b a | a b c d | ...)."""
    pad = [(0, max(0, size - n)) for n in array.shape[:2]]
    return np.pad(array, pad, mode="symmetric")[:size, :size]


def prepare(bench: Path, work: Path, sizes: list[int]) -> dict[str, dict[str, Any]]:
    """Crops, their scribbles and mirror-tiled test images; returns their paths."""
    from convpaint.scribbles import generate_scribbles

    data: dict[str, dict[str, Any]] = {}
    for name, (img, gt, rows, cols) in CROPS.items():
        image = _read(bench / img)[rows, cols]
        truth = tifffile.imread(bench / gt)[rows, cols]
        scribbles = generate_scribbles(truth, fraction=0.01, width=2, seed=0)
        entry: dict[str, Any] = {
            "crop": work / f"{name}_crop.tif",
            "scribbles": work / f"{name}_crop_scribbles.tif",
            "crop_shape": list(image.shape),
            "scribbled": float((scribbles > 0).mean()),
            "images": {},
            "truth": {},
        }
        tifffile.imwrite(entry["crop"], image)
        tifffile.imwrite(entry["scribbles"], scribbles)
        for size in sizes:
            entry["images"][size] = work / f"{name}_{size}.tif"
            entry["truth"][size] = work / f"{name}_{size}_gt.tif"
            if not entry["images"][size].exists():
                tifffile.imwrite(entry["images"][size], mirror_tile(image, size))
                tifffile.imwrite(entry["truth"][size], mirror_tile(truth, size))
        data[name] = entry
    return data


def miou(prediction: Path, truth: Path) -> float:
    """Mean over the ground truth's classes of the IoU (ground-truth 0 ignored)."""
    from convpaint.evaluation import score

    return float(score(tifffile.imread(prediction), tifffile.imread(truth)).miou)


# --------------------------------------------------------------------------- processes
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    return env


def _available() -> int:
    """MemAvailable of this machine in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss(pid: int) -> int:
    """Resident bytes of a process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_process(
    argv: list[str], *, rss_limit: int | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a command; its wall time, peak RSS (MiB), exit code and output.

    With ``rss_limit`` (bytes), a watchdog kills the process when its resident
    memory passes the limit (``killed_for_memory`` in the result): the untiled
    reference needs about 1.5 GB per Mpx and must not take the machine down.
    """
    import signal
    import threading

    killed = threading.Event()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=str(ROOT))
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                if _rss(proc.pid) > rss_limit:  # type: ignore[operator]
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)
                    return

        if rss_limit is not None:
            threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "peak_rss_mib": usage.ru_maxrss / 1024.0,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rc": proc.returncode,
            "killed_for_memory": killed.is_set(),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def _fail(what: str, res: dict[str, Any]) -> None:
    sys.stderr.write(res["stdout"][-3000:] + res["stderr"][-3000:])
    raise SystemExit(f"{what} failed (exit code {res['rc']})")


def convpaint_train(
    entry: dict[str, Any], preset: str, work: Path, *, report: bool
) -> dict:
    """Train convpaint on a crop in a fresh process; returns timings and the model."""
    import yaml

    model = work / f"{entry['crop'].stem}_{preset}{'_report' if report else ''}.cpm"
    config: dict[str, Any] = {
        "version": 1,
        "classifier": {"seed": 0},
        "train": {
            "images": [str(entry["crop"])],
            "annotations": [str(entry["scribbles"])],
            "axes": "YX",
            "model": str(model),
            "report": report,
        },
    }
    if PRESETS[preset] is not None:
        config["features"] = {"extractors": PRESETS[preset]}
    path = work / f"{model.stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    res = run_process(
        [
            sys.executable,
            "-m",
            "convpaint",
            "train",
            str(path),
            "--overwrite",
            "--json",
            "-q",
        ],
        env=_env(),
    )
    if res["rc"] != 0:
        _fail(f"convpaint train {path}", res)
    info = json.loads(res["stdout"].strip().splitlines()[-1])
    out = {"model": model, "train_s": info["seconds"], "process_s": res["wall_s"]}
    # the train() call as the reference's is timed: in a process whose imports are
    # done; cold (the first call: numba loads its compiled code) and warm (again)
    res = run_process([sys.executable, "-c", _TRAIN_TIMED, str(path)], env=_env())
    if res["rc"] != 0:
        _fail(f"convpaint train (in process) {path}", res)
    out.update(json.loads(res["stdout"].strip().splitlines()[-1]))
    if report:
        # the report's timings of the warm calls: the cold one also loads the
        # compiled code of the fit (into the fit) and of prediction (into the CV)
        out["timings"] = {
            key: _median([t[key] for t in out["warm_timings"]])
            for key in out["warm_timings"][0]
        }
        out["cv_over_fit"] = _median(
            [t["cross_validation_s"] / t["fit_s"] for t in out["warm_timings"]]
        )
    return out


#: Imports convpaint (and scikit-learn, as the reference's import does), then times
#: ``api.train`` once cold and three times warm; prints {"cold_s", "warm_s" (the
#: median warm call), "warm_timings" (each warm call's step timings)}.
_TRAIN_TIMED = r"""
import json, statistics, sys, time
from convpaint import api
from convpaint.config import load_config
import sklearn.ensemble
config = load_config(sys.argv[1])
t = time.perf_counter(); api.train(config, overwrite=True); cold = time.perf_counter() - t
warm, timings = [], []
for _ in range(3):
    t = time.perf_counter(); r = api.train(config, overwrite=True)
    warm.append(time.perf_counter() - t); timings.append(r.timings)
print(json.dumps({"cold_s": cold, "warm_s": statistics.median(warm),
                  "warm_timings": timings}))
"""


def convpaint_predict(model: Path, image: Path, out_dir: Path) -> dict[str, Any]:
    """Time a whole ``convpaint predict`` process; returns timings and the output."""
    res = run_process(
        [
            sys.executable,
            "-m",
            "convpaint",
            "predict",
            "-m",
            str(model),
            "-o",
            str(out_dir),
            str(image),
            "--overwrite",
            "--json",
            "-q",
        ],
        env=_env(),
    )
    if res["rc"] != 0:
        _fail(f"convpaint predict {image}", res)
    lines = [json.loads(x) for x in res["stdout"].splitlines() if x.startswith("{")]
    output = next(x for x in lines if x.get("type") == "input")["outputs"][0]
    return {
        "seconds": res["wall_s"],
        "peak_rss_mib": res["peak_rss_mib"],
        "cpu_s": res["cpu_s"],
        "output": Path(output),
    }


def reference_run(
    args: argparse.Namespace,
    entry: dict[str, Any],
    image: Path,
    output: Path,
    *,
    tile: bool,
) -> dict[str, Any]:
    """Train the reference on the crop and segment ``image``; its own timings.

    The process is killed when its resident memory passes ``--ref-memory-gb`` or
    what the machine has available less 1 GiB (other jobs share it); that is
    recorded as out of memory.
    """
    argv = [
        str(args.reference_python),
        str(args.segment),
        "--train-image",
        str(entry["crop"]),
        "--train-labels",
        str(entry["scribbles"]),
        "--image",
        str(image),
        "--output",
        str(output),
    ]
    if tile:
        argv.append("--tile")
    limit = min(int(args.ref_memory_gb * 2**30), _available() - 2**30)
    res = run_process(argv, rss_limit=limit)
    if res["rc"] != 0:
        text = res["stdout"] + res["stderr"]
        if res["killed_for_memory"] or any(m in text for m in _OOM_MARKERS):
            return {"oom": True, "process_s": res["wall_s"], "limit_gib": limit / 2**30}
        _fail(f"reference on {image}", res)
    info = json.loads(res["stdout"].strip().splitlines()[-1])
    return {
        "oom": False,
        "seconds": info["predict_s"],
        "train_s": info["train_s"],
        "peak_rss_mib": info["predict_peak_rss_mb"],
        "output": output,
        "process_s": res["wall_s"],
    }


# --------------------------------------------------------------------------- runs
def _load() -> float:
    return os.getloadavg()[0]


def main_runs(args: argparse.Namespace, data: dict, work: Path) -> dict[str, Any]:
    """Training and prediction, alternating tools, ``args.runs`` times."""
    results: dict[str, Any] = {"predict": [], "train": [], "cv": []}
    out = work / "out"
    for name, entry in data.items():
        # the report's timings: cross-validation against the fit
        rep = convpaint_train(entry, "default", work, report=True)
        results["cv"].append(
            {"dataset": name, **rep["timings"], "cv_over_fit": rep["cv_over_fit"]}
        )
        print(f"{name}: report timings {rep['timings']}", flush=True)
    for run in range(args.runs):
        for name, entry in data.items():
            models = {}
            tools = (
                ["convpaint", "reference"]
                if run % 2 == 0
                else ["reference", "convpaint"]
            )
            for size in args.sizes:
                for tool in tools:
                    if tool == "reference":
                        tile = size > 2048
                        ref = reference_run(
                            args,
                            entry,
                            entry["images"][size],
                            out / f"ref_{name}_{size}.tif",
                            tile=tile,
                        )
                        if ref["oom"] and not tile:
                            # not enough memory left on this machine: its tiled mode
                            print(
                                f"{name} {size}: the untiled reference ran out "
                                f"of memory ({ref['limit_gib']:.1f} GiB); tiled",
                                flush=True,
                            )
                            tile = True
                            ref = reference_run(
                                args,
                                entry,
                                entry["images"][size],
                                out / f"ref_{name}_{size}.tif",
                                tile=tile,
                            )
                        if ref["oom"]:
                            raise SystemExit(f"reference ran out of memory at {size}")
                        ref["miou"] = miou(ref["output"], entry["truth"][size])
                        row = {
                            "dataset": name,
                            "size": size,
                            "tool": "reference",
                            "tiled": tile,
                            "run": run,
                            **ref,
                        }
                        results["predict"].append(row)
                        results["train"].append(
                            {
                                "dataset": name,
                                "tool": "reference",
                                "run": run,
                                "train_s": ref["train_s"],
                            }
                        )
                        print(
                            f"run {run} {name} {size} reference: {ref['seconds']:.1f} s "
                            f"(mIoU {ref['miou']:.3f}); load {_load():.1f}",
                            flush=True,
                        )
                        continue
                    for preset in PRESETS:
                        if preset not in models:
                            models[preset] = convpaint_train(
                                entry, preset, work, report=False
                            )
                            results["train"].append(
                                {
                                    "dataset": name,
                                    "tool": f"convpaint {preset}",
                                    "run": run,
                                    **{
                                        k: v
                                        for k, v in models[preset].items()
                                        if k != "model"
                                    },
                                }
                            )
                        res = convpaint_predict(
                            models[preset]["model"], entry["images"][size], out / preset
                        )
                        res["miou"] = miou(res["output"], entry["truth"][size])
                        results["predict"].append(
                            {
                                "dataset": name,
                                "size": size,
                                "tool": f"convpaint {preset}",
                                "run": run,
                                **res,
                            }
                        )
                        print(
                            f"run {run} {name} {size} convpaint {preset}: "
                            f"{res['seconds']:.1f} s, {res['peak_rss_mib']:.0f} MiB "
                            f"(mIoU {res['miou']:.3f}); load {_load():.1f}",
                            flush=True,
                        )
    return results


def sweep_runs(
    args: argparse.Namespace, data: dict, work: Path
) -> list[dict[str, Any]]:
    """Throughput and peak RSS against size, one dataset, both tools."""
    entry = data["nih3t3"]
    image = _read(args.benchdata / CROPS["nih3t3"][0])[
        CROPS["nih3t3"][2], CROPS["nih3t3"][3]
    ]
    model = convpaint_train(entry, "default", work, report=False)["model"]
    rows: list[dict[str, Any]] = []
    untiled_oom = False
    for size in sorted(set(args.sweep_sizes) | set(args.memory_sizes)):
        path = work / f"sweep_{size}.tif"
        if not path.exists():
            tifffile.imwrite(path, mirror_tile(image, size))
        res = convpaint_predict(model, path, work / "sweep_out")
        rows.append({"size": size, "tool": "convpaint", **res})
        print(
            f"sweep {size} convpaint: {res['seconds']:.1f} s, "
            f"{res['peak_rss_mib']:.0f} MiB; load {_load():.1f}",
            flush=True,
        )
        if size not in args.sweep_sizes or args.skip_reference:
            res["output"].unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            continue
        for tile in (False, True):
            if not tile and untiled_oom:
                rows.append(
                    {
                        "size": size,
                        "tool": "reference",
                        "tiled": False,
                        "oom": True,
                        "skipped": True,
                    }
                )
                continue
            ref = reference_run(
                args, entry, path, work / "sweep_out" / f"ref_{size}.tif", tile=tile
            )
            untiled_oom = untiled_oom or (ref["oom"] and not tile)
            rows.append({"size": size, "tool": "reference", "tiled": tile, **ref})
            what = "out of memory" if ref["oom"] else f"{ref['seconds']:.1f} s"
            print(
                f"sweep {size} reference{' --tile' if tile else ''}: {what}; "
                f"load {_load():.1f}",
                flush=True,
            )
        res["output"].unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return rows


# --------------------------------------------------------------------------- output
def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _fmt_mib(v: float) -> str:
    return f"{v:,.0f}"


def render(results: dict[str, Any]) -> str:
    """The markdown report."""
    meta = results["meta"]
    lines = [
        "# Speed: convpaint against the reference Convpaint, side by side",
        "",
        f"`python benchmarks/speed.py{meta['argv']}` on {meta['machine']}; "
        f"load average (1 min) {meta['load_start']:.1f} at the start, "
        f"{meta['load_end']:.1f} at the end (other jobs share the machine: compare "
        "ratios, not seconds). Images: crops of real data mirror-tiled to the size "
        "given, trained on the crop's 1 % scribbles "
        f"({', '.join(f'{k} {v}' for k, v in meta['crops'].items())}). "
        f"{meta['runs']} runs per tool, alternating; seconds are medians.",
        "",
        "**Prediction.** convpaint: the whole `convpaint predict` process (start-up, "
        "imports, model, reading, statistics, features, forest, writing the TIFF). "
        "Reference (napari-convpaint 1.2.0, VGG16 conv1_1 at scalings 1, 2, 4 + "
        "CatBoost): its in-memory `segment()` call alone, tiled (`--tile`) at 4096². "
        "Ratio: reference seconds over convpaint seconds. Peak RSS: convpaint's whole "
        "process, the reference's prediction phase.",
        "",
        "| image | tool | seconds | Mpx/s | peak RSS MiB | mIoU | speed-up vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    pred = results["main"]["predict"]
    keys = sorted({(r["dataset"], r["size"]) for r in pred}, key=lambda k: (k[1], k[0]))
    for dataset, size in keys:
        rows = [r for r in pred if r["dataset"] == dataset and r["size"] == size]
        ref = [r for r in rows if r["tool"] == "reference"]
        ref_s = _median([r["seconds"] for r in ref])
        mpx = size * size / 1e6
        for tool in sorted(
            {r["tool"] for r in rows}, key=lambda t: (t == "reference", t)
        ):
            sel = [r for r in rows if r["tool"] == tool]
            sec = _median([r["seconds"] for r in sel])
            label = tool + (
                " (--tile)" if tool == "reference" and sel[0].get("tiled") else ""
            )
            ratio = "" if tool == "reference" else f"**{ref_s / sec:.1f}×**"
            lines.append(
                f"| {dataset} {size}² | {label} | {sec:.1f} | {mpx / sec:.2f} | "
                f"{_fmt_mib(max(r['peak_rss_mib'] for r in sel))} | "
                f"{_median([r['miou'] for r in sel]):.3f} | {ratio} |"
            )
    lines += [
        "",
        "**Training** on the crop (features + forest, report off). convpaint's "
        "`api.train()` timed like the reference's `train()`, in a process whose "
        "imports are done: *warm* (its work: reading, features, forest) and *cold* "
        "(the first call, which also loads numba's compiled code, about half a "
        "second once per process); then the whole `convpaint train` process. The "
        "speed-up compares the warm call with the reference's `train()`.",
        "",
        "| crop | tool | warm s | cold s | whole process s | speed-up (warm) |",
        "|---|---|---|---|---|---|",
    ]
    tr = results["main"]["train"]
    for dataset in sorted({r["dataset"] for r in tr}):
        sel = [r for r in tr if r["dataset"] == dataset]

        def med(tool: str, key: str, sel: list = sel) -> float:
            return _median([r[key] for r in sel if r["tool"] == tool and key in r])

        ref = med("reference", "train_s")
        shape = meta["crop_shapes"][dataset]
        crop = f"{dataset} {shape[0]}×{shape[1]} ({shape[0] * shape[1] / 1e6:.2f} Mpx)"
        for preset in PRESETS:
            tool = f"convpaint {preset}"
            warm = med(tool, "warm_s")
            lines.append(
                f"| {crop} | {tool} | {warm:.2f} | {med(tool, 'cold_s'):.2f} | "
                f"{med(tool, 'process_s'):.1f} | **{ref / warm:.1f}×** |"
            )
        lines.append(f"| {crop} | reference `train()` | {ref:.2f} |  |  |  |")
    cv_rows = results["main"]["cv"]
    if cv_rows:
        lines += [
            "",
            "**Training report**: the stroke-held-out cross-validation against the fit "
            "of the final forest (`timings` in `<model>_report.json`; `api.train` with "
            "the report on, median of three warm calls in one process).",
            "",
            "| crop | features s | forest fit s | cross-validation s | CV / fit |",
            "|---|---|---|---|---|",
        ]
        for r in cv_rows:
            ratio = r.get("cv_over_fit")
            if ratio is None:  # results of older runs: one cold process
                ratio = r.get("cross_validation_s", 0) / max(r.get("fit_s", 1e-9), 1e-9)
            lines.append(
                f"| {r['dataset']} | {r.get('features_s', float('nan')):.3f} | "
                f"{r.get('fit_s', float('nan')):.3f} | "
                f"{r.get('cross_validation_s', float('nan')):.3f} | {ratio:.2f} |"
            )
    if results.get("sweep"):
        lines += [
            "",
            "**Size sweep** (NIH3T3 crop mirror-tiled; one run each): convpaint's whole "
            "process against the reference's `segment()`, untiled (killed above "
            f"{meta['ref_memory_gb']:g} GiB resident, or what the machine had free: it "
            "stops where it runs out of memory) and tiled.",
            "",
            "| image | Mpx | convpaint Mpx/s | convpaint peak RSS MiB | reference Mpx/s | "
            "reference peak RSS MiB | reference --tile Mpx/s | reference --tile peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size in sorted({r["size"] for r in results["sweep"]}):
            mpx = size * size / 1e6
            cells = []
            for tool, tiled in (
                ("convpaint", None),
                ("reference", False),
                ("reference", True),
            ):
                sel = [
                    r
                    for r in results["sweep"]
                    if r["size"] == size
                    and r["tool"] == tool
                    and (tiled is None or r.get("tiled") == tiled)
                ]
                if not sel:
                    cells += ["–", "–"]
                elif sel[0].get("oom"):
                    cells += ["out of memory", "–"]
                else:
                    cells += [
                        f"{mpx / sel[0]['seconds']:.2f}",
                        _fmt_mib(sel[0]["peak_rss_mib"]),
                    ]
            lines.append(f"| {size}² | {mpx:.1f} | " + " | ".join(cells) + " |")
        lines += ["", "![throughput and memory against image size](speed.png)"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and peak RSS against image size, both tools."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    series = [
        ("convpaint predict (whole process)", "convpaint", None, "C0", "o-"),
        ("reference segment()", "reference", False, "C3", "s-"),
        ("reference segment(), --tile", "reference", True, "C1", "^--"),
    ]
    for label, tool, tiled, colour, style in series:
        sel = sorted(
            (
                r
                for r in results["sweep"]
                if r["tool"] == tool
                and (tiled is None or r.get("tiled") == tiled)
                and not r.get("oom")
            ),
            key=lambda r: r["size"],
        )
        if not sel:
            continue
        mpx = np.array([r["size"] ** 2 / 1e6 for r in sel])
        ax1.plot(
            mpx,
            mpx / np.array([r["seconds"] for r in sel]),
            style,
            color=colour,
            label=label,
        )
        ax2.plot(
            mpx,
            [r["peak_rss_mib"] / 1024 for r in sel],
            style,
            color=colour,
            label=label,
        )
        ooms = [
            r
            for r in results["sweep"]
            if r["tool"] == tool
            and r.get("oom")
            and r.get("tiled") == tiled
            and not r.get("skipped")
        ]
        for r in ooms:
            ax2.annotate(
                "out of memory",
                (r["size"] ** 2 / 1e6, results["meta"]["ref_memory_gb"]),
                color=colour,
                ha="center",
                fontsize=8,
            )
            ax2.plot(
                [r["size"] ** 2 / 1e6],
                [results["meta"]["ref_memory_gb"]],
                "x",
                color=colour,
            )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("image size (Mpx)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("throughput (Mpx/s, 2 cores)")
    ax1.set_ylim(bottom=0)
    ax2.set_yscale("log")
    ax2.set_ylabel("peak resident memory (GiB)")
    ax2.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax1.legend(fontsize=8)
    fig.suptitle(
        "convpaint vs reference Convpaint: default models, NIH3T3 crop mirror-tiled"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj))


def _sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchdata", type=Path, default=DEFAULT_BENCH)
    parser.add_argument(
        "--reference-python",
        type=Path,
        default=Path(os.environ.get("REFERENCE_PYTHON", DEFAULT_REF_PYTHON)),
    )
    parser.add_argument("--segment", type=Path, default=DEFAULT_SEGMENT)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", type=_sizes, default=[2048, 4096])
    parser.add_argument("--sweep", action="store_true", help="also the size sweep")
    parser.add_argument("--sweep-sizes", type=_sizes, default=[1024, 2048, 4096, 8192])
    parser.add_argument(
        "--memory-sizes",
        type=_sizes,
        default=[16384],
        help="sweep sizes for convpaint only (memory)",
    )
    parser.add_argument(
        "--ref-memory-gb",
        type=float,
        default=14.0,
        help="resident memory (GiB) at which the reference is stopped",
    )
    parser.add_argument("--skip-reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "speed.md")
    parser.add_argument("--from-json", type=Path, default=None)
    args = parser.parse_args()

    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        if not args.reference_python.exists():
            raise SystemExit(
                f"reference Python {args.reference_python} not found; set it up with "
                f"{SHARED / 'reference' / 'setup.sh'} or pass --reference-python"
            )
        own = args.workdir is None
        work = (
            Path(tempfile.mkdtemp(prefix="convpaint-speed-")) if own else args.workdir
        )
        work.mkdir(parents=True, exist_ok=True)
        load_start = _load()
        data = prepare(args.benchdata, work, args.sizes)
        results = {"main": main_runs(args, data, work)}
        if args.sweep:
            results["sweep"] = sweep_runs(args, data, work)
        results["meta"] = {
            "argv": "".join(f" {a}" for a in sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "load_start": load_start,
            "load_end": _load(),
            "runs": args.runs,
            "ref_memory_gb": args.ref_memory_gb,
            "crops": {
                k: f"{v['crop_shape'][0]}×{v['crop_shape'][1]}, "
                f"{100 * v['scribbled']:.2f} % scribbled"
                for k, v in data.items()
            },
            "crop_shapes": {k: v["crop_shape"] for k, v in data.items()},
        }
        json_path = args.output.with_suffix(".json")
        json_path.write_text(json.dumps(results, indent=1, default=_json_default))
    text = render(results)
    args.output.write_text(text)
    if results.get("sweep"):
        plot(results, args.output.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
