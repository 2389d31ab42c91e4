"""Hostile model files: crafted from a real trained model, each refused quickly.

Every case edits a real model file (trained once per session on a crop of the
sample image) and recomputes the checksums stored in ``model.json``, so the edit
gets past them: what refuses the file is the validation of its content.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from convpaint.cli import app
from convpaint.errors import ModelBundleError
from convpaint.model_io import load_model, read_meta

from .conftest import SAMPLE

#: Seconds a refusal may take before the test calls it a hang.
TIMEOUT = 30.0


@pytest.fixture(scope="session")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on a crop of the sample nuclei image (filter bank)."""
    from convpaint import api
    from convpaint.config import parse_config

    d = tmp_path_factory.mktemp("real_model")
    crop = (slice(256, 448), slice(256, 448))
    tifffile.imwrite(d / "img.tif", tifffile.imread(SAMPLE / "images/nuclei.tif")[crop])
    tifffile.imwrite(
        d / "scr.tif",
        tifffile.imread(SAMPLE / "annotations/nuclei_scribbles.tif")[crop],
    )
    raw = {
        "features": [{"name": "filters", "sigmas": [1.0, 3.5]}],
        # scikit-learn's trees of this easy crop: the edits below need a first tree
        # with several splits (the default trainer separates it in one or two)
        "classifier": {"n_estimators": 6, "seed": 0, "algorithm": "sklearn"},
        "train": {
            "images": [str(d / "img.tif")],
            "annotations": [str(d / "scr.tif")],
            "model": str(d / "m.cpm"),
            "report": False,
        },
    }
    api.train(parse_config(raw))
    return d / "m.cpm"


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(
    path: Path, entries: dict[str, bytes], *, stored: tuple[str, ...] = ()
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            kind = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            zf.writestr(name, data, compress_type=kind)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _craft(
    src: Path,
    dst: Path,
    *,
    arrays: Callable[[dict[str, np.ndarray]], None] | None = None,
    meta: Callable[[dict], None] | None = None,
) -> Path:
    """Copy a model, editing its arrays and/or metadata, with checksums recomputed."""
    entries = _entries(src)
    info = json.loads(entries["model.json"])
    if arrays is not None:
        loaded = {
            n[len("forest/") : -len(".npy")]: np.load(io.BytesIO(b))
            for n, b in entries.items()
            if n.startswith("forest/")
        }
        arrays(loaded)
        for name, arr in loaded.items():
            entries[f"forest/{name}.npy"] = _npy(arr)
    info["forest"]["array_sha256"] = {
        n: hashlib.sha256(b).hexdigest()
        for n, b in entries.items()
        if n.startswith("forest/")
    }
    if meta is not None:
        meta(info)
    entries["model.json"] = json.dumps(info).encode()
    return _write(dst, entries)


def _set_declared_size(path: Path, entry: str, size: int) -> None:
    """Rewrite an entry's uncompressed size in the zip's central directory."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == entry.encode():
            struct.pack_into("<I", data, pos + 24, size)
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{entry} not in the central directory")


def _load_refused(path: Path, match: str) -> str:
    """Load ``path`` in a guarded thread: it must raise ModelBundleError matching
    ``match`` within TIMEOUT seconds (a hang fails the test instead of blocking)."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            load_model(path)
            outcome["error"] = None
        except BaseException as err:
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), f"loading {path.name} did not finish (hang)"
    err = outcome["error"]
    assert isinstance(err, ModelBundleError), f"not refused: {err!r}"
    assert str(path) in str(err)
    import re

    assert re.search(match, str(err)), str(err)
    return str(err)


def _split_nodes(a: dict[str, np.ndarray], tree: int = 0) -> np.ndarray:
    """Global indices of the split nodes of one tree."""
    lo, hi = a["node_offsets"][tree], a["node_offsets"][tree + 1]
    return lo + np.flatnonzero(a["left_child"][lo:hi] != -1)


def _set(field: str, value: object, pick: int = 1) -> Callable[[dict], None]:
    """An edit setting ``field`` of tree 0's ``pick``-th split node to ``value``."""

    def edit(a: dict[str, np.ndarray]) -> None:
        a[field][_split_nodes(a)[pick]] = value

    return edit


