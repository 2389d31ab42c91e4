"""N-D reading: axes strings, declared axes, pixel sizes, label stacks."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from convpaint.errors import DataError
from convpaint.io import check_axes, open_image, open_labels, to_canonical
from convpaint.io.axes import output_axes, probability_axes
from convpaint.io.metadata import normalize_unit

#: A (T, C, Z, Y, X) reference; every test file holds part of it in some order.
REF = (np.arange(2 * 3 * 4 * 20 * 24) % 251).astype(np.uint8).reshape(2, 3, 4, 20, 24)
ALL_AXES = [
    "YX",
    "CYX",
    "YXC",
    "ZYX",
    "CZYX",
    "ZCYX",
    "TYX",
    "TZYX",
    "TCZYX",
    "TZCYX",
    "ZYXC",
]
#: ImageJ hyperstacks only know the order T, Z, C, Y, X (and RGB samples last).
IMAGEJ_AXES = [a for a in ALL_AXES if a not in ("CZYX", "TCZYX")]
#: NGFF only knows the order T, C, Z, Y, X, and no channels-last.
NGFF_AXES = ["YX", "CYX", "ZYX", "CZYX", "TYX", "TZYX", "TCZYX"]


def file_data(axes: str) -> np.ndarray:
    """The part of REF a file with ``axes`` holds, in that order."""
    sub = REF[tuple(slice(None) if a in axes else 0 for a in "TCZYX")]
    present = [a for a in "TCZYX" if a in axes]
    return sub.transpose([present.index(a) for a in axes])


def canonical(axes: str) -> np.ndarray:
    """What open_image must return for that file: REF with singletons kept."""
    return REF[tuple(slice(None) if a in axes else slice(0, 1) for a in "TCZYX")]


def write_file(folder: Path, axes: str, flavour: str) -> Path:
    """Write file_data(axes) as an ImageJ/OME/tifffile TIFF, zarr or OME-Zarr."""
    data = file_data(axes)
    rgb = axes.endswith("C")
    tiff_axes = axes[:-1] + "S" if rgb else axes
    photometric = "rgb" if rgb else "minisblack"
    if flavour == "imagej":
        path = folder / f"{axes}.tif"
        tifffile.imwrite(
            path,
            data,
            imagej=True,
            metadata={"axes": tiff_axes},
            photometric=photometric,
        )
    elif flavour == "ome":
        path = folder / f"{axes}.ome.tif"
        tifffile.imwrite(
            path, data, ome=True, metadata={"axes": tiff_axes}, photometric=photometric
        )
    elif flavour == "tifffile":
        path = folder / f"{axes}.tif"
        tifffile.imwrite(path, data, metadata={"axes": axes}, photometric=photometric)
    elif flavour in ("zarr-axes", "zarr-dims"):
        path = folder / f"{axes}.zarr"
        arr = zarr.create_array(
            str(path), shape=data.shape, chunks=data.shape, dtype=data.dtype
        )
        arr[:] = data
        if flavour == "zarr-axes":
            arr.attrs["axes"] = axes
        else:  # xarray names
            names = {"T": "time", "C": "channel"}
            arr.attrs["_ARRAY_DIMENSIONS"] = [names.get(a, a.lower()) for a in axes]
    elif flavour == "ome-zarr":
        from ome_zarr.format import FormatV04
        from ome_zarr.writer import write_image

        path = folder / f"{axes}.ome.zarr"
        write_image(
            data, str(path), axes=axes.lower(), fmt=FormatV04(), scale_factors=[]
        )
    else:
        raise AssertionError(flavour)
    return path


CASES = (
    [(a, "imagej") for a in IMAGEJ_AXES]
    + [(a, "ome") for a in ALL_AXES]
    + [(a, "tifffile") for a in ALL_AXES]
    + [(a, "zarr-axes") for a in ALL_AXES]
    + [(a, "zarr-dims") for a in ALL_AXES]
    + [(a, "ome-zarr") for a in NGFF_AXES]
)


@pytest.mark.filterwarnings("ignore::UserWarning")  # ome-zarr-py's default scale note
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ome-zarr-py's Scaler
@pytest.mark.parametrize(("axes", "flavour"), CASES)
def test_declared_axes_give_the_canonical_layout(
    tmp_path: Path, axes: str, flavour: str
) -> None:
    """Every axes order, in every format that can hold it, reads as (T, C, Z, Y, X)."""
    path = write_file(tmp_path, axes, flavour)
    with open_image(path) as src:
        assert src.axes == axes and src.file_axes == axes
        assert src.data.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(src.data), canonical(axes))
        assert src.is_colour == axes.endswith("C")
        assert src.is_stack == ("Z" in axes)
        assert src.n_frames == (2 if "T" in axes else 1)
        assert src.shape_tzyx == src.data.shape[:1] + src.data.shape[2:]
    with open_image(path, axes.lower()) as src:  # the same axes given: fine
        assert src.axes == axes


@pytest.mark.parametrize("axes", ALL_AXES)
def test_given_axes_read_undeclared_files(tmp_path: Path, axes: str) -> None:
    """A .npy file declares nothing; the given axes say how to read it."""
    np.save(tmp_path / "x.npy", file_data(axes))
    with open_image(tmp_path / "x.npy", axes) as src:
        assert src.file_axes is None and src.axes == axes
        np.testing.assert_array_equal(np.asarray(src.data), canonical(axes))


def test_rgba_drops_alpha_in_any_layout() -> None:
    """Channels last with 4 entries is RGBA: alpha is dropped, also for stacks."""
    rgba = np.zeros((4, 10, 12, 4), np.uint8)
    rgba[..., 3] = 255
    out = to_canonical(da.from_array(rgba), "ZYXC", path="x")
    assert out.shape == (1, 3, 4, 10, 12) and int(out.max().compute()) == 0
    assert to_canonical(rgba[0], "CYX", path="x").shape == (1, 10, 1, 12, 4)


@pytest.mark.parametrize(
    ("value", "channels", "expected"),
    [
        ("zyx", True, "ZYX"),
        (" tczyx ", True, "TCZYX"),
        ("XY", True, "XY"),  # transposed files are fine
        ("ZYXC", True, "ZYXC"),
        ("TZYX", False, "TZYX"),
        # invalid
        ("YQX", True, "unknown letters Q"),
        ("ZZYX", True, "repeated letters"),
        ("", True, "it is empty"),
        ("CZY", True, "lack X"),
        ("CYX", False, "no C: label images have no channel axis"),
    ],
)
def test_check_axes(value: str, channels: bool, expected: str) -> None:
    """Any order of distinct T, C, Z, Y, X with Y and X is valid; else a clear error."""
    if expected.isupper():
        assert check_axes(value, channels=channels) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            check_axes(value, channels=channels)


@pytest.mark.parametrize(
    ("image_axes", "labels", "probabilities_tif", "probabilities_zarr"),
    [
        ("YX", "YX", "CYX", "CYX"),
        ("YXC", "YX", "CYX", "CYX"),
        ("ZCYX", "ZYX", "ZCYX", "CZYX"),
        ("CZYX", "ZYX", "ZCYX", "CZYX"),
        ("TYXC", "TYX", "TCYX", "TCYX"),
        ("ZTYX", "TZYX", "TZCYX", "TCZYX"),
    ],
)
def test_output_axes(
    image_axes: str, labels: str, probabilities_tif: str, probabilities_zarr: str
) -> None:
    """Outputs keep the input's non-C axes in canonical order; probabilities add C."""
    assert output_axes(image_axes) == labels
    assert probability_axes(labels, "tif") == probabilities_tif
    assert probability_axes(labels, "zarr") == probabilities_zarr


