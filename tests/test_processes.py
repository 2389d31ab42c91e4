"""Real `convpaint` processes: concurrent runs, SIGTERM and kill -9 in flight, and
stdout that holds nothing but JSON lines (issue 6, items 3, 7, 9, 10). A full disk
(item 12) is in the bad-input catalogue, run in separate processes there.

Each process costs one to two seconds of imports, so the cases share processes where
one run can show several behaviours.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from .conftest import BENCH, ROOT


def convpaint(*args: object) -> list[str]:
    """The command line of a `convpaint` process running this checkout's code."""
    return [sys.executable, "-m", "convpaint", *(str(a) for a in args)]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    """Poll ``predicate()`` until it is true (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def terminate(proc: subprocess.Popen) -> tuple[str, str]:
    """Send SIGTERM to a running process and collect its output (kill it if it is
    still there after a minute)."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stray(folder: Path) -> list[str]:
    """Claims, temporary and partial files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained filters model and 1024² / 3072² images mirror-tiled from real EM."""
    from PIL import Image

    from convpaint import api
    from convpaint.config import parse_config

    if not BENCH.is_dir():
        pytest.skip("benchmark data not found")
    d = tmp_path_factory.mktemp("processes")
    img = np.asarray(Image.open(BENCH / "isbi2012_em_membranes/images/0.png"))
    scr = tifffile.imread(BENCH / "isbi2012_em_membranes/derived/0_scribbles.tif")
    tifffile.imwrite(d / "img.tif", img[:160, :192])
    tifffile.imwrite(d / "scr.tif", scr[:160, :192])
    # large enough to still be running while two more processes start (slow machines
    # and fast ones alike: one thread, small tiles)
    big = np.pad(img, ((0, 6144 - img.shape[0]), (0, 6144 - img.shape[1])), "symmetric")
    tifffile.imwrite(d / "big.tif", big)
    tifffile.imwrite(d / "mid.tif", big[:1024, :1024])
    raw = {
        "features": [{"name": "filters", "sigmas": [1.0, 3.0]}],
        "classifier": {"n_estimators": 8, "seed": 0},
        "train": {
            "images": [str(d / "img.tif")],
            "annotations": [str(d / "scr.tif")],
            "model": str(d / "m.cpm"),
            "report": False,
        },
    }
    api.train(parse_config(raw))
    return d


