"""The job panel's callbacks (:func:`dashboard.components.job_panel`): start a backend job,
poll it, cancel it. Pages call :func:`start` in their own start callback (what starts a job
differs) and :func:`panel_callbacks` once, at module level, for the poll and Cancel
callbacks (Dash runs page modules for each app, but skips this one because of the leading
underscore, so it registers nothing by itself).

Every panel's start callback has the outputs ``(store, interval disabled, ready, progress,
cancel disabled[, retry hidden])``, its poll ``(progress, interval disabled, ready, cancel
disabled, message[, retry hidden])``; ``ready`` is a page's store that changes (``{**store,
"t": time}``) when the job is done, so the page renders its result. The Model page's two
panels follow the server's model switch instead of a stored job (:func:`switch_start_outputs`,
:func:`switch_cancel_callback`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from dash import Input, Output, State, callback, no_update

from dashboard import components
from dashboard.components import JobView
from dashboard.ids import JobPanel
from dashboard.views.errors import BackendError
from dashboard.views.state import get_state

#: Seconds a start waits for its job before showing the progress instead (a cached result
#: then shows at once, without a poll).
QUICK_WAIT = 0.4


def start(submit: Callable[[], str], label: str, **keep: Any) -> tuple[dict | None, JobView]:
    """Run ``submit()`` (it returns the job's id) and wait :data:`QUICK_WAIT` for it: the
    panel's store (``{"job": id, **keep}``; ``None`` when it was refused) and view (why,
    in one line, when it was refused)."""
    try:
        job = submit()
        info = get_state().service.wait(job, timeout=QUICK_WAIT)
    except BackendError as err:
        return None, components.refused_view(err)
    return {"job": job, **keep}, components.job_view(info, label)


def read(store: Mapping[str, Any] | None, label: str) -> JobView:
    """The view of the job in a panel's store (``gone`` when its record is unknown)."""
    if not isinstance(store, Mapping) or not store.get("job"):
        return JobView()
    try:
        info = get_state().service.job(str(store["job"]))
    except BackendError:
        return JobView(outcome="gone")
    return components.job_view(info, label)


def _ready(store: Mapping[str, Any] | None, view: JobView, every_end: bool) -> Any:
    ended = view.done or (every_end and view.outcome is not None)
    return {**(store or {}), "t": time.time()} if ended else no_update


def started(
    store: dict | None, view: JobView, *, retry: bool = False, every_end: bool = False
) -> tuple:
    """A start callback's outputs: ``(store, interval disabled, ready, progress, cancel
    disabled[, retry hidden])``; ``ready`` changes when the job is done (``every_end``:
    however it ended)."""
    out = (
        store,
        not view.running,
        _ready(store, view, every_end),
        view.children,
        not view.running,
    )
    return (*out, not view.ended_badly) if retry else out


def polled(
    store: Mapping[str, Any] | None,
    view: JobView,
    *,
    retry: bool = False,
    every_end: bool = False,
) -> tuple:
    """A poll's outputs: ``(progress, interval disabled, ready, cancel disabled, message[,
    retry hidden])``; the message line (``Cancelling…``) clears once the job has ended."""
    message = no_update if view.running else ""
    ready = _ready(store, view, every_end)
    out = (view.children, not view.running, ready, not view.running, message)
    return (*out, not view.ended_badly) if retry else out


def cancel(n_clicks: int | None, store: Mapping[str, Any] | None) -> Any:
    """Ask the job in the store to stop (it stops at its next step): the message line."""
    if not n_clicks or not isinstance(store, Mapping) or not store.get("job"):
        return no_update
    try:
        get_state().service.cancel(str(store["job"]))
    except BackendError as err:
        return components.alert(str(err), kind="warning")
    return components.notice("Cancelling…")


def start_outputs(panel: JobPanel, ready: str, *, retry: bool = False) -> list[Output]:
    """The outputs of a panel's start callback, in :func:`started`'s order."""
    out = [
        Output(panel.store, "data"),
        Output(panel.interval, "disabled"),
        Output(ready, "data"),
        Output(panel.progress, "children"),
        Output(panel.cancel, "disabled"),
    ]
    return [*out, Output(panel.retry, "hidden")] if retry else out


def panel_callbacks(
    panel: JobPanel, *, ready: str, label: str, retry: bool = False, every_end: bool = False
) -> tuple[Callable[..., tuple], Callable[..., Any]]:
    """Register the poll and Cancel callbacks of ``panel`` (from a page module); returns
    them, ``poll(n_intervals, store)`` and ``cancel(n_clicks, store)``, to call directly.
    ``ready`` changes when the job is done (``every_end``: however it ended)."""

    def poll(_n: int | None, store: dict | None) -> tuple:
        """Progress of the panel's job; when it is done, ``ready`` changes."""
        return polled(store, read(store, label), retry=retry, every_end=every_end)

    def cancel_job(n_clicks: int | None, store: dict | None) -> Any:
        """Stop the panel's job (at its next step)."""
        return cancel(n_clicks, store)

    outputs = [
        Output(panel.progress, "children", allow_duplicate=True),
        Output(panel.interval, "disabled", allow_duplicate=True),
        Output(ready, "data", allow_duplicate=True),
        Output(panel.cancel, "disabled", allow_duplicate=True),
        Output(panel.message, "children", allow_duplicate=True),
    ]
    if retry:
        outputs.append(Output(panel.retry, "hidden", allow_duplicate=True))
    store = State(panel.store, "data")
    callback(*outputs, Input(panel.interval, "n_intervals"), store, prevent_initial_call=True)(
        poll
    )
    callback(
        Output(panel.message, "children", allow_duplicate=True),
        Input(panel.cancel, "n_clicks"),
        store,
        prevent_initial_call=True,
    )(cancel_job)
    return poll, cancel_job


def switch_cancel_callback(panel: JobPanel, cancel_switch: Callable[[], Any]) -> Callable:
    """Register (from the Model page) the Cancel of a panel that follows the server's model
    switch: ``cancel_switch()`` stops it and says what it did, in the panel's message line;
    returns the callback, ``on_cancel(n_clicks)``."""

    def on_cancel(n_clicks: int | None) -> Any:
        """Cancel the running switch (from any tab); the active model stays."""
        return cancel_switch() if n_clicks else no_update

    callback(
        Output(panel.message, "children", allow_duplicate=True),
        Input(panel.cancel, "n_clicks"),
        prevent_initial_call=True,
    )(on_cancel)
    return on_cancel


def switch_start_outputs(panel: JobPanel, button: str, *, first: bool = False) -> list[Output]:
    """The outputs of a Model-page button that starts the server's model switch: ``(message,
    progress, the button disabled, Cancel disabled)`` (``first``: the message output is the
    one not marked as a duplicate)."""
    return [
        Output(panel.message, "children", allow_duplicate=not first),
        Output(panel.progress, "children", allow_duplicate=True),
        Output(button, "disabled", allow_duplicate=True),
        Output(panel.cancel, "disabled", allow_duplicate=True),
    ]
