"""Readers and writers: formats, axes, corrupt files, atomic outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from convpaint.errors import DataError, OutputExistsError
from convpaint.io import (
    ResultWriter,
    atomic_output,
    expand_inputs,
    file_stem,
    label_dtype,
    open_image,
    open_labels,
    plan_outputs,
)
from convpaint.io.writers import check_existing

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 4000, size=(37, 53)).astype(np.uint16)
RGB = RNG.integers(0, 255, size=(37, 53, 3)).astype(np.uint8)


def _write(path: Path, data: np.ndarray, kind: str) -> Path:
    if kind == "tif":
        tifffile.imwrite(path, data)
    elif kind == "lzw":
        tifffile.imwrite(path, data, compression="lzw")
    elif kind == "bigtiff":
        tifffile.imwrite(path, data, bigtiff=True, tile=(16, 16), compression="zlib")
    elif kind == "ome":
        tifffile.imwrite(path, data, ome=True)
    elif kind == "zarr":
        zarr.save_array(str(path), data)
    elif kind == "npy":
        np.save(path, data)
    elif kind == "png":
        Image.fromarray(data).save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("tif", "a.tif"),
        ("lzw", "a.tif"),
        ("bigtiff", "a.btf"),
        ("ome", "a.ome.tif"),
        ("zarr", "a.zarr"),
        ("npy", "a.npy"),
        ("png", "a.png"),
    ],
)
def test_gray_images_round_trip_in_every_format(
    tmp_path: Path, kind: str, name: str
) -> None:
    """Each supported format opens lazily as (1, 1, 1, Y, X) with the original values."""
    data = GRAY if kind != "png" else (GRAY // 16).astype(np.uint8)
    path = _write(tmp_path / name, data, kind)
    with open_image(path, "YX") as src:
        assert src.data.shape == (1, 1, 1, 37, 53)
        assert src.shape_tzyx == (1, 1, 37, 53) and not src.is_stack
        np.testing.assert_array_equal(np.asarray(src.data[0, 0, 0]), data)
    assert file_stem(path) == "a"


def test_rgb_and_rgba_are_channel_first(tmp_path: Path) -> None:
    """YXC colour images become 3 channels; an alpha channel is dropped."""
    path = _write(tmp_path / "c.png", RGB, "png")
    with open_image(path, "YXC") as src:
        np.testing.assert_array_equal(
            np.asarray(src.data[0, :, 0]), RGB.transpose(2, 0, 1)
        )
        assert src.is_colour
    rgba = np.concatenate([RGB, np.full((37, 53, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "d.png")
    with open_image(tmp_path / "d.png", "YXC") as src:
        assert src.n_channels == 3 and src.is_colour


def test_channel_first_tiff(tmp_path: Path) -> None:
    """CYX multichannel TIFFs keep their channel order."""
    data = RNG.integers(0, 100, size=(2, 20, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", data, photometric="minisblack")
    with open_image(tmp_path / "m.tif", "CYX") as src:
        np.testing.assert_array_equal(np.asarray(src.data[0, :, 0]), data)
        assert src.n_channels == 2 and not src.is_colour


@pytest.mark.parametrize(
    ("shape", "axes", "phrases"),
    [
        ((3, 20, 30), "YX", ["expect 2 dimensions", "CYX", "ZYX"]),
        ((20, 30, 3), "YX", ["set axes: YXC"]),
        ((20, 30), "CYX", ["expect 3 dimensions", "set axes: YX"]),
        ((4, 5, 20, 30), "YX", ["expect 2 dimensions", "CZYX", "TZYX"]),
        # no axes given and none declared: only unambiguous shapes are guessed
        ((5, 20, 30), None, ["does not declare its axes", "CYX", "ZYX"]),
    ],
)
def test_wrong_axes_are_explained(
    tmp_path: Path, shape: tuple, axes: str | None, phrases: list[str]
) -> None:
    """A shape that does not fit the declared axes names the file, shape and fix."""
    np.save(tmp_path / "x.npy", np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as info:
        open_image(tmp_path / "x.npy", axes)
    msg = str(info.value)
    assert "x.npy" in msg and str(shape) in msg
    for phrase in phrases:
        assert phrase in msg


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    """Corrupt TIFF, unknown suffix and missing files give DataError with the path."""
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage that is not a tiff")
    with pytest.raises(DataError, match=r"bad.tif.*could not be read as TIFF"):
        open_image(tmp_path / "bad.tif", "YX")
    (tmp_path / "x.xyz").write_text("hello")
    with pytest.raises(DataError, match="unsupported file type"):
        open_image(tmp_path / "x.xyz", "YX")
    with pytest.raises(DataError, match="does not exist"):
        open_image(tmp_path / "none.tif", "YX")


def test_truncated_tiff_fails_when_read(tmp_path: Path) -> None:
    """A TIFF cut short is reported as DataError naming the file, not a crash."""
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, GRAY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.tif.*corrupt or truncated"):
        with open_image(path, "YX") as src:
            src.data.sum().compute()


def test_labels_are_checked(tmp_path: Path) -> None:
    """Labels must be integers of the image's shape, without negatives."""
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((10, 13), np.uint8))
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((4, 4), np.uint8))
    with open_image(tmp_path / "img.tif") as img:
        tifffile.imwrite(tmp_path / "l.tif", np.zeros((10, 12), np.uint8))
        with pytest.raises(
            DataError,
            match=r"shape \(10, 12\) with axes YX .* but image '.*img.tif' needs YX "
            r"shape \(10, 13\)",
        ):
            open_labels(tmp_path / "l.tif", image=img)
    with open_image(tmp_path / "small.tif") as img:
        tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 0.5, np.float32))
        with pytest.raises(DataError, match="non-integer"):
            open_labels(tmp_path / "f.tif", image=img).compute()
        tifffile.imwrite(tmp_path / "n.tif", np.full((4, 4), -1, np.int16))
        with pytest.raises(DataError, match="negative"):
            open_labels(tmp_path / "n.tif", image=img).compute()
        tifffile.imwrite(tmp_path / "ok.tif", np.full((4, 4), 2.0, np.float32))
        ok = open_labels(tmp_path / "ok.tif", image=img)
        assert ok.dtype == np.int64 and ok.shape == (1, 1, 4, 4)
        assert int(ok.max().compute()) == 2
        np.save(tmp_path / "s.npy", np.array([["a"] * 4] * 4))
        with pytest.raises(DataError, match="expected integers"):
            open_labels(tmp_path / "s.npy", image=img)


