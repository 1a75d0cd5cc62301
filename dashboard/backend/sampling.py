"""Overview subsample and region selection for large datasets (numpy; a pandas categorical
is read through its codes).

A browser draws a WebGL scatter of a few hundred thousand points smoothly; a million
per-point colours and a lasso over them are sluggish. Above ``Settings.max_points`` the cell
views therefore plot a fixed, seeded, stratified subsample (:func:`stratified_subsample`),
while a lasso or box drawn on it selects every cell of the dataset inside the same shape
(:func:`points_in_polygon`, :func:`points_in_box`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Cells every group keeps in the overview (or all of a smaller group).
MIN_PER_GROUP = 50


def allocate(counts: np.ndarray, k: int, min_per_group: int = MIN_PER_GROUP) -> np.ndarray:
    """Cells drawn from each group: the same fraction of every group, except that each
    keeps at least ``min(count, m)`` cells.

    ``m`` is ``min_per_group``, lowered to ``k // n_groups`` when there are too many groups
    to give each that many. The fraction is found by bisection so the quotas sum to
    ``min(k, counts.sum())``; rounding is largest-remainder and never exceeds a count.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if k >= total:
        return counts.copy()
    floor_q = np.minimum(counts, min(min_per_group, k // max(len(counts), 1)))

    def shares(fraction: float) -> np.ndarray:
        return np.clip(fraction * counts, floor_q, counts)

    lo, hi = 0.0, 1.0
    for _ in range(64):
        mid = (lo + hi) / 2
        if shares(mid).sum() > k:
            hi = mid
        else:
            lo = mid
    share = shares(lo)
    quota = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - quota), kind="stable")  # largest remainders first
    while (short := k - int(quota.sum())) > 0:
        room = order[quota[order] < counts[order]][:short]
        quota[room] += 1
    return quota


