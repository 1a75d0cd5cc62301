"""Dash application factory: pages, shell, shell callbacks, compression and error handling.

Every request is served as its owner (:mod:`dashboard.identity`: the basic-auth user or the
browser session) in that owner's workspace (:mod:`dashboard.views.workspaces`). Long computations
(preparing a model, DE, metrics, training) run as backend jobs, on the server's threads or on
Celery workers when ``redis_url`` is set, and pages poll their progress with
``dcc.Interval``; the job registry gives progress and cancel across processes. No
traceback ever reaches the browser: every callback error is
logged on the server and shown as a one-line alert (``on_error``), and Dash runs with debug
off unless asked.
"""

from __future__ import annotations

import gzip
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dash
from dash import ClientsideFunction, Dash, Input, Output, State, no_update, set_props
from dash._callback import GLOBAL_CALLBACK_LIST, GLOBAL_CALLBACK_MAP

from dashboard import backend, ids
from dashboard.auth import install_basic_auth
from dashboard.backend.errors import BackendError
from dashboard.backend.owner import current_owner
from dashboard.components import alert
from dashboard.http_guard import CALLBACK_BODY_BYTES, install_http_guard
from dashboard.identity import install_identity
from dashboard.layout import (
    POLL_BUSY_MS,
    POLL_IDLE_MS,
    nav_links,
    shell,
    status_view,
    version_token,
)
from dashboard.pages._shared import data_of, shared_outputs
from dashboard.upload_route import install_upload_route
from dashboard.url_state import view_search
from dashboard.views.cells import cell_positions
from dashboard.views.layouts import MAX_KEY
from dashboard.views.state import ActiveState, get_state, get_workspaces, set_state
from dashboard.views.workspaces import Workspaces

if TYPE_CHECKING:
    from flask import Response

    from dashboard.backend.service import AnalysisService

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
PAGES = Path(__file__).resolve().parent / "pages"
GZIP_MIN_BYTES = 1400
GZIP_TYPES = (
    "application/json", "text/html", "application/javascript", "text/javascript", "text/css"
)  # fmt: skip
#: gzipped static files (Dash's component suites: fingerprinted or with an ETag, never
#: changing while the server runs) kept compressed (:func:`_static_key`): plotly.min.js is
#: 4.8 MB, not compressed again for every page load. The oldest goes past this many.
GZIP_CACHE_ITEMS = 64
#: ... and past this many bytes (a forged fingerprint in a path is a new key).
GZIP_CACHE_BYTES = 24 * 1024**2
_gzip_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_gzip_cache_lock = threading.Lock()

log = logging.getLogger(__name__)


