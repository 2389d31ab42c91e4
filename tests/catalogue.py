"""The bad-input catalogue: hostile and mistaken inputs, run through the real CLI.

Each case builds its files in a fresh folder and returns the command line to run.
Running the catalogue records, per case, the exit code and the first line of the
message, and checks that the failure is clean: a non-zero exit, a message on stderr,
no traceback, no terminal markup, and no file left behind (no partial output, no
claim). ``tests/test_catalogue.py`` asserts it for every case; the README shows the
table.

Run it from the repository root::

    python -m tests.catalogue                  # print the markdown table
    python -m tests.catalogue --update-readme  # also replace the table in README.md

Adding a case is one decorated function::

    @case("inputs: a glob that matches nothing")
    def _(k: Kit) -> Run:
        return Run(["predict", "-m", k.model, "-o", k.out, f"{k.dir}/*.tif"])

``pending="..."`` marks a case that another branch fixes (the test then expects it to
fail until that branch is merged); ``process=True`` runs it in a separate process
(for cases that may crash or hang the interpreter, or need resource limits).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(
    os.environ.get("CONVPAINT_BENCHDATA", ROOT.parent / "shared" / "benchdata")
)
README_START = "<!-- bad-inputs:start -->"
README_END = "<!-- bad-inputs:end -->"
#: Seconds a separate-process case may run (a hang is reported as a failure); less for
#: a case known to hang until another branch lands, to keep the suite short.
PROCESS_TIMEOUT = 20.0
PENDING_TIMEOUT = 8.0


# ----------------------------------------------------------------------------- model


@dataclass
class Run:
    """What a case runs: CLI arguments, and optionally stdin, environment, limits."""

    args: list[Any]
    stdin: str | None = None
    env: dict[str, str | None] | None = None
    file_size_limit: int | None = None
    after: Callable[[], None] | None = None
    """Clean-up after the run (e.g. release a claim the case holds)."""


@dataclass
class Case:
    """One catalogue entry."""

    name: str
    build: Callable[[Kit], Run]
    pending: str | None = None
    process: bool = False


@dataclass
class Outcome:
    """What running a case gave."""

    case: Case
    exit_code: int | None
    message: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """A non-zero exit with one clean message and nothing left behind."""
        return not self.problems


CASES: list[Case] = []


def case(
    name: str, *, pending: str | None = None, process: bool = False
) -> Callable[[Callable[[Kit], Run]], Callable[[Kit], Run]]:
    """Register a case (see the module docstring)."""

    def register(build: Callable[[Kit], Run]) -> Callable[[Kit], Run]:
        CASES.append(Case(name, build, pending, process))
        return build

    return register


# ----------------------------------------------------------------------------- data


class Shared:
    """Data every case may use, built once: a real EM crop, scribbles, a model."""

    def __init__(self, folder: Path) -> None:
        from PIL import Image

        from convpaint import api
        from convpaint.config import parse_config

        self.dir = folder
        img = np.asarray(Image.open(BENCH / "isbi2012_em_membranes/images/0.png"))
        scr = tifffile.imread(BENCH / "isbi2012_em_membranes/derived/0_scribbles.tif")
        self.image = folder / "img.tif"
        self.scribbles = folder / "scr.tif"
        tifffile.imwrite(self.image, img[:160, :192])
        tifffile.imwrite(self.scribbles, scr[:160, :192])
        self.model = folder / "m.cpm"
        api.train(parse_config(self.train_raw(self.model)))
        self._five: Path | None = None

    def train_raw(
        self, model: Path, images: Path | None = None, axes: str = "YX"
    ) -> dict:
        return {
            "features": [{"name": "filters", "sigmas": [1.0, 3.0]}],
            "classifier": {"n_estimators": 8, "seed": 0},
            "train": {
                "images": [str(images or self.image)],
                "annotations": [str(self.scribbles)],
                "axes": axes,
                "model": str(model),
                "report": False,
            },
        }

    def five_channel_model(self) -> Path:
        """A model trained on a 5-channel CYX image (for stack-vs-channel cases)."""
        if self._five is None:
            from convpaint import api
            from convpaint.config import parse_config

            img = tifffile.imread(self.image)
            stack = np.stack([np.roll(img, 3 * i, axis=1) for i in range(5)])
            path = self.dir / "five.tif"
            tifffile.imwrite(path, stack, photometric="minisblack")
            self._five = self.dir / "five.cpm"
            api.train(parse_config(self.train_raw(self._five, path, "CYX")))
        return self._five


class Kit:
    """A case's folder plus helpers to build hostile files in it."""

    def __init__(self, folder: Path, shared: Shared) -> None:
        self.dir = folder
        self.shared = shared
        self.model = shared.model
        self.image = shared.image
        self.scribbles = shared.scribbles
        self.out = folder / "out"

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def tif(self, name: str, array: np.ndarray, **kwargs: Any) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, array, **kwargs)
        return path

    def config(self, text: str, name: str = "c.yaml") -> Path:
        return self.file(name, text)

    def train_config(self, extra: str = "", **train: str) -> Path:
        """A valid training config (plus ``extra`` YAML, train keys replaced)."""
        keys = {
            "images": f"[{self.image}]",
            "annotations": f"[{self.scribbles}]",
            "model": str(self.dir / "models/m.cpm"),
            "report": "false",
            **train,
        }
        body = "\n".join(f"  {k}: {v}" for k, v in keys.items())
        return self.config(
            "features: [{name: filters, sigmas: [1.0]}]\n"
            "classifier: {n_estimators: 4, seed: 0}\n"
            + extra
            + "train:\n"
            + body
            + "\n"
        )

    def predict(self, *inputs: Any, extra: tuple = ()) -> Run:
        """``predict -m MODEL -o OUT INPUTS...``."""
        return Run(["predict", "-m", self.model, "-o", self.out, *inputs, *extra])

    def crafted_model(
        self,
        *,
        arrays: Callable[[dict[str, np.ndarray]], None] | None = None,
        meta: Callable[[dict[str, Any]], None] | None = None,
        extra: dict[str, bytes] | None = None,
        rehash: bool = True,
        raw_json: bytes | None = None,
    ) -> Path:
        """A copy of the model with arrays or metadata edited; the per-array SHA-256s
        are recomputed (``rehash``), as an attacker would."""
        import hashlib

        with zipfile.ZipFile(self.model) as zf:
            entries = {n: zf.read(n) for n in zf.namelist()}
        info = json.loads(entries["model.json"])
        loaded = {
            n: np.load(io.BytesIO(b), allow_pickle=False)
            for n, b in entries.items()
            if n.endswith(".npy")
        }
        if arrays is not None:
            named = {n.split("/")[1][:-4]: a for n, a in loaded.items()}
            arrays(named)
            for name, arr in named.items():
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                entries[f"forest/{name}.npy"] = buf.getvalue()
        if rehash:
            info["forest"]["array_sha256"] = {
                n: hashlib.sha256(b).hexdigest()
                for n, b in entries.items()
                if n.endswith(".npy")
            }
        if meta is not None:
            meta(info)
        entries["model.json"] = (
            raw_json if raw_json is not None else json.dumps(info).encode()
        )
        entries.update(extra or {})
        path = self.dir / "crafted.cpm"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, blob in entries.items():
                zf.writestr(name, blob)
        return path


