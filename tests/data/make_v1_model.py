"""Recreate ``nuclei_v1.cpm`` and ``nuclei_v1_expected.npz`` (run with convpaint c35bf24).

The files are a model written by the release before convpaint had its own forest
evaluator (model format version 1, trees rebuilt through scikit-learn on load) and
that release's own prediction of the same crop. Tests check that newer code still
loads the model and predicts the same. Run from the repository root, at commit
c35bf24::

    git checkout c35bf24 && PYTHONPATH=$PWD python tests/data/make_v1_model.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tifffile

from convpaint import api
from convpaint.config import TilingConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: The crop of the sample image used for training and prediction (y0, y1, x0, x1).
CROP = (256, 448, 256, 448)


def main() -> None:
    """Train the small model on the crop, predict the crop, write both files."""
    y0, y1, x0, x1 = CROP
    image = tifffile.imread(ROOT / "sample_data/images/nuclei.tif")[y0:y1, x0:x1]
    scribbles = tifffile.imread(ROOT / "sample_data/annotations/nuclei_scribbles.tif")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tifffile.imwrite(d / "crop.tif", image)
        tifffile.imwrite(d / "crop_scribbles.tif", scribbles[y0:y1, x0:x1])
        config = parse_config(
            {
                "classifier": {
                    "n_estimators": 15,
                    "min_samples_leaf": 2,
                    "seed": 0,
                    "n_jobs": 1,
                },
                "train": {
                    "images": [str(d / "crop.tif")],
                    "annotations": [str(d / "crop_scribbles.tif")],
                    "axes": "YX",
                    "model": str(HERE / "nuclei_v1.cpm"),
                    "report": False,
                },
            }
        )
        api.train(config, overwrite=True)
        api.predict(
            HERE / "nuclei_v1.cpm",
            [str(d / "crop.tif")],
            d / "out",
            probabilities=True,
            tiling=TilingConfig(threads=1),
        )
        labels = tifffile.imread(d / "out/crop_labels.tif")
        probabilities = tifffile.imread(d / "out/crop_probabilities.tif")
    np.savez_compressed(
        HERE / "nuclei_v1_expected.npz", labels=labels, probabilities=probabilities
    )


if __name__ == "__main__":
    main()
