"""Unattended runs, in process: claims, sharding, input lists, output names, folders
in the way, keep-going, JSON lines, CLI bounds, hostile configs and TIFFs (issue 6)."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from convpaint.cli import app
from convpaint.errors import OutputBusyError, OutputError, OutputExistsError
from convpaint.io import claims
from convpaint.io.atomic import atomic_output, is_convpaint_output

runner = CliRunner()


def run(*args: object, **kwargs: object):  # -> click.testing.Result
    """Invoke the CLI in process; exceptions other than exits propagate."""
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def files_under(folder: Path) -> list[str]:
    """Every file (not folder) below ``folder``, relative, sorted."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()
    )


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small filters-only model trained on a real EM crop (quick to predict)."""
    from .conftest import train_em_crop

    return train_em_crop(
        tmp_path_factory.mktemp("fast_model"),
        0,
        (160, 192),
        [{"name": "filters", "sigmas": [1.0, 3.0]}],
        8,
    )


@pytest.fixture()
def tree(fast_model: Path, tmp_path: Path) -> Path:
    """raw/a/x.tif, raw/b/x.tif (same name, other folder) and raw/b/y[1].tif."""
    img = tifffile.imread(fast_model.parent / "img.tif")
    for rel in ("raw/a/x.tif", "raw/b/x.tif", "raw/b/y[1].tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / rel, img)
    return tmp_path


# ---------------------------------------------------------------- item 4: sharding


def test_colliding_names_are_refused_over_the_whole_list_before_sharding(
    tree: Path, fast_model: Path
) -> None:
    """Two subfolders with x.tif: every shard refuses (even one holding only one of
    them) and nothing is written; {relpath} mirrors the folders and predicts all."""
    out = tree / "out"
    for shard in ("0/3", "1/3", "2/3"):
        res = run(
            "predict",
            "-m",
            fast_model,
            "-o",
            out,
            "--shard",
            shard,
            "-q",
            "--skip-existing",
            str(tree / "raw/**/*.tif"),
        )
        assert res.exit_code == 1, res.output
        assert "would both write" in res.stderr and "{relpath}" in res.stderr
    assert not out.exists()
    res = run(
        "predict",
        "-m",
        fast_model,
        "-o",
        out,
        "-q",
        "--output-name",
        "{relpath}/{stem}_labels",
        str(tree / "raw/**/*.tif"),
    )
    assert res.exit_code == 0, res.output
    assert files_under(out) == ["a/x_labels.tif", "b/x_labels.tif", "b/y[1]_labels.tif"]


def test_relpath_base_depends_on_the_patterns_not_on_the_matches(tree: Path) -> None:
    """{relpath} is relative to the glob's folder before its first wildcard, so a
    folder that appears later does not move existing outputs."""
    from convpaint.batch import plan_batch

    pattern = str(tree / "raw/**/*.tif")
    before = {
        p.name: o.labels
        for p, o in plan_batch(
            [str(tree / "raw/a/*.tif")],
            tree / "o",
            output_name="{relpath}/{stem}_labels",
        ).items
    }
    assert before["x.tif"] == tree / "o/x_labels.tif"  # base: raw/a
    first = plan_batch([pattern], tree / "o", output_name="{relpath}/{stem}_labels")
    (tree / "raw/c").mkdir()
    tifffile.imwrite(tree / "raw/c/z.tif", np.zeros((20, 20), np.uint8))
    second = plan_batch([pattern], tree / "o", output_name="{relpath}/{stem}_labels")
    assert set(first.items) <= set(second.items) and first.root == second.root
    assert first.digest != second.digest  # the list changed: the digest says so


def test_frozen_list_shards_and_plan(tree: Path, fast_model: Path) -> None:
    """`plan` writes the list; `--inputs-from` shards exactly it even after the
    folder changes; '-' reads the list from stdin."""
    res = run("plan", str(tree / "raw/**/*.tif"))
    assert res.exit_code == 0, res.output
    listed = res.stdout.splitlines()
    assert listed == [
        str(tree / p) for p in ("raw/a/x.tif", "raw/b/x.tif", "raw/b/y[1].tif")
    ]
    (tree / "list.txt").write_text(res.stdout)
    tifffile.imwrite(tree / "raw/a/new.tif", np.zeros((30, 30), np.uint8))  # changes
    got = []
    for i in range(2):
        res = run(
            "plan", "-", "--shard", f"{i}/2", input=(tree / "list.txt").read_text()
        )
        assert res.exit_code == 0, res.output
        got += res.stdout.splitlines()
    assert sorted(got) == listed
    out = tree / "out"
    res = run(
        "predict",
        "-m",
        fast_model,
        "-o",
        out,
        "--inputs-from",
        tree / "list.txt",
        "--output-name",
        "{relpath}/{stem}_labels",
        "--shard",
        "1/2",
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert files_under(out) == ["b/x_labels.tif"]
    # a listed file that vanished is named with its line number
    (tree / "raw/b/x.tif").unlink()
    res = run(
        "predict", "-m", fast_model, "-o", out, "--inputs-from", tree / "list.txt"
    )
    assert (
        res.exit_code == 1 and "line 2" in res.stderr and "does not exist" in res.stderr
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ID": "0", "MIN": "0", "MAX": "19", "COUNT": "20"}, (0, 20)),
        ({"ID": "20", "MIN": "1", "MAX": "20", "COUNT": "20"}, (19, 20)),  # 1-based
        ({"ID": "30", "MIN": "0", "MAX": "90", "COUNT": "10", "STEP": "10"}, (3, 10)),
        ({"ID": "5", "MIN": "1", "MAX": "7", "COUNT": "4", "STEP": "2"}, (2, 4)),
        ({"ID": "7", "MIN": "1", "MAX": "7", "COUNT": "4"}, (3, 4)),  # step derived
        ({"ID": "3", "MIN": "1", "MAX": "7", "COUNT": "3"}, "evenly spaced"),  # 1,3,7
        ({"ID": "4", "MIN": "1", "MAX": "7", "COUNT": "4", "STEP": "2"}, "evenly"),
        ({}, "not a SLURM job array"),
        ({"ID": "x", "COUNT": "3"}, "not integers"),
        ({"ID": "2"}, "number of tasks is unknown"),
    ],
)
def test_shard_auto_reads_the_slurm_array(env: dict, expected: object) -> None:
    """--shard auto numbers evenly spaced arrays (0/1-based, with a step) and refuses
    the rest with a message."""
    from convpaint.batch import shard_from_slurm

    environ = {f"SLURM_ARRAY_TASK_{k}": v for k, v in env.items()}
    if isinstance(expected, tuple):
        assert shard_from_slurm(environ) == expected
    else:
        with pytest.raises(ValueError, match=str(expected)):
            shard_from_slurm(environ)


def test_shard_auto_on_the_command_line(tree: Path, fast_model: Path) -> None:
    """--shard auto takes the task's share; outside an array it is a usage error."""
    env = {
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_ARRAY_TASK_MIN": "1",
        "SLURM_ARRAY_TASK_MAX": "3",
        "SLURM_ARRAY_TASK_COUNT": "3",
    }
    res = run("plan", str(tree / "raw/**/*.tif"), "--shard", "auto", env=env)
    assert res.exit_code == 0 and res.stdout.splitlines() == [str(tree / "raw/b/x.tif")]
    res = run(
        "plan", str(tree / "raw"), "--shard", "auto", env={"SLURM_ARRAY_TASK_ID": None}
    )
    assert res.exit_code == 2 and "SLURM_ARRAY_TASK_ID" in res.output


