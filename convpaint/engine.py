"""The prediction engine: one image or stack, tile by tile, into its outputs.

The output is cut into an N-D grid of tiles over ``(T, Z, Y, X)`` (one time frame
per tile: frames never mix). Each tile is one task that reads its block plus the
pipeline's halo lazily (aligned to the pyramid grid, mirrored at the borders),
normalises it, computes the features, applies the forest and returns labels (or
class probabilities), which are stored into the output as soon as they are done, so
no output is ever held in memory whole, and reading, computing and writing of
different tiles overlap.

Locally (``tiling.scheduler: threads``) the tiles run on a pool of threads in file
order, and TIFF labels are written into the file while they arrive
(:class:`~convpaint.io.tiff_out.TiffStream`). On a dask.distributed cluster, or a
SLURM cluster started through dask-jobqueue, they are a dask task graph stored with
``dask.array.store``: tasks are plain picklable objects that open the image and the
model by path. Every tile is the same computation wherever it runs, so the results
are identical bit for bit.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# a callable scheduler: a named one ("threads") makes dask import dask.distributed
from dask.threaded import get as threaded_get

from convpaint import progress
from convpaint.classify import predict_tile_labels
from convpaint.config import ClusterConfig, FeatureConfig, TilingConfig
from convpaint.errors import ConfigError, DataError, ModelBundleError
from convpaint.features.classical import upgrade_stored_params
from convpaint.features.pipeline import FeaturePipeline, Normalization
from convpaint.io.axes import output_axes
from convpaint.io.readers import ImageSource, open_image
from convpaint.io.resume import ResumeState, mark_done, tile_marker
from convpaint.io.writers import OutputPaths, ResultWriter, label_dtype
from convpaint.model_io import LoadedModel, load_model
from convpaint.model_meta import ModelMeta, parse_meta
from convpaint.normalization import Statistics, image_statistics
from convpaint.runtime import file_sha256, return_freed_memory, thread_budget
from convpaint.tiling import Block, plan_block, read_block, symmetric_index
from convpaint.warnings import ConvpaintWarning

__all__ = [
    "PredictResult",
    "block_features",
    "model_pipeline",
    "plan_tile_shape",
    "predict_image",
    "require_model_channels",
]

logger = logging.getLogger(__name__)

#: Default planes per tile for features with context along Z (views, 3d) when the
#: tile shape is fixed in Y/X only.
_DEFAULT_DEPTH = 16
#: Memory for the tiles in flight of `views`/`3d` features when `tiling.memory` is
#: not set (with the process's own ~0.4 GB, a stack prediction stays under 2 GB).
_DEFAULT_STACK_MEMORY = 1_400_000_000


@dataclass
class PredictResult:
    """One predicted input."""

    input: Path
    outputs: list[Path]
    skipped: bool = False
    seconds: float = 0.0
    class_fractions: dict[int, float] = field(default_factory=dict)
    error: str | None = None
    """Why the input failed (``--keep-going``); None when it did not."""
    skip_reason: str | None = None
    """Why it was skipped: the output exists, or another run is writing it."""
    resumed_tiles: int = 0
    """Tiles taken from an earlier run's partial output (``--resume``), not computed."""


