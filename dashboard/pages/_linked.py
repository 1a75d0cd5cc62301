"""Explore's linked view of kinds "Embedding" and "Two-feature blend" as figures (plain
functions, like ``_cells``): :mod:`dashboard.views.layouts` and :mod:`dashboard.views.blend`
give the data, :mod:`dashboard.figures` draws it.

An embedding either follows the page's colouring (:data:`SAME`: the recolour callback
patches it with the UMAP) or has its own; a blend always has its own colours. Both keep the
cells as ``data[0]`` in dataset order, so the selection patches apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dash import Input, Output, callback, dcc, html, no_update

from dashboard import figures, ids
from dashboard.pages import _cells
from dashboard.pages import _shared as sh
from dashboard.views.blend import blend_data, blend_key
from dashboard.views.cells import (
    linked_view,
    shown_cells,
    shown_positions,
    umap_xy,
    view_meta,
)
from dashboard.views.colours import ColorSpec, color_label, layer_title
from dashboard.views.features import FeatureCatalog, search_features, with_current
from dashboard.views.layouts import (
    OURS,
    check_layout,
    layout_axes,
    layout_choices,
    layout_label,
    layout_xy,
    layouts_note,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: The embedding's colouring choice "same as the UMAP".
SAME = "same"
SAME_LABEL = "Same as the UMAP"
#: The linked kinds this module draws.
KINDS = frozenset({"embedding", "blend"})


def follows_page(kind: str | None, color: str | None) -> bool:
    """True if the linked view shows the page's colouring (so a recolour patches it):
    every kind but a blend and an embedding with a colouring of its own."""
    if kind == "blend":
        return False
    return kind != "embedding" or not color or color == SAME


def own_spec(color: str | None, layer: str | None) -> ColorSpec:
    """The embedding's own colouring (the colour store's checks apply)."""
    return ColorSpec.from_state({"feature": color, "layer": layer or "denoised"})


def embedding_figure(
    service: AnalysisService,
    pair: Pair,
    *,
    layout: Any,
    color: str | None,
    layer: str | None,
    page_spec: ColorSpec,
    selected: Sequence[int] | None,
) -> go.Figure:
    """The cells on ``layout`` (ours or the file's; a forged key: one readable line),
    coloured as the page (``color`` :data:`SAME`) or by ``color`` in ``layer``."""
    key = check_layout(service, pair, layout)
    x, y = layout_xy(service, pair, key)
    follows = follows_page("embedding", color)
    spec = page_spec if follows else own_spec(color, layer)
    shown = "the UMAP's colouring" if follows else color_label(service, pair, spec)
    return _cells.cell_figure(
        service,
        pair,
        spec,
        x=x,
        y=y,
        selected=selected,
        title=f"{layout_label(key)} · {shown}",
        axis_titles=layout_axes(key),
        view=linked_view("embedding", None, None, None, layout=key),
        legend=follows,  # its own categories get a colour bar (the legend is the page's)
    )


def blend_figure(
    service: AnalysisService,
    pair: Pair,
    *,
    a: Any,
    b: Any,
    layer: str | None,
    selected: Sequence[int] | None,
) -> go.Figure:
    """The latent UMAP coloured by the blend of features ``a`` and ``b`` in ``layer``, with
    its two-axis key; the page's tooltip shows both values of a hovered cell."""
    blend = blend_data(service, pair, a, b, layer)
    shown = shown_cells(service, pair)
    x, y = umap_xy(service, pair)
    density = None
    codes = blend.codes
    if shown is not None:  # where every cell is, under the plotted sample
        density = figures.density_heatmap(x, y)
        x, y, codes = x[shown], y[shown], codes[shown]
    what = layer_title(service, pair, ColorSpec.from_state({"feature": str(a), "layer": layer}))
    name_a, name_b = blend.names
    fig = figures.cell_scatter_figure(
        x,
        y,
        marker=figures.blend_marker(codes, blend.colors, size=_cells.POINT_SIZE),
        selected=shown_positions(shown, selected),
        title=f"{name_a} × {name_b} · blend, {what}",
        cells=shown,
        meta=view_meta(service, pair, linked_view("blend", str(a), str(b), layer)),
        density=density,
    )
    key = blend_key(blend)
    return figures.add_blend_key(
        fig,
        codes=key.codes,
        colors=key.colors,
        x=key.x,
        y=key.y,
        titles=key.titles,
        x_ticks=key.x_ticks,
        y_ticks=key.y_ticks,
    )


def linked_figure(
    service: AnalysisService,
    pair: Pair,
    kind: str,
    *,
    layout: Any,
    color: str | None,
    a: Any,
    b: Any,
    layer: str | None,
    page_spec: ColorSpec,
    selected: Sequence[int] | None,
) -> go.Figure:
    """The linked view of a kind in :data:`KINDS`."""
    if kind == "blend":
        return blend_figure(service, pair, a=a, b=b, layer=layer, selected=selected)
    return embedding_figure(
        service,
        pair,
        layout=layout,
        color=color,
        layer=layer,
        page_spec=page_spec,
        selected=selected,
    )


# --------------------------------------------------------------------------- controls
HIDDEN = {"display": "none"}
SHOWN = {"display": "flex", "gap": "6px", "flexWrap": "wrap", "alignItems": "center"}


def same_option() -> dict[str, str]:
    """The embedding colouring's first option: the page's colouring."""
    return {"label": SAME_LABEL, "value": SAME}


def controls(
    service: AnalysisService, pair: Pair, catalog: FeatureCatalog, a: str | None, b: str | None
) -> list[html.Div]:
    """The controls of kinds "Embedding" (layout, colouring, a muted line when the file
    has no layout of its own) and "Two-feature blend" (features A and B: genes or
    proteins), hidden until their kind is chosen (:func:`register`)."""
    note = layouts_note(service, pair)
    small = {"clearable": False, "className": "dropdown-small", "maxHeight": 320}
    features = search_features(catalog, "", include_obs=False)
    embedding = html.Div(
        [
            dcc.Dropdown(
                id=ids.EXPLORE_LINKED_LAYOUT,
                options=layout_choices(service, pair),
                value=OURS,
                **small,
            ),
            dcc.Dropdown(
                id=ids.EXPLORE_LINKED_COLOR,
                options=[same_option(), *search_features(catalog, "")],
                value=SAME,
                placeholder="Colour by…",
                **small,
            ),
            *([html.Span(note, className="muted small")] if note else []),
        ],
        id=ids.EXPLORE_LINKED_EMBEDDING,
        style=HIDDEN,
    )
    blend = html.Div(
        [
            dcc.Dropdown(
                id=component,
                options=with_current(features, catalog, value),
                value=value,
                placeholder=f"Feature {letter} (gene or protein)…",
                **small,
            )
            for component, value, letter in (
                (ids.EXPLORE_LINKED_A, a, "A"),
                (ids.EXPLORE_LINKED_B, b, "B"),
            )
        ],
        id=ids.EXPLORE_LINKED_BLEND,
        style=HIDDEN,
    )
    return [embedding, blend]


def register() -> tuple[Any, ...]:
    """The callbacks of these controls: which show for the chosen kind, and the
    colouring's and features' autocompletes."""

    @callback(
        Output(ids.EXPLORE_LINKED_X, "style"),
        Output(ids.EXPLORE_LINKED_Y, "style"),
        Output(ids.EXPLORE_LINKED_EMBEDDING, "style"),
        Output(ids.EXPLORE_LINKED_BLEND, "style"),
        Input(ids.EXPLORE_LINKED_KIND, "value"),
    )
    def kind_controls(kind: str | None) -> tuple[Any, ...]:
        """Protein dropdowns for the protein kinds; layout and colouring for an embedding;
        the two features for a blend."""
        proteins = {} if kind not in KINDS else HIDDEN
        return (
            proteins,
            proteins,
            SHOWN if kind == "embedding" else HIDDEN,
            SHOWN if kind == "blend" else HIDDEN,
        )

    @callback(*sh.search_io(ids.EXPLORE_LINKED_COLOR), prevent_initial_call=True)
    def search_linked_color(search: str | None, value: str | None) -> Any:
        """The embedding's colouring: the page's, or a match among annotations, genes and
        proteins."""
        found = sh.feature_search(search, None if value == SAME else value)
        return found if found is no_update else [same_option(), *found]

    def search_feature(search: str | None, value: str | None) -> Any:
        """Genes and proteins matching what is typed (no annotations: they have no
        values to blend)."""
        return sh.feature_search(search, value, include_obs=False)

    searches = tuple(
        callback(*sh.search_io(dropdown), prevent_initial_call=True)(search_feature)
        for dropdown in (ids.EXPLORE_LINKED_A, ids.EXPLORE_LINKED_B)
    )
    return kind_controls, search_linked_color, *searches


__all__ = ["KINDS", "SAME", "blend_figure", "embedding_figure", "follows_page", "register"]
