"""Explore: the latent UMAP and a linked protein view; select, name, keep and compare cells.

Colouring changes send only a ``Patch`` of the marker; a lasso or box selection in either
view becomes the app's selection store (in the browser) and every view highlights the same
cells through ``selectedpoints``. Above ``max_points`` cells the views plot a stratified
sample and a lasso or box is stored as a region that the server resolves against every cell
(:mod:`dashboard.views.cells`). Compare (selection vs rest, A vs B) runs the DE as a backend job
shown in the page's job panel (progress, Cancel); its table fills in when the job is done.
"""

from __future__ import annotations

from typing import Any

from dash import (
    ALL,
    ClientsideFunction,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    dcc,
    html,
    no_update,
)

from dashboard import components, figures, ids
from dashboard.pages import _annotations, _cells, _decode, _gene_sets, _jobs, _layout, _linked
from dashboard.pages import _shared as sh
from dashboard.views.cells import (
    cell_type_choices,
    group_selection,
    linked_values,
    linked_view,
    main_types,
    overview_note,
    saved_entry,
    saved_selection,
    shown_cells,
    valid_cells,
)
from dashboard.views.colours import ColorSpec, color_note, layer_choices, linked_choices
from dashboard.views.de import (
    DE_PROTEIN_SCALE,
    compare_choices,
    compare_groups,
    de_display_table,
    de_rows,
    submit_compare,
)
from dashboard.views.errors import BackendError, NotReady
from dashboard.views.features import (
    default_protein_pair,
    feature_catalog,
    search_features,
    with_current,
)
from dashboard.views.layouts import link_layout, shown_layout
from dashboard.views.links import initial_color, link_state
from dashboard.views.pending import shown_view, waiting
from dashboard.views.state import active

sh.register_page(__name__, "/", "Explore")

#: The linked view's kinds (values: :data:`dashboard.views.cells.LINKED_KINDS`).
LINKED_KINDS = [
    {"label": "Protein vs protein", "value": "proteins"},
    {"label": "Raw vs denoised", "value": "raw_denoised"},
    {"label": "Embedding", "value": "embedding"},
    {"label": "Two-feature blend", "value": "blend"},
]
#: How often the page asks whether the denoised protein is ready (only while it is not).
LINKED_POLL_MS = 2000
SAVED_CHIP = "explore-saved-chip"
SAVED_DELETE = "explore-saved-delete"
RENAME_TYPE = "explore-rename-type"  # the cell type to rename (value: its id)
RENAME_NAME = "explore-rename-name"
RENAME_APPLY = "explore-rename-apply"
RENAME_RESET = "explore-rename-reset"
RENAME_UNDO = "explore-rename-undo"
RENAME_STATUS = "explore-rename-status"
TYPE_NAMES_STORE = ids.EXPLORE_TYPE_NAMES  # {type id: shown name}; changes after a rename
#: How the job panel names the compare job ("Comparison failed: ...").
COMPARE_LABEL = "Comparison"


