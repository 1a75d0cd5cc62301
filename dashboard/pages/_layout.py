"""A cell view's "Layout" control: our latent UMAP or a layout the dataset's file carries
(:mod:`dashboard.views.layouts`). A layout of the file's shows at once; ours runs as a job
when it is not computed yet (a dataset with a layout of its own computes it after the first
view, :mod:`dashboard.backend.preparation`), and the view keeps the layout it shows until
the job is done. The control's ready store holds ``{"layout": key}``, the layout the view
shows, which the page's figure callbacks read; the app's layout store the chosen key when it
is not the dataset's default, for the shareable URL.

A page makes one with :func:`register` (the callbacks) and :func:`control` (the layout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components
from dashboard.ids import LAYOUT_STORE, LayoutControl
from dashboard.pages import _jobs
from dashboard.views.errors import BackendError
from dashboard.views.layouts import OURS, check_layout, default_layout, layout_choices
from dashboard.views.state import active

#: How the job panel names the job ("Latent UMAP failed: ...").
LABEL = "Latent UMAP"

__all__ = ["LABEL", "control", "register"]


def control(ids: LayoutControl, service: Any, pair: Any, key: str) -> html.Div:
    """The dropdown (at ``key``, checked), its compact job panel and the ready store. The
    view starts in ``key``, except ours on a dataset with layouts of its own (our UMAP may
    still be computing): it then starts in the file's default and the control's first call
    shows ours once it is ready."""
    first = key if key != OURS else default_layout(service, pair)
    return html.Div(
        [
            components.dropdown_field(
                "Layout",
                ids.choice,
                options=layout_choices(service, pair),
                value=key,
                clearable=False,
                disabled=len(service.dataset(pair).layouts) == 0,
                class_name="field-mid",
            ),
            components.job_panel(ids.job, compact=True),
            dcc.Store(id=ids.ready, data={"layout": first}),
            dcc.Store(id=ids.link),  # for the app's layout store (see register)
        ],
        className="layout-control",
    )


def register(
    ids: LayoutControl,
) -> tuple[Callable[..., tuple], Callable[..., tuple], Callable[..., tuple]]:
    """Register the control's callbacks (from the page module); returns
    ``start(key, ready)``, ``poll(n_intervals, store)`` and ``opened(id, key, ready)`` to
    call directly.

    The page's first figure reads the ready store, and the renderer holds a callback back
    while any callback that fired with it can lead to one of its inputs. So no callback
    that fires when the page opens sets the ready store: :func:`start_layout` runs on a
    change of the dropdown only. All its outputs are in the page: one outside it (the
    app's layout store) would make the renderer call it whenever the page is inserted,
    ``prevent_initial_call`` or not. The page-open call sets everything else. The key for
    the shareable URL goes to the page's link store, and from there to the app's store.
    """

    @callback(
        *_jobs.start_outputs(ids.job, ids.ready),
        Output(ids.link, "data"),
        Input(ids.choice, "value"),
        State(ids.ready, "data"),
        prevent_initial_call=True,  # when the page opens: opened_layout
    )
    def start_layout(key: Any, ready: dict | None) -> tuple:
        """Show the chosen layout: a file's at once, ours at once when computed, else
        after its job (``(job store, poll off, ready, progress, Cancel off, shared)``,
        ``shared``: for the app's layout store and the shareable URL: the key unless it
        is the default); a key the dataset does not have: one line, the view as it was."""
        try:
            service, pair = active()
            key = check_layout(service, pair, key)
        except BackendError as err:
            return (*_jobs.started(None, components.refused_view(err)), no_update)
        default = default_layout(service, pair)
        shared = {"layout": None if key == default else key, "dataset": pair.dataset.id}
        shown = ready.get("layout") if isinstance(ready, dict) else None
        if key != OURS or shown == OURS:  # nothing to compute; a job for ours stops showing
            return None, True, no_update if shown == key else {"layout": key}, [], True, shared
        store, view = _jobs.start(lambda: service.submit("umap", pair), LABEL, layout=OURS)
        return (*_jobs.started(store, view), shared)

    @callback(
        *(
            Output(target, prop, allow_duplicate=True)
            for target, prop in (
                (ids.job.store, "data"),
                (ids.job.interval, "disabled"),
                (ids.job.progress, "children"),
                (ids.job.cancel, "disabled"),
                (ids.link, "data"),
            )
        ),
        Input(ids.choice, "id"),  # once, when the page opens
        State(ids.choice, "value"),
        State(ids.ready, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def opened_layout(_id: str, key: Any, ready: dict | None) -> tuple:
        """:func:`start_layout` when the page opens, without the ready store: the view's
        first figure (whose callback reads that store) is then not held back until this
        one has answered. The view opens in the layout the control started it in; a link
        naming ours while it is not shown starts its job, whose poll shows it when done
        (the poll runs even if the job is done already: only the poll says ready)."""
        store, interval_off, _ready, progress, cancel_off, shared = start_layout(key, ready)
        return store, interval_off and store is None, progress, cancel_off, shared

    @callback(Output(LAYOUT_STORE, "data"), Input(ids.link, "data"), prevent_initial_call=True)
    def share_layout(shared: dict | None) -> Any:
        """The page's layout key into the app's layout store (the shareable URL)."""
        return shared if isinstance(shared, dict) else no_update

    poll, _cancel = _jobs.panel_callbacks(ids.job, ready=ids.ready, label=LABEL)
    return start_layout, poll, opened_layout
