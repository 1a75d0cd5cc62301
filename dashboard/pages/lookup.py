"""Lookup: find any gene or protein, see it on the cells, raw vs denoised per cell type,
and compare several features across cell types in a dot plot.

Picking a feature also sets the app's colour choice, so the Explore page (and a shared
link) shows the same colouring.
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _cells
from dashboard.pages import _shared as sh
from dashboard.views import colours
from dashboard.views.cells import valid_cells
from dashboard.views.colours import (
    ColorSpec,
    feature_of,
    layer_choices,
    layer_options,
    layer_title,
)
from dashboard.views.errors import BackendError
from dashboard.views.expression import dotplot_tables, dotplot_title, violin_frame
from dashboard.views.features import (
    default_dot_features,
    feature_catalog,
    search_features,
    with_current,
)
from dashboard.views.links import initial_color, link_state
from dashboard.views.state import active
from dashboard.views.values import is_minified

sh.register_page(__name__, "/lookup", "Lookup")

#: The line under the cells about their colouring (imputed proteins, no counts).
LOOKUP_NOTE = "lookup-color-note"


@sh.model_page("Lookup")
def layout(color_state: dict | None = None, model: Any = None, **query: Any) -> html.Div:
    """The Lookup page; opens on the shared colour choice when it is a gene or protein."""
    service, pair = active()
    catalog, spec = initial_color(service, pair, query, color_state)
    value = feature_of(spec)
    dot_features = default_dot_features(catalog)
    if value and value not in dot_features:
        dot_features = [value, *dot_features]
    n_genes, n_proteins = len(catalog.genes), len(catalog.proteins)
    return html.Div(
        [
            components.page_header(
                "Lookup",
                f"Search {n_genes:,} genes and {n_proteins:,} proteins (any part of the name). "
                "The choice also colours the Explore page.",
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Gene or protein",
                        ids.LOOKUP_SEARCH,
                        options=with_current(
                            search_features(catalog, "", include_obs=False),
                            catalog,
                            value,
                        ),
                        value=value,
                        placeholder="Type a name, e.g. CD3E, ms4a1 or CD8…",
                        maxHeight=360,
                        class_name="field-wide",
                    ),
                    components.field(
                        "Values on the cells",
                        components.segmented(
                            ids.LOOKUP_LAYER, layer_choices(), spec.layer if value else "raw"
                        ),
                    ),
                    dcc.Link(
                        "Open in Explore →",
                        href="/",
                        className="btn btn-ghost",
                        id=ids.LOOKUP_OPEN_EXPLORE,
                    ),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    components.graph_card(
                        "Cells",
                        ids.LOOKUP_UMAP,
                        height=460,
                        subtitle="Latent UMAP",
                        footer=components.color_note(
                            colours.color_note(service, pair, spec) if value else "",
                            note_id=LOOKUP_NOTE,
                        ),
                    ),
                    components.graph_card(
                        "Raw vs denoised by cell type",
                        ids.LOOKUP_VIOLIN,
                        height=460,
                        subtitle="log1p values; denoised = the model's estimate without "
                        "technical noise (and protein background).",
                    ),
                ],
                className="grid-2",
            ),
            components.graph_card(
                "Dot plot across cell types",
                ids.LOOKUP_DOTPLOT,
                height=520,
                subtitle="Colour: denoised mean, scaled per feature. Size: share of cells "
                "expressing (raw count > 0; proteins: foreground probability > 0.5)."
                + (
                    " Raw counts are not in this file (minified data): genes' shares are "
                    "unknown (smallest dots)."
                    if is_minified(service, pair)
                    else ""
                ),
                controls=dcc.Dropdown(
                    id=ids.LOOKUP_FEATURES,
                    options=with_current([], catalog, dot_features),
                    value=dot_features,
                    multi=True,
                    placeholder="Add genes or proteins…",
                ),
            ),
            components.page_state_store(link_state(query, service, pair)),
        ],
        className="page-lookup",
    )


@callback(*sh.search_io(ids.LOOKUP_SEARCH), prevent_initial_call=True)
def search_feature(search: str | None, value: str | None) -> Any:
    """Server-side autocomplete over all genes and proteins (prefix matches first)."""
    return sh.feature_search(search, value, include_obs=False)


@callback(*sh.search_io(ids.LOOKUP_FEATURES), prevent_initial_call=True)
def search_dot_features(search: str | None, value: list | None) -> Any:
    """Autocomplete of the dot plot's feature list."""
    return sh.feature_search(search, value, include_obs=False)