def stratified_subsample(
    groups: Sequence | np.ndarray,
    max_points: int,
    *,
    seed: int = 0,
    min_per_group: int = MIN_PER_GROUP,
) -> np.ndarray:
    """Sorted positions of at most ``max_points`` cells, stratified by ``groups``.

    Every group keeps the same fraction of its cells (so relative densities are preserved)
    except that each keeps at least ``min(size, min_per_group)`` (so small cell types stay
    visible); cells are drawn uniformly within each group (:func:`allocate`). All cells
    (``arange``) when there are no more than ``max_points``. Deterministic for a given ``seed``.
    """
    labels = _group_codes(groups)
    n = len(labels)
    if max_points <= 0:
        msg = f"max_points must be positive, got {max_points}"
        raise ValueError(msg)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = allocate(counts, max_points, min_per_group)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(order[s : s + c], size=q, replace=False)
        for s, c, q in zip(starts, counts, quota, strict=True)
        if q
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def string_categories(column: pd.Series | pd.Categorical) -> pd.Categorical:
    """``pd.Categorical(column.astype(str))``: the values as strings, the observed ones as
    sorted categories. A categorical whose categories stay distinct as strings (and has no
    missing value) is recoded through its categories, not its million strings:
    milliseconds instead of a few tenths of a second per call at a million cells."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        cat = pd.Categorical(column)
        names = np.asarray([str(c) for c in cat.categories], dtype=object)
        codes = np.asarray(cat.codes)
        if len(set(names)) == len(names) and (len(codes) == 0 or codes.min() >= 0):
            used = np.flatnonzero(np.bincount(codes, minlength=len(names)))
            kept = used[np.argsort(names[used].astype(str), kind="stable")]
            recode = np.full(len(names), -1, dtype=np.int64)
            recode[kept] = np.arange(len(kept))
            return pd.Categorical.from_codes(recode[codes], categories=list(names[kept]))
    return pd.Categorical(pd.Series(column).astype(str))


def _group_codes(groups: Sequence | np.ndarray) -> np.ndarray:
    """``groups`` as values whose sorted order is that of the groups' names: a pandas
    categorical as the codes of :func:`string_categories` (sorted names), so the groups and
    every draw are those of its strings without sorting a million of them (2 s at a
    million cells); anything else as an array."""
    if isinstance(getattr(groups, "dtype", None), pd.CategoricalDtype):
        return np.asarray(string_categories(groups).codes, dtype=np.int64)
    return np.asarray(groups)


# ------------------------------------------------------------------------------ regions
def points_in_box(
    x: np.ndarray, y: np.ndarray, x_range: Sequence[float], y_range: Sequence[float]
) -> np.ndarray:
    """Boolean mask of points inside a box (edges included, bounds in either order)."""
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    x = np.asarray(x)
    y = np.asarray(y)
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def points_in_polygon(
    x: np.ndarray, y: np.ndarray, poly_x: Sequence[float], poly_y: Sequence[float]
) -> np.ndarray:
    """Boolean mask of points inside a polygon (even-odd rule; the boundary counts as inside).

    The polygon closes itself (last vertex back to the first) and may be concave or
    self-intersecting. Points are sorted by ``y`` once; each edge then only tests the
    points whose ``y`` lies in its span (a contiguous slice), so the work is about
    ``n log n`` plus the number of edge crossings, not ``n`` times the vertices. Points with
    NaN coordinates are outside.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    px = np.asarray(poly_x, dtype=np.float64)
    py = np.asarray(poly_y, dtype=np.float64)
    inside = np.zeros(len(x), dtype=bool)
    if len(px) < 3 or len(x) == 0:
        return inside
    # only points in the polygon's bounding box can be inside
    cand = np.flatnonzero((x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max()))
    if cand.size == 0:
        return inside
    order = cand[np.argsort(y[cand], kind="stable")]
    xs, ys = x[order], y[order]
    odd = np.zeros(len(order), dtype=bool)
    edge = np.zeros(len(order), dtype=bool)
    scale = max(float(np.ptp(px)), float(np.ptp(py)), 1e-300)
    eps = 1e-12 * scale * scale
    for x1, y1, x2, y2 in zip(px, py, np.roll(px, -1), np.roll(py, -1), strict=True):
        lo_y, hi_y = min(y1, y2), max(y1, y2)
        lo = int(np.searchsorted(ys, lo_y, side="left"))
        hi = int(np.searchsorted(ys, hi_y, side="right"))
        if lo >= hi:
            continue
        sx, sy = xs[lo:hi], ys[lo:hi]
        # on the segment: collinear and within its x span (the y span holds by the slice)
        cross = (x2 - x1) * (sy - y1) - (y2 - y1) * (sx - x1)
        edge[lo:hi] |= (np.abs(cross) <= eps) & (sx >= min(x1, x2)) & (sx <= max(x1, x2))
        if y1 == y2:
            continue  # horizontal edges never cross a horizontal ray
        # half-open rule: the edge spans y if exactly one end lies above it
        spans = (y1 > sy) != (y2 > sy)
        x_at = x1 + (sy - y1) * (x2 - x1) / (y2 - y1)
        odd[lo:hi] ^= spans & (sx < x_at)
    inside[order] = odd | edge
    return inside


def region_mask(x: np.ndarray, y: np.ndarray, shape: dict) -> np.ndarray:
    """Mask of points inside a selection shape: ``{"lasso": [xs, ys]}`` or
    ``{"box": [[x0, x1], [y0, y1]]}`` (plotly's ``lassoPoints`` / ``range``)."""
    if shape.get("lasso") is not None:
        xs, ys = shape["lasso"]
        return points_in_polygon(x, y, xs, ys)
    if shape.get("box") is not None:
        xr, yr = shape["box"]
        return points_in_box(x, y, xr, yr)
    msg = "a selection shape needs 'lasso' or 'box'"
    raise ValueError(msg)
