"""Sparse, hand-drawn-looking scribbles from dense semantic ground truth.

Realistic training annotations for pixel classifiers are a few thin strokes per
class, not random pixels. :func:`generate_scribbles` turns a dense label image
(``0`` = not labelled, classes ``1..K`` or any positive integers) into such
strokes, drawn inside each class with a given pixel budget. It reproduces the
evaluation protocol of the Convpaint paper (Fig. S8): three kinds of strokes per
class, all ``width`` pixels thick and clipped to the class so that no scribble
pixel ever lies outside its class:

1. **ridge strokes** - pieces of the class skeleton (its centre lines), cut out
   by random square windows;
2. **boundary-parallel strokes** - pieces of a "secondary skeleton", the thinned
   set of class pixels at a fixed distance from the class boundary, cut out the
   same way;
3. **boundary lines** - short straight lines from a skeleton point towards the
   nearest boundary pixel, stopping a little before the boundary.

Roughly half of a class's pixels come from ridge strokes and a quarter from each
of the other kinds (a kind a class cannot host, e.g. boundary lines in a
structure only a few pixels thick, hands its share to the others). Strokes are
added until the class's budget is reached; the stroke that would overshoot is
shortened to the sub-segment around its centre that fits.

The work per plane is one Euclidean distance transform with its feature
transform (shared by all classes: the boundary is the set of pixels that touch
another label or the image border), a centre-line extraction from it with a
few vectorised passes (see :func:`_ridge_skeleton` for why not
:func:`skimage.morphology.skeletonize`), plus small window operations per
stroke, so a 4096 x 4096 plane takes seconds. Everything is driven by
``numpy.random.default_rng(seed)``, with one spawned generator per plane and per
class, so the same seed gives the same scribbles.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.morphology import thin

from convpaint.errors import DataError

__all__ = ["generate_scribbles", "instance_to_semantic"]

#: Share of a class's budget drawn as ridge, boundary-parallel and boundary-line
#: strokes.
_KIND_SHARES = (0.5, 0.25, 0.25)
_RIDGE, _PARALLEL, _LINE = 0, 1, 2
#: Every class present gets at least this fraction of an equal (1/K) share.
_MIN_CLASS_SHARE = 0.25
#: Every class present gets at least this many pixels (or its whole area).
_MIN_CLASS_PIXELS = 4
#: A class's budget is planned as about sqrt(budget) / 2 strokes, at most this
#: many (objects smaller than a window make for shorter, hence more, strokes).
_MAX_STROKES_PER_CLASS = 300
#: A stroke kind is given up after this many attempts in a row that add nothing.
_STALL_LIMIT = 40
#: Hard cap on stroke attempts per class (keeps the run time bounded).
_MAX_ATTEMPTS_PER_CLASS = 20_000
#: A final stroke may overshoot the class budget by this fraction before it is
#: shortened.
_OVERSHOOT_SLACK = 0.05
#: Skeleton pieces smaller than this (spurs of jagged boundaries) are dropped.
_MIN_SKELETON_PIECE = 3
#: Largest half-size of a stroke window (larger budgets take more strokes).
_MAX_WINDOW_HALF = 128
#: Passes of :func:`skimage.morphology.thin` for the 1-3 px thick stroke paths.
_THIN_ITERATIONS = 2
#: 8-connectivity for picking the connected piece of a skeleton in a window.
_EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def instance_to_semantic(mask: np.ndarray) -> np.ndarray:
    """Instance mask -> semantic ground truth with a background and an object class.

    Instance mask (0 = background, 1..N objects) -> semantic (1 = background,
    2 = object), uint8.

    Parameters
    ----------
    mask : np.ndarray
        Instance label image of any shape with an integer (or boolean) dtype;
        ``0`` is background, every positive value an object.

    Returns
    -------
    np.ndarray
        Array of the same shape, dtype ``uint8``: ``1`` where ``mask == 0`` and
        ``2`` where ``mask > 0``.

    Raises
    ------
    DataError
        If ``mask`` is not an integer/boolean array or holds negative values.
    """
    arr = np.asarray(mask)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            "instance mask must have an integer dtype; "
            f"found dtype {arr.dtype}; convert it with mask.astype(np.int32) "
            "after checking that it holds whole object ids"
        )
    if arr.dtype != bool and arr.size and np.issubdtype(arr.dtype, np.signedinteger):
        low = arr.min()
        if low < 0:
            raise DataError(
                "instance mask must not contain negative ids; "
                f"found minimum {int(low)}; use 0 for background and 1..N for objects"
            )
    return np.where(arr != 0, np.uint8(2), np.uint8(1))


def generate_scribbles(
    gt: np.ndarray,
    *,
    fraction: float = 0.01,
    width: int = 2,
    seed: int = 0,
    ignore_value: int = 0,
) -> np.ndarray:
    """Dense semantic ground truth -> sparse scribbles that look hand-drawn.

    2D (Y, X) or 3D (Z, Y, X: processed plane by plane, each plane gets its own
    share) ground truth -> scribbles, same shape, same dtype as gt (values =
    class values of gt, 0 = unlabelled).

    Parameters
    ----------
    gt : np.ndarray
        Dense semantic ground truth, shape ``(Y, X)`` or ``(Z, Y, X)``, integer
        dtype, no negative values. Pixels equal to ``ignore_value`` are not
        labelled; every other value is a class.
    fraction : float, default 0.01
        Share of the labelled pixels to turn into scribbles, in ``(0, 1]``. Each
        plane gets ``fraction`` of *its* labelled pixels. The budget is split
        across the classes of a plane proportionally to their area, with a
        minimum share so that small classes get some strokes too. The total
        lands within a few percent of the budget; only fractions near 1 cannot
        be reached (strokes cover at most about half of a class).
    width : int, default 2
        Stroke thickness in pixels (``>= 1``).
    seed : int, default 0
        Seed for :func:`numpy.random.default_rng`; the same seed always gives
        the same scribbles.
    ignore_value : int, default 0
        Value of the unlabelled pixels in ``gt``; they never get scribbles.

    Returns
    -------
    np.ndarray
        Scribble image with the shape and dtype of ``gt``: the class value of
        ``gt`` on scribble pixels, ``0`` elsewhere.

    Raises
    ------
    DataError
        If ``gt`` is not 2D/3D, has a non-integer dtype, negative values or no
        labelled pixel, if ``fraction`` is not in ``(0, 1]``, if ``width < 1``,
        or if ``0`` is a class (``ignore_value != 0``), which the scribble image
        could not tell apart from "unlabelled".
    """
    arr = np.asarray(gt)
    frac = _check_fraction(fraction)
    wid = _check_width(width)
    ignore = _check_ignore_value(ignore_value)
    _check_gt(arr, ignore)

    volume = arr[np.newaxis] if arr.ndim == 2 else arr
    out = np.zeros(volume.shape, dtype=arr.dtype)
    root = np.random.default_rng(seed)
    plane_rngs = root.spawn(volume.shape[0])
    footprint = _stroke_footprint(wid)
    for z in range(volume.shape[0]):
        out[z] = _scribble_plane(
            volume[z],
            fraction=frac,
            width=wid,
            ignore_value=ignore,
            rng=plane_rngs[z],
            footprint=footprint,
        )
    return out[0] if arr.ndim == 2 else out


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_fraction(fraction: float) -> float:
    """Return ``fraction`` as float, or raise if it is not a number in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise DataError(
            f"scribble fraction must be a number in (0, 1]; found {fraction!r}; "
            "pass e.g. fraction=0.01 for 1 % of the labelled pixels"
        )
    frac = float(fraction)
    if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
        raise DataError(
            f"scribble fraction must be in (0, 1]; found {fraction!r}; "
            "pass e.g. fraction=0.01 for 1 % of the labelled pixels"
        )
    return frac