def test_expand_inputs(tmp_path: Path) -> None:
    """Files, folders and globs expand to a sorted unique list; misses are errors."""
    for n in ("b.tif", "a.tif", "notes.txt"):
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/c.tif").write_bytes(b"")
    got = expand_inputs(
        [str(tmp_path), str(tmp_path / "*.tif"), str(tmp_path / "**/*.tif")]
    )
    assert [p.name for p in got] == ["a.tif", "b.tif", "c.tif"]
    with pytest.raises(DataError, match="matches no supported file"):
        expand_inputs([str(tmp_path / "*.png")])
    with pytest.raises(DataError, match="does not exist"):
        expand_inputs([str(tmp_path / "zzz.tif")])


@pytest.mark.parametrize(
    ("classes", "dtype"),
    [([1, 2], np.uint8), ([1, 300], np.uint16), ([5, 70000], np.uint32)],
)
def test_label_dtype(classes: list[int], dtype: type) -> None:
    """Labels use the smallest unsigned dtype that holds the class values."""
    assert label_dtype(classes) == dtype


@pytest.mark.parametrize("fmt", ["tif", "zarr", "ome-zarr"])
def test_writer_streams_tiles_and_records_axes(tmp_path: Path, fmt: str) -> None:
    """Blocks written out of order assemble into 2-D labels and probabilities."""
    plan = plan_outputs(
        [tmp_path / "img.tif"], tmp_path / "out", fmt="tif", probabilities=True
    )[0]
    if fmt != "tif":  # plan_outputs is another module's; name zarr outputs here
        suffix = ".zarr" if fmt == "zarr" else ".ome.zarr"
        plan = type(plan)(
            plan.labels.with_suffix(suffix),
            plan.probabilities.with_suffix(suffix),  # type: ignore[union-attr]
        )
    labels = RNG.integers(1, 3, size=(30, 45)).astype(np.uint8) * 3
    probs = RNG.random((2, 30, 45)).astype(np.float32)
    w = ResultWriter(
        plan,
        shape_tzyx=(1, 1, 30, 45),
        out_axes="YX",
        classes=[3, 6],
        fmt=fmt,
        chunks_tzyx=(1, 1, 16, 32),
    )
    for y0, x0 in [(16, 32), (0, 0), (16, 0), (0, 32)]:
        sl = (slice(y0, y0 + 16), slice(x0, x0 + 32))
        region = (slice(0, 1), slice(0, 1), *sl)
        w.write(
            region, labels[sl][None, None], probs[(slice(None), *sl)][None, :, None]
        )
    assert not plan.labels.exists()  # nothing under the final name before finish
    paths = w.finish()
    assert paths == [plan.labels, plan.probabilities]
    if fmt == "tif":
        with tifffile.TiffFile(plan.labels) as tf:
            assert (
                tf.is_imagej
                and tf.series[0].axes == "YX"
                and tf.pages[0].compression == 8
            )
            np.testing.assert_array_equal(tf.asarray(), labels)
        with tifffile.TiffFile(plan.probabilities) as tf:
            assert tf.series[0].axes == "CYX"
            np.testing.assert_array_equal(tf.asarray(), probs)
    else:
        with open_image(plan.labels) as src:
            assert src.axes == "YX"
            np.testing.assert_array_equal(np.asarray(src.data[0, 0, 0]), labels)
        with open_image(plan.probabilities) as src:
            assert src.axes == "CYX"
            np.testing.assert_array_equal(np.asarray(src.data[0, :, 0]), probs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [plan.labels.name, plan.probabilities.name]
    )


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    """An aborted writer removes its temporaries and keeps an older output intact."""
    plan = plan_outputs([tmp_path / "img.tif"], tmp_path / "out")[0]
    plan.labels.parent.mkdir()
    plan.labels.write_bytes(b"old result")
    w = ResultWriter(
        plan,
        shape_tzyx=(1, 1, 8, 8),
        out_axes="YX",
        classes=[1, 2],
        fmt="tif",
        chunks_tzyx=(1, 1, 8, 8),
    )
    w.labels_target[0:1, 0:1, 0:8, 0:8] = np.ones((1, 1, 8, 8), np.uint8)
    w.abort()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img_labels.tif"]
    assert plan.labels.read_bytes() == b"old result"


