"""Load and save config files: YAML in, validation, path resolution, migrations."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from convpaint.errors import ConfigError

from .features import format_validation_errors
from .objects import resolve_object_paths
from .run import CONFIG_VERSION, Config

__all__ = ["dump_config", "load_config", "parse_config", "resolve_paths"]

#: One function per version step, applied to the raw mapping before validation.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _migrate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    version = raw.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"{where}: version: expected a positive integer, got {version!r}"
        )
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{where}: config version {version} is newer than this convpaint supports "
            f"({CONFIG_VERSION}); upgrade convpaint (pip install -U convpaint)"
        )
    while version < CONFIG_VERSION:
        raw = _MIGRATIONS[version](raw)
        version += 1
        raw["version"] = version
    return raw


def _join(base: Path, value: str | Path) -> str:
    p = Path(str(value)).expanduser()
    return os.path.normpath(p if p.is_absolute() else base / p)


def resolve_paths(config: Config, base_dir: Path) -> Config:
    """Return a copy of ``config`` whose relative paths and globs start at ``base_dir``."""
    config = config.model_copy(deep=True)
    base_dir = base_dir.resolve()
    if config.train is not None:
        t = config.train
        t.images = [_join(base_dir, v) for v in t.images]
        t.annotations = [_join(base_dir, v) for v in t.annotations]
        t.model = Path(_join(base_dir, t.model))
    if config.predict is not None:
        p = config.predict
        p.inputs = [_join(base_dir, v) for v in p.inputs]
        p.output_dir = Path(_join(base_dir, p.output_dir))
        if p.model is None and config.train is not None:
            p.model = config.train.model
        elif p.model is not None:
            p.model = Path(_join(base_dir, p.model))
    if config.evaluate is not None:
        e = config.evaluate
        for name in ("predictions", "ground_truth", "images", "scribbles"):
            values = getattr(e, name)
            if values is not None:
                setattr(e, name, [_join(base_dir, v) for v in values])
        e.output_dir = Path(_join(base_dir, e.output_dir))
    if config.objects is not None:
        config.objects = resolve_object_paths(config.objects, lambda v: _join(base_dir, v))
    for spec in config.features.extractors if config.features.extractors != "auto" else []:
        weights = getattr(spec, "weights", None)
        if weights is not None:
            spec.weights = Path(_join(base_dir, weights))  # type: ignore[attr-defined]
    return config


def parse_config(
    raw: Any, *, where: str = "config", base_dir: Path | None = None
) -> Config:
    """Validate a raw mapping (as read from YAML) into a :class:`Config`.

    Raises
    ------
    ConfigError
        With one ``location: message`` line per problem.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: the file must hold a mapping of sections (features, classifier, "
            f"train, predict), found {type(raw).__name__}"
        )
    raw = _migrate(dict(raw), where)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        lines = format_validation_errors(err)
        raise ConfigError(
            f"{where}: {len(lines)} invalid setting(s):\n  " + "\n  ".join(lines)
        ) from err
    return resolve_paths(config, base_dir) if base_dir is not None else config


def load_config(path: Path | str) -> Config:
    """Read a YAML config file; relative paths resolve against its folder.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or holds invalid settings.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' does not exist; create one with `convpaint init {path}`"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err}); expected YAML") from err
    return parse_config(raw, where=str(path), base_dir=path.parent)


def dump_config(config: Config) -> str:
    """Render a config as YAML (every default filled in)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