@sh.model_page("Explore")
def layout(color_state: dict | None = None, model: Any = None, **query: Any) -> html.Div:
    """The Explore page (query: ``color``, ``layer``, ``layout``, ``sel``, ``n`` from a
    shared link)."""
    service, pair = active()
    catalog, spec = initial_color(service, pair, query, color_state)
    x0, y0 = default_protein_pair(catalog)
    protein_options = [
        {"label": catalog.label(f"protein:{p}"), "value": p} for p in catalog.proteins
    ]
    color_options = with_current(search_features(catalog, ""), catalog, spec.feature)
    data = service.dataset(pair)
    note = overview_note(service, pair)
    layout_key, _ = link_layout(service, pair, query.get("layout"))  # (link_state says why)
    wait = waiting(service, pair)
    return html.Div(
        [
            components.page_header(
                "Explore",
                f"{data.n_cells:,} cells in the model's latent space. Colour by any annotation, "
                "gene or protein; lasso cells in either view to select them everywhere.",
                extra=html.Div(
                    [
                        dcc.Clipboard(
                            id=ids.EXPLORE_SHARE,
                            title="Copy a link to this view (colour and selection)",
                            className="clipboard",
                            content="",
                        ),
                        html.Span("Copy link to this view", className="muted small"),
                    ],
                    className="share",
                ),
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Colour by",
                        ids.EXPLORE_COLOR,
                        options=color_options,
                        value=spec.feature,
                        clearable=False,
                        placeholder="Cell type, cluster, a gene or a protein…",
                        maxHeight=320,
                        class_name="field-wide",
                    ),
                    components.field(
                        "Values",
                        components.segmented(ids.EXPLORE_LAYER, layer_choices(), spec.layer),
                    ),
                    _layout.control(ids.EXPLORE_LAYOUT, service, pair, layout_key),
                    _decode.control(ids.EXPLORE_DECODE, service, pair, spec.batch),
                    rename_types_control(service, pair),
                ],
                className="toolbar",
            ),
            html.Div(
                [
                    components.graph_card(
                        "Cells" if data.layouts else "Latent space (UMAP)",
                        ids.EXPLORE_UMAP,
                        height=_cells.UMAP_HEIGHT,
                        tooltip=True,
                        subtitle=(f"{note} " if note else "")
                        + "Lasso or box-select cells, or click a legend entry; "
                        "double-click to clear.",
                        footer=html.Div(
                            legend_and_note(service, pair, spec, None), id=ids.EXPLORE_LEGEND
                        ),
                    ),
                    components.graph_card(
                        "Linked view",
                        ids.EXPLORE_LINKED,
                        height=_cells.UMAP_HEIGHT - 52,
                        tooltip=True,
                        subtitle=note,
                        controls=[
                            components.segmented(
                                ids.EXPLORE_LINKED_KIND, LINKED_KINDS, "proteins"
                            ),
                            *(
                                dcc.Dropdown(
                                    id=axis,
                                    options=protein_options,
                                    value=protein,
                                    clearable=False,
                                    className="dropdown-small",
                                )
                                for axis, protein in (
                                    (ids.EXPLORE_LINKED_X, x0),
                                    (ids.EXPLORE_LINKED_Y, y0),
                                )
                            ),
                            components.segmented(
                                ids.EXPLORE_LINKED_LAYER, linked_choices(), "denoised"
                            ),
                            *_linked.controls(
                                service,
                                pair,
                                catalog,
                                x0 and f"protein:{x0}",
                                y0 and f"protein:{y0}",
                            ),
                        ],
                    ),
                ],
                className="grid-2",
            ),
            dcc.Store(id=ids.EXPLORE_LINKED_WAIT, data={"waiting": wait}),
            dcc.Store(id=ids.EXPLORE_LINKED_GATE, data=False),
            dcc.Interval(id=ids.EXPLORE_LINKED_POLL, interval=LINKED_POLL_MS, disabled=not wait),
            components.card(
                "Selection",
                [
                    html.Div(id=ids.EXPLORE_SELECTION_INFO, className="selection-info"),
                    html.Div(
                        [
                            dcc.Input(
                                id=ids.EXPLORE_SELECTION_NAME,
                                placeholder="Name this selection…",
                                debounce=False,
                                className="input",
                                maxLength=60,
                            ),
                            html.Button(
                                "Save selection",
                                id=ids.EXPLORE_SAVE_SELECTION,
                                className="btn btn-secondary",
                            ),
                            html.Button(
                                "Clear",
                                id=ids.EXPLORE_CLEAR_SELECTION,
                                className="btn btn-ghost",
                            ),
                        ],
                        className="row-inline",
                    ),
                    html.Div(id=ids.EXPLORE_SAVED_LIST, className="chips"),
                    components.job_panel(
                        ids.EXPLORE_DE_JOB,
                        controls=[
                            _compare_field("Compare", ids.EXPLORE_COMPARE_A),
                            html.Span("vs", className="vs"),
                            _compare_field("against", ids.EXPLORE_COMPARE_B),
                            html.Button(
                                "Compare (DE)",
                                id=ids.EXPLORE_COMPARE,
                                className="btn btn-primary",
                            ),
                        ],
                        compact=True,
                    ),
                    dcc.Store(id=ids.EXPLORE_DE_READY_STORE),
                    dcc.Loading(
                        html.Div(
                            [
                                html.Div(id=ids.EXPLORE_DE_STATUS, className="de-status"),
                                html.Div(id="explore-de-wrap", className="de-wrap"),
                            ]
                        ),
                        delay_show=300,
                        type="dot",
                    ),
                    html.Button(
                        "Export table (CSV)",
                        id=ids.EXPLORE_DE_EXPORT,
                        className="btn btn-ghost btn-small",
                        hidden=True,
                    ),
                ],
                subtitle="Bayesian differential expression (totalVI change mode) of genes and "
                "proteins between two groups of cells. Click a row to colour the cells by it. "
                + DE_PROTEIN_SCALE,
            ),
            _annotations.card(service, pair),
            _gene_sets.card(spec.feature),
            components.page_state_store(link_state(query, service, pair)),
        ],
        className="page-explore",
    )


