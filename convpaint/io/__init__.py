"""Reading images and annotations, writing results; axes handled only here."""

from .atomic import atomic_output, remove_path
from .axes import guess_axes, to_canonical
from .readers import (
    SUPPORTED_SUFFIXES,
    ImageSource,
    expand_inputs,
    file_stem,
    open_image,
    read_labels,
)
from .writers import OutputPaths, ResultWriter, label_dtype, plan_outputs

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "OutputPaths",
    "ResultWriter",
    "atomic_output",
    "expand_inputs",
    "file_stem",
    "guess_axes",
    "label_dtype",
    "open_image",
    "plan_outputs",
    "read_labels",
    "remove_path",
    "to_canonical",
]
