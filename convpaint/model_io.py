"""The model file: a zip of JSON metadata and plain numeric arrays; no pickle.

Layout (``.cpm``)::

    model.json          format marker, versions, config, classes, normalisation, ...
    forest/<field>.npy  every tree's nodes concatenated; ``node_offsets`` splits them

Loading never executes code and needs no scikit-learn: the zip directory is checked
before anything is decompressed (known names only, sizes bounded), entries are read
with a size limit and ``allow_pickle=False``, every array's SHA-256 is checked
against ``model.json``, and the trees are validated completely and handed to
:class:`convpaint.forest.Forest`, convpaint's own evaluator.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convpaint.errors import ModelBundleError
from convpaint.forest import NODE_FIELDS, Forest, node_arrays
from convpaint.io.atomic import atomic_output

__all__ = ["FORMAT", "FORMAT_VERSION", "LoadedModel", "load_model", "save_model"]

logger = logging.getLogger(__name__)

FORMAT = "convpaint-model"
FORMAT_VERSION = 1
_ARRAYS = (*NODE_FIELDS, "values", "node_offsets", "max_depths")
_ENTRIES = frozenset({"model.json", *(f"forest/{name}.npy" for name in _ARRAYS)})
#: Largest ``model.json`` accepted (real ones are a few kilobytes).
_MAX_JSON_BYTES = 64 * 2**20
#: Largest ratio of declared uncompressed bytes to the file's size (real models: ~6).
_MAX_RATIO = 50
#: Declared bytes accepted whatever the ratio (small files).
_FREE_BYTES = 64 * 2**20
#: Room for an .npy header on top of an array's data.
_NPY_HEADER_BYTES = 4096


@dataclass
class LoadedModel:
    """A model read back from disk.

    Attributes
    ----------
    forest : Forest
        The evaluator: ``predict_proba(features, n_jobs=...)``,
        ``predict_labels(features, n_jobs=...)``, ``classes``, ``n_features``,
        ``n_classes``, ``n_trees``.
    meta : dict
        The content of ``model.json``.
    path : Path
        Where it was read from.
    """

    forest: Forest
    meta: dict[str, Any]
    path: Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def save_model(path: Path | str, forest: Any, meta: dict[str, Any]) -> Path:
    """Write a fitted forest and its metadata to ``path`` atomically.

    Parameters
    ----------
    path : Path or str
        The ``.cpm`` file to write.
    forest : sklearn.ensemble.RandomForestClassifier or FittedForest
        Fitted; stored as its node tables (:func:`convpaint.forest.node_arrays`).
    meta : dict
        JSON-serialisable metadata; must hold ``classes``.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    arrays = node_arrays(forest)
    blobs = {f"forest/{k}.npy": _npy_bytes(v) for k, v in arrays.items()}
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta["forest"] = {
        "n_estimators": len(arrays["node_offsets"]) - 1,
        "n_classes": int(forest.n_classes_),
        "n_features": int(forest.n_features_in_),
        "array_sha256": {name: _sha(b) for name, b in blobs.items()},
    }
    with (
        atomic_output(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf,
    ):
        zf.writestr("model.json", json.dumps(meta, indent=2, sort_keys=False))
        for name, blob in blobs.items():
            zf.writestr(name, blob)
    return path


def _refuse(path: Path, why: str) -> ModelBundleError:
    return ModelBundleError(
        f"'{path}' is not a usable convpaint model: {why}. Use a file written by "
        "`convpaint train`; model files from unknown sources are never executed"
    )


def read_meta(path: Path | str) -> dict[str, Any]:
    """Read and check only ``model.json`` (fast; used by `convpaint info`).

    Raises
    ------
    ModelBundleError
        Missing file, not a convpaint model, implausible sizes, newer format.
    """
    return _read(Path(path), arrays=False)[0]


def _check_directory(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Check the zip's directory before anything is decompressed.

    Only known names, stored or deflated, unencrypted, and declared sizes that are
    plausible: ``model.json`` at most ``_MAX_JSON_BYTES``, and all entries together
    at most ``_MAX_RATIO`` times the file's size on disk (a few megabytes declaring
    gigabytes is a decompression bomb, refused without allocating anything).
    """
    infos = zf.infolist()
    names = [i.filename for i in infos]
    bad = [n for n in names if n not in _ENTRIES]
    if bad:
        raise _refuse(path, f"unexpected entries {bad[:3]}")
    if len(set(names)) != len(names):
        raise _refuse(path, "an entry name appears twice")
    if "model.json" not in names:
        raise _refuse(path, "model.json is missing")
    for info in infos:
        if info.flag_bits & 0x1:
            raise _refuse(path, f"entry {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(
                path,
                f"entry {info.filename} uses compression method {info.compress_type}; "
                "convpaint writes only stored or deflated entries",
            )
    json_size = next(i.file_size for i in infos if i.filename == "model.json")
    if json_size > _MAX_JSON_BYTES:
        raise _refuse(
            path,
            f"model.json declares {json_size} bytes, more than the "
            f"{_MAX_JSON_BYTES // 2**20} MiB a model's metadata can need",
        )
    total = sum(i.file_size for i in infos)
    on_disk = path.stat().st_size
    if total > max(_FREE_BYTES, _MAX_RATIO * on_disk):
        raise _refuse(
            path,
            f"its entries declare {total} bytes uncompressed, {total / on_disk:.0f} "
            f"times the file's {on_disk} bytes (model files compress at most "
            f"{_MAX_RATIO}:1; this looks like a decompression bomb)",
        )
    return dict(zip(names, infos, strict=True))


def _read_entry(
    path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int
) -> bytes:
    """An entry's bytes, refusing one declared or found larger than ``limit``."""
    if info.file_size > limit:
        raise _refuse(
            path,
            f"entry {info.filename} declares {info.file_size} bytes, more than the "
            f"{limit} its content can need",
        )
    try:
        with zf.open(info) as f:
            # never more than declared: zipfile stops there and checks the CRC-32
            data = f.read(info.file_size)
            extra = f.read(1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as err:
        raise _refuse(path, f"entry {info.filename} is corrupt ({err})") from err
    if extra or len(data) != info.file_size:
        raise _refuse(
            path,
            f"entry {info.filename} holds another size than the {info.file_size} "
            "bytes it declares",
        )
    return data


def _check_meta(path: Path, meta: object) -> dict[str, Any]:
    """The parts of ``model.json`` that loading relies on, with their types."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _refuse(path, "model.json lacks the convpaint format marker")
    version = meta.get("format_version")
    if not _is_int(version):
        raise _refuse(
            path,
            f"model.json's format_version is {version!r} "
            f"({type(version).__name__}), expected an integer",
        )
    if version > FORMAT_VERSION:
        raise ModelBundleError(
            f"model '{path}' uses format version {version}, newer than this convpaint "
            f"reads ({FORMAT_VERSION}); upgrade convpaint"
        )
    if version < 1:
        raise _refuse(path, f"format version {version} does not exist")
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(_is_int(c) and c >= 0 for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise _refuse(
            path,
            f"model.json's classes are {str(classes)[:80]}, expected a list of "
            "distinct non-negative integers (the label values)",
        )
    forest = meta.get("forest")
    if not isinstance(forest, dict):
        raise _refuse(path, "model.json has no forest description")
    for key in ("n_estimators", "n_classes", "n_features"):
        value = forest.get(key)
        if not _is_int(value) or value < 1:
            raise _refuse(
                path,
                f"model.json's forest.{key} is {value!r}, expected an integer >= 1",
            )
    if forest["n_classes"] != len(classes):
        raise _refuse(
            path,
            f"model.json lists {len(classes)} classes but its forest has "
            f"{forest['n_classes']}",
        )
    if "n_features" in meta and meta["n_features"] != forest["n_features"]:
        raise _refuse(
            path,
            f"model.json says {meta['n_features']!r} features but its forest reads "
            f"{forest['n_features']}",
        )
    if not isinstance(forest.get("array_sha256"), dict):
        raise _refuse(path, "model.json lacks the arrays' checksums")
    return meta


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read(path: Path, *, arrays: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.is_file():
        raise ModelBundleError(
            f"model file '{path}' does not exist; train one with `convpaint train CONFIG`"
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _refuse(path, f"not a zip container ({err})") from err
    with zf:
        infos = _check_directory(path, zf)
        blob = _read_entry(path, zf, infos["model.json"], _MAX_JSON_BYTES)
        try:
            meta = json.loads(blob)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise _refuse(path, f"model.json is not valid JSON ({err})") from err
        meta = _check_meta(path, meta)
        if not arrays:
            return meta, {}
        forest = meta["forest"]
        n_trees, n_classes = forest["n_estimators"], forest["n_classes"]
        out = {
            "node_offsets": _read_array(
                path, zf, infos, meta, "node_offsets", 8 * (n_trees + 1)
            )
        }
        offsets = out["node_offsets"]
        if offsets.shape != (n_trees + 1,) or offsets.dtype.kind != "i":
            raise _refuse(
                path,
                f"forest/node_offsets.npy has shape {offsets.shape} and dtype "
                f"{offsets.dtype}, expected ({n_trees + 1},) integers for "
                f"{n_trees} trees",
            )
        n_nodes = int(offsets[-1])
        if n_nodes < n_trees:
            raise _refuse(
                path, f"node_offsets says {n_nodes} nodes for {n_trees} trees"
            )
        for name in _ARRAYS:
            if name == "node_offsets":
                continue
            if f"forest/{name}.npy" not in infos and name == "missing_go_to_left":
                continue
            per_node = 8 * n_classes if name == "values" else 8
            count = n_trees if name == "max_depths" else n_nodes
            out[name] = _read_array(path, zf, infos, meta, name, per_node * count)
    return meta, out


def _read_array(
    path: Path,
    zf: zipfile.ZipFile,
    infos: dict[str, zipfile.ZipInfo],
    meta: dict[str, Any],
    name: str,
    data_bytes: int,
) -> np.ndarray:
    """Read ``forest/<name>.npy``: at most ``data_bytes`` of data, checksum, no pickle."""
    entry = f"forest/{name}.npy"
    if entry not in infos:
        raise _refuse(path, f"{entry} is missing")
    blob = _read_entry(path, zf, infos[entry], data_bytes + _NPY_HEADER_BYTES)
    if meta["forest"]["array_sha256"].get(entry) != _sha(blob):
        raise _refuse(
            path, f"checksum of {entry} does not match (file corrupted or edited)"
        )
    try:
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise _refuse(path, f"{entry} is not a plain numeric array ({err})") from err
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf" or arr.ndim > 2:
        raise _refuse(path, f"{entry} has dtype {arr.dtype}, expected numbers")
    return arr


def _build_forest(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path
) -> Forest:
    """The evaluator of validated-on-the-way node tables."""
    info = meta["forest"]
    n_nodes = int(arrays["node_offsets"][-1])
    for name in NODE_FIELDS:
        if name in arrays and arrays[name].shape != (n_nodes,):
            raise _refuse(
                path,
                f"forest/{name}.npy has shape {arrays[name].shape}, expected "
                f"({n_nodes},)",
            )
    if arrays["max_depths"].shape != (info["n_estimators"],):
        raise _refuse(path, "forest/max_depths.npy does not have one entry per tree")
    try:
        return Forest.from_node_arrays(
            arrays, classes=meta["classes"], n_features=info["n_features"]
        )
    except ValueError as err:
        raise _refuse(path, f"its trees are invalid: {err}") from err


def load_model(path: Path | str, *, n_jobs: int = 1) -> LoadedModel:
    """Read a model file safely and build its forest evaluator.

    Parameters
    ----------
    path : Path or str
        A ``.cpm`` file (any format version up to :data:`FORMAT_VERSION`).
    n_jobs : int
        Default thread count of the forest's predictions (``forest.n_jobs``).

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelBundleError
        Missing file, not a convpaint model, implausible sizes, edited or invalid
        content, newer format. The message says what and where.
    """
    path = Path(path)
    meta, arrays = _read(path, arrays=True)
    forest = _build_forest(meta, arrays, path)
    forest.n_jobs = n_jobs
    return LoadedModel(forest=forest, meta=meta, path=path)
