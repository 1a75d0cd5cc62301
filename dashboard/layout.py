"""The app shell: top bar (brand, navigation, status), alerts, page container, app stores.

The stores hold what every page shares: the colour-by choice, the selected cells, the saved
selections (per dataset) and the active model's version. The first three are the
workspace's: the page starts from what the server keeps, and every change is saved back.
They live here, not in a page, so they survive page changes (the multi-page rule for shared
state).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import ids
from dashboard.backend.owner import current_owner
from dashboard.pages._shared import NAV
from dashboard.public_paths import scrub_paths
from dashboard.views.colours import ColorSpec
from dashboard.views.state import get_state, get_workspaces

#: Status poll period while something is being prepared, and when all is quiet (ms).
POLL_BUSY_MS = 1000
POLL_IDLE_MS = 5000


def _module(page: dict[str, Any]) -> str:
    return str(page["module"]).rsplit(".", 1)[-1]


def nav_links() -> list[Any]:
    """One link per registered page, in the order of :data:`dashboard.pages._shared.NAV`."""
    pages = [p for p in dash.page_registry.values() if _module(p) in NAV]
    pages.sort(key=lambda p: NAV.index(_module(p)))
    return [
        dcc.Link(
            p["name"],
            href=p["relative_path"],
            className="nav-link",
            id=f"nav-{p['module'].split('.')[-1]}",
        )
        for p in pages
    ]


def version_token(status: dict[str, Any]) -> dict[str, Any]:
    """What pages rebuild on: the active pair and its version (not progress ticks)."""
    return {
        "version": status.get("version", 0),
        "pair": status.get("pair"),
        "dataset": status.get("dataset"),
        "state": "ready" if status.get("pair") else status.get("state", "empty"),
    }


def workspace_view() -> dict[str, Any]:
    """The stored selection, saved selections and colour of the request's workspace."""
    workspaces, owner = get_workspaces(), current_owner()
    if workspaces is None or owner is None:
        return {}
    return workspaces.view(owner)


def shell() -> html.Div:
    """The whole-app layout (a function: evaluated per page load, so it shows the current
    model status at once)."""
    status = get_state().status().to_dict()
    view = workspace_view()
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh="callback-nav"),
            # the workspace's, kept on the server (a reload or another tab shows them)
            dcc.Store(id=ids.SELECTION_STORE, data=view.get("selection")),
            dcc.Store(id=ids.SAVED_SELECTIONS_STORE, data=view.get("saved_selections") or {}),
            dcc.Store(id=ids.GENE_SETS_STORE, data=view.get("gene_sets") or {}),
            dcc.Store(
                id=ids.COLOR_STORE,
                data=view.get("color") or ColorSpec().to_state(),
            ),
            html.Div(id=ids.WORKSPACE_SINK, hidden=True),
            dcc.Store(id=ids.MODEL_VERSION_STORE, data=version_token(status)),
            dcc.Store(id=ids.URL_QUERY_STORE, data=""),
            dcc.Store(id=ids.LAYOUT_STORE),  # Explore's layout, for the shareable URL
            html.Div(id=ids.URL_SINK, hidden=True),
            plotly_loader(),
            dcc.Interval(
                id=ids.STATUS_INTERVAL,
                interval=POLL_IDLE_MS if status["state"] == "ready" else POLL_BUSY_MS,
            ),
            html.Header(
                [
                    dcc.Link(
                        [html.Span("◆", className="brand-mark"), "TotalVI Explorer"],
                        href="/",
                        className="brand",
                    ),
                    html.Nav(nav_links(), id=ids.NAV, className="nav"),
                    html.Div(status_view(status), id=ids.STATUS, className="status"),
                ],
                className="topbar",
            ),
            html.Div(id=ids.ALERT, className="alert-area"),
            html.Main(dash.page_container, className="page"),
            html.Footer(
                [
                    html.Span("Default data: 10x Genomics pbmc_10k_protein_v3 (CC BY 4.0). "),
                    html.Span("Model: totalVI (Gayoso et al., Nature Methods 2021) in PyTorch."),
                ],
                className="footer",
            ),
        ],
        className="app",
    )


def plotly_loader() -> dcc.Graph:
    """A hidden, empty graph in the shell. dcc loads plotly.js (4.8 MB of script, about
    0.8 s of the browser's main thread on a slow core) when the first graph mounts; in a
    page that is after the page's layout has come back. Mounted with the shell, plotly.js
    is fetched and evaluated while the page's first callbacks are still on the server
    (bench/RESULTS.md §15 part 9: Explore's first paint at 7k, median 2.75 -> 2.56 s)."""
    return dcc.Graph(
        id=ids.PLOTLY_LOADER,
        figure={"data": [], "layout": {"width": 10, "height": 10}},
        config={"staticPlot": True, "displayModeBar": False},
        style={"display": "none"},
    )


def status_view(status: dict[str, Any]) -> list[Any]:
    """The top bar's status: a coloured dot, the active model, and preparation progress."""
    state = status.get("state", "empty")
    children: list[Any] = []
    if status.get("pair_name"):
        children.append(
            html.Span(
                [html.Span(className="dot dot-ok"), status["pair_name"]],
                className="status-model",
                title="Active model",
            )
        )
    if state == "preparing":
        pct = 100 * float(status.get("progress", 0.0))
        children.append(
            html.Div(
                [
                    html.Span(
                        scrub_paths(
                            f"Preparing {status.get('pending_name', '')}: "
                            f"{status.get('message', '')} ({pct:.0f}%)"
                        ),
                        className="status-text",
                    ),
                    html.Div(
                        html.Div(className="progress-fill", style={"width": f"{pct:.0f}%"}),
                        className="progress-track progress-thin",
                    ),
                ],
                className="status-preparing",
                id="app-status-preparing",
            )
        )
    elif state == "failed":
        children.append(
            html.Span(
                [
                    html.Span(className="dot dot-error"),
                    f"Failed: {scrub_paths(str(status.get('message', '')))}",
                ],
                className="status-error",
            )
        )
    elif state == "empty":
        children.append(
            html.Span([html.Span(className="dot dot-idle"), "No model loaded"], className="muted")
        )
    if status.get("warming"):
        children.append(html.Span("computing DE in the background", className="status-note muted"))
    return children