def rename_types_control(service: Any, pair: Any) -> html.Details:
    """The "Rename cell types" control: pick a type, type its new name, Apply; or reset
    every name."""
    return html.Details(
        [
            html.Summary("Rename cell types", className="field-label"),
            html.Div(
                [
                    dcc.Dropdown(
                        id=RENAME_TYPE,
                        options=type_options(service, pair),
                        placeholder="Cell type…",
                        clearable=False,
                        className="field-mid",
                        maxHeight=320,
                    ),
                    dcc.Input(
                        id=RENAME_NAME,
                        placeholder="New name…",
                        debounce=False,
                        className="input",
                        maxLength=60,
                        style={"width": "260px"},
                    ),
                    html.Button("Apply", id=RENAME_APPLY, className="btn btn-secondary"),
                    html.Button(
                        "Undo",
                        id=RENAME_UNDO,
                        className="btn btn-ghost",
                        title="Undo the last rename or reset",
                    ),
                    html.Button(
                        "Reset names",
                        id=RENAME_RESET,
                        className="btn btn-ghost",
                        title="Show every cell type under its automatic name again",
                    ),
                ],
                className="row-inline",
            ),
            html.Div(id=RENAME_STATUS),
            dcc.Store(id=TYPE_NAMES_STORE, data=service.cell_type_names(pair)),
        ],
        className="rename-types",
        style={"flexBasis": "100%"},  # its own line of the toolbar
    )


def type_options(service: Any, pair: Any) -> list[dict[str, str]]:
    """The rename dropdown: every cell type by its shown name (value: its id)."""
    return [
        {"label": name if name == t else f"{name} (auto: {t})", "value": t}
        for t, name, _ in cell_type_choices(service, pair)
    ]


def _compare_field(label: str, side: str) -> html.Div:
    """The dropdown of one side of the comparison (its groups: the compare callback's)."""
    return components.dropdown_field(label, side, clearable=False, class_name="field-mid")


# --------------------------------------------------------------------------- figures
def _selected(selection: dict | None, page_state: dict | None, n_cells: int, initial: bool):
    """Cells to highlight when a view is built: a shared link's on first build, else the
    selection store's."""
    if initial and page_state and (page_state.get("cells") or page_state.get("region")):
        return valid_cells(page_state, n_cells)
    return valid_cells(selection, n_cells)


start_decode, poll_decode = _decode.register(ids.EXPLORE_DECODE)
start_layout, poll_layout, opened_layout = _layout.register(ids.EXPLORE_LAYOUT)
linked_callbacks = _linked.register()  # the Embedding and Two-feature blend controls
gene_set_callbacks = _gene_sets.register()  # the Gene sets card
annotation_edit = _annotations.register()  # the Annotations card (label sets)


@callback(
    Output(ids.EXPLORE_UMAP, "figure"),
    Input(ids.EXPLORE_UMAP, "id"),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    *sh.data_of(ids.SELECTION_STORE, ids.PAGE_STATE, ids.EXPLORE_DECODE.ready, dep=State),
    Input(ids.EXPLORE_LAYOUT.ready, "data"),
)
@sh.figure_or_error
def build_umap(
    _id: str,
    feature: str,
    layer: str,
    selection: dict | None,
    page_state: dict | None,
    decoded: dict | None = None,
    layout: dict | None = None,
) -> Any:
    """The main cell view (our UMAP or a layout of the file's, as the layout control's
    ready store says; none: the default), coloured and highlighted as the page's controls
    say."""
    service, pair = active()
    n = service.dataset(pair).n_cells
    spec = _decode.decoded_spec(feature, layer, decoded)
    cells = _selected(selection, page_state, n, sh.triggered() is None)
    key = shown_layout(service, pair, layout)
    return _cells.umap_figure(service, pair, spec, selected=cells, legend=True, layout=key)


@callback(
    Output(ids.EXPLORE_LINKED, "figure"),
    *sh.props_of(Input, "value", ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_X),
    *sh.props_of(Input, "value", ids.EXPLORE_LINKED_Y, ids.EXPLORE_LINKED_LAYER),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    *sh.data_of(ids.SELECTION_STORE, ids.PAGE_STATE, ids.EXPLORE_DECODE.ready, dep=State),
    *sh.props_of(Input, "value", ids.EXPLORE_LINKED_LAYOUT, ids.EXPLORE_LINKED_COLOR),
    *sh.props_of(Input, "value", ids.EXPLORE_LINKED_A, ids.EXPLORE_LINKED_B),
    Input(ids.EXPLORE_LINKED_WAIT, "data"),
    Input(ids.EXPLORE_LINKED_GATE, "data"),
)
@sh.figure_or_error
def build_linked(
    kind: str,
    x: str | None,
    y: str | None,
    linked_layer: str,
    feature: str,
    layer: str,
    selection: dict | None,
    page_state: dict | None,
    decoded: dict | None = None,
    layout: str | None = None,
    own_color: str | None = None,
    a: str | None = None,
    b: str | None = None,
    _wait: dict | None = None,
    gate: bool | None = None,
) -> Any:
    """The linked scatter (protein vs protein, raw vs denoised of one protein, a layout
    of the cells, or the UMAP coloured by a blend of two features); on raw counts while
    the denoised protein is computed (:mod:`dashboard.views.pending`: ``_wait`` changing
    redraws it). Not before the main view's figure came (``gate`` ``False``: the browser
    draws the main view first; a large linked view would compete with it)."""
    if gate is False:
        return no_update
    service, pair = active()
    if kind in _linked.KINDS:
        cells = _selected(selection, page_state, service.dataset(pair).n_cells, False)
        return _linked.linked_figure(
            service,
            pair,
            kind,
            layout=layout,
            color=own_color,
            a=a,
            b=b,
            layer=linked_layer,
            page_spec=_decode.decoded_spec(feature, layer, decoded),
            selected=cells,
        )
    view, note = shown_view(service, pair, linked_view(kind, x, y, linked_layer))
    xv, yv, axes, title = linked_values(service, pair, view)
    title = f"{title} · {note}" if note else title
    spec = _decode.decoded_spec(feature, layer, decoded)
    n = service.dataset(pair).n_cells
    cells = _selected(selection, page_state, n, sh.triggered() is None)
    return _cells.cell_figure(
        service,
        pair,
        spec,
        x=xv,
        y=yv,
        selected=cells,
        title=title,
        axis_titles=axes,
        view=view,
        legend=True,
    )