# --- declared versus given axes -------------------------------------------------------


@pytest.mark.parametrize(
    ("flavour", "axes", "source"),
    [
        ("imagej", "ZYX", "ImageJ metadata"),
        ("imagej", "TYX", "ImageJ metadata"),
        ("ome", "ZYX", "OME-XML"),
        ("ome", "TYX", "OME-XML"),
        ("tifffile", "ZYX", "tifffile metadata"),
        ("zarr-axes", "TYX", "zarr attribute 'axes'"),
        ("ome-zarr", "ZYX", "OME-Zarr multiscales"),
    ],
)
def test_stack_is_never_read_as_channels(
    tmp_path: Path, flavour: str, axes: str, source: str
) -> None:
    """Issue 6 item 5: a 4-plane Z or T stack given CYX (a channels model) is refused."""
    path = write_file(tmp_path, axes, flavour)
    with pytest.raises(DataError) as info:
        open_image(path, "CYX")
    msg = str(info.value)
    assert f"declares axes {axes} ({source}) but axes CYX were given" in msg
    assert path.name in msg and f"set axes: {axes}" in msg


def test_undeclared_stacks_need_axes(tmp_path: Path) -> None:
    """A 3-D array written without axes is read only with axes; the error shows the shape."""
    tifffile.imwrite(tmp_path / "q.tif", REF[0, 0], photometric="minisblack")  # QYX
    with pytest.raises(DataError, match=r"shape \(4, 20, 24\) and does not declare"):
        open_image(tmp_path / "q.tif")
    for axes in ("ZYX", "CYX", "TYX"):
        with open_image(tmp_path / "q.tif", axes) as src:
            assert src.axes == axes and src.file_axes is None


