"""Axes strings: validation, and conversion to and from the package's layouts.

Inside convpaint every image is 5-D ``(T, C, Z, Y, X)`` and every label image or
output 4-D ``(T, Z, Y, X)``, with singleton axes where a file has none. Files may use
any order of the letters T, C, Z, Y and X; this module is the only place that knows
about file orders. Outputs keep the input's non-channel axes in canonical order
(``ZCYX`` in, ``ZYX`` out), so a 2-D image gives a 2-D result.
"""

from __future__ import annotations

from typing import Any

from convpaint.errors import DataError

__all__ = [
    "EXAMPLE_AXES",
    "IMAGE_AXES",
    "LABEL_AXES",
    "check_axes",
    "guess_axes",
    "hint_axes",
    "output_axes",
    "probability_axes",
    "to_canonical",
]

#: Canonical image layout.
IMAGE_AXES = "TCZYX"
#: Canonical layout of labels and outputs.
LABEL_AXES = "TZYX"
#: Common axes orders, for messages and docs (any order of distinct letters works).
EXAMPLE_AXES = (
    "YX",
    "CYX",
    "YXC",
    "ZYX",
    "CZYX",
    "ZCYX",
    "TYX",
    "TZYX",
    "TCZYX",
    "TZCYX",
    "ZYXC",
)


def check_axes(value: str, *, channels: bool = True) -> str:
    """Validate an axes string and return it upper-cased.

    Parameters
    ----------
    value : str
        Letters among T, C, Z, Y, X, each at most once, in the file's order; Y and X
        are required. Case and surrounding blanks are ignored.
    channels : bool
        Whether a C axis is allowed (False for annotations, ground truth, outputs).

    Returns
    -------
    str
        The upper-cased axes, e.g. ``"ZCYX"``.

    Raises
    ------
    ValueError
        Unknown or repeated letters, Y or X missing, or C where it is not allowed.
    """
    axes = str(value).strip().upper()
    allowed = "TCZYX" if channels else "TZYX"
    examples = ", ".join(a for a in EXAMPLE_AXES if channels or "C" not in a)
    unknown = sorted(set(axes) - set(allowed))
    if not axes or unknown or len(set(axes)) != len(axes):
        what = (
            f"unknown letters {''.join(unknown)}"
            if unknown
            else "repeated letters"
            if axes
            else "it is empty"
        )
        no_c = "" if channels else " (no C: label images have no channel axis)"
        raise ValueError(
            f"'{value}' is not a valid axes string ({what}); use each of "
            f"{', '.join(allowed)} at most once{no_c}, in the file's order, e.g. "
            f"{examples}"
        )
    if "Y" not in axes or "X" not in axes:
        raise ValueError(
            f"axes '{value}' lack {' and '.join(a for a in 'YX' if a not in axes)}; "
            f"every image has Y and X axes, e.g. {examples}"
        )
    return axes


def guess_axes(shape: tuple[int, ...]) -> str | None:
    """The axes of a file that declares none, only where the shape leaves no doubt.

    A 2-D array is ``YX``; a 3-D array whose last axis has 3 or 4 entries and whose
    first two are large (more than 16) is an RGB/RGBA picture, ``YXC``. Anything
    else (is ``(5, 512, 512)`` five channels, planes or frames?) returns None.
    """
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 16:
        return "YXC"
    return None


def hint_axes(shape: tuple[int, ...]) -> str:
    """Likely axes for a shape, worded for an error message's fix."""
    guess = guess_axes(shape)
    if guess:
        return f"axes: {guess}"
    n = len(shape)
    rgb = shape[-1] in (3, 4) if shape else False
    options = [a for a in EXAMPLE_AXES if len(a) == n and (rgb or a[-1] != "C")]
    if not options:
        return "axes with one letter per dimension among T, C, Z, Y, X"
    return "axes matching the file, e.g. " + " or ".join(options[:5])


def to_canonical(
    array: Any,
    axes: str,
    *,
    path: object,
    file_axes: str | None = None,
) -> Any:
    """Reorder an array with the given ``axes`` to ``(T, C, Z, Y, X)``.

    Missing axes become singletons. When C is the last axis and has 4 entries the
    image is taken as RGBA and the alpha channel is dropped.

    Parameters
    ----------
    array : numpy or dask array
        The file's pixels, one dimension per letter of ``axes``.
    axes : str
        A valid axes string (see :func:`check_axes`).
    path : path-like
        The file, for messages.
    file_axes : str, optional
        The axes the file declares, for messages.

    Returns
    -------
    array
        The same kind of array, shape ``(T, C, Z, Y, X)``, dtype unchanged (a view
        where possible: nothing is read).

    Raises
    ------
    DataError
        When the number of dimensions does not match ``axes``.
    """
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != len(axes):
        own = (
            f" (the file declares axes {file_axes})"
            if file_axes
            else " (the file declares no axes)"
        )
        raise DataError(
            f"image '{path}' has shape {shape}{own} but axes '{axes}' expect "
            f"{len(axes)} dimensions; set {hint_axes(shape)}"
        )
    present = [a for a in IMAGE_AXES if a in axes]
    out = array.transpose([axes.index(a) for a in present])
    if axes[-1] == "C" and shape[-1] == 4:  # RGBA: keep RGB
        out = out[(slice(None),) * present.index("C") + (slice(0, 3),)]
    index = tuple(slice(None) if a in axes else None for a in IMAGE_AXES)
    return out[index]


def output_axes(image_axes: str) -> str:
    """Axes of the labels predicted for an image: its non-C axes, canonical order.

    ``ZCYX`` gives ``ZYX``, ``TYXC`` gives ``TYX``, ``YX`` stays ``YX``.
    """
    return "".join(a for a in LABEL_AXES if a in image_axes)


def probability_axes(label_axes: str, fmt: str) -> str:
    """Axes of the probabilities: the label axes plus C.

    TIFF outputs use the ImageJ hyperstack order (``TZCYX``), zarr and OME-Zarr the
    NGFF order (``TCZYX``); either way a subset of the letters, e.g. ``ZCYX`` for a
    ``ZYX`` TIFF and ``CZYX`` for a ``ZYX`` zarr.
    """
    order = "TZCYX" if fmt == "tif" else "TCZYX"
    return "".join(a for a in order if a in label_axes or a == "C")
