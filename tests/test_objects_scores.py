"""Object-level scores: IoU matching across blocks, per-class counts, unscored objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from convpaint.objects.api import evaluate
from convpaint.objects.scores import match_objects, pool_scores, score_objects


def _masks() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((40, 60), np.uint16)
    truth[2:12, 2:12] = 1  # class 1, found
    truth[20:30, 5:15] = 2  # class 2, found but called class 1
    truth[5:15, 40:50] = 3  # class 2, missed (prediction too small)
    truth[30:38, 40:48] = 4  # no class: not scored
    pred = np.zeros_like(truth)
    pred[3:12, 2:12] = 7  # IoU 0.9 with 1
    pred[20:30, 6:15] = 8  # IoU 0.9 with 2
    pred[5:8, 40:43] = 9  # IoU 0.09 with 3: no match
    pred[30:38, 40:48] = 5  # matches the unclassified object 4
    pred[0:3, 55:58] = 6  # nothing there
    return truth, pred


def test_matching_is_block_independent() -> None:
    """Matches summed over uneven blocks equal whole-image matches."""
    truth, pred = _masks()
    whole = match_objects(truth, pred, block=(40, 60))
    tiled = match_objects(truth, pred, block=(7, 11))
    for a, b in zip(whole, tiled, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(zip(*map(list, whole), strict=True)) == [(1, 7), (2, 8), (4, 5)]


def test_per_class_counts() -> None:
    """TP/FP/FN per class follow the matched pairs and their classes."""
    truth, pred = _masks()
    matches = match_objects(truth, pred, block=(40, 60))
    s = score_objects(
        "a", {1: 1, 2: 2, 3: 2}, {7: 1, 8: 1, 9: 2, 6: 2}, matches, [1, 2]
    )
    assert (s.tp, s.fp, s.fn) == ({1: 1, 2: 0}, {1: 1, 2: 2}, {1: 0, 2: 2})
    assert s.f1(1) == 2 / 3 and s.f1(2) == 0.0
    assert s.macro_f1 == 1 / 3 and s.accuracy == 0.5
    pooled = pool_scores([s, s])
    assert pooled.tp == {1: 2, 2: 0} and pooled.macro_f1 == s.macro_f1


def test_evaluate_with_other_instances(tmp_path: Path) -> None:
    """evaluate() scores a prediction made on other instances; a predicted object
    matched to a ground-truth object without class counts nowhere."""
    truth, pred = _masks()
    tifffile.imwrite(tmp_path / "a_gt.tif", truth)
    tifffile.imwrite(tmp_path / "a_pred.tif", pred)
    (tmp_path / "a_gt.csv").write_text("object_id,class\n1,1\n2,2\n3,2\n")
    (tmp_path / "a_objects.csv").write_text(
        "object_id,class\n7,1\n8,1\n9,2\n5,2\n6,2\n"
    )
    res = evaluate(
        [str(tmp_path / "a_objects.csv")],
        [str(tmp_path / "{stem}_gt.tif")],
        [str(tmp_path / "{stem}_gt.csv")],
        tmp_path / "out",
        instances=[str(tmp_path / "{stem}_pred.tif")],
    )
    s = res["scores"][0]
    assert s.n_predicted == 4  # object 5 (on the unclassified object 4) is dropped
    assert s.fp == {1: 1, 2: 2}
    assert (tmp_path / "out/objects_evaluation.json").is_file()