def _child_to_ancestor(a: dict[str, np.ndarray]) -> None:
    """Point a deep split node's left child back at its parent: a cycle."""
    left = a["left_child"][: a["node_offsets"][1]]
    parent = int(np.flatnonzero(left != -1)[0])
    child = int(left[parent])
    assert left[child] != -1, "the root's left child should be a split node"
    a["left_child"][child] = parent


def _node_twice(a: dict[str, np.ndarray]) -> None:
    """Both children of the root are its left child (reached twice)."""
    a["right_child"][0] = a["left_child"][0]


def _unreachable(a: dict[str, np.ndarray]) -> None:
    """Turn a split node into a leaf: its former children lose their parent."""
    node = _split_nodes(a)[2]
    a["left_child"][node] = a["right_child"][node] = -1


def _one_child_leaf(a: dict[str, np.ndarray]) -> None:
    leaf = int(np.flatnonzero(a["left_child"][: a["node_offsets"][1]] == -1)[0])
    a["right_child"][leaf] = 1


CASES = {
    # features outside [0, n_features) at a split node
    "negative feature": (
        _set("feature", -5),
        r"tree 0, node \d+: splits on feature -5",
    ),
    "feature -1 at a split": (_set("feature", -1), r"splits on feature -1, outside"),
    "feature >= n_features": (
        _set("feature", 17),
        r"splits on feature 17, outside 0\.\.16",
    ),
    # thresholds
    "NaN threshold": (_set("threshold", np.nan), r"threshold nan is not a finite"),
    "inf threshold": (_set("threshold", -np.inf), r"threshold -inf is not a finite"),
    # children that do not form a tree
    "child cycle": (_child_to_ancestor, r"left child 0 points back"),
    "child is itself": (_set("right_child", 0, pick=0), r"right child 0 points back"),
    "child is the root": (_set("left_child", 0, pick=-1), r"left child 0 points back"),
    "unreachable node": (_unreachable, r"has no parent: it is unreachable"),
    "node reached twice": (_node_twice, r"node \d+: the node has 2 parents"),
    "child out of range": (_set("left_child", 10**6), r"left child 1000000 is outside"),
    "leaf with one child": (_one_child_leaf, r"a leaf has both children -1"),
    # leaf values
    "negative value": (_set("values", -1.0), r"must be finite and non-negative"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_trees_are_refused(real_model: Path, tmp_path: Path, case: str) -> None:
    """Each kind of broken tree is refused on load with a message locating it."""
    edit, match = CASES[case]
    bad = _craft(real_model, tmp_path / "bad.cpm", arrays=edit)
    _load_refused(bad, match)


def _set_meta(key: str, value: object) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        meta[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            _set_meta("classes", ["a", "b"]),
            r"classes are \['a', 'b'\], expected a list",
        ),
        (_set_meta("classes", [1.0, 2.5]), r"classes are \[1\.0, 2\.5\]"),
        (_set_meta("classes", [2, 2]), r"distinct non-negative integers"),
        (_set_meta("classes", [-1, 2]), r"distinct non-negative integers"),
        (_set_meta("classes", [1, 2, 3]), r"lists 3 classes but its forest has 2"),
        (_set_meta("format_version", "1"), r"format_version is '1' \(str\), expected"),
        (_set_meta("format_version", True), r"format_version is True \(bool\)"),
        (_set_meta("format_version", 99), r"format version 99, newer .* upgrade"),
        (_set_meta("forest", []), r"no forest description"),
        (_set_meta("n_features", 18), r"says 18 features but its forest reads 17"),
    ],
)
def test_crafted_metadata_is_refused(
    real_model: Path, tmp_path: Path, edit: Callable[[dict], None], match: str
) -> None:
    """Wrong types or inconsistent values in model.json are refused clearly."""
    bad = _craft(real_model, tmp_path / "bad.cpm", meta=edit)
    _load_refused(bad, match)
    with pytest.raises(ModelBundleError, match=match):
        read_meta(bad)  # `convpaint info` reads only the metadata: refused too


