"""What the Model page needs: the data and model folders' listings and the names the
browser sends checked against them, what a dataset offers as batch keys, the active model
in rows, and training or loading a model as the workspace's model switch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend.errors import (
    BackendError,
    DatasetNotFound,
    InvalidSelection,
    ModelNotFound,
)
from dashboard.backend.owner import current_owner, model_area
from dashboard.backend.paths import (
    is_inside,
    list_datasets,
    list_model_folders,
    resolve_in_folder,
    shown_path,
)
from dashboard.backend.uploads import megabytes
from dashboard.views.state import get_state
from dashboard.views.values import panel_summary
from model.errors import CheckpointError
from model.model_folder import locate_model
from model.protein_scale import SCALE_SHORT

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

__all__ = ["megabytes"]

#: The batch-key choice "no batch key: one batch".
NO_BATCH = "__none__"
N_LATENT_RANGE = (2, 64)
MAX_EPOCHS_RANGE = (1, 2000)


# ------------------------------------------------------------------------------ folders
def dataset_options(service: AnalysisService) -> list[dict[str, str]]:
    """The datasets in the data folder, as dropdown options (label: the path inside it)."""
    base = service.settings.data_dir
    return [
        {"label": shown_path(p, base), "value": str(p)}
        for p in list_datasets(base)
        if is_inside(base, p)  # not symlinks that lead out of the data folder
    ]


def checkpoint_options(model_dir: Path) -> list[dict[str, str]]:
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


def dataset_path(service: AnalysisService, name: str) -> str:
    """A dataset name from the browser as a path inside the data folder (or the dataset
    opened at start-up); ``..``, outside paths and symlinks out are refused."""
    active = get_state().dataset
    allowed = (active.path,) if active is not None and active.path else ()
    return str(resolve_in_folder(service.settings.data_dir, name, allowed=allowed))


def checkpoint_path(service: AnalysisService, name: str) -> str:
    """A model folder from the browser as a path inside the model folder."""
    path = resolve_in_folder(
        service.settings.model_dir,
        name,
        what="model folder",
        where="model folder",
        error=ModelNotFound,
    )
    return str(path)


@dataclass(frozen=True)
class UploadCheck:
    """What became of one upload, read from the job that checks it: its status
    (``queued``, ``running``, ``done``, ``failed``, ``cancelled``), the stored file and the
    notices of reading it once done, the one-line reason once refused."""

    job: str
    status: str
    file: str = ""
    path: Path | None = None
    notices: tuple[str, ...] = ()
    error: str = ""


def upload_check(token: Any, target: str) -> UploadCheck | None:
    """The upload whose job id the drop zone of ``target`` holds; ``None`` when unknown:
    forged, another user's, of the other zone, or forgotten since."""
    if not isinstance(token, str) or not token or len(token) > 64:
        return None
    try:
        info = get_state().service.job(token)
    except BackendError:
        return None
    if info.kind != "upload" or info.params.get("target") != target:
        return None
    status = str(info.status)
    result = info.result if isinstance(info.result, dict) and status == "done" else {}
    summary = result.get("summary") if isinstance(result.get("summary"), dict) else {}
    return UploadCheck(
        token,
        status,
        file=str(info.params.get("file") or ""),
        path=Path(result["path"]) if result.get("path") else None,
        notices=tuple(str(n) for n in summary.get("notices") or ()),
        error=str(info.error or ""),
    )


def upload_notices(data: Any) -> tuple[str, ...]:
    """The notices of what an upload's validation read (e.g. duplicate names made unique)."""
    return tuple(str(n) for n in getattr(data, "notices", ()) or ())


# ------------------------------------------------------------------------------ datasets
def batch_key_options(data: Any) -> tuple[list[dict[str, str]], list[str]]:
    """The batch-key dropdown of a dataset: "none" and each obs column with 2 to 199
    values (or named ``batch``); and those columns."""
    columns = [str(c) for c in data.obs.columns if 1 < data.obs[c].nunique() < 200 or c == "batch"]
    options = [{"label": "(none: one batch)", "value": NO_BATCH}] + [
        {"label": c, "value": c} for c in columns
    ]
    return options, columns