def test_unambiguous_shapes_are_guessed(tmp_path: Path) -> None:
    """Without axes, a 2-D array is YX and an (Y, X, 3) array RGB."""
    np.save(tmp_path / "g.npy", REF[0, 0, 0])
    np.save(tmp_path / "c.npy", REF[0, :, 0].transpose(1, 2, 0))
    with open_image(tmp_path / "g.npy") as src:
        assert src.axes == "YX"
    with open_image(tmp_path / "c.npy") as src:
        assert src.axes == "YXC" and src.is_colour


# --- pixel sizes ---------------------------------------------------------------------


def test_spacing_from_imagej(tmp_path: Path) -> None:
    """ImageJ Z spacing, X/Y resolution and unit become (z, y, x) in micrometres."""
    tifffile.imwrite(
        tmp_path / "ij.tif",
        REF[0, 0],
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.1),
        metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"},
    )
    with open_image(tmp_path / "ij.tif") as src:
        assert src.spacing == pytest.approx((0.5, 0.1, 0.2))
        assert src.unit == "micrometer"
    with open_image(tmp_path / "ij.tif", spacing={"Z": 2.0}) as src:
        assert src.spacing == pytest.approx((2.0, 0.1, 0.2))


def test_spacing_from_ome_tiff(tmp_path: Path) -> None:
    """OME PhysicalSize values are read with their units; mixed units are converted."""
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        REF[:, 0],
        ome=True,
        metadata={
            "axes": "TZYX",
            "PhysicalSizeX": 100.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.1,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 500.0,
            "PhysicalSizeZUnit": "nm",
        },
    )
    with open_image(tmp_path / "o.ome.tif") as src:
        assert src.unit == "nanometer"
        assert src.spacing == pytest.approx((500.0, 100.0, 100.0))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_spacing_from_ome_zarr(tmp_path: Path) -> None:
    """OME-Zarr (written by ome-zarr-py, NGFF 0.4) gives axes, scale and units."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    write_image(
        REF[0],
        str(tmp_path / "o.ome.zarr"),
        axes="czyx",
        fmt=FormatV04(),
        scale_factors=[2],
        scale={"z": 0.5, "y": 0.1, "x": 0.1},
        axes_units=dict.fromkeys("zyx", "micrometer"),
    )
    with open_image(tmp_path / "o.ome.zarr") as src:
        assert src.axes == "CZYX" and src.axes_source == "OME-Zarr multiscales"
        assert src.spacing == pytest.approx((0.5, 0.1, 0.1))
        assert src.unit == "micrometer"
        np.testing.assert_array_equal(np.asarray(src.data[0]), REF[0])


def test_spacing_absent_or_partial(tmp_path: Path) -> None:
    """No metadata gives None; a config value alone fills the rest with 1.0."""
    np.save(tmp_path / "x.npy", REF[0, 0])
    with open_image(tmp_path / "x.npy", "ZYX") as src:
        assert src.spacing is None and src.unit is None
    with open_image(tmp_path / "x.npy", "ZYX", spacing={"z": 3.0}) as src:
        assert src.spacing == (3.0, 1.0, 1.0)
    with pytest.raises(DataError, match="spacing"):
        open_image(tmp_path / "x.npy", "ZYX", spacing={"q": 1.0})


def test_real_imagej_volume(bench: Path) -> None:
    """The PlantSeg ovule volume declares ZYX and its voxel size (README: 0.284/0.127)."""
    path = bench / "plantseg_ovule_nuclei3d/images/1135_mini.tif"
    with open_image(path) as src:
        assert src.axes == "ZYX" and src.axes_source == "ImageJ metadata"
        assert src.data.shape == (1, 1, 100, 100, 100)
        assert src.spacing == pytest.approx((0.284, 0.127, 0.127), abs=1e-3)
        assert src.unit == "micrometer"
        with pytest.raises(DataError, match="declares axes ZYX"):
            open_image(path, "CYX")


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("um", "micrometer"),
        ("µm", "micrometer"),
        ("micron", "micrometer"),
        ("\\u00B5m", "micrometer"),
        ("nm", "nanometer"),
        ("pixel", None),
        (None, None),
    ],
)
def test_units_are_normalised(unit: str | None, name: str | None) -> None:
    """Unit spellings of ImageJ, OME and NGFF map to NGFF names."""
    assert normalize_unit(unit) == name


# --- reading lazily, anywhere -----------------------------------------------------------


def test_tiff_pixels_pickle_for_cluster_workers(tmp_path: Path) -> None:
    """TIFF-backed data pickles by path (a worker reopens the file) and reads the same."""
    path = write_file(tmp_path, "TZYX", "imagej")
    with open_image(path) as src:
        copy = pickle.loads(pickle.dumps(src.data))
        np.testing.assert_array_equal(np.asarray(copy), canonical("TZYX"))
        assert src.data.chunks[2] == (1,) * 4  # one chunk per plane, as stored


# --- labels --------------------------------------------------------------------------


def test_label_stack_for_a_volume_is_lazy(bench: Path) -> None:
    """Scribbles of a real volume (written without axes) open as (1, Z, Y, X), lazily."""
    image = bench / "plantseg_ovule_nuclei3d/images/1135_mini.tif"
    scribbles = bench / "plantseg_ovule_nuclei3d/derived/1135_mini_scribbles.tif"
    with open_image(image) as src:
        labels = open_labels(scribbles, image=src)
        assert isinstance(labels, da.Array)
        assert labels.shape == (1, 100, 100, 100) and labels.dtype == np.uint8
        assert labels.chunks[1] == (1,) * 100  # read plane by plane, never whole
        plane = labels[0, 50].compute()
        np.testing.assert_array_equal(plane, tifffile.imread(scribbles, key=50))


@pytest.mark.parametrize(
    ("image_axes", "label_axes", "declared"),
    [
        ("ZCYX", "ZYX", True),
        ("ZCYX", "ZYX", False),
        ("TYXC", "TYX", False),
        ("CYX", "YX", True),
        ("TCZYX", "TZYX", True),
    ],
)
def test_labels_follow_the_image(
    tmp_path: Path, image_axes: str, label_axes: str, declared: bool
) -> None:
    """Labels have the image's axes minus C, declared or taken from the image."""
    image = write_file(tmp_path, image_axes, "tifffile")
    labels = (file_data(label_axes) % 3).astype(np.uint16)
    if declared:
        tifffile.imwrite(
            tmp_path / "l.tif",
            labels,
            metadata={"axes": label_axes},
            photometric="minisblack",
        )
    else:
        np.save(tmp_path / "l.npy", labels)
    path = tmp_path / ("l.tif" if declared else "l.npy")
    with open_image(image) as src:
        got = open_labels(path, image=src)
        assert got.shape == src.shape_tzyx
        np.testing.assert_array_equal(
            np.asarray(got), (canonical(label_axes)[:, 0] % 3).astype(np.uint16)
        )