# ---------------------------------------------------------------- items 6, 7, 11


def test_stdin_list_json_lines_and_literal_brackets(
    tree: Path, fast_model: Path
) -> None:
    """'-' reads paths from stdin; --json prints one object per input and a summary,
    nothing else on stdout; names with '[' are literal paths, not patterns."""
    paths = "\n".join(str(tree / p) for p in ("raw/b/y[1].tif", "raw/a/x.tif")) + "\n"
    res = run(
        "predict", "-m", fast_model, "-o", tree / "out", "-", "--json", input=paths
    )
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["type"] for r in records] == ["input", "input", "summary"]
    first = records[0]
    assert first["status"] == "done" and first["input"] == str(tree / "raw/a/x.tif")
    assert set(first) >= {"outputs", "seconds", "class_fractions", "error"}
    assert abs(sum(first["class_fractions"].values()) - 1) < 1e-6
    summary = records[-1]
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["status"] == "ok"
    assert (tree / "out/y[1]_labels.tif").is_file()


def test_human_lines_are_literal_and_unwrapped(tree: Path, fast_model: Path) -> None:
    """Markup-like and control characters in names print literally on one line each."""
    img = tifffile.imread(tree / "raw/a/x.tif")
    odd = tree / "odd"
    odd.mkdir()
    names = ["[bold red]x.tif", "new\nline.tif", "a" * 150 + ".tif"]
    for n in names:
        tifffile.imwrite(odd / n, img)
    res = run(
        "predict",
        "-m",
        fast_model,
        "-o",
        tree / "out",
        odd,
        "-q",
        env={"COLUMNS": "40"},
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("3 predicted")
    assert any("[bold red]x.tif ->" in line for line in lines)
    assert any("new\\nline.tif ->" in line for line in lines)
    assert any(("a" * 150 + ".tif ->") in line for line in lines)
    assert "\x1b" not in res.output


def test_keep_going_records_failures(tree: Path, fast_model: Path) -> None:
    """--keep-going records a failing input and goes on (exit 1, listed in the
    summary); without it the run stops there, still reporting what finished."""
    (tree / "raw/b/bad.tif").write_bytes(b"II*\x00 not a tiff")
    pattern = str(tree / "raw/b/*.tif")  # bad.tif, x.tif, y[1].tif
    res = run(
        "predict",
        "-m",
        fast_model,
        "-o",
        tree / "o1",
        pattern,
        "--json",
        "--keep-going",
    )
    assert res.exit_code == 1
    rec = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r.get("status") for r in rec[:3]] == ["failed", "done", "done"]
    assert "could not be read as TIFF" in rec[0]["error"]
    assert rec[-1]["failed_inputs"] == [str(tree / "raw/b/bad.tif")]
    assert rec[-1]["status"] == "failed"
    assert files_under(tree / "o1") == ["x_labels.tif", "y[1]_labels.tif"]
    # config form: predict.on_error: continue does the same
    cfg = tree / "c.yaml"
    cfg.write_text(
        f"predict:\n  model: {fast_model}\n  inputs: ['{pattern}']\n"
        "  output_dir: o3\n  on_error: continue\n"
    )
    res = run("predict", cfg, "-q")
    assert res.exit_code == 1 and files_under(tree / "o3") == [
        "x_labels.tif",
        "y[1]_labels.tif",
    ]
    # without: stop at the first failure; one error message on stderr
    shutil.copy(tree / "raw/b/x.tif", tree / "raw/b/a.tif")
    res = run("predict", "-m", fast_model, "-o", tree / "o2", pattern, "-q")
    assert res.exit_code == 1
    assert res.stdout.splitlines()[0].startswith(f"done {tree / 'raw/b/a.tif'}")
    assert "failed" in res.stdout and "1 of 4 input(s) were predicted" in res.stderr
    assert files_under(tree / "o2") == ["a_labels.tif"]


