"""Accuracy benchmark: train on each image's scribbles, predict it, score against GT.

Uses ``../shared/benchdata`` (``<dataset>/derived/<stem>_scribbles.tif`` and
``<stem>_gt.tif``) with the same images as the reference figures in its REFERENCE.md,
and prints per-dataset mIoU next to the reference implementation's.

    python benchmarks/accuracy.py                       # default model, self case
    python benchmarks/accuracy.py --preset vgg16 --preset filters --preset default
    python benchmarks/accuracy.py --case cross --datasets isbi2012_em_membranes
    python benchmarks/accuracy.py --sweep              # extractors x scribble fractions
    python benchmarks/accuracy.py --classifier max_depth=15 --classifier n_estimators=50

Sweep (the Convpaint paper's Fig. S8 protocol): for one image per dataset (centre crop,
``--crop``), scribbles are drawn from the ground truth with ``convpaint.scribbles`` at
0.1 %, 0.5 %, 1 % and 5 % of the labelled pixels (width 2, seed 0); each feature preset
is trained on them and scored on the whole crop. Writes ``results/sweep.csv``,
``results/sweep.md`` and ``results/sweep.png`` (mIoU against annotation fraction).

Cases: *self* trains on an image's scribbles and predicts the same whole image;
*cross* trains on the first listed image of a dataset and predicts each other one.
"""

from __future__ import annotations

import argparse
import csv
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

#: The images REFERENCE.md measured (2D datasets); others: every image.
SUBSETS = {
    "isbi2012_em_membranes": ["0", "5", "10", "14", "19"],
    "drosophila_vnc_sstem": ["00", "04", "08", "12"],
    "ctc_fluo_n2dh_gowt1": ["t01", "t21", "t31", "t39"],
    "ctc_fluo_n2dl_hela": ["t13", "t75", "t79"],
    "nih3t3_coelho2009": ["dna-0", "dna-30", "dna-37", "dna-47"],
    "cpm15_he_nuclei": ["image01", "image04", "image07", "image11", "image14"],
    "stardist_dsb2018_nuclei2d": ["img2d"],
    "convpaint_test_foodseg103": ["0000_img"],
}

#: Feature presets compared by the benchmark. "default" is whatever convpaint uses
#: when the config names no features.
PRESETS: dict[str, object] = {
    "default": None,
    "vgg16": [{"name": "vgg16"}],
    # VGG16 conv1_1 as convpaint 0.1 computed it (torch)
    "vgg16-torch": [{"name": "vgg16", "implementation": "torch"}],
    "filters": [{"name": "filters"}],
    # the filter bank as convpaint 0.1 computed it (scipy.ndimage)
    "filters-scipy": [{"name": "filters", "implementation": "scipy"}],
    "vgg16+filters": [{"name": "vgg16"}, {"name": "filters"}],
    "vgg16-conv1": [{"name": "vgg16", "layers": ["conv1_1", "conv1_2"]}],
    "vgg16-block2": [
        {"name": "vgg16", "layers": ["conv1_1", "conv2_1"], "scalings": [1, 2]}
    ],
    "vgg16-deep": [
        {
            "name": "vgg16",
            "layers": ["conv1_1", "conv2_1", "conv3_1"],
            "scalings": [1, 2],
        }
    ],
    "vgg16-block2+filters": [
        {"name": "vgg16", "layers": ["conv1_1", "conv2_1"], "scalings": [1, 2]},
        {"name": "filters"},
    ],
    "vgg16-conv1+filters": [
        {"name": "vgg16", "layers": ["conv1_1", "conv1_2"]},
        {"name": "filters"},
    ],
    "vgg16-block2+filters-light": [
        {"name": "vgg16", "layers": ["conv1_1", "conv2_1"], "scalings": [1, 2]},
        {"name": "filters", "sigmas": [1.0, 3.5, 10.0]},
    ],
    "alexnet": [{"name": "alexnet"}],
    "efficientnet": [{"name": "efficientnet_lite0"}],
}
SWEEP_PRESETS = [
    "default",
    "vgg16",
    "vgg16-deep",
    "filters",
    "vgg16+filters",
    "alexnet",
    "efficientnet",
]
SWEEP_FRACTIONS = [0.001, 0.005, 0.01, 0.05]
SHARED_WEIGHTS = HERE.parent.parent / "shared" / "weights"


