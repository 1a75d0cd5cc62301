"""Lookup: find any gene or protein, see it on the cells, raw vs denoised per cell type,
and compare several features across cell types in a dot plot.

Picking a feature also sets the app's colour choice, so the Explore page (and a shared
link) shows the same colouring.
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _cells, _decode
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
from dashboard.views.label_sets import grouping_choices
from dashboard.views.links import initial_color, link_state
from dashboard.views.qc import predictive_check
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
                    _decode.control(ids.LOOKUP_DECODE, service, pair, spec.batch),
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
                        tooltip=True,
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
                "Model check: observed vs posterior predictive counts",
                ids.LOOKUP_CHECK,
                height=380,
                subtitle="Histogram of the feature's observed counts (bars) and of counts "
                "drawn from the model's posterior predictive (line), on the same bins.",
                footer=components.color_note("", note_id=ids.LOOKUP_CHECK_NOTE),
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
                controls=[
                    dcc.Dropdown(
                        id=ids.LOOKUP_FEATURES,
                        options=with_current([], catalog, dot_features),
                        value=dot_features,
                        multi=True,
                        placeholder="Add genes or proteins…",
                    ),
                    dcc.Dropdown(
                        id=ids.LOOKUP_DOT_GROUPING,
                        options=grouping_choices(service, pair),
                        value="",
                        clearable=False,
                        className="dropdown-small",
                        placeholder="Rows: cell types",
                    ),
                ],
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


start_decode, poll_decode = _decode.register(ids.LOOKUP_DECODE)


@callback(
    Output(ids.LOOKUP_UMAP, "figure"),
    Input(ids.LOOKUP_UMAP, "id"),
    State(ids.LOOKUP_SEARCH, "value"),
    State(ids.LOOKUP_LAYER, "value"),
    State(ids.SELECTION_STORE, "data"),
    State(ids.LOOKUP_DECODE.ready, "data"),
)
@sh.figure_or_error
def build_lookup_umap(
    _id: str, feature: str | None, layer: str, selection: dict | None, decoded: dict | None = None
) -> Any:
    """The UMAP coloured by the looked-up feature (cell type until one is chosen)."""
    service, pair = active()
    spec = _decode.decoded_spec(feature, layer, decoded)
    cells = valid_cells(selection, service.dataset(pair).n_cells)
    return _cells.umap_figure(service, pair, spec, selected=cells)


@callback(
    *_cells.tooltip_io(ids.LOOKUP_UMAP),
    *sh.values_of(ids.LOOKUP_SEARCH, ids.LOOKUP_LAYER),
    State(ids.LOOKUP_DECODE.ready, "data"),
    prevent_initial_call=True,
)
def lookup_tooltip(
    hover: Any, feature: str | None, layer: str | None, decoded: dict | None = None
) -> tuple:
    """The hovered cell: name, type, batch and the looked-up feature's value."""
    return _cells.tooltip(hover, _decode.decoded_spec(feature, layer, decoded))


@callback(
    *sh.recolor_io([ids.LOOKUP_UMAP], ids.LOOKUP_SEARCH, ids.LOOKUP_LAYER),
    Input(ids.LOOKUP_DECODE.ready, "data"),
    prevent_initial_call=True,
)
def recolor_lookup(
    feature: str | None,
    layer: str | None,
    color_state: dict | None,
    decoded: dict | None = None,
) -> tuple:
    """Recolour the cells by the picked feature (decoded as chosen) and share the choice
    with other pages."""
    if not feature:
        return no_update, no_update, layer_options(None), no_update
    batch = _decode.decoded_batch(decoded)
    spec, options, new_layer = sh.color_choice(feature, layer, color_state, batch)
    if spec is None:  # the shared colouring already
        return no_update, no_update, options, new_layer
    service, pair = active()
    return _cells.recolor_patch(service, pair, spec), spec.to_state(), options, new_layer


@callback(
    Output(LOOKUP_NOTE, "children"),
    Input(ids.LOOKUP_SEARCH, "value"),
    Input(ids.LOOKUP_LAYER, "value"),
    Input(ids.LOOKUP_DECODE.ready, "data"),
    prevent_initial_call=True,
)
def color_note(feature: str | None, layer: str | None, decoded: dict | None = None) -> str:
    """The line under the cells: where the picked protein is imputed (not measured), that
    a minified file has no counts, or that the values are decoded in another batch (``""``:
    nothing to say)."""
    if not feature:
        return ""
    try:
        service, pair = active()
        spec = _decode.decoded_spec(feature, layer, decoded)
        return colours.color_note(service, pair, spec)
    except BackendError:
        return ""


@callback(
    Output(ids.LOOKUP_VIOLIN, "figure"),
    Input(ids.LOOKUP_SEARCH, "value"),
    Input(ids.LOOKUP_DECODE.ready, "data"),
)
@sh.figure_or_error
def update_violin(feature: str | None, decoded: dict | None = None) -> Any:
    """Violins of raw and denoised values per cell type, side by side, and the denoised
    values decoded in another batch (or averaged over all) when "Decode in" says so."""
    if not feature:
        return figures.empty_figure("Search for a gene or protein above")
    service, pair = active()
    batch = _decode.decoded_batch(decoded)
    frame, order = violin_frame(service, pair, feature, batch=batch)
    name = feature_catalog(service, pair).label(feature)
    columns = [c for c in ("raw", "denoised", "decoded") if c in frame]  # each a layer
    specs = {c: ColorSpec(feature, c) for c in ("raw", "denoised")}
    specs["decoded"] = ColorSpec(feature, "denoised", batch)
    titles = [layer_title(service, pair, specs[c]) for c in columns]
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
    Output(ids.LOOKUP_CHECK, "figure"),
    Output(ids.LOOKUP_CHECK_NOTE, "children"),
    Input(ids.LOOKUP_SEARCH, "value"),
)
def update_check(feature: str | None) -> tuple[Any, str]:
    """The looked-up feature's posterior predictive check: observed vs model counts, and
    a line with the zero fractions and the calibration coverage."""
    if not feature:
        return figures.empty_figure("Search for a gene or protein above"), ""
    try:
        service, pair = active()
        view = predictive_check(service, pair, feature)
        name = feature_catalog(service, pair).label(feature)
    except BackendError as err:
        return figures.empty_figure(str(err)), ""
    figure = figures.predictive_check_figure(
        view.centres,
        view.widths,
        view.observed,
        view.predicted,
        tickvals=view.tickvals,
        ticktext=view.ticktext,
        log_bins=view.log_bins,
        title=f"{name}: observed vs model counts",
    )
    return figure, view.summary


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
    Input(ids.LOOKUP_DOT_GROUPING, "value"),
)
@sh.figure_or_error
def update_dotplot(features: list | None, grouping: str | None = None) -> Any:
    """Dot plot of the chosen features across cell types (or the groups of an obs column
    or a label set)."""
    if not features:
        return figures.empty_figure("Add genes or proteins to compare across cell types")
    service, pair = active()
    mean, frac = dotplot_tables(service, pair, list(features), grouping=grouping)
    return figures.dotplot_figure(mean, frac, title=dotplot_title(service, pair, grouping))
