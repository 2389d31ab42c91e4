"""The command line, in process: quick start, predict forms, errors and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from convpaint.cli import app
from convpaint.evaluation import score

from .conftest import ROOT, SAMPLE, write_config

runner = CliRunner()

#: mIoU the default model must reach on the sample image (measured 0.888; reference Convpaint: 0.850).
SAMPLE_MIOU = 0.87


def invoke(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _files(folder: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        if folder.exists()
        else []
    )


@pytest.fixture()
def sample_copy(tmp_path: Path) -> Path:
    """The repository's sample data and configs, copied so tests never write into the repo."""
    shutil.copytree(
        SAMPLE,
        tmp_path / "sample_data",
        ignore=shutil.ignore_patterns("models", "predictions*"),
    )
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def test_quickstart_on_sample_data(sample_copy: Path) -> None:
    """`train` then `predict` with the sample config reach the stated mIoU against GT."""
    cfg = sample_copy / "configs/sample_nuclei.yaml"
    res = invoke("train", cfg, "--quiet")
    assert res.exit_code == 0, res.output
    model = sample_copy / "sample_data/models/nuclei.cpm"
    assert model.is_file() and "Model saved" in res.output
    report = json.loads(
        (sample_copy / "sample_data/models/nuclei_report.json").read_text()
    )
    assert report["cross_validation"]["accuracy"] > 0.9
    res = invoke("predict", cfg, "--quiet")
    assert res.exit_code == 0, res.output
    pred = tifffile.imread(sample_copy / "sample_data/predictions/nuclei_labels.tif")
    gt = tifffile.imread(sample_copy / "sample_data/ground_truth/nuclei_gt.tif")
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {1, 2}
    assert score(pred, gt).miou >= SAMPLE_MIOU

    # the config-free form, zarr output with probabilities, through a glob
    out = sample_copy / "zarr_out"
    res = invoke(
        "predict",
        "--model",
        model,
        "--output",
        out,
        "--format",
        "zarr",
        "--probabilities",
        "--tile-size",
        "200",
        "-q",
        str(sample_copy / "sample_data/images/*.tif"),
    )
    assert res.exit_code == 0, res.output
    labels = zarr.open(str(out / "nuclei_labels.zarr"), mode="r")
    np.testing.assert_array_equal(labels[:], pred)  # other tiles, same labels
    probs = zarr.open(str(out / "nuclei_probabilities.zarr"), mode="r")[:]
    assert probs.shape == (2, 512, 512) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.array([1, 2])[probs.argmax(0)], pred)

    # `info` shows what the model holds
    res = invoke("info", model)
    assert (
        res.exit_code == 0 and '"classes"' in res.output and '"filters"' in res.output
    )


def test_retraining_is_reproducible(em_config: Path) -> None:
    """Two trainings with the same seed give identical predictions."""
    assert invoke("train", em_config, "-q").exit_code == 0
    assert invoke("predict", em_config, "-q").exit_code == 0
    out = em_config.parent / "out/em_labels.tif"
    first = tifffile.imread(out)
    assert invoke("train", em_config, "-q", "--overwrite").exit_code == 0
    assert invoke("predict", em_config, "-q", "--overwrite").exit_code == 0
    np.testing.assert_array_equal(tifffile.imread(out), first)


def test_existing_outputs_are_kept_unless_asked(em_config: Path) -> None:
    """Outputs are never replaced silently: error (exit 1), --skip-existing, --overwrite."""
    assert invoke("train", em_config, "-q").exit_code == 0
    res = invoke("train", em_config, "-q")
    assert res.exit_code == 1 and "exists" in res.output
    out = em_config.parent / "out/em_labels.tif"
    out.parent.mkdir()
    out.write_bytes(b"precious")
    res = invoke("predict", em_config, "-q")
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert out.read_bytes() == b"precious"
    res = invoke("predict", em_config, "-q", "--skip-existing")
    assert res.exit_code == 0 and "skipped" in res.output
    assert out.read_bytes() == b"precious"
    assert invoke("predict", em_config, "-q", "--overwrite").exit_code == 0
    assert tifffile.imread(out).shape == (160, 192)


