"""`predict --resume`: a stopped zarr prediction is kept and continued, bit for bit.

In-process cases; the same with real processes stopped by SIGTERM and kill -9 is in
test_processes.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from convpaint import batch, engine
from convpaint.config import TilingConfig, parse_config
from convpaint.errors import ConfigError, OutputError
from convpaint.io.resume import DONE_FOLDER, MANIFEST, resume_path

from .conftest import local_cluster, train_em_crop

TILING = TilingConfig(tile_size=64, threads=2)


class Stop(RuntimeError):
    """Raised by the patched predictor after a number of tiles."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("resume")
    model = train_em_crop(
        d, 3, (160, 192), [{"name": "filters", "sigmas": [1.0, 3.0]}], 8
    )
    img = tifffile.imread(d / "img.tif")
    big = np.pad(img, ((0, 320 - img.shape[0]), (0, 256 - img.shape[1])), "symmetric")
    tifffile.imwrite(d / "big.tif", big)
    # a second model (other seed) to resume with by mistake
    other = d / "other"
    other.mkdir()
    train_em_crop(other, 3, (160, 192), [{"name": "filters", "sigmas": [1.0]}], 8)
    return {"dir": d, "model": model, "image": d / "big.tif", "other": other / "m.cpm"}


def _predict(setup: dict[str, Path], out: Path, **kw: object) -> list:
    args = {"fmt": "zarr", "tiling": TILING, **kw}
    return batch.predict(setup["model"], [str(setup["image"])], out, **args)  # type: ignore[arg-type]


def _stop_after(monkeypatch: pytest.MonkeyPatch, n: int) -> list[int]:
    """Make the tile predictor fail from its ``n``-th call on; returns the call log."""
    calls: list[int] = []
    original = engine.TilePredictor.__call__

    def call(self: engine.TilePredictor, block_info: dict | None = None) -> np.ndarray:
        calls.append(1)
        if len(calls) > n:
            raise Stop("stopped for the test")
        return original(self, block_info)

    monkeypatch.setattr(engine.TilePredictor, "__call__", call)
    return calls


def _read(path: Path) -> np.ndarray:
    return zarr.open_array(str(path), mode="r")[:]


