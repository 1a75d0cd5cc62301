"""Differential expression: a cell type (vs all other cells) or a saved selection (vs the
rest); a sortable, filterable, exportable table of genes and proteins and a volcano plot
linked to it (click a point or a row: the cells are coloured by that feature here and
wherever the shared colour choice is used)."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _cells, _jobs
from dashboard.pages import _shared as sh
from dashboard.views import de as dv
from dashboard.views.cells import cell_type_choices, group_name
from dashboard.views.colours import ColorSpec, feature_of
from dashboard.views.errors import BackendError, NotReady
from dashboard.views.features import feature_catalog
from dashboard.views.label_sets import compare_entries
from dashboard.views.links import initial_color, link_state
from dashboard.views.state import active
from dashboard.views.values import is_minified

sh.register_page(__name__, "/de", "Differential expression")

MODALITIES = [
    {"label": "Genes and proteins", "value": "all"},
    {"label": "Genes", "value": "rna"},
    {"label": "Proteins", "value": "protein"},
]
#: How the job panel names the DE job ("DE failed: ...").
LABEL = "DE"
FDR_CHOICES = [0.01, 0.05, 0.1, 0.2]
SAMPLE_CHOICES = [1000, 5000, 20000]
CORRECTION = [
    {"label": "Own batch", "value": "observed"},
    {"label": "Batch-corrected", "value": "corrected"},
]
DE_NOTE = "de-counts-note"


@sh.model_page("Differential expression")
def layout(color_state: dict | None = None, model: Any = None, **query: Any) -> html.Div:
    """The DE page."""
    service, pair = active()
    feature = feature_of(initial_color(service, pair, query, color_state)[1])
    options = [
        {"label": name, "value": f"type:{t}"} for t, name, _ in cell_type_choices(service, pair)
    ]
    return html.Div(
        [
            components.page_header(
                "Differential expression",
                "totalVI's Bayesian test (change mode) of one group against all other cells, "
                "for genes and proteins together; the table gives each LFC's 95% credible "
                "interval.",
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Group",
                        ids.DE_GROUP,
                        options=options,
                        value=options[0]["value"] if options else None,
                        clearable=False,
                        maxHeight=360,
                        class_name="field-wide",
                    ),
                    components.field(
                        "Show", components.segmented(ids.DE_MODALITY, MODALITIES, "all")
                    ),
                    html.Button(
                        "Export table (CSV)", id=ids.DE_EXPORT, className="btn btn-secondary"
                    ),
                ],
                className="toolbar",
            ),
            _controls(service, pair),
            *(
                [components.color_note(dv.DE_NO_COUNTS_NOTE, note_id=DE_NOTE)]
                if is_minified(service, pair)
                else []
            ),
            components.job_panel(ids.DE_JOB, compact=True),
            html.Div(id=ids.DE_STATUS, className="de-status"),
            html.Div(id=ids.DE_TRUST, className="de-trust"),
            html.Div(
                [
                    components.graph_card(
                        "Volcano plot",
                        ids.DE_VOLCANO,
                        height=470,
                        subtitle="Click a point to colour the cells by it.",
                    ),
                    components.graph_card(
                        "Cells",
                        ids.DE_UMAP,
                        height=470,
                        tooltip=True,
                        subtitle="Coloured by the clicked feature",
                    ),
                ],
                className="grid-2",
            ),
            components.card(
                "Genes and proteins",
                components.de_grid(ids.DE_TABLE, height=520),
                subtitle="Sort and filter any column; click a row to colour the cells. "
                + dv.DE_PROTEIN_SCALE,
            ),
            dcc.Store(id=ids.DE_READY_STORE),
            dcc.Store(id=ids.DE_FEATURE_STORE, data=feature),
            components.page_state_store(link_state(query, service, pair)),
        ],
        className="page-de",
    )


def _controls(service: Any, pair: Any) -> html.Div:
    """The DE controls (scvi-tools' defaults first): preset, δ, FDR target, samples, batch
    correction (offered when the model has more than one batch)."""
    c = dv.de_controls(service, None)
    batches = dv.n_batches(service, pair)
    correction = dcc.RadioItems(
        id=ids.DE_BATCH_CORRECTION,
        options=[{**o, "disabled": o["value"] == "corrected" and batches < 2} for o in CORRECTION],
        value="corrected" if c.batch_correction else "observed",
        inline=True,
        className="segmented",
    )
    return html.Div(
        [
            components.dropdown_field(
                "Preset",
                ids.DE_PRESET,
                options=dv.preset_options(),
                value=dv.preset_of(c),
                placeholder="custom",
                clearable=False,
                class_name="field-wide",
            ),
            components.field(
                "|LFC| threshold δ",
                dcc.Input(
                    id=ids.DE_DELTA,
                    type="number",
                    value=c.delta,
                    min=0,
                    max=5,
                    step=0.05,
                    debounce=True,
                    className="input",
                ),
            ),
            components.dropdown_field(
                "FDR target",
                ids.DE_FDR,
                options=[
                    {"label": f"{v:.3g}", "value": v} for v in sorted({*FDR_CHOICES, c.fdr_target})
                ],
                value=c.fdr_target,
                clearable=False,
            ),
            components.dropdown_field(
                "Posterior samples per group",
                ids.DE_SAMPLES,
                options=[
                    {"label": f"{v:,}", "value": v}
                    for v in sorted({*SAMPLE_CHOICES, c.n_samples_overall})
                ],
                value=c.n_samples_overall,
                clearable=False,
            ),
            components.field(
                "Batches",
                correction,
                hint=None if batches > 1 else "one batch: nothing to correct",
            ),
        ],
        className="toolbar de-controls",
    )


def _chosen(delta: Any, fdr: Any, samples: Any, correction: Any) -> dict[str, Any]:
    """The controls' raw values as the backend checks them (a forged value fails there;
    ``None``, an emptied field, keeps the default)."""
    if correction in {"observed", "corrected"}:
        correction = correction == "corrected"
    raw = {
        "delta": delta,
        "fdr_target": fdr,
        "n_samples_overall": samples,
        "batch_correction": correction,
    }
    return {k: v for k, v in raw.items() if v is not None}


@callback(
    Output(ids.DE_DELTA, "value"),
    Output(ids.DE_FDR, "value"),
    Output(ids.DE_SAMPLES, "value"),
    Output(ids.DE_BATCH_CORRECTION, "value"),
    Input(ids.DE_PRESET, "value"),
    prevent_initial_call=True,
)
def apply_preset(name: str | None) -> tuple:
    """A chosen preset sets the four controls (the DE then runs with them)."""
    if not name:
        return no_update, no_update, no_update, no_update
    try:
        c = dv.preset(name)
    except BackendError:
        return no_update, no_update, no_update, no_update
    return (
        c.delta,
        c.fdr_target,
        c.n_samples_overall,
        ("corrected" if c.batch_correction else "observed"),
    )


@callback(
    Output(ids.DE_PRESET, "value"),
    Input(ids.DE_DELTA, "value"),
    Input(ids.DE_FDR, "value"),
    Input(ids.DE_SAMPLES, "value"),
    Input(ids.DE_BATCH_CORRECTION, "value"),
    prevent_initial_call=True,
)
def show_preset(delta: Any, fdr: Any, samples: Any, correction: Any) -> str | None:
    """The preset the controls now equal (none: custom)."""
    try:
        c = dv.de_controls(active()[0], _chosen(delta, fdr, samples, correction))
    except BackendError:
        return None
    return dv.preset_of(c)


# ---------------------------------------------------------------------------- groups
@callback(
    Output(ids.DE_GROUP, "options"),
    Input(ids.SAVED_SELECTIONS_STORE, "data"),
    State(ids.DE_GROUP, "value"),
)
def group_options(saved: dict | None, value: str | None) -> list[dict[str, str]]:
    """Cell types, then the saved selections of this dataset."""
    try:
        service, pair = active()
    except NotReady:
        return []
    options = [
        {"label": f"{name} ({n:,} cells)", "value": f"type:{t}"}
        for t, name, n in cell_type_choices(service, pair)
    ]
    options += compare_entries(service, pair)  # each category of the user's label sets
    for name, item in ((saved or {}).get(pair.dataset.id) or {}).items():
        options.append(
            {
                "label": f"{name} ({item.get('n', 0):,} cells, saved selection)",
                "value": f"saved:{name}",
            }
        )
    return options


@callback(
    *_jobs.start_outputs(ids.DE_JOB, ids.DE_READY_STORE),
    Input(ids.DE_GROUP, "value"),
    State(ids.SAVED_SELECTIONS_STORE, "data"),
    Input(ids.DE_DELTA, "value"),
    Input(ids.DE_FDR, "value"),
    Input(ids.DE_SAMPLES, "value"),
    Input(ids.DE_BATCH_CORRECTION, "value"),
)
def start_de(
    group: str | None,
    saved: dict | None,
    delta: Any = None,
    fdr: Any = None,
    samples: Any = None,
    correction: Any = None,
) -> tuple:
    """Run the DE of the chosen group with the chosen controls (``None``: the default) as a
    background job; a cached result is shown at once, otherwise the progress bar runs until
    it is ready: ``(job store, poll off, ready, progress, Cancel off)``. A bad control value
    is refused in one line naming it."""
    if not group:
        return _jobs.started(None, components.JobView())
    try:
        controls = dv.de_controls(active()[0], _chosen(delta, fdr, samples, correction))
        labels_key = dv.group_labels_key(*active(), group)
    except BackendError as err:
        return _jobs.started(None, components.refused_view(err))
    store, view = _jobs.start(
        lambda: dv.submit_group(*active(), group, saved, controls, labels_key),
        LABEL,
        group=group,
        controls=controls.to_dict(),
        labels_key=labels_key,
    )
    return _jobs.started(store, view)


poll_de, cancel_de = _jobs.panel_callbacks(ids.DE_JOB, ready=ids.DE_READY_STORE, label=LABEL)


def de_table(ready: dict | None, modality: str, saved: dict | None) -> Any:
    """The DE table of a finished job's group (cache hit) with its controls, filtered by
    modality."""
    service, pair = active()
    group = str((ready or {}).get("group") or "")
    controls = dv.de_controls(service, (ready or {}).get("controls"))
    labels_key = (ready or {}).get("labels_key")
    return dv.group_table(service, pair, group, modality, saved, controls, labels_key)


def _trust(service: Any, pair: Any, group: str) -> Any:
    badge = dv.trust_badge(service, pair, group)
    if badge is None:
        return (
            html.Span(
                "Model trust: compute the model card on the Metrics page to see how well "
                "the model's DE of this type matches the raw counts'.",
                className="trust-badge trust-none",
            )
            if group.startswith("type:")
            else None
        )
    return html.Span(badge["text"], className=f"trust-badge trust-{badge['level']}")


@callback(
    Output(ids.DE_TABLE, "rowData"),
    Output(ids.DE_STATUS, "children"),
    Output(ids.DE_TRUST, "children"),
    Input(ids.DE_READY_STORE, "data"),
    Input(ids.DE_MODALITY, "value"),
    *sh.data_of(ids.SAVED_SELECTIONS_STORE, dep=State),
    prevent_initial_call=True,
)
def render_table(ready: dict | None, modality: str, saved: dict | None) -> tuple:
    """Fill the table with the finished DE of the chosen group."""
    if not ready:
        return no_update, no_update, no_update
    service, pair = active()
    group = str(ready.get("group", ""))
    try:
        table = de_table(ready, modality, saved)
        controls = dv.de_controls(service, ready.get("controls"))
    except BackendError as err:
        return [], components.alert(str(err), kind="warning"), None
    name = group_name(service, pair, group)
    n_de = int(table["is_de"].sum())
    status = html.Span(
        [
            html.B(name),
            f" vs all other cells: {n_de:,} of {len(table):,} features DE at FDR "
            f"{controls.fdr_target:.3g}. ",
            html.Span(
                dv.controls_line(controls, dv.n_batches(service, pair)) + ".",
                className="de-controls-line",
            ),
        ]
    )
    return dv.de_rows(table), status, _trust(service, pair, group)


@callback(
    Output(ids.DE_VOLCANO, "figure"),
    Input(ids.DE_READY_STORE, "data"),
    Input(ids.DE_MODALITY, "value"),
    Input(ids.DE_FEATURE_STORE, "data"),
    *sh.data_of(ids.SAVED_SELECTIONS_STORE, dep=State),
)
@sh.figure_or_error
@sh.empty_until("Computing differential expression…")
def render_volcano(ready: dict, modality: str, feature: str | None, saved: dict | None) -> Any:
    """Volcano plot of the finished DE, with the clicked feature ringed."""
    table = de_table(ready, modality, saved)
    name = group_name(*active(), str(ready.get("group", "")))
    return figures.volcano_figure(table, highlight=feature, title=f"{name} vs rest")


# ----------------------------------------------------------------------- feature click
@callback(
    Output(ids.DE_FEATURE_STORE, "data"),
    *sh.shared_outputs((ids.COLOR_STORE, "data")),
    Input(ids.DE_VOLCANO, "clickData"),
    prevent_initial_call=True,
)
def on_volcano_click(click: dict | None) -> tuple:
    """A clicked volcano point colours the cells by that feature (denoised values)."""
    key = dv.feature_key_from_click(click)
    if key is None:
        return no_update, no_update
    return key, ColorSpec(key, "denoised").to_state()


@callback(
    *sh.shared_outputs((ids.DE_FEATURE_STORE, "data"), (ids.COLOR_STORE, "data")),
    Input(ids.DE_TABLE, "cellClicked"),
    prevent_initial_call=True,
)
def on_row_click(cell: dict | None) -> tuple:
    """A clicked table row colours the cells by that feature."""
    key = (cell or {}).get("rowId")
    if not key or ":" not in str(key):
        return no_update, no_update
    return str(key), ColorSpec(str(key), "denoised").to_state()


@callback(
    Output(ids.DE_UMAP, "figure"),
    Input(ids.DE_UMAP, "id"),
    State(ids.DE_FEATURE_STORE, "data"),
)
@sh.figure_or_error
def build_de_umap(_id: str, feature: str | None) -> Any:
    """The cells, coloured by the feature last clicked (cell type before any click)."""
    service, pair = active()
    spec = ColorSpec(feature, "denoised") if feature else ColorSpec()
    return _cells.umap_figure(service, pair, spec, title=_umap_title(service, pair, spec))


@callback(
    *_cells.tooltip_io(ids.DE_UMAP),
    State(ids.DE_FEATURE_STORE, "data"),
    prevent_initial_call=True,  # hoverData is empty until the pointer is on a cell
)
def de_umap_tooltip(hover: Any, feature: Any) -> tuple:
    """The hovered cell: name, type, batch and the clicked feature's denoised value."""
    spec = ColorSpec.from_state({"feature": feature, "layer": "denoised"}) if feature else None
    return _cells.tooltip(hover, spec or ColorSpec())


def _umap_title(service: Any, pair: Any, spec: ColorSpec) -> str:
    if spec.kind == "obs":
        return "Cell types"
    return feature_catalog(service, pair).label(spec.feature) + " (denoised)"


@callback(
    Output(ids.DE_UMAP, "figure", allow_duplicate=True),
    Input(ids.DE_FEATURE_STORE, "data"),
    prevent_initial_call=True,
)
def recolor_de_umap(feature: str | None) -> Any:
    """Recolour the cells by the clicked feature (a marker patch)."""
    if not feature:
        return no_update
    service, pair = active()
    spec = ColorSpec(feature, "denoised")
    patch = _cells.recolor_patch(service, pair, spec)
    patch["layout"]["title"]["text"] = _umap_title(service, pair, spec)
    return patch


export_table = sh.csv_export(ids.DE_TABLE, ids.DE_EXPORT)
