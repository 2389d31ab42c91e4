"""Tests for convpaint.scribbles: hand-drawn-looking scribbles from ground truth."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from convpaint.errors import DataError
from convpaint.scribbles import generate_scribbles, instance_to_semantic

REAL_GT = {
    "em": "isbi2012_em_membranes/derived/0_gt.tif",
    "nuclei": "cpm15_he_nuclei/derived/image01_gt.tif",
    "food": "convpaint_test_foodseg103/derived/0000_img_gt.tif",
}
FRACTIONS = (0.001, 0.005, 0.01, 0.05)


@pytest.fixture(scope="module")
def real_gt(bench: Path) -> dict[str, np.ndarray]:
    """The real semantic ground-truth images (skips when the data is absent)."""
    out = {}
    for name, rel in REAL_GT.items():
        path = bench / rel
        if not path.is_file():
            pytest.skip(f"ground truth not found: {path}")
        out[name] = tifffile.imread(path)
    return out


def _synthetic(shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Small gt with classes 1, 49, 67: background, a disk, a thin bar; 0 border."""
    yy, xx = np.indices(shape)
    gt = np.ones(shape, dtype=np.uint8)
    gt[(yy - 40) ** 2 + (xx - 50) ** 2 < 20**2] = 49
    gt[70:75, 10:120] = 67
    gt[:, :4] = 0
    return gt


def _budget(gt: np.ndarray, fraction: float) -> float:
    """The requested number of scribble pixels: fraction of the labelled ones."""
    return fraction * np.count_nonzero(gt)


def test_same_seed_gives_identical_output(real_gt: dict[str, np.ndarray]) -> None:
    """The same seed reproduces the scribbles exactly."""
    gt = real_gt["em"]
    a = generate_scribbles(gt, fraction=0.01, seed=7)
    b = generate_scribbles(gt, fraction=0.01, seed=7)
    assert np.array_equal(a, b)


def test_different_seeds_give_different_output(real_gt: dict[str, np.ndarray]) -> None:
    """Another seed draws other strokes."""
    gt = real_gt["em"]
    a = generate_scribbles(gt, fraction=0.01, seed=0)
    b = generate_scribbles(gt, fraction=0.01, seed=1)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(REAL_GT))
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_total_within_budget(
    real_gt: dict[str, np.ndarray], name: str, fraction: float
) -> None:
    """The scribble pixel count is within 25 % of fraction * labelled pixels."""
    gt = real_gt[name]
    scr = generate_scribbles(gt, fraction=fraction, seed=3)
    ratio = np.count_nonzero(scr) / _budget(gt, fraction)
    assert 0.75 <= ratio <= 1.25, ratio


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_synthetic_total_within_budget(fraction: float) -> None:
    """The budget also holds on a small synthetic image with three classes."""
    gt = _synthetic((256, 256))
    scr = generate_scribbles(gt, fraction=fraction, seed=0)
    ratio = np.count_nonzero(scr) / _budget(gt, fraction)
    assert 0.75 <= ratio <= 1.25, ratio


@pytest.mark.parametrize("name", sorted(REAL_GT))
def test_every_class_gets_pixels(real_gt: dict[str, np.ndarray], name: str) -> None:
    """Each class of the gt, even at the smallest fraction, gets scribbles."""
    gt = real_gt[name]
    scr = generate_scribbles(gt, fraction=0.001, seed=0)
    assert set(np.unique(scr[scr > 0])) == set(np.unique(gt[gt > 0]))


def test_tiny_class_gets_pixels() -> None:
    """A class of a few pixels among large ones still gets a few pixels."""
    gt = _synthetic()
    gt[10:12, 100:103] = 5  # six pixels
    scr = generate_scribbles(gt, fraction=0.001, seed=0)
    assert set(np.unique(scr[scr > 0])) == {1, 5, 49, 67}
    assert np.count_nonzero(scr == 5) >= 3


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_scribbles_stay_inside_their_class(
    real_gt: dict[str, np.ndarray], width: int
) -> None:
    """Every scribble pixel has its gt class; no scribble lies on gt == 0."""
    for gt in (real_gt["food"], _synthetic()):
        scr = generate_scribbles(gt, fraction=0.02, width=width, seed=width)
        on = scr != 0
        assert on.any()
        assert np.array_equal(scr[on], gt[on])
        assert not np.any(on & (gt == 0))


def test_scribbles_are_strokes_not_pixels(real_gt: dict[str, np.ndarray]) -> None:
    """Scribbles form connected strokes, not scattered single pixels."""
    gt = real_gt["em"]
    scr = generate_scribbles(gt, fraction=0.01, width=2, seed=0)
    _, n_pieces = ndi.label(scr > 0, structure=np.ones((3, 3)))
    assert np.count_nonzero(scr) / n_pieces >= 10


def test_output_shape_and_dtype_follow_gt() -> None:
    """The result has the shape and dtype of the gt, for several integer dtypes."""
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        gt = _synthetic().astype(dtype)
        scr = generate_scribbles(gt, fraction=0.02)
        assert scr.shape == gt.shape
        assert scr.dtype == gt.dtype


