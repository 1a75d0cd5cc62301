"""Large datasets in the cell views: the overview subsample and region selections.

Above ``Settings.max_points`` cells the UMAP and the linked view plot a fixed, seeded
subsample stratified by cell type (:func:`shown_cells`, computed once per pair and kept in
the results cache). A lasso or box drawn on it is kept as a *region*, the shape plus the
view it was drawn in::

    {"view": "umap", "lasso": [[x...], [y...]]}
    {"view": "linked", "kind": "proteins", "x": "CD3", "y": "CD4", "layer": "denoised",
     "box": [[x0, x1], [y0, y1]]}

and :func:`region_cells` resolves it against every cell of the dataset (memoised), so a
selection still means cells of the whole dataset while the browser's store, the URL and
saved selections hold a few kilobytes instead of a million positions. Below the threshold
none of this applies: all cells are drawn and selections are lists of positions as before.
Like :mod:`dashboard.queries`, this module imports no Dash and no plotly.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard import queries
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.sampling import MIN_PER_GROUP, region_mask, stratified_subsample
from dashboard.queries import ColorSpec

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: Most vertices a lasso may have (longer ones are refused as malformed).
MAX_VERTICES = 5000
VIEWS = ("umap", "linked")
LINKED_KINDS = ("proteins", "raw_denoised")


# ----------------------------------------------------------------------------- subsample
def shown_cells(service: AnalysisService, pair: Pair) -> np.ndarray | None:
    """Sorted positions of the cells the views plot, or ``None`` when all are plotted.

    Stratified by cell type (every type keeps ``min(size, 50)`` cells, the rest in
    proportion), seeded by ``Settings.seed``; cached per (dataset, model, max_points).
    """
    k = int(service.settings.max_points)
    if service.dataset(pair).n_cells <= k:
        return None
    params = {"max_points": k, "seed": int(service.settings.seed), "min": MIN_PER_GROUP}

    def compute() -> np.ndarray:
        types = service.cell_types(pair).astype(str).to_numpy()
        return stratified_subsample(types, k, seed=params["seed"]).astype(np.int32)

    return service.cache.get_or_compute(service.key("overview", pair, params), compute)


def overview_note(service: AnalysisService, pair: Pair) -> str | None:
    """``"Showing 200,000 of 1,000,000 cells ..."`` when subsampled, else ``None``."""
    shown = shown_cells(service, pair)
    if shown is None:
        return None
    n = service.dataset(pair).n_cells
    return (
        f"Showing {len(shown):,} of {n:,} cells (a seeded sample stratified by cell type); "
        "a lasso or box selects every cell inside it."
    )


def shown_positions(shown: np.ndarray | None, cells: Sequence[int] | None) -> list[int] | None:
    """Positions in the plotted points of the selected ``cells`` that are plotted."""
    if cells is None or shown is None:
        return None if cells is None else list(cells)
    idx = np.asarray(cells, dtype=np.int64)
    if idx.size == 0 or len(shown) == 0:
        return []
    pos = np.searchsorted(shown, idx)
    keep = shown[np.minimum(pos, len(shown) - 1)] == idx
    return pos[keep].tolist()


def view_meta(
    service: AnalysisService, pair: Pair, view: Mapping[str, Any]
) -> dict[str, Any] | None:
    """``layout.meta`` of a subsampled view: tells the browser to send a lasso or box as
    a region of this view (``None`` when all cells are plotted)."""
    shown = shown_cells(service, pair)
    if shown is None:
        return None
    n = service.dataset(pair).n_cells
    return {"overview": {"view": dict(view), "shown": len(shown), "n_cells": n}}


# ------------------------------------------------------------------------------- regions
def view_xy(
    service: AnalysisService, pair: Pair, view: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every cell in a view (``{"view": "umap"}`` or a linked view's spec)."""
    if view.get("view") == "umap":
        xy = service.umap(pair)
        return xy["UMAP1"].to_numpy(), xy["UMAP2"].to_numpy()
    x = str(view.get("x") or "")
    layer = str(view.get("layer") or "denoised")
    if view.get("kind") == "raw_denoised":
        xv = queries.feature_values(service, pair, ColorSpec(f"protein:{x}", "raw"))
        yv = queries.feature_values(service, pair, ColorSpec(f"protein:{x}", "denoised"))
        return xv, yv
    y = str(view.get("y") or x)
    xv = queries.feature_values(service, pair, ColorSpec(f"protein:{x}", layer))
    yv = queries.feature_values(service, pair, ColorSpec(f"protein:{y}", layer))
    return xv, yv


def _numbers(values: Any, what: str) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) > MAX_VERTICES:
        msg = f"the selection's {what} is not a list of at most {MAX_VERTICES} numbers"
        raise InvalidSelection(msg)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            msg = f"the selection's {what} holds a value that is not a finite number"
            raise InvalidSelection(msg)
        out.append(float(v))
    return out


def clean_region(region: Any) -> dict[str, Any]:
    """A region from the browser, checked and in canonical form (``InvalidSelection``
    when malformed): view fields plus exactly one of ``lasso`` / ``box``."""
    if not isinstance(region, Mapping) or region.get("view") not in VIEWS:
        msg = "the selection's region names no view (umap or linked)"
        raise InvalidSelection(msg)
    out: dict[str, Any] = {"view": region["view"]}
    if region["view"] == "linked":
        kind = region.get("kind")
        if kind not in LINKED_KINDS:
            msg = f"the selection's linked view kind {kind!r} is unknown"
            raise InvalidSelection(msg)
        out["kind"] = kind
        for key in ("x", "y", "layer"):
            if region.get(key) is not None:
                out[key] = str(region[key])
    lasso, box = region.get("lasso"), region.get("box")
    if lasso is not None:
        if not isinstance(lasso, list | tuple) or len(lasso) != 2:
            msg = "the selection's lasso is not [xs, ys]"
            raise InvalidSelection(msg)
        xs, ys = _numbers(lasso[0], "lasso x"), _numbers(lasso[1], "lasso y")
        if len(xs) != len(ys) or len(xs) < 3:
            msg = "the selection's lasso needs as many x as y, and at least 3 points"
            raise InvalidSelection(msg)
        out["lasso"] = [xs, ys]
    elif box is not None:
        if not isinstance(box, list | tuple) or len(box) != 2:
            msg = "the selection's box is not [[x0, x1], [y0, y1]]"
            raise InvalidSelection(msg)
        xr, yr = _numbers(box[0], "box x"), _numbers(box[1], "box y")
        if len(xr) != 2 or len(yr) != 2:
            msg = "the selection's box is not [[x0, x1], [y0, y1]]"
            raise InvalidSelection(msg)
        out["box"] = [xr, yr]
    else:
        msg = "the selection's region has neither a lasso nor a box"
        raise InvalidSelection(msg)
    return out


_regions: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_regions_lock = threading.Lock()
_REGIONS_KEPT = 16


def region_cells(service: AnalysisService, pair: Pair, region: Any) -> np.ndarray:
    """Sorted positions of every cell (shown or not) inside a region (memoised)."""
    canonical = clean_region(region)
    key = (pair.id, json.dumps(canonical, sort_keys=True))
    with _regions_lock:
        if key in _regions:
            _regions.move_to_end(key)
            return _regions[key]
    x, y = view_xy(service, pair, canonical)
    cells = np.flatnonzero(region_mask(x, y, canonical)).astype(np.int64)
    cells.setflags(write=False)
    with _regions_lock:
        _regions[key] = cells
        while len(_regions) > _REGIONS_KEPT:
            _regions.popitem(last=False)
    return cells
