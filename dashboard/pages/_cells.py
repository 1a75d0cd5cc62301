"""The cell views (the UMAP, Explore's linked view) as figures, and the patches that
recolour or highlight them: :mod:`dashboard.views.cells` and
:mod:`dashboard.views.colours` give the data, :mod:`dashboard.figures` draws it (plain
functions, like ``_shared``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from dash import Input, Output, Patch, no_update

from dashboard import components, figures
from dashboard.views.cells import (
    MAX_LEGEND_ITEMS,
    cell_hover,
    hovered_point,
    main_view,
    shown_cells,
    shown_positions,
    view_meta,
)
from dashboard.views.colours import (
    ColorData,
    ColorSpec,
    category_counts,
    color_data,
    color_label,
)
from dashboard.views.errors import BackendError
from dashboard.views.layouts import OURS, layout_axes, layout_xy
from dashboard.views.state import active

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

UMAP_HEIGHT = 540
POINT_SIZE = 3.0


def color_parts(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    shown: np.ndarray | None = None,
    *,
    legend: bool = False,
) -> tuple[dict[str, Any], ColorData]:
    """Marker of a colouring and its values (of the ``shown`` cells only when given: the
    returned ``ColorData`` then holds theirs). With ``legend`` the page shows
    :func:`color_legend` for categories, so the figure has no colour bar for them."""
    cd = color_data(service, pair, spec, shown)
    marker = figures.color_marker(
        cd.values,
        categorical=cd.categorical,
        categories=cd.categories,
        title=cd.label,
        size=POINT_SIZE,
        colorbar=not legend,
    )
    return marker, cd


def cell_figure(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    x: np.ndarray,
    y: np.ndarray,
    selected: Sequence[int] | None,
    title: str,
    axis_titles: tuple[str, str] = ("UMAP 1", "UMAP 2"),
    labels_on_data: bool = False,
    view: Mapping[str, Any] | None = None,
    legend: bool = False,
) -> go.Figure:
    """A cell view (one point per cell, dataset order) coloured by ``spec`` (``legend``:
    categories get the page's :func:`color_legend`, not a colour bar).

    Above ``max_points`` cells only the overview subsample is plotted (``customdata`` =
    cell positions, ``selected`` mapped onto it) over a density image of all cells, and
    ``layout.meta`` names the ``view``
    (``{"view": "umap"}`` or the linked view's axes) so a lasso becomes a region of it.
    """
    shown = shown_cells(service, pair)
    marker, cd = color_parts(service, pair, spec, shown, legend=legend)
    density = None
    if shown is not None:  # where every cell is, under the plotted sample
        density = figures.density_heatmap(x, y)
        x, y = np.asarray(x)[shown], np.asarray(y)[shown]
        selected = shown_positions(shown, selected)
    annotations = []
    if labels_on_data and cd.categorical and spec.feature == "obs:cell_type":
        annotations = figures.category_annotations(x, y, cd.values)
    return figures.cell_scatter_figure(
        x,
        y,
        marker=marker,
        selected=selected,
        title=title,
        axis_titles=axis_titles,
        annotations=annotations,
        cells=shown,
        meta=view_meta(service, pair, view or {"view": "umap"}),
        density=density,
    )


def umap_figure(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    selected: Sequence[int] | None = None,
    title: str = "",
    legend: bool = False,
    layout: str = OURS,
) -> go.Figure:
    """The latent UMAP of the pair coloured by ``spec``, or the cells in another
    ``layout`` (a key of :mod:`dashboard.views.layouts`, checked)."""
    x, y = layout_xy(service, pair, layout)
    return cell_figure(
        service,
        pair,
        spec,
        x=x,
        y=y,
        selected=selected,
        title=title,
        axis_titles=layout_axes(layout),
        labels_on_data=True,
        view=main_view(layout),
        legend=legend,
    )


def recolor_patch(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    umap: bool = True,
    legend: bool = False,
) -> Patch:
    """Only what a recolour changes: the marker (typed-array colours, scale, colour bar)
    and the on-data labels (the hover is the page's tooltip, :func:`tooltip`, which reads
    the colouring itself); ``legend`` as for :func:`cell_figure`."""
    shown = shown_cells(service, pair)
    parts = color_parts(service, pair, spec, shown, legend=legend)
    return _patch(service, pair, spec, shown, parts, umap=umap)


def recolor_patches(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    layout: str = OURS,
) -> tuple[Patch, Patch]:
    """:func:`recolor_patch` of the main view (shown in ``layout``: where its on-data
    labels go) and of the linked view (both with a legend), from one reading of the colour
    values."""
    shown = shown_cells(service, pair)
    parts = color_parts(service, pair, spec, shown, legend=True)
    return (
        _patch(service, pair, spec, shown, parts, umap=True, layout=layout),
        _patch(service, pair, spec, shown, parts, umap=False),
    )


def _patch(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    shown: np.ndarray | None,
    parts: tuple[Any, ...],
    *,
    umap: bool,
    layout: str = OURS,
) -> Patch:
    marker, cd = parts
    patch = Patch()
    patch["data"][0]["marker"] = marker
    if umap:
        annotations = []
        if cd.categorical and spec.feature == "obs:cell_type":
            x, y = layout_xy(service, pair, layout)
            if shown is not None:
                x, y = x[shown], y[shown]
            annotations = figures.category_annotations(x, y, cd.values)
        patch["layout"]["annotations"] = annotations
    return patch


def color_legend(
    service: AnalysisService, pair: Pair, spec: ColorSpec, selection: Mapping[str, Any] | None
) -> Any:
    """The legend of a categorical colouring: each category's colour, whole name and number
    of cells, as buttons that select its cells (the one selected is marked); nothing for a
    colouring by numbers (its colour bar is in the figure)."""
    found = category_counts(service, pair, spec)
    if found is None:
        return []
    cats, counts, other = found
    colors = figures.category_colors(cats)
    group = (selection or {}).get("group") or {}
    active_value = group.get("value") if group.get("feature") == spec.feature else None
    items = [
        {"value": c, "color": colors[c], "count": int(n), "active": c == active_value}
        for c, n in zip(cats, counts, strict=True)
    ]
    return components.color_legend(
        items[:MAX_LEGEND_ITEMS],
        feature=spec.feature,
        title=color_label(service, pair, spec),
        more=len(items) - MAX_LEGEND_ITEMS,
        other=other,
    )


def selection_patch(
    cells: Sequence[int] | None, *, clear_outline: bool, shown: np.ndarray | None = None
) -> Patch:
    """Highlight ``cells`` (``None``: show all cells at full opacity); on a subsampled view
    (``shown``: the plotted cells) only the plotted ones among them."""
    patch = Patch()
    points = shown_positions(shown, cells) if cells is not None else None
    patch["data"][0]["selectedpoints"] = points
    if clear_outline:
        patch["layout"]["selections"] = []
    return patch


# ---------------------------------------------------------------------------- tooltip
def tooltip_io(graph_id: str) -> tuple[Any, ...]:
    """Outputs and input of a cell view's tooltip callback (:func:`tooltip`)."""
    tip = components.tooltip_id(graph_id)
    return (
        Output(tip, "show"),
        Output(tip, "bbox"),
        Output(tip, "children"),
        Input(graph_id, "hoverData"),
    )


def tooltip(
    hover: Any,
    spec: ColorSpec | None = None,
    *,
    blend: tuple[Any, Any, str | None] | None = None,
) -> tuple[bool, Any, Any]:
    """``show``, ``bbox`` and ``children`` of a cell view's tooltip for its ``hoverData``:
    the hovered cell's name (bold), type, batch and the value of the colouring ``spec``
    (:data:`figures.IMPUTED_MARK` after an imputed one), or both values of a ``blend``
    ``(a, b, layer)`` (:func:`dashboard.views.cells.cell_hover`). A payload that names no
    cell of the active dataset (forged, or the pointer left the cells) hides it; so does a
    colouring that cannot be read (e.g. a forged feature): the hover is no place for an
    error."""
    try:
        service, pair = active()
        n_cells = service.dataset(pair).n_cells
        found = hovered_point(hover, n_cells, shown_cells(service, pair))
        if found is None:
            return False, no_update, no_update
        cell, bbox = found
        info = cell_hover(service, pair, cell, spec, blend=blend)
    except (BackendError, LookupError, ValueError, TypeError):
        return False, no_update, no_update
    mark = figures.IMPUTED_MARK if info.imputed else ""
    return True, bbox, components.cell_tooltip(info.name, info.rows, mark)