def _break(em_crop: dict, kind: str) -> tuple[str, str]:
    """Apply one kind of bad input to the EM crop; return (config text, expected phrase)."""
    base = (
        "train:\n  images: [images/em.tif]\n"
        "  annotations: annotations/{stem}_scribbles.tif\n  model: models/m.cpm\n"
    )
    if kind == "unknown key":
        return base + "  modle: x.cpm\n", "train.modle: unknown key"
    if kind == "missing image":
        return base.replace("images/em.tif", "images/nope.tif"), "does not exist"
    if kind == "missing annotations":
        em_crop["scribbles"].unlink()
        return base, "no annotation file for image"
    if kind == "bad axes":
        return (
            base + "  axes: YXC\n",
            "declares axes YX (TIFF page layout) but axes YXC were given",
        )
    if kind == "one class":
        s = tifffile.imread(em_crop["scribbles"])
        tifffile.imwrite(em_crop["scribbles"], np.where(s > 0, 1, 0).astype(np.uint8))
        return base, "only class 1"
    if kind == "empty annotations":
        tifffile.imwrite(em_crop["scribbles"], np.zeros((160, 192), np.uint8))
        return base, "no labelled pixel"
    if kind == "wrong annotation shape":
        tifffile.imwrite(em_crop["scribbles"], np.ones((100, 192), np.uint8))
        return base, "have shape (100, 192)"
    if kind == "nan image":
        img = tifffile.imread(em_crop["image"]).astype(np.float32)
        img[5, 5] = np.nan
        tifffile.imwrite(em_crop["image"], img)
        return base, "NaN"
    if kind == "corrupt tiff":
        em_crop["image"].write_bytes(b"II*\x00 definitely not a tiff")
        return base, "could not be read as TIFF"
    if kind == "bad yaml":
        return "train: [oops\n", "not valid YAML"
    raise AssertionError(kind)


