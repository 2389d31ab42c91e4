"""Errors a user can fix, as a small typed hierarchy.

Every message follows one shape: *what* was wrong, *where* (path or config
location), *what was found*, and *how to fix it*. The CLI prints the message of a
:class:`ConvpaintError` on one line and exits with code 1; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConvpaintError",
    "DataError",
    "ModelBundleError",
    "OutputBusyError",
    "OutputError",
    "OutputExistsError",
    "UnknownExtractorError",
    "WeightsError",
]


class ConvpaintError(Exception):
    """An error the user can fix: bad config, missing file, incompatible model."""


class ConfigError(ConvpaintError, ValueError):
    """A configuration file or value is invalid."""


class DataError(ConvpaintError, ValueError):
    """An image, annotation or ground-truth file is missing, unreadable or malformed."""


class UnknownExtractorError(ConvpaintError, KeyError):
    """A feature extractor name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelBundleError(ConvpaintError):
    """A model file cannot be trusted, read or used with the given inputs."""


class WeightsError(ConvpaintError):
    """Pretrained network weights are missing, corrupt or cannot be downloaded."""


class OutputExistsError(ConvpaintError):
    """An output file exists and the user did not ask to overwrite or skip it."""


class OutputBusyError(OutputExistsError):
    """Another run (named in the message) is writing the same output right now."""


class OutputError(ConvpaintError):
    """An output cannot be written: permissions, a full disk, a file where a folder
    should be, or a folder that convpaint did not create in the output's place."""