@callback(
    Output(ids.EXPLORE_LINKED_WAIT, "data"),
    Output(ids.EXPLORE_LINKED_POLL, "disabled"),
    Input(ids.EXPLORE_LINKED_POLL, "n_intervals"),
    prevent_initial_call=True,
)
def linked_wait(_n: int | None) -> tuple:
    """While the page waits for the denoised protein: once it is cached, the wait store
    changes (the linked view redraws on denoised values) and the polling stops."""
    try:
        service, pair = active()
    except NotReady:
        return no_update, no_update
    if waiting(service, pair):
        return no_update, no_update
    return {"waiting": False}, True


@callback(
    *_cells.tooltip_io(ids.EXPLORE_UMAP),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    State(ids.EXPLORE_DECODE.ready, "data"),
    prevent_initial_call=True,
)
def umap_tooltip(
    hover: Any, feature: str | None, layer: str | None, decoded: dict | None = None
) -> tuple:
    """The hovered cell of the main view: name, type, batch and the page's colouring."""
    return _cells.tooltip(hover, _decode.decoded_spec(feature, layer, decoded))


@callback(
    *_cells.tooltip_io(ids.EXPLORE_LINKED),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    State(ids.EXPLORE_DECODE.ready, "data"),
    *sh.values_of(ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_COLOR, ids.EXPLORE_LINKED_LAYER),
    *sh.values_of(ids.EXPLORE_LINKED_A, ids.EXPLORE_LINKED_B),
    prevent_initial_call=True,
)
def linked_tooltip(
    hover: Any,
    feature: str | None,
    layer: str | None,
    decoded: dict | None = None,
    kind: str | None = None,
    own_color: str | None = None,
    linked_layer: str | None = None,
    a: str | None = None,
    b: str | None = None,
) -> tuple:
    """The hovered cell of the linked view: name, type, batch and what that view is
    coloured by (the page's colouring, an embedding's own, or a blend's two values)."""
    if kind == "blend":
        return _cells.tooltip(hover, blend=(a, b, linked_layer))
    if _linked.follows_page(kind, own_color):
        return _cells.tooltip(hover, _decode.decoded_spec(feature, layer, decoded))
    return _cells.tooltip(hover, _linked.own_spec(own_color, linked_layer))


@callback(
    Output(ids.EXPLORE_LINKED_Y, "disabled"),
    Output(ids.EXPLORE_LINKED_LAYER, "className"),
    Input(ids.EXPLORE_LINKED_KIND, "value"),
)
def linked_controls(kind: str) -> tuple[bool, str]:
    """The y protein and value switch only apply to protein-vs-protein."""
    hidden = kind == "raw_denoised"
    return hidden, "segmented is-hidden" if hidden else "segmented"


