"""N-D result writing: every axes order in every format, OME-Zarr, BigTIFF, clusters."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from convpaint.io import (
    OUTPUT_FORMATS,
    OUTPUT_SUFFIXES,
    OutputPaths,
    ResultWriter,
    open_image,
    output_axes,
    probability_axes,
    tiff_out,
)
from convpaint.io.tiff_out import write_tiff

from .conftest import local_cluster
from .test_io_nd import ALL_AXES, canonical, file_data

CLASSES = [1, 2, 3]
CHUNKS = (1, 2, 16, 16)


def plan(folder: Path, fmt: str, *, probabilities: bool = True) -> OutputPaths:
    """Output paths as plan_outputs makes them, for one input named img."""
    suffix = OUTPUT_SUFFIXES.get(fmt, ".out")
    return OutputPaths(
        folder / f"img_labels{suffix}",
        folder / f"img_probabilities{suffix}" if probabilities else None,
    )


def write_input(folder: Path, axes: str) -> Path:
    """An OME-TIFF holding file_data(axes) with pixel sizes 0.5/0.2/0.1 µm."""
    path = folder / "img.ome.tif"
    rgb = axes.endswith("C")
    tifffile.imwrite(
        path,
        file_data(axes),
        ome=True,
        photometric="rgb" if rgb else "minisblack",
        metadata={
            "axes": axes[:-1] + "S" if rgb else axes,
            "PhysicalSizeZ": 0.5,
            "PhysicalSizeY": 0.2,
            "PhysicalSizeX": 0.1,
        },
    )
    return path


def predictions(image: da.Array) -> tuple[da.Array, da.Array]:
    """Fake labels (1..3) and one-hot probabilities from a (T, C, Z, Y, X) image."""
    labels = (image[:, 0].astype(np.uint8) % 3 + 1).rechunk(CHUNKS)
    probs = da.stack([labels == c for c in CLASSES], axis=1).astype(np.float32)
    return labels, probs.rechunk((CHUNKS[0], len(CLASSES), *CHUNKS[1:]))


def store(writer: ResultWriter, labels: da.Array, probs: da.Array | None) -> None:
    """Store like the engine: chunk-aligned, no lock."""
    sources, targets = [labels], [writer.labels_target]
    if probs is not None and writer.probabilities_target is not None:
        sources.append(probs)
        targets.append(writer.probabilities_target)
    da.store(sources, targets, lock=False)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("axes", ALL_AXES)
def test_every_axes_order_round_trips(tmp_path: Path, axes: str, fmt: str) -> None:
    """File -> canonical -> writer -> file: values, axes and pixel sizes survive."""
    with open_image(write_input(tmp_path, axes)) as src:
        assert src.spacing == pytest.approx((0.5, 0.2, 0.1))
        out_axes = output_axes(src.axes)
        paths = plan(tmp_path / "out", fmt)
        writer = ResultWriter(
            paths,
            shape_tzyx=src.shape_tzyx,
            out_axes=out_axes,
            classes=CLASSES,
            fmt=fmt,
            chunks_tzyx=CHUNKS,
            spacing=src.spacing,
            unit=src.unit,
            attrs={"convpaint_model": "m.cpm", "source": str(src.path)},
        )
        labels, probs = predictions(src.data)
        store(writer, labels, probs)
        assert not paths.labels.exists()  # invisible until complete
        assert writer.finish() == [paths.labels, paths.probabilities]
    expected = (canonical(axes)[:, 0] % 3 + 1).astype(np.uint8)
    with open_image(paths.labels) as out:
        assert out.axes == out_axes and out.file_axes == out_axes
        assert out.data.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(out.data[:, 0]), expected)
        assert out.unit == "micrometer"
        z = 0.5 if "Z" in out_axes else 1.0  # a 2-D output has no Z spacing
        assert out.spacing == pytest.approx((z, 0.2, 0.1))
    with open_image(paths.probabilities) as out:  # type: ignore[arg-type]
        assert out.axes == probability_axes(out_axes, fmt)
        one_hot = np.stack([expected == c for c in CLASSES], axis=1)
        np.testing.assert_array_equal(np.asarray(out.data), one_hot.astype(np.float32))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [paths.labels.name, paths.probabilities.name]  # type: ignore[union-attr]
    )


def test_real_volume_round_trips(bench: Path, tmp_path: Path) -> None:
    """A real ZYX volume's labels go to OME-Zarr and TIFF with its voxel size."""
    image = bench / "plantseg_ovule_cells3d/images/sample_ovule.tif"
    gt = tifffile.imread(bench / "plantseg_ovule_cells3d/derived/sample_ovule_gt.tif")
    for fmt in ("ome-zarr", "tif"):
        with open_image(image) as src:
            paths = plan(tmp_path / fmt, fmt, probabilities=False)
            writer = ResultWriter(
                paths,
                shape_tzyx=src.shape_tzyx,
                out_axes=output_axes(src.axes),
                classes=[1, 2],
                fmt=fmt,
                chunks_tzyx=(1, 8, 64, 64),
                spacing=src.spacing,
                unit=src.unit,
                levels=2 if fmt == "ome-zarr" else 1,
            )
            da.store(
                da.from_array(gt[None], chunks=(1, 8, 64, 64)), writer.labels_target
            )
            writer.finish()
            spacing = src.spacing
        with open_image(paths.labels) as out:
            assert out.axes == "ZYX" and out.spacing == pytest.approx(spacing)
            np.testing.assert_array_equal(np.asarray(out.data[0, 0]), gt)