def test_folder_and_zarr_as_first_input(tree: Path, fast_model: Path) -> None:
    """A folder or a .zarr works as the first INPUT of the config-free form."""
    res = run("predict", "-m", fast_model, "-o", tree / "o", tree / "raw/a", "-q")
    assert res.exit_code == 0, res.output
    zarr.save_array(str(tree / "z.zarr"), tifffile.imread(tree / "raw/a/x.tif"))
    res = run("predict", "-m", fast_model, "-o", tree / "o", tree / "z.zarr", "-q")
    assert res.exit_code == 0, res.output
    assert files_under(tree / "o") == ["x_labels.tif", "z_labels.tif"]


def test_config_form_honours_threads_and_tile_size(
    tree: Path, fast_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads/--tile-size reach the engine in the config form; the config-free
    options are refused there (exit 2) instead of being ignored."""
    from convpaint import batch

    seen = {}
    real = batch.predict_image

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(tile=kwargs["tiling"].tile_size, threads=kwargs["threads"])  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "predict_image", spy)
    cfg = tree / "c.yaml"
    cfg.write_text(
        f"predict:\n  model: {fast_model}\n  inputs: [raw/a]\n  output_dir: o\n"
    )
    res = run("predict", cfg, "--threads", "1", "--tile-size", "48", "-q")
    assert res.exit_code == 0, res.output
    assert seen == {"tile": 48, "threads": 1}
    for extra in (
        ["--format", "zarr"],
        ["--axes", "YX"],
        ["-o", "x"],
        ["--probabilities"],
    ):
        res = run("predict", cfg, *extra)
        assert res.exit_code == 2 and "config-free form" in res.output


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--threads", "0"], "greater than 0"),
        (["--threads", "-3"], "greater than 0"),
        (["--threads", "100000"], "less than or equal to 1024"),
        (["--tile-size", "0"], "greater than or equal to 16"),
        (["--tile-size", "100000"], "less than or equal to 16384"),
        (["--format", "png"], "tif, zarr"),
        (["--output-name", "{stme}"], "{stem} and {relpath}"),
        (["--output-name", "../{stem}"], "relative name"),
        (["--shard", "2/2"], "0 <= INDEX < COUNT"),
        (["--overwrite", "--skip-existing"], "either"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], phrase: str, tmp_path: Path
) -> None:
    """Invalid values get the config's checks and exit 2, before any file is read."""
    res = run("predict", "-m", tmp_path / "m.cpm", "-o", tmp_path / "o", "x.tif", *args)
    assert res.exit_code == 2, res.output
    assert phrase in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_upper_bounds_in_the_config(tmp_path: Path) -> None:
    """An absurd number of trees (or seed) is refused with a located message."""
    from convpaint.config import parse_config
    from convpaint.errors import ConfigError

    for raw, where in (
        ({"n_estimators": 10**9}, "classifier.n_estimators"),
        ({"seed": 2**40}, "classifier.seed"),
    ):
        with pytest.raises(ConfigError, match=where):
            parse_config({"classifier": raw})


# ---------------------------------------------------------------- items 2, 3: outputs


def test_overwrite_never_deletes_a_folder_it_did_not_write(
    tree: Path, fast_model: Path
) -> None:
    """--overwrite refuses a user folder in an output's place (zarr or tif name) and
    a folder at the model path, leaving them intact; its own zarr it replaces."""
    out = tree / "out"
    precious = out / "x_labels.zarr"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub/data.txt").write_text("keep me")

    def predict(*options: str):  # -> click.testing.Result
        return run(
            "predict", "-m", fast_model, "-o", out, tree / "raw/a/x.tif", *options, "-q"
        )

    res = predict("--format", "zarr", "--overwrite")
    assert res.exit_code == 1 and "did not write" in res.stderr
    assert (precious / "sub/data.txt").read_text() == "keep me"
    shutil.rmtree(precious)
    assert predict("--format", "zarr").exit_code == 0
    assert is_convpaint_output(precious)
    res = predict("--format", "zarr", "--overwrite")
    assert res.exit_code == 0, res.output
    (out / "x_labels.tif").mkdir()
    res = predict("--skip-existing")
    assert res.exit_code == 1 and "is a folder" in res.stderr  # never skipped as done
    # the model path
    model_dir = tree / "models/m.cpm"
    (model_dir / "keep").mkdir(parents=True)
    with pytest.raises(OutputError, match="did not write"):
        with atomic_output(model_dir) as tmp:
            tmp.write_bytes(b"new model")
    assert (model_dir / "keep").is_dir() and files_under(tree / "models") == []


def test_output_replacing_an_input_is_refused(tree: Path, fast_model: Path) -> None:
    """An output name that equals an input is refused, even with --overwrite."""
    res = run(
        "predict",
        "-m",
        fast_model,
        "-o",
        tree / "raw/a",
        tree / "raw/a/x.tif",
        "--output-name",
        "{stem}",
        "--overwrite",
    )
    assert res.exit_code == 1 and "the input" in res.stderr
    assert tifffile.imread(tree / "raw/a/x.tif").shape == (160, 192)


def test_claims_are_exclusive_and_stale_ones_are_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live claim refuses a second claimant; a claim from this machine whose process
    is gone is stale at once; one from another machine only after STALE_AFTER_S
    without refresh (measured against the file server's clock)."""
    out = tmp_path / "a_labels.tif"
    held, broken = claims.acquire(out)
    assert broken is None
    with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
        claims.acquire(out)
    held.release()
    assert files_under(tmp_path) == []
    path = claims.claim_path(out)
    # this machine, a pid that does not exist
    info = {
        "host": "here",
        "pid": 2**22 + 17,
        "machine": claims._machine_id(),
        "token": "0123456789ab",
        "started": "then",
    }
    path.write_text(json.dumps(info))
    again, broken = claims.acquire(out)
    assert broken is not None and broken.token == "0123456789ab"
    again.release()
    # another machine: fresh = busy, old = stale
    info.update(machine="elsewhere", pid=1, host="node42")
    path.write_text(json.dumps(info))
    with pytest.raises(OutputBusyError, match="host node42, pid 1"):
        claims.acquire(out)
    old = time.time() - claims.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    again, broken = claims.acquire(out)
    assert broken is not None and broken.host == "node42"
    again.release()
    # garbage content: judged by age only
    path.write_bytes(b"\x00garbage")
    with pytest.raises(OutputBusyError):
        claims.acquire(out)
    monkeypatch.setenv("CONVPAINT_STALE_CLAIM_S", "0")
    time.sleep(0.01)
    claims.acquire(out)[0].release()
    assert files_under(tmp_path) == []


def test_heartbeat_refreshes_held_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background thread touches every held claim, so other machines see it live."""
    monkeypatch.setattr(claims, "HEARTBEAT_S", 0.05)
    claims._HEARTBEAT._wake.set()  # wake a sleeping thread so it uses the new period
    held, _ = claims.acquire(tmp_path / "a.tif")
    old = time.time() - 1000
    os.utime(held.path, (old, old))
    deadline = time.time() + 5
    while held.path.stat().st_mtime < old + 500 and time.time() < deadline:
        time.sleep(0.02)
    assert held.path.stat().st_mtime > old + 500
    held.release()
    claims._HEARTBEAT._wake.clear()


def test_skip_existing_skips_an_output_another_run_is_writing(
    tree: Path, fast_model: Path
) -> None:
    """With --skip-existing a claimed output is skipped (status skipped), without it
    the run is refused with the holder named; the claim itself is untouched."""
    out = tree / "out"
    holder, _ = claims.acquire(out / "x_labels.tif")
    try:
        res = run(
            "predict",
            "-m",
            fast_model,
            "-o",
            out,
            tree / "raw/a/x.tif",
            "--skip-existing",
            "--json",
        )
        assert res.exit_code == 0, res.output
        rec = json.loads(res.stdout.splitlines()[0])
        assert rec["status"] == "skipped" and "another run" in rec["skip_reason"]
        res = run("predict", "-m", fast_model, "-o", out, tree / "raw/a/x.tif")
        assert res.exit_code == 1 and f"pid {os.getpid()}" in res.stderr
        assert holder.path.exists() and not (out / "x_labels.tif").exists()
    finally:
        holder.release()


def test_partial_of_a_dead_run_is_removed_by_the_next_claimant(tmp_path: Path) -> None:
    """The temporary files named after a dead claim's token go when it is broken."""
    from convpaint.batch import _claim_outputs
    from convpaint.io.atomic import partial_paths
    from convpaint.io.writers import OutputPaths

    out = tmp_path / "a_labels.tif"
    token = "abcdef012345"
    leftovers = partial_paths(out, token)
    for p in leftovers[:2]:
        p.write_bytes(b"half")
    claims.claim_path(out).write_text(
        json.dumps({"pid": 2**22 + 3, "machine": claims._machine_id(), "token": token})
    )
    unrelated = tmp_path / ".a_labels.tif.999999999999.partial"
    unrelated.write_bytes(b"someone else's")
    held = _claim_outputs(OutputPaths(out, None))
    assert not any(p.exists() for p in leftovers) and unrelated.exists()
    for c in held:
        c.release()


def test_interrupts_exit_130_and_143_naming_what_finished(
    tree: Path, fast_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C and SIGTERM during the second input: exit 130/143, the first output is
    kept and named, the second leaves no file or claim behind."""
    from convpaint import batch
    from convpaint.signals import Terminated

    real = batch.predict_image
    for exc, code in ((KeyboardInterrupt(), 130), (Terminated(), 143)):
        calls: list[int] = []

        def flaky(
            *args: object,
            exc: BaseException = exc,
            calls: list[int] = calls,
            **kwargs: object,
        ) -> object:
            calls.append(1)
            if len(calls) == 2:
                raise exc
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(batch, "predict_image", flaky)
        out = tree / f"o{code}"
        res = run("predict", "-m", fast_model, "-o", out, tree / "raw/b", "--json")
        assert res.exit_code == code
        assert "1 of 2 input(s) were predicted" in res.stderr
        assert "y[1].tif' was not finished" in res.stderr
        rec = [json.loads(line) for line in res.stdout.splitlines()]
        assert rec[0]["status"] == "done" and rec[-1]["status"] == "interrupted"
        assert files_under(out) == ["x_labels.tif"]


def test_filesystem_errors_are_one_located_message(
    tree: Path, fast_model: Path
) -> None:
    """An output folder that is a file or that cannot be written: exit 1, one message
    naming the path and the reason, nothing left behind."""
    (tree / "afile").write_text("x")
    res = run("predict", "-m", fast_model, "-o", tree / "afile/sub", tree / "raw/a")
    assert (
        res.exit_code == 1 and "'" + str(tree / "afile") + "' is a file" in res.stderr
    )
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys to stand in for a read-only folder")
    # root ignores permissions; sysfs refuses new files to everyone
    res = run("predict", "-m", fast_model, "-o", "/sys/kernel", tree / "raw/a")
    assert res.exit_code == 1
    assert "/sys/kernel" in res.stderr and "(EACCES)" in res.stderr
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- item 13, config


def test_yaml_alias_bomb_and_deep_nesting_are_refused_quickly(tmp_path: Path) -> None:
    """A billion-laughs config and a 20000-deep one fail in well under a second."""
    from convpaint.config import load_config
    from convpaint.errors import ConfigError

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 20_000 + "]" * 20_000)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    for path, phrase in (
        (bomb, "expands to more than"),
        (deep, "nested more than"),
        (loop, "refers to its own anchor"),
    ):
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match=phrase):
            load_config(path)
        assert time.perf_counter() - t0 < 3
    # modest use of aliases stays fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("classifier: {n_estimators: &n 12, min_samples_leaf: *n}\n")
    assert load_config(ok).classifier.min_samples_leaf == 12


def test_tiff_declaring_a_huge_image_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    """A 500-byte TIFF claiming 300000 x 300000 pixels is refused at open, at once."""
    import struct

    from convpaint.errors import DataError
    from convpaint.io.readers import open_image

    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(n):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            fmt = "<I" if kind == 4 else "<H"
            data[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(
                fmt, 300_000 if kind == 4 else 60_000
            )
    path.write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"bomb\.tif.*implausible|bomb\.tif.*crafted"):
        open_image(path, "YX")
    assert time.perf_counter() - t0 < 2
    # an honest, highly compressible image of the same kind still opens
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.zeros((4000, 4000), np.uint8), compression="zlib")
    with open_image(blank, "YX") as src:
        assert src.shape_yx == (4000, 4000)


def test_warnings_are_one_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Inside a command, a warning repeated 500 times prints one line, no source."""
    from convpaint.cli import _Session

    with _Session(debug=False):
        for _ in range(500):
            warnings.warn("few pixels\n  in class 3", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "few pixels in class 3" in err
    assert len(err.strip().splitlines()) == 1 and "warnings.warn" not in err


def test_progress_lines_for_batch_logs(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a terminal, progress is timestamped lines (file i/N, tiles, Mpx/s,
    ETA), at most one per interval."""
    from convpaint import progress

    progress.configure(enabled=True, interval=0.0)
    try:
        with progress.bar(2, "images", "file") as files:
            progress.set_item(1, 2, "a.tif", pixels=4_000_000)
            with progress.bar(4, "a.tif", "tile") as tiles:
                tiles.update(1)
                time.sleep(0.01)
                tiles.update(1)
            files.update(1)
        lines = capsys.readouterr().err.splitlines()
        assert any(
            "progress: file 1/2 'a.tif': tile 2/4 (50 %)" in line
            and "Mpx/s" in line
            and "ETA" in line
            for line in lines
        ), lines
        assert lines[0][:4].isdigit()  # starts with a timestamp
        # a resumed run: tiles stored before count towards the total only
        progress.set_item(1, 1, "b.zarr", pixels=100_000_000)
        with progress.bar(100, "b.zarr", "tile", initial=90) as tiles:
            time.sleep(0.05)
            tiles.update(1)
            line = capsys.readouterr().err.splitlines()[-1]
        assert "tile 91/100 (91 %)" in line
        rate = float(line.split(", ")[1].split()[0])
        assert rate < 1_000_000 / 0.05 / 1e6 * 1.01  # one tile's pixels, not 91
        progress.configure(enabled=True, interval=3600)
        with progress.bar(100, "x", "tile") as b:
            for _ in range(100):
                b.update(1)
        assert capsys.readouterr().err == ""
    finally:
        progress.configure(enabled=False)


def test_output_exists_error_is_still_an_output_exists_error() -> None:
    """OutputBusyError is an OutputExistsError, so existing handlers keep working."""
    assert issubclass(OutputBusyError, OutputExistsError)
