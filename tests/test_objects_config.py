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