def declare_tiff_size(path: Path, width: int, height: int) -> None:
    """Patch a small TIFF's ImageWidth/ImageLength tags in place."""
    data = bytearray(path.read_bytes())
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(n):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            fmt = "<I" if kind == 4 else "<H"
            data[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(
                fmt, value if kind == 4 else min(value, 65535)
            )
    path.write_bytes(bytes(data))


# ============================================================================ cases
# ----------------------------------------------------------------------- config files


@case("config: the file does not exist")
def _(k: Kit) -> Run:
    return Run(["train", k.dir / "none.yaml"])


@case("config: a folder instead of a file")
def _(k: Kit) -> Run:
    (k.dir / "cfg.yaml").mkdir()
    return Run(["predict", k.dir / "cfg.yaml"])


@case("config: YAML syntax error")
def _(k: Kit) -> Run:
    return Run(["train", k.config("train: [oops\n")])


@case("config: binary file (NUL bytes)")
def _(k: Kit) -> Run:
    return Run(["train", k.file("c.yaml", b"train:\x00\x01\x02")])


@case("config: not UTF-8")
def _(k: Kit) -> Run:
    return Run(["check", k.file("c.yaml", b"train: \xff\xfe\xfa\n")])


@case("config: a list instead of a mapping")
def _(k: Kit) -> Run:
    return Run(["train", k.config("- train\n- predict\n")])


@case("config: unknown top-level key")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("trian: {}\n")])


@case("config: misspelled nested key")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(k.train_config().read_text().replace("n_estimators", "n_trees")),
        ]
    )


@case("config: wrong type (n_estimators: many)")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config()
                .read_text()
                .replace("n_estimators: 4", "n_estimators: many")
            ),
        ]
    )


