"""Gene-protein concordance: does each measured protein follow its gene's RNA?

For every protein whose gene the model has (an alias table: CD8a → CD8A, CD56 → NCAM1, ...),
a table of the model's own gene-protein correlation (scvi-tools'
``get_feature_correlation_matrix`` over posterior samples) with the discordant cell types,
a heatmap of the per-type correlation of denoised RNA and protein (discordant types ringed),
and the cells of one pair. Computed in a background job the first time (progress, Cancel),
then read from the results cache.
"""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _jobs
from dashboard.pages import _shared as sh
from dashboard.views.concordance import (
    check_pair,
    default_pair,
    grid_rows,
    heatmap_data,
    pair_label,
    pair_options,
    scatter_frame,
    submit_concordance,
)
from dashboard.views.errors import BackendError
from dashboard.views.state import active

sh.register_page(__name__, "/concordance", "Concordance")

#: How the job panel names the job ("Concordance failed: ...").
LABEL = "Concordance"


def concordance_grid(grid_id: str) -> Any:
    """The pairs' table: sortable, filterable, CSV export, one row per pair (id = key)."""
    num = {"filter": "agNumberColumnFilter", "type": "numericColumn"}
    fmt = {"function": "params.value == null ? '–' : d3.format('.3f')(params.value)"}
    columns = [
        {"field": "protein", "headerName": "Protein", "pinned": "left", "minWidth": 120},
        {"field": "gene", "headerName": "Gene", "minWidth": 100},
        {"field": "how", "headerName": "Matched by", "maxWidth": 130},
        {
            "field": "model_correlation",
            "headerName": "Model correlation",
            "headerTooltip": "Spearman r over the model's denoised posterior samples",
            **num,
            "valueFormatter": fmt,
        },
        {
            "field": "pearson_all",
            "headerName": "Pearson r (all cells)",
            **num,
            "valueFormatter": fmt,
        },
        {
            "field": "median_type_correlation",
            "headerName": "Median r per type",
            **num,
            "valueFormatter": fmt,
        },
        {"field": "n_flagged", "headerName": "Discordant types", **num, "maxWidth": 150},
        {"field": "flagged", "headerName": "Flagged types", "minWidth": 260, "flex": 2},
    ]
    return dag.AgGrid(
        id=grid_id,
        rowData=[],
        columnDefs=columns,
        defaultColDef={"sortable": True, "filter": True, "resizable": True, "minWidth": 90},
        getRowId="params.data.key",
        columnSize="responsiveSizeToFit",
        dashGridOptions={
            "rowSelection": {
                "mode": "singleRow",
                "checkboxes": False,
                "enableClickSelection": True,
            },
            "animateRows": False,
            "tooltipShowDelay": 300,
            "domLayout": "autoHeight",
        },
        csvExportParams={"fileName": "gene-protein-concordance.csv", "allColumns": True},
        style={"width": "100%"},
        className="ag-theme-quartz concordance-grid",
    )


@sh.model_page("Concordance")
def layout(model: Any = None, **_: Any) -> html.Div:
    """The page: the job panel, the pairs' table, the heatmap and one pair's cells."""
    active()  # no model: the waiting page
    return html.Div(
        [
            components.page_header(
                "Gene–protein concordance",
                "Does each measured protein follow the RNA of its gene? Per cell type in the "
                "denoised values, and over the model's posterior samples.",
            ),
            components.card(
                "Protein–gene pairs",
                [
                    components.job_panel(ids.CONCORDANCE_JOB, retry="Compute again", compact=True),
                    html.Div(id=ids.CONCORDANCE_NOTES, className="muted concordance-notes"),
                    concordance_grid(ids.CONCORDANCE_GRID),
                ],
                actions=html.Button(
                    "Export table (CSV)", id=ids.CONCORDANCE_EXPORT, className="btn btn-secondary"
                ),
                subtitle="Click a row to show its cells below.",
            ),
            html.Div(
                [
                    components.graph_card(
                        "Correlation per cell type",
                        ids.CONCORDANCE_HEATMAP,
                        height=520,
                        subtitle="Pearson r of log1p denoised RNA and protein across each "
                        "type's cells; ringed: discordant (hover says which way).",
                    ),
                    components.graph_card(
                        "Denoised RNA vs protein",
                        ids.CONCORDANCE_SCATTER,
                        height=520,
                        subtitle="log1p denoised values, coloured by cell type.",
                        controls=dcc.Dropdown(
                            id=ids.CONCORDANCE_PAIR,
                            options=[],
                            value=None,
                            clearable=False,
                            placeholder="Pick a protein–gene pair…",
                        ),
                    ),
                ],
                className="grid-2",
            ),
            dcc.Store(id=ids.CONCORDANCE_READY_STORE),
        ],
        className="page-concordance",
    )


