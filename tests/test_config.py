"""Config files: validation, located errors, short forms, round trips, templates."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from convpaint.config import Config, dump_config, load_config, parse_config
from convpaint.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configs_validate_and_round_trip(path: Path) -> None:
    """Every shipped example config validates and survives dump -> parse unchanged."""
    config = load_config(path)
    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_template_validates(tmp_path: Path) -> None:
    """The `convpaint init` template is a valid config."""
    text = (resources.files("convpaint") / "templates" / "config.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml")
    assert config.train is not None and config.train.axes == "YX"
    assert config.features.extractors == "auto"
    assert [e.name for e in config.features.resolved(False)] == ["filters"]
    assert [e.name for e in config.features.resolved(True)] == ["vgg16", "filters"]


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    """Relative paths and templates start at the folder holding the config."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/c.yaml").write_text(
        "train: {images: [img/*.tif], annotations: 'ann/{stem}.tif', model: m.cpm}\n"
        "predict: {inputs: [raw], output_dir: out}\n"
    )
    config = load_config(tmp_path / "sub/c.yaml")
    base = (tmp_path / "sub").resolve()
    assert config.train.images == [str(base / "img/*.tif")]
    assert config.train.annotations == [str(base / "ann/{stem}.tif")]
    assert config.predict.model == base / "m.cpm"  # defaults to train.model
    assert config.predict.output_dir == base / "out"


@pytest.mark.parametrize(
    ("raw", "phrases"),
    [
        # misspelled keys, at several depths
        ({"classifer": {}}, ["classifer", "unknown key"]),
        ({"classifier": {"n_trees": 3}}, ["classifier.n_trees", "unknown key"]),
        (
            {"features": {"name": "vgg16", "scaling": [1]}},
            ["features.extractors", "0.scaling", "unknown key"],
        ),
        # bad values
        (
            {"features": {"name": "filters", "sigmas": [-1]}},
            ["0.sigmas.0", "greater than 0"],
        ),
        (
            {"features": {"name": "vgg16", "layers": ["conv9_9"]}},
            ["unknown VGG16 layer"],
        ),
        (
            {"features": {"name": "vgg"}},
            ["unknown extractor 'vgg'", "did you mean 'vgg16'"],
        ),
        (
            {"train": {"images": ["a.tif"], "annotations": ["b.tif"], "axes": "ZZYX"}},
            ["train.axes", "ZZYX"],
        ),
        (
            {"train": {"images": ["a.tif"], "annotations": ["b.tif"], "axes": "QYX"}},
            ["train.axes", "not a valid axes"],
        ),
        ({"predict": {"inputs": ["a.tif"]}}, ["predict.model is missing"]),
        (
            {"predict": {"model": "m.cpm", "inputs": ["a"], "format": "png"}},
            ["predict.format"],
        ),
        ({"version": 99}, ["newer than this convpaint", "upgrade"]),
    ],
)
def test_invalid_settings_name_their_location(raw: dict, phrases: list[str]) -> None:
    """A bad key or value raises ConfigError naming where it is and what is wrong."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw, where="cfg.yaml")
    msg = str(info.value)
    assert msg.startswith("cfg.yaml")
    for phrase in phrases:
        assert phrase in msg


def test_short_forms_of_features() -> None:
    """One mapping with `name`, or a plain list, both become the extractors list."""
    one = parse_config({"features": {"name": "vgg16", "scalings": [1, 2]}})
    assert [e.name for e in one.features.extractors] == ["vgg16"]
    assert one.features.extractors[0].scalings == [1, 2]
    many = parse_config({"features": [{"name": "filters"}, "vgg16"]})
    assert [e.name for e in many.features.extractors] == ["filters", "vgg16"]


def test_duplicate_extractor_is_rejected() -> None:
    """Listing an extractor twice is refused with a hint."""
    with pytest.raises(ConfigError, match="listed 2 times"):
        parse_config({"features": [{"name": "vgg16"}, {"name": "vgg16"}]})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    """A missing config and invalid YAML both give ConfigError with the path."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(tmp_path / "list.yaml")


def test_schema_has_field_descriptions() -> None:
    """Field docstrings become JSON-schema descriptions (for `check --schema`)."""
    schema = Config.model_json_schema()
    assert "Where the trained model file is written" in str(schema)
