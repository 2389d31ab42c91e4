"""The model file: a zip of JSON metadata and plain numeric arrays; no pickle.

Layout (``.cpm``)::

    model.json          format marker, versions, config, classes, normalisation, ...
    forest/<field>.npy  every tree's nodes concatenated; ``node_offsets`` splits them

Loading never executes code: arrays are read with ``allow_pickle=False``, only the
names above are accepted, every array's SHA-256 is checked against ``model.json``,
and the trees are rebuilt from their node tables through scikit-learn's public
``Tree`` state.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from convpaint.classify import forest_from_trees
from convpaint.errors import ModelBundleError
from convpaint.io.atomic import atomic_output

__all__ = ["FORMAT", "FORMAT_VERSION", "LoadedModel", "load_model", "save_model"]

logger = logging.getLogger(__name__)

FORMAT = "convpaint-model"
FORMAT_VERSION = 1
_NODE_FIELDS = (
    "left_child",
    "right_child",
    "feature",
    "threshold",
    "impurity",
    "n_node_samples",
    "weighted_n_node_samples",
    "missing_go_to_left",
)
_ARRAYS = (*_NODE_FIELDS, "values", "node_offsets", "max_depths")
_ENTRY = re.compile(r"^(model\.json|forest/[a-z_]+\.npy)$")
_MAX_ENTRY_BYTES = 8 * 2**30


@dataclass
class LoadedModel:
    """A model read back from disk."""

    forest: RandomForestClassifier
    meta: dict[str, Any]
    path: Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _forest_arrays(forest: RandomForestClassifier) -> dict[str, np.ndarray]:
    states = [t.tree_.__getstate__() for t in forest.estimators_]
    nodes = [s["nodes"] for s in states]
    out = {
        f: np.concatenate([n[f] for n in nodes])
        for f in _NODE_FIELDS
        if f in nodes[0].dtype.names
    }
    out["values"] = np.concatenate([s["values"][:, 0, :] for s in states]).astype(
        np.float64
    )
    counts = [len(n) for n in nodes]
    out["node_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out["max_depths"] = np.array([s["max_depth"] for s in states], dtype=np.int64)
    return out


def save_model(
    path: Path | str, forest: RandomForestClassifier, meta: dict[str, Any]
) -> Path:
    """Write ``forest`` and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    arrays = _forest_arrays(forest)
    blobs = {f"forest/{k}.npy": _npy_bytes(v) for k, v in arrays.items()}
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta["forest"] = {
        "n_estimators": len(forest.estimators_),
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
    """Read and check only ``model.json`` (fast; used by `convpaint info`)."""
    return _read(Path(path), arrays=False)[0]


def _read(path: Path, *, arrays: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.is_file():
        raise ModelBundleError(
            f"model file '{path}' does not exist; train one with `convpaint train CONFIG`"
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise _refuse(path, f"not a zip container ({err})") from err
    with zf:
        names = zf.namelist()
        bad = [n for n in names if not _ENTRY.match(n)]
        if bad:
            raise _refuse(path, f"unexpected entries {bad[:3]}")
        if "model.json" not in names:
            raise _refuse(path, "model.json is missing")
        for info in zf.infolist():
            if info.file_size > _MAX_ENTRY_BYTES:
                raise _refuse(path, f"entry {info.filename} is implausibly large")
        try:
            meta = json.loads(zf.read("model.json"))
        except (ValueError, UnicodeDecodeError) as err:
            raise _refuse(path, f"model.json is not valid JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise _refuse(path, "model.json lacks the convpaint format marker")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelBundleError(
                f"model '{path}' uses format version {version}, newer than this convpaint "
                f"reads ({FORMAT_VERSION}); upgrade convpaint"
            )
        if not arrays:
            return meta, {}
        expected = meta.get("forest", {}).get("array_sha256", {})
        out = {}
        for name in _ARRAYS:
            entry = f"forest/{name}.npy"
            if entry not in names:
                if name == "missing_go_to_left":
                    continue
                raise _refuse(path, f"{entry} is missing")
            blob = zf.read(entry)
            if expected.get(entry) != _sha(blob):
                raise _refuse(
                    path,
                    f"checksum of {entry} does not match (file corrupted or edited)",
                )
            try:
                arr = np.load(io.BytesIO(blob), allow_pickle=False)
            except ValueError as err:
                raise _refuse(
                    path, f"{entry} is not a plain numeric array ({err})"
                ) from err
            if arr.dtype.kind not in "iuf" or arr.ndim > 2:
                raise _refuse(path, f"{entry} has dtype {arr.dtype}, expected numbers")
            out[name] = arr
    return meta, out


def _rebuild_forest(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path, n_jobs: int
) -> RandomForestClassifier:
    from sklearn.tree._tree import NODE_DTYPE, Tree

    info = meta["forest"]
    n_features, n_classes = int(info["n_features"]), int(info["n_classes"])
    offsets = arrays["node_offsets"]
    total = int(offsets[-1])
    values = arrays["values"]
    if values.shape != (total, n_classes) or len(offsets) != info["n_estimators"] + 1:
        raise _refuse(path, "forest arrays have inconsistent sizes")
    feature = arrays["feature"]
    left, right = arrays["left_child"], arrays["right_child"]
    if feature.max(initial=-2) >= n_features:
        raise _refuse(path, "a tree refers to a feature beyond the feature count")
    classes = np.asarray(meta["classes"])
    trees = []
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        n = b - a
        lc, rc = left[a:b], right[a:b]
        # children must point inside this tree (-1 marks leaves): no out-of-bounds reads
        if ((lc != -1) & ((lc <= 0) | (lc >= n))).any() or (
            (rc != -1) & ((rc <= 0) | (rc >= n))
        ).any():
            raise _refuse(path, f"tree {i} has invalid child indices")
        nodes = np.zeros(n, dtype=NODE_DTYPE)
        for field in NODE_DTYPE.names:
            if field in arrays:
                nodes[field] = arrays[field][a:b]
        tree = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
        tree.__setstate__(
            {
                "max_depth": int(arrays["max_depths"][i]),
                "node_count": n,
                "nodes": nodes,
                "values": np.ascontiguousarray(values[a:b, None, :]),
            }
        )
        est = DecisionTreeClassifier()
        est.tree_ = tree
        est.n_features_in_ = n_features
        est.n_outputs_ = 1
        est.classes_ = classes
        est.n_classes_ = n_classes
        est.max_features_ = n_features
        trees.append(est)
    return forest_from_trees(trees, classes, n_features, n_jobs)


def load_model(path: Path | str, *, n_jobs: int = 1) -> LoadedModel:
    """Read a model file safely and rebuild its forest.

    Raises
    ------
    ModelBundleError
        Missing file, not a convpaint model, tampered arrays, newer format.
    """
    path = Path(path)
    meta, arrays = _read(path, arrays=True)
    try:
        forest = _rebuild_forest(meta, arrays, path, n_jobs)
    except ModelBundleError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise _refuse(
            path, f"inconsistent content ({type(err).__name__}: {err})"
        ) from err
    return LoadedModel(forest=forest, meta=meta, path=path)