def image_table(bench: Path) -> dict[str, list[dict[str, str]]]:
    """dataset -> [{stem, image, axes, gt, scribbles}] for 2D images with derived files."""
    out: dict[str, list[dict[str, str]]] = {}
    with open(bench / "pairs.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["axes"] not in ("YX", "YXC"):
                continue
            image = bench / row["image"]
            stem = image.stem
            derived = bench / row["dataset"] / "derived"
            gt, scr = derived / f"{stem}_gt.tif", derived / f"{stem}_scribbles.tif"
            if gt.exists() and scr.exists():
                out.setdefault(row["dataset"], []).append(
                    {
                        "stem": stem,
                        "image": str(image),
                        "axes": row["axes"],
                        "gt": str(gt),
                        "scribbles": str(scr),
                    }
                )
    return out


def reference_table(bench: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(dataset, case) -> (mIoU CatBoost, mIoU RF) from REFERENCE.md."""
    ref = {}
    text = (bench / "REFERENCE.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"0\.\d+", cells[3] or ""):
            ref[(cells[0], cells[1])] = (float(cells[3]), float(cells[4]))
    return ref


def run_one(
    preset: str,
    train_items: list[dict],
    test_items: list[dict],
    tmp: Path,
    threads: int | None,
    normalize: str | None = None,
    classifier: dict | None = None,
) -> tuple[list[float], float, float]:
    """Train on ``train_items``, predict ``test_items``; return mIoUs and timings."""
    raw = {
        "classifier": {"seed": 0, **(classifier or {})},
        "tiling": {"threads": threads},
        "train": {
            "images": [i["image"] for i in train_items],
            "annotations": [i["scribbles"] for i in train_items],
            "axes": train_items[0]["axes"],
            "model": str(tmp / "model.cpm"),
            "report": False,
        },
    }
    if PRESETS[preset] is not None:
        raw["features"] = {"extractors": PRESETS[preset]}
    if normalize is not None:
        raw.setdefault("features", {})["normalize"] = normalize
    config = parse_config(raw, where=f"preset {preset}")
    t0 = time.perf_counter()
    api.train(config, overwrite=True)
    t_train = time.perf_counter() - t0
    scores, t_pred = [], 0.0
    for item in test_items:
        out = tmp / "pred"
        t0 = time.perf_counter()
        res = api.predict(
            tmp / "model.cpm",
            [item["image"]],
            out,
            on_exists="overwrite",
            tiling=config.tiling,
        )
        t_pred += time.perf_counter() - t0
        pred = tifffile.imread(res[0].outputs[0])
        scores.append(score(pred, tifffile.imread(item["gt"]), name=item["stem"]).miou)
    return scores, t_train, t_pred


def _crop_pair(item: dict, crop: int, tmp: Path) -> tuple[Path, np.ndarray, str]:
    """Centre-crop an image and its GT; write the image as TIFF; return (path, gt, axes)."""
    from PIL import Image

    path = Path(item["image"])
    if path.suffix.lower() == ".png":
        image = np.asarray(Image.open(path))
    else:
        image = tifffile.imread(path)
    gt = tifffile.imread(item["gt"])
    h, w = gt.shape
    y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    gt = gt[y0 : y0 + crop, x0 : x0 + crop]
    image = image[y0 : y0 + crop, x0 : x0 + crop]
    axes = item["axes"]
    if axes == "YXC":
        image = image[..., :3]
    out = tmp / f"{item['stem']}_crop.tif"
    tifffile.imwrite(
        out, np.ascontiguousarray(image), photometric="rgb" if axes == "YXC" else None
    )
    return out, gt, axes


def sweep(args: argparse.Namespace, table: dict, datasets: list[str]) -> int:
    """Extractors x scribble fractions on one cropped image per dataset."""
    import os

    from convpaint.scribbles import generate_scribbles

    if SHARED_WEIGHTS.is_dir():  # deeper VGG16 layers, AlexNet and EfficientNet weights
        os.environ.setdefault("CONVPAINT_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    presets = args.preset or SWEEP_PRESETS
    rows = []
    out_dir = args.output.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for ds in datasets:
            by_stem = {i["stem"]: i for i in table[ds]}
            stems = [s for s in SUBSETS.get(ds, sorted(by_stem)) if s in by_stem]
            item = by_stem[stems[0]]
            image_path, gt, axes = _crop_pair(item, args.crop, tmp)
            gt_path = tmp / f"{item['stem']}_gt.tif"
            tifffile.imwrite(gt_path, gt)
            for fraction in SWEEP_FRACTIONS:
                scr = generate_scribbles(gt, fraction=fraction, width=2, seed=0)
                scr_path = tmp / f"{item['stem']}_scr.tif"
                tifffile.imwrite(scr_path, scr)
                it = {
                    "stem": item["stem"],
                    "image": str(image_path),
                    "axes": axes,
                    "gt": str(gt_path),
                    "scribbles": str(scr_path),
                }
                for preset in presets:
                    try:
                        mious, t_train, t_pred = run_one(
                            preset, [it], [it], tmp, args.threads, args.normalize
                        )
                        miou = mious[0]
                    except Exception as err:  # e.g. weights missing for one network
                        print(f"{ds} {preset}: skipped ({err})", file=sys.stderr)
                        continue
                    rows.append(
                        {
                            "dataset": ds,
                            "fraction": fraction,
                            "preset": preset,
                            "scribble_pixels": int((scr > 0).sum()),
                            "miou": miou,
                            "train_s": t_train,
                            "predict_s": t_pred,
                        }
                    )
                    print(
                        f"{ds:28s} {fraction:6.3f} {preset:14s} mIoU {miou:.3f} "
                        f"train {t_train:.1f}s predict {t_pred:.1f}s",
                        flush=True,
                    )
    with open(out_dir / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    presets_done = [p for p in presets if any(r["preset"] == p for r in rows)]

    def mean(p: str, f: float, ds: str | None = None) -> float:
        vals = [
            r["miou"]
            for r in rows
            if r["preset"] == p
            and r["fraction"] == f
            and (ds is None or r["dataset"] == ds)
        ]
        return float(np.mean(vals)) if vals else float("nan")

    head = "| features | " + " | ".join(f"{f:.1%}" for f in SWEEP_FRACTIONS) + " |"
    sep = "|---|" + "---|" * len(SWEEP_FRACTIONS)
    lines = [
        f"Mean mIoU over {len(datasets)} datasets (one {args.crop}-px crop each), "
        "scribbles from convpaint.scribbles (width 2, seed 0):",
        "",
        head,
        sep,
    ]
    for p in presets_done:
        lines.append(
            f"| {p} | "
            + " | ".join(f"{mean(p, f):.3f}" for f in SWEEP_FRACTIONS)
            + " |"
        )
    for ds in datasets:
        lines += ["", f"**{ds}**", "", head, sep]
        for p in presets_done:
            lines.append(
                f"| {p} | "
                + " | ".join(f"{mean(p, f, ds):.3f}" for f in SWEEP_FRACTIONS)
                + " |"
            )
    text = "\n".join(lines) + "\n"
    (out_dir / "sweep.md").write_text(text)
    print(text)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(datasets) + 1
    cols = 3
    fig = Figure(figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)))
    FigureCanvasAgg(fig)
    for k, ds in enumerate([None, *datasets]):
        ax = fig.add_subplot((n + cols - 1) // cols, cols, k + 1)
        for p in presets_done:
            ax.plot(
                [f * 100 for f in SWEEP_FRACTIONS],
                [mean(p, f, ds) for f in SWEEP_FRACTIONS],
                marker="o",
                label=p,
            )
        ax.set_xscale("log")
        ax.set_xlabel("annotated pixels (%)")
        ax.set_ylabel("mIoU")
        ax.set_title("mean over datasets" if ds is None else ds, fontsize=9)
        ax.grid(alpha=0.3)
        if ds is None:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "sweep.png", dpi=90)
    print(f"written: {out_dir / 'sweep.csv'}, sweep.md, sweep.png", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchdata", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS))
    parser.add_argument("--case", choices=["self", "cross", "both"], default="self")
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--normalize",
        choices=["image", "training"],
        default=None,
        help="override features.normalize (default: convpaint's default)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "accuracy.md")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="extractors x scribble fractions (writes results/sweep.*)",
    )
    parser.add_argument("--crop", type=int, default=512, help="sweep: centre-crop size")
    parser.add_argument(
        "--classifier",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a classifier setting, e.g. max_depth=15 (repeatable)",
    )
    args = parser.parse_args(argv)
    import yaml

    classifier = {
        key: yaml.safe_load(value)
        for key, value in (item.split("=", 1) for item in args.classifier)
    }
    suffix = "".join(f" {k}={v}" for k, v in classifier.items())
    table = image_table(args.benchdata)
    presets = args.preset or ["default"]
    ref = reference_table(args.benchdata)
    datasets = args.datasets or [d for d in SUBSETS if d in table]
    if args.sweep:
        return sweep(args, table, datasets)
    cases = ["self", "cross"] if args.case == "both" else [args.case]
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for ds in datasets:
            by_stem = {i["stem"]: i for i in table[ds]}
            items = [
                by_stem[s] for s in SUBSETS.get(ds, sorted(by_stem)) if s in by_stem
            ]
            for case in cases:
                if case == "cross" and len(items) < 2:
                    continue
                for preset in presets:
                    mious, tt, tp = [], 0.0, 0.0
                    if case == "self":
                        for it in items:
                            m, a, b = run_one(
                                preset,
                                [it],
                                [it],
                                tmp,
                                args.threads,
                                args.normalize,
                                classifier,
                            )
                            mious += m
                            tt += a
                            tp += b
                    else:
                        mious, tt, tp = run_one(
                            preset,
                            items[:1],
                            items[1:],
                            tmp,
                            args.threads,
                            args.normalize,
                            classifier,
                        )
                    cb, rf = ref.get((ds, case), (float("nan"), float("nan")))
                    row = {
                        "dataset": ds,
                        "case": case,
                        "preset": preset
                        + (f" ({args.normalize} norm.)" if args.normalize else "")
                        + suffix,
                        "n": len(mious),
                        "miou": float(np.mean(mious)),
                        "ref_catboost": cb,
                        "ref_rf": rf,
                        "train_s": tt / max(1, len(items) if case == "self" else 1),
                        "predict_s": tp / max(1, len(mious)),
                    }
                    rows.append(row)
                    print(
                        f"{ds:28s} {case:5s} {row['preset']:14s} n={row['n']} mIoU {row['miou']:.3f} "
                        f"(ref CatBoost {cb:.3f}, RF {rf:.3f})  train {row['train_s']:.1f}s "
                        f"predict {row['predict_s']:.1f}s",
                        flush=True,
                    )
    lines = [
        "| dataset | case | features | n | mIoU convpaint | mIoU ref. CatBoost | mIoU ref. RF | "
        "Δ vs best ref. | train s | predict s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(r["ref_catboost"], r["ref_rf"])
        lines.append(
            f"| {r['dataset']} | {r['case']} | {r['preset']} | {r['n']} | {r['miou']:.3f} | "
            f"{r['ref_catboost']:.3f} | {r['ref_rf']:.3f} | {r['miou'] - best:+.3f} | "
            f"{r['train_s']:.1f} | {r['predict_s']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
