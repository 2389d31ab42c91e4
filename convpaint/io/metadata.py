"""What files say about themselves: declared axes, pixel sizes and their unit.

Sources, in the order they are looked at:

- TIFF: ImageJ hyperstacks (axes from ``channels``/``slices``/``frames``, Z spacing
  from ``spacing``, X/Y from the resolution tags, ``unit``), OME-TIFF (axes from the
  OME-XML dimension order and sizes, ``PhysicalSizeX/Y/Z`` with their units), files
  written by tifffile with ``metadata={'axes': ...}``, and plain single-page files
  (``YX``, or ``YXC`` for RGB pixels). tifffile parses all of them; this module only
  maps its axes letters (S, samples, is C) and reads the pixel sizes.
- zarr: OME-Zarr ``multiscales`` (axes names/types/units, the first dataset's
  ``scale``), and plain arrays' ``axes`` (convpaint's own), ``_ARRAY_DIMENSIONS``
  (xarray) or zarr v3 ``dimension_names``, with convpaint's ``spacing``/``unit``.

A file *declares* its axes only when every letter is known: tifffile uses Q, I and
others for dimensions it cannot name (e.g. ``QYX`` for a 3-D array written without
axes), and such files must be given ``axes``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from convpaint.errors import DataError

__all__ = [
    "FileMetadata",
    "axes_from_names",
    "imagej_unit",
    "ngff_multiscale",
    "normalize_unit",
    "ome_unit",
    "tiff_metadata",
    "zarr_metadata",
]

logger = logging.getLogger(__name__)

#: Length units: NGFF (UDUNITS-2) name -> metres, and the spellings that mean it.
_UNITS: dict[str, tuple[float, tuple[str, ...]]] = {
    "meter": (1.0, ("m", "meter", "meters", "metre")),
    "centimeter": (1e-2, ("cm", "centimeter", "centimeters")),
    "millimeter": (1e-3, ("mm", "millimeter", "millimeters")),
    "micrometer": (
        1e-6,
        (
            "um",
            "µm",
            "μm",
            "micron",
            "microns",
            "micrometer",
            "micrometers",
            "micrometre",
            "\\u00b5m",
        ),
    ),
    "nanometer": (1e-9, ("nm", "nanometer", "nanometers", "nanometre")),
    "angstrom": (1e-10, ("a", "å", "angstrom", "angstroms")),
    "picometer": (1e-12, ("pm", "picometer", "picometers")),
}
_SPELLINGS = {s: name for name, (_, names) in _UNITS.items() for s in names}
#: How ImageJ and OME write each unit.
_IMAGEJ_UNITS = {"micrometer": "micron", "angstrom": "A"}
_OME_UNITS = {
    "meter": "m",
    "centimeter": "cm",
    "millimeter": "mm",
    "micrometer": "µm",
    "nanometer": "nm",
    "angstrom": "Å",
    "picometer": "pm",
}
#: Axis names used by xarray, NGFF and others -> convpaint letters.
_AXIS_NAMES = {
    "t": "T",
    "time": "T",
    "c": "C",
    "ch": "C",
    "channel": "C",
    "channels": "C",
    "z": "Z",
    "y": "Y",
    "x": "X",
}


@dataclass(frozen=True)
class FileMetadata:
    """Axes and pixel sizes a file declares.

    Attributes
    ----------
    axes : str or None
        The declared axes in file order (letters among T, C, Z, Y, X), or None when
        the file does not name every dimension.
    source : str or None
        What declared them, for messages, e.g. ``"ImageJ metadata"``.
    raw_axes : str or None
        The reader's own axes string (e.g. tifffile's ``QYX``), for messages.
    spacing : dict
        Physical pixel size per spatial axis found in the file (keys among
        ``"z"``, ``"y"``, ``"x"``), all in ``unit``.
    unit : str or None
        Length unit of ``spacing`` as an NGFF/UDUNITS name (``"micrometer"``), or
        None when the file names none or one convpaint does not know.
    """

    axes: str | None = None
    source: str | None = None
    raw_axes: str | None = None
    spacing: dict[str, float] = field(default_factory=dict)
    unit: str | None = None

    def describe(self) -> str:
        """``ZYX (ImageJ metadata)``, or ``none`` with the reader's letters."""
        if self.axes:
            return f"{self.axes} ({self.source})" if self.source else self.axes
        return f"none (reader axes {self.raw_axes})" if self.raw_axes else "none"


def normalize_unit(unit: object) -> str | None:
    """NGFF name of a length unit (``"um"``, ``"micron"`` -> ``"micrometer"``).

    Returns None for no unit, ``pixel`` and unknown units (logged).
    """
    if unit is None:
        return None
    text = str(unit).strip()
    if not text or text.lower() in ("pixel", "pixels", "px", "none"):
        return None
    name = _SPELLINGS.get(text.lower()) or _SPELLINGS.get(text)
    if name is None:
        logger.warning("unknown length unit '%s' in file metadata: ignored", unit)
    return name


