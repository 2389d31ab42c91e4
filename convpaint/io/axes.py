"""Axes checks and conversion to the package's one layout, ``(C, Y, X)``."""

from __future__ import annotations

from typing import Any

from convpaint.errors import DataError

__all__ = ["guess_axes", "to_canonical"]


def guess_axes(shape: tuple[int, ...]) -> str | None:
    """The axes string a shape most likely has, for hints in error messages."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        if shape[-1] in (3, 4) and shape[0] > 4:
            return "YXC"
        if shape[0] <= 16 < min(shape[1:]):
            return "CYX"
    return None


def to_canonical(
    array: Any, axes: str, *, path: object, file_axes: str | None = None
) -> Any:
    """Reorder a numpy/dask array with declared ``axes`` to ``(C, Y, X)``.

    YXC images with 4 channels are RGBA: the alpha channel is dropped.

    Raises
    ------
    DataError
        When the number of dimensions does not match ``axes``.
    """
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != len(axes):
        guess = guess_axes(shape)
        hint = f"set axes: {guess}" if guess else "stacks (Z/T) are not supported yet"
        own = f" (the file says its axes are '{file_axes}')" if file_axes else ""
        raise DataError(
            f"image '{path}' has shape {shape}{own} but axes '{axes}' expect "
            f"{len(axes)} dimensions; {hint}"
        )
    if axes == "YX":
        return array[None]
    if axes == "CYX":
        return array
    # YXC: colour images
    if shape[-1] not in (1, 3, 4):
        raise DataError(
            f"image '{path}' has shape {shape}: axes YXC are for RGB/RGBA images with "
            f"3 or 4 channels last, found {shape[-1]}; use axes CYX for channel-first data"
        )
    out = array.transpose(2, 0, 1)
    return out[:3] if shape[-1] == 4 else out
