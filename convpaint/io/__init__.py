"""Reading images and annotations, writing results; axes handled only here."""

from .atomic import atomic_output, remove_path
from .axes import (
    check_axes,
    guess_axes,
    output_axes,
    probability_axes,
    to_canonical,
)
from .metadata import FileMetadata
from .readers import (
    SUPPORTED_SUFFIXES,
    ImageSource,
    check_label_block,
    expand_inputs,
    file_stem,
    open_image,
    open_labels,
)
from .writers import (
    OUTPUT_FORMATS,
    OUTPUT_SUFFIXES,
    OutputPaths,
    ResultWriter,
    label_dtype,
    plan_outputs,
)

__all__ = [
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "FileMetadata",
    "ImageSource",
    "OutputPaths",
    "ResultWriter",
    "atomic_output",
    "check_axes",
    "check_label_block",
    "expand_inputs",
    "file_stem",
    "guess_axes",
    "label_dtype",
    "open_image",
    "open_labels",
    "output_axes",
    "plan_outputs",
    "probability_axes",
    "remove_path",
    "to_canonical",
]