def test_nonzero_ignore_value() -> None:
    """Pixels equal to ignore_value are unlabelled and get no scribbles."""
    gt = _synthetic()
    gt[gt == 0] = 9
    scr = generate_scribbles(gt, fraction=0.02, ignore_value=9)
    assert not np.any(scr[gt == 9])
    assert set(np.unique(scr[scr > 0])) == {1, 49, 67}


def test_3d_is_processed_plane_by_plane(real_gt: dict[str, np.ndarray]) -> None:
    """A Z stack gets scribbles in every labelled plane, each on its own budget."""
    em = real_gt["em"][:200, :200]
    empty = np.zeros_like(em)
    syn = _synthetic((200, 200))
    vol = np.stack([em, empty, syn, em])
    scr = generate_scribbles(vol, fraction=0.01, seed=0)
    assert scr.shape == vol.shape and scr.dtype == vol.dtype
    assert not scr[1].any()
    for z in (0, 2, 3):
        ratio = np.count_nonzero(scr[z]) / _budget(vol[z], 0.01)
        assert 0.75 <= ratio <= 1.25, (z, ratio)
        on = scr[z] != 0
        assert np.array_equal(scr[z][on], vol[z][on])
    assert not np.array_equal(scr[0], scr[3])  # planes get their own generators


def test_2d_equals_single_plane_3d() -> None:
    """A 2D image gives the same scribbles as the same image as a 1-plane stack."""
    gt = _synthetic()
    assert np.array_equal(
        generate_scribbles(gt, seed=4), generate_scribbles(gt[None], seed=4)[0]
    )


def test_instance_to_semantic_maps_background_and_objects() -> None:
    """Instance 0 becomes class 1, every object id becomes class 2, as uint8."""
    inst = np.array([[0, 3, 3], [0, 0, 17], [250, 0, 1]], dtype=np.uint16)
    sem = instance_to_semantic(inst)
    assert sem.dtype == np.uint8
    assert np.array_equal(sem, [[1, 2, 2], [1, 1, 2], [2, 1, 2]])
    assert np.array_equal(instance_to_semantic(inst.astype(bool)), sem)


@pytest.mark.parametrize(
    "mask", [np.zeros((2, 2), dtype=np.float32), np.array([[0, -1]], dtype=np.int8)]
)
def test_instance_to_semantic_rejects_bad_masks(mask: np.ndarray) -> None:
    """Non-integer or negative instance masks raise DataError."""
    with pytest.raises(DataError):
        instance_to_semantic(mask)


@pytest.mark.parametrize(
    ("gt", "match"),
    [
        (np.ones(10, dtype=np.uint8), "2D"),
        (np.ones((2, 2, 4, 4), dtype=np.uint8), "2D"),
        (np.ones((8, 8), dtype=np.float32), "integer dtype"),
        (np.ones((8, 8), dtype=bool), "integer dtype"),
        (np.array([[1, -2], [1, 1]], dtype=np.int16), "negative"),
        (np.zeros((8, 8), dtype=np.uint8), "no labelled pixels"),
    ],
)
def test_bad_gt_raises(gt: np.ndarray, match: str) -> None:
    """Malformed ground truth raises DataError with a clear message."""
    with pytest.raises(DataError, match=match):
        generate_scribbles(gt)


@pytest.mark.parametrize("fraction", [0.0, -0.01, 1.5, float("nan"), "0.1"])
def test_bad_fraction_raises(fraction: float) -> None:
    """A fraction outside (0, 1] raises DataError."""
    with pytest.raises(DataError, match="fraction"):
        generate_scribbles(_synthetic(), fraction=fraction)


@pytest.mark.parametrize("width", [0, -2, 1.5])
def test_bad_width_raises(width: int) -> None:
    """A width below 1 pixel (or not whole) raises DataError."""
    with pytest.raises(DataError, match="width"):
        generate_scribbles(_synthetic(), width=width)


def test_class_zero_with_other_ignore_value_raises() -> None:
    """Class 0 cannot be told apart from 'unlabelled' in scribbles: DataError."""
    gt = _synthetic()  # has zeros
    with pytest.raises(DataError, match="0"):
        generate_scribbles(gt, ignore_value=1)


@pytest.mark.slow
def test_4096_plane_is_fast(real_gt: dict[str, np.ndarray]) -> None:
    """A 4096 x 4096 plane tiled from real gt takes well under a minute."""
    gt = real_gt["food"]
    big = np.tile(gt, (4096 // gt.shape[0] + 1, 4096 // gt.shape[1] + 1))[:4096, :4096]
    start = time.perf_counter()
    scr = generate_scribbles(big, fraction=0.01, seed=0)
    elapsed = time.perf_counter() - start
    ratio = np.count_nonzero(scr) / _budget(big, 0.01)
    assert 0.75 <= ratio <= 1.25
    assert elapsed < 60, elapsed
