"""Zarr arrays that dask tasks write into, from threads or cluster workers.

:class:`ZarrTarget` is what :class:`~convpaint.io.writers.ResultWriter` hands to
the engine: an object with the shape of the engine's layout (``(T, Z, Y, X)`` for
labels, ``(T, K, Z, Y, X)`` for probabilities) that ``dask.array.store`` can assign
regions to, backed by a zarr array on disk in the *output's* layout (the axes the
input had, so a ``YX`` image gets a 2-D array). It holds only the array's path, so
it pickles to ``dask.distributed`` worker processes, which open the array on first
use (they must see the same file system).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ZarrTarget", "create_zarr_array", "zarr_compressor"]


def zarr_compressor(*, fast: bool = False) -> Any:
    """Blosc-zstd (widely read: zarr-python, Fiji, tensorstore), or lz4 for scratch."""
    from numcodecs import Blosc

    if fast:
        return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)
    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)


def create_zarr_array(
    path: Path | str,
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: Any,
    attrs: dict[str, Any] | None = None,
    fast: bool = False,
    nested: bool = False,
) -> Any:
    """Create a zarr v2 array on disk.

    Parameters
    ----------
    path : path-like
        Folder of the array (created; an existing one is replaced).
    shape, chunks : tuple of int
        Array and chunk shape (chunks are clipped to the shape).
    dtype : numpy dtype
        Element type; the fill value is 0.
    attrs : dict, optional
        Attributes (``.zattrs``).
    fast : bool
        Lighter compression, for temporary arrays.
    nested : bool
        ``/``-separated chunk keys (a folder per index), as NGFF 0.4 requires;
        otherwise zarr v2's default flat ``.`` keys, which are much cheaper to
        create and delete on network and overlay file systems.

    Returns
    -------
    zarr.Array
    """
    import zarr

    chunks = tuple(
        max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True)
    )
    return zarr.create_array(
        str(path),
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        zarr_format=2,
        chunk_key_encoding={"name": "v2", "separator": "/" if nested else "."},
        compressors=zarr_compressor(fast=fast),
        attributes=attrs or {},
        overwrite=True,
    )


class ZarrTarget:
    """A zarr array on disk seen in the engine's layout, for ``dask.array.store``.

    Axes of the layout that the stored array lacks have size 1 and are dropped on
    writing (and restored on reading). Writes should cover whole chunks (regions
    aligned to :attr:`chunks`) so that no two tasks write the same chunk; no lock
    is needed then (``da.store(..., lock=False)``).

    Parameters
    ----------
    path : path-like
        The zarr array folder (made absolute, so workers in other folders find it).
    shape : tuple of int
        Shape in the engine's layout.
    keep : tuple of bool
        For each axis of the layout, whether the stored array has it.
    """

    def __init__(
        self, path: Path | str, *, shape: tuple[int, ...], keep: tuple[bool, ...]
    ) -> None:
        self.path = os.path.abspath(path)
        self.shape = tuple(int(s) for s in shape)
        self.keep = tuple(bool(k) for k in keep)
        if len(self.keep) != len(self.shape) or any(
            s != 1 for s, k in zip(self.shape, self.keep, strict=True) if not k
        ):
            raise ValueError(f"axes dropped from {self.shape} must have size 1")
        self._array: Any = None
        array = self.array
        self.dtype = np.dtype(array.dtype)
        stored = iter(array.chunks)
        self.chunks = tuple(next(stored) if k else 1 for k in self.keep)

    @property
    def ndim(self) -> int:
        """Number of dimensions of the engine's layout."""
        return len(self.shape)

    @property
    def array(self) -> Any:
        """The zarr array (opened on first use in each process)."""
        if self._array is None:
            import zarr

            self._array = zarr.open_array(self.path, mode="r+", zarr_format=2)
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # each process opens its own handle
        return state

    def _split(self, key: Any) -> tuple[tuple[Any, ...], list[int], int]:
        """The stored array's key, the value axes to squeeze/expand, and their count."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        stored: list[Any] = []
        squeeze: list[int] = []
        value_axis = 0
        for k, keep in zip(key, self.keep, strict=True):
            if isinstance(k, slice):
                if not keep:
                    if k.indices(1) != (0, 1, 1):
                        raise IndexError(f"{key} is outside the shape {self.shape}")
                    squeeze.append(value_axis)
                else:
                    stored.append(k)
                value_axis += 1
            elif keep:
                stored.append(k)
            elif int(k) not in (0, -1):
                raise IndexError(f"{key} is outside the shape {self.shape}")
        return tuple(stored), squeeze, value_axis

    def __setitem__(self, key: Any, value: Any) -> None:
        stored, squeeze, ndim = self._split(key)
        value = np.asarray(value)
        if value.ndim == ndim and squeeze:
            value = value.reshape(
                [n for i, n in enumerate(value.shape) if i not in squeeze]
            )
        self.array[stored] = value

    def __getitem__(self, key: Any) -> np.ndarray:
        stored, squeeze, _ = self._split(key)
        value = np.asarray(self.array[stored])
        return np.expand_dims(value, tuple(squeeze)) if squeeze else value

    def __repr__(self) -> str:
        return f"ZarrTarget({self.path!r}, shape={self.shape}, chunks={self.chunks})"
