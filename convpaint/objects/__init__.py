"""Objects: segment masks into instances, classify whole objects, score them.

The library API (nothing here prints)::

    from convpaint.objects import segment, train, predict, evaluate

Names are imported on first use, so importing the package stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "ObjectPredictResult": "convpaint.objects.api",
    "ObjectTrainResult": "convpaint.objects.api",
    "SegmentResult": "convpaint.objects.api",
    "evaluate": "convpaint.objects.api",
    "evaluate_from_config": "convpaint.objects.api",
    "model_info": "convpaint.objects.api",
    "predict": "convpaint.objects.api",
    "predict_from_config": "convpaint.objects.api",
    "segment": "convpaint.objects.api",
    "segment_from_config": "convpaint.objects.api",
    "train": "convpaint.objects.api",
    "label_mask": "convpaint.objects.segment",
    "load_object_model": "convpaint.objects.model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convpaint.objects' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
