"""Load and save config files: YAML in, validation, path resolution, migrations."""

from __future__ import annotations

import os
import re
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

#: Largest config file read (configs are a few kB; lists of inputs belong in files).
MAX_CONFIG_BYTES = 4 * 2**20
#: Most YAML nodes a config may expand to once aliases (``*name``) are followed; an
#: "alias bomb" (aliases of aliases) declares billions in a few hundred bytes.
MAX_CONFIG_NODES = 100_000
#: Deepest ``[``/``{`` nesting accepted. PyYAML's scanner slows down quadratically with
#: flow depth, so a 50000-deep file would take minutes before any other check.
MAX_CONFIG_DEPTH = 64

_QUOTED_OR_COMMENT = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"|#[^\n]*")
_BRACKET = re.compile(r"[\[\]{}]")


def _flow_depth(text: str) -> int:
    """Deepest nesting of flow collections (brackets outside quotes and comments)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_QUOTED_OR_COMMENT.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class _CountingLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses documents whose aliases expand too far.

    Composition builds the node graph with each alias as a shared reference, so it is
    cheap; the expanded size is then counted (memoised per node) before anything is
    constructed, and a cycle (an alias inside its own anchor) is refused.
    """

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise yaml.YAMLError("an alias refers to its own anchor (a recursive document)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo, active) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(
            _expanded_size(k, memo, active) + _expanded_size(v, memo, active)
            for k, v in node.value
        )
    active.discard(key)
    if size > MAX_CONFIG_NODES:
        raise yaml.YAMLError(
            f"the document expands to more than {MAX_CONFIG_NODES} values through "
            "aliases (*name); write the values out, or use fewer aliases"
        )
    memo[key] = size
    return size


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
        config.objects = resolve_object_paths(
            config.objects, lambda v: _join(base_dir, v)
        )
    for spec in (
        config.features.extractors if config.features.extractors != "auto" else []
    ):
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
        if len(lines) == 1:  # one problem: one line, as in a batch log
            raise ConfigError(f"{where}: {lines[0]}") from err
        raise ConfigError(
            f"{where}: {len(lines)} invalid settings:\n  " + "\n  ".join(lines)
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
    if path.is_dir():
        raise ConfigError(
            f"config file '{path}' is a folder; give the YAML file inside it, or create "
            "one with `convpaint init`"
        )
    if not path.is_file():
        raise ConfigError(
            f"config file '{path}' does not exist; create one with `convpaint init {path}`"
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read: {err}") from err
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: the config file is larger than {MAX_CONFIG_BYTES >> 20} MiB; a "
            "config holds settings, not data (long input lists go in a file given to "
            "`--inputs-from`)"
        )
    if b"\0" in data:
        raise ConfigError(
            f"{path}: not a text file (it holds NUL bytes); expected YAML"
        )
    try:
        text = data.decode("utf-8")
        if _flow_depth(text) > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{path}: brackets are nested more than {MAX_CONFIG_DEPTH} levels deep; "
                "that is not a config: check the brackets"
            )
        raw = yaml.load(text, Loader=_CountingLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err}); expected YAML") from err
    except RecursionError as err:
        raise ConfigError(
            f"{path}: the YAML is nested too deeply to be a config; check its "
            "indentation and brackets"
        ) from err
    return parse_config(raw, where=str(path), base_dir=path.parent)


def dump_config(config: Config) -> str:
    """Render a config as YAML (every default filled in)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