def test_labels_with_other_declared_axes_are_refused(tmp_path: Path) -> None:
    """ZYX labels for a TYX image of the same shape are refused, naming both axes."""
    image = write_file(tmp_path, "TYX", "imagej")
    tifffile.imwrite(
        tmp_path / "l.tif", REF[:, 0, 0], imagej=True, metadata={"axes": "ZYX"}
    )
    with open_image(image) as src, pytest.raises(DataError) as info:
        open_labels(tmp_path / "l.tif", image=src)
    msg = str(info.value)
    assert "with axes ZYX (ImageJ metadata)" in msg
    assert "needs TYX shape (2, 20, 24)" in msg and "re-save it with axes TYX" in msg


def test_labels_with_channels_are_refused(tmp_path: Path) -> None:
    """A label file with several channels is not one label image."""
    image = write_file(tmp_path, "YX", "tifffile")
    tifffile.imwrite(tmp_path / "l.tif", REF[0, :2, 0], metadata={"axes": "CYX"})
    with open_image(image) as src, pytest.raises(DataError, match="channel axis"):
        open_labels(tmp_path / "l.tif", image=src)


def _stack_with_negative_label(tmp_path: Path, *, plane: int, value: int) -> Path:
    """A ZYX image and its labels ``l.tif`` (all 1, ``value`` at one voxel of
    ``plane``) in ``tmp_path``; returns the image."""
    labels = np.ones((4, 20, 24), np.int16)
    labels[plane, 5, 5] = value
    tifffile.imwrite(
        tmp_path / "l.tif", labels, metadata={"axes": "ZYX"}, photometric="minisblack"
    )
    return write_file(tmp_path, "ZYX", "tifffile")