def batch_key(value: str | None) -> str | None:
    """The batch key a dropdown value names (``None``: none, one batch)."""
    return None if value in (None, NO_BATCH) else value


def whole_number(value: Any, lo: int, hi: int, what: str) -> int:
    """A number field from the browser as an ``int`` in ``lo..hi``, or one line naming the
    field (``2.5``, ``"ten"``, ``true`` and ``1e400`` are refused, never truncated)."""
    try:
        v = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError, OverflowError):
        v = float("nan")
    if not v.is_integer() or not lo <= v <= hi:
        msg = f"{what} must be a whole number from {lo} to {hi}"
        raise InvalidSelection(msg)
    return int(v)


# ------------------------------------------------------------------------- active model
def active_rows(service: AnalysisService, pair: Pair) -> dict[str, Any]:
    """The active model and its data, as the rows of the Model page's table."""
    data = service.dataset(pair)
    model = service.model(pair)
    history = model.history
    rows = {
        "Dataset": pair.dataset.name or pair.dataset.path or pair.dataset.id,
        "Cells × genes × proteins": f"{data.n_cells:,} × {data.n_genes:,} × {data.n_proteins:,}",
        "Batches": batches_line(data, pair.dataset.batch_key),
        "Read with": pair.dataset.options.describe(),
        "Model": pair.model.name or pair.model.path,
        "Latent dimensions": model.config.n_latent,
        "Checkpoint format": model.source,
    }
    panel = panel_summary(service, pair)
    if panel:
        rows["Protein panel"] = panel
    rows["Protein capture efficiency"] = efficiency_summary(service, pair)
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
    return rows


def batches_line(data: Any, key: str | None) -> str:
    """``17 (sample_id): s00, s01, …`` — how many batches, their key, the first names."""
    names = [str(b) for b in data.batch_categories]
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return f"{data.n_batch} ({key or 'no batch key'}): {shown}"


def efficiency_summary(service: AnalysisService, pair: Pair) -> str:
    """The model's learned protein capture efficiency in one line (over the proteins each
    batch measured), and the scale denoised proteins are shown on: ``"0.37-0.40 (14
    proteins x 1 batch); denoised proteins: measured scale"``, or that it has none."""
    model = service.model(pair)
    if not model.has_protein_efficiency:
        return "none learned (scvi-tools before 1.3.1, or 1): one protein scale"
    eff = model.protein_efficiency()
    values = eff.to_numpy()
    if model.protein_batch_mask is not None:  # a batch without the antibody learned nothing
        values = values[np.asarray(model.protein_batch_mask, dtype=bool)]
    n_batch = eff.shape[0]
    return (
        f"{values.min():.2f}-{values.max():.2f} ({eff.shape[1]} proteins x {n_batch} "
        f"batch{'es' if n_batch != 1 else ''}); denoised proteins: "
        f"{SCALE_SHORT[service.protein_scale()]}"
    )


# ------------------------------------------------------------------------ train / load
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
    folder = checkpoint_path(service, checkpoint)  # only under the model folder
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
        return service.submit_local(
            "load_model",
            run,
            params={"path": data, "checkpoint": checkpoint, "batch_key": batch_key},
            result_json=lambda pair: pair.to_dict(),
        )

    return state.switch.start("load", submit, name=Path(checkpoint).name)


def cancel_switch() -> str:
    """Cancel the server's running model switch (whichever tab started it); what to say."""
    view = get_state().switch.cancel()
    if not view.running:
        return "Nothing is running."
    if view.stage in {"train", "map"}:
        process = view.stage == "train" and get_state().service.settings.train_in_process
        more = "; its process is ended if it does not" if process else ""
        return f"Cancelling… (training stops at the next step{more})"
    return f"Cancelling {view.label.lower()}…"


def own_data(value: Any) -> bool:
    """The "use the data saved with the model" checkbox: ticked (or not sent)."""
    return value is None or "own" in (value if isinstance(value, list) else [])
