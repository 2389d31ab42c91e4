"""ModelMeta: the typed description of a trained model (the model file's metadata).

`convpaint.model_io` reads and writes the file; this model checks and types what the
rest of the package uses, so nothing reads metadata by string keys, and a model file
whose metadata has the wrong shape is refused with a message naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from convpaint.errors import ModelBundleError

__all__ = ["FeatureGeometry", "ModelMeta", "NormalizationMeta", "parse_meta"]


class _Meta(BaseModel):
    # unknown keys are kept (newer files may add some); known ones are type-checked
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class NormalizationStats(_Meta):
    """Pooled training-set statistics, one value per channel (or one, joint)."""

    mean: list[float]
    std: list[float]


class NormalizationMeta(_Meta):
    """How images are z-scored before features."""

    mode: Literal["image", "plane", "training"]
    joint_channels: bool = False
    training: NormalizationStats


class FeatureGeometry(_Meta):
    """How stacks were featurised (absent in models of convpaint 0.1: 2-D planes)."""

    dims: Literal["planes", "views", "3d"] = "planes"
    spacing: list[float] | None = None
    halo: list[int] = Field(default_factory=lambda: [0, 0, 0])
    alignment: list[int] = Field(default_factory=lambda: [1, 1, 1])
    view_factor: int | None = None


class ModelMeta(_Meta):
    """What a model file says about the model (see README, "The model file")."""

    created: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    extractors: list[dict[str, Any]]
    fingerprints: list[dict[str, Any]]
    axes: str
    n_channels: StrictInt = Field(ge=1)
    classes: list[StrictInt] = Field(min_length=2)
    n_features: StrictInt = Field(ge=1)
    feature_names: list[str] = Field(default_factory=list)
    halo: int | list[int] = 0
    alignment: int | list[int] = 1
    normalization: NormalizationMeta
    geometry: FeatureGeometry = Field(default_factory=FeatureGeometry)
    training: dict[str, Any] = Field(default_factory=dict)

    @property
    def dims(self) -> str:
        """Featurisation mode (planes, views or 3d)."""
        return self.geometry.dims

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """Voxel size ``(z, y, x)`` the model was trained at, if known."""
        s = self.geometry.spacing
        return (float(s[0]), float(s[1]), float(s[2])) if s else None


def parse_meta(raw: dict[str, Any], path: object) -> ModelMeta:
    """Type-check a model file's metadata.

    Raises
    ------
    ModelBundleError
        Naming the first fields that are missing or have the wrong type.
    """
    try:
        meta = ModelMeta.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors()[:3]
        )
        raise ModelBundleError(
            f"'{path}' is not a usable convpaint model: its metadata is malformed "
            f"({problems}). Use a file written by `convpaint train`"
        ) from err
    if len(set(meta.classes)) != len(meta.classes) or min(meta.classes) < 0:
        raise ModelBundleError(
            f"'{path}' is not a usable convpaint model: classes {meta.classes} must be "
            "distinct non-negative integers. Use a file written by `convpaint train`"
        )
    return meta