def _check_width(width: int) -> int:
    """Return ``width`` as int, or raise if it is not an integer >= 1."""
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise DataError(
            f"scribble width must be a whole number of pixels >= 1; found {width!r}; "
            "pass e.g. width=2"
        )
    if int(width) < 1:
        raise DataError(
            f"scribble width must be >= 1 pixel; found {int(width)}; pass e.g. width=2"
        )
    return int(width)


def _check_ignore_value(ignore_value: int) -> int:
    """Return ``ignore_value`` as int, or raise if it is not an integer."""
    if isinstance(ignore_value, bool) or not isinstance(ignore_value, numbers.Integral):
        raise DataError(
            f"ignore_value must be an integer label value; found {ignore_value!r}; "
            "pass e.g. ignore_value=0"
        )
    return int(ignore_value)


def _check_gt(arr: np.ndarray, ignore_value: int) -> None:
    """Raise :class:`DataError` unless ``arr`` is usable ground truth."""
    if arr.ndim not in (2, 3):
        raise DataError(
            "ground truth must be a 2D (Y, X) or 3D (Z, Y, X) label image; "
            f"found {arr.ndim} dimension(s) with shape {arr.shape}; "
            "squeeze singleton axes or split channels/time points into separate images"
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            "ground truth must have an integer dtype (class ids); "
            f"found dtype {arr.dtype}; convert it with gt.astype(np.uint8) "
            "(or np.uint16) after checking that it holds whole class ids, or use "
            "instance_to_semantic() for a boolean/instance mask"
        )
    if arr.size == 0:
        raise DataError(
            f"ground truth is empty; found shape {arr.shape}; pass a non-empty image"
        )
    if np.issubdtype(arr.dtype, np.signedinteger):
        low = arr.min()
        if low < 0:
            raise DataError(
                "ground truth must not contain negative class ids; "
                f"found minimum {int(low)}; use 0 for unlabelled pixels and "
                "positive integers for classes"
            )
    labelled = arr != ignore_value
    if not labelled.any():
        raise DataError(
            "ground truth has no labelled pixels; "
            f"found only the value {ignore_value} (ignore_value) in shape {arr.shape}; "
            "check that the right file was given or set ignore_value correctly"
        )
    if ignore_value != 0 and (arr == 0).any():
        raise DataError(
            "ground truth uses 0 as a class while ignore_value is "
            f"{ignore_value}; found value 0 in the labelled pixels, but 0 means "
            "'unlabelled' in scribbles; relabel the classes to positive integers"
        )