def test_label_values_are_checked_block_by_block(tmp_path: Path) -> None:
    """A negative value in plane 3 fails only when plane 3 is read, naming the file."""
    image = _stack_with_negative_label(tmp_path, plane=3, value=-2)
    with open_image(image) as src:
        got = open_labels(tmp_path / "l.tif", image=src)
        assert got[0, :3].max().compute() == 1
        with pytest.raises(
            DataError, match=r"l.tif' contain negative values \(min -2\)"
        ):
            got.min().compute()


def test_rgb_label_png_with_equal_channels(tmp_path: Path) -> None:
    """A label PNG saved as RGB with equal channels is taken as one label image."""
    from PIL import Image

    np.save(tmp_path / "img.npy", REF[0, 0, 0])
    lab = (REF[0, 0, 0] % 3).astype(np.uint8)
    Image.fromarray(np.stack([lab] * 3, axis=-1)).save(tmp_path / "l.png")
    with open_image(tmp_path / "img.npy") as src:
        np.testing.assert_array_equal(
            open_labels(tmp_path / "l.png", image=src)[0, 0].compute(), lab
        )


def test_zarr_group_and_dtype_protections(tmp_path: Path) -> None:
    """A zarr group with several arrays and non-numeric images are refused clearly."""
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(4, 4), dtype="u1")
    group.create_array("mask", shape=(4, 4), dtype="u1")
    with pytest.raises(DataError, match=r"holds 2 arrays \(mask, raw\); point to one"):
        open_image(tmp_path / "g.zarr", "YX")
    with open_image(tmp_path / "g.zarr" / "raw", "YX") as src:
        assert src.data.shape == (1, 1, 1, 4, 4)
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match="expected real numbers"):
        open_image(tmp_path / "s.npy", "YX")


def test_bad_label_values_are_not_called_corrupt(tmp_path: Path) -> None:
    """Training reports negative labels in the reader's words, not as a corrupt file."""
    from convpaint.training import _annotated_planes

    image = _stack_with_negative_label(tmp_path, plane=1, value=-1)
    with open_image(image) as src:
        lazy = open_labels(tmp_path / "l.tif", image=src)
        with pytest.raises(DataError) as err:
            _annotated_planes(lazy, tmp_path / "l.tif")
    assert "contain negative values (min -1)" in str(err.value)
    assert "corrupt" not in str(err.value)