BAD_INPUTS = [
    "unknown key",
    "missing image",
    "missing annotations",
    "bad axes",
    "one class",
    "empty annotations",
    "wrong annotation shape",
    "nan image",
    "corrupt tiff",
    "bad yaml",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_exits_1_with_one_message_and_writes_nothing(
    em_crop: dict, kind: str
) -> None:
    """Each bad input gives exit 1, one located message, and no file written."""
    text, phrase = _break(em_crop, kind)
    cfg = write_config(em_crop["dir"] / "bad.yaml", text)
    before = _files(em_crop["dir"])
    res = invoke("train", cfg, "-q")
    assert res.exit_code == 1, res.output
    assert "error:" in res.output and phrase in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert _files(em_crop["dir"]) == before


def test_predict_errors(trained_em_model: Path, tmp_path: Path) -> None:
    """Predict refuses a bad model file, missing inputs and wrong channels, writing nothing."""
    bogus = tmp_path / "bogus.cpm"
    bogus.write_bytes(b"not a model")
    img = trained_em_model.parent / "img.tif"
    res = invoke("predict", "--model", bogus, "--output", tmp_path / "o", img)
    assert res.exit_code == 1 and "not a usable convpaint model" in res.output
    res = invoke(
        "predict",
        "--model",
        trained_em_model,
        "--output",
        tmp_path / "o",
        tmp_path / "none.tif",
    )
    assert res.exit_code == 1 and "does not exist" in res.output
    rgb = tmp_path / "rgb.png"
    from PIL import Image

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(rgb)
    res = invoke(
        "predict",
        "--model",
        trained_em_model,
        "--output",
        tmp_path / "o",
        "--axes",
        "YXC",
        rgb,
    )
    assert res.exit_code == 1 and "trained on 1" in " ".join(res.output.split())
    assert not (tmp_path / "o").exists() or _files(tmp_path / "o") == []


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Wrong command-line usage keeps typer's exit code 2."""
    assert runner.invoke(app, ["train"]).exit_code == 2
    assert runner.invoke(app, ["predict", "--model", "m.cpm"]).exit_code == 2
    assert runner.invoke(app, ["predict", "c.yaml", "--shard", "3/2"]).exit_code == 2
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2


def test_debug_shows_traceback(tmp_path: Path) -> None:
    """--debug lets the exception through for a full traceback."""
    from convpaint.errors import ConfigError

    with pytest.raises(ConfigError):
        runner.invoke(
            app,
            ["train", str(tmp_path / "none.yaml"), "--debug"],
            catch_exceptions=False,
        )


def test_init_and_check(tmp_path: Path, em_config: Path) -> None:
    """`init` writes a valid template without clobbering; `check` prints the plan and runs nothing."""
    path = tmp_path / "new.yaml"
    assert invoke("init", path).exit_code == 0
    assert "features:" in path.read_text()
    assert invoke("init", path).exit_code == 1
    before = _files(em_config.parent)
    res = invoke("check", em_config)
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert (
        "config OK" in flat and "em_labels.tif" in flat and "n_estimators: 20" in flat
    )
    assert _files(em_config.parent) == before
    assert invoke("check", em_config, "--schema").exit_code == 0


def test_version_and_extractors() -> None:
    """--version prints the version; `extractors` lists the built-ins with halos."""
    from convpaint import __version__

    assert __version__ in invoke("--version").output
    out = invoke("extractors").output
    assert "vgg16" in out and "filters" in out and "halo" in out


def test_shard_splits_inputs(trained_em_model: Path, tmp_path: Path) -> None:
    """--shard I/N predicts every N-th input starting at I (for SLURM arrays)."""
    src = trained_em_model.parent / "img.tif"
    for i in range(3):
        shutil.copy(src, tmp_path / f"in{i}.tif")
    res = invoke(
        "predict",
        "-m",
        trained_em_model,
        "-o",
        tmp_path / "o",
        "--shard",
        "1/2",
        "-q",
        str(tmp_path / "in*.tif"),
    )
    assert res.exit_code == 0, res.output
    assert _files(tmp_path / "o") == ["in1_labels.tif"]


def test_python_dash_m(tmp_path: Path) -> None:
    """`python -m convpaint --version` works."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "convpaint", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "convpaint" in out.stdout


def test_scribbles_command(tmp_path: Path) -> None:
    """`scribbles` writes reproducible, in-class scribbles named for the training template."""
    gt = SAMPLE / "ground_truth/nuclei_gt.tif"
    res = invoke(
        "scribbles", gt, "-o", tmp_path / "a", "--fraction", "0.01", "--seed", "3"
    )
    assert res.exit_code == 0, res.output
    a = tifffile.imread(tmp_path / "a/nuclei_scribbles.tif")
    assert (
        invoke(
            "scribbles", gt, "-o", tmp_path / "b", "--fraction", "0.01", "--seed", "3"
        ).exit_code
        == 0
    )
    np.testing.assert_array_equal(
        a, tifffile.imread(tmp_path / "b/nuclei_scribbles.tif")
    )
    truth = tifffile.imread(gt)
    assert set(np.unique(a[a > 0])) == {1, 2} and np.all(a[a > 0] == truth[a > 0])
    assert 0.0075 <= (a > 0).mean() <= 0.0125
    res = invoke("scribbles", gt, "-o", tmp_path / "a")
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_evaluate_command_and_config_form(tmp_path: Path) -> None:
    """`evaluate` scores files (flags or config), writes CSV/JSON/PNG, and matches score()."""
    gt = tifffile.imread(SAMPLE / "ground_truth/nuclei_gt.tif")
    pred = gt.copy()
    pred[:100, :100] = 1  # some errors
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(tmp_path / "pred/nuclei_labels.tif", pred)
    res = invoke(
        "evaluate",
        "-p",
        tmp_path / "pred/nuclei_labels.tif",
        "-g",
        str(SAMPLE / "ground_truth/{stem}_gt.tif"),
        "--image",
        str(SAMPLE / "images/{stem}.tif"),
        "--scribbles",
        str(SAMPLE / "annotations/{stem}_scribbles.tif"),
        "-o",
        tmp_path / "ev",
        "--figures",
    )
    assert res.exit_code == 0, res.output
    expected = score(pred, gt).miou
    data = json.loads((tmp_path / "ev/evaluation.json").read_text())
    assert abs(data["mean"]["miou"] - expected) < 1e-9
    names = sorted(p.name for p in (tmp_path / "ev").iterdir())
    assert names == [
        "evaluation.csv",
        "evaluation.json",
        "evaluation_confusion.csv",
        "evaluation_confusion.png",
        "nuclei_comparison.png",
    ]
    cfg = write_config(
        tmp_path / "c.yaml",
        f"""
predict:
  model: unused.cpm
  inputs: [{SAMPLE / "images"}]
  output_dir: pred
evaluate:
  ground_truth: {SAMPLE / "ground_truth"}/{{stem}}_gt.tif
  output_dir: ev2
""",
    )
    res = invoke("evaluate", cfg)
    assert res.exit_code == 0, res.output
    assert f"{expected:.3f}" in res.output
    res = invoke(
        "evaluate",
        "-p",
        tmp_path / "pred/nuclei_labels.tif",
        "-g",
        tmp_path / "none.tif",
    )
    assert res.exit_code == 1 and "does not exist" in res.output


def test_check_validates_inputs_against_an_existing_model(em_config: Path) -> None:
    """With a trained model present, `check` refuses inputs whose channels do not fit."""
    assert invoke("train", em_config, "-q").exit_code == 0
    assert invoke("check", em_config).exit_code == 0
    rgb = em_config.parent / "images/rgb.tif"
    tifffile.imwrite(rgb, np.zeros((3, 40, 40), np.uint8), photometric="minisblack")
    cfg = write_config(
        em_config.parent / "c2.yaml",
        "predict:\n  model: models/em.cpm\n  inputs: [images/rgb.tif]\n  axes: CYX\n",
    )
    res = invoke("check", cfg)
    assert res.exit_code == 1 and "trained on 1" in " ".join(res.output.split())
