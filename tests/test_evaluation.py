"""Tests for convpaint.evaluation: metrics, aggregation, files and plots."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convpaint import evaluation
from convpaint.errors import DataError
from convpaint.evaluation import (
    ImageScores,
    confusion_matrix,
    format_table,
    plot_comparison,
    plot_confusion,
    pooled,
    score,
    summarize,
    write_scores,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 3x4 example. GT 0 = unlabelled. Class 4 only in GT, class 5 only in the
# prediction (on a labelled pixel); 9 is predicted only on unlabelled pixels and
# must not appear at all. Classes 3 and 7 make the values non-contiguous.
GT = np.array(
    [
        [1, 1, 0, 3],
        [1, 3, 3, 0],
        [7, 4, 0, 3],
    ]
)
PRED = np.array(
    [
        [1, 3, 9, 3],
        [1, 3, 1, 9],
        [5, 7, 7, 3],
    ]
)
# Hand count over the 9 labelled pixels, classes [1, 3, 4, 5, 7]:
#   class 1: TP 2, GT 3, predicted 3 -> IoU 2/4, precision 2/3, recall 2/3
#   class 3: TP 3, GT 4, predicted 4 -> IoU 3/5, precision 3/4, recall 3/4
#   class 4: TP 0, GT 1, predicted 0 -> IoU 0,   precision NaN, recall 0
#   class 5: TP 0, GT 0, predicted 1 -> IoU 0,   precision 0,   recall NaN
#   class 7: TP 0, GT 1, predicted 1 -> IoU 0,   precision 0,   recall 0
#   correct pixels 5 of 9; mIoU over GT classes {1, 3, 4, 7} = 1.1 / 4
EXPECTED_CONFUSION = [
    [2, 1, 0, 0, 0],
    [1, 3, 0, 0, 0],
    [0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 1, 0],
]


def assert_same(actual: float, expected: float) -> None:
    """Compare floats, treating NaN as equal to NaN."""
    if math.isnan(expected):
        assert math.isnan(actual), actual
    else:
        assert actual == pytest.approx(expected, abs=1e-12)


def assert_metrics(actual: dict[int, float], expected: dict[int, float]) -> None:
    """Compare per-class metric dicts (same keys, NaN-aware values)."""
    assert sorted(actual) == sorted(expected)
    for c, v in expected.items():
        assert_same(actual[c], v)


def test_score_matches_hand_computed_values() -> None:
    """IoU, precision, recall, accuracy and confusion match a hand count."""
    s = score(PRED, GT, name="tiny")
    assert s.name == "tiny"
    assert s.classes == [1, 3, 4, 5, 7]
    assert s.confusion.dtype == np.int64
    assert s.confusion.tolist() == EXPECTED_CONFUSION
    assert s.n_pixels == 9
    assert_same(s.pixel_accuracy, 5 / 9)
    assert_metrics(s.iou, {1: 0.5, 3: 0.6, 4: 0.0, 5: 0.0, 7: 0.0})
    assert_metrics(s.precision, {1: 2 / 3, 3: 0.75, 4: math.nan, 5: 0.0, 7: 0.0})
    assert_metrics(s.recall, {1: 2 / 3, 3: 0.75, 4: 0.0, 5: math.nan, 7: 0.0})
    assert_same(s.miou, (0.5 + 0.6 + 0.0 + 0.0) / 4)


def test_unlabelled_ground_truth_is_ignored() -> None:
    """Predictions on GT-0 pixels change nothing, and GT-0 pixels are not counted."""
    other = PRED.copy()
    other[GT == 0] = 42
    a, b = score(PRED, GT), score(other, GT)
    assert a.classes == b.classes == [1, 3, 4, 5, 7]
    assert a.n_pixels == b.n_pixels == int((GT > 0).sum())
    assert np.array_equal(a.confusion, b.confusion)
    assert a.iou == b.iou


def test_miou_averages_only_ground_truth_classes() -> None:
    """A class only in the prediction gets IoU 0 but does not enter the mIoU."""
    s = score(np.array([[1, 2]]), np.array([[1, 1]]))
    assert s.classes == [1, 2]
    assert_metrics(s.iou, {1: 0.5, 2: 0.0})
    assert_same(s.miou, 0.5)


def test_prediction_zero_on_labelled_pixel_counts_as_wrong() -> None:
    """A prediction of 0 on a labelled pixel lowers recall/accuracy, not precision."""
    s = score(np.array([[1, 0], [2, 1]]), np.array([[1, 1], [2, 2]]))
    assert s.classes == [1, 2]
    assert s.confusion.tolist() == [[1, 0], [1, 1]]
    assert s.unassigned == {1: 1, 2: 0}
    assert s.n_pixels == 4
    assert_same(s.pixel_accuracy, 0.5)
    assert_metrics(s.iou, {1: 1 / 3, 2: 0.5})
    assert_metrics(s.precision, {1: 0.5, 2: 1.0})
    assert_metrics(s.recall, {1: 0.5, 2: 0.5})


def test_score_3d_and_dtypes() -> None:
    """3D arrays, uint8, integral floats and huge class values give the same scores."""
    ref = score(PRED, GT)
    s3 = score(np.stack([PRED, PRED]), np.stack([GT, GT]))
    assert s3.n_pixels == 2 * ref.n_pixels
    assert s3.iou == ref.iou
    assert score(PRED.astype(np.uint8), GT.astype(np.uint8)).iou == ref.iou
    assert score(PRED.astype(np.float32), GT.astype(np.float64)).iou == ref.iou
    big = 10**9  # exercises the sorting-based lookup instead of the dense table
    sb = score(PRED.astype(np.int64) * big, GT.astype(np.int64) * big)
    assert sb.classes == [c * big for c in ref.classes]
    assert np.array_equal(sb.confusion, ref.confusion)
    assert list(sb.iou.values()) == list(ref.iou.values())


def test_dense_and_sorting_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense-histogram and sorting-based counting give identical results."""
    rng = np.random.default_rng(1)
    gt = rng.choice([0, 1, 3, 7, 200], size=(37, 53))
    pred = rng.choice([0, 1, 3, 7, 9, 200], size=(37, 53))
    dense = score(pred, gt)
    monkeypatch.setattr(evaluation, "_DENSE_MAX_BINS", 0)
    monkeypatch.setattr(evaluation, "_CHUNK", 100)  # several chunks
    sparse = score(pred, gt)
    assert dense.classes == sparse.classes
    assert np.array_equal(dense.confusion, sparse.confusion)
    assert dense.unassigned == sparse.unassigned
    assert dense.iou == sparse.iou
    conf, classes = confusion_matrix(pred, gt, classes=[7, 1])
    assert classes == [7, 1]
    assert conf.tolist() == [
        [int(((gt == a) & (pred == b)).sum()) for b in (7, 1)] for a in (7, 1)
    ]


