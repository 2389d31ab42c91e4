"""The object model file: round trip, and refusal of anything edited or unexpected."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from convpaint.errors import ModelBundleError
from convpaint.objects import model as model_io
from convpaint.objects.model import load_object_model, save_object_model


def _forest_model(path: Path) -> Path:
    from convpaint.config.objects import ObjectForestConfig
    from convpaint.objects.forest import fit_forest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = np.where(x[:, 0] > 0, 1, 2)
    nodes, _ = fit_forest(x, y, ObjectForestConfig(n_estimators=5), seed=0, n_jobs=1)
    meta = {
        "kind": "forest",
        "classes": [1, 2],
        "feature_names": ["a", "b", "c", "d"],
    }
    return save_object_model(
        path, meta, {f"forest/{k}.npy": v for k, v in nodes.arrays().items()}
    )


def _cnn_model(path: Path) -> Path:
    pytest.importorskip("torch")
    from convpaint.objects.cnn import build_network, state_arrays

    arch = {"name": "small", "ndim": 2, "in_channels": 2, "n_classes": 2, "width": 2}
    arrays = {f"cnn/{k}.npy": v for k, v in state_arrays(build_network(arch)).items()}
    return save_object_model(
        path, {"kind": "cnn", "classes": [1, 2], "network": arch}, arrays
    )


def _rewrite(
    path: Path, edit: Callable[[dict[str, bytes]], None], *, fix_sha: bool
) -> None:
    """Rewrite the zip after ``edit`` changed its entries; optionally fix checksums so
    that only the deeper checks can catch the change."""
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    edit(entries)
    if fix_sha:
        meta = json.loads(entries["model.json"])
        for name, spec in meta["arrays"].items():
            if name in entries:
                spec["sha256"] = hashlib.sha256(entries[name]).hexdigest()
                arr = np.load(io.BytesIO(entries[name]), allow_pickle=True)
                spec["shape"], spec["dtype"] = list(arr.shape), str(arr.dtype)
        entries["model.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_forest_round_trip(tmp_path: Path) -> None:
    """A saved forest loads back with identical predictions."""
    path = _forest_model(tmp_path / "m.cpo")
    model = load_object_model(path)
    x = np.random.default_rng(1).normal(size=(20, 4))
    assert model.kind == "forest" and model.classes == [1, 2]
    assert model.forest().predict_proba(x).shape == (20, 2)


def test_cnn_round_trip(tmp_path: Path) -> None:
    """A saved network loads back with identical tensors."""
    import torch

    path = _cnn_model(tmp_path / "m.cpo")
    net = load_object_model(path).network()
    x = torch.zeros(1, 2, 16, 16)
    assert net(x).shape == (1, 2)


def _set_child(entries: dict[str, bytes]) -> None:
    left = np.load(io.BytesIO(entries["forest/left.npy"]))
    left[0] = 10**6
    entries["forest/left.npy"] = _npy(left)


def _object_array(entries: dict[str, bytes]) -> None:
    entries["forest/value.npy"] = _npy(np.array([{"x": 1}], dtype=object))


def _flip_byte(entries: dict[str, bytes]) -> None:
    data = bytearray(entries["forest/threshold.npy"])
    data[-1] ^= 0xFF
    entries["forest/threshold.npy"] = bytes(data)


@pytest.mark.parametrize(
    ("edit", "fix_sha", "phrase"),
    [
        # a changed byte: the checksum catches it
        (_flip_byte, False, "checksum"),
        # an extra entry, even a harmless-looking one
        (lambda e: e.update({"payload.pkl": b"x"}), False, "unexpected entries"),
        # a pickled object array with a matching checksum
        (_object_array, True, "plain numeric"),
        # a child index outside its tree with a matching checksum
        (_set_child, True, "child index"),
        # a missing array
        (lambda e: e.pop("forest/offsets.npy"), False, "do not agree"),
        # a newer format
        (
            lambda e: e.update(
                {
                    "model.json": json.dumps(
                        {**json.loads(e["model.json"]), "format_version": 99}
                    ).encode()
                }
            ),
            False,
            "upgrade",
        ),
    ],
)
def test_edited_forest_models_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, bytes]], None], fix_sha: bool, phrase: str
) -> None:
    """Edited or crafted model files are refused with a ModelBundleError."""
    path = _forest_model(tmp_path / "m.cpo")
    _rewrite(path, edit, fix_sha=fix_sha)
    with pytest.raises(ModelBundleError, match=phrase):
        load_object_model(path).forest()


def test_cnn_tensor_with_wrong_shape_is_refused(tmp_path: Path) -> None:
    """A network tensor whose shape differs from the described network is refused."""
    path = _cnn_model(tmp_path / "m.cpo")

    def edit(entries: dict[str, bytes]) -> None:
        entries["cnn/0.weight.npy"] = _npy(np.zeros((3, 3), np.float32))

    _rewrite(path, edit, fix_sha=True)
    with pytest.raises(ModelBundleError, match=r"0\.weight"):
        load_object_model(path).network()


def test_size_is_bounded_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry larger than the limit is refused before it is read."""
    path = _forest_model(tmp_path / "m.cpo")
    monkeypatch.setattr(model_io, "_MAX_ENTRY_BYTES", 64)
    with pytest.raises(ModelBundleError, match="implausibly large"):
        load_object_model(path)


def test_other_files_are_refused(tmp_path: Path) -> None:
    """Missing files, non-zip files and pixel models give clear messages."""
    with pytest.raises(ModelBundleError, match="does not exist"):
        load_object_model(tmp_path / "none.cpo")
    (tmp_path / "x.cpo").write_text("not a zip")
    with pytest.raises(ModelBundleError, match="not a zip"):
        load_object_model(tmp_path / "x.cpo")
    with zipfile.ZipFile(tmp_path / "pixel.cpm", "w") as zf:
        zf.writestr("model.json", json.dumps({"format": "convpaint-model"}))
    with pytest.raises(ModelBundleError, match="pixel model"):
        load_object_model(tmp_path / "pixel.cpm")
