"""Voxel size settings shared by the train and predict sections."""

from __future__ import annotations

from pydantic import PositiveFloat

from .base import StrictModel

__all__ = ["SpacingConfig"]


class SpacingConfig(StrictModel):
    """Physical voxel size; overrides what the files say. Example::

        spacing: {z: 0.5, y: 0.1, x: 0.1}

    Only ratios matter for the features (the `views` stretch and the `3d` filters'
    anisotropy); the values and `unit` are also written to the outputs.
    """

    z: PositiveFloat | None = None
    """Step between Z planes."""

    y: PositiveFloat | None = None
    """Pixel height."""

    x: PositiveFloat | None = None
    """Pixel width."""

    unit: str | None = None
    """Unit of the values, e.g. micrometer."""

    def as_dict(self) -> dict[str, float]:
        """The given axes as ``{"z": ..., "y": ..., "x": ...}`` (missing ones left out)."""
        return {k: v for k, v in (("z", self.z), ("y", self.y), ("x", self.x)) if v}
