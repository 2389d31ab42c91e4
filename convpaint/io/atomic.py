"""Write files and folders under a temporary name, then rename into place.

A crash or an error never leaves a half-written output under its final name, and
an existing output is only replaced by a complete new one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "remove_path"]


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(final: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it to ``final`` when the block succeeds.

    The temporary name starts with a dot and ends in ``.partial`` so that globs for
    real outputs never pick it up. On any exception the temporary file or folder is
    deleted and ``final`` is left untouched. An existing ``final`` is replaced only
    after the new output is complete (callers decide beforehand whether replacing
    is allowed).

    Parameters
    ----------
    final : path
        Where the file or folder should end up. Its parent folder is created.

    Yields
    ------
    Path
        The temporary path to write to (same folder, so the rename is atomic).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            # Folders (zarr) cannot be replaced atomically by os.replace: move the old
            # one aside first and delete it only once the new one is in place.
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(final, old)
            os.replace(tmp, final)
            remove_path(old)
        else:
            os.replace(tmp, final)
    finally:
        remove_path(tmp)
