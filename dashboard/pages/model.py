"""Model: choose or upload a dataset, train a new TotalVI (live progress, cancel) or load a
checkpoint (ours, scvi-tools' or scvi-hub's ``model.pt``). When the new model's results are
ready, the whole app switches to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, ids
from dashboard.pages import _jobs
from dashboard.pages import _query_map as qm
from dashboard.pages import _shared as sh
from dashboard.views import model as mv
from dashboard.views.errors import BackendError, InvalidSelection, NotReady
from dashboard.views.state import get_state
from dashboard.views.switching import SwitchView

sh.register_page(__name__, "/model", "Model")

#: Poll period of the Model page while a switch runs, and while none does (another tab
#: may start one).
POLL_BUSY_MS, POLL_IDLE_MS = 800, 2500


def layout(model: Any = None, **_: Any) -> html.Div:
    """The Model page (works with or without an active model)."""
    state = get_state()
    service = state.service
    settings = service.settings
    datasets = mv.dataset_options(service)
    current = state.dataset
    value = current.path if current is not None and current.path else None
    if value is None and datasets:
        value = datasets[0]["value"]
    checkpoints = mv.checkpoint_options(settings.model_dir)
    limit = int(settings.max_upload_bytes)
    switch = switch_outputs(state.switch.view())  # a reload shows a running job at once
    page = html.Div(
        [
            components.page_header(
                "Model",
                "Train TotalVI on your CITE-seq data or load a trained model; the other "
                "pages switch to it as soon as its results are ready.",
            ),
            components.card("Active model", _active_view(), class_name="card-active"),
            components.card(
                "Progress",
                components.job_panel(
                    ids.MODEL_JOB,
                    progress=switch["progress"],
                    running=not switch["cancel_disabled"],
                    poll_ms=None,  # the page's interval polls the switch for both panels
                    store=False,
                ),
                subtitle="Training, loading and mapping run on the server: every tab, and a "
                "reload, shows them here.",
            ),
            html.Div(
                [
                    components.card(
                        "1 · Dataset",
                        [
                            components.dropdown_field(
                                "Dataset in the data folder",
                                ids.MODEL_DATASET,
                                options=datasets,
                                value=value,
                                clearable=False,
                                placeholder="No datasets found: upload one",
                                hint="Files in the server's data folder (data_dir)",
                            ),
                            qm.upload_zone("dataset", limit),
                            components.dropdown_field(
                                "Batch key",
                                ids.MODEL_BATCH_KEY,
                                clearable=False,
                                hint="obs column with the sample/batch of each cell, for "
                                "training; a loaded model reads the keys it was set up with",
                            ),
                            dcc.Loading(
                                html.Div(id=ids.MODEL_DATASET_INFO, className="muted"), type="dot"
                            ),
                        ],
                    ),
                    html.Div(
                        [
                            components.card(
                                "2 · Train a new model",
                                [
                                    html.Div(
                                        [
                                            components.number_field(
                                                "Latent dimensions",
                                                ids.MODEL_N_LATENT,
                                                value=20,
                                                bounds=mv.N_LATENT_RANGE,
                                            ),
                                            components.number_field(
                                                "Max epochs",
                                                ids.MODEL_MAX_EPOCHS,
                                                value=400,
                                                bounds=mv.MAX_EPOCHS_RANGE,
                                                hint="stops early when validation ELBO stalls",
                                            ),
                                        ],
                                        className="row-inline",
                                    ),
                                    qm.start_button("Train", ids.MODEL_TRAIN, switch),
                                ],
                            ),
                            components.card(
                                "… or load a checkpoint",
                                [
                                    components.dropdown_field(
                                        "Saved model",
                                        ids.MODEL_CHECKPOINT,
                                        options=checkpoints,
                                        placeholder="Models in the model folder",
                                        hint="Folders with a model.pt in model_dir: saved by "
                                        "us or scvi-tools, scvi-hub folders, hub downloads",
                                    ),
                                    components.field(
                                        "or a path",
                                        dcc.Input(
                                            id=ids.MODEL_CHECKPOINT_PATH,
                                            type="text",
                                            placeholder="/path/to/model_dir (ours, "
                                            "scvi-tools or scvi-hub)",
                                            className="input input-wide",
                                        ),
                                    ),
                                    dcc.Checklist(
                                        id=ids.MODEL_OWN_DATA,
                                        options=[
                                            {
                                                "label": " Use the data saved with the model "
                                                "(when it has some), read as its registry "
                                                "says; else the dataset chosen in 1",
                                                "value": "own",
                                            }
                                        ],
                                        value=["own"],
                                        className="checklist",
                                    ),
                                    qm.start_button(
                                        "Load", ids.MODEL_LOAD, switch, kind="secondary"
                                    ),
                                ],
                            ),
                        ],
                        className="stack",
                    ),
                ],
                className="grid-2",
            ),
            qm.query_card(datasets, limit, switch),
            dcc.Interval(id=ids.MODEL_INTERVAL, interval=switch["interval"]),
        ],
        className="page-model",
    )
    return sh.with_simulated_banner(page)


def _active_view() -> Any:
    try:
        service, pair = get_state().require()
    except NotReady as err:
        return components.notice(str(err))
    return components.kv_table(mv.active_rows(service, pair))


# ---------------------------------------------------------------------------- dataset
dataset_upload = qm.upload_callback("dataset", mv.dataset_options)


@callback(*qm.choice_io(ids.MODEL_DATASET, ids.MODEL_BATCH_KEY, ids.MODEL_DATASET_INFO))
def on_dataset(path: str | None) -> tuple:
    """Read the chosen dataset: its size and the obs columns that can be the batch key."""
    if not path:
        return [], None, ""
    state = get_state()
    try:
        path = mv.dataset_path(state.service, path)
        ref = state.service.open_dataset(path, untrusted=True)
    except BackendError as err:
        return [], None, components.alert(str(err), kind="warning")
    data = state.service.dataset(ref)
    options, columns = mv.batch_key_options(data)
    active = state.dataset
    default = "batch" if "batch" in columns else mv.NO_BATCH
    if active is not None and active.path == path and active.batch_key in columns:
        default = active.batch_key
    info = (
        f"{data.n_cells:,} cells × {data.n_genes:,} genes × {data.n_proteins:,} proteins; "
        f"obs columns: {', '.join(map(str, data.obs.columns)) or 'none'}"
    )
    return options, default, qm.with_notices(info, data)


# ------------------------------------------------------------------------- train/load
def switch_outputs(view: SwitchView) -> dict[str, Any]:
    """What the page shows of the server's model switch: the progress panel (in the
    Progress card, or the map card for a mapping), which buttons are off, the poll period."""
    panel = components.job_progress(
        f"{view.label} {view.name}".strip(),
        running=view.running,
        progress=view.progress,
        message=view.message,
        outcome=view.outcome,
        line=view.line,
    )
    is_map = view.kind == "map"
    return {
        "progress": [] if is_map else panel,
        "query_progress": panel if is_map else [],
        "cancel_disabled": not view.running or is_map,
        "query_cancel_disabled": not view.running or not is_map,
        "start_disabled": view.running,  # one switch at a time, whichever tab asks
        "interval": POLL_BUSY_MS if view.running else POLL_IDLE_MS,
    }


@callback(
    *_jobs.switch_start_outputs(ids.MODEL_JOB, ids.MODEL_TRAIN, first=True),
    Input(ids.MODEL_TRAIN, "n_clicks"),
    *sh.values_of(
        ids.MODEL_DATASET, ids.MODEL_BATCH_KEY, ids.MODEL_N_LATENT, ids.MODEL_MAX_EPOCHS
    ),
    prevent_initial_call=True,
)
def on_train(
    n_clicks: int | None, path: str | None, batch_key: str | None, n_latent: Any, max_epochs: Any
) -> tuple:
    """Start training on the chosen dataset (progress below in every tab, cancel any time):
    ``(message, progress panel, Train disabled, Cancel disabled)``."""
    if not n_clicks:
        return no_update, no_update, no_update, no_update

    def train(service: Any) -> None:
        mv.train_job(
            service,
            mv.dataset_path(service, _required(path, "Choose or upload a dataset first.")),
            batch_key=mv.batch_key(batch_key),
            n_latent=mv.whole_number(n_latent, *mv.N_LATENT_RANGE, "Latent dimensions"),
            max_epochs=mv.whole_number(max_epochs, *mv.MAX_EPOCHS_RANGE, "Max epochs"),
        )

    return _start(train, "Training started on the server; close this tab if you like.")


@callback(
    *_jobs.switch_start_outputs(ids.MODEL_JOB, ids.MODEL_LOAD),
    Input(ids.MODEL_LOAD, "n_clicks"),
    *sh.values_of(ids.MODEL_DATASET, ids.MODEL_BATCH_KEY, ids.MODEL_CHECKPOINT),
    *sh.values_of(ids.MODEL_CHECKPOINT_PATH, ids.MODEL_OWN_DATA),
    prevent_initial_call=True,
)
def on_load(
    n_clicks: int | None,
    path: str | None,
    batch_key: str | None,
    checkpoint: str | None,
    typed: str | None,
    own: list | None = None,
) -> tuple:
    """Load a model folder (typed path wins over the list) with the data saved in it, or
    the chosen dataset: ``(message, progress panel, Load disabled, Cancel disabled)``."""
    if not n_clicks:
        return no_update, no_update, no_update, no_update
    target = (typed or "").strip() or checkpoint

    def load(service: Any) -> None:
        _required(target, "Choose a saved model or type the path of a model folder.")
        mv.load_job(
            service,
            mv.dataset_path(service, path) if path else None,
            str(target),
            batch_key=mv.batch_key(batch_key),
            own_data=mv.own_data(own),
        )

    return _start(load, "Loading…", cancel_disabled=False)


def _required(value: Any, msg: str) -> Any:
    """``value``; :class:`InvalidSelection` saying ``msg`` when it is empty."""
    if not value:
        raise InvalidSelection(msg)
    return value


def _start(
    start: Callable[[Any], None], note: str, *, cancel_disabled: bool | None = None
) -> tuple:
    """``start(service)`` starts the server's model switch: ``(message, progress panel,
    start button disabled, Cancel disabled)`` (``cancel_disabled``: as given, else as the
    switch now is); a refusal is one warning line and nothing else changes."""
    try:
        start(get_state().service)
    except BackendError as err:
        return components.alert(str(err), kind="warning"), no_update, no_update, no_update
    out = switch_outputs(get_state().switch.view())
    off = out["cancel_disabled"] if cancel_disabled is None else cancel_disabled
    return components.notice(note), out["progress"], out["start_disabled"], off


@callback(
    *sh.props_of(Output, "children", ids.MODEL_PROGRESS, ids.MODEL_QUERY_PROGRESS),
    *sh.props_of(Output, "disabled", ids.MODEL_CANCEL, ids.MODEL_QUERY_CANCEL),
    *sh.props_of(Output, "disabled", ids.MODEL_TRAIN, ids.MODEL_LOAD, ids.MODEL_QUERY_START),
    Output(ids.MODEL_INTERVAL, "interval"),
    Input(ids.MODEL_INTERVAL, "n_intervals"),
)
def poll_switch(_n: int | None) -> tuple:
    """The server's model switch as this tab shows it (every tab polls the same record):
    progress panels, Cancel/Train/Load/Map enabled or not, the poll period."""
    out = switch_outputs(get_state().switch.view())
    return (
        out["progress"],
        out["query_progress"],
        out["cancel_disabled"],
        out["query_cancel_disabled"],
        out["start_disabled"],
        out["start_disabled"],
        out["start_disabled"],
        out["interval"],
    )


def cancel_switch() -> html.Div:
    """Cancel the server's running model switch (whichever tab started it); what to say."""
    return components.notice(mv.cancel_switch())


