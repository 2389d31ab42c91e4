"""The N-D engine end to end: stacks and time series, tiles, schedulers, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from convpaint import api
from convpaint.config import ClusterConfig, TilingConfig, parse_config

from .conftest import local_cluster

NUCLEI = "plantseg_ovule_nuclei3d"
FAST = [
    {
        "name": "filters",
        "sigmas": [1.0, 2.5],
        "filters": ["gaussian", "hessian", "gradient"],
    }
]


@pytest.fixture(scope="module")
def stack(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real 24 x 64 x 72 confocal crop (ImageJ ZYX with its voxel size), its ground
    truth, and scribbles on two planes only."""
    d = tmp_path_factory.mktemp("stack")
    vol = tifffile.imread(bench / NUCLEI / "images/1135_mini.tif")[38:62, 10:74, 14:86]
    gt = tifffile.imread(bench / NUCLEI / "derived/1135_mini_gt.tif")[
        38:62, 10:74, 14:86
    ]
    from convpaint.scribbles import generate_scribbles

    scr = np.zeros_like(gt)
    for z, seed in ((5, 0), (17, 1)):
        scr[z] = generate_scribbles(gt[z], fraction=0.03, width=2, seed=seed)
        assert set(np.unique(scr[z])) == {0, 1, 2}
    spacing = (0.284, 0.127, 0.127)
    tifffile.imwrite(
        d / "vol.tif",
        vol,
        imagej=True,
        resolution=(1 / spacing[2], 1 / spacing[1]),
        metadata={"axes": "ZYX", "spacing": spacing[0], "unit": "um"},
    )
    tifffile.imwrite(d / "vol_scr.tif", scr, imagej=True, metadata={"axes": "ZYX"})
    return {"dir": d, "image": d / "vol.tif", "scribbles": d / "vol_scr.tif", "gt": gt}


def _train(
    item: dict, tmp: Path, *, dims: str, features=FAST, normalize="image", **extra
) -> Path:
    raw = {
        "features": {"extractors": features, "dims": dims, "normalize": normalize},
        "classifier": {"n_estimators": 20, "seed": 0},
        "train": {
            "images": [str(item["image"])],
            "annotations": [str(item["scribbles"])],
            "model": str(tmp / f"m_{dims}.cpm"),
            "report": False,
            **extra,
        },
    }
    return api.train(parse_config(raw), overwrite=True).model


def _predict(model: Path, image: Path, out: Path, **kw) -> list[Path]:
    res = api.predict(model, [str(image)], out, on_exists="overwrite", **kw)
    return res[0].outputs


def _miou(pred: np.ndarray, gt: np.ndarray) -> float:
    from convpaint.evaluation import score

    return score(pred, gt, name="x").miou


@pytest.mark.parametrize("dims", ["planes", "views", "3d"])
def test_two_annotated_planes_predict_every_plane(
    stack: dict, tmp_path: Path, dims: str
) -> None:
    """Scribbles on 2 of 24 planes train a model that labels the whole stack well;
    the model records how it featurised and which planes were annotated."""
    model = _train(stack, tmp_path, dims=dims)
    info = api.model_info(model)
    assert info["training"]["files"][0]["annotated_planes"] == 2
    out = _predict(model, stack["image"], tmp_path / "out")
    pred = tifffile.imread(out[0])
    assert pred.shape == stack["gt"].shape
    assert _miou(pred, stack["gt"]) > 0.7
    # every plane got both classes, not only the annotated ones
    assert all(len(np.unique(p)) == 2 for p in pred)
    with tifffile.TiffFile(out[0]) as tf:
        assert tf.series[0].axes == "ZYX"
        assert tf.imagej_metadata["spacing"] == pytest.approx(0.284)


def test_views_tiled_equals_untiled_with_probabilities(
    stack: dict, tmp_path: Path
) -> None:
    """Uneven tiles in Z, Y and X give bit-identical labels and probabilities."""
    model = _train(stack, tmp_path, dims="views")
    whole = _predict(
        model,
        stack["image"],
        tmp_path / "a",
        probabilities=True,
        tiling=TilingConfig(tile={"z": 64, "y": 1024, "x": 1024}),
    )
    tiled = _predict(
        model,
        stack["image"],
        tmp_path / "b",
        probabilities=True,
        tiling=TilingConfig(tile={"z": 5, "y": 23, "x": 37}, threads=2),
    )
    for a, b in zip(whole, tiled, strict=True):
        np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))


