"""The extractor registry: name -> parameter model -> extractor; plugin discovery."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Any

from convpaint.errors import UnknownExtractorError

__all__ = [
    "build_extractor",
    "list_extractors",
    "params_model",
    "register_extractor",
]

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, tuple[type, type]] = {}
_PLUGIN_GROUP = "convpaint.extractors"
_BUILTINS_LOADED = False


def register_extractor(name: str, *, params: type) -> Callable[[type], type]:
    """Class decorator that registers an extractor under ``name`` with its params model.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """

    def decorate(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"extractor name '{name}' is registered twice")
        _REGISTRY[name] = (cls, params)
        return cls

    return decorate


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from . import classical, cnn, networks  # noqa: F401  (registers on import)


def _load_plugin(name: str) -> None:
    try:
        entries = metadata.entry_points(group=_PLUGIN_GROUP)
    except Exception as err:  # a broken environment must not stop built-in use
        logger.warning("could not list convpaint extractor plugins: %s", err)
        return
    for entry in entries:
        if entry.name != name:
            continue
        try:
            entry.load()
        except Exception as err:
            dist = getattr(entry.dist, "name", "?")
            logger.warning(
                "extractor plugin '%s' from %s failed to load: %s", name, dist, err
            )
            return
        if name not in _REGISTRY:
            logger.warning(
                "plugin entry '%s' did not register an extractor of that name", name
            )


def _lookup(name: str) -> tuple[type, type]:
    _load_builtins()
    if name not in _REGISTRY:
        _load_plugin(name)
    if name not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownExtractorError(
            f"unknown extractor '{name}'{hint}; available: {', '.join(known)}"
        )
    return _REGISTRY[name]


def params_model(name: str) -> type:
    """Return the pydantic parameter model registered for ``name``."""
    return _lookup(name)[1]


def build_extractor(params: Any) -> Any:
    """Instantiate the extractor described by a validated params model."""
    cls, model = _lookup(params.name)
    if not isinstance(params, model):
        params = model.model_validate(params.model_dump())
    return cls(params)


def list_extractors() -> dict[str, tuple[type, type]]:
    """All registered extractors (built-ins and installed plugins): name -> (class, params)."""
    _load_builtins()
    try:
        for entry in metadata.entry_points(group=_PLUGIN_GROUP):
            if entry.name not in _REGISTRY:
                _load_plugin(entry.name)
    except Exception as err:
        logger.warning("could not list convpaint extractor plugins: %s", err)
    return dict(sorted(_REGISTRY.items()))