# ----------------------------------------------------------------------------- blocks
def block_features(
    source: ImageSource,
    t: int,
    block: Block,
    pipeline: FeaturePipeline,
    norm: Normalization,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Features ``(n, F)`` of one tile of time frame ``t`` (``mask``: only those voxels).

    Raises
    ------
    DataError
        Unreadable pixels, or NaN/infinite values in the block.
    """
    return _features(source.data, source.path, t, block, pipeline, norm, mask)


def _features(
    data: Any,
    path: Path,
    t: int,
    block: Block,
    pipeline: FeaturePipeline,
    norm: Normalization,
    mask: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    try:
        raw = read_block(data[t], block)
    except Exception as err:
        raise DataError(
            f"could not read voxels {block.tile} of '{path}' ({type(err).__name__}: "
            f"{err}); the file may be corrupt or truncated"
        ) from err
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise DataError(
            f"image '{path}' contains NaN or infinite values near voxels {block.tile} "
            f"(frame {t}); replace them before predicting"
        )
    n_z = int(data.shape[2])
    planes = symmetric_index(*block.extended[0], n_z)
    return pipeline.compute(norm(raw, planes), block.trim, mask, out)


_BUFFERS = threading.local()


def _thread_buffer(size: int) -> np.ndarray:
    """A float32 array of ``size`` elements owned by the calling thread.

    Each tile's features (60 MB for a 512-px tile of the 57 filters) are written
    into the thread's buffer of the previous tile instead of fresh memory: fresh
    pages cost a page fault and zeroing by the kernel each, about a third of the
    time of computing the features. The caller must be done with the previous
    contents (tiles are computed, classified and dropped one at a time).
    """
    buf = getattr(_BUFFERS, "features", None)
    if buf is None or buf.size < size:
        buf = _BUFFERS.features = np.empty(size, dtype=np.float32)
    return buf[:size]


# ----------------------------------------------------------------------------- model
def require_model_channels(
    n_channels: int, meta: ModelMeta, source: Path, model_path: Path
) -> None:
    """Refuse an image whose channel count differs from the model's training images."""
    if n_channels != meta.n_channels:
        raise DataError(
            f"image '{source}' has {n_channels} channel(s) but model '{model_path}' was "
            f"trained on {meta.n_channels}; predict images like the training images "
            f"(axes {meta.axes}) or train a model for these"
        )


def _require_geometry(source: ImageSource, meta: ModelMeta, model_path: Path) -> None:
    """Refuse 2-D images for models with context along Z; warn on other voxel sizes."""
    if meta.dims != "planes" and not source.is_stack:
        raise DataError(
            f"model '{model_path}' computes features across Z planes (features.dims: "
            f"{meta.dims}) but image '{source.path}' (axes {source.axes}) has no Z "
            "axis; predict Z stacks with it, or train a model with dims: planes"
        )
    if meta.dims != "planes" and meta.spacing and source.spacing:
        trained = meta.spacing[0] / meta.spacing[2]
        found = source.spacing[0] / source.spacing[2]
        if abs(found - trained) > 0.01 * trained:
            warnings.warn(
                f"image '{source.path}' has Z/X voxel ratio {found:.3g} but model "
                f"'{model_path}' was trained at {trained:.3g}; features use the "
                "model's ratio (resample the stack, or set predict.spacing, if the "
                "file's metadata is wrong)",
                ConvpaintWarning,
                stacklevel=3,
            )


def model_pipeline(
    model: LoadedModel, meta: ModelMeta, n_channels: int
) -> FeaturePipeline:
    """The model's feature pipeline, rebuilt from the model file and checked."""
    try:
        stored = [upgrade_stored_params(x) for x in meta.extractors]
        specs = FeatureConfig.model_validate({"extractors": stored}).extractors
    except Exception as err:
        raise ModelBundleError(
            f"model '{model.path}' names extractors this convpaint cannot build ({err}); "
            "install the convpaint version it was trained with"
        ) from err
    pipeline = FeaturePipeline(
        specs,
        n_channels,
        dims=meta.dims,  # type: ignore[arg-type]
        spacing=meta.spacing,
    )
    pipeline.check_against(meta.n_features, meta.fingerprints)
    return pipeline


# ----------------------------------------------------------------------------- tiles
def _tile_bytes(pipeline: FeaturePipeline, tile: tuple[int, int, int]) -> int:
    """Rough peak memory of one task computing ``tile`` (features dominate)."""
    tz, ty, tx = tile
    hz, hy, hx = pipeline.halo
    f, f2 = pipeline.n_features, pipeline.n_per_view
    out = tz * ty * tx * f * 4
    plane = (ty + 2 * hy) * (tx + 2 * hx) * f2 * 4 * 3
    raw = pipeline.n_channels * (tz + 2 * hz) * (ty + 2 * hy) * (tx + 2 * hx) * 4 * 2
    if pipeline.dims == "3d":
        # measured (one task's peak on 30-64 x 96 x 96 tiles of the default stack
        # model, sigmas to 10): about twelve float32 volumes of the extended block
        # (smoothings, derivatives, tensor parts) and twice the tile's features
        plane = (tz + 2 * hz) * (ty + 2 * hy) * (tx + 2 * hx) * 4 * 12
        out = out * 11 // 5
    elif pipeline.dims == "views":
        r = pipeline.factor
        plane += (tz + 2 * hz) * r * max(ty + 2 * hy, tx + 2 * hx) * f2 * 4 * 3
        out *= 2  # one view's temporary next to the output
    return out + plane + raw


def plan_tile_shape(
    tiling: TilingConfig,
    pipeline: FeaturePipeline,
    shape_zyx: tuple[int, int, int],
    workers: int,
) -> tuple[int, int, int]:
    """Tile edges ``(z, y, x)``: fixed ones from ``tiling.tile``, the rest from the
    memory budget (``tiling.memory``, shared by ``workers`` tiles in flight; for
    `views`/`3d` features 1.4 GB when unset) or the defaults (``tile_size`` in Y/X;
    one plane for `planes` features)."""
    fixed = tiling.tile
    tz = fixed.z if fixed and fixed.z else None
    ty = fixed.y if fixed and fixed.y else None
    tx = fixed.x if fixed and fixed.x else None
    if pipeline.dims == "planes":
        tz = 1 if tz is None else tz
    memory = tiling.memory
    if memory is None and pipeline.dims != "planes" and None in (tz, ty, tx):
        # features with context along Z need their block in every axis: without a
        # budget, keep the tiles in flight within the default one
        memory = _DEFAULT_STACK_MEMORY
    if memory is not None:
        budget = int(memory) // max(1, workers)
        edges = [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
        depths = [1] if tz is not None else [4, 8, 16, 32, 64]
        best: tuple[int, tuple[int, int, int]] | None = None
        for d in depths:
            for e in edges:
                cand = (tz or d, ty or e, tx or e)
                if _tile_bytes(pipeline, cand) <= budget:
                    vol = math.prod(cand)
                    if best is None or vol > best[0]:
                        best = (vol, cand)
        if best is None:
            need = _tile_bytes(pipeline, (tz or 4, ty or 64, tx or 64)) * max(
                1, workers
            )
            raise ConfigError(
                f"tiling.memory: {int(memory):,} bytes cannot hold even small "
                f"tiles of {pipeline.n_features} features for {workers} worker(s) "
                f"(about {need:,} bytes needed); raise the budget or lower tiling.threads"
            )
        tz, ty, tx = best[1]
    tz = tz or _DEFAULT_DEPTH
    ty = ty or tiling.tile_size
    tx = tx or tiling.tile_size
    return (min(tz, shape_zyx[0]), min(ty, shape_zyx[1]), min(tx, shape_zyx[2]))


def _chunks(length: int, edge: int) -> tuple[int, ...]:
    full, rest = divmod(length, edge)
    return (edge,) * full + ((rest,) if rest else ())


# ----------------------------------------------------------------------------- tasks
_CACHE_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, int], tuple[LoadedModel, FeaturePipeline]] = {}
_IMAGES: dict[tuple[str, str | None, str | None], ImageSource] = {}