def test_negative_values_are_unlabelled_or_no_class() -> None:
    """Negative GT values are ignored; negative predictions count as no class."""
    s = score(np.array([[1, -1, 2]]), np.array([[1, 1, -5]]))
    assert s.classes == [1]
    assert s.n_pixels == 2
    assert s.unassigned == {1: 1}
    assert_same(s.recall[1], 0.5)
    assert_same(s.precision[1], 1.0)


def test_non_integer_labels_raise_data_error() -> None:
    """Fractional label values are rejected with DataError."""
    with pytest.raises(DataError, match="whole numbers"):
        score(np.array([[0.5, 1.0]]), np.array([[1, 1]]))


def test_shape_mismatch_raises_data_error() -> None:
    """Different shapes raise DataError naming both shapes."""
    with pytest.raises(DataError) as info:
        score(np.zeros((3, 4), int), np.zeros((4, 3), int))
    assert "(3, 4)" in str(info.value) and "(4, 3)" in str(info.value)
    with pytest.raises(DataError):
        confusion_matrix(np.zeros((2, 3, 4), int), np.zeros((3, 4), int))


def test_confusion_matrix_default_and_explicit_classes() -> None:
    """confusion_matrix infers the class union or follows a given class order."""
    conf, classes = confusion_matrix(PRED, GT)
    assert classes == [1, 3, 4, 5, 7]
    assert conf.tolist() == EXPECTED_CONFUSION
    conf2, classes2 = confusion_matrix(PRED, GT, classes=[3, 1])
    assert classes2 == [3, 1]
    assert conf2.tolist() == [[3, 1], [1, 2]]
    with pytest.raises(ValueError):
        confusion_matrix(PRED, GT, classes=[1, 1])


def test_empty_ground_truth_gives_nan() -> None:
    """With no labelled pixels the scores are empty and NaN, without errors."""
    s = score(np.ones((2, 2), int), np.zeros((2, 2), int))
    assert s.classes == [] and s.n_pixels == 0 and s.confusion.shape == (0, 0)
    assert math.isnan(s.miou) and math.isnan(s.pixel_accuracy)


