"""The class of each object: from a table (``object_id,class``) or a painted label image.

Every check here names the files involved and the offending ids, so a user can find
and fix them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convpaint.errors import DataError

from .io import TABLE_SUFFIXES, iter_blocks, open_labels, read_table

__all__ = [
    "TABLE_SUFFIXES",
    "check_class_counts",
    "classes_from_image",
    "classes_from_table",
    "object_classes",
    "read_class_table",
]


def _ids(values: Sequence[int], limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _int(value: str, *, path: Path, column: str, line: int) -> int:
    try:
        as_float = float(value)
    except ValueError:
        as_float = float("nan")
    if not np.isfinite(as_float) or as_float != int(as_float):
        raise DataError(
            f"table '{path}', line {line}: {column} '{value}' is not an integer; "
            f"{column} values must be whole numbers"
        )
    return int(as_float)


def read_class_table(path: Path) -> dict[int, int]:
    """Read ``object_id,class`` rows (other columns are ignored).

    Class 0 means "no class" (the row is dropped).

    Raises
    ------
    DataError
        Missing columns, non-integer values, negative classes, duplicate ids.
    """
    columns = read_table(path)
    missing = [c for c in ("object_id", "class") if c not in columns]
    if missing:
        raise DataError(
            f"table '{path}' lacks the column(s) {', '.join(missing)} (found: "
            f"{', '.join(columns) or 'none'}); the header must name object_id and class"
        )
    out: dict[int, int] = {}
    for n, (oid_s, cls_s) in enumerate(
        zip(columns["object_id"], columns["class"], strict=True), start=2
    ):
        oid = _int(oid_s, path=path, column="object_id", line=n)
        cls = _int(cls_s, path=path, column="class", line=n)
        if oid <= 0:
            raise DataError(
                f"table '{path}', line {n}: object_id {oid} is not a positive id; 0 is "
                "the background and cannot have a class"
            )
        if cls < 0:
            raise DataError(
                f"table '{path}', line {n}: class {cls} is negative; classes are 1..K "
                "(0 = no class)"
            )
        if oid in out:
            raise DataError(
                f"table '{path}', line {n}: object_id {oid} appears twice; give each "
                "object one row"
            )
        out[oid] = cls
    return {k: v for k, v in out.items() if v > 0}


def classes_from_table(
    ids: NDArray[np.int64], table: dict[int, int], *, table_path: Path, mask_path: Path
) -> NDArray[np.int64]:
    """Class per object id (0 = none) from a table; refuse ids the mask lacks."""
    present = set(ids.tolist())
    unknown = sorted(set(table) - present)
    if unknown:
        raise DataError(
            f"table '{table_path}' gives classes to object ids that are not in "
            f"'{mask_path}': {_ids(unknown)}; the ids must be the mask's pixel values "
            "(was the mask renumbered?)"
        )
    return np.array([table.get(int(i), 0) for i in ids], np.int64)


def classes_from_image(
    ids: NDArray[np.int64],
    instances: Any,
    painted: Any,
    *,
    block: Sequence[int],
    painted_path: Path,
    mask_path: Path,
) -> NDArray[np.int64]:
    """Class per object (0 = none) from a label image painted with classes 1..K.

    An object takes the class of the painted pixels inside it; painted pixels on the
    background are ignored.

    Raises
    ------
    DataError
        An object touched by two classes.
    """
    pairs = []
    for where in iter_blocks(instances.shape, block):
        inst = np.asarray(instances[where]).astype(np.int64).ravel()
        paint = np.asarray(painted[where]).astype(np.int64).ravel()
        both = (inst > 0) & (paint > 0)
        if both.any():
            pairs.append(np.unique(np.stack([inst[both], paint[both]], 1), axis=0))
    out = np.zeros(len(ids), np.int64)
    if not pairs:
        return out
    found = np.unique(np.concatenate(pairs), axis=0)
    oid, counts = np.unique(found[:, 0], return_counts=True)
    double = oid[counts > 1]
    if len(double):
        first = int(double[0])
        both_cls = found[found[:, 0] == first, 1].tolist()
        raise DataError(
            f"annotations '{painted_path}' touch object(s) {_ids(double.tolist())} of "
            f"'{mask_path}' with more than one class (object {first}: classes "
            f"{both_cls}); paint each object with one class only"
        )
    index = np.searchsorted(ids, found[:, 0])
    out[index] = found[:, 1]
    return out


def object_classes(
    ids: NDArray[np.int64],
    instances: Any,
    classes_path: Path,
    *,
    mask_path: Path,
    block: Sequence[int],
    unlabelled: Literal["skip", "error"],
) -> NDArray[np.int64]:
    """Class of every object of one mask (0 = no class).

    Parameters
    ----------
    ids : array of int64
        The mask's object ids (ascending).
    instances : array
        The instance mask (dask or numpy).
    classes_path : Path
        CSV/parquet table, or a painted label image of the mask's shape.
    mask_path : Path
        The mask's file, for messages.
    block : sequence of int
        Block shape for reading.
    unlabelled : {"skip", "error"}
        Whether objects without a class are allowed.

    Raises
    ------
    DataError
        An empty mask, a malformed table, unknown ids, a shape mismatch, two classes
        on one object, or (with ``unlabelled="error"``) objects without a class.
    """
    if not len(ids):
        raise DataError(
            f"instances '{mask_path}' contain no object (every pixel is 0); segment "
            "the image first or remove it from the training set"
        )
    if classes_path.suffix.lower() in TABLE_SUFFIXES:
        classes = classes_from_table(
            ids,
            read_class_table(classes_path),
            table_path=classes_path,
            mask_path=mask_path,
        )
    else:
        painted, stack = open_labels(classes_path, what="class annotations")
        with stack:
            if tuple(painted.shape) != tuple(instances.shape):
                raise DataError(
                    f"class annotations '{classes_path}' have shape "
                    f"{tuple(painted.shape)} but instances '{mask_path}' have "
                    f"{tuple(instances.shape)}; paint the classes on an image of the "
                    "mask's size"
                )
            classes = classes_from_image(
                ids,
                instances,
                painted,
                block=block,
                painted_path=classes_path,
                mask_path=mask_path,
            )
    if unlabelled == "error" and (classes == 0).any():
        missing = ids[classes == 0].tolist()
        raise DataError(
            f"{len(missing)} object(s) of '{mask_path}' have no class in "
            f"'{classes_path}': ids {_ids(missing)}; give them a class or set "
            "objects.train.unlabelled: skip"
        )
    return classes


def check_class_counts(classes: NDArray[np.int64], sources: str) -> list[int]:
    """The classes present; refuse fewer than two classes or a class with one object.

    Raises
    ------
    DataError
        No labelled object, a single class, or a class with a single object.
    """
    values, counts = np.unique(classes[classes > 0], return_counts=True)
    if not len(values):
        raise DataError(
            f"no object has a class in {sources}; give classes to some objects "
            "(object_id,class rows, or paint over them)"
        )
    if len(values) < 2:
        raise DataError(
            f"all {int(counts[0])} labelled objects in {sources} have class "
            f"{int(values[0])}; a classifier needs objects of at least two classes"
        )
    single = values[counts < 2].tolist()
    if single:
        raise DataError(
            f"class(es) {_ids(single)} have only one labelled object in {sources}; "
            "give each class at least two objects, or drop that class"
        )
    return [int(v) for v in values]
