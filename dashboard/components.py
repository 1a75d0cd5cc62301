"""Small reusable pieces of page layout: cards, graphs with download buttons, alerts,
progress bars, the job panel, tables and the DE grid. Functions returning components (and
:class:`JobView`, what a job panel shows of a job record); no callbacks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

import dash_ag_grid as dag
import numpy as np
import pandas as pd
from dash import dcc, html

from dashboard import ids
from dashboard.figures import empty_figure, graph_config
from dashboard.ids import JobPanel
from dashboard.public_paths import scrub_paths
from dashboard.views.errors import one_line

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobInfo


def card(
    title: str | None,
    children: Any,
    *,
    actions: Any = None,
    class_name: str = "",
    subtitle: str | None = None,
) -> html.Section:
    """A titled panel; ``actions`` go to the right of the title."""
    header = None
    if title is not None or actions is not None:
        header = html.Div(
            [
                html.Div(
                    [html.H3(title or "", className="card-title")]
                    + ([html.P(subtitle, className="card-subtitle")] if subtitle else []),
                ),
                html.Div(actions, className="card-actions") if actions is not None else None,
            ],
            className="card-header",
        )
    return html.Section(
        [header, html.Div(children, className="card-body")], className=f"card {class_name}"
    )


def download_buttons(graph_id: str) -> html.Div:
    """PNG and SVG download buttons for a graph (handled by one clientside callback)."""
    return html.Div(
        [
            html.Button(
                fmt.upper(),
                id={"type": ids.FIG_DOWNLOAD, "graph": graph_id, "format": fmt},
                className="btn btn-ghost btn-xs",
                title=f"Download this figure as {fmt.upper()}",
                n_clicks=0,
            )
            for fmt in ("png", "svg")
        ]
        + [
            html.Span(
                id={"type": ids.FIG_DOWNLOAD_SINK, "graph": graph_id, "format": fmt},
                hidden=True,
            )
            for fmt in ("png", "svg")
        ],
        className="download-buttons",
    )


def tooltip_id(graph_id: str) -> str:
    """The id of the hover tooltip of the graph ``graph_id`` (:func:`graph` with
    ``tooltip``)."""
    return f"{graph_id}-tooltip"


def cell_tooltip(name: str, rows: Sequence[tuple[str, str, bool]], mark: str = "") -> html.Div:
    """A cell view's hover: the cell's ``name`` in bold, then one line per ``(label,
    value, bold)`` row (a bold label for the coloured value), ``mark`` after the last
    value (e.g. that it is imputed)."""
    lines: list[Any] = [html.B(name, className="cell-tooltip-name")]
    for i, (label, value, bold) in enumerate(rows):
        tail = mark if i == len(rows) - 1 else ""
        lines.append(html.Div([html.B(label) if bold else label, f": {value}{tail}"]))
    return html.Div(lines, className="cell-tooltip")


def graph(
    graph_id: str,
    *,
    figure: Any = None,
    height: int = 480,
    filename: str | None = None,
    loading: bool = True,
    tooltip: bool = False,
) -> Any:
    """A ``dcc.Graph`` with the app's config (SVG modebar download, no logo) and a
    delayed loading spinner (quick recolours do not flash it); with ``tooltip`` a
    ``dcc.Tooltip`` over it (id :func:`tooltip_id`), which a callback on the graph's
    ``hoverData`` fills (the cell views' hover)."""
    g = dcc.Graph(
        id=graph_id,
        figure=figure if figure is not None else empty_figure("Loading…"),
        config=graph_config(filename or graph_id),
        style={"height": f"{height}px"},
        className="graph",
        clear_on_unhover=tooltip,  # the pointer leaves the points: the tooltip goes
    )
    out: Any = g
    if loading:
        out = dcc.Loading(g, delay_show=600, type="circle", parent_className="graph-loading")
    if not tooltip:
        return out
    tip = dcc.Tooltip(id=tooltip_id(graph_id), show=False, direction="right", loading_text="")
    return html.Div([out, tip], style={"position": "relative"}, className="graph-with-tooltip")


def graph_card(
    title: str,
    graph_id: str,
    *,
    height: int = 480,
    controls: Any = None,
    subtitle: str | None = None,
    class_name: str = "",
    filename: str | None = None,
    footer: Any = None,
    tooltip: bool = False,
) -> html.Section:
    """A card holding one graph, its controls, its download buttons and an optional
    ``footer`` under the graph (e.g. a legend); ``tooltip`` as for :func:`graph`."""
    body = ([html.Div(controls, className="controls")] if controls is not None else []) + [
        graph(graph_id, height=height, filename=filename, tooltip=tooltip)
    ]
    if footer is not None:
        body.append(footer)
    return card(
        title,
        body,
        actions=download_buttons(graph_id),
        subtitle=subtitle,
        class_name=class_name,
    )


def color_legend(
    items: Sequence[Mapping[str, Any]],
    *,
    feature: str,
    title: str = "",
    more: int = 0,
    other: int = 0,
) -> html.Div:
    """A legend of the categories of the colouring ``feature`` (``items``: ``value``,
    ``color``, ``count``, ``active``): each entry a button with its colour, whole name and
    number of cells; clicking one selects its cells (ids ``{"type": LEGEND_ITEM, "feature":
    feature, "value": name}``, see the Explore page).
    Long names wrap; ``more`` entries left out and ``other`` cells of no category are
    counted in a line below."""
    entries = [
        html.Button(
            [
                html.Span(className="legend-swatch", style={"background": item["color"]}),
                html.Span(str(item["value"]), className="legend-name"),
                html.Span(f"{int(item['count']):,}", className="legend-count"),
            ],
            id={"type": ids.LEGEND_ITEM, "feature": feature, "value": str(item["value"])},
            className="legend-item is-active" if item.get("active") else "legend-item",
            title=f"Select the {int(item['count']):,} cells of {item['value']}"
            + (" (click again to clear)" if item.get("active") else ""),
        )
        for item in items
    ]
    notes = []
    if more > 0:
        notes.append(f"{more:,} more categories not listed")
    if other > 0:
        notes.append(f"{other:,} cells in none")
    children = [html.Div(entries, className="legend-items")]
    if title:
        children.insert(0, html.Div(title, className="legend-title"))
    if notes:
        children.append(html.Div("; ".join(notes), className="muted small"))
    return html.Div(children, className="color-legend", role="list")


def color_note(text: str, *, note_id: str | None = None) -> html.Div:
    """The one line under a cell view about its colouring (e.g. where a protein is imputed,
    that a minified file has no counts); empty when ``text`` is."""
    kwargs = {"id": note_id} if note_id else {}
    return html.Div(text, className="color-note muted small", role="note", **kwargs)


def alert(message: str, *, kind: str = "error", dismissable: bool = False) -> html.Div:
    """A readable message box (kind: error, warning, info, success), folded to one line
    (:func:`one_line`: newlines in a library's error text, a traceback's frames), with no
    absolute server path (:func:`~dashboard.public_paths.scrub_paths`)."""
    text = scrub_paths(one_line(message))
    children: list[Any] = [html.Span(text, className="alert-text")]
    if dismissable:
        children.append(
            html.Button("×", id=ids.ALERT_CLOSE, className="alert-close", title="Dismiss")
        )
    return html.Div(children, className=f"alert alert-{kind}", role="alert")


def notice(message: str, *, kind: str = "info") -> html.Div:
    """A placeholder box for a view that has nothing to show yet, one line with no server
    path, as :func:`alert` (it may carry a failed job's error)."""
    return html.Div(scrub_paths(one_line(message)), className=f"notice notice-{kind}")


def progress_children(fraction: float, message: str = "") -> list[Any]:
    """Children of a progress block: a bar at ``fraction`` and a message."""
    pct = max(0.0, min(1.0, float(fraction))) * 100
    return [
        html.Div(
            html.Div(className="progress-fill", style={"width": f"{pct:.0f}%"}),
            className="progress-track",
            role="progressbar",
            **{"aria-valuenow": f"{pct:.0f}", "aria-valuemin": "0", "aria-valuemax": "100"},
        ),
        html.Div(
            f"{pct:.0f}% · {scrub_paths(message)}" if message else f"{pct:.0f}%",
            className="progress-text",
        ),
    ]


def job_progress(
    label: str,
    *,
    running: bool,
    progress: float = 0.0,
    message: str = "",
    outcome: str | None = None,
    line: str = "",
) -> list[Any]:
    """A job's progress block: its name and a progress bar while it runs; when it has
    ended, one alert line (success; info when cancelled; warning when it failed), or
    nothing when there is no ``line`` (a page that shows the result instead); nothing
    before any job."""
    if running:
        return [html.B(label, className="job-label"), *progress_children(progress, message)]
    if outcome is None or not line:
        return []
    kind = {"done": "success", "cancelled": "info"}.get(outcome, "warning")
    return [alert(line, kind=kind)]


@dataclass(frozen=True)
class JobView:
    """What a job panel shows of one job: the progress block's ``children``, whether the
    job runs (Cancel and the poll on), and how it ended (``outcome``: ``None`` before any
    job and while it runs; ``done``, ``failed``, ``cancelled``; ``refused`` when it did
    not start, ``gone`` when its record is no longer known)."""

    children: Any = dataclass_field(default_factory=list)
    running: bool = False
    outcome: str | None = None

    @property
    def done(self) -> bool:
        """Finished with a result to show."""
        return self.outcome == "done"

    @property
    def ended_badly(self) -> bool:
        """Failed, cancelled, refused or lost: worth trying again."""
        return self.outcome in {"failed", "cancelled", "refused", "gone"}


def job_view(info: JobInfo | None, label: str) -> JobView:
    """A job record as its panel shows it (``label`` names the job: ``"DE"``): bar and
    message while queued or running; nothing once done (the page shows the result); one
    line when it failed (``"DE failed: ..."``) or was cancelled (``"DE: cancelled."``)."""
    if info is None:
        return JobView()
    status = str(info.status)
    running = status in {"queued", "running"}
    lines = {
        "failed": f"{label} failed: {one_line(info.error or 'the computation failed')}",
        "cancelled": f"{label}: cancelled.",
    }
    children = job_progress(
        label,
        running=running,
        progress=info.progress,
        message=info.message or ("queued" if status == "queued" else "working"),
        outcome=None if running else status,
        line=lines.get(status, ""),
    )
    return JobView(children, running=running, outcome=None if running else status)


def refused_view(err: Exception) -> JobView:
    """The panel of a job that did not start: why, as one warning line."""
    return JobView(alert(str(err), kind="warning"), outcome="refused")


def job_panel(
    panel: JobPanel,
    *,
    controls: Sequence[Any] = (),
    progress: Any = None,
    running: bool = False,
    retry: str | None = None,
    poll_ms: int | None = 700,
    store: bool = True,
    compact: bool = False,
) -> html.Div:
    """One job's panel (ids from ``panel``): the page's own ``controls`` (its start button),
    an optional ``retry`` button (its label; shown after a failed or cancelled job),
    Cancel (disabled unless a job runs; ``compact``: shown only then), the progress block
    (``progress``: what it shows now, e.g. a job that runs on a reload), one line of
    notices, and, unless the page polls otherwise (``poll_ms=None``, ``store=False``), the
    poll timer and the store with the job's id."""
    row = [*controls]
    if retry is not None:
        row.append(html.Button(retry, id=panel.retry, className="btn btn-ghost", hidden=True))
    row.append(
        html.Button(
            "Cancel",
            id=panel.cancel,
            className="btn btn-ghost job-cancel",
            disabled=not running,
        )
    )
    children: list[Any] = [
        html.Div(row, className="row-inline job-controls"),
        html.Div(progress or [], id=panel.progress, className="progress-block"),
        html.Div(id=panel.message, className="job-message"),
    ]
    if poll_ms is not None:
        children.append(dcc.Interval(id=panel.interval, interval=poll_ms, disabled=not running))
    if store:
        children.append(dcc.Store(id=panel.store))
    return html.Div(children, className="job-panel job-panel-compact" if compact else "job-panel")


def kv_table(mapping: Mapping[str, Any], *, class_name: str = "") -> html.Table:
    """Two-column table of keys and values."""
    return html.Table(
        html.Tbody([html.Tr([html.Th(str(k)), html.Td(_fmt(v))]) for k, v in mapping.items()]),
        className=f"table kv-table {class_name}",
    )


def frame_table(
    frame: pd.DataFrame, *, index_label: str | None = None, class_name: str = ""
) -> html.Table:
    """A small DataFrame as an HTML table (numbers to 3 decimals)."""
    label = index_label if index_label is not None else (frame.index.name or "")
    head = html.Thead(html.Tr([html.Th(label)] + [html.Th(str(c)) for c in frame.columns]))
    rows = [
        html.Tr([html.Th(str(idx))] + [html.Td(_fmt(v)) for v in row])
        for idx, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return html.Table([head, html.Tbody(rows)], className=f"table data-table {class_name}")


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{float(value):.3f}"
    if value is None:
        return "–"
    return scrub_paths(str(value))  # a dataset's or a checkpoint's path: relative


def de_grid(grid_id: str, rows: Sequence[Mapping[str, Any]] = (), *, height: int = 420) -> Any:
    """The DE table: sortable, filterable, CSV export, one row per feature (id = key).

    ``feature`` shows the display name; the name in the dataset (``feature_id``) is the
    cell's tooltip and a column of the CSV export (hidden in the grid).
    """
    num = {"filter": "agNumberColumnFilter", "type": "numericColumn"}
    fmt = {"function": "d3.format('.3~g')(params.value)"}
    columns = [
        {
            "field": "feature",
            "headerName": "Feature",
            "pinned": "left",
            "minWidth": 130,
            "tooltipField": "feature_id",
        },
        {"field": "feature_id", "headerName": "Feature id", "hide": True},
        {"field": "modality", "headerName": "Modality", "maxWidth": 120},
        {"field": "lfc_mean", "headerName": "LFC (mean)", **num, "valueFormatter": fmt},
        {"field": "lfc_lower", "headerName": "LFC 95% low", **num, "valueFormatter": fmt},
        {"field": "lfc_upper", "headerName": "LFC 95% high", **num, "valueFormatter": fmt},
        {"field": "bayes_factor", "headerName": "log Bayes factor", **num, "valueFormatter": fmt},
        {"field": "proba_de", "headerName": "P(DE)", **num, "valueFormatter": fmt},
        {
            "field": "is_de",
            "headerName": "DE (at the FDR target)",
            "filter": "agTextColumnFilter",
            "maxWidth": 130,
        },
        {"field": "lfc_std", "headerName": "LFC sd", **num, "valueFormatter": fmt},
        {"field": "scale1", "headerName": "Expr. group 1", **num, "valueFormatter": fmt},
        {"field": "scale2", "headerName": "Expr. group 2", **num, "valueFormatter": fmt},
        {
            "field": "non_zeros_proportion1",
            "headerName": "Non-zero 1",
            **num,
            "valueFormatter": fmt,
        },
        {
            "field": "non_zeros_proportion2",
            "headerName": "Non-zero 2",
            **num,
            "valueFormatter": fmt,
        },
    ]
    return dag.AgGrid(
        id=grid_id,
        rowData=list(rows),
        columnDefs=columns,
        defaultColDef={
            "sortable": True,
            "filter": True,
            "resizable": True,
            "floatingFilter": True,
            "minWidth": 100,
        },
        getRowId="params.data.key",
        columnSize="responsiveSizeToFit",
        dashGridOptions={
            "pagination": True,
            "paginationPageSize": 50,
            "paginationPageSizeSelector": False,
            "rowSelection": {
                "mode": "singleRow",
                "checkboxes": False,
                "enableClickSelection": True,
            },
            "animateRows": False,
            "tooltipShowDelay": 300,
        },
        csvExportParams={"fileName": f"{grid_id}.csv", "allColumns": True},
        style={"height": f"{height}px", "width": "100%"},
        className="ag-theme-quartz de-grid",
    )


def page_header(title: str, description: str, *, extra: Any = None) -> html.Div:
    """Page title and a one-line description of what the page is for."""
    return html.Div(
        [
            html.Div([html.H1(title), html.P(description, className="page-lead")]),
            html.Div(extra, className="page-header-extra") if extra is not None else None,
        ],
        className="page-header",
    )


def page_state_store(data: Mapping[str, Any] | None) -> dcc.Store:
    """The page-local store with the view state a link carried (colour, selection)."""
    return dcc.Store(id=ids.PAGE_STATE, data=dict(data or {}))


def segmented(component_id: str, options: Sequence[Any], value: Any) -> dcc.RadioItems:
    """A row of mutually exclusive choices drawn as one segmented control."""
    return dcc.RadioItems(
        id=component_id, options=list(options), value=value, inline=True, className="segmented"
    )


def field(label: str, control: Any, *, hint: str | None = None, class_name: str = "") -> html.Div:
    """A labelled form control."""
    return html.Div(
        [html.Label(label, className="field-label"), control]
        + ([html.Div(hint, className="field-hint")] if hint else []),
        className=f"field {class_name}",
    )


def dropdown_field(
    label: str,
    component_id: str,
    *,
    hint: str | None = None,
    class_name: str = "",
    **dropdown: Any,
) -> html.Div:
    """A labelled ``dcc.Dropdown`` (``dropdown``: its options, value, placeholder ...)."""
    return field(
        label, dcc.Dropdown(id=component_id, **dropdown), hint=hint, class_name=class_name
    )


def number_field(
    label: str, component_id: str, *, value: int, bounds: tuple[int, int], hint: str | None = None
) -> html.Div:
    """A labelled whole-number input from ``bounds[0]`` to ``bounds[1]``."""
    box = dcc.Input(
        id=component_id,
        type="number",
        value=value,
        min=bounds[0],
        max=bounds[1],
        step=1,
        className="input",
    )
    return field(label, box, hint=hint)


def upload_with_status(
    component_id: str, *, status_id: str, check: JobPanel, checked: str, **upload: Any
) -> html.Div:
    """A :func:`stream_upload` drop zone (``upload``: its keywords), the compact panel of
    the job that checks the file once it arrived (``check``; progress and Cancel while it
    reads), the store that changes when that job ended (``checked``) and the line that says
    what became of the file (``status_id``)."""
    return html.Div(
        [
            stream_upload(component_id, **upload),
            job_panel(check, compact=True, poll_ms=500),
            dcc.Store(id=checked),
            html.Div(id=status_id),
        ]
    )


def stream_upload(
    component_id: str, *, target: str, done_store: str, limit_bytes: int, what: str
) -> html.Div:
    """A drop zone that sends the chosen file as it is to ``POST /_upload/<target>``
    (``assets/dashboard.js``: streamed to disk on the server, never base64 in a callback),
    with its progress in the zone; the server's token for the outcome lands in the
    ``done_store`` store, whose callback shows it.

    The script adds a transparent file input over the whole zone (Dash has no file-input
    component), so a click anywhere opens the browser's file dialog and a file dropped on
    it is taken as chosen.
    """
    mb = limit_bytes / 1024**2
    return html.Div(
        [
            html.Div(
                [f"Drop {what} here or ", html.A("choose a file"), f" (up to {mb:,.0f} MB)"],
                className="upload-label",
            ),
            html.Div(className="upload-progress", **{"aria-live": "polite"}),
            dcc.Store(id=done_store),
        ],
        id=component_id,
        className="upload stream-upload",
        **{"data-target": target, "data-store": done_store, "data-limit": str(limit_bytes)},
    )