# --- metadata as written ---------------------------------------------------------------


def _writer(
    tmp_path: Path, fmt: str, *, probabilities: bool = True, **kwargs: object
) -> ResultWriter:
    options: dict = {
        "shape_tzyx": (2, 3, 20, 24),
        "out_axes": "TZYX",
        "classes": [3, 6],
        "fmt": fmt,
        "chunks_tzyx": (1, 2, 10, 12),
        "spacing": (0.5, 0.2, 0.1),
        "unit": "micrometer",
        "attrs": {"convpaint_model": "m.cpm", "source": "img.tif"},
    }
    options.update(kwargs)
    paths = plan(tmp_path, fmt, probabilities=probabilities)
    return ResultWriter(paths, **options)  # type: ignore[arg-type]


def _fill(writer: ResultWriter, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t, z, y, x = writer.shape_tzyx
    labels = rng.choice(writer.classes, size=(t, z, y, x)).astype(writer.dtype)
    probs = rng.random((t, len(writer.classes), z, y, x)).astype(np.float32)
    c = writer.chunks_tzyx
    store(
        writer,
        da.from_array(labels, chunks=c),
        da.from_array(probs, chunks=(c[0], len(writer.classes), *c[1:])),
    )
    return labels, probs


def test_imagej_tiff_metadata(tmp_path: Path) -> None:
    """TIFF outputs are zlib ImageJ hyperstacks with spacing, unit and provenance."""
    writer = _writer(tmp_path, "tif")
    labels, probs = _fill(writer)
    writer.finish()
    with tifffile.TiffFile(tmp_path / "img_labels.tif") as tf:
        meta = tf.imagej_metadata
        assert tf.is_imagej and not tf.is_bigtiff and tf.series[0].axes == "TZYX"
        assert meta["spacing"] == 0.5 and meta["unit"] == "micron"
        assert "convpaint_model: m.cpm" in meta["Info"]
        assert tf.pages[0].compression == 8
        assert tf.pages[0].tags["XResolution"].value == (10, 1)
        np.testing.assert_array_equal(tf.asarray(), labels)
    with tifffile.TiffFile(tmp_path / "img_probabilities.tif") as tf:
        assert tf.series[0].axes == "TZCYX"  # ImageJ order
        np.testing.assert_array_equal(tf.asarray(), probs.transpose(0, 2, 1, 3, 4))


def test_zarr_attributes(tmp_path: Path) -> None:
    """Plain zarr outputs carry dimensions, axes, classes, spacing and provenance."""
    writer = _writer(tmp_path, "zarr")
    labels, probs = _fill(writer)
    writer.finish()
    arr = zarr.open_array(str(tmp_path / "img_labels.zarr"), mode="r")
    assert arr.metadata.zarr_format == 2 and arr.chunks == (1, 2, 10, 12)
    assert dict(arr.attrs) == {
        "_ARRAY_DIMENSIONS": ["t", "z", "y", "x"],
        "axes": "TZYX",
        "classes": [3, 6],
        "spacing": {"z": 0.5, "y": 0.2, "x": 0.1},
        "unit": "micrometer",
        "convpaint_model": "m.cpm",
        "source": "img.tif",
    }
    np.testing.assert_array_equal(arr[:], labels)
    parr = zarr.open_array(str(tmp_path / "img_probabilities.zarr"), mode="r")
    assert parr.attrs["axes"] == "TCZYX" and parr.chunks == (1, 2, 2, 10, 12)
    np.testing.assert_array_equal(parr[:], probs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ome-zarr-py imports
def test_ome_zarr_is_valid_ngff_with_levels(tmp_path: Path) -> None:
    """OME-Zarr outputs pass NGFF 0.4 validation, open as labels, and have levels."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader
    from ome_zarr_models.v04 import Image
    from ome_zarr_models.v04.image_label import ImageLabel

    source = tmp_path / "img.ome.zarr"
    zarr.open_group(str(source), mode="w", zarr_format=2)  # the input, a zarr image
    writer = _writer(
        tmp_path, "ome-zarr", levels=3, attrs={"source": str(source), "k": 1}
    )
    labels, probs = _fill(writer)
    writer.finish()
    lab_path = tmp_path / "img_labels.ome.zarr"
    prob_path = tmp_path / "img_probabilities.ome.zarr"
    meta = ImageLabel.from_zarr(zarr.open_group(str(lab_path), mode="r"))
    label_meta = meta.attributes.image_label
    assert [c.label_value for c in label_meta.colors] == [3, 6]
    assert label_meta.source.image == "../img.ome.zarr"
    Image.from_zarr(zarr.open_group(str(prob_path), mode="r"))
    nodes = list(Reader(parse_url(str(lab_path)))())  # the source image comes first
    node = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs))
    assert any(isinstance(s, Multiscales) for s in node.specs)
    assert [a["name"] for a in node.metadata["axes"]] == ["t", "z", "y", "x"]
    assert node.metadata["axes"][1] == {
        "name": "z",
        "type": "space",
        "unit": "micrometer",
    }
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales == [[1.0, 0.5, 0.2, 0.1], [1.0, 0.5, 0.4, 0.2], [1.0, 0.5, 0.8, 0.4]]
    # levels: stride 2 for labels, 2 x 2 mean for probabilities; lazily readable
    levels = [da.from_zarr(str(lab_path / str(i))) for i in range(3)]
    assert [lv.shape for lv in levels] == [(2, 3, 20, 24), (2, 3, 10, 12), (2, 3, 5, 6)]
    np.testing.assert_array_equal(levels[0].compute(), labels)
    np.testing.assert_array_equal(levels[2].compute(), labels[..., ::4, ::4])
    p1 = da.from_zarr(str(prob_path / "1")).compute()
    ref = probs.reshape(2, 2, 3, 10, 2, 12, 2).mean(axis=(4, 6))
    np.testing.assert_allclose(p1, ref, rtol=1e-6)


def test_levels_are_limited_by_the_image_size(tmp_path: Path) -> None:
    """Asking for more levels than halvings of Y/X fit gives as many as fit."""
    writer = _writer(tmp_path, "ome-zarr", levels=10, spacing=None, unit=None)
    _fill(writer)
    writer.finish()
    group = zarr.open_group(str(tmp_path / "img_labels.ome.zarr"), mode="r")
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert len(datasets) == 5  # 20x24, 10x12, 5x6, 2x3, 1x1
    assert group["4"].shape == (2, 3, 1, 1)


# --- TIFF: BigTIFF, tiles, memory ----------------------------------------------------------


class SpyArray:
    """A zarr-like source that records how many elements each read returns."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.reads: list[int] = []

    def __getitem__(self, key: object) -> np.ndarray:
        out = self.data[key]  # type: ignore[index]
        self.reads.append(out.size)
        return out


def test_bigtiff_path(tmp_path: Path) -> None:
    """Above the threshold the TIFF is an OME BigTIFF carrying axes and pixel sizes."""
    data = np.random.default_rng(0).random((2, 3, 4, 20, 24)).astype(np.float32)
    spy = SpyArray(data)
    flavour = write_tiff(
        tmp_path / "b.tif",
        spy,
        source_axes="TCZYX",
        out_axes="TZCYX",
        spacing=(0.5, 0.2, 0.1),
        unit="micrometer",
        bigtiff_threshold=1000,
    )
    assert flavour == "ome-bigtiff" and max(spy.reads) == 20 * 24  # one plane a read
    with tifffile.TiffFile(tmp_path / "b.tif") as tf:
        assert tf.is_bigtiff and tf.is_ome and tf.series[0].axes == "TZCYX"
        np.testing.assert_array_equal(tf.asarray(), data.transpose(0, 2, 1, 3, 4))
    with open_image(tmp_path / "b.tif") as src:
        assert src.axes == "TZCYX" and src.spacing == pytest.approx((0.5, 0.2, 0.1))
        assert src.unit == "micrometer"


def test_bigtiff_through_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ResultWriter switches to BigTIFF when the stack exceeds the threshold."""
    monkeypatch.setattr(tiff_out, "BIGTIFF_THRESHOLD", 100)
    writer = _writer(tmp_path, "tif")
    labels, _ = _fill(writer)
    writer.finish()
    with tifffile.TiffFile(tmp_path / "img_labels.tif") as tf:
        assert tf.is_bigtiff and tf.is_ome and tf.series[0].axes == "TZYX"
        np.testing.assert_array_equal(tf.asarray(), labels)


def test_large_planes_are_tiled_from_strips(tmp_path: Path) -> None:
    """Planes above the tile threshold are written as tiles, reading one strip at a time."""
    data = np.random.default_rng(1).integers(0, 70000, (3, 50, 70)).astype(np.uint32)
    spy = SpyArray(data)
    flavour = write_tiff(
        tmp_path / "t.tif",
        spy,
        source_axes="ZYX",
        out_axes="ZYX",
        tile_threshold=1000,
        tile=(16, 32),
    )
    assert flavour == "ome"  # uint32 is not an ImageJ type; small enough for TIFF
    assert max(spy.reads) == 16 * 70  # one strip of tile rows at a time
    with tifffile.TiffFile(tmp_path / "t.tif") as tf:
        assert tf.pages[0].is_tiled and tf.pages[0].tilewidth == 32
        assert not tf.is_bigtiff and tf.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tf.asarray(), data)


def test_tiff_scratch_reads_one_plane_per_chunk(tmp_path: Path) -> None:
    """The TIFF scratch array has one plane per chunk (aligned to the engine's blocks)."""
    writer = _writer(tmp_path, "tif")
    assert writer.labels_target.chunks == (1, 1, 10, 12)
    assert writer.probabilities_target.chunks == (1, 1, 1, 10, 12)  # type: ignore[union-attr]
    writer.abort()


# --- targets, schedulers, failures ------------------------------------------------------


def test_targets_map_the_engine_layout_and_pickle(tmp_path: Path) -> None:
    """A 2-D output takes (T, Z, Y, X) regions; targets pickle and check regions."""
    writer = ResultWriter(
        plan(tmp_path, "zarr"),
        shape_tzyx=(1, 1, 20, 24),
        out_axes="YX",
        classes=[1, 2],
        fmt="zarr",
        chunks_tzyx=(1, 1, 10, 12),
    )
    target = pickle.loads(pickle.dumps(writer.labels_target))
    assert target.shape == (1, 1, 20, 24) and target.chunks == (1, 1, 10, 12)
    target[0:1, 0:1, 0:10, 12:24] = np.full((1, 1, 10, 12), 2, np.uint8)
    target[0, 0, 10:20, 0:12] = np.ones((10, 12), np.uint8)
    assert target[0:1, 0:1, 0:10, 12:24].shape == (1, 1, 10, 12)
    with pytest.raises(IndexError):
        target[0:1, 1:2, 0:10, 0:12] = np.ones((1, 1, 10, 12), np.uint8)
    writer.finish()
    arr = zarr.open_array(str(tmp_path / "img_labels.zarr"), mode="r")
    assert arr.shape == (20, 24) and arr[0, 12] == 2 and arr[10, 0] == 1
    assert writer.probabilities_target.shape == (1, 2, 1, 20, 24)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "png"}, "fmt must be one of"),
        ({"out_axes": "ZTYX"}, "subset of TZYX in that order"),
        ({"out_axes": "ZYX"}, "leaving out only axes of size 1"),
        ({"out_axes": "TZCYX"}, "no C"),
        ({"levels": 2}, "only for fmt='ome-zarr'"),
        ({"chunks_tzyx": (1, 0, 8, 8)}, "4 positive sizes"),
    ],
)
def test_writer_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    """Programming errors in the writer's arguments fail at once, leaving nothing."""
    with pytest.raises(ValueError, match=message):
        _writer(tmp_path, kwargs.pop("fmt", "tif"), **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def cluster_client():  # type: ignore[no-untyped-def]
    """A dask.distributed client with 2 worker processes (started once)."""
    with local_cluster() as cluster:
        from distributed import Client

        with Client(cluster) as client:
            yield client


def test_distributed_workers_write_the_same_outputs(
    tmp_path: Path, cluster_client
) -> None:  # type: ignore[no-untyped-def]
    """Worker processes store into the targets; outputs equal the threaded ones."""
    import convpaint

    files = cluster_client.run(lambda: __import__("convpaint").__file__)
    assert set(files.values()) == {convpaint.__file__}  # workers run this code
    image = write_input(tmp_path, "TZYX")
    results: dict[str, dict[str, np.ndarray]] = {}
    for scheduler in ("threads", "distributed"):
        for fmt in OUTPUT_FORMATS:
            paths = plan(tmp_path / scheduler / fmt, fmt)
            with open_image(image) as src:
                writer = ResultWriter(
                    paths,
                    shape_tzyx=src.shape_tzyx,
                    out_axes="TZYX",
                    classes=CLASSES,
                    fmt=fmt,
                    chunks_tzyx=(1, 4, 10, 24),  # 4 blocks: few tasks, still parallel
                    levels=2 if fmt == "ome-zarr" else 1,
                )
                labels, probs = predictions(src.data)  # reads the TIFF on workers too
                labels = labels.rechunk((1, 4, 10, 24))
                probs = probs.rechunk((1, 3, 4, 10, 24))
                if scheduler == "threads":
                    with dask.config.set(scheduler="threads"):
                        store(writer, labels, probs)
                        writer.finish()
                else:
                    store(writer, labels, probs)  # the client is the default
                    writer.finish()
            with open_image(paths.labels) as a, open_image(paths.probabilities) as b:  # type: ignore[arg-type]
                results.setdefault(fmt, {})[scheduler] = np.concatenate(
                    [np.asarray(a.data).ravel(), np.asarray(b.data).ravel()]
                )
    for fmt in OUTPUT_FORMATS:
        np.testing.assert_array_equal(
            results[fmt]["threads"], results[fmt]["distributed"]
        )
    # zarr chunks are byte-identical, level 1 included
    for rel in ("zarr/img_labels.zarr", "ome-zarr/img_probabilities.ome.zarr/1"):
        a, b = tmp_path / "threads" / rel, tmp_path / "distributed" / rel
        chunks = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert chunks and chunks == sorted(
            p.relative_to(b) for p in b.rglob("*") if p.is_file()
        )
        for chunk in chunks:
            assert (a / chunk).read_bytes() == (b / chunk).read_bytes()


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
@pytest.mark.parametrize("failure", ["abort", "finish", "context"])
def test_failures_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, failure: str
) -> None:
    """Abort, a failing finish or an exception in `with` leave only the old output."""
    paths = plan(tmp_path, fmt)
    if fmt == "tif":
        paths.labels.write_bytes(b"old result")
    else:
        paths.labels.mkdir()
        (paths.labels / "old").write_bytes(b"old result")
        # an earlier convpaint output (only those may ever be replaced)
        (paths.labels / ".zattrs").write_text('{"convpaint_model": "m.cpm"}')
    if failure == "abort":
        writer = _writer(tmp_path, fmt, levels=2 if fmt == "ome-zarr" else 1)
        _fill(writer)
        writer.abort()
    elif failure == "finish":
        import convpaint.io.writers as writers

        def boom(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(writers, "write_tiff", boom)
        monkeypatch.setattr(writers, "build_levels", boom)
        writer = _writer(tmp_path, fmt, levels=2 if fmt == "ome-zarr" else 1)
        _fill(writer)
        if fmt == "zarr":  # nothing can fail in finish: fail the store instead
            monkeypatch.setattr(writer, "_finishers", [lambda: boom()])
        with pytest.raises(OSError, match="disk full"):
            writer.finish()
    else:
        with pytest.raises(RuntimeError), _writer(tmp_path, fmt) as writer:
            _fill(writer)
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths.labels.name]
    old = paths.labels if fmt == "tif" else paths.labels / "old"
    assert old.read_bytes() == b"old result"