@callback(
    Output(ids.LOOKUP_UMAP, "figure"),
    Input(ids.LOOKUP_UMAP, "id"),
    State(ids.LOOKUP_SEARCH, "value"),
    State(ids.LOOKUP_LAYER, "value"),
    State(ids.SELECTION_STORE, "data"),
)
@sh.figure_or_error
def build_lookup_umap(_id: str, feature: str | None, layer: str, selection: dict | None) -> Any:
    """The UMAP coloured by the looked-up feature (cell type until one is chosen)."""
    service, pair = active()
    spec = ColorSpec.from_state({"feature": feature, "layer": layer}) if feature else ColorSpec()
    cells = valid_cells(selection, service.dataset(pair).n_cells)
    return _cells.umap_figure(service, pair, spec, selected=cells)


@callback(
    *sh.recolor_io([ids.LOOKUP_UMAP], ids.LOOKUP_SEARCH, ids.LOOKUP_LAYER),
    prevent_initial_call=True,
)
def recolor_lookup(feature: str | None, layer: str | None, color_state: dict | None) -> tuple:
    """Recolour the cells by the picked feature and share the choice with other pages."""
    if not feature:
        return no_update, no_update, layer_options(None), no_update
    spec, options, new_layer = sh.color_choice(feature, layer, color_state)
    if spec is None:  # the shared colouring already
        return no_update, no_update, options, new_layer
    service, pair = active()
    return _cells.recolor_patch(service, pair, spec), spec.to_state(), options, new_layer


@callback(
    Output(LOOKUP_NOTE, "children"),
    Input(ids.LOOKUP_SEARCH, "value"),
    Input(ids.LOOKUP_LAYER, "value"),
    prevent_initial_call=True,
)
def color_note(feature: str | None, layer: str | None) -> str:
    """The line under the cells: where the picked protein is imputed (not measured), or
    that a minified file has no counts (``""``: nothing to say)."""
    if not feature:
        return ""
    try:
        service, pair = active()
        spec = ColorSpec.from_state({"feature": feature, "layer": layer})
        return colours.color_note(service, pair, spec)
    except BackendError:
        return ""


@callback(
    Output(ids.LOOKUP_VIOLIN, "figure"),
    Input(ids.LOOKUP_SEARCH, "value"),
)
@sh.figure_or_error
def update_violin(feature: str | None) -> Any:
    """Violins of raw and denoised values per cell type, side by side."""
    if not feature:
        return figures.empty_figure("Search for a gene or protein above")
    service, pair = active()
    frame, order = violin_frame(service, pair, feature)
    name = feature_catalog(service, pair).label(feature)
    columns = ["raw", "denoised"]  # the columns of violin_frame, each a layer
    titles = [layer_title(service, pair, ColorSpec(feature, c)) for c in columns]
    if is_minified(service, pair):  # no counts: one violin, and why
        columns, titles = columns[1:], titles[1:]
        name += " · raw counts not in this file (minified data)"
    return figures.violin_figure(
        frame,
        group_column="cell_type",
        value_columns=columns,
        titles=titles,
        group_order=order,
        title=name,
    )


@callback(
    Output(ids.LOOKUP_FEATURES, "value"),
    Output(ids.LOOKUP_FEATURES, "options", allow_duplicate=True),
    Input(ids.LOOKUP_SEARCH, "value"),
    State(ids.LOOKUP_FEATURES, "value"),
    State(ids.LOOKUP_FEATURES, "options"),
    prevent_initial_call=True,
)
def add_to_dotplot(feature: str | None, features: list | None, options: list | None) -> Any:
    """A looked-up feature joins the dot plot (first, if not there yet)."""
    features = list(features or [])
    if not feature or feature in features:
        return no_update, no_update
    service, pair = active()
    catalog = feature_catalog(service, pair)
    value = [feature, *features]
    return value, with_current(list(options or []), catalog, value)


@callback(
    Output(ids.LOOKUP_DOTPLOT, "figure"),
    Input(ids.LOOKUP_FEATURES, "value"),
)
@sh.figure_or_error
def update_dotplot(features: list | None) -> Any:
    """Dot plot of the chosen features across cell types."""
    if not features:
        return figures.empty_figure("Add genes or proteins to compare across cell types")
    service, pair = active()
    mean, frac = dotplot_tables(service, pair, list(features))
    return figures.dotplot_figure(mean, frac, title=dotplot_title(service, pair))