def test_concurrent_runs_sigterm_and_kill9(work: Path) -> None:
    """Two runs on one output: the second is refused naming the first (or skips it
    with --skip-existing). SIGTERM in flight: exit 143, message, nothing left. kill -9
    in flight: the rerun recognises the stale claim and partial, removes them and
    writes a file byte-identical to an uninterrupted run, with progress lines in the
    log and no stray file."""
    from convpaint import api
    from convpaint.config import TilingConfig

    model = work / "m.cpm"
    env = child_env()
    out = work / "run"
    # -- a long run A, and two latecomers on the same output
    a = subprocess.Popen(
        convpaint(
            "predict",
            "-m",
            model,
            "-o",
            out,
            work / "big.tif",
            "--tile-size",
            "128",
            "--threads",
            "1",
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: any(".partial" in p.name for p in out.glob(".*")))
        b, c = (
            subprocess.Popen(
                convpaint("predict", "-m", model, "-o", out, work / "big.tif", *extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for extra in ((), ("--skip-existing", "--json"))
        )
        _, b_err = b.communicate(timeout=120)
        c_out, c_err = c.communicate(timeout=120)
        assert a.poll() is None, "the first run ended before the others could meet it"
        assert b.returncode == 1, b_err
        assert f"pid {a.pid}" in b_err and "being written by another run" in b_err
        assert c.returncode == 0, c_err
        rec = json.loads(c_out.splitlines()[0])
        assert rec["status"] == "skipped" and "another run" in rec["skip_reason"]
    finally:
        # -- SIGTERM to A
        stdout, stderr = terminate(a)
    assert a.returncode == 143, stderr
    assert "terminated by SIGTERM" in stderr and "big.tif' was not finished" in stderr
    assert "Traceback" not in stderr
    assert json.loads(stdout.splitlines()[-1])["status"] == "interrupted"
    assert list(out.iterdir()) == []

    # -- kill -9 in flight, then a rerun
    reference = work / "ref"
    api.predict(
        model, [str(work / "mid.tif")], reference, tiling=TilingConfig(tile_size=128)
    )
    d = subprocess.Popen(
        convpaint(
            "predict", "-m", model, "-o", out, work / "mid.tif", "--tile-size", "128"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_for(lambda: any(".partial" in p.name for p in out.glob(".*")))
    d.kill()
    d.wait()
    left = stray(out)
    assert any(n.endswith(".claim") for n in left) and any(
        ".partial" in n for n in left
    )
    e = subprocess.run(
        convpaint(
            "predict", "-m", model, "-o", out, work / "mid.tif", "--tile-size", "128"
        ),
        capture_output=True,
        text=True,
        env=child_env(CONVPAINT_PROGRESS_SECONDS="0.5"),
    )
    assert e.returncode == 0, e.stderr
    assert (
        "removing the stale claim" in e.stderr
        and "left by a run that was killed" in e.stderr
    )
    assert filecmp.cmp(
        out / "mid_labels.tif", reference / "mid_labels.tif", shallow=False
    )
    assert stray(out) == [] and [p.name for p in out.iterdir()] == ["mid_labels.tif"]
    progress = [line for line in e.stderr.splitlines() if " progress: " in line]
    assert progress and "file 1/1 'mid.tif': tile " in progress[-1]
    assert "Mpx/s" in progress[-1] and "ETA" in progress[-1]
    assert e.stdout.startswith("done ") and len(e.stdout.splitlines()) == 2


def test_resume_after_sigterm_and_kill9(work: Path) -> None:
    """--resume: SIGTERM in flight exits 143 and keeps the partial zarr output (the
    message says so); a resumed run killed with kill -9 keeps it too; the next
    resumed run takes over the stale claim, computes only the missing tiles and
    writes labels equal to an uninterrupted run's, leaving no stray file."""
    import zarr

    from convpaint import api
    from convpaint.config import TilingConfig
    from convpaint.io.resume import DONE_FOLDER, resume_path

    model = work / "m.cpm"
    out = work / "resumed"
    image = work / "resume.tif"
    tifffile.imwrite(image, tifffile.imread(work / "big.tif")[:2048, :3072])
    args = convpaint(
        "predict",
        "-m",
        model,
        "-o",
        out,
        image,
        "--format",
        "zarr",
        "--resume",
        "--tile-size",
        "128",
        "--threads",
        "1",
    )
    done = resume_path(out / "resume_labels.zarr") / DONE_FOLDER

    def n_done() -> int:
        try:
            return len(os.listdir(done))
        except FileNotFoundError:
            return 0

    a = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        wait_for(lambda: n_done() >= 5)
    finally:
        _, stderr = terminate(a)
    assert a.returncode == 143, stderr
    assert "partial output of the input in progress was kept" in stderr
    assert "--resume --skip-existing" in stderr and "Traceback" not in stderr
    after_term = n_done()
    assert after_term >= 5 and stray(out) == [".resume_labels.zarr.resume.partial"]
    b = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )
    wait_for(lambda: n_done() >= after_term + 5)
    b.kill()
    b.wait()
    assert any(n.endswith(".claim") for n in stray(out))
    c = subprocess.run(
        args, capture_output=True, text=True, env=child_env(), timeout=600
    )
    assert c.returncode == 0, c.stderr
    assert "removing the stale claim" in c.stderr
    resumed = int(c.stdout.split(", ")[1].split()[0])  # "(... s, N tiles resumed)"
    assert resumed >= after_term + 5 and "tiles resumed)" in c.stdout
    assert stray(out) == [] and [p.name for p in out.iterdir()] == [
        "resume_labels.zarr"
    ]
    reference = work / "resume_ref"
    api.predict(
        model,
        [str(image)],
        reference,
        fmt="zarr",
        tiling=TilingConfig(tile_size=128),
    )
    got = zarr.open_array(str(out / "resume_labels.zarr"), mode="r")[:]
    want = zarr.open_array(str(reference / "resume_labels.zarr"), mode="r")[:]
    assert np.array_equal(got, want)


def test_stdout_is_json_lines_only(work: Path) -> None:
    """train and predict with VGG16 (torch) and --json: every stdout line parses as
    JSON; warnings arrive on stderr, one line each."""
    cfg = work / "vgg.yaml"
    cfg.write_text(
        "features: [{name: vgg16, scalings: [1]}, {name: filters, sigmas: [1.0]}]\n"
        "classifier: {n_estimators: 5, seed: 0}\n"
        f"train: {{images: [{work / 'img.tif'}], annotations: [{work / 'scr.tif'}], "
        f"model: {work / 'vgg.cpm'}, report: false}}\n"
        f"predict: {{inputs: [{work / 'img.tif'}], output_dir: {work / 'vgg_out'}}}\n"
    )
    env = child_env()
    lines = []
    for cmd in (("train", cfg, "--json", "-v"), ("predict", cfg, "--json", "-v")):
        r = subprocess.run(convpaint(*cmd), capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        lines += r.stdout.splitlines()
        warnings = [
            line for line in r.stderr.splitlines() if line.startswith("warning:")
        ]
        assert len(warnings) == len(set(warnings))
        assert "Traceback" not in r.stderr and "warnings.warn(" not in r.stderr
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records] == ["model", "input", "summary"]
    assert records[1]["status"] == "done"
