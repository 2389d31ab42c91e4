"""Pydantic models of the config file, and loading/saving it."""

from .base import StrictModel
from .classifier import RandomForestConfig
from .data import SUPPORTED_AXES, check_axes
from .features import ExtractorParams, FeatureConfig, format_validation_errors
from .io import dump_config, load_config, parse_config, resolve_paths
from .objects import ObjectsConfig
from .run import CONFIG_VERSION, Config, EvaluateSection, PredictSection, TrainSection
from .tiling import TilingConfig

__all__ = [
    "CONFIG_VERSION",
    "SUPPORTED_AXES",
    "Config",
    "EvaluateSection",
    "ExtractorParams",
    "FeatureConfig",
    "ObjectsConfig",
    "PredictSection",
    "RandomForestConfig",
    "StrictModel",
    "TilingConfig",
    "TrainSection",
    "check_axes",
    "dump_config",
    "format_validation_errors",
    "load_config",
    "parse_config",
    "resolve_paths",
]