# ---------------------------------------------------------------- streamed TIFF labels
@pytest.mark.parametrize(
    ("shape", "out_axes", "chunks"),
    [
        ((1, 1, 300, 200), "YX", (1, 1, 100, 64)),  # bands of 100 rows: strips of 64
        ((1, 1, 130, 90), "YX", (1, 1, 130, 90)),  # one block
        ((2, 3, 70, 40), "TZYX", (1, 2, 33, 17)),  # blocks of 2 planes, ragged edges
        ((1, 4, 64, 64), "ZYX", (1, 1, 64, 32)),
    ],
)
def test_streamed_tiff_equals_the_scratch_path(
    tmp_path: Path, shape: tuple, out_axes: str, chunks: tuple
) -> None:
    """Labels streamed into the TIFF as blocks arrive, in any order, give the same
    file contents and metadata as the write through a scratch array."""
    rng = np.random.default_rng(0)
    labels = rng.choice([3, 6], size=shape).astype(np.uint8)
    files = {}
    for stream in (False, True):
        folder = tmp_path / str(stream)
        writer = _writer(
            folder,
            "tif",
            shape_tzyx=shape,
            out_axes=out_axes,
            chunks_tzyx=chunks,
            stream=stream,
        )
        if stream:
            assert isinstance(writer.labels_target, tiff_out.TiffStream)
        grid = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
        regions = [
            tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(index, chunks, shape, strict=True)
            )
            for index in np.ndindex(*grid)
        ]
        for region in reversed(regions):  # the last rows first
            writer.labels_target[region] = labels[region]
        if writer.probabilities_target is not None:
            writer.probabilities_target[...] = np.zeros(
                (shape[0], 2, *shape[1:]), np.float32
            )
        writer.finish()
        files[stream] = folder / "img_labels.tif"
    with tifffile.TiffFile(files[False]) as a, tifffile.TiffFile(files[True]) as b:
        assert b.is_imagej and b.series[0].axes == out_axes
        assert a.imagej_metadata == b.imagej_metadata
        assert b.pages[0].compression == 8 and b.pages[0].rowsperstrip == 64
        np.testing.assert_array_equal(b.asarray(), a.asarray())
        np.testing.assert_array_equal(b.asarray(), labels.reshape(b.series[0].shape))