# --------------------------------------------------------------------------- #
# per-plane work
# --------------------------------------------------------------------------- #
def _stroke_footprint(width: int) -> np.ndarray:
    """Disk-like footprint of diameter ``width`` (centred between pixels if even)."""
    offsets = np.arange(width) - (width - 1) / 2.0
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    return (yy**2 + xx**2) <= (width / 2.0) ** 2 + 1e-9


def _class_counts(
    plane: np.ndarray, ignore_value: int
) -> tuple[np.ndarray, np.ndarray]:
    """Classes present in ``plane`` (sorted) and their pixel counts."""
    flat = plane.ravel()
    top = int(flat.max())
    if top < (1 << 22):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1)
        classes = np.flatnonzero(counts)
        counts = counts[classes]
    else:
        classes, counts = np.unique(flat, return_counts=True)
    keep = classes != ignore_value
    return classes[keep], counts[keep].astype(np.int64)


def _boundary(plane: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another value, plus the image border."""
    edge = np.zeros(plane.shape, dtype=bool)
    dy = plane[:-1, :] != plane[1:, :]
    edge[:-1, :] |= dy
    edge[1:, :] |= dy
    dx = plane[:, :-1] != plane[:, 1:]
    edge[:, :-1] |= dx
    edge[:, 1:] |= dx
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    return edge


def _ridge_skeleton(
    interior: np.ndarray, dist: np.ndarray, nearest: np.ndarray
) -> np.ndarray:
    """Centre lines (medial axis) of all classes of a plane at once.

    A pair of 4-neighbouring interior pixels straddles the medial axis when
    their nearest boundary pixels (``nearest``, the feature transform that comes
    with the distance transform ``dist``) lie far apart: more than ``1 +`` their
    distance to the boundary. This keeps the centre lines of bands (boundary on
    two opposite sides) and of corners sharper than about 120 degrees, but not
    the spurs that pixel-level jaggedness of the boundary would add. The deeper
    pixel of each such pair is marked, plus interior lines only one pixel wide
    (centre lines of bands three pixels wide); pieces under
    ``_MIN_SKELETON_PIECE`` pixels are dropped. The marked set is at most a
    few pixels thick, so a couple of passes of :func:`skimage.morphology.thin`
    make it one pixel wide.

    Thinning each class mask with :func:`skimage.morphology.skeletonize` instead
    costs one pass over the whole plane per removed layer (minutes for a single
    4096-pixel-wide region, and as many passes as a two-pixel-thick diagonal is
    long); this costs a few vectorised passes whatever the objects look like.
    """
    cand = np.zeros(interior.shape, dtype=bool)
    rows = (slice(None, -1), slice(None)), (slice(1, None), slice(None))
    cols = (slice(None), slice(None, -1)), (slice(None), slice(1, None))
    for a, b in (rows, cols):
        both = interior[a] & interior[b]
        dy = (nearest[0][a] - nearest[0][b]).astype(np.float64)
        dx = (nearest[1][a] - nearest[1][b]).astype(np.float64)
        da, db = dist[a], dist[b]
        depth = np.maximum(da, db) + 1.0
        hit = both & (dy * dy + dx * dx > depth * depth)
        a_deeper = da >= db
        cand[a] |= hit & a_deeper
        cand[b] |= hit & ~a_deeper
    pad = np.pad(interior, 1)
    thin_rows = ~pad[:-2, 1:-1] & ~pad[2:, 1:-1]
    thin_cols = ~pad[1:-1, :-2] & ~pad[1:-1, 2:]
    cand |= interior & (thin_rows | thin_cols)
    cand = thin(cand, max_num_iter=_THIN_ITERATIONS)
    labels, n = ndi.label(cand, structure=_EIGHT)
    if n:
        small = np.bincount(labels.ravel()) < _MIN_SKELETON_PIECE
        small[0] = False
        cand[small[labels]] = False
    return cand


def _class_budgets(areas: np.ndarray, total_budget: float) -> np.ndarray:
    """Split ``total_budget`` across classes: by area, with a minimum share each."""
    n_classes = len(areas)
    weights = areas / areas.sum()
    weights = np.maximum(weights, _MIN_CLASS_SHARE / n_classes)
    weights = weights / weights.sum()
    budgets = total_budget * weights
    floor = np.minimum(areas, _MIN_CLASS_PIXELS).astype(float)
    return np.minimum(np.maximum(budgets, floor), areas.astype(float))


def _scribble_plane(
    plane: np.ndarray,
    *,
    fraction: float,
    width: int,
    ignore_value: int,
    rng: np.random.Generator,
    footprint: np.ndarray,
) -> np.ndarray:
    """Scribbles for one 2D plane (zeros if the plane has no labelled pixel)."""
    out = np.zeros(plane.shape, dtype=plane.dtype)
    classes, areas = _class_counts(plane, ignore_value)
    if len(classes) == 0:
        return out

    edge = _boundary(plane)
    dist, nearest = ndi.distance_transform_edt(~edge, return_indices=True)
    interior = (plane != ignore_value) & ~edge
    skeleton = _ridge_skeleton(interior, dist, nearest)
    sk_y, sk_x = np.nonzero(skeleton)
    sk_class = plane[sk_y, sk_x]

    total_budget = fraction * float(areas.sum())
    budgets = _class_budgets(areas, total_budget)
    floors = np.minimum(areas, _MIN_CLASS_PIXELS)
    class_rngs = rng.spawn(len(classes))
    # small classes first; what a class cannot use (or overshoots) is shared out
    # among the classes still to come, so the plane total stays on budget
    # (the minimum pixels of small classes come out of the larger classes' share)
    to_paint = total_budget
    order = np.argsort(areas, kind="stable")
    for rank, idx in enumerate(order):
        c = classes[idx]
        planned = float(budgets[order[rank:]].sum())
        budget = to_paint * budgets[idx] / planned if planned > 0 else 0.0
        budget = min(max(budget, float(floors[idx])), float(areas[idx]))
        sel = sk_class == c
        painter = _ClassPainter(
            plane=plane,
            out=out,
            value=c,
            skeleton=skeleton,
            sk_y=sk_y[sel],
            sk_x=sk_x[sel],
            dist=dist,
            nearest=nearest,
            width=width,
            footprint=footprint,
            rng=class_rngs[idx],
        )
        to_paint -= painter.paint(max(1, round(budget)))
    return out


class _ClassPainter:
    """Draws the strokes of one class into the plane's scribble image."""

    def __init__(
        self,
        *,
        plane: np.ndarray,
        out: np.ndarray,
        value: int,
        skeleton: np.ndarray,
        sk_y: np.ndarray,
        sk_x: np.ndarray,
        dist: np.ndarray,
        nearest: np.ndarray,
        width: int,
        footprint: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.plane = plane
        self.out = out
        self.value = plane.dtype.type(value)
        self.skeleton = skeleton
        self.dist = dist
        self.nearest = nearest
        self.width = width
        self.footprint = footprint
        self.rng = rng
        self.shape = plane.shape
        if len(sk_y) == 0:
            sk_y, sk_x = self._fallback_skeleton()
        self.sk_y, self.sk_x = sk_y, sk_x
        self._prepare_parallel()
        # boundary lines start at skeleton points far enough from the boundary
        self.stop_before = width / 2.0 + 1.0
        far = dist[sk_y, sk_x] >= self.stop_before + 3.0
        self.line_y, self.line_x = sk_y[far], sk_x[far]

    # -- set-up ------------------------------------------------------------ #
    def _fallback_skeleton(self) -> tuple[np.ndarray, np.ndarray]:
        """Skeleton of a class that is only boundary pixels (1-2 px thin everywhere)."""
        mask = self.plane == self.value
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        local = thin(mask[y0:y1, x0:x1], max_num_iter=_THIN_ITERATIONS)
        if not local.any():
            local = mask[y0:y1, x0:x1]
        # other classes never see these pixels: windows keep only their class
        self.skeleton[y0:y1, x0:x1] |= local
        ly, lx = np.nonzero(local)
        return ly + y0, lx + x0

    def _prepare_parallel(self) -> None:
        """Pick the distance of the secondary skeleton and its candidate pixels."""
        if len(self.sk_y) == 0:
            self.par_y = self.par_x = np.empty(0, dtype=np.intp)
            self.par_level = 1.0
            return
        ridge_depth = float(np.median(self.dist[self.sk_y, self.sk_x]))
        self.par_level = float(np.clip(0.5 * ridge_depth, 1.0, 2.0 * self.width + 2.0))
        ys, xs = self.sk_y, self.sk_x
        # bounding box of the class via its skeleton, padded by the ridge depth
        pad = math.ceil(self.dist[ys, xs].max()) + 1
        y0 = max(int(ys.min()) - pad, 0)
        y1 = min(int(ys.max()) + pad + 1, self.shape[0])
        x0 = max(int(xs.min()) - pad, 0)
        x1 = min(int(xs.max()) + pad + 1, self.shape[1])
        band = self._band(y0, y1, x0, x1)
        py, px = np.nonzero(band)
        self.par_y, self.par_x = py + y0, px + x0

    def _band(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Class pixels whose boundary distance is within 0.5 px of the level."""
        d = self.dist[y0:y1, x0:x1]
        lvl = self.par_level
        return (
            (self.plane[y0:y1, x0:x1] == self.value)
            & (d > lvl - 0.5)
            & (d <= lvl + 0.5)
        )

    # -- stroke paths ------------------------------------------------------ #
    def _window(self, cy: int, cx: int, half: int) -> tuple[int, int, int, int]:
        return (
            max(cy - half, 0),
            min(cy + half + 1, self.shape[0]),
            max(cx - half, 0),
            min(cx + half + 1, self.shape[1]),
        )

    @staticmethod
    def _piece_at(mask: np.ndarray, cy: int, cx: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of the 8-connected piece of ``mask`` at or nearest to (cy, cx)."""
        labels, n = ndi.label(mask, structure=_EIGHT)
        if n == 0:
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
        lab = labels[cy, cx]
        if lab == 0:
            ys, xs = np.nonzero(labels)
            k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
            lab = labels[ys[k], xs[k]]
        return np.nonzero(labels == lab)

    def _ridge_path(self, cy: int, cx: int, half: int) -> tuple[np.ndarray, np.ndarray]:
        y0, y1, x0, x1 = self._window(cy, cx, half)
        local = self.skeleton[y0:y1, x0:x1] & (self.plane[y0:y1, x0:x1] == self.value)
        ys, xs = self._piece_at(local, cy - y0, cx - x0)
        return ys + y0, xs + x0

    def _parallel_path(
        self, cy: int, cx: int, half: int
    ) -> tuple[np.ndarray, np.ndarray]:
        y0, y1, x0, x1 = self._window(cy, cx, half)
        band = self._band(y0, y1, x0, x1)
        line = thin(band, max_num_iter=_THIN_ITERATIONS)
        if not line.any():
            line = band
        ys, xs = self._piece_at(line, cy - y0, cx - x0)
        return ys + y0, xs + x0

    def _line_path(
        self, cy: int, cx: int, length: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Line from the skeleton point towards its nearest boundary pixel."""
        qy = float(self.nearest[0, cy, cx])
        qx = float(self.nearest[1, cy, cx])
        vy, vx = cy - qy, cx - qx
        norm = math.hypot(vy, vx)
        if norm <= self.stop_before + 1.0:
            return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
        uy, ux = vy / norm, vx / norm
        start = min(norm, self.stop_before + max(length, 2.0))
        sy, sx = qy + uy * start, qx + ux * start
        ey, ex = qy + uy * self.stop_before, qx + ux * self.stop_before
        ys, xs = draw_line(round(sy), round(sx), round(ey), round(ex))
        inside = (ys >= 0) & (ys < self.shape[0]) & (xs >= 0) & (xs < self.shape[1])
        ys, xs = ys[inside], xs[inside]
        keep = self.plane[ys, xs] == self.value
        return ys[keep], xs[keep]

    # -- painting ------------------------------------------------------------ #
    def _stamp(
        self, ys: np.ndarray, xs: np.ndarray, cy: int, cx: int, room: int, slack: float
    ) -> tuple[int, int]:
        """Thicken a path, clip it to the class, paint the new pixels.

        Returns (pixels of the thick stroke, new pixels painted). If the new
        pixels exceed ``room + slack`` only the ``room`` ones nearest to the
        stroke centre are painted (a shorter piece of the same stroke).
        """
        if len(ys) == 0:
            return 0, 0
        pad = self.width
        y0 = max(int(ys.min()) - pad, 0)
        y1 = min(int(ys.max()) + pad + 1, self.shape[0])
        x0 = max(int(xs.min()) - pad, 0)
        x1 = min(int(xs.max()) + pad + 1, self.shape[1])
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        canvas[ys - y0, xs - x0] = True
        if self.width > 1:
            canvas = ndi.binary_dilation(canvas, structure=self.footprint)
        canvas &= self.plane[y0:y1, x0:x1] == self.value
        stroke_px = int(np.count_nonzero(canvas))
        out_local = self.out[y0:y1, x0:x1]
        new = canvas & (out_local == 0)
        ny, nx = np.nonzero(new)
        n_new = len(ny)
        if n_new > room + slack:
            d2 = (ny + y0 - cy) ** 2 + (nx + x0 - cx) ** 2
            keep = np.argsort(d2, kind="stable")[:room]
            ny, nx = ny[keep], nx[keep]
            n_new = len(ny)
        out_local[ny, nx] = self.value
        return stroke_px, n_new

    def paint(self, budget: int) -> int:
        """Add strokes until ``budget`` new pixels are painted; return the count."""
        rng = self.rng
        n_strokes = int(
            np.clip(round(math.sqrt(budget) / 2.0), 1, _MAX_STROKES_PER_CLASS)
        )
        stroke_target = budget / n_strokes
        slack = _OVERSHOOT_SLACK * budget
        # windows: half-size so that one stroke holds ~stroke_target pixels;
        # px_per_half is learnt from the strokes drawn so far
        px_per_half = [2.0 * self.width, 2.0 * self.width]
        max_half = min(max(4, math.ceil(stroke_target / self.width)), _MAX_WINDOW_HALF)
        candidates = {
            _RIDGE: (self.sk_y, self.sk_x),
            _PARALLEL: (self.par_y, self.par_x),
            _LINE: (self.line_y, self.line_x),
        }
        alive = [len(candidates[k][0]) > 0 for k in range(3)]
        got_kind = [0, 0, 0]
        stall = [0, 0, 0]
        total = 0
        attempts = 0
        while total < budget and any(alive) and attempts < _MAX_ATTEMPTS_PER_CLASS:
            attempts += 1
            shares = np.array([_KIND_SHARES[k] if alive[k] else 0.0 for k in range(3)])
            shares /= shares.sum()
            deficit = np.maximum(shares * budget - np.array(got_kind), 0.0)
            if deficit.sum() <= 0:
                deficit = shares
            kind = int(rng.choice(3, p=deficit / deficit.sum()))
            cand_y, cand_x = candidates[kind]
            pick = int(rng.integers(len(cand_y)))
            cy, cx = int(cand_y[pick]), int(cand_x[pick])
            stroke_px = n_new = 0
            # a painted centre would mostly repaint old pixels; boundary lines
            # start on the (often painted) ridge, so only their pixels count
            if kind == _LINE or self.out[cy, cx] == 0:
                scale = float(rng.uniform(0.5, 1.5))
                if kind == _LINE:
                    ys, xs = self._line_path(cy, cx, scale * stroke_target / self.width)
                else:
                    half = int(
                        np.clip(
                            round(scale * stroke_target / px_per_half[kind]),
                            2,
                            max_half,
                        )
                    )
                    path = self._ridge_path if kind == _RIDGE else self._parallel_path
                    ys, xs = path(cy, cx, half)
                room = budget - total
                stroke_px, n_new = self._stamp(ys, xs, cy, cx, room, slack)
                if kind != _LINE and stroke_px > 0:
                    observed = stroke_px / half
                    px_per_half[kind] = 0.7 * px_per_half[kind] + 0.3 * observed
            if n_new > 0:
                total += n_new
                got_kind[kind] += n_new
                stall[kind] = 0
            else:
                stall[kind] += 1
                if stall[kind] >= _STALL_LIMIT:
                    alive[kind] = False
        if total == 0:
            total = self._paint_deepest_pixel()
        return total

    def _paint_deepest_pixel(self) -> int:
        """Last resort if no stroke reached the class: paint its deepest pixel."""
        mask = (self.plane == self.value) & (self.out == 0)
        if not mask.any():
            return 0
        flat = np.where(mask, self.dist, -1.0)
        y, x = np.unravel_index(int(np.argmax(flat)), self.shape)
        self.out[y, x] = self.value
        return 1