def _cached_model(
    path: str, digest: str, n_channels: int
) -> tuple[LoadedModel, FeaturePipeline]:
    key = (path, digest, n_channels)
    with _CACHE_LOCK:
        if key not in _MODELS:
            if file_sha256(Path(path)) != digest:
                raise ModelBundleError(
                    f"model '{path}' changed while predicting (its SHA-256 differs on "
                    "this worker); do not overwrite a model during a prediction"
                )
            model = load_model(path, n_jobs=1)
            meta = parse_meta(model.meta, path)
            _MODELS[key] = (model, model_pipeline(model, meta, n_channels))
        return _MODELS[key]


def _cached_image(path: str, axes: str | None, spacing: str | None) -> ImageSource:
    import json

    key = (path, axes, spacing)
    with _CACHE_LOCK:
        if key not in _IMAGES:
            _IMAGES[key] = open_image(
                path, axes, spacing=json.loads(spacing) if spacing else None
            )
        return _IMAGES[key]


class TilePredictor:
    """Predicts one output tile; picklable, so it runs on any dask scheduler.

    The model and the image are opened by path once per process (and checked against
    the model file's digest); the statistics travel with the task.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        model_digest: str,
        image_path: Path,
        axes: str | None,
        spacing: dict[str, float] | None,
        n_channels: int,
        stats: Statistics,
        classes: list[int],
        probabilities: bool,
        threads: int,
    ) -> None:
        import json

        self.model_path = str(model_path)
        self.model_digest = model_digest
        self.image_path = str(image_path)
        self.axes = axes
        self.spacing = json.dumps(spacing, sort_keys=True) if spacing else None
        self.n_channels = n_channels
        self.stats = stats
        self.classes = np.asarray(classes)
        self.probabilities = probabilities
        self.threads = threads
        self.on_tile: Callable[[], None] | None = None
        self._local: tuple[ImageSource, LoadedModel, FeaturePipeline] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["on_tile"] = None
        state["_local"] = None
        return state

    def use_local(
        self, source: ImageSource, model: LoadedModel, pipeline: FeaturePipeline
    ) -> None:
        """Reuse objects this process already has open (the threaded scheduler)."""
        self._local = (source, model, pipeline)

    def _objects(self) -> tuple[ImageSource, LoadedModel, FeaturePipeline]:
        if self._local is not None:
            return self._local
        model, pipeline = _cached_model(
            self.model_path, self.model_digest, self.n_channels
        )
        return _cached_image(self.image_path, self.axes, self.spacing), model, pipeline

    def __call__(self, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        """Compute the tile at ``block_info[None]['array-location']``."""
        info = block_info[None]  # type: ignore[index]
        loc = info["array-location"]
        probs_layout = len(loc) == 5
        t = loc[0][0]
        spatial = (loc[2], loc[3], loc[4]) if probs_layout else (loc[1], loc[2], loc[3])
        source, model, pipeline = self._objects()
        block = plan_block(spatial, halo=pipeline.halo, alignment=pipeline.alignment)
        n = math.prod(b - a for a, b in block.tile)
        feats = _features(
            source.data,
            source.path,
            t,
            block,
            pipeline,
            self.stats.normalization(t),
            out=_thread_buffer(n * pipeline.n_features).reshape(n, -1),
        )
        shape = block.tile_shape
        index, proba = predict_tile_labels(
            model.forest, feats, n_jobs=self.threads, probabilities=probs_layout
        )
        del feats
        if self.on_tile is not None:
            self.on_tile()
        if probs_layout:
            # probabilities, then the class index as one more channel: the labels come
            # from the forest's own (float64) argmax, exactly as without probabilities
            k = len(self.classes)
            packed = np.empty((1, k + 1, *shape), dtype=np.float32)
            packed[0, :k] = proba.T.reshape(k, *shape)
            packed[0, k] = index.reshape(shape)
            return packed
        labels = self.classes[index]
        return labels.reshape(1, *shape).astype(label_dtype(self.classes.tolist()))


def _to_labels(packed: np.ndarray, classes: np.ndarray, dtype: Any) -> np.ndarray:
    """Labels from a packed tile: its last channel is the class index."""
    return classes[packed[:, -1].astype(np.intp)].astype(dtype)


def _count(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(classes, labels.ravel())
    return np.bincount(idx, minlength=len(classes)).reshape(1, 1, 1, 1, -1)


# ----------------------------------------------------------------------------- schedulers
@contextmanager
def _scheduler(
    name: str, cluster: ClusterConfig | None, workers: int
) -> Iterator[dict[str, Any]]:
    """The keyword arguments of ``dask.compute`` for the chosen scheduler.

    When the block ends with an error, tasks still running are waited for before
    leaving, so nothing writes into an output after the writer has removed it.
    """
    if name == "threads":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="convpaint-tile")
        try:
            yield {"scheduler": threaded_get, "pool": pool}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    try:
        from distributed import Client
    except ImportError as err:
        raise ConfigError(
            f"tiling.scheduler: {name} needs dask.distributed; install it with "
            "`pip install 'convpaint[cluster]'`"
        ) from err
    if name == "slurm":
        from convpaint.cluster import slurm_cluster

        with (
            slurm_cluster(cluster or ClusterConfig()) as slurm,
            Client(slurm) as client,
        ):
            with _drained(client):
                yield {"scheduler": client}
        return
    import dask

    try:
        client = Client(
            name, timeout=dask.config.get("distributed.comm.timeouts.connect")
        )
    except OSError as err:
        raise ConfigError(
            f"tiling.scheduler: could not reach the dask scheduler at {name} ({err}); "
            "check the address and that the scheduler is running"
        ) from err
    with client, _drained(client):
        yield {"scheduler": client}


@contextmanager
def _drained(client: Any, timeout: float = 120.0) -> Iterator[None]:
    """On an error, wait (bounded) until the cluster's workers have no task running."""
    try:
        yield
    except BaseException:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not any(client.processing().values()):
                    break
            except Exception:  # the scheduler is gone: nothing runs any more
                break
            time.sleep(0.2)
        raise


