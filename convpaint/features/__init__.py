"""Feature extractors: the registry, the classical filter bank and VGG16."""

from .base import FeatureExtractor
from .pipeline import FeaturePipeline
from .registry import build_extractor, list_extractors, params_model, register_extractor

__all__ = [
    "FeatureExtractor",
    "FeaturePipeline",
    "build_extractor",
    "list_extractors",
    "params_model",
    "register_extractor",
]