def test_overwrite_policy(tmp_path: Path) -> None:
    """Existing outputs raise, are skipped or are overwritten only as asked."""
    plan = plan_outputs([tmp_path / "a.tif"], tmp_path)[0]
    plan.labels.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_existing(plan, "error")
    assert check_existing(plan, "skip") is False
    assert check_existing(plan, "overwrite") is True
    with pytest.raises(OutputExistsError, match="would both write"):
        plan_outputs([tmp_path / "x/a.tif", tmp_path / "y/a.png"], tmp_path)


def test_atomic_output_on_error(tmp_path: Path) -> None:
    """A failure inside atomic_output leaves neither the final name nor a temporary."""
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- contiguous TIFFs
@pytest.mark.parametrize(
    ("shape", "dtype", "options", "contiguous"),
    [
        # uncompressed, one strip or many: read straight from the file
        ((300, 200), np.uint8, {}, True),
        ((300, 200), ">u2", {}, True),  # big-endian file
        ((5, 40, 30), np.float32, {"imagej": True, "metadata": {"axes": "ZYX"}}, True),
        ((40, 30, 3), np.uint8, {"photometric": "rgb"}, True),
        ((300, 200), np.uint16, {"rowsperstrip": 16}, True),
        # compressed or tiled: through tifffile's zarr view
        ((300, 200), np.uint16, {"compression": "zlib"}, False),
        ((256, 256), np.uint8, {"tile": (64, 64)}, False),
    ],
)
def test_contiguous_tiffs_are_read_from_the_file(
    tmp_path: Path, shape: tuple, dtype: object, options: dict, contiguous: bool
) -> None:
    """Uncompressed contiguous pixels are read by mapping the file, any window of
    them equal to tifffile's reading; other TIFFs go through the zarr view."""
    from convpaint.io.readers import TiffPixels

    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 200).astype(dtype)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data, **options)
    pixels = TiffPixels(path)
    try:
        assert (pixels._contiguous is not None) == contiguous
        assert pixels.shape == data.shape
        np.testing.assert_array_equal(pixels[...], data)
        window = tuple(slice(n // 4, n // 2 + 1) for n in shape)
        np.testing.assert_array_equal(pixels[window], data[window])
        assert pixels[window].dtype.isnative
    finally:
        pixels.close()
    with open_image(path) as src:
        assert np.asarray(src.data).size == data.size
