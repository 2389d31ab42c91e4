"""The object model file (``.cpo``): a zip of JSON metadata and plain ``.npy`` arrays.

Layout::

    model.json              format marker, kind (forest | cnn), classes, axes,
                            feature names or network description, training files,
                            versions, and every array's SHA-256, shape and dtype
    forest/<name>.npy       node arrays (left, right, feature, threshold, value, offsets)
    cnn/<tensor>.npy        the network's state, one array per tensor

Loading executes nothing: only these entry names are accepted (each once), sizes are
bounded before anything is read, arrays are read with ``allow_pickle=False`` and must
be plain numbers whose checksum, shape and dtype match ``model.json``; forest node
indices are checked to stay inside their trees, and the network is rebuilt from its
description by convpaint's own code, its tensors matched by name and shape.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convpaint.errors import ModelBundleError
from convpaint.io.atomic import atomic_output

from .forest import NodeForest

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ObjectModel",
    "load_object_model",
    "read_object_meta",
    "save_object_model",
]

FORMAT = "convpaint-object-model"
FORMAT_VERSION = 1
_FOREST_ARRAYS = ("left", "right", "feature", "threshold", "value", "offsets")
_ENTRY = re.compile(
    r"^(model\.json|forest/(left|right|feature|threshold|value|offsets)\.npy"
    r"|cnn/[A-Za-z0-9_.]{1,200}\.npy)$"
)
_MAX_JSON_BYTES = 16 * 2**20
_MAX_ENTRY_BYTES = 2**30
_MAX_TOTAL_BYTES = 4 * 2**30
_MAX_ENTRIES = 4096


@dataclass
class ObjectModel:
    """A loaded object model."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path

    @property
    def kind(self) -> str:
        """``forest`` or ``cnn``."""
        return str(self.meta["kind"])

    @property
    def classes(self) -> list[int]:
        """Class values, in the order of the probability columns."""
        return [int(c) for c in self.meta["classes"]]

    def forest(self) -> NodeForest:
        """The forest (kind ``forest``), validated."""
        a = {k[len("forest/") : -len(".npy")]: v for k, v in self.arrays.items()}
        nodes = NodeForest(
            left=a["left"].astype(np.int64),
            right=a["right"].astype(np.int64),
            feature=a["feature"].astype(np.int64),
            threshold=a["threshold"].astype(np.float64),
            value=a["value"].astype(np.float64),
            offsets=a["offsets"].astype(np.int64),
            n_features=len(self.meta["feature_names"]),
        )
        why = nodes.validate()
        if why is None and nodes.value.shape[1] != len(self.classes):
            why = "leaf values do not have one column per class"
        if why is not None:
            raise _refuse(self.path, why)
        return nodes

    def network(self) -> Any:
        """The torch module (kind ``cnn``), in eval mode."""
        from .cnn import build_network, load_state

        arch = self.meta["network"]
        try:
            net = build_network(arch)
            if arch.get("n_classes") != len(self.classes):
                raise ModelBundleError("the network's outputs do not match the classes")
            state = {k[len("cnn/") : -len(".npy")]: v for k, v in self.arrays.items()}
            load_state(net, state)
        except ModelBundleError as err:
            raise _refuse(self.path, str(err)) from err
        return net.eval()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def save_object_model(
    path: Path | str, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> Path:
    """Write ``meta`` (JSON-serialisable) and ``arrays`` (entry name -> array) atomically.

    Raises
    ------
    ValueError
        An array name the format does not allow (a programming error).
    """
    path = Path(path)
    blobs = {}
    for name, arr in arrays.items():
        if not _ENTRY.match(name) or name == "model.json":
            raise ValueError(f"array name {name!r} is not allowed in an object model")
        blobs[name] = _npy(arr)
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["format_version"] = FORMAT_VERSION
    meta["arrays"] = {
        name: {
            "sha256": _sha(blob),
            "shape": list(arrays[name].shape),
            "dtype": str(arrays[name].dtype),
        }
        for name, blob in blobs.items()
    }
    with (
        atomic_output(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf,
    ):
        zf.writestr("model.json", json.dumps(meta, indent=2))
        for name, blob in blobs.items():
            # network weights barely compress; storing them saves seconds per save
            kind = (
                zipfile.ZIP_STORED if name.startswith("cnn/") else zipfile.ZIP_DEFLATED
            )
            zf.writestr(name, blob, compress_type=kind)
    return path


def _refuse(path: Path, why: str) -> ModelBundleError:
    return ModelBundleError(
        f"'{path}' is not a usable convpaint object model: {why}. Use a file written by "
        "`convpaint objects train`; model files from unknown sources are never executed"
    )


def _read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path
) -> bytes:
    """Read at most ``limit`` bytes; the declared size alone is not trusted."""
    if info.file_size > limit:
        raise _refuse(
            path, f"entry {info.filename} is implausibly large ({info.file_size} bytes)"
        )
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _refuse(path, f"entry {info.filename} is larger than it declares")
    return data


def _open(path: Path, *, arrays: bool) -> ObjectModel:
    if not path.is_file():
        raise ModelBundleError(
            f"object model '{path}' does not exist; train one with "
            "`convpaint objects train CONFIG`"
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise _refuse(path, f"not a zip container ({err})") from err
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(names) > _MAX_ENTRIES or len(set(names)) != len(names):
            raise _refuse(path, "too many or duplicate entries")
        bad = [n for n in names if not _ENTRY.match(n)]
        if bad:
            raise _refuse(path, f"unexpected entries {bad[:3]}")
        if sum(i.file_size for i in infos) > _MAX_TOTAL_BYTES:
            raise _refuse(path, "the entries are implausibly large in total")
        if "model.json" not in names:
            raise _refuse(path, "model.json is missing")
        raw = _read_entry(zf, zf.getinfo("model.json"), _MAX_JSON_BYTES, path)
        try:
            meta = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise _refuse(path, f"model.json is not valid JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            hint = (
                " (it is a pixel model: use `convpaint predict`)"
                if isinstance(meta, dict) and meta.get("format") == "convpaint-model"
                else ""
            )
            raise _refuse(
                path, f"model.json lacks the object-model format marker{hint}"
            )
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelBundleError(
                f"object model '{path}' uses format version {version}, newer than this "
                f"convpaint reads ({FORMAT_VERSION}); upgrade convpaint"
            )
        declared = meta.get("arrays")
        kind = meta.get("kind")
        if (
            not isinstance(declared, dict)
            or kind not in ("forest", "cnn")
            or not isinstance(meta.get("classes"), list)
            or set(declared) != set(names) - {"model.json"}
        ):
            raise _refuse(path, "model.json and the stored arrays do not agree")
        if kind == "forest" and set(declared) != {
            f"forest/{n}.npy" for n in _FOREST_ARRAYS
        }:
            raise _refuse(path, "a forest model needs exactly the forest node arrays")
        if kind == "cnn" and any(not n.startswith("cnn/") for n in declared):
            raise _refuse(path, "a network model holds only cnn/ arrays")
        out: dict[str, np.ndarray] = {}
        if arrays:
            for name, spec in declared.items():
                blob = _read_entry(zf, zf.getinfo(name), _MAX_ENTRY_BYTES, path)
                if not isinstance(spec, dict) or spec.get("sha256") != _sha(blob):
                    raise _refuse(
                        path,
                        f"checksum of {name} does not match (file corrupted or edited)",
                    )
                try:
                    arr = np.load(io.BytesIO(blob), allow_pickle=False)
                except (ValueError, OSError, EOFError) as err:
                    raise _refuse(
                        path, f"{name} is not a plain numeric array ({err})"
                    ) from err
                if (
                    arr.dtype.kind not in "iuf"
                    or list(arr.shape) != spec.get("shape")
                    or str(arr.dtype) != spec.get("dtype")
                ):
                    raise _refuse(
                        path,
                        f"{name} has dtype {arr.dtype} and shape {arr.shape}, not the declared ones",
                    )
                out[name] = arr
    return ObjectModel(meta=meta, arrays=out, path=path)


def read_object_meta(path: Path | str) -> dict[str, Any]:
    """Read and check only ``model.json`` (for `convpaint objects info`)."""
    return _open(Path(path), arrays=False).meta


def load_object_model(path: Path | str) -> ObjectModel:
    """Read an object model safely (the forest or network is built on use).

    Raises
    ------
    ModelBundleError
        Missing file, not an object model, tampered or inconsistent content, newer format.
    """
    model = _open(Path(path), arrays=True)
    if model.kind == "forest":
        model.forest()  # validate now, not at the first prediction
    return model
