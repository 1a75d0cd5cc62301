"""The Metrics page's "Integration (scib-metrics)" section: a Run button and job panel for
the integration scorecard, then its table (one row per embedding: the TotalVI latent and
PCA of the log-normalised RNA) and bars, from the results cache.

The Metrics page calls :func:`register` once at module level (Dash runs page modules for
each app; this module, with its leading underscore, registers nothing by itself) and puts
:func:`section` in its layout. Once the scorecard is computed, Explore offers the per-cell
batch mixing as a colouring (:mod:`dashboard.views.integration`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dash_ag_grid as dag
from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _jobs
from dashboard.views.errors import BackendError
from dashboard.views.integration import (
    MIXING_TITLE,
    grid_columns,
    grid_rows,
    integration_scores,
    integration_unavailable,
    scorecard_note,
    submit_integration,
)
from dashboard.views.state import active

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.views.integration import IntegrationScores

TITLE = "Integration (scib-metrics)"
#: How the job panel names the job ("Integration scorecard failed: ...").
LABEL = "Integration scorecard"
SUBTITLE = (
    "How well the TotalVI latent mixes batches while keeping cell types apart, beside PCA "
    "of the log-normalised RNA: scib-metrics' bio-conservation and batch-correction metrics "
    "(a background job; a minute or more on a few thousand cells)."
)


def section(service: AnalysisService, pair: Pair) -> Any:
    """The section: Run and the job panel, then the scorecard when it is in the cache
    (a line saying why instead when the data has one batch or no counts)."""
    why = integration_unavailable(service, pair)
    run = html.Button(
        "Compute scorecard",
        id=ids.METRICS_INTEGRATION_RUN,
        className="btn btn-primary",
        disabled=bool(why),
    )
    scores = None if why else integration_scores(service, pair)
    body = (
        html.P(why[:1].upper() + why[1:] + ".", className="muted integration-unavailable")
        if why
        else scorecard_block(scores)
        if scores is not None
        else None
    )
    return components.card(
        TITLE,
        [
            components.job_panel(ids.METRICS_INTEGRATION_JOB, controls=[run], compact=True),
            dcc.Loading(
                html.Div(body, id=ids.METRICS_INTEGRATION_CONTENT),
                delay_show=300,
                type="dot",
            ),
            dcc.Store(id=ids.METRICS_INTEGRATION_READY),
        ],
        subtitle=SUBTITLE,
        class_name="integration-card",
    )


def scorecard_block(scores: IntegrationScores) -> list[Any]:
    """The scorecard's grid (one row per embedding), its note and its bars."""
    grid = dag.AgGrid(
        id=ids.METRICS_INTEGRATION_GRID,
        rowData=grid_rows(scores),
        columnDefs=grid_columns(scores),
        defaultColDef={"sortable": True, "resizable": True, "minWidth": 90},
        getRowId="params.data.key",
        columnSize="autoSize",
        # a dozen columns: all in the page (no column virtualisation), two rows
        dashGridOptions={
            "animateRows": False,
            "domLayout": "autoHeight",
            "suppressColumnVirtualisation": True,
        },
        csvExportParams={"fileName": "integration-scorecard.csv", "allColumns": True},
        style={"width": "100%"},
        className="ag-theme-quartz integration-grid",
    )
    groups = {str(c): str(t) for c, t in scores.metric_types.items()}
    return [
        grid,
        html.P(scorecard_note(scores), className="muted integration-note"),
        html.P(
            f"Explore can now colour the cells by “{MIXING_TITLE}” (per-cell iLISI of the "
            "latent).",
            className="muted integration-mixing-note",
        ),
        components.graph(
            ids.METRICS_INTEGRATION_PLOT,
            figure=figures.scorecard_figure(scores.table, groups=groups),
            height=380,
            loading=False,
        ),
    ]


def register() -> None:
    """Register the section's callbacks (start, poll, Cancel, render) for this app."""

    @callback(
        *_jobs.start_outputs(ids.METRICS_INTEGRATION_JOB, ids.METRICS_INTEGRATION_READY),
        Input(ids.METRICS_INTEGRATION_RUN, "n_clicks"),
        prevent_initial_call=True,
    )
    def start_integration(n_clicks: int | None) -> tuple:
        """Run the scorecard as a job (a cached one shows at once): ``(job store, poll off,
        ready, progress, Cancel off)``."""
        if not n_clicks:
            return (no_update,) * 5
        try:
            service, pair = active()
        except BackendError as err:
            return _jobs.started(None, components.refused_view(err))
        store, view = _jobs.start(lambda: submit_integration(service, pair), LABEL)
        return _jobs.started(store, view)

    _jobs.panel_callbacks(
        ids.METRICS_INTEGRATION_JOB, ready=ids.METRICS_INTEGRATION_READY, label=LABEL
    )

    @callback(
        Output(ids.METRICS_INTEGRATION_CONTENT, "children"),
        Input(ids.METRICS_INTEGRATION_READY, "data"),
        prevent_initial_call=True,
    )
    def render_integration(ready: dict | None) -> Any:
        """The scorecard once its job has put it in the cache."""
        if not ready:
            return no_update
        try:
            service, pair = active()
            scores = integration_scores(service, pair)
        except BackendError as err:
            return components.alert(str(err), kind="warning")
        if scores is None:
            return components.alert("The scorecard is not in the cache: compute it again.")
        return scorecard_block(scores)