def imagej_unit(unit: str) -> str:
    """How ImageJ writes an NGFF unit name (``micrometer`` -> ``micron``)."""
    return _IMAGEJ_UNITS.get(unit, _OME_UNITS.get(unit, unit))


def ome_unit(unit: str) -> str:
    """The OME unit symbol of an NGFF unit name (``micrometer`` -> ``µm``)."""
    return _OME_UNITS.get(unit, unit)


def _in_unit(value: float, unit: str | None, target: str | None) -> float:
    """Convert ``value`` from ``unit`` to ``target`` (both NGFF names or None)."""
    if unit is None or target is None or unit == target:
        return value
    return value * _UNITS[unit][0] / _UNITS[target][0]


def _positive(value: object, what: str, where: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise DataError(
            f"'{where}': the {what} in the file's metadata is '{value}', not a number; "
            "fix the metadata or set spacing in the config"
        ) from err
    if not number > 0 or number == float("inf"):
        raise DataError(
            f"'{where}': the {what} in the file's metadata is {value}; pixel sizes "
            "must be positive: fix the metadata or set spacing in the config"
        )
    return number


def axes_from_names(names: list[Any]) -> str | None:
    """Letters for a list of axis names (``["z", "y", "x"]`` -> ``"ZYX"``).

    Accepts strings and NGFF axis objects (``{"name": ..., "type": ...}``); a
    ``time``/``channel`` type names its axis whatever the name. None when any
    axis is unknown or repeated.
    """
    letters = []
    for item in names:
        if isinstance(item, dict):
            kind = str(item.get("type", "")).lower()
            name = str(item.get("name", "")).lower()
            letter = {"time": "T", "channel": "C"}.get(kind) or _AXIS_NAMES.get(name)
        else:
            letter = _AXIS_NAMES.get(str(item).lower())
        if letter is None:
            return None
        letters.append(letter)
    axes = "".join(letters)
    return axes if len(set(axes)) == len(axes) else None


# --- TIFF ---------------------------------------------------------------------------


def tiff_metadata(tif: Any, series: Any, path: object) -> FileMetadata:
    """Declared axes and pixel sizes of a TIFF series read by tifffile.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    series : tifffile.TiffPageSeries
        The series being read (the first one).
    path : path-like
        The file, for messages.

    Returns
    -------
    FileMetadata

    Raises
    ------
    DataError
        When a pixel size in the metadata is not a positive number.
    """
    raw = str(series.axes)
    letters = raw.replace("S", "C")
    known = set(letters) <= set("TCZYX") and len(set(letters)) == len(letters)
    kind = str(getattr(series, "kind", "")).lower()
    shaped = tif.shaped_metadata[0] if kind == "shaped" and tif.shaped_metadata else {}
    if kind == "imagej":
        source = "ImageJ metadata"
    elif kind == "ome":
        source = "OME-XML"
    elif kind == "shaped" and "axes" in shaped:
        source = "tifffile metadata"
    elif raw in ("YX", "YXS"):
        # one plain page of gray or RGB pixels: the TIFF layout itself says so; a
        # planar (3, Y, X) page (tifffile's SYX) may be three planes, so it does not
        source = "TIFF page layout"
    elif kind not in ("shaped", "uniform", "generic", ""):
        source = f"{kind} metadata"  # vendor formats tifffile parses (LSM, STK, ...)
    else:
        source = None
    spacing: dict[str, float] = {}
    unit: str | None = None
    if kind == "imagej" and tif.imagej_metadata is not None:
        spacing, unit = _imagej_spacing(tif, path)
    elif kind == "ome" and tif.ome_metadata:
        spacing, unit = _ome_spacing(tif.ome_metadata, series, path)
    if known and source is not None:
        return FileMetadata(letters, source, raw, spacing, unit)
    return FileMetadata(None, None, raw, spacing, unit)


def _imagej_spacing(tif: Any, path: object) -> tuple[dict[str, float], str | None]:
    meta = tif.imagej_metadata
    unit = normalize_unit(meta.get("unit"))
    spacing: dict[str, float] = {}
    if "spacing" in meta:
        spacing["z"] = _positive(meta["spacing"], "Z spacing (ImageJ 'spacing')", path)
    if unit is None:  # ImageJ without a unit is uncalibrated (pixels): no X/Y size
        return spacing, unit
    tags = tif.pages.first.tags
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        if tag in tags:
            num, den = tags[tag].value
            # resolution is pixels per unit; ImageJ writes 1/pixel size
            if num:
                spacing[axis] = _positive(den / num, f"{axis.upper()} pixel size", path)
    return spacing, unit


def _ome_spacing(
    xml: str, series: Any, path: object
) -> tuple[dict[str, float], str | None]:
    import tifffile

    try:
        images = tifffile.xml2dict(xml)["OME"]["Image"]
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(
            f"'{path}': the OME-XML metadata could not be parsed ({err}); re-export "
            "the file or set axes and spacing in the config"
        ) from err
    if isinstance(images, list):
        images = images[min(int(getattr(series, "index", 0) or 0), len(images) - 1)]
    pixels = images.get("Pixels", {})
    found: dict[str, tuple[float, str | None]] = {}
    for axis in "zyx":
        key = f"PhysicalSize{axis.upper()}"
        if key in pixels:
            value = _positive(pixels[key], f"OME {key}", path)
            # OME's default unit for physical sizes is the micrometre
            found[axis] = (value, normalize_unit(pixels.get(f"{key}Unit", "µm")))
    units = [u for _, u in found.values() if u is not None]
    unit = units[-1] if units else None  # the X unit wins when they differ
    return {a: _in_unit(v, u, unit) for a, (v, u) in found.items()}, unit


# --- zarr ---------------------------------------------------------------------------


def ngff_multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first ``multiscales`` entry of OME-Zarr group attributes (v0.1-0.5)."""
    ome = attrs.get("ome", attrs)  # NGFF 0.5 nests everything under "ome"
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if isinstance(multiscales, list) and multiscales:
        return multiscales[0]
    return None


def zarr_metadata(
    array: Any, *, group_attrs: dict[str, Any] | None, path: object
) -> FileMetadata:
    """Declared axes and pixel sizes of a zarr array (and its OME-Zarr group).

    Parameters
    ----------
    array : zarr.Array
        The array being read (level 0 of an OME-Zarr image).
    group_attrs : dict, optional
        Attributes of the enclosing group when it is an OME-Zarr image.
    path : path-like
        The file, for messages.

    Returns
    -------
    FileMetadata

    Raises
    ------
    DataError
        When a scale or pixel size in the metadata is not a positive number.
    """
    multiscale = ngff_multiscale(group_attrs or {})
    if multiscale is not None:
        return _ngff_metadata(multiscale, path)
    attrs = dict(array.attrs)
    raw: str | None = None
    axes: str | None = None
    source = "zarr attributes"
    if isinstance(attrs.get("axes"), str):
        raw = attrs["axes"]
        axes = raw.upper() if set(raw.upper()) <= set("TCZYX") else None
        source = "zarr attribute 'axes'"
    elif isinstance(attrs.get("_ARRAY_DIMENSIONS"), list):
        raw = ",".join(map(str, attrs["_ARRAY_DIMENSIONS"]))
        axes = axes_from_names(attrs["_ARRAY_DIMENSIONS"])
        source = "zarr attribute '_ARRAY_DIMENSIONS'"
    else:
        names = getattr(getattr(array, "metadata", None), "dimension_names", None)
        if names and all(n is not None for n in names):
            raw = ",".join(names)
            axes = axes_from_names(list(names))
            source = "zarr dimension_names"
    if axes is not None and len(set(axes)) != len(axes):
        axes = None
    spacing: dict[str, float] = {}
    if isinstance(attrs.get("spacing"), dict):
        spacing = {
            k.lower(): _positive(v, f"spacing '{k}'", path)
            for k, v in attrs["spacing"].items()
            if k.lower() in "zyx"
        }
    unit = normalize_unit(attrs.get("unit"))
    return FileMetadata(axes, source if axes else None, raw, spacing, unit)


def _ngff_metadata(multiscale: dict[str, Any], path: object) -> FileMetadata:
    names = multiscale.get("axes")
    if not names:  # NGFF 0.1/0.2 had no axes: always 5-D TCZYX
        names = list("tczyx")
    axes = axes_from_names(list(names))
    raw = ",".join(a["name"] if isinstance(a, dict) else str(a) for a in names)
    scale = [1.0] * len(names)
    datasets = multiscale.get("datasets") or [{}]
    transforms = list(datasets[0].get("coordinateTransformations") or [])
    transforms += list(multiscale.get("coordinateTransformations") or [])
    for transform in transforms:
        if transform.get("type") == "scale" and "scale" in transform:
            values = transform["scale"]
            if len(values) == len(scale):
                scale = [
                    s * _positive(v, "OME-Zarr scale", path)
                    for s, v in zip(scale, values, strict=True)
                ]
    spacing: dict[str, float] = {}
    units: dict[str, str | None] = {}
    for item, value in zip(names, scale, strict=True):
        name = (item.get("name") if isinstance(item, dict) else str(item)).lower()
        if name in ("z", "y", "x"):
            spacing[name] = value
            units[name] = (
                normalize_unit(item.get("unit")) if isinstance(item, dict) else None
            )
    known = [u for u in units.values() if u is not None]
    unit = units.get("x") or (known[-1] if known else None)
    spacing = {a: _in_unit(v, units.get(a), unit) for a, v in spacing.items()}
    return FileMetadata(
        axes, "OME-Zarr multiscales" if axes else None, raw, spacing, unit
    )
