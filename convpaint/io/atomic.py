"""Write files and folders under a temporary name, then rename into place.

A crash or an error never leaves a half-written output under its final name, and
an existing output is only replaced by a complete new one. A folder in the output's
place is replaced only when convpaint wrote it as an output (see
:func:`is_convpaint_output`); anything else is refused, never deleted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from convpaint.errors import OutputError

__all__ = [
    "OUTPUT_MARKER",
    "RESUMABLE_TAG",
    "atomic_output",
    "describe_os_error",
    "is_convpaint_output",
    "move_into_place",
    "partial_paths",
    "prepare_output",
    "refuse_foreign_folder",
    "remove_path",
]

#: Attribute that every zarr output convpaint writes carries (the model's path).
OUTPUT_MARKER = "convpaint_model"

#: Largest zarr metadata file read when recognising an output folder.
_MAX_META_BYTES = 1 << 20

_HINTS = {
    errno.ENOSPC: "the disk is full; free space or write to another folder",
    errno.EDQUOT: "your disk quota is full; free space or write to another folder",
    errno.EFBIG: "the file is larger than allowed here (file-size limit `ulimit -f` "
    "or the file system's maximum); write elsewhere or raise the limit",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.EACCES: "no permission to write there; choose a folder you can write to",
    errno.EPERM: "the operation is not permitted there; choose a folder you can "
    "write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another "
    "output folder",
    errno.EEXIST: "a file or folder of that name is in the way",
    errno.EISDIR: "a folder is in the way of a file",
    errno.ENAMETOOLONG: "the name is too long for this file system; shorten it",
    errno.EIO: "input/output error: a failing disk or an unreachable network file "
    "system",
    errno.ENOENT: "a folder on the path does not exist (or was removed during the run)",
}


def describe_os_error(err: OSError, *, where: Path | str | None = None) -> str:
    """One line: what the file system said, on which path (``where`` overrides the
    error's own, e.g. to name a folder rather than a temporary file in it), and what
    to do about it."""
    code = errno.errorcode.get(err.errno or 0, "")
    what = err.strerror or str(err)
    place = where if where is not None else err.filename
    where = f" at '{place}'" if place else ""
    hint = _HINTS.get(err.errno or 0)
    return f"{what}{f' ({code})' if code else ''}{where}" + (
        f"; {hint}" if hint else ""
    )


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def is_convpaint_output(path: Path | str) -> bool:
    """True for a folder that convpaint wrote as an output.

    That is a zarr array or group (format 2 ``.zattrs`` or format 3 ``zarr.json``)
    whose attributes carry :data:`OUTPUT_MARKER`. Any other folder, e.g. a user's
    data folder that happens to have the output's name, is not one.
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    for name in (".zattrs", "zarr.json"):
        meta = path / name
        try:
            if not meta.is_file() or meta.stat().st_size > _MAX_META_BYTES:
                continue
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        attrs = data.get("attributes", {}) if name == "zarr.json" else data
        if isinstance(attrs, dict) and OUTPUT_MARKER in attrs:
            return True
    return False


def prepare_output(final: Path | str) -> Path:
    """Create the folder of the output ``final`` and refuse a foreign folder in its
    place (see :func:`refuse_foreign_folder`); returns ``final`` as a Path.

    Raises
    ------
    OutputError
        The folder cannot be created (naming it and the reason), or a folder
        convpaint did not write is in the output's place.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"cannot create the folder for '{final}': {describe_os_error(err)}"
        ) from err
    refuse_foreign_folder(final)
    return final


def refuse_foreign_folder(final: Path) -> None:
    """Raise :class:`OutputError` when ``final`` is a folder convpaint did not write."""
    if final.is_dir() and not final.is_symlink() and not is_convpaint_output(final):
        raise OutputError(
            f"'{final}' is a folder that convpaint did not write as an output (no "
            f"'{OUTPUT_MARKER}' zarr attribute); it was left untouched. Move it away or "
            "choose another output name"
        )


def partial_paths(final: Path | str, tag: str) -> list[Path]:
    """The temporary paths :func:`atomic_output` uses for ``final`` with ``tag``.

    Used to remove what a killed run left behind: its claim records the tag.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{tag}.partial")
    return [
        tmp,
        tmp.with_name(tmp.name + ".raw"),
        # the TIFF writer's plane-by-plane scratch array
        tmp.with_name(tmp.name + ".scratch.zarr"),
        final.with_name(f".{final.name}.{tag}.old"),
    ]


_TAG = re.compile(r"^[0-9a-f]{8,32}$")


def _temporary_tag(final: Path) -> str:
    """The claim token when this process holds a claim on ``final``, else random."""
    from .claims import held_token

    token = held_token(final)
    return token if token is not None and _TAG.match(token) else uuid.uuid4().hex[:12]


#: The temporary name's tag of a resumable output: ``.NAME.resume.partial``.
RESUMABLE_TAG = "resume"


@contextmanager
def atomic_output(final: Path | str, *, resumable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` when the block succeeds.

    The temporary name starts with a dot and ends in ``.partial`` so that globs for
    real outputs never pick it up. On any exception the temporary file or folder is
    deleted and ``final`` is left untouched. An existing ``final`` is replaced only
    after the new output is complete (callers decide beforehand whether replacing
    is allowed), and a folder only if :func:`is_convpaint_output` recognises it.

    Parameters
    ----------
    final : path
        Where the file or folder should end up. Its parent folder is created.
    resumable : bool
        Use the fixed temporary name ``.NAME.resume.partial`` (which may hold an
        earlier run's partial output, see :mod:`convpaint.io.resume`) and **keep**
        it when the block fails, so that a later run can continue it.

    Yields
    ------
    Path
        The temporary path to write to (same folder, so the rename is atomic).

    Raises
    ------
    OutputError
        The folder cannot be created or written (the message names the path and the
        file system's reason), or a folder convpaint did not write is in the way.
    """
    final = prepare_output(final)
    tag = RESUMABLE_TAG if resumable else _temporary_tag(final)
    tmp, raw, _scratch, old = partial_paths(final, tag)
    done = False
    try:
        try:
            yield tmp
        except OSError as err:
            raise OutputError(
                f"could not write '{final}': {describe_os_error(err)}"
            ) from err
        move_into_place(tmp, final, old)
        done = True
    finally:
        if done or not resumable:
            remove_path(tmp)
            remove_path(raw)


def move_into_place(tmp: Path, final: Path, old: Path) -> None:
    """Rename the finished ``tmp`` to ``final``, replacing what is there.

    Folders (zarr) cannot be replaced atomically by ``os.replace``: an existing one
    (only a convpaint output; anything else is refused) is moved aside to ``old``
    first and deleted only once the new one is in place.

    Raises
    ------
    OutputError
        The rename failed (the message names the path and the reason).
    """
    try:
        if final.is_dir() and not final.is_symlink():
            refuse_foreign_folder(final)  # it may have appeared meanwhile
            os.replace(final, old)
            os.replace(tmp, final)
            remove_path(old)
        else:
            os.replace(tmp, final)
    except OSError as err:
        raise OutputError(
            f"could not move the finished output into place as '{final}': "
            f"{describe_os_error(err)}"
        ) from err