@case("config: n_estimators: 1000000000")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config()
                .read_text()
                .replace("n_estimators: 4", "n_estimators: 1000000000")
            ),
        ]
    )


@case("config: n_estimators: 0")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config()
                .read_text()
                .replace("n_estimators: 4", "n_estimators: 0")
            ),
        ]
    )


@case("config: negative seed")
def _(k: Kit) -> Run:
    return Run(
        ["train", k.config(k.train_config().read_text().replace("seed: 0", "seed: -1"))]
    )


@case("config: seed beyond 2**32")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config().read_text().replace("seed: 0", "seed: 1099511627776")
            ),
        ]
    )


@case("config: max_features: .nan")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("classifier: {max_features: .nan}\n")])


@case("config: tiling.tile_size: 0")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("tiling: {tile_size: 0}\n")])


@case("config: tiling.tile_size: 1000000")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("tiling: {tile_size: 1000000}\n")])


@case("config: tiling.threads: -3")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("tiling: {threads: -3}\n")])


@case(
    "config: tiling.threads: 100000",
    process=True,  # until then it starts threads until the process runs out
)
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("tiling: {threads: 100000}\n")])


@case("config: version from the future")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("version: 99\n")])


@case("config: version: one")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config("version: one\n")])


@case("config: YAML alias bomb (a billion 'lol's)")
def _(k: Kit) -> Run:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return Run(["train", k.config("\n".join(lines) + "\n")])


@case("config: recursive YAML alias")
def _(k: Kit) -> Run:
    return Run(["check", k.config("a: &a [1, *a]\n")])


@case("config: brackets nested 50000 deep")
def _(k: Kit) -> Run:
    return Run(["check", k.config("[" * 50_000 + "]" * 50_000)])


@case("config: a 5 MiB file")
def _(k: Kit) -> Run:
    return Run(["check", k.config("# padding\n" * 550_000)])


@case("config: unknown extractor name")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config().read_text().replace("name: filters", "name: filterz")
            ),
        ]
    )


@case("config: negative filter sigma")
def _(k: Kit) -> Run:
    return Run(
        [
            "train",
            k.config(
                k.train_config().read_text().replace("sigmas: [1.0]", "sigmas: [-1.0]")
            ),
        ]
    )


@case("config: invalid axes (ABC)")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config(axes="ABC")])


@case("config: empty list of training images")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config(images="[]")])


@case("config: predict section without a model and no train section")
def _(k: Kit) -> Run:
    return Run(["predict", k.config(f"predict: {{inputs: [{k.image}]}}\n")])


@case("config: output_name without {stem}")
def _(k: Kit) -> Run:
    return Run(
        [
            "predict",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.image}], output_name: labels}}\n"
            ),
        ]
    )


@case("config: output_name escaping the output folder (../)")
def _(k: Kit) -> Run:
    return Run(
        [
            "predict",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.image}], "
                "output_name: '../{stem}'}\n"
            ),
        ]
    )


@case("config: output_name with an unknown field ({stem.__class__})")
def _(k: Kit) -> Run:
    return Run(
        [
            "predict",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.image}], "
                "output_name: '{stem.__class__}'}\n"
            ),
        ]
    )


@case("config: predict.format: png")
def _(k: Kit) -> Run:
    return Run(
        [
            "predict",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.image}], format: png}}\n"
            ),
        ]
    )


@case("config: predict.on_error: ignore")
def _(k: Kit) -> Run:
    return Run(
        [
            "predict",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.image}], on_error: ignore}}\n"
            ),
        ]
    )


@case("config: `predict CONFIG` without a predict section")
def _(k: Kit) -> Run:
    return Run(["predict", k.train_config()])


@case("config: `train CONFIG` without a train section")
def _(k: Kit) -> Run:
    return Run(
        ["train", k.config(f"predict: {{model: {k.model}, inputs: [{k.image}]}}\n")]
    )


# ----------------------------------------------------------------------- training data


@case("train: annotations all zero")
def _(k: Kit) -> Run:
    ann = k.tif("ann.tif", np.zeros((160, 192), np.uint8))
    return Run(["train", k.train_config(annotations=f"[{ann}]")])


@case("train: annotations with one class only")
def _(k: Kit) -> Run:
    ann = k.tif("ann.tif", (tifffile.imread(k.scribbles) > 0).astype(np.uint8))
    return Run(["train", k.train_config(annotations=f"[{ann}]")])


