"""`convpaint objects ...` end to end on real data: outputs, forms, messages, exit codes."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from convpaint.cli import app

runner = CliRunner()
SAMPLE_GT = (
    Path(__file__).resolve().parent.parent / "sample_data/ground_truth/nuclei_gt.tif"
)


def _run(*args: str) -> object:
    return runner.invoke(app, ["objects", *args])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def ihc(bench: Path) -> Path:
    """The Ki67 IHC object set (4 RGB tiles, instance masks, class tables)."""
    return bench / "objects/deepliif_ki67_ihc"


def _config(
    tmp_path: Path,
    ihc: Path,
    classifier: str,
    *,
    train: str = "[2-6]*",
    report: bool = False,
) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""
objects:
  classifier: {classifier}
  train:
    images: ["{ihc}/images/{train}.tif"]
    instances: "{ihc}/instances/{{stem}}_instances.tif"
    classes: "{ihc}/classes/{{stem}}_classes.csv"
    axes: YXC
    model: models/ki67.cpo
    report: {str(report).lower()}
  predict:
    inputs: ["{ihc}/images/799_2.tif"]
    instances: "{ihc}/instances/{{stem}}_instances.tif"
    output_dir: out
  evaluate:
    ground_truth_instances: "{ihc}/instances/{{stem}}_instances.tif"
    ground_truth_classes: "{ihc}/classes/{{stem}}_classes.csv"
    output_dir: scores
"""
    )
    return path