def test_huge_declared_entry_is_refused_without_allocating(
    real_model: Path, tmp_path: Path
) -> None:
    """A 3 MB file declaring a 3 GiB entry is refused from the zip directory alone."""
    entries = _entries(real_model)
    meta = json.loads(entries["model.json"])
    meta["padding"] = np.random.default_rng(0).bytes(3 * 2**20).hex()[: 3 * 2**20]
    entries["model.json"] = json.dumps(meta).encode()
    bomb = _write(tmp_path / "bomb.cpm", entries, stored=("model.json",))
    assert bomb.stat().st_size > 3 * 2**20
    _set_declared_size(bomb, "forest/left_child.npy", 3 * 2**30)
    tracemalloc.start()
    try:
        _load_refused(bomb, r"declare \d+ bytes uncompressed.*decompression bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_entry_larger_than_its_content_needs_is_refused(
    real_model: Path, tmp_path: Path
) -> None:
    """An array entry declaring more bytes than its node count implies is refused."""
    bad = _write(tmp_path / "bad.cpm", _entries(real_model))
    declared = zipfile.ZipFile(real_model).getinfo("forest/feature.npy").file_size
    _set_declared_size(bad, "forest/feature.npy", declared + 2**20)
    _load_refused(bad, r"forest/feature\.npy declares \d+ bytes, more than the \d+")


def test_huge_model_json_is_refused(real_model: Path, tmp_path: Path) -> None:
    """A model.json declaring 2 GiB is refused before it is read."""
    bad = _write(tmp_path / "bad.cpm", _entries(real_model))
    _set_declared_size(bad, "model.json", 2 * 2**30)
    _load_refused(bad, r"model\.json declares 2147483648 bytes")
    with pytest.raises(ModelBundleError, match=r"model\.json declares"):
        read_meta(bad)


def test_entry_longer_than_declared_is_refused(
    real_model: Path, tmp_path: Path
) -> None:
    """Content that decompresses to more than its declared size is never read past it."""
    bad = _write(tmp_path / "bad.cpm", _entries(real_model))
    declared = zipfile.ZipFile(real_model).getinfo("forest/threshold.npy").file_size
    _set_declared_size(bad, "forest/threshold.npy", declared - 64)
    _load_refused(bad, r"forest/threshold\.npy is corrupt")


def test_unknown_and_missing_entries_are_refused(
    real_model: Path, tmp_path: Path
) -> None:
    """Only the known entries are accepted, and all the needed ones must be there."""
    entries = _entries(real_model)
    _load_refused(
        _write(tmp_path / "extra.cpm", {**entries, "forest/extra.npy": b"0"}),
        r"unexpected entries \['forest/extra\.npy'\]",
    )
    _load_refused(
        _write(tmp_path / "dir.cpm", {**entries, "../model.json": b"{}"}),
        r"unexpected entries",
    )
    del entries["forest/threshold.npy"]
    _load_refused(
        _write(tmp_path / "missing.cpm", entries), r"threshold\.npy is missing"
    )
    del entries["model.json"]
    _load_refused(_write(tmp_path / "nojson.cpm", entries), r"model\.json is missing")


def test_cli_refuses_crafted_model_with_exit_1(
    real_model: Path, tmp_path: Path
) -> None:
    """`predict` and `info` on hostile files print one message and exit 1."""
    cycle = _craft(real_model, tmp_path / "cycle.cpm", arrays=_child_to_ancestor)
    img = real_model.parent / "img.tif"
    res = CliRunner().invoke(
        app,
        ["predict", "--model", str(cycle), "--output", str(tmp_path / "o"), str(img)],
    )
    assert res.exit_code == 1 and "points back" in res.output, res.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    version = _craft(
        real_model, tmp_path / "v.cpm", meta=_set_meta("format_version", "x")
    )
    res = CliRunner().invoke(app, ["info", str(version)])
    assert res.exit_code == 1 and "format_version" in res.output, res.output


def test_real_model_still_loads(real_model: Path, tmp_path: Path) -> None:
    """The edit helper itself changes nothing when no edit is made."""
    same = _craft(real_model, tmp_path / "same.cpm")
    assert load_model(same).meta["classes"] == [1, 2]
