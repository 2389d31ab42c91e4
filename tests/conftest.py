"""Shared fixtures: real benchmark data, the sample data, small configs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
BENCH = Path(
    os.environ.get("CONVPAINT_BENCHDATA", ROOT.parent / "shared" / "benchdata")
)
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"


@pytest.fixture(scope="session")
def bench() -> Path:
    """The shared benchmark data folder (skips when absent)."""
    if not BENCH.is_dir():
        pytest.skip(f"benchmark data not found at {BENCH}")
    return BENCH


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The shared folder with the full ImageNet weights (skips when absent)."""
    if not (SHARED_WEIGHTS / "vgg16_features_imagenet1k_v1.pth").is_file():
        pytest.skip("shared weights not found")
    return SHARED_WEIGHTS


@pytest.fixture()
def em_crop(bench: Path, tmp_path: Path) -> dict[str, Path]:
    """A 160x192 crop of a real EM image with its scribbles, as TIFF files."""
    from PIL import Image

    img = np.asarray(Image.open(bench / "isbi2012_em_membranes/images/0.png"))[
        :160, :192
    ]
    scr = tifffile.imread(bench / "isbi2012_em_membranes/derived/0_scribbles.tif")[
        :160, :192
    ]
    assert set(np.unique(scr)) >= {1, 2}
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    tifffile.imwrite(tmp_path / "images/em.tif", img)
    tifffile.imwrite(tmp_path / "annotations/em_scribbles.tif", scr)
    return {
        "dir": tmp_path,
        "image": tmp_path / "images/em.tif",
        "scribbles": tmp_path / "annotations/em_scribbles.tif",
    }


def feature_pipeline(
    specs: list[dict], n_channels: int = 1, *, dims: str = "planes", spacing=None
) -> object:
    """A FeaturePipeline built from extractor specs as written in a config."""
    from convpaint.config import parse_config
    from convpaint.features import FeaturePipeline

    return FeaturePipeline(
        parse_config({"features": specs}).features.extractors,
        n_channels,
        dims=dims,
        spacing=spacing,
    )


def _as_stack(image: np.ndarray) -> np.ndarray:
    """(C, Y, X) -> (C, 1, Y, X); (C, Z, Y, X) unchanged."""
    return image[:, None] if image.ndim == 3 else image


def tiled_features(image: np.ndarray, pipe: object, tile: int | tuple) -> np.ndarray:
    """Features of a (C, Y, X) or (C, Z, Y, X) image assembled tile by tile, as
    prediction does: (Y, X, F) or (Z, Y, X, F)."""
    from convpaint.tiling import iter_tiles, plan_block, read_block

    stack = _as_stack(image)
    spatial = stack.shape[1:]
    edges = (1, tile, tile) if isinstance(tile, int) else tuple(tile)
    if len(edges) == 2:
        edges = (1, *edges)
    out = np.zeros((*spatial, pipe.n_features), np.float32)  # type: ignore[attr-defined]
    for t in iter_tiles(spatial, edges):
        block = plan_block(t, halo=pipe.halo, alignment=pipe.alignment)  # type: ignore[attr-defined]
        feats = pipe.compute(read_block(stack, block), block.trim)  # type: ignore[attr-defined]
        out[block.tile_slices] = feats.reshape(*block.tile_shape, -1)
    return out[0] if image.ndim == 3 else out


def assert_halo_suffices(pipe: object, image: np.ndarray, tile: tuple) -> None:
    """A tile computed from its extended block equals the same voxels of a whole-image
    block, and voxels outside the extended block do not matter at all.

    ``tile`` is ``(y0, y1, x0, x1)`` for a (C, Y, X) image, or ``(z, y, x)`` spans."""
    from convpaint.tiling import plan_block, read_block

    stack = _as_stack(image)
    if len(tile) == 4 and isinstance(tile[0], int):
        tile = ((0, 1), (tile[0], tile[1]), (tile[2], tile[3]))
    kw = {"halo": pipe.halo, "alignment": pipe.alignment}  # type: ignore[attr-defined]
    block = plan_block(tile, **kw)
    big = plan_block(tuple((0, n) for n in stack.shape[1:]), **kw)
    trim = tuple(
        slice(t0 - b0, t1 - b0)
        for (t0, t1), (b0, _) in zip(tile, big.extended, strict=True)
    )
    ref = pipe.compute(read_block(stack, big), trim)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        pipe.compute(read_block(stack, block), block.trim),
        ref,  # type: ignore[attr-defined]
    )
    changed = stack.copy()
    mask = np.ones(changed.shape[1:], bool)
    mask[tuple(slice(max(e0, 0), e1) for e0, e1 in block.extended)] = False
    changed[:, mask] = 100.0
    np.testing.assert_array_equal(
        pipe.compute(read_block(changed, block), block.trim),
        ref,  # type: ignore[attr-defined]
    )


def write_config(path: Path, text: str) -> Path:
    """Write a YAML config file and return its path."""
    path.write_text(text)
    return path


FAST_FEATURES = """
features:
  extractors:
    - name: vgg16
      scalings: [1, 2]
    - name: filters
      sigmas: [1.0, 3.0]
classifier: {n_estimators: 20, seed: 0}
"""


@pytest.fixture()
def em_config(em_crop: dict[str, Path]) -> Path:
    """A small, fast config training on the EM crop."""
    return write_config(
        em_crop["dir"] / "config.yaml",
        FAST_FEATURES
        + """
train:
  images: [images/*.tif]
  annotations: annotations/{stem}_scribbles.tif
  axes: YX
  model: models/em.cpm
  report: false
predict:
  inputs: [images]
  output_dir: out
""",
    )


def train_em_crop(
    folder: Path,
    index: int,
    shape: tuple[int, int],
    features: list[dict],
    n_estimators: int,
) -> Path:
    """Train a model on the top-left ``shape`` crop of ISBI EM image ``index`` and
    its scribbles (written to ``folder`` as img.tif / scr.tif); returns the model."""
    from PIL import Image

    from convpaint import api
    from convpaint.config import parse_config

    if not BENCH.is_dir():
        pytest.skip("benchmark data not found")
    rows, cols = slice(0, shape[0]), slice(0, shape[1])
    img = np.asarray(Image.open(BENCH / f"isbi2012_em_membranes/images/{index}.png"))
    scr = tifffile.imread(
        BENCH / f"isbi2012_em_membranes/derived/{index}_scribbles.tif"
    )
    tifffile.imwrite(folder / "img.tif", img[rows, cols])
    tifffile.imwrite(folder / "scr.tif", scr[rows, cols])
    raw = {
        "features": features,
        "classifier": {"n_estimators": n_estimators, "seed": 0},
        "train": {
            "images": [str(folder / "img.tif")],
            "annotations": [str(folder / "scr.tif")],
            "model": str(folder / "m.cpm"),
            "report": False,
        },
    }
    api.train(parse_config(raw))
    return folder / "m.cpm"


@pytest.fixture(scope="session")
def trained_em_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once per session on a real EM crop (vgg16 + filters)."""
    return train_em_crop(
        tmp_path_factory.mktemp("em_model"),
        5,
        (200, 240),
        [
            {"name": "vgg16", "scalings": [1, 2, 4]},
            {"name": "filters", "sigmas": [1.0, 3.5]},
        ],
        25,
    )


@contextmanager
def local_cluster() -> Iterator[object]:
    """A dask.distributed LocalCluster of 2 single-threaded worker processes on the
    loopback interface, without a dashboard (skips without dask.distributed)."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster
