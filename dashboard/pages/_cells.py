"""The cell views (the UMAP, Explore's linked view) as figures, and the patches that
recolour or highlight them: :mod:`dashboard.views.cells` and
:mod:`dashboard.views.colours` give the data, :mod:`dashboard.figures` draws it (plain
functions, like ``_shared``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from dash import Patch

from dashboard import components, figures
from dashboard.views.cells import (
    MAX_LEGEND_ITEMS,
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
    hover_columns,
)
from dashboard.views.layouts import OURS, layout_axes, layout_xy

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

UMAP_HEIGHT = 540
POINT_SIZE = 3.0


_hover_cache: OrderedDict[str, list[str]] = OrderedDict()


_hover_lock = threading.Lock()


def hover_text(service: AnalysisService, pair: Pair) -> list[str]:
    """Base hover text of every plotted cell (id, type, batch), memoised per pair and
    cell-type names."""
    names = sorted(service.type_names.get(pair).items())
    key = f"{pair.id}@{service.settings.max_points}@{names}"
    with _hover_lock:
        if key in _hover_cache:
            return _hover_cache[key]
    data = service.dataset(pair)
    shown = shown_cells(service, pair)
    names = data.obs_names if shown is None else data.obs_names[shown]
    columns = hover_columns(service, pair)
    if shown is not None:
        columns = {k: np.asarray(v)[shown] for k, v in columns.items()}
    text = figures.cell_hover_text([str(c) for c in names], columns)
    with _hover_lock:
        _hover_cache[key] = text
        while len(_hover_cache) > 4:
            _hover_cache.popitem(last=False)
    return text


def color_parts(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    shown: np.ndarray | None = None,
    *,
    legend: bool = False,
) -> tuple[dict[str, Any], str, list[str] | None, ColorData]:
    """Marker, hover template and per-cell hover labels of a colouring (of the ``shown``
    cells only when given; the returned ``ColorData`` then holds their values). With
    ``legend`` the page shows :func:`color_legend` for categories, so the figure has no
    colour bar for them."""
    cd = color_data(service, pair, spec, shown)
    marker = figures.color_marker(
        cd.values,
        categorical=cd.categorical,
        categories=cd.categories,
        title=cd.label,
        size=POINT_SIZE,
        colorbar=not legend,
    )
    marked = cd.imputed is not None and not cd.categorical
    template = figures.hover_template(
        cd.hover_label or cd.label,
        categorical=cd.categorical,
        value_in_text=cd.in_hover_text,
        marked=marked,
    )
    labels = None
    if cd.categorical and not cd.in_hover_text:
        labels = [str(v) for v in cd.values]
    elif marked:  # imputed cells say so after their value
        labels = figures.value_marks(cd.imputed)
    return marker, template, labels, cd


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
    marker, template, labels, cd = color_parts(service, pair, spec, shown, legend=legend)
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
        hover_text=hover_text(service, pair),
        hovertemplate=template,
        hovertext=labels,
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
    hover: bool = False,
    legend: bool = False,
) -> Patch:
    """Only what a recolour changes: the marker (typed-array colours, scale, colour bar),
    the hover template, the hover labels of categories and the on-data labels; with
    ``hover`` also the cells' base hover text (after a cell type was renamed); ``legend``
    as for :func:`cell_figure`."""
    shown = shown_cells(service, pair)
    parts = color_parts(service, pair, spec, shown, legend=legend)
    return _patch(service, pair, spec, shown, parts, umap=umap, hover=hover)


def recolor_patches(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    hover: bool = False,
    layout: str = OURS,
) -> tuple[Patch, Patch]:
    """:func:`recolor_patch` of the main view (shown in ``layout``: where its on-data
    labels go) and of the linked view (both with a legend), from one reading of the colour
    values."""
    shown = shown_cells(service, pair)
    parts = color_parts(service, pair, spec, shown, legend=True)
    return (
        _patch(service, pair, spec, shown, parts, umap=True, hover=hover, layout=layout),
        _patch(service, pair, spec, shown, parts, umap=False, hover=hover),
    )


def _patch(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    shown: np.ndarray | None,
    parts: tuple[Any, ...],
    *,
    umap: bool,
    hover: bool,
    layout: str = OURS,
) -> Patch:
    marker, template, labels, cd = parts
    patch = Patch()
    patch["data"][0]["marker"] = marker
    patch["data"][0]["hovertemplate"] = template
    patch["data"][0]["hovertext"] = labels
    if hover:
        patch["data"][0]["text"] = hover_text(service, pair)
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
