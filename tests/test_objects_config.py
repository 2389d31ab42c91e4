"""The objects section of the config: validation, located errors, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from convpaint.config import dump_config, load_config, parse_config
from convpaint.config.objects import ObjectCNNConfig, ObjectForestConfig
from convpaint.errors import ConfigError


def test_relative_paths_and_default_model(tmp_path: Path) -> None:
    """Paths in every objects subsection resolve against the config's folder, and
    objects.predict.model defaults to objects.train.model."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/c.yaml").write_text(
        """
objects:
  segment: {inputs: [pred/*.tif], output_dir: inst}
  classifier: {kind: cnn, architecture: resnet18, weights: w/r18.pth}
  train: {images: [img], instances: "inst/{stem}_instances.tif", classes: "cls/{stem}.csv", model: m.cpo}
  predict: {inputs: raw, instances: "inst/{stem}_instances.tif"}
  evaluate: {ground_truth_instances: "gt/{stem}.tif", ground_truth_classes: "gt/{stem}.csv"}
"""
    )
    config = load_config(tmp_path / "sub/c.yaml")
    base = (tmp_path / "sub").resolve()
    o = config.objects
    assert o is not None and isinstance(o.classifier, ObjectCNNConfig)
    assert o.segment.inputs == [str(base / "pred/*.tif")]
    assert o.segment.output_dir == base / "inst"
    assert o.classifier.weights == base / "w/r18.pth"
    assert o.train.instances == [str(base / "inst/{stem}_instances.tif")]
    assert o.predict.model == base / "m.cpo" and o.predict.inputs == [str(base / "raw")]
    assert o.evaluate.ground_truth_classes == [str(base / "gt/{stem}.csv")]
    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_forest_is_the_default_classifier() -> None:
    """Without a classifier, objects use the forest with its documented defaults."""
    config = parse_config({"objects": {}})
    assert isinstance(config.objects.classifier, ObjectForestConfig)
    assert config.objects.classifier.features.ring == 4


@pytest.mark.parametrize(
    ("raw", "phrases"),
    [
        (
            {"classifier": {"kind": "forest", "n_trees": 3}},
            ["objects.classifier.forest.n_trees", "unknown key"],
        ),
        ({"classifier": {"kind": "svm"}}, ["objects.classifier", "forest", "cnn"]),
        (
            {"classifier": {"kind": "cnn", "architecture": "resnet18"}},
            ["needs weights"],
        ),
        (
            {"segment": {"foreground": [2], "threshold": 0.5}},
            ["either foreground", "threshold"],
        ),
        ({"segment": {"min_size": 10, "max_size": 5}}, ["max_size 5 is smaller"]),
        ({"segment": {"output_name": "instances"}}, ["{stem}"]),
        (
            {
                "train": {
                    "images": ["a"],
                    "instances": ["b"],
                    "classes": ["c"],
                    "axes": "TYX",
                }
            },
            ["axes 'TYX'"],
        ),
        (
            {"predict": {"inputs": ["a"], "instances": ["b"]}},
            ["objects.predict.model is missing"],
        ),
    ],
)
def test_invalid_objects_settings_are_located(raw: dict, phrases: list[str]) -> None:
    """Invalid objects settings give a ConfigError naming the key and the fix."""
    with pytest.raises(ConfigError) as err:
        parse_config({"objects": raw})
    for phrase in phrases:
        assert phrase in str(err.value)


def test_issue_names_and_new_settings() -> None:
    """`objects-forest`/`objects-cnn` name the classifiers; crop_size is auto or
    16..512; pixel features take image or plane statistics."""
    config = parse_config({"objects": {"classifier": {"kind": "objects-cnn"}}})
    cnn = config.objects.classifier
    assert isinstance(cnn, ObjectCNNConfig) and cnn.kind == "cnn"
    assert cnn.crop_size == "auto" and cnn.validation_fraction == 0.1
    forest = parse_config(
        {
            "objects": {
                "classifier": {
                    "kind": "objects-forest",
                    "features": {
                        "pixel_features": {"extractors": [{"name": "filters"}]}
                    },
                }
            }
        }
    ).objects.classifier
    assert isinstance(forest, ObjectForestConfig) and forest.kind == "forest"
    for raw, phrase in [
        ({"kind": "cnn", "crop_size": 8}, "crop_size 8 is outside 16..512"),
        ({"kind": "cnn", "validation_fraction": 0.9}, "validation_fraction"),
        (
            {"features": {"pixel_features": {"normalize": "training"}}},
            "normalize: training is not available",
        ),
    ]:
        with pytest.raises(ConfigError, match=phrase):
            parse_config({"objects": {"classifier": raw}})


def test_template_objects_block_is_valid() -> None:
    """The commented objects block of `convpaint init`'s template validates once
    uncommented."""
    from importlib.resources import files

    text = files("convpaint.templates").joinpath("config.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("# objects:")
    block = "\n".join(line[2:] for line in lines[start:] if line.startswith("# "))
    raw = yaml.safe_load(text)
    raw.update(yaml.safe_load(block))
    config = parse_config(raw)
    assert config.objects.train.model == Path("models/objects.cpo")
    assert config.objects.evaluate.figures
