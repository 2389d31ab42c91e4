"""Accuracy on Z stacks: planes vs views vs 3d features, scribbles on 3 planes.

Volumes from ``../shared/benchdata``:

- ``plantseg_ovule_nuclei3d`` (two 100^3 confocal crops) and ``plantseg_ovule_cells3d``
  (32 x 128 x 128), with the scribbles of ``derived/`` (3 planes each) and their voxel
  size from the ImageJ metadata; the reference implementation's figures for these are
  in REFERENCE.md (it featurises plane by plane);
- ``isbi2012_em_membranes`` sections 0-19 and ``drosophila_vnc_sstem`` sections 00-12
  stacked into anisotropic volumes (ssTEM: about 50 nm sections of 4-4.6 nm pixels),
  with the ground truth stacked the same way and ``convpaint scribbles`` drawn on 3
  planes (1 % of their pixels, width 2, seed 0).

Each configuration is trained on the scribbles and scored (mIoU over the ground-truth
classes) on the whole volume. Writes ``results/accuracy_3d.md``.

    python benchmarks/accuracy_3d.py
    python benchmarks/accuracy_3d.py --preset filters:views --datasets isbi_stack
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from convpaint import api
from convpaint.config import parse_config
from convpaint.evaluation import score

HERE = Path(__file__).resolve().parent
DEFAULT_BENCH = HERE.parent.parent / "shared" / "benchdata"

#: name -> (extractors or None for the default, features.dims)
PRESETS: dict[str, tuple[object, str]] = {
    "default": (None, "auto"),
    "filters:planes": ([{"name": "filters"}], "planes"),
    "filters:views": ([{"name": "filters"}], "views"),
    "filters:3d": ([{"name": "filters"}], "3d"),
    "filters-light:views": (
        [{"name": "filters", "sigmas": [0.7, 1.6, 3.5, 5.0]}],
        "views",
    ),
    "filters-light:3d": ([{"name": "filters", "sigmas": [0.7, 1.6, 3.5, 5.0]}], "3d"),
    "vgg16:planes": ([{"name": "vgg16"}], "planes"),
    "vgg16:views": ([{"name": "vgg16"}], "views"),
}
DEFAULT_PRESETS = [
    "default",
    "filters:planes",
    "filters:views",
    "filters:3d",
    "vgg16:planes",
    "vgg16:views",
]


def _reference(bench: Path) -> dict[str, tuple[float, float]]:
    ref = {}
    for line in (bench / "REFERENCE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[1] == "self" and re.fullmatch(r"0\.\d+", cells[3]):
            ref[cells[0]] = (float(cells[3]), float(cells[4]))
    return ref


def _stack_2d(
    bench: Path,
    dataset: str,
    stems: list[str],
    image_dir: str,
    suffix: str,
    spacing: tuple[float, float, float],
    tmp: Path,
) -> dict:
    """Stack 2-D sections (and their GT) into a volume with 3 scribbled planes."""
    from PIL import Image

    from convpaint.scribbles import generate_scribbles

    planes, gts = [], []
    for s in stems:
        path = bench / dataset / image_dir / f"{s}{suffix}"
        planes.append(
            np.asarray(Image.open(path)) if suffix == ".png" else tifffile.imread(path)
        )
        gts.append(tifffile.imread(bench / dataset / "derived" / f"{s}_gt.tif"))
    vol, gt = np.stack(planes), np.stack(gts).astype(np.uint8)
    scr = np.zeros_like(gt)
    for k, z in enumerate((1, len(stems) // 2, len(stems) - 2)):
        scr[z] = generate_scribbles(gt[z], fraction=0.01, width=2, seed=k)
    img = tmp / f"{dataset}_stack.tif"
    tifffile.imwrite(
        img,
        vol,
        imagej=True,
        resolution=(1 / spacing[2], 1 / spacing[1]),
        metadata={"axes": "ZYX", "spacing": spacing[0], "unit": "nm"},
    )
    tifffile.imwrite(
        tmp / f"{dataset}_scr.tif", scr, imagej=True, metadata={"axes": "ZYX"}
    )
    tifffile.imwrite(
        tmp / f"{dataset}_gt.tif", gt, imagej=True, metadata={"axes": "ZYX"}
    )
    return {
        "name": dataset.split("_")[0] + "_stack",
        "items": [
            {
                "image": img,
                "scribbles": tmp / f"{dataset}_scr.tif",
                "gt": tmp / f"{dataset}_gt.tif",
            }
        ],
        "ref": None,
    }


def datasets(bench: Path, tmp: Path) -> list[dict]:
    """Every volume of the benchmark with its scribbles and ground truth."""
    out = []
    for ds, stems in (
        ("plantseg_ovule_nuclei3d", ["1135_mini", "1136_mini"]),
        ("plantseg_ovule_cells3d", ["sample_ovule"]),
    ):
        items = []
        for s in stems:
            scr = tmp / f"{s}_scr.tif"
            # the derived files carry no axes; declare them (ZYX) for the readers
            tifffile.imwrite(
                scr,
                tifffile.imread(bench / ds / "derived" / f"{s}_scribbles.tif"),
                imagej=True,
                metadata={"axes": "ZYX"},
            )
            items.append(
                {
                    "image": bench / ds / "images" / f"{s}.tif",
                    "scribbles": scr,
                    "gt": bench / ds / "derived" / f"{s}_gt.tif",
                }
            )
        out.append({"name": ds, "items": items, "ref": ds})
    out.append(
        _stack_2d(
            bench,
            "isbi2012_em_membranes",
            [str(i) for i in range(20)],
            "images",
            ".png",
            (50.0, 4.0, 4.0),
            tmp,
        )
    )
    out.append(
        _stack_2d(
            bench,
            "drosophila_vnc_sstem",
            [f"{i:02d}" for i in range(13)],
            "raw",
            ".tif",
            (47.5, 4.6, 4.6),
            tmp,
        )
    )
    return out


def run(
    preset: str, item: dict, tmp: Path, threads: int | None
) -> tuple[float, float, float]:
    """Train on one volume's scribbles, predict it, return (mIoU, train s, predict s)."""
    extractors, dims = PRESETS[preset]
    raw: dict = {
        "features": {"dims": dims},
        "classifier": {"seed": 0},
        "tiling": {"threads": threads},
        "train": {
            "images": [str(item["image"])],
            "annotations": [str(item["scribbles"])],
            "model": str(tmp / "model.cpm"),
            "report": False,
        },
    }
    if extractors is not None:
        raw["features"]["extractors"] = extractors
    config = parse_config(raw, where=preset)
    t0 = time.perf_counter()
    api.train(config, overwrite=True)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = api.predict(
        tmp / "model.cpm",
        [str(item["image"])],
        tmp / "pred",
        on_exists="overwrite",
        tiling=config.tiling,
    )
    t_pred = time.perf_counter() - t0
    pred = tifffile.imread(res[0].outputs[0])
    gt = tifffile.imread(item["gt"])
    return score(pred, gt, name=preset).miou, t_train, t_pred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchdata", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS))
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "accuracy_3d.md"
    )
    args = parser.parse_args(argv)
    presets = args.preset or DEFAULT_PRESETS
    ref = _reference(args.benchdata)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for ds in datasets(args.benchdata, tmp):
            if args.datasets and ds["name"] not in args.datasets:
                continue
            cb, rf = ref.get(ds["ref"] or "", (float("nan"), float("nan")))
            for preset in presets:
                mious, tt, tp = [], 0.0, 0.0
                for item in ds["items"]:
                    m, a, b = run(preset, item, tmp, args.threads)
                    mious.append(m)
                    tt += a
                    tp += b
                row = {
                    "dataset": ds["name"],
                    "preset": preset,
                    "n": len(mious),
                    "miou": float(np.mean(mious)),
                    "cb": cb,
                    "rf": rf,
                    "train_s": tt / len(mious),
                    "predict_s": tp / len(mious),
                }
                rows.append(row)
                print(
                    f"{ds['name']:26s} {preset:20s} mIoU {row['miou']:.3f} "
                    f"(ref {cb:.3f}/{rf:.3f}) train {row['train_s']:.1f}s "
                    f"predict {row['predict_s']:.1f}s",
                    flush=True,
                )
    lines = [
        "| volume | features:dims | n | mIoU | ref. CatBoost | ref. RF | Δ vs best ref. "
        "| train s | predict s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(r["cb"], r["rf"])
        delta = f"{r['miou'] - best:+.3f}" if best == best else "—"
        refs = (
            (f"{r['cb']:.3f}", f"{r['rf']:.3f}") if r["cb"] == r["cb"] else ("—", "—")
        )
        lines.append(
            f"| {r['dataset']} | {r['preset']} | {r['n']} | {r['miou']:.3f} | {refs[0]} | "
            f"{refs[1]} | {delta} | {r['train_s']:.1f} | {r['predict_s']:.1f} |"
        )
    head = [
        "# Accuracy on Z stacks",
        "",
        "`"
        + " ".join(["python benchmarks/accuracy_3d.py", *(argv or sys.argv[1:])])
        + "`",
        "",
        "Trained on the scribbles of 3 planes per volume and scored (mIoU over the "
        "ground-truth classes) on the whole volume; classifier defaults (100 trees on "
        "stacks), seed 0, "
        f"{args.threads or os.cpu_count()} threads. *default* is `extractors: auto`, "
        "`dims: auto`: the 3-D filter bank at sigmas 0.7-10. Reference figures: "
        "napari-convpaint 1.2.0 (plane by plane) from `../shared/benchdata/REFERENCE.md`.",
        "",
    ]
    text = "\n".join(head + lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