# Two images for the aggregation tests.
# A: classes [1, 2]: IoU 1 = 2/3, IoU 2 = 1/2, mIoU 7/12, accuracy 3/4, 4 px
# B: classes [1, 3]: IoU 1 = 1/3, IoU 3 = 0 (only predicted), mIoU 1/3,
#    accuracy 1/3, 3 px, recall 3 NaN
GT_A, PRED_A = np.array([[1, 1], [2, 2]]), np.array([[1, 1], [2, 1]])
GT_B, PRED_B = np.array([[1, 1, 1, 0]]), np.array([[1, 3, 3, 3]])


def two_images() -> list[ImageScores]:
    """Score the two aggregation example images."""
    return [score(PRED_A, GT_A, name="a"), score(PRED_B, GT_B, name="b")]


def test_summarize_mean_of_two_images() -> None:
    """The mean row averages per-image values and sums the confusion matrices."""
    a, b = two_images()
    assert_same(a.miou, 7 / 12)
    assert_same(b.miou, 1 / 3)
    m = summarize([a, b])
    assert m.name == "mean"
    assert m.classes == [1, 2, 3]
    assert m.n_pixels == 7
    assert m.confusion.tolist() == [[3, 0, 2], [1, 1, 0], [0, 0, 0]]
    assert_metrics(m.iou, {1: 0.5, 2: 0.5, 3: 0.0})
    assert_metrics(m.precision, {1: 5 / 6, 2: 1.0, 3: 0.0})
    assert_metrics(m.recall, {1: 2 / 3, 2: 0.5, 3: math.nan})
    assert_same(m.miou, (7 / 12 + 1 / 3) / 2)
    assert_same(m.pixel_accuracy, (3 / 4 + 1 / 3) / 2)


def test_pooled_uses_summed_confusion() -> None:
    """pooled() computes the metrics from the summed confusion matrix."""
    p = pooled(two_images())
    assert p.name == "pooled"
    assert p.classes == [1, 2, 3]
    assert_metrics(p.iou, {1: 3 / 6, 2: 0.5, 3: 0.0})
    assert_same(p.miou, 0.5)
    assert_same(p.pixel_accuracy, 4 / 7)
    assert p.n_pixels == 7
    with pytest.raises(ValueError):
        summarize([])


def csv_value(text: str) -> float:
    """Parse a CSV metric cell (empty = NaN)."""
    return math.nan if text == "" else float(text)


