"""The Model page's "Map new data onto this model" card and its two dataset pickers'
uploads: layout, what the picked files hold, starting the mapping. Plain functions; the thin
callbacks are in ``pages/model.py`` (Dash skips this module when it collects pages because
of the leading underscore). The mapping itself: :mod:`dashboard.views.mapping`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, ids
from dashboard.pages import _jobs
from dashboard.views import mapping
from dashboard.views import model as mv
from dashboard.views.errors import BackendError, NotReady
from dashboard.views.state import get_state

if TYPE_CHECKING:
    from dashboard.backend.service import AnalysisService


# ------------------------------------------------------------------------------ layout
def query_card(
    dataset_options: list[dict[str, str]], limit_bytes: int, switch: dict[str, Any]
) -> html.Section:
    """The card: query file (data folder or upload), batch key, epochs, Map / Cancel and
    a progress block, as the server's model switch (``switch``: the page's
    ``switch_outputs``) is now."""
    return components.card(
        "Map new data onto this model",
        [
            html.P(
                "Add new cells (an .h5ad with or without proteins) to the active model "
                "without retraining it (scArches). Their cells get the reference's cell "
                "types by nearest neighbours and predicted proteins where none were measured.",
                className="muted",
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Query dataset",
                        ids.MODEL_QUERY_DATASET,
                        options=dataset_options,
                        placeholder="A dataset from the data folder, or upload one",
                    ),
                    components.dropdown_field(
                        "Batch key",
                        ids.MODEL_QUERY_BATCH_KEY,
                        clearable=False,
                        hint="obs column with the query's samples (each a new batch)",
                    ),
                    components.number_field(
                        "Max epochs",
                        ids.MODEL_QUERY_MAX_EPOCHS,
                        value=mapping.DEFAULT_EPOCHS,
                        bounds=mv.MAX_EPOCHS_RANGE,
                        hint="only the query's new batch weights train",
                    ),
                ],
                className="row-inline",
            ),
            upload_zone("query", limit_bytes),
            dcc.Loading(html.Div(id=ids.MODEL_QUERY_INFO, className="muted"), type="dot"),
            components.job_panel(
                ids.MODEL_QUERY_JOB,
                controls=[start_button("Map", ids.MODEL_QUERY_START, switch)],
                progress=switch["query_progress"],
                running=not switch["query_cancel_disabled"],
                poll_ms=None,  # the Model page's interval polls the switch
                store=False,
            ),
        ],
        class_name="card-query",
    )


def start_button(
    label: str, button_id: str, switch: dict[str, Any], *, kind: str = "primary"
) -> html.Button:
    """A Model-page button that starts a model switch (Train, Load, Map): off while one
    runs, whichever tab started it (``switch``: the page's ``switch_outputs``)."""
    return html.Button(
        label, id=button_id, className=f"btn btn-{kind}", disabled=switch["start_disabled"]
    )


# ------------------------------------------------------------------------ the query file
#: The Model page's two dataset pickers, by upload target: the drop zone, the dropdown it
#: fills, what it asks for.
PICKERS = {
    "dataset": (ids.MODEL_UPLOAD_ZONE, ids.MODEL_DATASET, "an .h5ad / .h5mu / 10x .h5 file"),
    "query": (
        ids.MODEL_QUERY_UPLOAD_ZONE,
        ids.MODEL_QUERY_DATASET,
        "the new data (.h5ad / .h5mu / 10x .h5)",
    ),
}


def upload_zone(target: str, limit_bytes: int) -> html.Div:
    """The drop zone of an upload ``target`` (``dataset``, ``query``), the panel of the job
    that checks what arrived, and its status line."""
    zone, _, what = PICKERS[target]
    return components.upload_with_status(
        zone.zone,
        status_id=zone.status,
        check=zone.check,
        checked=zone.checked,
        target=target,
        done_store=zone.done,
        limit_bytes=limit_bytes,
        what=what,
    )


@dataclass(frozen=True)
class UploadCallbacks:
    """The callbacks of one drop zone (to call directly in tests): ``arrived(done)`` follows
    the job that checks the file, ``checked(ended)`` shows its outcome; the job panel's
    ``poll(n, store)`` and ``cancel(n_clicks, store)``."""

    arrived: Callable[[Any], tuple]
    checked: Callable[[Any], tuple]
    poll: Callable[..., tuple]
    cancel: Callable[..., Any]


def upload_callback(
    target: str, list_options: Callable[[AnalysisService], list[dict[str, str]]]
) -> UploadCallbacks:
    """Register (from the Model page) the callbacks of the drop zone of ``target``: the job
    panel that follows the check of an arrived file (:func:`upload_arrived`), and what
    became of it once the check ended (:func:`upload_checked`: the dropdown's options and
    choice, and the zone's line)."""
    zone, dropdown, _ = PICKERS[target]
    panel = zone.check

    def on_arrived(done: dict[str, Any] | None) -> tuple:
        """Follow the job that checks a file the drop zone sent (progress, Cancel)."""
        return upload_arrived(done, target)

    def on_checked(ended: dict[str, Any] | None) -> tuple:
        """Show what became of an uploaded file (stored under ``<data folder>/uploads`` and
        selected, or refused with one line that clears the choice)."""
        return upload_checked(ended, target, list_options)

    callback(
        *_jobs.start_outputs(panel, zone.checked),
        Output(zone.status, "children", allow_duplicate=True),
        Input(zone.done, "data"),
        prevent_initial_call=True,
    )(on_arrived)
    callback(
        Output(dropdown, "options"),
        Output(dropdown, "value"),
        Output(zone.status, "children"),
        Output(panel.progress, "children", allow_duplicate=True),
        Input(zone.checked, "data"),
        prevent_initial_call=True,
    )(on_checked)
    poll, cancel = _jobs.panel_callbacks(
        panel, ready=zone.checked, label="Checking the file", every_end=True
    )
    return UploadCallbacks(on_arrived, on_checked, poll, cancel)


def choice_io(dropdown: str, batch_key: str, info: str) -> list[Any]:
    """The wiring of a dataset dropdown's callback: the batch-key options and choice and the
    summary line, from the dropdown's value."""
    return [
        Output(batch_key, "options"),
        Output(batch_key, "value"),
        Output(info, "children"),
        Input(dropdown, "value"),
    ]


def upload_arrived(done: Mapping[str, Any] | None, target: str) -> tuple:
    """The job panel's start outputs and a cleared status line, after the drop zone of
    ``target`` sent a file.

    ``done`` is what the browser put in the zone's store: the id of the job that checks
    the file (looked up here, the owner's only: the browser never says what was stored),
    or why the file did not reach the server; then, and for an unknown id, the outcome
    store changes at once so that :func:`upload_checked` says why.
    """
    if not isinstance(done, Mapping):
        return (no_update,) * 6
    found = mv.upload_check(done.get("upload"), target) if "upload" in done else None
    if found is None:
        why = {"unknown": True} if "upload" in done else dict(done)
        return None, True, {**why, "t": time.time()}, [], True, ""
    store, view = _jobs.start(lambda: found.job, f"Checking {found.file or 'the file'}")
    return (*_jobs.started(store, view, every_end=True), "")


def upload_checked(
    ended: Mapping[str, Any] | None,
    target: str,
    list_options: Callable[[AnalysisService], list[dict[str, str]]],
) -> tuple:
    """Dropdown options, choice, message and a cleared progress block once the check of an
    upload to ``target`` ended (``ended``: the panel's store, ``{"job": id, "t": ...}``,
    or why the file never reached a job).

    A stored file is listed and chosen; a refused one (or a cancelled check) clears the
    choice, so that Train or Map cannot go on with an earlier file, and says why in one
    line. ``list_options(service)`` lists the data folder.
    """
    if not isinstance(ended, Mapping):
        return (no_update,) * 4
    service = get_state().service
    found = mv.upload_check(ended.get("job"), target) if "job" in ended else None
    if found is not None and found.status == "done" and found.path is not None:
        return list_options(service), str(found.path), uploaded(found.path, found.notices), []
    if found is not None and found.status in {"queued", "running"}:
        return (no_update,) * 4
    if found is not None:
        name = found.file or "the file"
        line = f"Checking {name} was cancelled" if found.status == "cancelled" else found.error
    elif "tooLarge" in ended:
        limit = mv.megabytes(service.settings.max_upload_bytes)
        line = f"The file is over the upload limit of {limit}"
    elif "failed" in ended:
        status = ended.get("failed")
        code = f" (HTTP {status})" if isinstance(status, int) and status > 0 else ""
        line = f"The upload did not reach the server{code}; try again"
    else:
        line = "This upload is unknown here (the server restarted?); upload the file again"
    return no_update, None, components.alert(refused(line), kind="warning"), []


def refused(err: Exception | str) -> str:
    """The message of a refused upload: the reason, and that nothing was stored."""
    return f"{str(err).rstrip('.')}. Nothing was stored; choose a dataset or upload another."


def uploaded(path: Path, notices: tuple[str, ...]) -> html.Div:
    """The success alert of an upload, with the notices of reading it on the same line."""
    notes = " ".join(f"Note: {n}." for n in notices)
    message = f"Uploaded and checked {path.name}." + (f" {notes}" if notes else "")
    return components.alert(message, kind="success")


def with_notices(info: str, data: Any) -> Any:
    """A dataset's one-line summary, followed by one info alert per notice of reading it
    (e.g. duplicate gene names made unique); just the summary when there are none."""
    notes = mv.upload_notices(data)
    if not notes:
        return info
    return [html.Div(info), *(components.alert(f"Note: {n}.", kind="info") for n in notes)]


def dataset_choice(path: str | None) -> tuple:
    """Batch-key options, default and a one-line summary of the chosen query file (how
    many of the active model's genes and proteins it has)."""
    if not path:
        return [], None, ""
    state = get_state()
    service = state.service
    try:
        path = mv.dataset_path(service, path)
        ref = service.open_query(path, untrusted=True)
    except BackendError as err:
        return [], None, components.alert(str(err), kind="warning")
    data = service.dataset(ref)
    mapping.remember_genes(path, data.var_names)
    options, columns = mv.batch_key_options(data)
    default = "batch" if "batch" in columns else mv.NO_BATCH
    info = mapping.query_summary(service, state.pair, data)
    return options, default, with_notices(info, data)


def start(path: str | None, batch_key: str | None, max_epochs: Any) -> html.Div:
    """Validate the form and start the mapping: the message to show (problems are one
    warning line and nothing starts)."""
    try:
        service, pair = get_state().require()
    except NotReady:
        msg = "Train or load a model first: the new data is mapped onto the active model."
        return components.alert(msg, kind="warning")
    try:
        path = mapping.start(service, pair, path, batch_key, max_epochs)
    except BackendError as err:
        return components.alert(str(err), kind="warning")
    return components.notice(f"Mapping {Path(path).name} onto {pair.model.name or 'the model'}.")