# ---------------------------------------------------------------- map new data (query)
query_upload = qm.upload_callback("query", mv.dataset_options)


@callback(*qm.choice_io(ids.MODEL_QUERY_DATASET, ids.MODEL_QUERY_BATCH_KEY, ids.MODEL_QUERY_INFO))
def on_query_dataset(path: str | None) -> tuple:
    """Read the chosen new data: size, shared genes/proteins, batch-key candidates."""
    return qm.dataset_choice(path)


@callback(
    *_jobs.switch_start_outputs(ids.MODEL_QUERY_JOB, ids.MODEL_QUERY_START, first=True),
    Input(ids.MODEL_QUERY_START, "n_clicks"),
    *sh.values_of(ids.MODEL_QUERY_DATASET, ids.MODEL_QUERY_BATCH_KEY, ids.MODEL_QUERY_MAX_EPOCHS),
    prevent_initial_call=True,
)
def on_map_start(
    n_clicks: int | None, path: str | None, batch_key: str | None, max_epochs: Any
) -> tuple:
    """Map the new data onto the active model (progress below in every tab, cancel any
    time): ``(message, progress panel, Map disabled, Cancel disabled)``."""
    if not n_clicks:
        return no_update, no_update, no_update, no_update
    message = qm.start(path, batch_key, max_epochs)
    out = switch_outputs(get_state().switch.view())
    if out["query_cancel_disabled"]:  # refused: nothing started
        return message, no_update, no_update, no_update
    return message, out["query_progress"], out["start_disabled"], out["query_cancel_disabled"]


# the Cancel of either panel stops whichever step runs (training, loading, mapping or the
# preparation after it); the active model stays
on_cancel = _jobs.switch_cancel_callback(ids.MODEL_JOB, cancel_switch)
on_map_cancel = _jobs.switch_cancel_callback(ids.MODEL_QUERY_JOB, cancel_switch)
