"""What object training, prediction and evaluation write: the training report, the
feature tables, object-level scores from `convpaint evaluate`, figures, `check`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from typer.testing import CliRunner

from convpaint.cli import app

runner = CliRunner()
PNG = b"\x89PNG"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forest trained on two Ki67 IHC tiles (with its report), and its prediction
    of a third tile; returns the run's folder (``c.yaml`` inside)."""
    ihc = bench / "objects/deepliif_ki67_ihc"
    root = tmp_path_factory.mktemp("objects")
    (root / "c.yaml").write_text(
        f"""
objects:
  classifier: {{kind: forest, n_estimators: 30, seed: 0}}
  train:
    images: ["{ihc}/images/[26]*.tif"]
    instances: "{ihc}/instances/{{stem}}_instances.tif"
    classes: "{ihc}/classes/{{stem}}_classes.csv"
    axes: YXC
    cv_folds: 3
    model: models/ki67.cpo
  predict:
    inputs: ["{ihc}/images/799_2.tif"]
    instances: "{ihc}/instances/{{stem}}_instances.tif"
    output_dir: out
  evaluate:
    ground_truth_instances: "{ihc}/instances/{{stem}}_instances.tif"
    ground_truth_classes: "{ihc}/classes/{{stem}}_classes.csv"
    output_dir: scores
    figures: true
"""
    )
    for command in ("train", "predict"):
        res = runner.invoke(app, ["objects", command, str(root / "c.yaml")])
        assert res.exit_code == 0, res.output
    return root


def test_training_report_and_feature_table(trained: Path) -> None:
    """Training writes a JSON + PNG report with feature importances and
    cross-validation by object and by image, and the training objects' features."""
    report = json.loads((trained / "models/ki67_report.json").read_text())
    assert (trained / "models/ki67_report.png").read_bytes()[:4] == PNG
    n = report["n_objects"]
    assert report["objects_per_class"] == {"1": 151, "2": 32} and n == 183
    by_object = report["cross_validation"]["by_object"]
    assert by_object["n_folds"] == 3
    assert np.asarray(by_object["confusion"]).sum() == n
    assert by_object["macro_f1"] > 0.8
    assert set(by_object["per_class"]["2"]) >= {"precision", "recall", "f1"}
    by_image = report["cross_validation"]["by_image"]
    assert by_image["method"] == "leave one image out" and by_image["n_folds"] == 2
    assert [i["image"] for i in by_image["images"]] == ["22_2.tif", "6_2.tif"]
    importance = report["feature_importance"]
    assert abs(sum(importance["by_group"].values()) - 1) < 1e-6
    assert {"shape", "inside, channel 0", "ring, channel 2"} <= set(
        importance["by_group"]
    )
    rows = _rows(trained / "models/ki67_features.csv")
    assert len(rows) == n
    assert {"image", "object_id", "class", "centroid_y", "feret_diameter_max"} <= set(
        rows[0]
    )
    assert {"hu_moment_6", "integrated_c1", "ring_p90_c2", "ring_std_c0"} <= set(
        rows[0]
    )


def test_prediction_table_carries_the_features(trained: Path) -> None:
    """Each predicted object's row holds its class, one probability per class, its
    centroid, area and every feature the forest used."""
    import zipfile

    rows = _rows(trained / "out/799_2_objects.csv")
    with zipfile.ZipFile(trained / "models/ki67.cpo") as zf:
        names = json.loads(zf.read("model.json"))["feature_names"]
    columns = list(rows[0])
    assert columns[:7] == [
        "object_id",
        "class",
        "probability_1",
        "probability_2",
        "centroid_y",
        "centroid_x",
        "area",
    ]
    assert columns[7:] == [n for n in names if n != "area"]
    for row in rows:
        p = float(row["probability_1"]) + float(row["probability_2"])
        assert abs(p - 1) < 1e-5
        best = 1 if float(row["probability_1"]) >= float(row["probability_2"]) else 2
        assert int(row["class"]) == best