def test_write_scores_round_trip(tmp_path: Path) -> None:
    """CSV and JSON files read back to the same numbers, with no partial files."""
    scores = two_images()
    out = tmp_path / "eval"
    paths = write_scores(scores, out, prefix="run")
    assert [p.name for p in paths] == ["run.csv", "run.json", "run_confusion.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert not list(tmp_path.rglob("*.partial"))

    mean = summarize(scores)
    with open(paths[0], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == ["a", "b", "mean"]
    assert list(rows[0]) == [
        "image", "n_pixels", "pixel_accuracy", "miou",
        "iou_1", "iou_2", "iou_3",
        "precision_1", "precision_2", "precision_3",
        "recall_1", "recall_2", "recall_3",
    ]  # fmt: skip
    for row, s in zip(rows, [*scores, mean], strict=True):
        assert int(row["n_pixels"]) == s.n_pixels
        assert_same(csv_value(row["pixel_accuracy"]), s.pixel_accuracy)
        assert_same(csv_value(row["miou"]), s.miou)
        for c in (1, 2, 3):
            for metric in ("iou", "precision", "recall"):
                expected = getattr(s, metric).get(c, math.nan)
                assert_same(csv_value(row[f"{metric}_{c}"]), expected)

    doc = json.loads(paths[1].read_text(encoding="utf-8"))
    assert doc["classes"] == [1, 2, 3]
    for entry, s in zip([*doc["images"], doc["mean"]], [*scores, mean], strict=True):
        assert entry["name"] == s.name
        assert entry["classes"] == s.classes
        assert entry["confusion"] == s.confusion.tolist()
        assert entry["n_pixels"] == s.n_pixels
        assert_same(entry["miou"], s.miou)
        for metric in ("iou", "precision", "recall"):
            for c, v in getattr(s, metric).items():
                got = entry[metric][str(c)]
                assert_same(math.nan if got is None else got, v)
    assert doc["images"][1]["recall"]["3"] is None  # NaN written as null
    assert_same(doc["pooled"]["miou"], 0.5)

    with open(paths[2], newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0][1:] == ["1", "2", "3"]
    assert [r[0] for r in table[1:]] == ["1", "2", "3"]
    assert [[int(v) for v in r[1:]] for r in table[1:]] == mean.confusion.tolist()


def test_write_scores_replaces_existing_files(tmp_path: Path) -> None:
    """Writing twice replaces the files and leaves only the three outputs."""
    write_scores(two_images(), tmp_path)
    paths = write_scores(two_images()[:1], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    doc = json.loads(paths[1].read_text(encoding="utf-8"))
    assert [e["name"] for e in doc["images"]] == ["a"]


def test_format_table_ends_with_mean_row() -> None:
    """The text table has a header, one line per image and the mean row last."""
    text = format_table(two_images())
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["image", "pixels", "accuracy", "mIoU"]
    assert "IoU 3" in lines[0]
    assert lines[-1].split()[:4] == [
        "mean",
        "7",
        f"{(3 / 4 + 1 / 3) / 2:.3f}",
        f"{11 / 24:.3f}",
    ]
    assert any(line.startswith("a ") for line in lines)
    assert "-" in lines[-2]


def assert_png(path: Path) -> tuple[int, int]:
    """Check that ``path`` is a readable PNG and return its size."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_plot_confusion_writes_png(tmp_path: Path) -> None:
    """plot_confusion writes PNGs, normalised or not, also for zero classes."""
    s = score(PRED, GT)
    for normalize in (True, False):
        path = plot_confusion(
            s.confusion, s.classes, tmp_path / f"c{normalize}.png", normalize=normalize
        )
        assert_png(path)
    assert_png(plot_confusion(np.zeros((0, 0), np.int64), [], tmp_path / "empty.png"))
    with pytest.raises(ValueError):
        plot_confusion(s.confusion, [1, 2], tmp_path / "bad.png")
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    "kind",
    [
        "gray_uint16",
        "gray_float",
        "rgb_uint8",
        "rgba_float",
        "multichannel",
        "volume",
        "volume_rgb",
    ],
)
def test_plot_comparison_writes_png(tmp_path: Path, kind: str) -> None:
    """plot_comparison writes a PNG for gray, RGB(A), multichannel and 3D inputs."""
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    rng = np.random.default_rng(0)
    y, x = 24, 32
    gt = rng.integers(0, 4, size=(y, x))
    gt[gt == 2] = 67  # non-contiguous class value
    pred = np.where(rng.random((y, x)) < 0.8, gt, 1)
    scribbles = np.zeros((y, x), int)
    scribbles[5, 3:20] = 1
    scribbles[15, 3:20] = 67
    images = {
        "gray_uint16": rng.integers(0, 4000, size=(y, x), dtype=np.uint16),
        "gray_float": rng.normal(size=(y, x)),
        "rgb_uint8": rng.integers(0, 256, size=(y, x, 3), dtype=np.uint8),
        "rgba_float": rng.random((y, x, 4)),
        "multichannel": rng.random((2, y, x)),
    }
    if kind.startswith("volume"):
        z = 5
        gt, pred, scribbles = (np.stack([a] * z) for a in (gt, pred, scribbles))
        image = (
            rng.random((z, y, x))
            if kind == "volume"
            else rng.integers(0, 256, (z, y, x, 3), dtype=np.uint8)
        )
    else:
        image = images[kind]
    path = plot_comparison(
        image, scribbles, pred, gt, tmp_path / "sub" / "cmp.png", title=kind
    )
    width, height = assert_png(path)
    assert width > height > 0
    no_scribbles = plot_comparison(image, None, pred, gt, tmp_path / "none.png")
    assert_png(no_scribbles)
    assert not list(tmp_path.rglob("*.partial"))
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules  # no global pyplot state touched


def test_plot_comparison_large_plane_and_bad_shapes(tmp_path: Path) -> None:
    """Planes above the display limit are reduced; mismatched shapes raise DataError."""
    gt = np.zeros((1601, 20), np.uint8)
    gt[::7] = 1
    gt[3::7] = 2
    pred = np.ones_like(gt)
    assert_png(
        plot_comparison(gt.astype(np.float32), gt, pred, gt, tmp_path / "big.png")
    )
    with pytest.raises(DataError):
        plot_comparison(
            np.zeros((5, 5)),
            None,
            np.zeros((4, 4), int),
            np.zeros((4, 4), int),
            tmp_path / "x.png",
        )
    with pytest.raises(DataError):
        plot_comparison(
            np.zeros((4, 4)),
            np.zeros((3, 3), int),
            np.zeros((4, 4), int),
            np.zeros((4, 4), int),
            tmp_path / "y.png",
        )
    with pytest.raises(DataError):
        plot_comparison(
            np.zeros((4, 4)),
            None,
            np.zeros((4, 3), int),
            np.zeros((4, 4), int),
            tmp_path / "z.png",
        )
    assert not (tmp_path / "x.png").exists()