def test_forest_train_predict_evaluate(tmp_path: Path, ihc: Path) -> None:
    """Config form: train a forest, classify a held-out tile, score it; every output
    is consistent with the others."""
    config = _config(tmp_path, ihc, "{kind: forest, n_estimators: 100, seed: 0}")
    res = _run("train", str(config))
    assert res.exit_code == 0, res.output
    assert "1: 230, 2: 53" in res.output
    res = _run("predict", str(config))
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    rows = _rows(out / "799_2_objects.csv")
    inst = tifffile.imread(ihc / "instances/799_2_instances.tif")
    objclass = tifffile.imread(out / "799_2_objclass.tif")
    assert len(rows) == inst.max() == 63
    for row in rows[:10]:  # each object's pixels hold its predicted class
        assert set(np.unique(objclass[inst == int(row["object_id"])])) == {
            int(row["class"])
        }
    assert not objclass[inst == 0].any()
    summary = _rows(out / "objects_summary.csv")
    assert int(summary[0]["objects"]) == 63
    assert int(summary[0]["class_1"]) + int(summary[0]["class_2"]) == 63
    res = _run("evaluate", str(config))
    assert res.exit_code == 0, res.output
    pooled = _rows(tmp_path / "scores/objects_evaluation.csv")[-1]
    assert pooled["image"] == "pooled" and float(pooled["accuracy"]) > 0.9
    # flags form gives the same scores
    res = _run(
        "evaluate",
        "-p", str(out / "*_objects.csv"),
        "-g", str(ihc / "instances/{stem}_instances.tif"),
        "-c", str(ihc / "classes/{stem}_classes.csv"),
        "-o", str(tmp_path / "scores2"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert _rows(tmp_path / "scores2/objects_evaluation.csv")[-1] == pooled
    res = _run("info", str(tmp_path / "models/ki67.cpo"))
    assert res.exit_code == 0 and '"kind": "forest"' in res.output


def test_config_free_predict_zarr_parquet_shard_and_existing(
    tmp_path: Path, ihc: Path
) -> None:
    """--model form: zarr + parquet outputs, one shard, and the overwrite policy."""
    pytest.importorskip("pyarrow")
    config = _config(
        tmp_path, ihc, "{kind: forest, n_estimators: 20, seed: 0}", train="[26]*"
    )
    assert _run("train", str(config)).exit_code == 0
    args = [
        "predict",
        "--model", str(tmp_path / "models/ki67.cpo"),
        "--output", str(tmp_path / "z"),
        "--instances", str(ihc / "instances/{stem}_instances.tif"),
        "--format", "zarr",
        "--table-format", "parquet",
        "--shard", "1/2",
        str(ihc / "images"),
    ]  # fmt: skip
    res = _run(*args)
    assert res.exit_code == 0, res.output
    # sorted inputs 22_2, 34_3, 6_2, 799_2: shard 1/2 takes 34_3 and 799_2
    assert sorted(p.name for p in (tmp_path / "z").glob("*_objclass.zarr")) == [
        "34_3_objclass.zarr",
        "799_2_objclass.zarr",
    ]
    arr = zarr.open_array(str(tmp_path / "z/34_3_objclass.zarr"))
    assert arr.shape == (512, 512) and set(np.unique(arr[:])) <= {0, 1, 2}
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "z/34_3_objects.parquet")
    assert table.num_rows == 100 and "probability_2" in table.column_names
    assert (tmp_path / "z/objects_summary_shard1of2.csv").is_file()
    res = _run(*args)
    assert res.exit_code == 1 and "exists" in res.output
    res = _run(*args, "--skip-existing")
    assert res.exit_code == 0 and "skipped" in res.output


def _write_case(tmp_path: Path, ihc: Path, case: str) -> Path:
    """A small training set (two 128-pixel crops) broken in one way."""
    img_dir, inst_dir, cls_dir = (tmp_path / d for d in ("img", "inst", "cls"))
    for d in (img_dir, inst_dir, cls_dir):
        d.mkdir()
    for stem in ("6_2", "34_3"):
        image = tifffile.imread(ihc / f"images/{stem}.tif")[:128, :128]
        inst = tifffile.imread(ihc / f"instances/{stem}_instances.tif")[:128, :128]
        with (ihc / f"classes/{stem}_classes.csv").open() as fh:
            table = {int(r["object_id"]): int(r["class"]) for r in csv.DictReader(fh)}
        ids = [i for i in np.unique(inst) if i]
        rows = {i: table[i] for i in ids}
        if stem == "6_2":
            if case == "shape":
                inst = inst[:100]
            elif case == "empty":
                inst = np.zeros_like(inst)
            elif case == "float":
                inst = inst.astype(np.float32)
            elif case == "unknown":
                rows[60000] = 1
            elif case == "unclassified":
                rows.pop(ids[0])
        if case == "single":  # only one object of class 2 in the whole set
            twos = [i for i, c in rows.items() if c == 2]
            keep = twos[0] if stem == "6_2" else None
            rows = {i: (c if c == 1 or i == keep else 1) for i, c in rows.items()}
        tifffile.imwrite(img_dir / f"{stem}.tif", image)
        tifffile.imwrite(inst_dir / f"{stem}_instances.tif", inst)
        if case == "painted" and stem == "6_2":
            paint = np.zeros(inst.shape, np.uint8)
            obj = np.argwhere(inst == ids[0])
            paint[tuple(obj[0])] = 1
            paint[tuple(obj[-1])] = 2
            tifffile.imwrite(cls_dir / f"{stem}_classes.tif", paint)
            continue
        if case == "painted_ok":  # one painted pixel per object carries its class
            paint = np.zeros(inst.shape, np.uint8)
            for i, c in rows.items():
                paint[tuple(np.argwhere(inst == i)[0])] = c
            tifffile.imwrite(cls_dir / f"{stem}_classes.tif", paint)
            continue
        lines = ["object_id,class", *[f"{i},{c}" for i, c in rows.items()]]
        (cls_dir / f"{stem}_classes.csv").write_text("\n".join(lines) + "\n")
    classes = {"painted": "[cls]", "painted_ok": '"cls/{stem}_classes.tif"'}.get(
        case, '"cls/{stem}_classes.csv"'
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
objects:
  classifier: {{kind: forest, n_estimators: 5, seed: 0}}
  train:
    images: [img]
    instances: "inst/{{stem}}_instances.tif"
    classes: {classes}
    axes: YXC
    unlabelled: {"error" if case == "unclassified" else "skip"}
    model: m.cpo
    report: false
"""
    )
    return config


@pytest.mark.parametrize(
    ("case", "phrases"),
    [
        ("shape", ["have shape (100, 128)", "(128, 128)", "6_2_instances.tif"]),
        ("empty", ["contain no object", "6_2_instances.tif"]),
        ("float", ["dtype float32", "integers", "6_2_instances.tif"]),
        ("unknown", ["not in", "60000", "6_2_classes.csv"]),
        ("unclassified", ["have no class", "unlabelled: skip"]),
        ("single", ["only one labelled object", "class(es) 2"]),
        ("painted", ["more than one class", "6_2_classes.tif"]),
    ],
)
def test_bad_training_inputs_exit_1_with_a_located_message(
    tmp_path: Path, ihc: Path, case: str, phrases: list[str]
) -> None:
    """Each kind of bad input gives exit code 1 and one message naming file and fix;
    no model file is left behind."""
    config = _write_case(tmp_path, ihc, case)
    res = _run("train", str(config))
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    for phrase in phrases:
        assert phrase in text, text
    assert not (tmp_path / "m.cpo").exists()
    assert "Traceback" not in res.output


@pytest.mark.parametrize("case", ["none", "painted_ok"])
def test_valid_training_sets_train(tmp_path: Path, ihc: Path, case: str) -> None:
    """The unbroken training set trains, with class tables and with painted classes."""
    config = _write_case(tmp_path, ihc, case)
    res = _run("train", str(config))
    assert res.exit_code == 0, res.output
    assert "0 without class" in res.output


def test_segment_flags_and_config_form(tmp_path: Path) -> None:
    """segment with flags and with a config give the same instance mask."""
    res = _run(
        "segment", "-o", str(tmp_path / "a"), "--foreground", "2", "--min-size", "10",
        "--connectivity", "full", "--block-size", "100", str(SAMPLE_GT),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (tmp_path / "c.yaml").write_text(
        f"""
objects:
  segment:
    inputs: ["{SAMPLE_GT}"]
    foreground: [2]
    min_size: 10
    connectivity: full
    output_dir: b
"""
    )
    res = _run("segment", str(tmp_path / "c.yaml"))
    assert res.exit_code == 0, res.output
    a = tifffile.imread(tmp_path / "a/nuclei_gt_instances.tif")
    b = tifffile.imread(tmp_path / "b/nuclei_gt_instances.tif")
    np.testing.assert_array_equal(a, b)
    assert a.max() > 10
    res = _run("segment", str(tmp_path / "c.yaml"))
    assert res.exit_code == 1 and "exists" in res.output
    res = _run("segment", "-o", str(tmp_path / "d"), "--min-size", "0", str(SAMPLE_GT))
    assert (
        res.exit_code == 1
        and "--min-size: Input should be greater than 0" in res.output
    )


def test_csv_and_painted_classes_give_the_same_training_set(
    tmp_path: Path, ihc: Path
) -> None:
    """Classes from object_id,class tables and from one painted pixel per object give
    the same training objects, features and classes, hence the same forest."""
    tables, models = [], []
    for case in ("none", "painted_ok"):
        folder = tmp_path / case
        folder.mkdir()
        config = _write_case(folder, ihc, case)
        config.write_text(config.read_text().replace("report: false", "report: true"))
        res = _run("train", str(config))
        assert res.exit_code == 0, res.output
        tables.append((folder / "m_features.csv").read_text().replace(case, ""))
        with zipfile.ZipFile(folder / "m.cpo") as zf:
            models.append({n: zf.read(n) for n in zf.namelist() if n.endswith(".npy")})
    assert tables[0] == tables[1] and tables[0].count("\n") > 10
    assert models[0] == models[1]


def test_pixel_feature_means_train_and_predict(tmp_path: Path, ihc: Path) -> None:
    """A forest with pixel-feature means stores the pixel pipeline, predicts with it,
    lists the means in the table, and refuses a model whose stored extractors were
    edited."""
    config = _write_case(tmp_path, ihc, "none")
    config.write_text(
        config.read_text().replace(
            "seed: 0}",
            "seed: 0, features: {pixel_features: {extractors: "
            "[{name: filters, sigmas: [1.0], filters: [gaussian]}]}}}",
        )
    )
    res = _run("train", str(config))
    assert res.exit_code == 0, res.output
    args = [
        "predict", "-m", str(tmp_path / "m.cpo"), "-o", str(tmp_path / "out"),
        "-i", str(tmp_path / "inst/{stem}_instances.tif"), "--axes", "YXC",
        str(tmp_path / "img/6_2.tif"),
    ]  # fmt: skip
    res = _run(*args)
    assert res.exit_code == 0, res.output
    row = _rows(tmp_path / "out/6_2_objects.csv")[0]
    assert "pixel_mean|filters|filter=gaussian|sigma=1|ch=2" in row
    info = _run("info", str(tmp_path / "m.cpo"))
    assert '"pixel_features"' in info.output and '"n_features": 6' in info.output
    # an edited implementation fingerprint: the rebuilt extractors no longer match
    with zipfile.ZipFile(tmp_path / "m.cpo") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(entries["model.json"])
    meta["pixel_features"]["fingerprints"][0]["version"] = 99
    entries["model.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(tmp_path / "m.cpo", "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    res = _run(*args, "--overwrite")
    assert res.exit_code == 1 and "differs from training" in res.output


def test_cnn_training_is_reproducible(tmp_path: Path, ihc: Path) -> None:
    """Two CNN trainings with one seed give identical model arrays, with context
    masking, intensity jitter and early stopping on a held-out share; prediction
    runs and its table carries shape and intensity measurements."""
    pytest.importorskip("torch")
    classifier = (
        "{kind: objects-cnn, crop_size: 16, width: 4, epochs: 2, seed: 1, threads: 1, "
        "context_dilation: 2, intensity_jitter: 0.2, validation_fraction: 0.2, "
        "patience: 1}"
    )
    config = _config(tmp_path, ihc, classifier, train="[26]*", report=True)
    arrays = []
    for _ in range(2):
        res = _run("train", str(config), "--overwrite")
        assert res.exit_code == 0, res.output
        with zipfile.ZipFile(tmp_path / "models/ki67.cpo") as zf:
            arrays.append({n: zf.read(n) for n in zf.namelist() if n.endswith(".npy")})
            meta = json.loads(zf.read("model.json"))
    assert arrays[0] == arrays[1] and len(arrays[0]) > 10
    training = meta["training"]
    assert len(training["validation_loss"]) == training["epochs_run"] >= 2
    assert 1 <= training["best_epoch"] <= training["epochs_run"]
    assert meta["classifier"]["kind"] == "cnn"
    report = json.loads((tmp_path / "models/ki67_report.json").read_text())
    assert (
        report["validation"]["n_objects"]
        == report["n_objects"] - report["history"]["n_train"]
    )
    res = _run("predict", str(config))
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "out/799_2_objects.csv")
    assert len(rows) == 63 and {"feret_diameter_max", "mean_c0"} <= set(rows[0])


@pytest.mark.slow
def test_resnet18_plumbing(tmp_path: Path, ihc: Path) -> None:
    """ResNet18 starts from a state dict file (here randomly initialised: plumbing
    only) and trains; a wrong file is refused with exit code 1."""
    torch = pytest.importorskip("torch")
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    classifier = (
        "{kind: cnn, architecture: resnet18, weights: r18.pth, crop_size: 16, epochs: 1, "
        "batch_size: 64, seed: 0, threads: 2}"
    )
    config = _config(tmp_path, ihc, classifier, train="6_2")
    res = _run("train", str(config))
    assert res.exit_code == 0, res.output
    assert _run("predict", str(config)).exit_code == 0
    torch.save({"conv1.weight": torch.zeros(2)}, tmp_path / "r18.pth")
    res = _run("train", str(config), "--overwrite")
    assert res.exit_code == 1 and "r18.pth" in res.output


def test_3d_objects(tmp_path: Path, bench: Path) -> None:
    """3D (ZYX) stacks: train a forest on real nuclei (classes: larger or smaller than
    the median), classify the other stack, write a 3D objclass image."""
    root = bench / "plantseg_ovule_nuclei3d"
    (tmp_path / "cls").mkdir()
    for stem in ("1135_mini", "1136_mini"):
        inst = tifffile.imread(root / f"masks/{stem}.tif")
        ids, area = np.unique(inst[inst > 0], return_counts=True)
        lines = [
            f"{i},{1 if a < np.median(area) else 2}"
            for i, a in zip(ids, area, strict=True)
        ]
        (tmp_path / f"cls/{stem}.csv").write_text(
            "object_id,class\n" + "\n".join(lines)
        )
    (tmp_path / "c.yaml").write_text(
        f"""
objects:
  classifier: {{kind: forest, n_estimators: 50, seed: 0, features: {{quantiles: [0.5], ring: 2}}}}
  train:
    images: ["{root}/images/1135_mini.tif"]
    instances: "{root}/masks/{{stem}}.tif"
    classes: "cls/{{stem}}.csv"
    axes: ZYX
    model: m3d.cpo
    report: false
  predict:
    inputs: ["{root}/images/1136_mini.tif"]
    instances: "{root}/masks/{{stem}}.tif"
    output_dir: out
  evaluate:
    ground_truth_instances: "{root}/masks/{{stem}}.tif"
    ground_truth_classes: "cls/{{stem}}.csv"
"""
    )
    for command in ("train", "predict", "evaluate"):
        res = _run(command, str(tmp_path / "c.yaml"))
        assert res.exit_code == 0, res.output
    objclass = tifffile.imread(tmp_path / "out/1136_mini_objclass.tif")
    assert objclass.shape == (100, 100, 100)
    assert "centroid_z" in _rows(tmp_path / "out/1136_mini_objects.csv")[0]
    pooled = _rows(tmp_path / "evaluation_objects/objects_evaluation.csv")[-1]
    assert float(pooled["macro_f1"]) > 0.8  # size is easy to learn from shape features


def test_segment_defaults_to_the_pixel_predictions(tmp_path: Path) -> None:
    """Without objects.segment.inputs, the pixel predict section's label images are
    segmented."""
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(tmp_path / "pred/cells_labels.tif", tifffile.imread(SAMPLE_GT))
    (tmp_path / "c.yaml").write_text(
        """
predict: {model: m.cpm, inputs: [cells.tif], output_dir: pred}
objects:
  segment: {foreground: [2], output_dir: inst}
"""
    )
    (tmp_path / "cells.tif").write_bytes(b"")  # only its name is used here
    res = _run("segment", str(tmp_path / "c.yaml"))
    assert res.exit_code == 0, res.output
    assert tifffile.imread(tmp_path / "inst/cells_instances.tif").max() > 10


def test_3d_cnn(tmp_path: Path, bench: Path) -> None:
    """The small network trains and predicts on 3D crops (plumbing, tiny settings)."""
    pytest.importorskip("torch")
    root = bench / "plantseg_ovule_nuclei3d"
    inst = tifffile.imread(root / "masks/1135_mini.tif")
    ids, area = np.unique(inst[inst > 0], return_counts=True)
    lines = [
        f"{i},{1 if a < np.median(area) else 2}" for i, a in zip(ids, area, strict=True)
    ]
    (tmp_path / "c.csv").write_text("object_id,class\n" + "\n".join(lines))
    (tmp_path / "c.yaml").write_text(
        f"""
objects:
  classifier: {{kind: cnn, crop_size: 16, width: 2, epochs: 1, seed: 0, threads: 1}}
  train:
    images: ["{root}/images/1135_mini.tif"]
    instances: ["{root}/masks/1135_mini.tif"]
    classes: [c.csv]
    axes: ZYX
    model: m.cpo
    report: false
  predict:
    inputs: ["{root}/images/1135_mini.tif"]
    instances: ["{root}/masks/1135_mini.tif"]
    output_dir: out
"""
    )
    for command in ("train", "predict"):
        res = _run(command, str(tmp_path / "c.yaml"))
        assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "out/1135_mini_objects.csv")
    assert len(rows) == len(ids) and {r["class"] for r in rows} <= {"1", "2"}