def test_convpaint_evaluate_scores_objects(trained: Path, bench: Path) -> None:
    """`convpaint evaluate` scores object tables (flags and config form): per-class
    precision, recall and F1, the confusion matrix, and the figures."""
    ihc = bench / "objects/deepliif_ki67_ihc"
    out = trained / "flags"
    args = [
        "evaluate",
        "-p", str(trained / "out/*_objects.csv"),
        "-g", str(ihc / "instances/{stem}_instances.tif"),
        "-c", str(ihc / "classes/{stem}_classes.csv"),
        "--figures",
        "--image", str(ihc / "images/{stem}.tif"),
        "-o", str(out),
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    pooled = _rows(out / "objects_evaluation.csv")[-1]
    assert pooled["image"] == "pooled" and int(pooled["objects_truth"]) == 63
    assert {"precision_2", "recall_2", "f1_2"} <= set(pooled)
    confusion = _rows(out / "objects_evaluation_confusion.csv")
    assert [r["true_class"] for r in confusion] == ["1", "2"]
    assert sum(int(r["predicted_1"]) + int(r["predicted_2"]) for r in confusion) == 63
    for name in ("799_2_objects.png", "objects_confusion.png"):
        assert (out / name).read_bytes()[:4] == PNG
    # the config form runs objects.evaluate (there is no pixel evaluate section)
    res = runner.invoke(app, ["evaluate", str(trained / "c.yaml")])
    assert res.exit_code == 0, res.output
    assert _rows(trained / "scores/objects_evaluation.csv")[-1] == pooled
    assert (trained / "scores/799_2_objects.png").is_file()
    # object level without the ground-truth classes is a usage error
    res = runner.invoke(app, [*args[:5], "-o", str(out)])
    assert res.exit_code == 2 and "--classes" in res.output


def test_mistakes_in_figures() -> None:
    """Figures outline predicted objects with a wrong class or no match, and the
    ground-truth objects no prediction matched."""
    from convpaint.objects.figures import mistakes

    truth = {1: 1, 2: 2, 3: 1}
    predicted = {10: 1, 20: 1, 30: 2}  # 10 right, 20 wrong class, 30 unmatched
    matches = (np.array([1, 2]), np.array([10, 20]))
    wrong, missed = mistakes(truth, predicted, matches)
    assert wrong == {20, 30} and missed == {3}


def test_figure_of_a_synthetic_case(tmp_path: Path) -> None:
    """evaluate(figures=True) draws objects whose predicted instances differ from the
    ground truth, without an image underneath."""
    from convpaint.objects import api

    gt = np.zeros((40, 60), np.uint16)
    gt[5:15, 5:15], gt[20:30, 5:15], gt[5:15, 30:40] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[5:15, 5:15], pred[20:30, 5:15], pred[30:38, 45:55] = 4, 5, 6
    tifffile.imwrite(tmp_path / "a_gt.tif", gt)
    tifffile.imwrite(tmp_path / "a_inst.tif", pred)
    (tmp_path / "a_classes.csv").write_text("object_id,class\n1,1\n2,2\n3,1\n")
    (tmp_path / "a_objects.csv").write_text("object_id,class\n4,1\n5,1\n6,2\n")
    result = api.evaluate(
        [str(tmp_path / "a_objects.csv")],
        [str(tmp_path / "{stem}_gt.tif")],
        [str(tmp_path / "{stem}_classes.csv")],
        tmp_path / "ev",
        instances=[str(tmp_path / "{stem}_inst.tif")],
        figures=True,
    )
    score = result["scores"][0]
    assert score.tp == {1: 1, 2: 0} and score.fn == {1: 1, 2: 1}
    assert (tmp_path / "ev/a_objects.png").read_bytes()[:4] == PNG


def test_check_lists_the_objects_plan(trained: Path) -> None:
    """`convpaint check` lists the object training triples and planned tables."""
    res = runner.invoke(app, ["check", str(trained / "c.yaml")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("objects train") == 2
    assert "799_2_objects.csv (exists)" in text and "config OK" in text


def test_segment_one_channel_of_a_probability_map(tmp_path: Path) -> None:
    """A multi-channel map (e.g. {stem}_probabilities.tif) needs `channel`; with it,
    the channel's pixels above the threshold are labelled."""
    rng = np.random.default_rng(0)
    probs = ndi.gaussian_filter(rng.random((2, 80, 90)), (0, 2, 2)).astype(np.float32)
    probs = (probs - probs.min()) / (probs.max() - probs.min())
    tifffile.imwrite(
        tmp_path / "a_probabilities.tif", probs, imagej=True, metadata={"axes": "CYX"}
    )
    base = ["objects", "segment", "-o", str(tmp_path / "inst"), "--threshold", "0.5"]
    res = runner.invoke(app, [*base, str(tmp_path / "a_probabilities.tif")])
    assert (
        res.exit_code == 1 and "2 channels" in res.output and "--channel" in res.output
    )
    res = runner.invoke(
        app, [*base, "--channel", "1", str(tmp_path / "a_probabilities.tif")]
    )
    assert res.exit_code == 0, res.output
    got = tifffile.imread(tmp_path / "inst/a_instances.tif")
    np.testing.assert_array_equal(got, ndi.label(probs[1] > 0.5)[0])
    res = runner.invoke(
        app,
        [*base, "--channel", "2", "--overwrite", str(tmp_path / "a_probabilities.tif")],
    )
    assert res.exit_code == 1 and "channel is 2" in res.output