def test_streamed_tiff_abort_and_missing_blocks_leave_nothing(tmp_path: Path) -> None:
    """An aborted stream, or one finished with blocks missing, leaves no file and
    stops its writer thread."""
    import threading

    writer = _writer(tmp_path / "a", "tif", probabilities=False, stream=True)
    writer.labels_target[0:1, 0:2, 0:10, 0:12] = np.ones((1, 2, 10, 12), np.uint8)
    writer.abort()
    assert list((tmp_path / "a").iterdir()) == []
    writer = _writer(tmp_path / "b", "tif", stream=True)
    writer.labels_target[0:1, 0:2, 0:10, 0:12] = np.ones((1, 2, 10, 12), np.uint8)
    with pytest.raises(RuntimeError, match="never arrived"):
        writer.finish()
    assert list((tmp_path / "b").iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name == "convpaint-tiff"]


def test_streamed_tiff_reports_a_failing_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error in the stream reaches the tasks still storing blocks and finish."""
    import zlib

    def full(*args: object) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zlib, "compress", full)
    writer = _writer(tmp_path, "tif", probabilities=False, stream=True)
    labels = np.ones((2, 3, 20, 24), np.uint8)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(100):  # the writer fails on the first complete band
            writer.labels_target[0:1, 0:2, 0:10, 0:24] = labels[0:1, 0:2, 0:10]
            writer.labels_target[0:1, 0:2, 10:20, 0:24] = labels[0:1, 0:2, 10:20]
            time.sleep(0.01)
    writer.abort()
    assert list(tmp_path.iterdir()) == []
