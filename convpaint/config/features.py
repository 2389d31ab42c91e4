"""FeatureConfig: which extractors build the per-pixel features, and how to normalise."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from .base import StrictModel

#: The measured default of `features.dims: auto` for Z stacks whose extractors all
#: have a 3-D form (benchmarks/accuracy_3d.py); `views` otherwise.
STACK_DEFAULT_DIMS = "3d"
#: Filter-bank sigmas of the default features for grayscale Z stacks: in 3-D the
#: smallest 2-D sigma (0.3) is below a voxel along Z and only adds noise.
STACK_SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)

__all__ = [
    "STACK_DEFAULT_DIMS",
    "STACK_SIGMAS",
    "ExtractorParams",
    "FeatureConfig",
    "auto_extractors",
    "format_validation_errors",
]


class ExtractorParams(StrictModel):
    """Base of every extractor's parameter model; ``name`` selects the extractor."""

    name: str
    """Registered extractor name (see `convpaint extractors`)."""


def format_validation_errors(err: ValidationError, prefix: str = "") -> list[str]:
    """Render a pydantic error as one ``location: message [input=...]`` line per problem."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `convpaint init` writes every valid key)"
        shown = repr(e.get("input"))
        extra = f" [input={shown[:60]}]" if e["type"] != "extra_forbidden" else ""
        lines.append(f"{loc}: {msg}{extra}")
    return lines


def auto_extractors(colour: bool, stack: bool = False) -> list[ExtractorParams]:
    """The measured default features for colour or other images, 2-D or stacks.

    Colour images (RGB/RGBA, channels last, such as H&E or photographs) get VGG16
    conv1_1 and conv2_1 at scalings 1 and 2 (bundled weights) plus a light filter bank
    (sigma 1, 3.5, 10); every other image (grayscale or channel-first microscopy) gets
    the full filter bank alone, without its smallest sigma for Z stacks (computed in
    3-D there). All measured best in `benchmarks/accuracy.py` and
    `benchmarks/accuracy_3d.py` (README).
    """
    from convpaint.features.registry import params_model

    filters = params_model("filters")
    if stack and not colour:
        return [filters(sigmas=list(STACK_SIGMAS))]
    if colour:
        vgg = params_model("vgg16")(layers=["conv1_1", "conv2_1"], scalings=[1, 2])
        return [vgg, filters(sigmas=[1.0, 3.5, 10.0])]
    return [filters()]


class FeatureConfig(StrictModel):
    """Per-pixel features: one extractor or several concatenated.

    Short forms are accepted: ``features: {name: vgg16, scalings: [1, 2]}`` for one
    extractor, or a list of such mappings. Example::

        features:
          extractors:
            - name: vgg16
              layers: [conv1_1]
              scalings: [1, 2, 4]
            - name: filters
              sigmas: [0.7, 1.6, 3.5, 5.0]
          normalize: image
    """

    extractors: Literal["auto"] | list[SerializeAsAny[ExtractorParams]] = "auto"
    """Extractors whose features are concatenated, in this order. 'auto' (default)
    chooses from the training images' axes when training: the filter bank for
    grayscale/multichannel microscopy, VGG16 (conv1_1, conv2_1) + a light filter bank
    for colour (YXC) images; the model stores the explicit list."""

    normalize: Literal["image", "plane", "training"] = "image"
    """Intensity statistics used at prediction: each image's own mean and standard
    deviation over the whole image or stack ('image'), each Z plane's and time
    frame's own ('plane'), or those of the training images stored in the model
    ('training', for batches whose brightness is comparable to the training data).
    Large stacks are measured on an evenly spread sample of planes."""

    dims: Literal["auto", "planes", "views", "3d"] = "auto"
    """How Z stacks are featurised: 'planes' (each plane on its own), 'views' (the
    2-D features of the xy, xz and yz planes through each voxel, concatenated), '3d'
    (true 3-D filters; the `filters` extractor only), or 'auto' (the measured default
    for stacks: 3d when every extractor is the filter bank, else views; see README).
    2-D images always use planes. Time frames never mix."""

    def resolved_dims(self, is_stack: bool, extractors: list[Any] | None = None) -> str:
        """The featurisation used for an image: `dims`, or the measured default — for
        stacks `3d` when every extractor is the filter bank (the only one with a 3-D
        form), else `views`; always `planes` for 2-D images."""
        if not is_stack:
            return "planes"
        if self.dims != "auto":
            return self.dims
        specs = extractors if extractors is not None else self.extractors
        if specs != "auto" and any(s.name != "filters" for s in specs):
            return "views"
        return STACK_DEFAULT_DIMS

    def resolved(self, colour: bool, stack: bool = False) -> list[ExtractorParams]:
        """The explicit extractors: the configured list, or the measured default for
        colour (RGB) or other images, 2-D or stacks."""
        return (
            auto_extractors(colour, stack)
            if self.extractors == "auto"
            else list(self.extractors)
        )

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"extractors": data}
        if isinstance(data, dict) and "name" in data:
            return {"extractors": [data]}
        return data

    @field_validator("extractors", mode="before")
    @classmethod
    def _build_params(cls, value: Any) -> Any:
        from convpaint.errors import UnknownExtractorError
        from convpaint.features.registry import params_model

        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError(
                "the extractors list is empty; name at least one, or use 'auto'"
            )
        built: list[Any] = []
        problems: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, ExtractorParams):
                built.append(item)
                continue
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                problems.append(f"{i}: each extractor needs a 'name' key, got {item!r}")
                continue
            try:
                model = params_model(str(item["name"]))
                built.append(model.model_validate(item))
            except UnknownExtractorError as err:
                problems.append(f"{i}.name: {err}")
            except ValidationError as err:
                problems.extend(format_validation_errors(err, prefix=str(i)))
        if problems:
            raise ValueError("; ".join(problems))
        names = [p.name for p in built]
        for name in set(names):
            if names.count(name) > 1:
                raise ValueError(
                    f"extractor '{name}' is listed {names.count(name)} times; list each "
                    "extractor once and put all its settings (e.g. several scalings) there"
                )
        return built
