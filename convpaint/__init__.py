"""convpaint: pixel classification from sparse scribbles, for large microscopy data.

The library API (nothing here prints)::

    from convpaint import load_config, train, predict
    result = train(load_config("config.yaml"))
    predict(result.model, ["raw/*.tif"], "predictions")
"""

from convpaint._version import __version__
from convpaint.api import (
    PredictResult,
    TrainResult,
    model_info,
    predict,
    predict_from_config,
    train,
)
from convpaint.config import Config, load_config, parse_config
from convpaint.errors import ConvpaintError

__all__ = [
    "Config",
    "ConvpaintError",
    "PredictResult",
    "TrainResult",
    "__version__",
    "load_config",
    "model_info",
    "parse_config",
    "predict",
    "predict_from_config",
    "train",
]
