"""The model file: round trip, refusal of crafted or tampered files, feature checks."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from convpaint import api
from convpaint.errors import DataError, ModelBundleError
from convpaint.model_io import load_model, read_meta, save_model


def _forest() -> tuple[RandomForestClassifier, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, 7, 3)
    y[X[:, 2] > 1.2] = 12
    return RandomForestClassifier(15, random_state=0).fit(X, y), X


def test_round_trip_gives_identical_probabilities(tmp_path: Path) -> None:
    """A saved and reloaded forest predicts exactly scikit-learn's probabilities."""
    forest, X = _forest()
    save_model(tmp_path / "m.cpm", forest, {"classes": forest.classes_.tolist()})
    loaded = load_model(tmp_path / "m.cpm")
    np.testing.assert_array_equal(
        loaded.forest.predict_proba(X), forest.predict_proba(X).astype(np.float32)
    )
    np.testing.assert_array_equal(loaded.forest.classes, [3, 7, 12])
    assert read_meta(tmp_path / "m.cpm")["format"] == "convpaint-model"
    assert not list(tmp_path.glob("*.partial"))


def test_model_file_contains_no_pickle(tmp_path: Path) -> None:
    """Every entry is JSON or a plain numeric .npy array."""
    forest, _ = _forest()
    save_model(tmp_path / "m.cpm", forest, {"classes": forest.classes_.tolist()})
    with zipfile.ZipFile(tmp_path / "m.cpm") as zf:
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith(".npy"):
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                assert arr.dtype.kind in "iuf"
            else:
                json.loads(data)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("code ran",))


def test_crafted_files_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pickles, foreign zips, object arrays and tampered arrays are refused; nothing runs."""
    forest, _ = _forest()
    good = tmp_path / "good.cpm"
    save_model(good, forest, {"classes": forest.classes_.tolist()})

    pkl = tmp_path / "pickle.cpm"
    pkl.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ModelBundleError, match="not a zip"):
        load_model(pkl)

    extra = tmp_path / "extra.cpm"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(extra, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
        dst.writestr("forest/payload.pkl", pickle.dumps(_Evil()))
    with pytest.raises(ModelBundleError, match="unexpected entries"):
        load_model(extra)

    def rewrite(path: Path, name: str, data: bytes) -> None:
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            for n in src.namelist():
                dst.writestr(n, data if n == name else src.read(n))

    obj = io.BytesIO()
    np.save(obj, np.array([_Evil()], dtype=object), allow_pickle=True)
    tampered = tmp_path / "object.cpm"
    rewrite(tampered, "forest/threshold.npy", obj.getvalue())
    with pytest.raises(ModelBundleError, match="checksum"):
        load_model(tampered)

    # an object array whose checksum was updated too is still refused (no pickle loading)
    meta = json.loads(zipfile.ZipFile(good).read("model.json"))
    import hashlib

    meta["forest"]["array_sha256"]["forest/threshold.npy"] = hashlib.sha256(
        obj.getvalue()
    ).hexdigest()
    forged = tmp_path / "forged.cpm"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(forged, "w") as dst:
        for n in src.namelist():
            if n == "model.json":
                dst.writestr(n, json.dumps(meta))
            elif n == "forest/threshold.npy":
                dst.writestr(n, obj.getvalue())
            else:
                dst.writestr(n, src.read(n))
    with pytest.raises(ModelBundleError, match="not a plain numeric array"):
        load_model(forged)

    notjson = tmp_path / "notjson.cpm"
    rewrite(notjson, "model.json", b"\x80not json")
    with pytest.raises(ModelBundleError, match="not valid JSON"):
        load_model(notjson)
    assert "code ran" not in capsys.readouterr().out


def test_missing_model_file(tmp_path: Path) -> None:
    """A missing model path says how to make one."""
    with pytest.raises(ModelBundleError, match="convpaint train"):
        load_model(tmp_path / "none.cpm")


def test_trained_model_metadata(trained_em_model: Path) -> None:
    """A trained model records config, extractors, weights digest, classes, versions, files."""
    meta = read_meta(trained_em_model)
    assert meta["classes"] == [1, 2]
    assert (
        meta["n_features"] == 3 * 64 + 1 + 2 * 8
    )  # vgg16 x3 scalings + intensity + 8 filters x 2 sigmas
    assert len(meta["feature_names"]) == meta["n_features"]
    assert len(meta["fingerprints"][0]["weights_sha256"]) == 64
    assert {"convpaint", "scikit-learn", "torch", "numpy"} <= set(meta["versions"])
    assert meta["training"]["seed"] == 0
    assert len(meta["training"]["files"][0]["image_sha256"]) == 64
    assert meta["normalization"]["mode"] == "image"
    assert meta["halo"] >= 12 and meta["config"]["classifier"]["n_estimators"] == 25


def _edit_meta(src: Path, dst: Path, edit: object) -> Path:
    """Copy a model file, changing its model.json with ``edit(meta)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n == "model.json":
                meta = json.loads(data)
                edit(meta)  # type: ignore[operator]
                data = json.dumps(meta).encode()
            zout.writestr(n, data)
    return dst


def test_feature_count_mismatch_is_refused(
    trained_em_model: Path, tmp_path: Path
) -> None:
    """A model whose extractors now yield another feature count is refused clearly."""

    def fewer_sigmas(meta: dict) -> None:  # the filters now give fewer features
        meta["extractors"][1]["sigmas"] = [1.0]

    bad = _edit_meta(trained_em_model, tmp_path / "bad.cpm", fewer_sigmas)
    img = trained_em_model.parent / "img.tif"
    with pytest.raises(
        ModelBundleError,
        match=r"trained with 209 features but its extractors now produce 201",
    ):
        api.predict(bad, [str(img)], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_weights_digest_mismatch_is_refused(
    trained_em_model: Path, tmp_path: Path
) -> None:
    """Predicting with other weights than the model was trained with is refused."""

    def other_weights(meta: dict) -> None:
        meta["fingerprints"][0]["weights_sha256"] = "0" * 64

    bad = _edit_meta(trained_em_model, tmp_path / "w.cpm", other_weights)
    with pytest.raises(ModelBundleError, match="differs from training"):
        api.predict(bad, [str(trained_em_model.parent / "img.tif")], tmp_path / "out")


def test_channel_count_mismatch_is_refused(
    trained_em_model: Path, tmp_path: Path
) -> None:
    """A 1-channel model refuses a 3-channel image with both counts in the message."""
    import tifffile

    tifffile.imwrite(
        tmp_path / "rgb.tif", np.zeros((3, 40, 40), np.uint8), photometric="minisblack"
    )
    with pytest.raises(
        DataError, match=r"has 3 channel\(s\) but model .* trained on 1"
    ):
        api.predict(
            trained_em_model, [str(tmp_path / "rgb.tif")], tmp_path / "out", axes="CYX"
        )
