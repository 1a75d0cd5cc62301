"""A workspace's active (dataset, model) pair and the preparation of a new one.

Each workspace (one per user, :mod:`dashboard.views.workspaces`) shows one pair at a time. A new
pair (the server's default at start, or one trained or loaded on the Model page) is
*prepared* first: a backend job (on a server thread, or a Celery worker when ``redis_url``
is set) fills the results cache with what every page needs (latent space, UMAP, clusters,
denoised values, cell types). Only when that job is done does the pair become active and
the version go up, so the pages switch over to a model whose results are ready, never to a
half-computed one. The cache is shared: a pair another workspace prepared is ready at once.

A workspace that has not chosen a pair of its own follows the server's default state (its
``fallback``); its first Load, Train or Map gives it its own. Pages read the workspace of the
request they serve through :func:`get_state`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError
from dashboard.backend.owner import acting_as, current_owner
from dashboard.backend.preparation import prepare_pair
from dashboard.views import values
from dashboard.views.errors import NotReady
from dashboard.views.switching import ModelSwitch

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import DatasetRef, Pair
    from dashboard.backend.service import AnalysisService

logger = logging.getLogger(__name__)

__all__ = [
    "ActiveState",
    "NotReady",
    "Status",
    "active",
    "get_state",
    "get_workspaces",
    "open_link",
    "prepare_pair",
    "set_state",
]


def local_steps(service: AnalysisService, pair: Pair) -> dict[str, Callable[[], Any]]:
    """Preparation steps whose result lives in this process's memory: the column-major
    counts, so the first colouring by a gene is instant (6 s at a million cells)."""
    return {"raw counts by gene": lambda: values.warm_gene_columns(service, pair)}


@dataclass(frozen=True)
class Status:
    """What the status indicator shows (JSON-able via :meth:`to_dict`)."""

    state: str  # "empty" | "preparing" | "ready" | "failed"
    version: int
    progress: float = 0.0
    message: str = ""
    pair_id: str | None = None
    pair_name: str = ""
    pending_name: str = ""
    warming: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a ``dcc.Store``."""
        return {
            "state": self.state,
            "version": self.version,
            "progress": round(self.progress, 3),
            "message": self.message,
            "pair": self.pair_id,
            "dataset": self.pair_id.split("-")[0] if self.pair_id else None,
            "pair_name": self.pair_name,
            "pending_name": self.pending_name,
            "warming": self.warming,
        }


