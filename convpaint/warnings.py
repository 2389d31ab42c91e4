"""Warning categories for valid but suspicious settings."""

from __future__ import annotations

__all__ = ["ConvpaintWarning"]


class ConvpaintWarning(UserWarning):
    """A setting or input is valid but probably not what the user wants."""
