"""Axes declarations shared by the train and predict sections."""

from __future__ import annotations

__all__ = ["SUPPORTED_AXES", "check_axes"]

#: Axes orders accepted today; Z/T stacks come in a later release.
SUPPORTED_AXES = ("YX", "CYX", "YXC")


def check_axes(value: str) -> str:
    """Return ``value`` upper-cased if it is a supported axes string, else raise ValueError."""
    axes = value.strip().upper()
    if axes in SUPPORTED_AXES:
        return axes
    if set(axes) - set("TZCYX") or len(set(axes)) != len(axes):
        raise ValueError(
            f"'{value}' is not a valid axes string; use letters among T, Z, C, Y, X once "
            f"each, e.g. one of {', '.join(SUPPORTED_AXES)}"
        )
    raise ValueError(
        f"axes '{value}' are not supported yet; supported: {', '.join(SUPPORTED_AXES)} "
        "(YXC for RGB/RGBA files, CYX for channel-first multichannel images)"
    )