class ActiveState:
    """The active pair of one workspace, its version and the job preparing the next one.

    Parameters
    ----------
    service
        The analysis service that computes and caches results (shared by every workspace).
    warm
        After a pair becomes active, also compute the results of
        :data:`~dashboard.backend.preparation.WARM_STEPS` in the background (the DE and
        foreground pages then open instantly).
    owner
        Whose workspace this is (``None``: the server's default state); the jobs it starts
        are recorded as theirs.
    fallback
        The state to show while this one has no pair of its own (the server's default).
    on_change
        Called with this state whenever its pair or picked dataset changes (the workspace
        store saves it).
    """

    def __init__(
        self,
        service: AnalysisService,
        *,
        warm: bool = True,
        owner: str | None = None,
        fallback: ActiveState | None = None,
        on_change: Callable[[ActiveState], None] | None = None,
    ) -> None:
        self.service = service
        self.warm = warm
        self.owner = owner
        self.fallback = fallback
        self._on_change = on_change
        self._lock = threading.RLock()
        self._pair: Pair | None = None
        self._version = 0
        self._pending: Pair | None = None
        self._job: str | None = None
        self._warm_job: str | None = None
        self._error: str | None = None
        self._dataset: DatasetRef | None = None
        self._on_ready: list[Callable[[Pair, dict[str, float]], None]] = []
        #: the training / loading / mapping that will switch the workspace to a new pair
        self.switch = ModelSwitch(self)

    # ------------------------------------------------------------------ reading
    def _following(self) -> ActiveState | None:
        """The fallback while this state has nothing of its own, else ``None``."""
        own = self._pair is not None or self._pending is not None or self._error is not None
        return None if own else self.fallback

    def _read(self, name: str) -> Any:
        """The fallback's ``name`` while this state follows it, else its own ``_name``."""
        with self._lock:
            follow = self._following()
            return getattr(follow, name) if follow is not None else getattr(self, f"_{name}")

    @property
    def pair(self) -> Pair | None:
        """The active pair (``None`` until the first one is ready)."""
        return self._read("pair")

    @property
    def own_pair(self) -> Pair | None:
        """The pair this workspace chose itself (``None`` while it follows the default)."""
        with self._lock:
            return self._pair

    @property
    def version(self) -> int:
        """Bumped every time a new pair becomes active."""
        return self._read("version")

    @property
    def dataset(self) -> DatasetRef | None:
        """The dataset picked on the Model page (or the active pair's)."""
        with self._lock:
            if self._dataset is not None:
                return self._dataset
            pair = self.pair
            return pair.dataset if pair is not None else None

    @property
    def picked_dataset(self) -> DatasetRef | None:
        """The dataset picked on the Model page, if one was."""
        with self._lock:
            return self._dataset

    @property
    def job_id(self) -> str | None:
        """The job preparing the pending pair, if any."""
        with self._lock:
            return self._job

    @property
    def warm_job(self) -> str | None:
        """The job computing the active pair's warm steps, if one was started."""
        with self._lock:
            return self._warm_job

    def require(self) -> tuple[AnalysisService, Pair]:
        """``(service, active pair)``; raises :class:`NotReady` with a readable reason."""
        with self._lock:
            follow = self._following()
            if follow is not None:
                return follow.require()
            if self._pair is not None:
                return self.service, self._pair
            if self._pending is not None:
                msg = "The model's results are being prepared; this view fills in when ready."
            elif self._error:
                msg = f"Preparing the model failed: {self._error}"
            else:
                msg = "No model is loaded. Train or load one on the Model page."
            raise NotReady(msg)

    def status(self) -> Status:
        """A snapshot for the status indicator (reads the preparing job's progress)."""
        with self._lock:
            follow = self._following()
            pair, pending, job, version = self._pair, self._pending, self._job, self._version
            error, warm_job = self._error, self._warm_job
        if follow is not None:
            return follow.status()
        warming = False
        if warm_job is not None:
            try:
                warming = not self.service.jobs.status(warm_job).status.finished
            except BackendError:
                warming = False
        base = {
            "version": version,
            "pair_id": pair.id if pair else None,
            "pair_name": pair_name(pair) if pair else "",
            "warming": warming,
        }
        if pending is not None and job is not None:
            try:
                info = self.service.jobs.status(job)
            except BackendError as err:
                return Status("failed", message=str(err), **base)
            if info.status.finished and info.status != "done":
                cancelled = info.status == "cancelled"  # the active pair simply stays
                self._finish_failed(job, None if cancelled else info.error or info.message)
                return self.status()
            return Status(
                "preparing",
                progress=info.progress,
                message=info.message or "queued",
                pending_name=pair_name(pending),
                **base,
            )
        if error:
            return Status("failed", message=error, **base)
        if pair is None:
            return Status("empty", message="no model loaded", **base)
        return Status("ready", progress=1.0, message="ready", **base)

    # ------------------------------------------------------------------ changing
    def on_ready(self, fn: Callable[[Pair, dict[str, float]], None]) -> None:
        """Call ``fn(pair, seconds_per_step)`` whenever a prepared pair becomes active."""
        self._on_ready.append(fn)

    def set_dataset(self, dataset: DatasetRef | None) -> None:
        """Remember the dataset chosen on the Model page (training and loading use it)."""
        with self._lock:
            self._dataset = dataset
        self._changed()

    def activate(self, pair: Pair) -> int:
        """Make ``pair`` active now (its results are computed on first use); returns the
        new version. Tests and the benchmark use it on a prepared cache."""
        with self._lock:
            self._pair = pair
            self._pending = None
            self._job = None
            self._error = None
            self._version += 1
            version = self._version
        self._changed()
        return version

    def prepare(self, pair: Pair) -> str:
        """Prepare ``pair`` in a background job and make it active when done.

        The current pair stays active meanwhile. Returns the job id (also shown by
        :meth:`status`). On Celery workers when the service has them (the column-major
        counts are then built here once the workers are done).
        """
        service = self.service
        with self._lock, acting_as(self.owner):
            if self._job is not None:
                service.jobs.cancel(self._job)
            self._pending = pair
            self._error = None
            if service.remote is not None:
                self._job = job = service.submit_prepare(pair)
                name = f"prepare-{job[:8]}"
                threading.Thread(
                    target=self._follow_remote, args=(pair, job), name=name, daemon=True
                ).start()
                return job

            def run(ctx: JobContext) -> dict[str, float]:
                seconds = prepare_pair(
                    service,
                    pair,
                    progress=ctx.progress,
                    should_stop=ctx.cancelled,
                    extra=local_steps(service, pair),
                )
                self._promote(pair, ctx.job_id, seconds)
                return seconds

            self._job = service.submit_local(
                "prepare", run, params={"pair": pair.to_dict()}, result_json=lambda s: s
            )
            return self._job

    def _follow_remote(self, pair: Pair, job: str) -> None:
        """Wait for a preparation on a worker, then make its pair active here."""
        info = self.service.wait(job)
        if info.status != "done":
            self._finish_failed(job, None if info.status == "cancelled" else info.error)
            return
        try:
            # every result is in the cache now: this reads them, then builds this
            # process's column-major counts
            seconds = prepare_pair(self.service, pair, extra=local_steps(self.service, pair))
        except Exception as err:
            logger.exception("preparation %s: its results cannot be read here", job)
            self._finish_failed(job, f"{type(err).__name__}: {err}")
            return
        self._promote(pair, job, seconds)

    def _promote(self, pair: Pair, job_id: str, seconds: dict[str, float]) -> None:
        with self._lock:
            if self._job != job_id:  # superseded by a newer request
                return
            self._pair = pair
            self._pending = None
            self._job = None
            self._version += 1
            callbacks = list(self._on_ready)
        logger.info("active pair %s ready (%s)", pair.id, seconds)
        self._changed()
        for fn in callbacks:
            try:
                fn(pair, seconds)
            except Exception:  # a listener must not break the switch
                logger.exception("on_ready listener failed")
        if self.warm:
            with acting_as(self.owner):
                job = self.service.submit_prepare(pair, steps="warm")
            with self._lock:
                self._warm_job = job

    def _finish_failed(self, job_id: str, error: str | None) -> None:
        with self._lock:
            if self._job != job_id:
                return
            self._pending = None
            self._job = None
            self._error = error

    def cancel(self) -> None:
        """Cancel the preparation of a pending pair (the active one stays)."""
        with self._lock:
            job = self._job
        if job is not None:
            self.service.jobs.cancel(job)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self)
            except Exception:  # saving must not break the switch
                logger.exception("saving workspace %s failed", self.owner)