@callback(
    *_jobs.start_outputs(ids.CONCORDANCE_JOB, ids.CONCORDANCE_READY_STORE, retry=True),
    Input(ids.CONCORDANCE_JOB.retry, "n_clicks"),
)
def start_concordance(_n: int | None) -> tuple:
    """Ask for the concordance: a cached result renders at once, else a job runs with
    progress: ``(job store, poll off, ready, progress, Cancel off, Compute again hidden)``."""
    try:
        service, pair = active()
    except BackendError as err:
        return _jobs.started(None, components.refused_view(err), retry=True)
    store, view = _jobs.start(lambda: submit_concordance(service, pair), LABEL)
    return _jobs.started(store, view, retry=True)


poll_concordance, cancel_concordance = _jobs.panel_callbacks(
    ids.CONCORDANCE_JOB, ready=ids.CONCORDANCE_READY_STORE, label=LABEL, retry=True
)


@callback(
    Output(ids.CONCORDANCE_GRID, "rowData"),
    Output(ids.CONCORDANCE_HEATMAP, "figure"),
    Output(ids.CONCORDANCE_PAIR, "options"),
    Output(ids.CONCORDANCE_PAIR, "value"),
    Output(ids.CONCORDANCE_NOTES, "children"),
    Input(ids.CONCORDANCE_READY_STORE, "data"),
    prevent_initial_call=True,
)
def render_concordance(ready: dict | None) -> tuple:
    """The table, the heatmap and the pair choice, once the job has cached the result."""
    if not ready:
        return (no_update,) * 5
    try:
        service, pair = active()
        rows = grid_rows(service, pair)
        heat = heatmap_data(service, pair)
        options = pair_options(service, pair)
        notes = service.gene_protein_concordance(pair).notes
    except BackendError as err:
        return [], figures.empty_figure(str(err)), [], None, str(err)
    fig = figures.concordance_heatmap_figure(
        heat.z, rows=heat.rows, columns=heat.columns, flags=heat.flags, n_cells=heat.n_cells
    )
    lines = [html.P(notes.get("correlation", "")), html.P(notes.get("flag", ""))]
    if not rows:
        lines.insert(0, html.P("No protein of this model has a gene among its genes."))
    return rows, fig, options, default_pair(options), lines


@callback(
    Output(ids.CONCORDANCE_PAIR, "value", allow_duplicate=True),
    Input(ids.CONCORDANCE_GRID, "cellClicked"),
    prevent_initial_call=True,
)
def on_row_click(cell: dict | None) -> Any:
    """A clicked row shows its pair's cells (an unknown row id changes nothing)."""
    key = (cell or {}).get("rowId")
    if not key:
        return no_update
    try:
        service, pair = active()
        check_pair(service, pair, key)
    except BackendError:
        return no_update
    return str(key)


@callback(
    Output(ids.CONCORDANCE_SCATTER, "figure"),
    Input(ids.CONCORDANCE_PAIR, "value"),
)
@sh.figure_or_error
def update_scatter(key: str | None) -> Any:
    """Denoised RNA vs protein of the chosen pair's cells, by cell type."""
    if not key:
        return figures.empty_figure("Pick a protein–gene pair")
    service, pair = active()
    frame, order, (gene, protein) = scatter_frame(service, pair, key)
    p, g = check_pair(service, pair, key)
    return figures.concordance_scatter_figure(
        frame,
        group_order=order,
        x_title=f"{gene} RNA (log1p denoised, per 10k)",
        y_title=f"{protein} (log1p denoised)",
        title=pair_label(service, pair, p, g),
    )


export_table = sh.csv_export(ids.CONCORDANCE_GRID, ids.CONCORDANCE_EXPORT)