# --------------------------------------------------------------------------- colour
@callback(
    *sh.recolor_io([ids.EXPLORE_UMAP, ids.EXPLORE_LINKED], ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    Input(ids.EXPLORE_DECODE.ready, "data"),
    *sh.props_of(State, "value", ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_COLOR),
    State(ids.EXPLORE_LAYOUT.ready, "data"),
    prevent_initial_call=True,
)
def recolor(
    feature: str | None,
    layer: str | None,
    color_state: dict | None,
    decoded: dict | None = None,
    linked_kind: str | None = None,
    linked_color: str | None = None,
    layout: dict | None = None,
) -> tuple:
    """Recolour both views by a new choice (or a finished "Decode in" job): a marker
    ``Patch`` each, nothing else (none for a linked view with colours of its own: a blend,
    an embedding coloured by another feature)."""
    batch = _decode.decoded_batch(decoded)
    spec, options, new_layer = sh.color_choice(feature, layer, color_state, batch)
    if spec is None:  # the shared colouring already, e.g. the controls just mounted
        return no_update, no_update, no_update, options, new_layer
    service, pair = active()
    key = shown_layout(service, pair, layout)
    patch, linked = _cells.recolor_patches(service, pair, spec, layout=key)
    if not _linked.follows_page(linked_kind, linked_color):
        linked = no_update
    return patch, linked, spec.to_state(), options, new_layer


@callback(*sh.search_io(ids.EXPLORE_COLOR), prevent_initial_call=True)
def search_colors(search: str | None, value: str | None) -> Any:
    """Ranked matches among annotations, genes and proteins (prefix first)."""
    return sh.feature_search(search, value)


# ------------------------------------------------------------------------ selection
for _graph in (ids.EXPLORE_UMAP, ids.EXPLORE_LINKED):
    clientside_callback(
        ClientsideFunction(namespace="tve", function_name="selectionFromEvent"),
        Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
        Input(_graph, "selectedData"),
        State(_graph, "id"),
        State(ids.MODEL_VERSION_STORE, "data"),
        prevent_initial_call=True,
    )


@callback(
    Output(ids.EXPLORE_UMAP, "figure", allow_duplicate=True),
    Output(ids.EXPLORE_LINKED, "figure", allow_duplicate=True),
    Input(ids.SELECTION_STORE, "data"),
    prevent_initial_call=True,
)
def highlight(selection: dict | None) -> tuple:
    """Highlight the selected cells in both views (``selectedpoints`` patches); the view
    the lasso was not drawn in also drops any old lasso outline."""
    service, pair = active()
    cells = valid_cells(selection, service.dataset(pair).n_cells)
    source = (selection or {}).get("source")
    shown = shown_cells(service, pair)
    return (
        _cells.selection_patch(cells, clear_outline=source != ids.EXPLORE_UMAP, shown=shown),
        _cells.selection_patch(cells, clear_outline=source != ids.EXPLORE_LINKED, shown=shown),
    )


@callback(
    Output(ids.EXPLORE_LEGEND, "children"),
    *sh.props_of(Input, "value", ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    Input(ids.SELECTION_STORE, "data"),
    Input(TYPE_NAMES_STORE, "data"),
    Input(ids.EXPLORE_DECODE.ready, "data"),
    prevent_initial_call=True,
)
def render_legend(
    feature: str | None,
    layer: str | None,
    selection: dict | None,
    _names: dict | None = None,
    decoded: dict | None = None,
) -> Any:
    """The colouring's categories with their cell counts (the selected one marked), under
    the colouring's note (e.g. that its values are decoded as if in another batch)."""
    service, pair = active()
    spec = _decode.decoded_spec(feature, layer, decoded)
    return legend_and_note(service, pair, spec, selection)


def legend_and_note(service: Any, pair: Any, spec: ColorSpec, selection: dict | None) -> Any:
    """Under the UMAP: the colouring's note line (where a protein is imputed, that a
    minified file has no counts), if any, then its category legend."""
    note = color_note(service, pair, spec)
    legend = _cells.color_legend(service, pair, spec, selection)
    return [components.color_note(note), legend] if note else legend


@callback(
    Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
    Input({"type": ids.LEGEND_ITEM, "feature": ALL, "value": ALL}, "n_clicks"),
    State(ids.SELECTION_STORE, "data"),  # app-wide: this fires as the page unmounts too
    prevent_initial_call=True,
)
def select_from_legend(clicks: list[int | None], selection: dict | None) -> Any:
    """A click on a legend entry selects every cell of that category (cellxgene's habit);
    a click on the entry already selected clears the selection. The entry's id names the
    colouring and the category."""
    trigger = sh.clicked_item(clicks)
    if trigger is None:
        return no_update
    feature, value = str(trigger.get("feature")), str(trigger.get("value"))
    group = (selection or {}).get("group") or {}
    if group.get("feature") == feature and group.get("value") == value:
        return {"cells": [], "source": "clear"}
    service, pair = active()
    return group_selection(service, pair, ColorSpec.from_state({"feature": feature}), value)


@callback(
    Output(ids.EXPLORE_SELECTION_INFO, "children"),
    Input(ids.SELECTION_STORE, "data"),
    Input(TYPE_NAMES_STORE, "data"),
)
def selection_info(selection: dict | None, _names: dict | None = None) -> Any:
    """How many cells are selected and which cell types they are."""
    try:
        service, pair = active()
    except NotReady:
        return ""
    n = service.dataset(pair).n_cells
    cells = valid_cells(selection, n)
    if not cells:
        return html.Span(
            "No cells selected. Use the lasso or box tool in either view.", className="muted"
        )
    parts = ", ".join(f"{t} ({c:,})" for t, c in main_types(service, pair, cells))
    return [
        html.B(f"{len(cells):,} cells selected"),
        html.Span(f" ({100 * len(cells) / n:.1f}% of {n:,}). Mostly: {parts}.", className="muted"),
    ]


@callback(
    Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
    Input(ids.EXPLORE_CLEAR_SELECTION, "n_clicks"),
    prevent_initial_call=True,
)
def clear_selection(n_clicks: int | None) -> Any:
    """Forget the selection (all cells shown at full opacity again)."""
    return {"cells": [], "source": "clear"} if n_clicks else no_update


@callback(
    Output(ids.SAVED_SELECTIONS_STORE, "data"),
    Output(ids.EXPLORE_SELECTION_NAME, "value"),
    Output(ids.EXPLORE_DE_STATUS, "children", allow_duplicate=True),
    Input(ids.EXPLORE_SAVE_SELECTION, "n_clicks"),
    State(ids.EXPLORE_SELECTION_NAME, "value"),
    State(ids.SELECTION_STORE, "data"),
    State(ids.SAVED_SELECTIONS_STORE, "data"),
    prevent_initial_call=True,
)
def save_selection(
    n_clicks: int | None, name: str | None, selection: dict | None, saved: dict | None
) -> tuple:
    """Keep the current selection under a name (browser-local, per dataset)."""
    if not n_clicks:
        return no_update, no_update, no_update
    service, pair = active()
    n = service.dataset(pair).n_cells
    cells = valid_cells(selection, n)
    if not cells:
        msg = "Select some cells first (lasso or box tool), then save them."
        return no_update, no_update, components.alert(msg, kind="warning")
    saved = dict(saved or {})
    mine = dict(saved.get(pair.dataset.id) or {})
    label = (name or "").strip() or f"selection {len(mine) + 1}"
    mine[label] = saved_entry(selection, cells, n)  # a region on a subsampled view: its shape
    saved[pair.dataset.id] = mine
    note = components.alert(f"Saved “{label}” ({len(cells):,} cells).", kind="success")
    return saved, "", note


@callback(
    Output(ids.EXPLORE_SAVED_LIST, "children"),
    Input(ids.SAVED_SELECTIONS_STORE, "data"),
)
def saved_list(saved: dict | None) -> Any:
    """The saved selections of this dataset as chips (click: select; ×: delete)."""
    try:
        _, pair = active()
    except NotReady:
        return []
    mine = (saved or {}).get(pair.dataset.id) or {}
    if not mine:
        return html.Span("No saved selections yet.", className="muted small")
    return [
        html.Span(
            [
                html.Button(
                    f"{name} · {item.get('n', 0):,}",
                    id={"type": SAVED_CHIP, "name": name},
                    className="chip",
                    title="Select these cells",
                ),
                html.Button(
                    "×",
                    id={"type": SAVED_DELETE, "name": name},
                    className="chip-delete",
                    title=f"Delete “{name}”",
                ),
            ],
            className="chip-group",
        )
        for name, item in mine.items()
    ]


def _chip_io(store: str, button: str) -> list[Any]:
    """The wiring of a saved selection's chip ``button``: ``store`` from the clicks (and the
    saved selections)."""
    clicks = Input({"type": button, "name": ALL}, "n_clicks")
    return [*sh.shared_outputs((store, "data")), clicks, State(ids.SAVED_SELECTIONS_STORE, "data")]


@callback(*_chip_io(ids.SELECTION_STORE, SAVED_CHIP), prevent_initial_call=True)
def select_saved(clicks: list[int | None], saved: dict | None) -> Any:
    """Make a saved selection the current one."""
    if (trigger := sh.clicked_item(clicks)) is None:
        return no_update
    return saved_selection(*active(), trigger["name"], saved) or no_update


@callback(*_chip_io(ids.SAVED_SELECTIONS_STORE, SAVED_DELETE), prevent_initial_call=True)
def delete_saved(clicks: list[int | None], saved: dict | None) -> Any:
    """Forget a saved selection."""
    trigger = sh.clicked_item(clicks)
    if trigger is None:
        return no_update
    _, pair = active()
    saved = dict(saved or {})
    mine = dict(saved.get(pair.dataset.id) or {})
    mine.pop(trigger["name"], None)
    saved[pair.dataset.id] = mine
    return saved


# ---------------------------------------------------------------------- cell types
_RENAME_OUTPUTS = (
    Output(ids.EXPLORE_UMAP, "figure", allow_duplicate=True),
    Output(ids.EXPLORE_LINKED, "figure", allow_duplicate=True),
    Output(RENAME_TYPE, "options"),
    Output(RENAME_NAME, "value"),
    Output(RENAME_STATUS, "children"),
    Output(TYPE_NAMES_STORE, "data"),
)


def _after_rename(
    feature: str | None,
    layer: str | None,
    note: str,
    linked: tuple = (None, None),
    layout: dict | None = None,
) -> tuple:
    """Both views patched to the new names (legend, on-data labels; a linked view with
    colours of its own, ``linked`` = its kind and colouring, is left as it is: the hover
    tooltips read the names when shown; the main view's labels where its ``layout``
    store puts the cells), the rename dropdown, a cleared name box, a one-line note and
    the names store."""
    service, pair = active()
    spec = ColorSpec.from_state({"feature": feature, "layer": layer})
    key = shown_layout(service, pair, layout)
    umap, linked_patch = _cells.recolor_patches(service, pair, spec, layout=key)
    if not _linked.follows_page(*linked):
        linked_patch = no_update
    return (
        umap,
        linked_patch,
        type_options(service, pair),
        "",
        components.alert(note, kind="success"),
        service.cell_type_names(pair),
    )


@callback(
    *_RENAME_OUTPUTS,
    Input(RENAME_APPLY, "n_clicks"),
    *sh.values_of(RENAME_TYPE, RENAME_NAME, ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    *sh.values_of(ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_COLOR),
    State(ids.EXPLORE_LAYOUT.ready, "data"),
    prevent_initial_call=True,
)
def rename_type(
    n_clicks: int | None,
    type_id: str | None,
    name: str | None,
    feature: str | None,
    layer: str | None,
    linked_kind: str | None = None,
    linked_color: str | None = None,
    layout: dict | None = None,
) -> tuple:
    """Show a cell type under a new name everywhere (kept for this dataset and model)."""
    if not n_clicks:
        return (no_update,) * 6
    if not type_id:
        msg = "Pick the cell type to rename first."
        return (*(no_update,) * 4, components.alert(msg, kind="warning"), no_update)
    service, pair = active()
    old = service.cell_type_names(pair).get(type_id, type_id)
    try:
        names = service.rename_cell_type(pair, type_id, name or "")
    except BackendError as err:
        return (*(no_update,) * 4, components.alert(str(err), kind="warning"), no_update)
    note = f"“{old}” is now “{names[type_id]}”."
    return _after_rename(feature, layer, note, (linked_kind, linked_color), layout)


@callback(
    *_RENAME_OUTPUTS,
    Input(RENAME_RESET, "n_clicks"),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    *sh.values_of(ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_COLOR),
    State(ids.EXPLORE_LAYOUT.ready, "data"),
    prevent_initial_call=True,
)
def reset_type_names(
    n_clicks: int | None,
    feature: str | None,
    layer: str | None,
    linked_kind: str | None = None,
    linked_color: str | None = None,
    layout: dict | None = None,
) -> tuple:
    """Every cell type under its automatic name again."""
    note = "Cell types show their automatic names again."
    step = _names_step("reset_cell_type_names", note)
    return step(n_clicks, feature, layer, (linked_kind, linked_color), layout)


@callback(
    *_RENAME_OUTPUTS,
    Input(RENAME_UNDO, "n_clicks"),
    *sh.values_of(ids.EXPLORE_COLOR, ids.EXPLORE_LAYER),
    *sh.values_of(ids.EXPLORE_LINKED_KIND, ids.EXPLORE_LINKED_COLOR),
    State(ids.EXPLORE_LAYOUT.ready, "data"),
    prevent_initial_call=True,
)
def undo_type_name(
    n_clicks: int | None,
    feature: str | None,
    layer: str | None,
    linked_kind: str | None = None,
    linked_color: str | None = None,
    layout: dict | None = None,
) -> tuple:
    """Step back over the last rename or reset of the cell types."""
    note = "Undone: the cell types show the names they had before."
    step = _names_step("undo_cell_type_name", note)
    return step(n_clicks, feature, layer, (linked_kind, linked_color), layout)


def _names_step(method: str, note: str) -> Any:
    """A button that changes every cell type's name at once (``service.<method>(pair)``:
    reset, undo): the rename outputs with ``note``, or its refusal in one line."""

    def run(
        n_clicks: int | None, feature: Any, layer: Any, linked: tuple, layout: Any = None
    ) -> tuple:
        if not n_clicks:
            return (no_update,) * 6
        service, pair = active()
        try:
            getattr(service, method)(pair)
        except BackendError as err:
            return (*(no_update,) * 4, components.alert(str(err), kind="warning"), no_update)
        return _after_rename(feature, layer, note, linked, layout)

    return run


# --------------------------------------------------------------------------- compare
@callback(
    Output(ids.EXPLORE_COMPARE_A, "options"),
    Output(ids.EXPLORE_COMPARE_A, "value"),
    Output(ids.EXPLORE_COMPARE_B, "options"),
    Output(ids.EXPLORE_COMPARE_B, "value"),
    *sh.data_of(ids.SELECTION_STORE, ids.SAVED_SELECTIONS_STORE),
    *sh.values_of(ids.EXPLORE_COMPARE_A, ids.EXPLORE_COMPARE_B),
    Input(TYPE_NAMES_STORE, "data"),
)
def update_compare_options(
    selection: dict | None,
    saved: dict | None,
    a: str | None,
    b: str | None,
    _names: dict | None = None,
) -> tuple:
    """Keep the compare choices in step with the selection, the saved selections and the
    cell types' names."""
    try:
        first, second = compare_choices(*active(), selection, saved)
    except NotReady:
        return [], None, [], None
    values_a = [o["value"] for o in first]
    values_b = [o["value"] for o in second]
    if "__current__" in values_a and sh.triggered() == ids.SELECTION_STORE:
        a = "__current__"
    a = a if a in values_a else (values_a[0] if values_a else None)
    b = b if b in values_b and b != a else "__rest__"
    return first, a, second, b


@callback(
    *_jobs.start_outputs(ids.EXPLORE_DE_JOB, ids.EXPLORE_DE_READY_STORE),
    Input(ids.EXPLORE_COMPARE, "n_clicks"),
    *sh.values_of(ids.EXPLORE_COMPARE_A, ids.EXPLORE_COMPARE_B),
    State(ids.SELECTION_STORE, "data"),
    State(ids.SAVED_SELECTIONS_STORE, "data"),
    prevent_initial_call=True,
)
def start_compare(
    n_clicks: int | None, a: str | None, b: str | None, selection: dict | None, saved: dict | None
) -> tuple:
    """Start the Bayesian DE of group A vs group B (or the rest) as a backend job:
    ``(job store, poll off, ready, progress, Cancel off)``; the table fills in when done."""
    if not n_clicks:
        return (no_update,) * 5
    try:
        service, pair = active()
        cells_a, cells_b, name_a, name_b = compare_groups(service, pair, a, b, selection, saved)
    except BackendError as err:
        return _jobs.started(None, components.refused_view(err))
    store, view = _jobs.start(
        lambda: submit_compare(service, pair, cells_a, cells_b, name_a, name_b),
        COMPARE_LABEL,
        a=name_a,
        b=name_b,
    )
    return _jobs.started(store, view)


poll_compare, cancel_compare = _jobs.panel_callbacks(
    ids.EXPLORE_DE_JOB, ready=ids.EXPLORE_DE_READY_STORE, label=COMPARE_LABEL
)


@callback(
    Output("explore-de-wrap", "children"),
    Output(ids.EXPLORE_DE_STATUS, "children"),
    Output(ids.EXPLORE_DE_EXPORT, "hidden"),
    Input(ids.EXPLORE_DE_READY_STORE, "data"),
    prevent_initial_call=True,
)
def show_compare(ready: dict | None) -> tuple:
    """The finished comparison as a table (sorted by Bayes factor) and its status line."""
    if not isinstance(ready, dict) or not ready.get("job"):
        return no_update, no_update, no_update
    try:
        service, pair = active()
        de = service.job_result(str(ready["job"]), timeout=0)
        table = de_display_table(de, catalog=feature_catalog(service, pair))
    except BackendError as err:
        return no_update, components.alert(str(err), kind="warning"), no_update
    n_de = int(table["is_de"].sum())
    status = html.Span(
        [
            html.B(f"{ready.get('a')} vs {ready.get('b')}: "),
            f"{n_de:,} of {len(table):,} features differentially expressed (FDR 5%). "
            "Sorted by Bayes factor; click a row to colour the cells by it.",
        ]
    )
    return (
        components.de_grid(ids.EXPLORE_DE_TABLE, de_rows(table), height=380),
        status,
        False,
    )


@callback(
    Output(ids.EXPLORE_COLOR, "value", allow_duplicate=True),
    Output(ids.EXPLORE_COLOR, "options", allow_duplicate=True),
    Output(ids.EXPLORE_LAYER, "value", allow_duplicate=True),
    Input(ids.EXPLORE_DE_TABLE, "cellClicked"),
    State(ids.EXPLORE_COLOR, "options"),
    prevent_initial_call=True,
)
def color_by_de_row(cell: dict | None, options: list | None) -> tuple:
    """Clicking a DE row colours the cells by that feature (denoised values)."""
    key = (cell or {}).get("rowId")
    if not key or ":" not in str(key):
        return no_update, no_update, no_update
    service, pair = active()
    catalog = feature_catalog(service, pair)
    return key, with_current(list(options or []), catalog, key), "denoised"


export_de = sh.csv_export(ids.EXPLORE_DE_TABLE, ids.EXPLORE_DE_EXPORT)


clientside_callback(
    ClientsideFunction(namespace="tve", function_name="mainViewCame"),
    Output(ids.EXPLORE_LINKED_GATE, "data"),
    Input(ids.EXPLORE_UMAP, "figure"),
    State(ids.EXPLORE_LINKED_GATE, "data"),
)

clientside_callback(
    ClientsideFunction(namespace="tve", function_name="currentUrl"),
    Output(ids.EXPLORE_SHARE, "content"),
    Input(ids.EXPLORE_SHARE, "n_clicks"),
    prevent_initial_call=True,
)

__all__ = [
    "build_linked",
    "build_umap",
    "figures",
    "highlight",
    "recolor",
    "rename_type",
    "reset_type_names",
    "show_compare",
    "start_compare",
]
