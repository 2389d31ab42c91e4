"""The CNN object classifier's pieces: patch size, context masking, augmentation,
the validation split for early stopping."""

from __future__ import annotations

import numpy as np

from convpaint.objects.cnn import (
    _augment,
    auto_crop_size,
    extract_crops,
    validation_split,
)
from convpaint.objects.features import measure_geometry


def test_auto_patch_size_is_1_4_times_the_objects_extent() -> None:
    """crop_size auto: 1.4 x the median longest box edge, rounded up to a multiple
    of 4, within 16..512."""
    low = np.zeros((100, 2), np.int64)
    high = np.tile(np.array([[20, 30]]), (100, 1))
    high[-30:] = 400  # outliers do not set the size
    assert auto_crop_size(low, high) == 44  # 1.4 * 30 = 42 -> 44
    assert auto_crop_size(low, high // 10) == 16
    assert auto_crop_size(low, high * 100) == 512
    assert auto_crop_size(low[:0], high[:0]) == 16


def test_patches_are_centred_and_context_is_masked() -> None:
    """Patches are centred on the object; with context_dilation, image pixels farther
    than that from the object are 0; the last plane marks the object."""
    labels = np.zeros((40, 40), np.uint16)
    labels[18:22, 18:22] = 1
    labels[2:6, 2:6] = 2
    image = (np.random.default_rng(0).normal(size=(2, 40, 40)) + 5).astype(np.float32)
    geo = measure_geometry(labels, (40, 40))
    norm = (np.zeros(2), np.ones(2))
    full = extract_crops(image, labels, geo, 16, block=(13, 17), normalization=norm)
    masked = extract_crops(
        image, labels, geo, 16, block=(40, 40), normalization=norm, context_dilation=2
    )
    assert full.shape == masked.shape == (2, 3, 16, 16)
    # object 1 (centroid 19.5, 19.5 -> 20): patch rows/columns 12..27
    np.testing.assert_array_equal(full[0, :2], image[:, 12:28, 12:28])
    own = full[0, 2].astype(bool)
    assert own.sum() == 16 and own[6:10, 6:10].all()
    # within 2 px (Euclidean) of the object, which fills patch rows/columns 6..9
    yy, xx = np.mgrid[:16, :16]
    dy = np.maximum.reduce([6 - yy, np.zeros_like(yy), yy - 9])
    dx = np.maximum.reduce([6 - xx, np.zeros_like(xx), xx - 9])
    near = dy**2 + dx**2 <= 4
    np.testing.assert_array_equal(
        masked[0, :2] != 0, np.broadcast_to(near, (2, 16, 16))
    )
    np.testing.assert_array_equal(masked[0, :2][:, near], full[0, :2][:, near])
    # object 2 lies at the border: outside the image is 0
    assert (full[1, :, :4, :] == 0).all()


def test_augmentation_keeps_the_mask_plane_binary() -> None:
    """Intensity jitter changes only image planes; flips and rotations move the mask
    with the image; the same seed gives the same batch."""
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(8, 3, 12, 12)).astype(np.float32)
    batch[:, 2] = rng.random((8, 12, 12)) > 0.5
    a = _augment(batch, np.random.default_rng(1), 0.3, flips=True)
    b = _augment(batch, np.random.default_rng(1), 0.3, flips=True)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a[:, 2])) <= {0.0, 1.0}
    jitter_only = _augment(batch, np.random.default_rng(1), 0.3, flips=False)
    np.testing.assert_array_equal(jitter_only[:, 2], batch[:, 2])
    assert not np.allclose(jitter_only[:, :2], batch[:, :2])
    ratio = jitter_only[:, :2].std(axis=(2, 3)) / batch[:, :2].std(axis=(2, 3))
    assert ((ratio > 0.69) & (ratio < 1.31)).all()


def test_validation_split_is_stratified_and_seeded() -> None:
    """The held-out share is drawn per class with the seed; tiny classes stay whole."""
    y = np.array([0] * 50 + [1] * 9 + [2] * 2)
    train, val = validation_split(y, 0.2, seed=3)
    assert np.bincount(y[val], minlength=3).tolist() == [10, 1, 0]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    again = validation_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(validation_split(y, 0.2, seed=4)[1], val)
    assert len(validation_split(y, 0.0, seed=3)[1]) == 0
