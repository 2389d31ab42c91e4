"""Pydantic models of the config file, and loading/saving it."""

from .base import StrictModel
from .classifier import PLANE_TREES, STACK_TREES, RandomForestConfig
from .data import SUPPORTED_AXES, check_axes
from .features import (
    STACK_SIGMAS,
    ExtractorParams,
    FeatureConfig,
    format_validation_errors,
)
from .geometry import SpacingConfig
from .io import dump_config, load_config, parse_config, resolve_paths
from .objects import ObjectsConfig
from .run import CONFIG_VERSION, Config, EvaluateSection, PredictSection, TrainSection
from .tiling import ClusterConfig, TileShape, TilingConfig

__all__ = [
    "CONFIG_VERSION",
    "PLANE_TREES",
    "STACK_SIGMAS",
    "STACK_TREES",
    "SUPPORTED_AXES",
    "ClusterConfig",
    "Config",
    "EvaluateSection",
    "ExtractorParams",
    "FeatureConfig",
    "ObjectsConfig",
    "PredictSection",
    "RandomForestConfig",
    "SpacingConfig",
    "StrictModel",
    "TileShape",
    "TilingConfig",
    "TrainSection",
    "check_axes",
    "dump_config",
    "format_validation_errors",
    "load_config",
    "parse_config",
    "resolve_paths",
]