@case("train: annotations of another size")
def _(k: Kit) -> Run:
    ann = k.tif("ann.tif", np.ones((100, 192), np.uint8))
    return Run(["train", k.train_config(annotations=f"[{ann}]")])


@case("train: negative annotation values")
def _(k: Kit) -> Run:
    ann = k.tif("ann.tif", np.full((160, 192), -1, np.int16))
    return Run(["train", k.train_config(annotations=f"[{ann}]")])


@case("train: non-integer annotations (0.5)")
def _(k: Kit) -> Run:
    ann = k.tif("ann.tif", np.full((160, 192), 0.5, np.float32))
    return Run(["train", k.train_config(annotations=f"[{ann}]")])


@case("train: annotation template that names no file")
def _(k: Kit) -> Run:
    return Run(["train", k.train_config(annotations=f"{k.dir}/{{stem}}_nope.tif")])


@case("train: training images with different channel counts")
def _(k: Kit) -> Run:
    a = k.tif("a.tif", np.zeros((2, 160, 192), np.uint8), photometric="minisblack")
    b = k.tif("b.tif", np.zeros((3, 160, 192), np.uint8), photometric="minisblack")
    for name in ("a_scr.tif", "b_scr.tif"):
        shutil.copy(k.scribbles, k.dir / name)
    return Run(
        [
            "train",
            k.train_config(
                images=f"[{a}, {b}]",
                annotations=f"{k.dir}/{{stem}}_scr.tif",
                axes="CYX",
            ),
        ]
    )


@case("train: the model path is an existing folder (--overwrite)")
def _(k: Kit) -> Run:
    (k.dir / "models/m.cpm/precious").mkdir(parents=True)
    (k.dir / "models/m.cpm/precious/data.txt").write_text("keep")
    return Run(["train", k.train_config(), "--overwrite"])


@case("train: the model exists (no --overwrite)")
def _(k: Kit) -> Run:
    k.file("models/m.cpm", b"an older model")
    return Run(["train", k.train_config()])


# ----------------------------------------------------------------------- input files


@case("inputs: a file that does not exist")
def _(k: Kit) -> Run:
    return k.predict(k.dir / "none.tif")


@case("inputs: a glob that matches nothing")
def _(k: Kit) -> Run:
    return k.predict(f"{k.dir}/*.tif")


@case("inputs: a folder without images")
def _(k: Kit) -> Run:
    k.file("docs/readme.txt", "not an image")
    return k.predict(k.dir / "docs")


@case("inputs: an unsupported file type")
def _(k: Kit) -> Run:
    return k.predict(k.file("notes.txt", "hello"))


@case("inputs: an empty .tif")
def _(k: Kit) -> Run:
    return k.predict(k.file("empty.tif", b""))


@case("inputs: a text file named .tif")
def _(k: Kit) -> Run:
    return k.predict(k.file("fake.tif", "II* but really text"))


@case("inputs: a folder named .tif")
def _(k: Kit) -> Run:
    (k.dir / "dir.tif").mkdir()
    return k.predict(k.dir / "dir.tif")