def create_app(
    service: AnalysisService | None = None, *, state: ActiveState | None = None
) -> Dash:
    """Build the Dash app over ``service`` (default: the process-wide backend service).

    ``state`` holds the server's default (dataset, model) pair, what every workspace
    shows until its user loads or trains another; by default an empty one over the service
    (the Model page then offers to load or train). Tests pass a prepared service and state;
    ``dashboard.server`` passes the embedded default.
    """
    if service is None:
        service = backend.get_service()
    backend.set_service(service)
    default = state if state is not None else ActiveState(service)
    set_state(default, Workspaces(default, service.settings.workspaces_dir))

    # Callbacks registered by an earlier app's pages that no request ever claimed (tests
    # build several apps in one process) would otherwise be served twice by this app.
    GLOBAL_CALLBACK_LIST.clear()
    GLOBAL_CALLBACK_MAP.clear()

    app = Dash(
        "dashboard",
        use_pages=True,
        pages_folder=str(PAGES),
        assets_folder=str(ASSETS),
        title="TotalVI Explorer",
        update_title=None,
        suppress_callback_exceptions=True,
        on_error=on_callback_error,
        routing_callback_inputs={
            "color_state": State(ids.COLOR_STORE, "data"),
            "model": Input(ids.MODEL_VERSION_STORE, "data"),  # re-render pages on a switch
        },
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    app.layout = shell
    register_shell_callbacks(app)
    app.server.after_request(_gzip_response)
    # security headers on every response; callback bodies over 32 MB refused unread,
    # malformed or too deep JSON before parsing; uploads stream to their own route
    install_http_guard(app, max_body_bytes=CALLBACK_BODY_BYTES, raw_body_paths=("/_upload/",))
    install_upload_route(app.server, service)
    install_identity(app.server)  # after auth (which puts itself first): its user names it
    if service.settings.auth_file is not None:  # after the guard: it puts itself first
        install_basic_auth(app.server, service.settings.auth_file)
    return app


def on_callback_error(err: Exception) -> None:
    """Last line of defence: log the traceback server-side, show one readable line."""
    if isinstance(err, BackendError):
        message = str(err)
        log.warning("callback: %s", message)
    else:
        log.error("callback failed", exc_info=err)
        message = (
            f"Something went wrong ({type(err).__name__}: {err}). "
            "The details are in the server log."
        )
    set_props(ids.ALERT, {"children": alert(message, dismissable=True)})


# ------------------------------------------------------------------------ shell callbacks
def update_status(_n: int | None, token: dict[str, Any] | None) -> tuple[list[Any], Any, int]:
    """Status indicator, the version token (only when the active pair changed) and the
    poll period (fast while something is being prepared)."""
    status = get_state().status().to_dict()
    new = version_token(status)
    busy = status["state"] == "preparing" or status.get("warming")
    return (
        status_view(status),
        new if new != token else no_update,
        POLL_BUSY_MS if busy else POLL_IDLE_MS,
    )


def update_url_query(
    color: dict[str, Any] | None,
    selection: dict[str, Any] | None,
    token: dict[str, Any] | None,
    layout: dict[str, Any] | None = None,
) -> str:
    """The shareable query string of the current colour, selection, pair (it follows a
    model switch, so a reload does not open the pair the page was opened with) and
    Explore's layout when not the default (this dataset's only)."""
    cells = _valid_cells(selection, token)
    region = _valid_region(selection, token)
    n_cells = None
    if cells or region:
        try:
            service, pair = get_state().require()
            n_cells = service.dataset(pair).n_cells
        except Exception:  # no model: share the colour only
            cells = region = None
        if cells and max(cells) >= (n_cells or 0):  # made on other cells: not shared
            cells = None
    pair = token.get("pair") if token else None
    return view_search(
        color, cells, n_cells, region=region, pair=pair, layout=_valid_layout(layout, token)
    )


def _valid_layout(layout: dict[str, Any] | None, token: dict[str, Any] | None) -> str | None:
    """Explore's layout key (this dataset's; a page checks it when it opens the link),
    else ``None``."""
    if not isinstance(layout, dict) or not isinstance(layout.get("layout"), str):
        return None
    if token and layout.get("dataset") != token.get("dataset"):
        return None
    key = layout["layout"]
    return key if len(key) <= MAX_KEY else None


def _valid_region(
    selection: dict[str, Any] | None, token: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The region of a selection made on a subsampled view (this dataset's), else ``None``."""
    if not selection or not isinstance(selection.get("region"), dict):
        return None
    if token and selection.get("dataset") not in (None, token.get("dataset")):
        return None
    return selection["region"]


def _valid_cells(selection: dict[str, Any] | None, token: dict[str, Any] | None) -> list | None:
    if not selection or not selection.get("cells"):
        return None
    if token and selection.get("dataset") not in (None, token.get("dataset")):
        return None
    return cell_positions(selection["cells"])


def seed_from_link(page_state: dict[str, Any] | None) -> tuple[Any, Any]:
    """A page opened from a shared link: select its cells, and say in one line what of the
    link cannot be used (a selection for other cells, a colour this dataset lacks)."""
    if not page_state:
        return no_update, no_update
    problems = [str(page_state[k]) for k in ("error", "notice") if page_state.get(k)]
    message = (
        alert(f"Shared link: {'; '.join(problems)}.", kind="warning", dismissable=True)
        if problems
        else no_update
    )
    selection: Any = no_update
    if not page_state.get("error"):  # (an error: the link's cells do not fit this dataset)
        for key in ("region", "cells"):
            if key in page_state:
                value = page_state[key]
                selection = {
                    key: list(value) if key == "cells" else value,
                    "dataset": page_state.get("dataset"),
                    "source": "link",
                }
                break
    return selection, message


def reset_stale_selection(token: dict[str, Any] | None, selection: dict[str, Any] | None) -> Any:
    """Drop a selection made on another dataset when the active dataset changes."""
    if not selection or not token or not token.get("dataset"):
        return no_update
    if selection.get("dataset") not in (None, token["dataset"]):
        return None
    return no_update


#: The browser stores a workspace keeps on the server, by their key in its record.
WORKSPACE_STORES = {
    "selection": ids.SELECTION_STORE,
    "saved_selections": ids.SAVED_SELECTIONS_STORE,
    "color": ids.COLOR_STORE,
    "gene_sets": ids.GENE_SETS_STORE,
}


def save_workspace_view(key: str, value: dict[str, Any] | None) -> Any:
    """Keep one of the workspace's stores (``key`` of :data:`WORKSPACE_STORES`) on the
    server, so a reload, another tab or a restart shows it; only the store that changed is
    sent and written (a tab does not overwrite what another kept); too large a selection
    is not kept."""
    workspaces, owner = get_workspaces(), current_owner()
    if workspaces is None or owner is None:
        return no_update
    try:
        workspaces.save_view(owner, **{key: value})
    except BackendError as err:
        set_props(ids.ALERT, {"children": alert(str(err), kind="warning", dismissable=True)})
    return no_update


def _workspace_saver(key: str) -> Callable[[dict[str, Any] | None], Any]:
    def save(value: dict[str, Any] | None) -> Any:
        return save_workspace_view(key, value)

    save.__name__ = f"save_workspace_{key}"
    return save


def close_alert(n_clicks: int | None) -> Any:
    """The alert's × button."""
    return None if n_clicks else no_update


def register_shell_callbacks(app: Dash) -> None:
    """Callbacks of the shell (registered on the app: page modules are re-run per app,
    this module is not)."""
    app.callback(
        Output(ids.STATUS, "children"),
        Output(ids.MODEL_VERSION_STORE, "data"),
        Output(ids.STATUS_INTERVAL, "interval"),
        Input(ids.STATUS_INTERVAL, "n_intervals"),
        State(ids.MODEL_VERSION_STORE, "data"),
    )(update_status)
    app.callback(
        Output(ids.URL_QUERY_STORE, "data"),
        *data_of(ids.COLOR_STORE, ids.SELECTION_STORE, ids.MODEL_VERSION_STORE),
        Input(ids.LAYOUT_STORE, "data"),
    )(update_url_query)
    app.clientside_callback(
        ClientsideFunction(namespace="tve", function_name="writeUrl"),
        Output(ids.URL_SINK, "children"),
        Input(ids.URL_QUERY_STORE, "data"),
        Input(ids.URL, "pathname"),
    )
    follow = {  # the callbacks that run on a change only (not when the page loads)
        seed_from_link: [
            *shared_outputs((ids.SELECTION_STORE, "data"), (ids.ALERT, "children")),
            Input(ids.PAGE_STATE, "data"),
        ],
        reset_stale_selection: [
            *shared_outputs((ids.SELECTION_STORE, "data")),
            Input(ids.MODEL_VERSION_STORE, "data"),
            State(ids.SELECTION_STORE, "data"),
        ],
        close_alert: [
            *shared_outputs((ids.ALERT, "children")),
            Input(ids.ALERT_CLOSE, "n_clicks"),
        ],
    }
    for key, store in WORKSPACE_STORES.items():
        follow[_workspace_saver(key)] = [
            Output(ids.WORKSPACE_SINK, "children", allow_duplicate=True),
            Input(store, "data"),
        ]
    for function, deps in follow.items():
        app.callback(*deps, prevent_initial_call=True)(function)
    app.clientside_callback(
        ClientsideFunction(namespace="tve", function_name="activeNav"),
        [Output(link.id, "className") for link in nav_links()],
        Input(ids.URL, "pathname"),
        State(ids.NAV, "id"),
    )
    app.clientside_callback(
        ClientsideFunction(namespace="tve", function_name="downloadFigure"),
        Output(
            {"type": ids.FIG_DOWNLOAD_SINK, "graph": dash.MATCH, "format": dash.MATCH}, "children"
        ),
        Input({"type": ids.FIG_DOWNLOAD, "graph": dash.MATCH, "format": dash.MATCH}, "n_clicks"),
        prevent_initial_call=True,
    )


# ---------------------------------------------------------------------------- compression
def _static_key(response: Response, path: str) -> tuple[str, str] | None:
    """The key a static response's gzip is kept under: ``(path, ETag)``, or ``(path, "")``
    for a fingerprinted file cached a day or more (its path changes with its content);
    ``None`` for anything else (callback payloads differ every time)."""
    etag = response.headers.get("ETag")
    if etag:
        return path, etag
    max_age = response.cache_control.max_age
    return (path, "") if max_age is not None and max_age >= 86_400 else None


#: The script dcc loads when a page's first graph mounts (not in the page's own tags).
PLOTLY_JS = "_dash-component-suites/plotly/package_data/plotly.min.js"


def page_script_paths(app: Dash) -> list[str]:
    """The server paths of the scripts a page loads from Dash's component suites: the
    index's ``<script src>`` tags, then plotly.js."""
    routes = app.config.routes_pathname_prefix
    requests = app.config.requests_pathname_prefix
    with app.server.test_request_context(routes):
        page = app.index()
    tags = re.findall(r'<script src="([^"]+)"', page)
    paths = [routes + src[len(requests) :] for src in tags if src.startswith(requests)]
    suites = routes + "_dash-component-suites/"
    return [p for p in paths if p.startswith(suites)] + [routes + PLOTLY_JS]


def precompress_scripts(app: Dash) -> float:
    """Compress the page's scripts into the gzip cache (:func:`page_script_paths`, through
    the same handler and after-request step as a browser's request, without the request's
    auth and workspace hooks): the first visitor after a restart then gets plotly.js
    (4.8 MB; all the scripts take about 0.15 s to compress) without waiting for it.
    Returns the seconds it took."""
    from flask import request

    t0 = time.perf_counter()
    for path in page_script_paths(app):
        with app.server.test_request_context(path, headers={"Accept-Encoding": "gzip"}):
            if request.url_rule is None:  # not served here (an external script)
                continue
            view = app.server.view_functions[request.url_rule.endpoint]
            _gzip_response(app.server.make_response(view(**(request.view_args or {}))))
    return time.perf_counter() - t0


def _gzip_response(response: Response) -> Response:
    """gzip JSON/HTML/JS/CSS responses for clients that accept it (no extra dependency);
    static files with an ETag are compressed once (:data:`GZIP_CACHE_ITEMS`).

    Callback payloads (figures, hover text, typed arrays) shrink several-fold, which is
    what a large dataset's first figure needs.
    """
    from flask import request

    if (
        response.direct_passthrough
        or response.status_code != 200
        or "Content-Encoding" in response.headers
        or "gzip" not in request.headers.get("Accept-Encoding", "").lower()
        or not (response.mimetype or "").startswith(GZIP_TYPES)
    ):
        return response
    body = response.get_data()
    if len(body) < GZIP_MIN_BYTES:
        return response
    key = _static_key(response, request.full_path.rstrip("?"))
    with _gzip_cache_lock:
        zipped = _gzip_cache.get(key) if key else None
    if zipped is None:
        zipped = gzip.compress(body, compresslevel=5)
        if key:
            with _gzip_cache_lock:
                _gzip_cache[key] = zipped
                while len(_gzip_cache) > GZIP_CACHE_ITEMS or (
                    sum(map(len, _gzip_cache.values())) > GZIP_CACHE_BYTES
                ):
                    _gzip_cache.popitem(last=False)
    response.set_data(zipped)
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Content-Length"] = str(len(response.get_data()))
    response.vary.add("Accept-Encoding")
    return response
