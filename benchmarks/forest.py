"""Forest prediction speed: scikit-learn against convpaint's evaluator, side by side.

For each image: trains convpaint's default model (filter bank, 100 trees, seed 0)
on its 1 % scribbles (``../shared/benchdata/<dataset>/derived/``), computes the
features of the whole image once, then times on those features

* scikit-learn ``predict_proba`` (the model rebuilt as scikit-learn objects, 1 thread),
* the evaluator's probabilities (``Forest.predict_proba``), 1 and 2 threads,
* the evaluator's labels with exact early stopping (``Forest.predict_labels``),
  1 and 2 threads,

and checks that every result equals scikit-learn's. ``s/Mpx/core`` is the process
CPU time per megapixel (all threads), ``Mpx/s`` the wall-clock throughput; each is
the best of ``--repeats`` runs, since the machine may be shared (the load average
is printed).

``--sweep`` also trains smaller forests (fewer trees, ``max_depth``,
``min_samples_leaf``) on the same scribbles and reports their prediction time and
the mIoU of their labels against the image's ground truth.

    python benchmarks/forest.py                  # writes results/forest.md
    python benchmarks/forest.py --sweep --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from convpaint import api
from convpaint.config import FeatureConfig, parse_config
from convpaint.evaluation import score
from convpaint.features.pipeline import FeaturePipeline
from convpaint.forest import Forest
from convpaint.io.readers import open_image
from convpaint.model_io import load_model
from convpaint.tiling import plan_block, read_block

HERE = Path(__file__).resolve().parent
DEFAULT_BENCH = HERE.parent.parent / "shared" / "benchdata"

#: 1-Mpx images with 1 % scribbles: (dataset, image, stem of the derived files).
IMAGES = [
    ("drosophila_vnc_sstem", "raw/00.tif", "00"),
    ("ctc_fluo_n2dh_gowt1", "images/t01.tif", "t01"),
]

#: Smaller forests measured by --sweep (classifier settings over the defaults).
SWEEP = [
    {},
    {"n_estimators": 50},
    {"n_estimators": 25},
    {"max_depth": 20},
    {"max_depth": 15},
    {"max_depth": 10},
    {"max_depth": 8},
    {"min_samples_leaf": 2},
    {"min_samples_leaf": 5},
    {"n_estimators": 50, "max_depth": 15},
    {"n_estimators": 50, "max_depth": 10},
]


def train(image: Path, scribbles: Path, model: Path, classifier: dict) -> None:
    """Train convpaint's default model on one image's scribbles."""
    config = parse_config(
        {
            "classifier": {"seed": 0, **classifier},
            "train": {
                "images": [str(image)],
                "annotations": [str(scribbles)],
                "axes": "YX",
                "model": str(model),
                "report": False,
            },
        }
    )
    api.train(config, overwrite=True)


def whole_image_features(model: Path, image: Path) -> np.ndarray:
    """The model's features of every pixel, ``(n_pixels, n_features)`` float32."""
    meta = load_model(model).meta
    specs = FeatureConfig.model_validate({"extractors": meta["extractors"]}).extractors
    with open_image(image, "YX") as source:
        pipeline = FeaturePipeline(specs, source.n_channels)
        norm = api.image_statistics(source, joint=False).normalization()
        h, w = source.shape_yx
        block = plan_block(
            ((0, 1), (0, h), (0, w)), halo=pipeline.halo, alignment=pipeline.alignment
        )
        return pipeline.compute(norm(read_block(source.data[0], block)), block.trim)


