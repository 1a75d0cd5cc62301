"""Model: choose or upload a dataset, train a new TotalVI (live progress, cancel) or load a
checkpoint (ours, scvi-tools' or scvi-hub's ``model.pt``). When the new model's results are
ready, the whole app switches to it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dash import Input, Output, callback, dcc, html, no_update

from dashboard import components, ids, queries
from dashboard.backend.errors import (
    BackendError,
    DatasetNotFound,
    InvalidSelection,
    ModelNotFound,
)
from dashboard.backend.owner import current_owner, model_area
from dashboard.backend.paths import is_inside, list_datasets, list_model_folders, shown_path
from dashboard.pages import _jobs
from dashboard.pages import _query_map as qm
from dashboard.pages import _shared as sh
from dashboard.state import get_state
from dashboard.switching import SwitchView
from model.errors import CheckpointError
from model.model_folder import locate_model

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

sh.register_page(__name__, "/model", "Model")

NO_BATCH = "__none__"
#: Poll period of the Model page while a switch runs, and while none does (another tab
#: may start one).
POLL_BUSY_MS, POLL_IDLE_MS = 800, 2500
N_LATENT_RANGE = (2, 64)
MAX_EPOCHS_RANGE = (1, 2000)


def layout(model: Any = None, **_: Any) -> html.Div:
    """The Model page (works with or without an active model)."""
    state = get_state()
    service = state.service
    settings = service.settings
    datasets = _dataset_options(service)
    current = state.dataset
    value = current.path if current is not None and current.path else None
    if value is None and datasets:
        value = datasets[0]["value"]
    checkpoints = _checkpoint_options(settings.model_dir)
    limit = queries.max_upload_bytes(settings)
    switch = switch_outputs(state.switch.view())  # a reload shows a running job at once
    return html.Div(
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
                                                bounds=N_LATENT_RANGE,
                                            ),
                                            components.number_field(
                                                "Max epochs",
                                                ids.MODEL_MAX_EPOCHS,
                                                value=400,
                                                bounds=MAX_EPOCHS_RANGE,
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


def _dataset_options(service: AnalysisService) -> list[dict[str, str]]:
    base = service.settings.data_dir
    return [
        {"label": shown_path(p, base), "value": str(p)}
        for p in list_datasets(base)
        if is_inside(base, p)  # not symlinks that lead out of the data folder
    ]


def _checkpoint_options(model_dir: Path) -> list[dict[str, str]]:
    """The model folders under ``model_dir``, each labelled with what it holds."""
    options = []
    for folder in list_model_folders(model_dir):
        where = folder.root or folder.folder
        extras = [folder.layout] if folder.layout != "model folder" else []
        if folder.data is not None:
            extras.append(f"with its data ({folder.data.name})")
        if folder.card is not None:
            extras.append("model card")
        label = shown_path(where, model_dir)
        options.append(
            {"label": f"{label} · {', '.join(extras)}" if extras else label, "value": str(where)}
        )
    return options


def _active_view() -> Any:
    state = get_state()
    try:
        service, pair = state.require()
    except sh.NotReady as err:
        return components.notice(str(err))
    data = service.dataset(pair)
    model = service.model(pair)
    history = model.history
    rows = {
        "Dataset": pair.dataset.name or pair.dataset.path or pair.dataset.id,
        "Cells × genes × proteins": f"{data.n_cells:,} × {data.n_genes:,} × {data.n_proteins:,}",
        "Batches": _batches_line(data, pair.dataset.batch_key),
        "Read with": pair.dataset.options.describe(),
        "Model": pair.model.name or pair.model.path,
        "Latent dimensions": model.config.n_latent,
        "Checkpoint format": model.source,
    }
    panel = queries.panel_summary(service, pair)
    if panel:
        rows["Protein panel"] = panel
    rows["Protein capture efficiency"] = queries.efficiency_summary(service, pair)
    if data.minified is not None:
        rows["Counts"] = (
            "not in the file (minified: the latent posterior is stored); pages that need "
            "counts say so"
        )
    if history is not None and not history.empty:
        last = history.iloc[-1]
        rows["Trained epochs"] = len(history)
        rows["Validation ELBO"] = float(last.get("elbo_validation", float("nan")))
    card = service.hub_card(pair)
    if card is not None and card.model_parameters:
        shown = ", ".join(f"{k} {v}" for k, v in list(card.model_parameters.items())[:8])
        rows["Model card"] = f"README.md: {shown}"
    return components.kv_table(rows)


def _batches_line(data: Any, key: str | None) -> str:
    """``17 (sample_id): s00, s01, …`` — how many batches, their key, the first names."""
    names = [str(b) for b in data.batch_categories]
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return f"{data.n_batch} ({key or 'no batch key'}): {shown}"


# ---------------------------------------------------------------------------- dataset
on_upload = qm.upload_callback("dataset", _dataset_options)


@callback(*qm.choice_io(ids.MODEL_DATASET, ids.MODEL_BATCH_KEY, ids.MODEL_DATASET_INFO))
def on_dataset(path: str | None) -> tuple:
    """Read the chosen dataset: its size and the obs columns that can be the batch key."""
    if not path:
        return [], None, ""
    state = get_state()
    try:
        path = sh.dataset_path(state.service, path)
        ref = state.service.open_dataset(path, untrusted=True)
    except BackendError as err:
        return [], None, components.alert(str(err), kind="warning")
    data = state.service.dataset(ref)
    columns = [
        c
        for c in queries.obs_columns(state.service, ref)
        if 1 < data.obs[c].nunique() < 200 or c == "batch"
    ]
    options = [{"label": "(none: one batch)", "value": NO_BATCH}] + [
        {"label": c, "value": c} for c in columns
    ]
    active = state.dataset
    default = "batch" if "batch" in columns else NO_BATCH
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


def train_job(
    service: AnalysisService,
    path: str,
    *,
    batch_key: str | None,
    n_latent: int,
    max_epochs: int,
) -> str:
    """Read the dataset with its batch key here (a bad file or key raises at once), then
    start its training, saved under the model folder, as the server's model switch.

    With ``settings.train_in_process`` (the default) training runs in a child process whose
    pid is in the job's record: cancel stops it at the next step (or terminates it), and a
    crash or kill leaves this server, the active model and the cache as they were.
    """
    state = get_state()
    state.switch.check_idle()  # before reading a large file for nothing
    dataset = service.open_dataset(path, batch_key=batch_key, untrusted=True)
    stem = Path(path).name.split(".")[0] or "model"
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    area = model_area(service.settings.model_dir, current_owner())  # the user's own models
    out, n = area / name, 1
    while out.exists():  # two trainings started in the same second keep both models
        n += 1
        out = area / f"{name}-{n}"

    def submit() -> str:
        state.set_dataset(dataset)
        return service.submit_train(
            dataset,
            process=service.settings.train_in_process,
            out_dir=str(out),
            n_latent=n_latent,
            max_epochs=max_epochs,
        )

    return state.switch.start("train", submit, name=out.name)


def load_job(
    service: AnalysisService,
    path: str | None,
    checkpoint: str,
    *,
    batch_key: str | None,
    own_data: bool = True,
) -> str:
    """Start, as the server's model switch: open the model folder with the data saved in it
    (``own_data``, when it has some) or with the dataset at ``path``, read as the
    checkpoint's registry says (layer, keys, modalities).

    ``batch_key`` (the page's batch-key choice) is used only when the registered batch key
    is not a column of the chosen dataset, so another dataset with another column name still
    loads.
    """
    state = get_state()
    folder = sh.checkpoint_path(service, checkpoint)  # only under the model folder
    try:
        has_data = locate_model(folder).data is not None
    except CheckpointError as err:
        raise ModelNotFound(str(err)) from None
    data = None if own_data and has_data else path
    if data is None and not has_data:
        msg = "Choose or upload a dataset first."
        raise InvalidSelection(msg)

    def run(ctx: JobContext) -> Pair:
        ctx.progress(0.05, "reading the data and the checkpoint")
        try:
            pair = service.open_model(folder, data=data, untrusted=True)
        except DatasetNotFound as err:  # only a missing batch column is worth a second read
            if data is None or batch_key is None or "no obs column" not in str(err):
                raise
            ctx.check()
            pair = service.open_model(
                folder, data=data, flags={"batch_key": batch_key}, untrusted=True
            )
        state.set_dataset(pair.dataset)
        ctx.check()
        return pair

    def submit() -> str:
        return service.jobs.submit(
            "load_model",
            run,
            params={"path": data, "checkpoint": checkpoint, "batch_key": batch_key},
            result_json=lambda pair: pair.to_dict(),
        )

    return state.switch.start("load", submit, name=Path(checkpoint).name)


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
    service = get_state().service
    try:
        if not path:
            msg = "Choose or upload a dataset first."
            raise InvalidSelection(msg)
        train_job(
            service,
            sh.dataset_path(service, path),
            batch_key=None if batch_key in (None, NO_BATCH) else batch_key,
            n_latent=queries.whole_number(n_latent, *N_LATENT_RANGE, "Latent dimensions"),
            max_epochs=queries.whole_number(max_epochs, *MAX_EPOCHS_RANGE, "Max epochs"),
        )
    except BackendError as err:
        return components.alert(str(err), kind="warning"), no_update, no_update, no_update
    out = switch_outputs(get_state().switch.view())
    note = components.notice("Training started on the server; close this tab if you like.")
    return note, out["progress"], out["start_disabled"], out["cancel_disabled"]


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
    service = get_state().service
    try:
        if not target:
            msg = "Choose a saved model or type the path of a model folder."
            raise InvalidSelection(msg)
        load_job(
            service,
            sh.dataset_path(service, path) if path else None,
            str(target),
            batch_key=None if batch_key in (None, NO_BATCH) else batch_key,
            own_data=own is None or "own" in (own if isinstance(own, list) else []),
        )
    except BackendError as err:
        return components.alert(str(err), kind="warning"), no_update, no_update, no_update
    out = switch_outputs(get_state().switch.view())
    return components.notice("Loading…"), out["progress"], out["start_disabled"], False


@callback(
    Output(ids.MODEL_PROGRESS, "children"),
    Output(ids.MODEL_QUERY_PROGRESS, "children"),
    Output(ids.MODEL_CANCEL, "disabled"),
    Output(ids.MODEL_QUERY_CANCEL, "disabled"),
    Output(ids.MODEL_TRAIN, "disabled"),
    Output(ids.MODEL_LOAD, "disabled"),
    Output(ids.MODEL_QUERY_START, "disabled"),
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
    view = get_state().switch.cancel()
    if not view.running:
        return components.notice("Nothing is running.")
    if view.stage in {"train", "map"}:
        process = view.stage == "train" and get_state().service.settings.train_in_process
        more = "; its process is ended if it does not" if process else ""
        return components.notice(f"Cancelling… (training stops at the next step{more})")
    return components.notice(f"Cancelling {view.label.lower()}…")


# ---------------------------------------------------------------- map new data (query)
on_query_upload = qm.upload_callback("query", _dataset_options)


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