@case("inputs: a truncated TIFF")
def _(k: Kit) -> Run:
    data = k.image.read_bytes()
    return k.predict(k.file("cut.tif", data[: len(data) // 2]))


@case("inputs: a 500-byte TIFF declaring 300000 x 300000 pixels")
def _(k: Kit) -> Run:
    path = k.tif("bomb.tif", np.zeros((16, 16), np.uint8))
    declare_tiff_size(path, 300_000, 300_000)
    return k.predict(path)


@case("inputs: NaN pixels")
def _(k: Kit) -> Run:
    img = tifffile.imread(k.image).astype(np.float32)
    img[5, 5] = np.nan
    return k.predict(k.tif("nan.tif", img))


@case("inputs: infinite pixels")
def _(k: Kit) -> Run:
    img = tifffile.imread(k.image).astype(np.float32)
    img[7, 9] = np.inf
    return k.predict(k.tif("inf.tif", img))


@case("inputs: .npy of Python objects (pickle)")
def _(k: Kit) -> Run:
    path = k.dir / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return k.predict(path)


@case("inputs: .npy of complex numbers")
def _(k: Kit) -> Run:
    path = k.dir / "c.npy"
    np.save(path, np.zeros((40, 40), complex))
    return k.predict(path)


@case("inputs: PNG decompression bomb (200 Mpx)")
def _(k: Kit) -> Run:
    from PIL import Image

    path = k.dir / "bomb.png"
    Image.new("1", (20000, 10000)).save(path)
    return k.predict(path)


@case("inputs: zarr group holding two arrays")
def _(k: Kit) -> Run:
    import zarr

    group = zarr.open_group(str(k.dir / "g.zarr"), mode="w")
    group.create_array("a", shape=(10, 10), dtype="u1")
    group.create_array("b", shape=(10, 10), dtype="u1")
    return k.predict(k.dir / "g.zarr")


@case("inputs: RGB image for a grayscale model")
def _(k: Kit) -> Run:
    rgb = k.tif("rgb.tif", np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    return k.predict(rgb, extra=("--axes", "YXC"))


@case("inputs: 2-D image declared as CYX")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--axes", "CYX"))


@case(
    "inputs: 5-plane ZYX stack given to a 5-channel model",
)
def _(k: Kit) -> Run:
    stack = np.stack([tifffile.imread(k.image)] * 5)
    path = k.tif("stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    return Run(["predict", "-m", k.shared.five_channel_model(), "-o", k.out, path])


@case("inputs: --inputs-from a missing file")
def _(k: Kit) -> Run:
    return k.predict(extra=("--inputs-from", k.dir / "list.txt"))


@case("inputs: --inputs-from an empty list")
def _(k: Kit) -> Run:
    return k.predict(extra=("--inputs-from", k.file("list.txt", "\n\n")))


@case("inputs: --inputs-from naming a vanished file")
def _(k: Kit) -> Run:
    listing = k.file("list.txt", f"{k.image}\n{k.dir / 'gone.tif'}\n")
    return k.predict(extra=("--inputs-from", listing))


@case("inputs: --inputs-from a list with a NUL byte")
def _(k: Kit) -> Run:
    return k.predict(extra=("--inputs-from", k.file("list.txt", f"{k.image}\0x\n")))


@case("inputs: '-' with nothing on stdin")
def _(k: Kit) -> Run:
    return Run(k.predict("-").args, stdin="")


@case("inputs: '-' given twice")
def _(k: Kit) -> Run:
    return Run(k.predict("-", "-").args, stdin=f"{k.image}\n")


# ----------------------------------------------------------------------- model files


@case("model: the file does not exist")
def _(k: Kit) -> Run:
    return Run(["predict", "-m", k.dir / "none.cpm", "-o", k.out, k.image])


@case("model: not a zip")
def _(k: Kit) -> Run:
    return Run(["predict", "-m", k.file("m.cpm", b"not a model"), "-o", k.out, k.image])


@case("model: a folder")
def _(k: Kit) -> Run:
    (k.dir / "m.cpm").mkdir()
    return Run(["predict", "-m", k.dir / "m.cpm", "-o", k.out, k.image])


@case("model: truncated zip")
def _(k: Kit) -> Run:
    data = k.model.read_bytes()
    return Run(
        ["predict", "-m", k.file("m.cpm", data[: len(data) // 2]), "-o", k.out, k.image]
    )


@case("model: model.json is not JSON")
def _(k: Kit) -> Run:
    return Run(
        ["predict", "-m", k.crafted_model(raw_json=b"{oops"), "-o", k.out, k.image]
    )


@case("model: an unknown entry in the zip")
def _(k: Kit) -> Run:
    path = k.crafted_model(extra={"payload.pkl": b"\x80\x04K\x01."})
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case("model: an edited array without its checksum")
def _(k: Kit) -> Run:
    def edit(a: dict[str, np.ndarray]) -> None:
        a["threshold"][0] += 1.0

    path = k.crafted_model(arrays=edit, rehash=False)
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case("model: format version from the future")
def _(k: Kit) -> Run:
    path = k.crafted_model(meta=lambda m: m.update(format_version=99))
    return Run(["info", path])


@case("model: format_version of the wrong type")
def _(k: Kit) -> Run:
    path = k.crafted_model(meta=lambda m: m.update(format_version=[1]))
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case("model: non-integer classes")
def _(k: Kit) -> Run:
    path = k.crafted_model(meta=lambda m: m.update(classes=["a", "b"]))
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case(
    "model: negative feature index, hashes recomputed",
    process=True,
)
def _(k: Kit) -> Run:
    def edit(a: dict[str, np.ndarray]) -> None:
        a["feature"][0] = -5

    path = k.crafted_model(arrays=edit)
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case(
    "model: a cycle in a tree's children, hashes recomputed",
    process=True,
)
def _(k: Kit) -> Run:
    def edit(a: dict[str, np.ndarray]) -> None:
        left = a["left_child"]
        node = (
            int(np.flatnonzero(left[1:] > 0)[0]) + 1
        )  # an internal node, not the root
        left[node] = node

    path = k.crafted_model(arrays=edit)
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case("model: NaN thresholds, hashes recomputed")
def _(k: Kit) -> Run:
    def edit(a: dict[str, np.ndarray]) -> None:
        a["threshold"][:] = np.nan

    path = k.crafted_model(arrays=edit)
    return Run(["predict", "-m", path, "-o", k.out, k.image])


@case(
    "model: model.json declared 2 GiB in the zip directory",
)
def _(k: Kit) -> Run:
    path = k.crafted_model()
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    while central >= 0:  # patch the uncompressed size of model.json's entry
        name_len = struct.unpack("<H", data[central + 28 : central + 30])[0]
        if data[central + 46 : central + 46 + name_len] == b"model.json":
            data[central + 24 : central + 28] = struct.pack("<I", 2**31 - 1)
            break
        central = data.rfind(b"PK\x01\x02", 0, central)
    path.write_bytes(bytes(data))
    return Run(["predict", "-m", path, "-o", k.out, k.image])


# ----------------------------------------------------------------------- outputs


@case("outputs: two inputs would write one output (same name, two folders)")
def _(k: Kit) -> Run:
    for sub in ("a", "b"):
        (k.dir / "raw" / sub).mkdir(parents=True)
        shutil.copy(k.image, k.dir / "raw" / sub / "x.tif")
    return k.predict(
        f"{k.dir}/raw/**/*.tif", extra=("--skip-existing", "--shard", "0/4")
    )


@case("outputs: the output would replace its input")
def _(k: Kit) -> Run:
    src = k.dir / "x.tif"
    shutil.copy(k.image, src)
    return Run(
        [
            "predict",
            "-m",
            k.model,
            "-o",
            k.dir,
            src,
            "--output-name",
            "{stem}",
            "--overwrite",
        ]
    )


@case("outputs: the output folder is a file")
def _(k: Kit) -> Run:
    k.file("out", "I am a file")
    return k.predict(k.image)


@case("outputs: a file in the way of the output folder's parent")
def _(k: Kit) -> Run:
    k.file("blocker", "I am a file")
    return Run(["predict", "-m", k.model, "-o", k.dir / "blocker/deeper/out", k.image])


@case("outputs: a read-only output folder (/sys/kernel)")
def _(k: Kit) -> Run:
    return Run(["predict", "-m", k.model, "-o", "/sys/kernel", k.image])


@case("outputs: an output folder that cannot be created (/sys/convpaint)")
def _(k: Kit) -> Run:
    return Run(["predict", "-m", k.model, "-o", "/sys/convpaint", k.image])


@case("outputs: the output exists (no --overwrite / --skip-existing)")
def _(k: Kit) -> Run:
    k.file("out/img_labels.tif", b"an earlier result")
    return k.predict(k.image)


@case("outputs: --overwrite onto a zarr-named folder convpaint did not write")
def _(k: Kit) -> Run:
    k.file("out/img_labels.zarr/precious/data.txt", "keep me")
    return k.predict(k.image, extra=("--format", "zarr", "--overwrite"))


@case("outputs: --skip-existing with a folder where the TIFF goes")
def _(k: Kit) -> Run:
    (k.out / "img_labels.tif").mkdir(parents=True)
    return k.predict(k.image, extra=("--skip-existing",))


@case("outputs: another run is writing the output")
def _(k: Kit) -> Run:
    from convpaint.io.claims import acquire

    held, _ = acquire(k.out / "img_labels.tif")
    run = k.predict(k.image)
    run.after = held.release
    return run


@case("outputs: the disk fills up while writing TIFF (file-size limit)", process=True)
def _(k: Kit) -> Run:
    run = k.predict(k.image)
    run.file_size_limit = 2000  # EFBIG, as a full quota gives EDQUOT
    return run


@case("outputs: the disk fills up while writing zarr (file-size limit)", process=True)
def _(k: Kit) -> Run:
    run = k.predict(k.image, extra=("--format", "zarr", "--probabilities"))
    run.file_size_limit = 2000
    return run


# ----------------------------------------------------------------------- command line


@case("plan: an input whose name holds a line break")
def _(k: Kit) -> Run:
    shutil.copy(k.image, k.dir / "two\nlines.tif")
    return Run(["plan", k.dir])


@case("check: predict inputs that do not exist")
def _(k: Kit) -> Run:
    return Run(
        [
            "check",
            k.config(
                f"predict: {{model: {k.model}, inputs: [{k.dir}/missing/*.tif]}}\n"
            ),
        ]
    )


@case("info: not a model file")
def _(k: Kit) -> Run:
    return Run(["info", k.image])


@case("init: the file exists")
def _(k: Kit) -> Run:
    return Run(["init", k.file("c.yaml", "version: 1\n")])


@case("evaluate: prediction and ground truth of different shapes")
def _(k: Kit) -> Run:
    pred = k.tif("p/img_labels.tif", np.ones((160, 192), np.uint8))
    gt = k.tif("g/img_gt.tif", np.ones((100, 100), np.uint8))
    return Run(["evaluate", "-p", pred, "-g", gt, "-o", k.out])


@case("evaluate: ground truth missing")
def _(k: Kit) -> Run:
    pred = k.tif("p/img_labels.tif", np.ones((160, 192), np.uint8))
    return Run(["evaluate", "-p", pred, "-g", f"{k.dir}/{{stem}}_gt.tif", "-o", k.out])


@case("scribbles: ground truth that is an RGB photo")
def _(k: Kit) -> Run:
    rgb = k.tif("photo.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    return Run(["scribbles", rgb, "-o", k.out])


@case("cli: --threads 0")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--threads", "0"))


@case("cli: --threads -3")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--threads", "-3"))


@case("cli: --threads 100000")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--threads", "100000"))


@case("cli: --tile-size 0")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--tile-size", "0"))


@case("cli: --format png")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--format", "png"))


@case("cli: --output-name with an unclosed brace")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--output-name", "{stem"))


@case("cli: --shard 3/2")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--shard", "3/2"))


@case("cli: --shard auto outside a SLURM array")
def _(k: Kit) -> Run:
    run = k.predict(k.image, extra=("--shard", "auto"))
    run.env = {"SLURM_ARRAY_TASK_ID": None}
    return run


@case("cli: --shard auto in an array with indices 1,3,7")
def _(k: Kit) -> Run:
    run = k.predict(k.image, extra=("--shard", "auto"))
    run.env = {
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_ARRAY_TASK_MIN": "1",
        "SLURM_ARRAY_TASK_MAX": "7",
        "SLURM_ARRAY_TASK_COUNT": "3",
    }
    return run


@case("cli: --overwrite together with --skip-existing")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--overwrite", "--skip-existing"))


@case("cli: --model without --output")
def _(k: Kit) -> Run:
    return Run(["predict", "-m", k.model, k.image])


@case("cli: config form with --format (config-free option)")
def _(k: Kit) -> Run:
    cfg = k.config(f"predict: {{model: {k.model}, inputs: [{k.image}]}}\n")
    return Run(["predict", cfg, "--format", "zarr"])


@case("cli: config form with INPUT arguments")
def _(k: Kit) -> Run:
    cfg = k.config(f"predict: {{model: {k.model}, inputs: [{k.image}]}}\n")
    return Run(["predict", cfg, k.image])


@case("cli: an unknown command")
def _(k: Kit) -> Run:
    return Run(["frobnicate"])


@case("cli: an unknown option")
def _(k: Kit) -> Run:
    return k.predict(k.image, extra=("--colour", "red"))


# ============================================================================ running

_MARKUP = re.compile(
    r"\[/?(?:bold|red|green|yellow|blue|dim|italic|underline)\b[^\]]*\]|\[/\]"
)


def _files(folder: Path) -> set[str]:
    return (
        {str(p) for p in folder.rglob("*") if not p.is_dir()}
        if folder.exists()
        else set()
    )


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _first_message(stderr: str) -> str:
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not _LOG_LINE.match(line)
    ]
    for line in lines:
        if line.lower().startswith("error:"):
            return line
    return lines[0] if lines else ""


def _judge(
    case: Case, code: int | None, stdout: str, stderr: str, crash: str
) -> list[str]:
    problems = []
    if code == 0:
        problems.append("exit 0: the input was accepted")
    if code is None:
        problems.append("did not finish (hangs)")
    elif code < 0:
        problems.append(f"killed by signal {-code} (crash)")
    if crash:
        problems.append(f"uncaught {crash}")
    if "Traceback" in stdout + stderr:
        problems.append("traceback shown")
    if not _first_message(stderr) and code not in (0, None):
        problems.append("no message on stderr")
    if "\x1b[" in stdout + stderr or _MARKUP.search(stderr):
        problems.append("terminal markup in the message")
    return problems


def run_in_process(run: Run) -> tuple[int | None, str, str, str]:
    """Run through typer's CliRunner; return (exit code, stdout, stderr, crash)."""
    from typer.testing import CliRunner

    from convpaint.cli import app

    result = CliRunner().invoke(
        app, [str(a) for a in run.args], input=run.stdin, env=run.env
    )
    crash = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = type(result.exception).__name__
    return result.exit_code, result.stdout, result.stderr, crash


def _start_process(run: Run) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    for key, value in (run.env or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    limit = run.file_size_limit

    def preexec() -> None:
        if limit is not None:  # Python ignores SIGXFSZ, so writes fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "convpaint", *(str(a) for a in run.args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec,
    )


def run_catalogue(
    folder: Path | None = None, cases: list[Case] | None = None
) -> list[Outcome]:
    """Run every case (process cases in parallel with the in-process ones)."""
    cases = CASES if cases is None else cases
    own = folder is None
    base = Path(tempfile.mkdtemp(prefix="convpaint-catalogue-")) if own else folder
    assert base is not None
    try:
        shared = Shared(base / "_shared")  # type: ignore[arg-type]
    except FileNotFoundError:
        (base / "_shared").mkdir(parents=True, exist_ok=True)
        shared = Shared(base / "_shared")
    outcomes: dict[int, Outcome] = {}
    started: dict[int, tuple[subprocess.Popen, Run, Kit, set[str], float]] = {}

    def prepare(i: int, c: Case) -> tuple[Run, Kit, set[str]]:
        kit = Kit(base / f"case{i:03d}", shared)
        kit.dir.mkdir(parents=True)
        run = c.build(kit)
        return run, kit, _files(kit.dir)

    def finish(
        i: int,
        c: Case,
        run: Run,
        kit: Kit,
        before: set[str],
        code: int | None,
        out: str,
        err: str,
        crash: str,
        seconds: float,
    ) -> None:
        if run.after is not None:
            run.after()
        problems = _judge(c, code, out, err, crash)
        left = sorted(_files(kit.dir) - before)
        if left:
            problems.append("left behind: " + ", ".join(Path(p).name for p in left[:3]))
        message = _first_message(err).replace(str(kit.dir), "<dir>")
        message = message.replace(str(shared.dir), "<data>")
        # what changes from run to run: this machine, process and time
        message = re.sub(
            r"host [^,]+, pid \d+, since \S+?;", "host H, pid P, since T;", message
        )
        outcomes[i] = Outcome(c, code, message, problems, seconds)

    for i, c in enumerate(cases):
        if c.process:
            run, kit, before = prepare(i, c)
            started[i] = (_start_process(run), run, kit, before, time.perf_counter())
    for i, c in enumerate(cases):
        if c.process:
            continue
        run, kit, before = prepare(i, c)
        t0 = time.perf_counter()
        code, out, err, crash = run_in_process(run)
        finish(i, c, run, kit, before, code, out, err, crash, time.perf_counter() - t0)
    for i, (proc, run, kit, before, t0) in started.items():
        limit = PENDING_TIMEOUT if cases[i].pending else PROCESS_TIMEOUT
        left = max(1.0, limit - (time.perf_counter() - t0))
        try:
            out, err = proc.communicate(input=run.stdin, timeout=left)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = None
        finish(
            i, cases[i], run, kit, before, code, out, err, "", time.perf_counter() - t0
        )
    if own:
        shutil.rmtree(base, ignore_errors=True)
    return [outcomes[i] for i in range(len(cases))]


def markdown(outcomes: list[Outcome]) -> str:
    """The README table: case, exit code, first line of the message."""
    rows = [
        "| # | case | exit | message (first line) |",
        "|---|---|---|---|",
    ]
    for n, o in enumerate(outcomes, 1):
        msg = o.message if len(o.message) <= 220 else o.message[:217] + "..."
        if not o.clean:
            note = "; ".join(o.problems)
            msg = f"**not yet clean** ({note}{'; ' + o.case.pending if o.case.pending else ''})"
            if o.message:
                msg += f": {o.message[:150]}"
        code = "hang" if o.exit_code is None else str(o.exit_code)
        cells = [str(n), o.case.name, code, msg]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help=f"replace the table between {README_START} and {README_END} in README.md",
    )
    args = parser.parse_args(argv)
    outcomes = run_catalogue()
    table = markdown(outcomes)
    sys.stdout.write(table)
    if args.output:
        args.output.write_text(table)
    if args.update_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = text.index(README_START), text.index(README_END)
        readme.write_text(text[: start + len(README_START)] + "\n" + table + text[end:])
    bad = [o for o in outcomes if not o.clean]
    sys.stderr.write(f"{len(outcomes)} cases, {len(bad)} not clean\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