def sklearn_forest(model: Path) -> object:
    """The model file's forest as scikit-learn objects (benchmark reference only)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.sklearn_reference import sklearn_forest_from_file

    forest = sklearn_forest_from_file(model)
    forest.n_jobs = 1
    return forest


def best_of(repeats: int, fn: Callable[[], object]) -> tuple[float, float, object]:
    """(best wall s, best process CPU s, last result) over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def speed_table(name: str, model: Path, X: np.ndarray, repeats: int) -> list[str]:
    """Side-by-side timings on one model; checks every result against scikit-learn."""
    mpx = len(X) / 1e6
    forest: Forest = load_model(model).forest
    reference = sklearn_forest(model)
    forest.predict_labels(X[:2000])  # compile (or load the cache) outside the timing
    forest.predict_proba(X[:2000])
    rows = []

    def row(what: str, threads: int, wall: float, cpu: float, note: str = "") -> None:
        rows.append(
            f"| {what} | {threads} | {cpu / mpx:.2f} | {mpx / wall:.2f} | {note} |"
        )
        print(rows[-1], flush=True)

    wall, cpu, ref = best_of(repeats, lambda: reference.predict_proba(X))
    row("scikit-learn predict_proba", 1, wall, cpu, "reference")
    ref_labels = ref.argmax(axis=1)
    for threads in (1, 2):
        wall, cpu, proba = best_of(
            repeats, lambda t=threads: forest.predict_proba(X, n_jobs=t)
        )
        same = np.array_equal(proba, ref.astype(np.float32))
        row("convpaint probabilities", threads, wall, cpu, f"= scikit-learn: {same}")
    for threads in (1, 2):
        wall, cpu, labels = best_of(
            repeats, lambda t=threads: forest.predict_labels(X, n_jobs=t)
        )
        same = np.array_equal(labels, ref_labels)
        walks = forest.last_walks / (len(X) * forest.n_trees)
        row(
            "convpaint labels, early stopping",
            threads,
            wall,
            cpu,
            f"= argmax: {same}; {walks:.0%} of tree walks",
        )
    head = [
        f"**{name}**: {forest.n_trees} trees, {forest.n_nodes} nodes, "
        f"{forest.n_features} features, {forest.n_classes} classes; "
        f"{len(X)} pixels",
        "",
        "| predictor | threads | s/Mpx/core | Mpx/s | check |",
        "|---|---|---|---|---|",
    ]
    return head + rows


def sweep_table(
    name: str, image: Path, scribbles: Path, gt: np.ndarray, X: np.ndarray,
    tmp: Path, repeats: int,
) -> list[str]:  # fmt: skip
    """Smaller forests on the same scribbles: prediction time and mIoU."""
    mpx = len(X) / 1e6
    lines = [
        f"**{name}**: smaller forests (same scribbles and features)",
        "",
        "| classifier | nodes | labels s/Mpx/core | probabilities s/Mpx/core | mIoU |",
        "|---|---|---|---|---|",
    ]
    for params in SWEEP:
        model = tmp / "sweep.cpm"
        train(image, scribbles, model, params)
        forest = load_model(model).forest
        forest.predict_labels(X[:2000])
        _, cpu_labels, index = best_of(repeats, lambda f=forest: f.predict_labels(X))
        _, cpu_proba, _ = best_of(repeats, lambda f=forest: f.predict_proba(X))
        labels = forest.classes[index].reshape(gt.shape)
        miou = score(labels, gt, name=name).miou
        what = ", ".join(f"{k}={v}" for k, v in params.items()) or "default (100 trees)"
        lines.append(
            f"| {what} | {forest.n_nodes} | {cpu_labels / mpx:.2f} | "
            f"{cpu_proba / mpx:.2f} | {miou:.3f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchdata", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "forest.md")
    args = parser.parse_args(argv)
    load0 = os.getloadavg()[0]
    out = [
        "# Forest prediction speed",
        "",
        f"`python benchmarks/forest.py{' --sweep' if args.sweep else ''} "
        f"--repeats {args.repeats}`: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; s/Mpx/core = "
        "process CPU seconds per megapixel, Mpx/s = wall clock; best of "
        f"{args.repeats} runs.",
        "",
    ]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for dataset, rel, stem in IMAGES:
            image = args.benchdata / dataset / rel
            derived = args.benchdata / dataset / "derived"
            scribbles = derived / f"{stem}_scribbles.tif"
            model = tmp / f"{stem}.cpm"
            train(image, scribbles, model, {})
            X = whole_image_features(model, image)
            name = f"{dataset}/{rel}"
            out += [*speed_table(name, model, X, args.repeats), ""]
            if args.sweep:
                gt = tifffile.imread(derived / f"{stem}_gt.tif")
                out += [
                    *sweep_table(name, image, scribbles, gt, X, tmp, args.repeats),
                    "",
                ]
    out.append(
        f"Load average (1 min) at start and end: {load0:.1f}, {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs."
    )
    text = "\n".join(out) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