# ----------------------------------------------------------------------------- one image
def predict_image(
    model: LoadedModel,
    path: Path,
    paths: OutputPaths,
    *,
    axes: str | None,
    fmt: str,
    tiling: TilingConfig,
    threads: int,
    spacing: dict[str, float] | None = None,
    levels: int = 1,
    cluster: ClusterConfig | None = None,
    resume: bool = False,
) -> PredictResult:
    """Predict one image or stack into ``paths`` (labels, optionally probabilities).

    With ``resume`` (zarr or OME-Zarr, any scheduler) the outputs are written under
    a fixed temporary name that a failed or stopped run leaves behind, and an earlier
    run's partial output there is continued (:mod:`convpaint.io.resume`).

    Raises
    ------
    DataError, ModelBundleError, ConfigError
    """
    t0 = time.perf_counter()
    meta = parse_meta(model.meta, model.path)
    classes = [int(c) for c in meta.classes]
    with open_image(path, axes, spacing=spacing, fallback=meta.axes) as source:
        require_model_channels(source.n_channels, meta, path, model.path)
        _require_geometry(source, meta, model.path)
        pipeline = model_pipeline(model, meta, source.n_channels)
        model_digest = file_sha256(model.path)
        state = (
            ResumeState.open(
                paths.labels,
                paths.probabilities,
                model_sha256=model_digest,
                input_path=path,
                shape_tzyx=source.shape_tzyx,
                classes=classes,
                fmt=fmt,
                levels=levels,
            )
            if resume
            else None
        )
        stored = state.statistics() if state is not None else None
        norm_cfg = meta.normalization
        if stored is not None:
            stats = Statistics(*stored)
        elif norm_cfg.mode == "training":
            stats = Statistics(
                np.asarray(norm_cfg.training.mean), np.asarray(norm_cfg.training.std), 0
            )
        else:
            stats = image_statistics(
                source,
                joint=norm_cfg.joint_channels,
                per_plane=norm_cfg.mode == "plane",
            )
        n_t, n_z, n_y, n_x = source.shape_tzyx
        if pipeline.dims != "planes":
            # block features' temporaries of 10-30 MB each: give them back when freed
            return_freed_memory()
        # the workers: enough tasks in flight for every thread; the rest inside tasks
        tile0 = plan_tile_shape(tiling, pipeline, (n_z, n_y, n_x), threads)
        n_tasks = n_t * math.prod(
            math.ceil(n / e) for n, e in zip((n_z, n_y, n_x), tile0, strict=True)
        )
        workers = max(1, min(threads, n_tasks))
        inner = max(1, threads // workers)
        tile = plan_tile_shape(tiling, pipeline, (n_z, n_y, n_x), workers)
        if state is not None and state.tile is not None:
            # the partial output's chunk grid (any tiling gives the same numbers)
            tile = state.tile
            logger.info(
                "%s: resuming '%s', %d of its tiles done",
                path.name,
                state.partial,
                len(state.done),
            )
        chunks = (
            (1,) * n_t,
            *(_chunks(n, e) for n, e in zip((n_z, n_y, n_x), tile, strict=True)),
        )
        logger.info(
            "%s: %s voxels in %s tiles of %s, %d worker(s) x %d thread(s), halo %s",
            path.name,
            f"{n_t * n_z * n_y * n_x:,}",
            n_tasks,
            tile,
            workers,
            inner,
            pipeline.halo,
        )
        with_probs = paths.probabilities is not None
        predictor = TilePredictor(
            model_path=model.path,
            model_digest=model_digest,
            image_path=path,
            axes=source.axes,
            spacing=spacing,
            n_channels=source.n_channels,
            stats=stats,
            classes=classes,
            probabilities=with_probs,
            threads=inner,
        )
        local = tiling.scheduler == "threads"
        if local:
            predictor.use_local(source, model, pipeline)
        writer = ResultWriter(
            paths,
            shape_tzyx=source.shape_tzyx,
            out_axes=output_axes(source.axes),
            classes=classes,
            fmt=fmt,
            chunks_tzyx=(1, *tile),
            spacing=source.spacing or meta.spacing,
            unit=source.unit,
            attrs={"convpaint_model": str(model.path), "source": str(path)},
            levels=levels,
            stream=local,
            resume=state is not None,
        )
        try:
            if state is not None:
                state.start(tile, stats.mean, stats.std, stats.voxels, stats.sampled)
            task = StoredTile(
                predictor,
                writer,
                chunks,
                classes,
                with_probs,
                done_dir=state.done_dir if state is not None else None,
            )
            if local:
                counts = _run_local(
                    task, workers, inner, len(state.done) if state is not None else 0
                )
            else:
                counts = _run_graph(
                    predictor,
                    writer,
                    chunks,
                    classes,
                    with_probs,
                    tiling,
                    cluster,
                    workers,
                    inner,
                    n_tasks,
                    path.name,
                    resumable=task if state is not None else None,
                )
            outputs = writer.finish(state.finish if state is not None else None)
        except BaseException:
            writer.abort()
            if state is not None and state.partial.is_dir():
                logger.warning(
                    "kept the partial result '%s'; run the same prediction with "
                    "--resume to continue it",
                    state.partial,
                )
            raise
    total = max(int(counts.sum()), 1)
    return PredictResult(
        input=path,
        outputs=outputs,
        resumed_tiles=len(state.done) if state is not None else 0,
        seconds=time.perf_counter() - t0,
        class_fractions={
            int(c): float(n) / total for c, n in zip(classes, counts, strict=True)
        },
    )


class StoredTile:
    """Compute one tile, store its labels (and probabilities), return its class counts.

    Picklable, so that the same task runs in this process's threads and on any dask
    scheduler. With ``done_dir`` (a resumable output, :mod:`convpaint.io.resume`) a
    tile whose marker exists there is read back instead of computed, and each tile
    stored is marked there afterwards.
    """

    def __init__(
        self,
        predictor: TilePredictor,
        writer: ResultWriter,
        chunks: tuple[tuple[int, ...], ...],
        classes: list[int],
        with_probs: bool,
        done_dir: Path | None = None,
    ) -> None:
        self.predictor = predictor
        self.labels_target = writer.labels_target
        self.probabilities_target = writer.probabilities_target if with_probs else None
        self.classes = np.asarray(classes)
        self.dtype = label_dtype(classes)
        self.spans = [
            [
                (int(a), int(a + n))
                for a, n in zip(np.cumsum((0, *c[:-1])), c, strict=True)
            ]
            for c in chunks
        ]
        self.done_dir = str(done_dir) if done_dir is not None else None

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Every tile's index in the chunk grid (T, Z, Y, X), in C order."""
        return itertools.product(*(range(len(s)) for s in self.spans))

    def run(self, index: Sequence[int]) -> np.ndarray:
        """The tile with chunk-grid index ``index``; returns its per-class counts
        ``(K,)``."""
        cls = self.classes
        loc = [self.spans[ax][i] for ax, i in enumerate(index)]
        region = tuple(slice(a, b) for a, b in loc)
        marker = None
        if self.done_dir is not None:
            marker = tile_marker(self.done_dir, index)
            if os.path.exists(marker):
                labels = np.asarray(self.labels_target[region])
                return _count(labels, cls).reshape(-1)
        if self.probabilities_target is not None:
            k = len(cls)
            where = [loc[0], (0, k + 1), *loc[1:]]
            packed = self.predictor({None: {"array-location": where}})
            labels = _to_labels(packed, cls, self.dtype)
            self.probabilities_target[(region[0], slice(None), *region[1:])] = packed[
                :, :k
            ]
        else:
            labels = self.predictor({None: {"array-location": loc}})
        self.labels_target[region] = labels
        if marker is not None:
            mark_done(marker)
        return _count(labels, cls).reshape(-1)

    def __call__(self, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        """As a dask block of the counts array (one ``(1, 1, 1, 1, K)`` block per
        tile, located by its chunk index)."""
        index = block_info[None]["chunk-location"][:4]  # type: ignore[index]
        return self.run(index).reshape(1, 1, 1, 1, -1)


def _run_local(
    task: StoredTile, workers: int, inner: int, stored: int = 0
) -> np.ndarray:
    """Run every tile of ``task`` on ``workers`` threads of this process, in file order.

    Tiles are started in C order (frames, planes, rows, columns), so they finish
    roughly in the order the TIFF writer needs (it holds back only tiles that
    finish ahead of an unfinished one; dask's own ordering could leave the first
    rows for last and the whole result waiting in memory). Each tile is the same
    computation as in the task graph of :func:`_run_graph`. ``stored``: tiles an
    earlier run stored (a resumed run), for the progress bar. Returns the per-class
    counts.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    predictor = task.predictor
    counts = np.zeros(len(task.classes), dtype=np.int64)
    name = Path(predictor.image_path).name
    total = math.prod(map(len, task.spans))
    with progress.bar(total, name, "tile", stored) as pbar:
        lock = threading.Lock()

        def tick() -> None:
            with lock:
                pbar.update(1)

        predictor.on_tile = tick
        pool = ThreadPoolExecutor(workers, thread_name_prefix="convpaint-tile")
        try:
            with thread_budget(inner):
                futures = [pool.submit(task.run, i) for i in task.indices()]
                wait(futures, return_when=FIRST_EXCEPTION)
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception():
                        raise future.exception()  # type: ignore[misc]
                for future in futures:
                    counts += future.result()
        finally:
            # on an error (or Ctrl-C) drop the tiles not started, wait for the rest
            pool.shutdown(wait=True, cancel_futures=True)
    return counts


def _run_graph(
    predictor: TilePredictor,
    writer: ResultWriter,
    chunks: tuple[tuple[int, ...], ...],
    classes: list[int],
    with_probs: bool,
    tiling: TilingConfig,
    cluster: ClusterConfig | None,
    workers: int,
    inner: int,
    n_tasks: int,
    name: str,
    resumable: StoredTile | None = None,
) -> np.ndarray:
    """Build the tile graph, store it chunk by chunk, return the per-class counts.

    For dask.distributed schedulers (local runs go through :func:`_run_local`);
    tiles on remote workers report no progress.

    With ``resumable`` (a resumed or resumable run) every task is that
    :class:`StoredTile`: it stores its own tile and marks it done, so that a later
    run can skip it.
    """
    import dask
    import dask.array as da

    cls = np.asarray(classes)
    dtype = label_dtype(classes)
    token = dask.base.tokenize(predictor.image_path, predictor.model_digest)
    stored: Any
    if resumable is not None:
        stored = None
        counts = da.map_blocks(
            resumable,
            chunks=(*(((1,) * len(c)) for c in chunks), (len(classes),)),
            dtype=np.int64,
            meta=np.empty((0,) * 5, dtype=np.int64),
            name=f"convpaint-resumable-{token}",
        ).sum(axis=(0, 1, 2, 3))
    elif with_probs:
        packed = da.map_blocks(
            predictor,
            chunks=(chunks[0], (len(classes) + 1,), *chunks[1:]),
            dtype=np.float32,
            meta=np.empty((0,) * 5, dtype=np.float32),
            name=f"convpaint-proba-{token}",
        )
        probs = packed[:, : len(classes)]
        labels = packed.map_blocks(
            _to_labels,
            cls,
            dtype,
            drop_axis=1,
            dtype=dtype,
            meta=np.empty((0,) * 4, dtype=dtype),
        )
        sources, targets = (
            [labels, probs],
            [writer.labels_target, writer.probabilities_target],
        )
    else:
        labels = da.map_blocks(
            predictor,
            chunks=chunks,
            dtype=dtype,
            meta=np.empty((0,) * 4, dtype=dtype),
            name=f"convpaint-labels-{token}",
        )
        sources, targets = [labels], [writer.labels_target]
    if resumable is None:
        counts = labels.map_blocks(
            _count,
            cls,
            new_axis=4,
            chunks=(1, 1, 1, 1, len(classes)),
            dtype=np.int64,
            meta=np.empty((0,) * 5, dtype=np.int64),
        ).sum(axis=(0, 1, 2, 3))
        stored = da.store(sources, targets, lock=False, compute=False)
    with (
        progress.bar(n_tasks, name, "tile"),
        _scheduler(tiling.scheduler, cluster, workers) as kwargs,
        thread_budget(max(1, inner)),
    ):
        _, result = dask.compute(stored, counts, **kwargs)
    return np.asarray(result)
