"""convpaint: pixel classification from sparse scribbles, for large microscopy data.

The library API (nothing here prints)::

    from convpaint import load_config, train, predict
    result = train(load_config("config.yaml"))
    predict(result.model, ["raw/*.tif"], "predictions")

Names are imported on first use, so `convpaint --help` starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from convpaint._version import __version__
from convpaint.errors import ConvpaintError

_LAZY = {
    "PredictResult": "convpaint.api",
    "TrainResult": "convpaint.api",
    "evaluate": "convpaint.api",
    "make_scribbles": "convpaint.api",
    "model_info": "convpaint.api",
    "predict": "convpaint.api",
    "predict_from_config": "convpaint.api",
    "train": "convpaint.api",
    "Config": "convpaint.config",
    "load_config": "convpaint.config",
    "parse_config": "convpaint.config",
}

__all__ = ["ConvpaintError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convpaint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
