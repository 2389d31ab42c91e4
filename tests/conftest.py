"""Shared fixtures: real benchmark data, the sample data, small configs."""

from __future__ import annotations

import os
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


def feature_pipeline(specs: list[dict], n_channels: int = 1) -> object:
    """A FeaturePipeline built from extractor specs as written in a config."""
    from convpaint.config import parse_config
    from convpaint.features import FeaturePipeline

    return FeaturePipeline(
        parse_config({"features": specs}).features.extractors, n_channels
    )


def tiled_features(image: np.ndarray, pipe: object, tile: int) -> np.ndarray:
    """Features of a (C, Y, X) image assembled tile by tile, as prediction does."""
    from convpaint.tiling import iter_tiles, plan_block, read_block

    _, h, w = image.shape
    out = np.zeros((h, w, pipe.n_features), np.float32)  # type: ignore[attr-defined]
    for t in iter_tiles((h, w), tile):
        block = plan_block(t, halo=pipe.halo, alignment=pipe.alignment)  # type: ignore[attr-defined]
        feats = pipe.compute(read_block(image, block), block.trim)  # type: ignore[attr-defined]
        out[t[0] : t[1], t[2] : t[3]] = feats.reshape(t[1] - t[0], t[3] - t[2], -1)
    return out


def assert_halo_suffices(
    pipe: object, image: np.ndarray, tile: tuple[int, int, int, int]
) -> None:
    """A tile computed from its extended block equals the same pixels of a whole-image
    block, and pixels outside the extended block do not matter at all."""
    from convpaint.tiling import plan_block, read_block

    block = plan_block(tile, halo=pipe.halo, alignment=pipe.alignment)  # type: ignore[attr-defined]
    size_y, size_x = image.shape[1:]
    big = plan_block((0, size_y, 0, size_x), halo=pipe.halo, alignment=pipe.alignment)  # type: ignore[attr-defined]
    trim = (
        slice(tile[0] - big.extended[0], tile[1] - big.extended[0]),
        slice(tile[2] - big.extended[2], tile[3] - big.extended[2]),
    )
    ref = pipe.compute(read_block(image, big), trim)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        pipe.compute(read_block(image, block), block.trim), ref
    )  # type: ignore[attr-defined]
    ey0, ey1, ex0, ex1 = block.extended
    changed = image.copy()
    mask = np.ones(changed.shape[1:], bool)
    mask[max(ey0, 0) : ey1, max(ex0, 0) : ex1] = False
    changed[:, mask] = 100.0
    np.testing.assert_array_equal(
        pipe.compute(read_block(changed, block), block.trim), ref
    )  # type: ignore[attr-defined]


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


@pytest.fixture(scope="session")
def trained_em_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once per session on a real EM crop (vgg16 + filters)."""
    from PIL import Image

    from convpaint import api
    from convpaint.config import parse_config

    if not BENCH.is_dir():
        pytest.skip("benchmark data not found")
    d = tmp_path_factory.mktemp("em_model")
    img = np.asarray(Image.open(BENCH / "isbi2012_em_membranes/images/5.png"))[
        :200, :240
    ]
    scr = tifffile.imread(BENCH / "isbi2012_em_membranes/derived/5_scribbles.tif")[
        :200, :240
    ]
    tifffile.imwrite(d / "img.tif", img)
    tifffile.imwrite(d / "scr.tif", scr)
    raw = {
        "features": [
            {"name": "vgg16", "scalings": [1, 2, 4]},
            {"name": "filters", "sigmas": [1.0, 3.5]},
        ],
        "classifier": {"n_estimators": 25, "seed": 0},
        "train": {
            "images": [str(d / "img.tif")],
            "annotations": [str(d / "scr.tif")],
            "model": str(d / "m.cpm"),
            "report": False,
        },
    }
    api.train(parse_config(raw))
    return d / "m.cpm"