def test_time_series_trained_on_two_frames(bench: Path, tmp_path: Path) -> None:
    """A TYX series annotated on 2 frames predicts all frames; frames never mix."""
    from PIL import Image

    from convpaint.scribbles import generate_scribbles

    frames, gts = [], []
    for i in range(4):
        frames.append(
            np.asarray(Image.open(bench / f"isbi2012_em_membranes/images/{i}.png"))[
                :96, :128
            ]
        )
        gts.append(
            tifffile.imread(bench / f"isbi2012_em_membranes/derived/{i}_gt.tif")[
                :96, :128
            ]
        )
    series, gt = np.stack(frames), np.stack(gts)
    scr = np.zeros_like(gt)
    scr[0] = generate_scribbles(gt[0], fraction=0.05, width=2, seed=0)
    scr[2] = generate_scribbles(gt[2], fraction=0.05, width=2, seed=1)
    tifffile.imwrite(tmp_path / "ts.tif", series, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(
        tmp_path / "ts_scr.tif", scr, imagej=True, metadata={"axes": "TYX"}
    )
    item = {"image": tmp_path / "ts.tif", "scribbles": tmp_path / "ts_scr.tif"}
    # plane statistics: each frame is z-scored on its own, so a frame predicted alone
    # must give exactly its labels in the series
    model = _train(item, tmp_path, dims="auto", normalize="plane")
    assert api.model_info(model)["training"]["files"][0]["annotated_planes"] == 2
    out = _predict(model, item["image"], tmp_path / "out")
    pred = tifffile.imread(out[0])
    assert pred.shape == gt.shape
    assert _miou(pred[1], gt[1]) > 0.55 and _miou(pred[3], gt[3]) > 0.55
    # the same frame predicted alone gives the same labels: frames never mix
    tifffile.imwrite(tmp_path / "f3.tif", series[3])
    alone = tifffile.imread(_predict(model, tmp_path / "f3.tif", tmp_path / "o3")[0])
    np.testing.assert_array_equal(alone, pred[3])


def test_model_for_stacks_refuses_2d_images(stack: dict, tmp_path: Path) -> None:
    """A views model needs a Z axis: a 2-D image gets a located message."""
    from convpaint.errors import DataError

    model = _train(stack, tmp_path, dims="views")
    tifffile.imwrite(tmp_path / "plane.tif", tifffile.imread(stack["image"])[3])
    with pytest.raises(DataError, match="has no Z axis"):
        _predict(model, tmp_path / "plane.tif", tmp_path / "o")


def test_distributed_scheduler_gives_identical_bytes(
    stack: dict, tmp_path: Path
) -> None:
    """A LocalCluster of 2 worker processes writes byte-identical zarr chunks."""
    model = _train(stack, tmp_path, dims="views")
    tiles = {"z": 8, "y": 32, "x": 40}
    local = _predict(
        model,
        stack["image"],
        tmp_path / "t",
        fmt="zarr",
        probabilities=True,
        tiling=TilingConfig(tile=tiles),
    )
    with local_cluster() as cluster:
        remote = _predict(
            model,
            stack["image"],
            tmp_path / "d",
            fmt="zarr",
            probabilities=True,
            tiling=TilingConfig(tile=tiles, scheduler=cluster.scheduler_address),
        )
    for a, b in zip(local, remote, strict=True):
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert files_a == files_b and len(files_a) > 4
        for rel in files_a:
            if rel.name.startswith(".z"):
                continue  # metadata may name the scheduler-independent source path
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_slurm_cluster_section_makes_the_job_script() -> None:
    """The cluster section becomes dask-jobqueue's SLURM job script (no SLURM needed)."""
    pytest.importorskip("dask_jobqueue")
    from convpaint.cluster import job_script

    cfg = parse_config(
        {
            "tiling": {"scheduler": "slurm"},
            "cluster": {
                "cores": 8,
                "memory": "32GB",
                "walltime": "02:30:00",
                "queue": "cpu",
                "account": "lab42",
                "jobs": 4,
                "job_extra_directives": ["--constraint=avx2"],
                "job_script_prologue": ["module load python/3.11"],
            },
        }
    )
    script = job_script(cfg.cluster, host="127.0.0.1")
    for phrase in (
        "#SBATCH -p cpu",
        "#SBATCH -A lab42",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=30G",
        "#SBATCH -t 02:30:00",
        "#SBATCH --constraint=avx2",
        "module load python/3.11",
        "export OMP_NUM_THREADS=1",
        "--nthreads 8",
    ):
        assert phrase in script, phrase


def test_unreachable_scheduler_is_a_config_error(stack: dict, tmp_path: Path) -> None:
    """A scheduler address nobody listens on gives one message, and no output."""
    import dask

    from convpaint.errors import ConfigError

    model = _train(stack, tmp_path, dims="planes")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        pytest.raises(ConfigError, match="could not reach the dask scheduler"),
    ):
        _predict(
            model,
            stack["image"],
            tmp_path / "o",
            tiling=TilingConfig(scheduler="tcp://127.0.0.1:9"),
        )
    assert not any((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_ome_zarr_output_opens_lazily_as_labels(stack: dict, tmp_path: Path) -> None:
    """predict --format ome-zarr writes NGFF labels with the input's voxel size."""
    import dask.array as da
    import zarr

    model = _train(stack, tmp_path, dims="planes")
    out = _predict(model, stack["image"], tmp_path / "o", fmt="ome-zarr", levels=2)[0]
    assert out.name.endswith(".ome.zarr")
    group = zarr.open_group(str(out), mode="r")
    ms = group.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([0.284, 0.127, 0.127])
    assert "image-label" in group.attrs
    level0 = da.from_zarr(str(out / "0"))
    assert level0.shape == stack["gt"].shape and level0.chunks  # lazy
    assert da.from_zarr(str(out / "1")).shape == (24, 32, 36)


def test_failed_prediction_leaves_nothing(
    stack: dict, tmp_path: Path, monkeypatch
) -> None:
    """An error in the middle of the tile graph leaves no file under the final name."""
    from convpaint import engine

    model = _train(stack, tmp_path, dims="planes")
    calls = {"n": 0}
    real = engine._features

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk vanished")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_features", flaky)
    for fmt in ("tif", "zarr", "ome-zarr"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="disk vanished"):
            _predict(
                model,
                stack["image"],
                tmp_path / fmt,
                fmt=fmt,
                tiling=TilingConfig(tile={"y": 32, "x": 32}),
            )
        left = list((tmp_path / fmt).iterdir()) if (tmp_path / fmt).exists() else []
        assert left == [], left


def test_tile_shape_from_memory_budget() -> None:
    """A memory budget picks the largest tiles that fit; too small a budget is refused."""
    from convpaint.engine import _tile_bytes, plan_tile_shape
    from convpaint.errors import ConfigError
    from convpaint.features import FeaturePipeline

    specs = parse_config({"features": [{"name": "filters"}]}).features.extractors
    pipe = FeaturePipeline(specs, 1, dims="views", spacing=(2.0, 1.0, 1.0))
    small = plan_tile_shape(TilingConfig(memory="400MB"), pipe, (500, 4000, 4000), 2)
    large = plan_tile_shape(TilingConfig(memory="4GB"), pipe, (500, 4000, 4000), 2)
    assert 2 * _tile_bytes(pipe, small) <= 400e6
    assert np.prod(large) > np.prod(small)
    fixed = plan_tile_shape(
        TilingConfig(memory="4GB", tile={"z": 3}), pipe, (500, 4000, 4000), 2
    )
    assert fixed[0] == 3
    with pytest.raises(ConfigError, match=r"tiling\.memory"):
        plan_tile_shape(TilingConfig(memory="1MB"), pipe, (500, 4000, 4000), 2)
    planes = FeaturePipeline(specs, 1)
    assert plan_tile_shape(TilingConfig(), planes, (30, 100, 90), 2) == (1, 100, 90)


def test_statistics_sample_large_stacks(stack: dict) -> None:
    """Above the budget, statistics come from an even sample of blocks, close to exact;
    per-plane statistics have one value per plane."""
    from convpaint.io.readers import open_image
    from convpaint.normalization import image_statistics

    with open_image(stack["image"]) as src:
        exact = image_statistics(src, joint=False)
        sampled = image_statistics(src, joint=False, budget=64 * 72 * 6)
        per_plane = image_statistics(src, joint=False, per_plane=True)
        vol = tifffile.imread(stack["image"]).astype(np.float64)
    assert not exact.sampled and sampled.sampled
    np.testing.assert_allclose(exact.mean, [vol.mean()], rtol=1e-12)
    np.testing.assert_allclose(exact.std, [vol.std()], rtol=1e-9)
    np.testing.assert_allclose(sampled.mean, exact.mean, rtol=0.25)
    assert per_plane.mean.shape == (1, 1, 24)
    np.testing.assert_allclose(per_plane.mean[0, 0], vol.mean(axis=(1, 2)), rtol=1e-12)


def test_plane_normalisation_trains_and_predicts(stack: dict, tmp_path: Path) -> None:
    """normalize: plane z-scores each plane with its own statistics, end to end."""
    raw = {
        "features": {"extractors": FAST, "normalize": "plane"},
        "classifier": {"n_estimators": 20, "seed": 0},
        "train": {
            "images": [str(stack["image"])],
            "annotations": [str(stack["scribbles"])],
            "model": str(tmp_path / "m.cpm"),
            "report": False,
        },
    }
    model = api.train(parse_config(raw)).model
    assert api.model_info(model)["normalization"]["mode"] == "plane"
    pred = tifffile.imread(_predict(model, stack["image"], tmp_path / "o")[0])
    assert _miou(pred, stack["gt"]) > 0.7


def test_cluster_config_defaults_are_sane() -> None:
    """The cluster section validates and documents every field."""
    cfg = ClusterConfig()
    assert cfg.cores >= 1 and cfg.jobs >= 1
    for name, field in ClusterConfig.model_fields.items():
        assert field.description, name


def test_scheduler_option_is_checked(stack: dict, tmp_path: Path) -> None:
    """--scheduler takes threads, a tcp:// address or slurm (config form only)."""
    from typer.testing import CliRunner

    from convpaint.cli import app

    model = _train(stack, tmp_path, dims="planes")
    base = ["predict", "--model", str(model), "--output", str(tmp_path / "o")]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--scheduler", "bogus", str(stack["image"])])
    assert res.exit_code == 2 and "unknown scheduler 'bogus'" in " ".join(
        res.output.split()
    )
    res = runner.invoke(app, [*base, "--scheduler", "slurm", str(stack["image"])])
    assert res.exit_code == 2 and "cluster section" in " ".join(res.output.split())
    res = runner.invoke(app, [*base, "--scheduler", "threads", str(stack["image"])])
    assert res.exit_code == 0, res.output


def test_stack_default_is_the_3d_filter_bank(stack: dict, tmp_path: Path) -> None:
    """extractors: auto and dims: auto on a Z stack give the measured default: the 3-D
    filter bank without its smallest sigma; other extractors default to views."""
    from convpaint.config import STACK_SIGMAS

    raw = {
        "classifier": {"n_estimators": 10, "seed": 0},
        "train": {
            "images": [str(stack["image"])],
            "annotations": [str(stack["scribbles"])],
            "model": str(tmp_path / "m.cpm"),
            "report": False,
        },
    }
    info = api.model_info(api.train(parse_config(raw)).model)
    assert info["geometry"]["dims"] == "3d"
    assert info["extractors"][0]["sigmas"] == list(STACK_SIGMAS)
    features = parse_config({"features": [{"name": "vgg16"}]}).features
    assert features.resolved_dims(True) == "views"
    assert features.resolved_dims(False) == "planes"


def test_default_tree_count_follows_the_data(stack: dict, tmp_path: Path) -> None:
    """n_estimators left out: 100 trees on a Z stack, 50 on a 2-D image (its first
    plane); a number in the config is kept. The model's config says which."""
    from convpaint.config import PLANE_TREES, STACK_TREES
    from convpaint.model_io import load_model

    plane = tmp_path / "plane.tif"
    plane_scr = tmp_path / "plane_scr.tif"
    image, scribbles = (
        tifffile.imread(stack["image"]),
        tifffile.imread(stack["scribbles"]),
    )
    z = int(np.argmax((scribbles > 0).sum(axis=(1, 2))))
    tifffile.imwrite(plane, image[z])
    tifffile.imwrite(plane_scr, scribbles[z])

    def trees(img: Path, ann: Path, classifier: dict) -> tuple[int, object]:
        raw = {
            "features": [{"name": "filters", "sigmas": [1.0]}],
            "classifier": {"seed": 0, **classifier},
            "train": {
                "images": [str(img)],
                "annotations": [str(ann)],
                "model": str(tmp_path / f"{img.stem}.cpm"),
                "report": False,
            },
        }
        model = load_model(api.train(parse_config(raw), overwrite=True).model)
        return model.forest.n_trees, model.meta["config"]["classifier"]["n_estimators"]

    assert trees(stack["image"], stack["scribbles"], {}) == (STACK_TREES, STACK_TREES)
    assert trees(plane, plane_scr, {}) == (PLANE_TREES, PLANE_TREES)
    assert trees(plane, plane_scr, {"n_estimators": 7}) == (7, 7)


def test_block_features_return_freed_memory(
    stack: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3-D feature predictions fix glibc's mmap threshold; plane-by-plane ones do not."""
    from convpaint import engine

    calls: list[int] = []
    monkeypatch.setattr(engine, "return_freed_memory", lambda: calls.append(1))
    for dims in ("3d", "planes"):
        raw = {
            "features": {
                "extractors": [{"name": "filters", "sigmas": [1.0]}],
                "dims": dims,
            },
            "classifier": {"n_estimators": 5, "seed": 0},
            "train": {
                "images": [str(stack["image"])],
                "annotations": [str(stack["scribbles"])],
                "model": str(tmp_path / f"{dims}.cpm"),
                "report": False,
            },
        }
        model = api.train(parse_config(raw)).model
        calls.clear()
        api.predict(
            model, [str(stack["image"])], tmp_path / dims, on_exists="overwrite"
        )
        assert calls == ([1] if dims == "3d" else [])
