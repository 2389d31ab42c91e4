"""StrictModel: the strict pydantic settings every config model shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base of all config models: unknown keys are errors, values are re-checked."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )
