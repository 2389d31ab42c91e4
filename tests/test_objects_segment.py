"""Block-wise object labelling: exact equality with whole-image scipy labelling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from convpaint.config.objects import SegmentConfig
from convpaint.objects.api import segment
from convpaint.objects.segment import label_mask, structure_for


def _reference(
    mask: np.ndarray, connectivity: str, min_size: int, max_size: int | None
) -> np.ndarray:
    """scipy labelling of the whole image + size filter + order-keeping renumbering."""
    labels, _ = ndi.label(mask, structure=structure_for(mask.ndim, connectivity))  # type: ignore[arg-type]
    area = np.bincount(labels.ravel())
    keep = area >= min_size
    if max_size is not None:
        keep &= area <= max_size
    keep[0] = False
    return relabel_sequential(np.where(keep[labels], labels, 0))[0]


def _read(path: Path) -> np.ndarray:
    return np.asarray(
        zarr.open_array(str(path))[:]
        if path.suffix == ".zarr"
        else tifffile.imread(path)
    )


def _blobs(shape: tuple[int, ...], threshold: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.2) > threshold


@pytest.mark.parametrize(
    ("shape", "block", "connectivity", "min_size", "max_size"),
    [
        # 2D: uneven blocks, thin strips, one block, tiny blocks
        ((97, 131), (17, 23), "face", 1, None),
        ((97, 131), (17, 23), "full", 5, None),
        ((97, 131), (1, 131), "face", 3, 40),
        ((97, 131), (97, 131), "full", 1, None),
        ((97, 131), (9, 11), "full", 4, 60),
        # 3D: uneven blocks in every axis
        ((21, 40, 37), (5, 7, 9), "face", 1, None),
        ((21, 40, 37), (4, 40, 6), "full", 6, None),
        ((21, 40, 37), (21, 13, 37), "face", 3, 50),
    ],
)
def test_blockwise_labels_equal_whole_image_scipy(
    tmp_path: Path,
    shape: tuple[int, ...],
    block: tuple[int, ...],
    connectivity: str,
    min_size: int,
    max_size: int | None,
) -> None:
    """Labels + size filter on uneven blocks equal whole-image scipy, id for id."""
    mask = _blobs(shape, 0.5 if len(shape) == 2 else 0.53)
    ref = _reference(mask, connectivity, min_size, max_size)
    assert ref.max() > 5  # a meaningful number of objects
    stats = label_mask(
        mask,
        tmp_path / "out.tif",
        connectivity=connectivity,  # type: ignore[arg-type]
        min_size=min_size,
        max_size=max_size,
        block=block,
    )
    np.testing.assert_array_equal(_read(tmp_path / "out.tif"), ref)
    assert stats.n_objects == ref.max()


def test_zarr_output_streams_block_chunks(tmp_path: Path) -> None:
    """zarr output has the block as chunks and equals the TIFF output."""
    mask = _blobs((64, 80), 0.5)
    label_mask(mask, tmp_path / "a.zarr", block=(16, 24), fmt="zarr")
    label_mask(mask, tmp_path / "a.tif", block=(64, 80))
    arr = zarr.open_array(str(tmp_path / "a.zarr"))
    assert arr.chunks == (16, 24)
    assert arr.attrs["axes"] == "YX"
    np.testing.assert_array_equal(arr[:], _read(tmp_path / "a.tif"))


def test_many_objects_get_uint32(tmp_path: Path) -> None:
    """More than 65535 objects are written as uint32 with every id kept."""
    mask = np.zeros((520, 520), bool)
    mask[::2, ::2] = True  # 67600 single-pixel objects
    stats = label_mask(mask, tmp_path / "m.tif", block=(100, 130))
    out = _read(tmp_path / "m.tif")
    assert out.dtype == np.uint32 and stats.dtype == "uint32"
    assert out.max() == 260 * 260
    np.testing.assert_array_equal(out, _reference(mask, "face", 1, None))


def test_empty_mask_gives_empty_labels(tmp_path: Path) -> None:
    """A mask without foreground writes an all-zero label image."""
    stats = label_mask(np.zeros((30, 40), bool), tmp_path / "e.tif", block=(7, 9))
    assert stats.n_objects == 0 and not _read(tmp_path / "e.tif").any()


@pytest.fixture()
def nuclei3d(bench: Path) -> np.ndarray:
    """Real 3D nuclei foreground (PlantSeg ovule, 100^3)."""
    gt = tifffile.imread(bench / "plantseg_ovule_nuclei3d/derived/1135_mini_gt.tif")
    return gt[20:80, 10:90, 10:90] == 2


def test_split_is_per_object_and_block_independent(
    tmp_path: Path, nuclei3d: np.ndarray
) -> None:
    """Watershed split + size filter give the same objects for any block shape,
    and splitting only divides connected components."""
    outs = []
    for i, block in enumerate([(60, 80, 80), (17, 23, 31)]):
        label_mask(
            nuclei3d,
            tmp_path / f"s{i}.tif",
            split_min_distance=6,
            min_size=30,
            block=block,
        )
        outs.append(_read(tmp_path / f"s{i}.tif"))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    components, n = ndi.label(nuclei3d)
    assert outs[0].max() > n // 2
    # every object lies inside one connected component
    pairs = np.unique(
        np.stack([outs[0].ravel(), components.ravel()], 1)[outs[0].ravel() > 0], axis=0
    )
    assert len(np.unique(pairs[:, 0])) == len(pairs)


def test_segment_api_foreground_threshold_and_names(tmp_path: Path) -> None:
    """segment() selects foreground values or thresholds, strips _labels from names,
    and honours on_exists."""
    labels = np.zeros((40, 50), np.uint8)
    labels[5:15, 5:15] = 2
    labels[20:30, 20:30] = 3
    labels[30:35, 40:45] = 2
    tifffile.imwrite(tmp_path / "a_labels.tif", labels)
    probs = (labels == 2).astype(np.float32) * 0.9
    tifffile.imwrite(tmp_path / "b.tif", probs)
    out = tmp_path / "inst"
    res = segment([str(tmp_path / "a_labels.tif")], out, SegmentConfig(foreground=[2]))
    assert res[0].output == out / "a_instances.tif"
    assert _read(res[0].output).max() == 2
    res = segment(
        [str(tmp_path / "b.tif")], out, SegmentConfig(threshold=0.5, min_size=30)
    )
    assert _read(res[0].output).max() == 1  # the 25-pixel object is removed
    from convpaint.errors import DataError, OutputExistsError

    with pytest.raises(OutputExistsError, match="exists"):
        segment([str(tmp_path / "b.tif")], out, SegmentConfig(threshold=0.5))
    assert segment(
        [str(tmp_path / "b.tif")], out, SegmentConfig(threshold=0.5), on_exists="skip"
    )[0].skipped
    with pytest.raises(DataError, match="threshold"):
        segment([str(tmp_path / "b.tif")], out, SegmentConfig(), on_exists="overwrite")


@pytest.mark.parametrize("shape", [(300, 520), (5, 300, 270)])
def test_large_tiff_outputs_are_streamed_as_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]
) -> None:
    """Above the strip limit, TIFFs are written tile by tile with the same content."""
    import convpaint.objects.io as objects_io

    monkeypatch.setattr(objects_io, "_STRIPPED_MAX_BYTES", 0)
    mask = _blobs(shape, 0.5)
    label_mask(mask, tmp_path / "t.tif", block=(97,) * len(shape))
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.pages[0].is_tiled
    np.testing.assert_array_equal(
        _read(tmp_path / "t.tif"), _reference(mask, "face", 1, None)
    )
