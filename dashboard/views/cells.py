"""The cell views (UMAP, Explore's linked view): which cells they plot, what a selection
on them means, and the groups of cells pages compare.

Large datasets: the overview subsample and region selections.

Above ``Settings.max_points`` cells the UMAP and the linked view plot a fixed, seeded
subsample stratified by cell type (:func:`shown_cells`, computed once per pair and kept in
the results cache). A lasso or box drawn on it is kept as a *region*, the shape plus the
view it was drawn in::

    {"view": "umap", "lasso": [[x...], [y...]]}
    {"view": "umap", "layout": "obsm:X_tsne", "lasso": [[x...], [y...]]}
    {"view": "linked", "kind": "proteins", "x": "CD3", "y": "CD4", "layer": "denoised",
     "box": [[x0, x1], [y0, y1]]}

and :func:`region_cells` resolves it against every cell of the dataset (memoised), so a
selection still means cells of the whole dataset while the browser's store, the URL and
saved selections hold a few kilobytes instead of a million positions. A region of the main
view names the layout it was drawn in (:mod:`dashboard.views.layouts`; none: ours), so it
keeps meaning the same cells after a switch of layout. Below the threshold
none of this applies: all cells are drawn and selections are lists of positions as before.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.sampling import region_mask
from dashboard.url_state import decode_selection, encode_selection
from dashboard.views.blend import check_feature
from dashboard.views.colours import (
    ColorSpec,
    category_codes,
    color_data,
    feature_values,
    layer_title,
)
from dashboard.views.features import feature_catalog
from dashboard.views.layouts import OURS, layout_xy
from dashboard.views.state import active
from dashboard.views.values import MEASURED_COUNTS, is_minified, obs_labels, protein_counts

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


#: Most vertices a lasso may have (longer ones are refused as malformed).
MAX_VERTICES = 5000
VIEWS = ("umap", "linked")
#: The linked view's kinds: protein vs protein, raw vs denoised of one protein, a layout
#: (ours or the file's own, :mod:`dashboard.views.layouts`) and a two-feature blend on
#: the latent UMAP (:mod:`dashboard.views.blend`).
LINKED_KINDS = ("proteins", "raw_denoised", "embedding", "blend")
#: Most categories a legend lists (the rest are counted in one line).
MAX_LEGEND_ITEMS = 200


# ----------------------------------------------------------------------------- subsample


def shown_cells(service: AnalysisService, pair: Pair) -> np.ndarray | None:
    """Sorted positions of the cells the views plot, or ``None`` when all are plotted
    (:meth:`~dashboard.backend.annotation.Annotation.shown_cells`: stratified by cell type,
    seeded, cached, computed among the first view's preparation steps)."""
    return service.shown_cells(pair)


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


def view_xy(
    service: AnalysisService, pair: Pair, view: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every cell in a view (``{"view": "umap"}``, with the ``layout`` it shows
    when not ours, or a linked view's spec)."""
    if view.get("view") == "umap" and view.get("layout") is not None:
        return layout_xy(service, pair, view["layout"])
    if view.get("view") == "umap" or view.get("kind") == "blend":
        return umap_xy(service, pair)
    if view.get("kind") == "embedding":
        return layout_xy(service, pair, view.get("layout"))
    x = str(view.get("x") or "")
    layer = str(view.get("layer") or "denoised")
    if view.get("kind") == "raw_denoised":
        xv = feature_values(service, pair, ColorSpec(f"protein:{x}", "raw"))
        yv = feature_values(service, pair, ColorSpec(f"protein:{x}", "denoised"))
        return xv, yv
    y = str(view.get("y") or x)
    if layer == MEASURED_COUNTS:  # raw counts, unmeasured cells left out
        return protein_counts(service, pair, x), protein_counts(service, pair, y)
    xv = feature_values(service, pair, ColorSpec(f"protein:{x}", layer))
    yv = feature_values(service, pair, ColorSpec(f"protein:{y}", layer))
    return xv, yv


def umap_xy(service: AnalysisService, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every cell in the latent UMAP."""
    xy = service.umap(pair)
    return xy["UMAP1"].to_numpy(), xy["UMAP2"].to_numpy()


def main_view(layout: str = OURS) -> dict[str, Any]:
    """The spec of the main cell view (Explore's, the UMAP of other pages) in ``layout``:
    ``{"view": "umap"}`` for ours (what regions drawn before layouts say), else with its
    ``layout``."""
    return {"view": "umap"} if layout == OURS else {"view": "umap", "layout": layout}


def linked_view(
    kind: str, x: str | None, y: str | None, layer: str | None, *, layout: str | None = None
) -> dict[str, Any]:
    """The spec of Explore's linked view: protein ``x`` vs ``y`` (default: ``x``) in
    ``layer`` (default: denoised), or raw vs denoised of ``x`` (``kind``
    ``"raw_denoised"``); kind ``"embedding"`` also names its ``layout`` (default: ours);
    for ``"blend"`` ``x`` and ``y`` are its two features (the cells sit on the UMAP)."""
    view = {"view": "linked", "kind": kind, "x": x, "y": y or x, "layer": layer or "denoised"}
    if kind == "embedding":
        view["layout"] = layout or OURS
    return view


def linked_values(
    service: AnalysisService, pair: Pair, view: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, tuple[str, str], str]:
    """x and y values, axis titles and title of a linked view (:func:`linked_view`)."""
    x, y = view.get("x"), view.get("y") or view.get("x")
    if not x:
        msg = "the dataset has no proteins to plot"
        raise BackendError(msg)
    catalog = feature_catalog(service, pair)
    name_x = catalog.shown_name(f"protein:{x}")
    raw_denoised = view.get("kind") == "raw_denoised"
    if raw_denoised and is_minified(service, pair):
        msg = (
            "Raw counts are not in this file (minified data): there is no raw vs denoised "
            "view; choose Protein vs protein"
        )
        raise BackendError(msg)
    xv, yv = view_xy(service, pair, view)
    if raw_denoised:
        raw, den = (
            layer_title(service, pair, ColorSpec(f"protein:{x}", layer))
            for layer in ("raw", "denoised")
        )
        return xv, yv, (f"{name_x} {raw}", f"{name_x} {den}"), f"{name_x}: raw vs denoised"
    name_y = catalog.shown_name(f"protein:{y}")
    layer = str(view.get("layer") or "denoised")
    layer = "raw" if layer == MEASURED_COUNTS else layer  # the same title: raw counts
    what = layer_title(service, pair, ColorSpec(f"protein:{x}", layer))
    return xv, yv, (f"{name_x} {what}", f"{name_y} {what}"), f"{name_x} vs {name_y}"


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
        for key in ("x", "y", "layer", "layout"):
            if region.get(key) is not None:
                out[key] = str(region[key])
    elif region.get("layout") not in (None, OURS):  # the main view in a layout of the file's
        out["layout"] = str(region["layout"])
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


# ---------------------------------------------------------------------------- selections
def cell_positions(values: Any) -> list[int]:
    """Cell positions from the browser: a non-empty list of non-negative whole numbers, or
    :class:`InvalidSelection` naming the first bad entry (never a silent wrap-around:
    numpy reads ``-1`` as the last cell)."""
    if not isinstance(values, list | tuple) or not values:
        msg = "the selection is not a list of cell positions"
        raise InvalidSelection(msg)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            msg = f"the selection holds {str(v)[:40]!r}, which is not a cell position (0, 1, ...)"
            raise InvalidSelection(msg)
    return list(values)


def valid_cells(selection: Mapping[str, Any] | None, n_cells: int) -> list[int] | None:
    """The selected cell positions if they fit this dataset, else ``None``.

    A region selection (lasso or box on a subsampled view) and a category selection (a
    legend click on a large dataset) are resolved against every cell of the active dataset.
    """
    if selection and selection.get("region"):
        try:
            service, pair = active()
            if service.dataset(pair).n_cells != n_cells:
                return None
            return region_cells(service, pair, selection["region"]).tolist() or None
        except BackendError:
            return None
    if selection and isinstance(selection.get("group"), Mapping) and "cells" not in selection:
        return group_cells(selection["group"], n_cells)  # a category of a large dataset
    if not selection or not selection.get("cells"):
        return None
    cells = cell_positions(selection["cells"])
    if max(cells) >= n_cells:  # a selection made on other cells (another dataset)
        return None
    return cells


def group_selection(service: AnalysisService, pair: Pair, spec: ColorSpec, category: str) -> Any:
    """The selection store's content for every cell of one category of a colouring (a
    legend click): the cells themselves up to ``max_points`` cells, else the category,
    resolved against every cell where it is used (as a region is)."""
    group = {"feature": spec.feature, "value": str(category)}
    data = {"dataset": pair.dataset.id, "source": "legend", "group": group}
    n = service.dataset(pair).n_cells
    if n <= service.settings.max_points:
        data["cells"] = group_cells(group, n) or []
    return data


def group_cells(group: Mapping[str, Any], n_cells: int) -> list[int] | None:
    """Positions of the cells of a ``{"feature", "value"}`` category of the active pair
    (``None`` if the colouring or the category is not there, or the dataset differs)."""
    try:
        service, pair = active()
        if service.dataset(pair).n_cells != n_cells:
            return None
        found = category_codes(
            service, pair, ColorSpec.from_state({"feature": str(group.get("feature"))})
        )
    except BackendError:
        return None
    if found is None or str(group.get("value")) not in found[0]:
        return None
    cats, codes = found
    return np.flatnonzero(codes == cats.index(str(group["value"]))).tolist() or None


def groups_from_selection_stores(
    selection: Mapping[str, Any] | None,
    saved: Mapping[str, Any] | None,
    dataset_id: str,
    n_cells: int,
) -> dict[str, list[int]]:
    """Named cell groups the user made: the current selection and saved selections."""
    out: dict[str, list[int]] = {}
    cells = valid_cells(selection, n_cells)
    if cells and (selection or {}).get("dataset") in (None, dataset_id):
        out["__current__"] = cells
    for name, item in ((saved or {}).get(dataset_id) or {}).items():
        try:
            if isinstance(item, Mapping) and item.get("region"):
                region_cells = valid_cells({"region": item["region"]}, n_cells)
                if region_cells:
                    out[f"saved:{name}"] = region_cells
                continue
            out[f"saved:{name}"] = decode_selection(str(item["token"]), n_cells)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def cell_type_choices(service: AnalysisService, pair: Pair) -> list[tuple[str, str, int]]:
    """``(id, shown name, cells)`` of every cell type, in the types' order: dropdowns
    choose ``type:<id>`` (the key of cached results) and show the name."""
    types = service.cell_types(pair)
    codes = types.cat.codes.to_numpy()
    counts = np.bincount(codes[codes >= 0], minlength=len(types.cat.categories))
    names = service.cell_type_names(pair)
    return [
        (t, names.get(t, t), int(c))
        for t, c in zip(map(str, types.cat.categories), counts, strict=True)
    ]


def group_name(service: AnalysisService, pair: Pair, value: str) -> str:
    """Display name of a group choice: a cell type's shown name (``type:<id>``), a saved
    selection's name (``saved:<name>``), a label set's category (``lab:[set, category]``)."""
    kind, _, name = str(value).partition(":")
    if kind == "type":
        return service.cell_type_names(pair).get(name, name)
    if kind == "lab":  # a category of a label set: "Lineage: T cells"
        try:
            set_name, category = json.loads(name)
            return f"{set_name}: {category}"
        except (ValueError, TypeError):
            return "label-set group"
    return name or str(value)


def main_types(
    service: AnalysisService, pair: Pair, cells: Sequence[int]
) -> list[tuple[str, int]]:
    """The four cell types (shown names) most of ``cells`` are, with how many each."""
    types = service.shown_cell_types(pair).iloc[cells].astype(str).value_counts().head(4)
    return [(str(t), int(c)) for t, c in types.items()]


# ------------------------------------------------------------------- saved selections
def saved_entry(
    selection: Mapping[str, Any] | None, cells: Sequence[int], n_cells: int
) -> dict[str, Any]:
    """How a selection is kept under a name: a region on a subsampled view as its shape,
    else its cells as a compact token; with its number of cells."""
    if (selection or {}).get("region"):
        return {"region": clean_region(selection["region"]), "n": len(cells)}
    return {"token": encode_selection(cells, n_cells), "n": len(cells)}


def saved_selection(
    service: AnalysisService, pair: Pair, name: str, saved: Mapping[str, Any] | None
) -> dict | None:
    """The selection store's content for a saved selection (``None`` if unknown)."""
    item = ((saved or {}).get(pair.dataset.id) or {}).get(name)
    if not item:
        return None
    if item.get("region"):
        return {"region": item["region"], "source": "saved", "dataset": pair.dataset.id}
    cells = decode_selection(item["token"], service.dataset(pair).n_cells)
    return {"cells": cells, "source": "saved", "dataset": pair.dataset.id}


# ------------------------------------------------------------------------------ hover
#: Most points of a ``hoverData`` payload read (plotly sends one per hovered trace).
MAX_HOVER_POINTS = 8


@dataclass(frozen=True)
class CellHover:
    """What a cell view's hover says about one cell: its ``name`` (bold), then ``rows`` of
    ``(label, value, bold)`` (its type, its batch, the coloured value)."""

    name: str
    rows: tuple[tuple[str, str, bool], ...]
    imputed: bool = False  # the coloured value is the model's prediction, not measured


def hovered_point(
    hover: Any, n_cells: int, shown: np.ndarray | None = None
) -> tuple[int, dict[str, float]] | None:
    """The dataset position of the cell a cell view's ``hoverData`` points at, and the
    point's box (``bbox``, where the tooltip goes); ``None`` for anything else (the payload
    is the browser's: any field may be forged).

    The cell is the point's ``customdata`` (its position, or ``[position, ...]``) when the
    payload has one, else its ``pointNumber`` read through ``shown`` (the plotted cells,
    :func:`shown_cells`; ``None``: point ``i`` is cell ``i``). dcc.Graph leaves
    ``customdata`` out when the figure sends it as a typed array (it indexes the undecoded
    ``{"dtype", "bdata"}`` object), so the browser's payloads take the second way.
    """
    if not isinstance(hover, Mapping):
        return None
    points = hover.get("points")
    if not isinstance(points, list) or not 0 < len(points) <= MAX_HOVER_POINTS:
        return None
    point = points[0]
    if not isinstance(point, Mapping) or point.get("curveNumber") != 0:
        return None
    if "customdata" in point:
        cell, limit = point["customdata"], n_cells
        if isinstance(cell, list) and cell:
            cell = cell[0]
    else:
        cell, limit = point.get("pointNumber"), n_cells if shown is None else len(shown)
    if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell < limit:
        return None
    if "customdata" not in point and shown is not None:
        cell = int(shown[cell])
    box = point.get("bbox")
    if not isinstance(box, Mapping):
        return None
    out: dict[str, float] = {}
    for key in ("x0", "x1", "y0", "y1"):
        v = box.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        out[key] = float(v)
    return cell, out


def _number(value: float) -> str:
    """A value as the hover shows it: 3 significant digits."""
    return f"{value:.3g}" if math.isfinite(value) else "NaN"


def cell_hover(
    service: AnalysisService,
    pair: Pair,
    cell: int,
    spec: ColorSpec | None = None,
    *,
    blend: tuple[Any, Any, str | None] | None = None,
) -> CellHover:
    """The hover of cell ``cell`` (a position, checked by :func:`hovered_point`): its name,
    its cell type (as renamed), its batch, and the value of the colouring ``spec`` (a
    category, or a number with its imputed flag; none when the colouring is the type or
    batch shown anyway), or both values of a two-feature ``blend`` ``(a, b, layer)``."""
    name = str(service.dataset(pair).obs_names[cell])
    rows = [
        ("type", str(service.shown_cell_types(pair).iloc[cell]), False),
        ("batch", str(obs_labels(service, pair, "batch").iloc[cell]), False),
    ]
    imputed = False
    if blend is not None:
        catalog = feature_catalog(service, pair)
        for feature in blend[:2]:
            key = check_feature(service, pair, feature)
            layer = ColorSpec.from_state({"feature": key, "layer": blend[2] or "denoised"})
            value = float(feature_values(service, pair, layer)[cell])
            rows.append((catalog.shown_name(key), _number(value), False))
    elif spec is not None:
        cd = color_data(service, pair, spec, np.array([cell]))
        if cd.categorical and not cd.in_hover_text:
            rows.append((cd.hover_label or cd.label, str(cd.values[0]), True))
        elif not cd.categorical:
            rows.append((cd.hover_label or cd.label, _number(float(cd.values[0])), True))
            imputed = cd.imputed is not None and bool(cd.imputed[0])
    return CellHover(name, tuple(rows), imputed)