@pytest.mark.parametrize("fmt", ["zarr", "ome-zarr"])
def test_stopped_run_is_continued_bit_for_bit(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """A run that fails after some tiles keeps its partial output (labels and
    probabilities) with one marker per stored tile; the rerun with resume computes
    only the other tiles and writes outputs equal to an uninterrupted run's, with
    the same class fractions; no marker, record or partial is left."""
    kw = {"fmt": fmt, "probabilities": True, "levels": 2 if fmt == "ome-zarr" else 1}
    ref = _predict(setup, tmp_path / "ref", **kw)[0]
    out = tmp_path / "out"
    calls = _stop_after(monkeypatch, 9)
    with pytest.raises(Stop):
        _predict(setup, out, resume=True, **kw)
    suffix = ".zarr" if fmt == "zarr" else ".ome.zarr"
    labels = out / f"big_labels{suffix}"
    partial = resume_path(labels)
    assert not labels.exists() and partial.is_dir()
    assert resume_path(out / f"big_probabilities{suffix}").is_dir()
    done = os.listdir(partial / DONE_FOLDER)
    assert 1 <= len(done) <= 9 and (partial / MANIFEST).is_file()
    monkeypatch.undo()
    calls = _stop_after(monkeypatch, 10**6)
    res = _predict(setup, out, resume=True, **kw)[0]
    n_tiles = 5 * 4  # 320 x 256 in tiles of 64
    assert len(calls) == n_tiles - len(done) and res.resumed_tiles == len(done)
    assert res.class_fractions == ref.class_fractions
    inner = "" if fmt == "zarr" else "/0"
    for name in ("big_labels", "big_probabilities"):
        a = _read(Path(f"{out / name}{suffix}{inner}"))
        b = _read(Path(f"{tmp_path / 'ref' / name}{suffix}{inner}"))
        assert a.dtype == b.dtype and np.array_equal(a, b)
    if fmt == "ome-zarr":
        ref_labels = tmp_path / "ref" / f"big_labels{suffix}"
        levels = sorted(p.name for p in ref_labels.iterdir() if p.name.isdigit())
        assert levels == sorted(p.name for p in labels.iterdir() if p.name.isdigit())
        for level in levels:
            assert np.array_equal(_read(labels / level), _read(ref_labels / level))
    assert sorted(p.name for p in out.iterdir()) == [
        f"big_labels{suffix}",
        f"big_probabilities{suffix}",
    ]
    assert not (labels / DONE_FOLDER).exists() and not (labels / MANIFEST).exists()


def test_resume_checks_what_the_partial_belongs_to(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another model, or an input changed since, is refused with a message that
    names the partial output, says what differs and how to start afresh; the
    partial output is left as it was."""
    out = tmp_path / "out"
    _stop_after(monkeypatch, 3)
    with pytest.raises(Stop):
        _predict(setup, out, resume=True)
    monkeypatch.undo()
    partial = resume_path(out / "big_labels.zarr")
    before = sorted(os.listdir(partial / DONE_FOLDER))
    with pytest.raises(OutputError) as err:
        batch.predict(
            setup["other"],
            [str(setup["image"])],
            out,
            fmt="zarr",
            tiling=TILING,
            resume=True,
        )
    msg = str(err.value)
    assert str(partial) in msg and "the model file differs" in msg
    assert "to start afresh" in msg
    st = setup["image"].stat()
    os.utime(setup["image"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        with pytest.raises(OutputError, match="input file was changed since"):
            _predict(setup, out, resume=True)
    finally:
        os.utime(setup["image"], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sorted(os.listdir(partial / DONE_FOLDER)) == before


def test_partial_without_record_and_runs_without_resume(
    setup: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run without resume leaves an earlier partial output alone (with a warning)
    and writes its own; a partial output without its record (its run died while
    creating it) is removed by a resuming run, which starts afresh."""
    # an in-process CLI test before this one may have stopped propagation
    monkeypatch.setattr(logging.getLogger("convpaint"), "propagate", True)
    out = tmp_path / "out"
    partial = resume_path(out / "big_labels.zarr")
    partial.mkdir(parents=True)
    (partial / "junk").write_text("x")
    with caplog.at_level(logging.WARNING):
        _predict(setup, out)
    assert "holds the partial result of an earlier --resume run" in caplog.text
    assert (partial / "junk").exists() and (out / "big_labels.zarr").is_dir()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _predict(setup, out, resume=True, on_exists="overwrite")
    assert "without a readable" in caplog.text
    assert not partial.exists()
    ref = tmp_path / "ref"
    _predict(setup, ref)
    assert np.array_equal(
        _read(out / "big_labels.zarr"), _read(ref / "big_labels.zarr")
    )


def test_resume_needs_zarr(setup: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs zarr or ome-zarr output, not tif"):
        _predict(setup, tmp_path, fmt="tif", resume=True)
    with pytest.raises(ValueError, match="resume needs format zarr or ome-zarr"):
        parse_config(
            {"predict": {"inputs": ["x.tif"], "model": "m.cpm", "resume": True}}
        )
    cfg = parse_config(
        {
            "predict": {
                "inputs": ["x.tif"],
                "model": "m.cpm",
                "resume": True,
                "format": "zarr",
            }
        }
    )
    assert cfg.predict is not None and cfg.predict.resume


def test_cli_resume(setup: dict[str, Path], tmp_path: Path) -> None:
    """`--resume` with a TIFF output exits 1 with one line saying why; with zarr it
    predicts, and a second `--resume` run finds the finished output (exit 1, as
    without --resume, unless --skip-existing)."""
    from typer.testing import CliRunner

    from convpaint.cli import app

    runner = CliRunner()
    base = ["predict", "-m", str(setup["model"]), "-o", str(tmp_path)]
    res = runner.invoke(app, [*base, str(setup["image"]), "--resume"])
    assert res.exit_code == 1 and "needs zarr or ome-zarr output" in res.output
    zarr_args = [*base, str(setup["image"]), "--format", "zarr", "--resume"]
    assert runner.invoke(app, zarr_args).exit_code == 0
    assert (tmp_path / "big_labels.zarr").is_dir()
    res = runner.invoke(app, zarr_args)
    assert res.exit_code == 1 and "exists" in res.output
    assert runner.invoke(app, [*zarr_args, "--skip-existing"]).exit_code == 0


def test_resume_on_a_distributed_cluster(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial output is continued by a LocalCluster of 2 worker processes: the
    stored tiles' chunk files are not written again, the others are, and labels and
    probabilities equal an uninterrupted run's."""
    ref = tmp_path / "ref"
    _predict(setup, ref, probabilities=True)
    out = tmp_path / "out"
    _stop_after(monkeypatch, 6)
    with pytest.raises(Stop):
        _predict(setup, out, resume=True, probabilities=True)
    monkeypatch.undo()
    partial = resume_path(out / "big_labels.zarr")
    done = set(os.listdir(partial / DONE_FOLDER))
    # zarr's flat chunk keys are the tile indices without T (a 2-D output: y.x)
    stamps = {
        p.name: p.stat().st_mtime_ns for p in partial.iterdir() if p.name[0].isdigit()
    }
    with local_cluster() as cluster:
        tiling = TilingConfig(tile_size=64, scheduler=cluster.scheduler_address)
        res = _predict(setup, out, resume=True, probabilities=True, tiling=tiling)[0]
    assert res.resumed_tiles == len(done) > 0
    final = out / "big_labels.zarr"
    for key in done:
        chunk = ".".join(key.split(".")[2:])
        assert (final / chunk).stat().st_mtime_ns == stamps[chunk]
    for name in ("big_labels.zarr", "big_probabilities.zarr"):
        assert np.array_equal(_read(out / name), _read(ref / name))
    assert sorted(p.name for p in out.iterdir()) == [
        "big_labels.zarr",
        "big_probabilities.zarr",
    ]
