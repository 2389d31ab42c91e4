"""Axes declarations shared by the train and predict sections (see convpaint.io.axes)."""

from convpaint.io.axes import EXAMPLE_AXES as SUPPORTED_AXES
from convpaint.io.axes import check_axes

__all__ = ["SUPPORTED_AXES", "check_axes"]