def pair_name(pair: Pair) -> str:
    """How the status bar and messages name a pair (model on dataset)."""
    return f"{pair.model.name or pair.model.id} on {pair.dataset.name or pair.dataset.id}"


_default: ActiveState | None = None
_workspaces: Any = None
_state_lock = threading.Lock()


def get_state() -> ActiveState:
    """The state of the workspace of the request being served (the server's default
    state outside a request, or when no workspaces are installed)."""
    global _default
    with _state_lock:
        if _default is None:
            from dashboard.backend import get_service

            _default = ActiveState(get_service(), warm=False)
        default, workspaces = _default, _workspaces
    owner = current_owner()
    if owner is None or workspaces is None:
        return default
    return workspaces.state(owner)


def get_workspaces() -> Any:
    """The installed :class:`~dashboard.views.workspaces.Workspaces` (``None`` if none)."""
    with _state_lock:
        return _workspaces


def active() -> tuple[AnalysisService, Pair]:
    """``(service, active pair)`` of the request's workspace; raises :class:`NotReady` (a
    readable message) if none."""
    return get_state().require()


def simulated_note() -> str:
    """The line every page shows when the workspace's active dataset is simulated (how it
    was made), ``""`` for measured data or no active pair."""
    try:
        service, pair = active()
    except NotReady:
        return ""
    made = service.dataset(pair).simulated
    if not made:
        return ""
    return (
        f"Simulated data: {made}. These cells were generated, not measured; cell types, "
        "genes and proteins are labels of the simulation, not biology."
    )


def open_link(pair_id: str) -> str | None:
    """Switch the request's workspace to the pair a shared link names; one line for the
    page, or ``None`` (already shown, or no workspace: nothing to switch)."""
    workspaces, owner = get_workspaces(), current_owner()
    if workspaces is None or owner is None:
        return None
    return workspaces.open_link(owner, pair_id)


def set_state(state: ActiveState | None, workspaces: Any = None) -> None:
    """Install the server's default state and the workspaces over it (``create_app`` and
    tests do; ``None`` removes them)."""
    global _default, _workspaces
    with _state_lock:
        _default = state
        _workspaces = workspaces
