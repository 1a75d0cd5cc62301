"""The app's active (dataset, model) pair and the preparation of a new one.

The dashboard shows one pair at a time. A new pair (the embedded default at start, or one
trained or loaded on the Model page) is *prepared* first: a backend job fills the results
cache with what every page needs (latent space, UMAP, clusters, denoised values, cell
types). Only when that job is done does the pair become active and the version go up, so
the pages switch over to a model whose results are ready, never to a half-computed one.

Everything here runs in the web server's process (jobs on the backend's worker threads);
pages read it through :func:`get_state`. One server process is assumed (the dev server is
threaded); several processes would each hold their own active pair.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashboard import queries
from dashboard.backend.errors import BackendError
from dashboard.switching import ModelSwitch

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import DatasetRef, Pair
    from dashboard.backend.service import AnalysisService

logger = logging.getLogger(__name__)

#: Results every page needs, with their rough share of the preparation time.
ESSENTIAL_STEPS: tuple[tuple[str, float], ...] = (
    ("latent space", 0.05),
    ("UMAP", 0.45),
    ("Leiden clusters", 0.05),
    ("denoised expression", 0.35),
    ("raw counts by gene", 0.05),
    ("cell types", 0.05),
)
#: Results computed after the pair is active, so later pages open instantly.
WARM_STEPS = ("foreground probability", "differential expression (one vs rest)")


class NotReady(BackendError):
    """No active pair yet (preparing, or none loaded); the message says which."""


def essential_calls(service: AnalysisService, pair: Pair) -> dict[str, Callable[[], Any]]:
    """The service calls behind :data:`ESSENTIAL_STEPS`."""
    return {
        "latent space": lambda: service.latent(pair),
        "UMAP": lambda: service.umap(pair),
        "Leiden clusters": lambda: service.clusters(pair),
        # one model pass: RNA written as gene blocks, the protein table stored alongside
        "denoised expression": lambda: (
            service.denoised_rna_manifest(pair),
            service.denoised_protein(pair),
        ),
        # column-major copy of the counts, so the first colouring by a gene is instant
        # (6 s at a million cells when built on demand)
        "raw counts by gene": lambda: queries.warm_gene_columns(service, pair),
        "cell types": lambda: service.cell_types(pair),
    }


def prepare_pair(
    service: AnalysisService,
    pair: Pair,
    *,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Compute (or read from the cache) every essential result; returns seconds per step."""
    calls = essential_calls(service, pair)
    done = 0.0
    seconds: dict[str, float] = {}
    for name, share in ESSENTIAL_STEPS:
        if should_stop is not None and should_stop():
            msg = f"preparation cancelled before {name}"
            raise InterruptedError(msg)
        if progress is not None:
            progress(done, name)
        t0 = time.perf_counter()
        calls[name]()
        seconds[name] = time.perf_counter() - t0
        done += share
    if progress is not None:
        progress(1.0, "ready")
    return seconds


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
    """The active pair, its version and the job preparing the next one.

    Parameters
    ----------
    service
        The analysis service that computes and caches results.
    warm
        After a pair becomes active, also compute the results of :data:`WARM_STEPS` in the
        background (the DE and foreground pages then open instantly).
    """

    def __init__(self, service: AnalysisService, *, warm: bool = True) -> None:
        self.service = service
        self.warm = warm
        self._lock = threading.RLock()
        self._pair: Pair | None = None
        self._version = 0
        self._pending: Pair | None = None
        self._job: str | None = None
        self._warm_job: str | None = None
        self._error: str | None = None
        self._dataset: DatasetRef | None = None
        self._on_ready: list[Callable[[Pair, dict[str, float]], None]] = []
        #: the training / loading / mapping that will switch the app to a new pair
        self.switch = ModelSwitch(self)

    # ------------------------------------------------------------------ reading
    @property
    def pair(self) -> Pair | None:
        """The active pair (``None`` until the first one is ready)."""
        with self._lock:
            return self._pair

    @property
    def version(self) -> int:
        """Bumped every time a new pair becomes active."""
        with self._lock:
            return self._version

    @property
    def dataset(self) -> DatasetRef | None:
        """The dataset picked on the Model page (or the active pair's)."""
        with self._lock:
            if self._dataset is not None:
                return self._dataset
            return self._pair.dataset if self._pair is not None else None

    @property
    def job_id(self) -> str | None:
        """The job preparing the pending pair, if any."""
        with self._lock:
            return self._job

    def require(self) -> tuple[AnalysisService, Pair]:
        """``(service, active pair)``; raises :class:`NotReady` with a readable reason."""
        with self._lock:
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
            pair, pending, job, version = self._pair, self._pending, self._job, self._version
            error, warm_job = self._error, self._warm_job
        warming = False
        if warm_job is not None:
            try:
                warming = not self.service.job(warm_job).status.finished
            except BackendError:
                warming = False
        base = {
            "version": version,
            "pair_id": pair.id if pair else None,
            "pair_name": _pair_name(pair) if pair else "",
            "warming": warming,
        }
        if pending is not None and job is not None:
            try:
                info = self.service.job(job)
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
                pending_name=_pair_name(pending),
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

    def activate(self, pair: Pair) -> int:
        """Make ``pair`` active now (its results are computed on first use); returns the
        new version. Tests and the benchmark use it on a prepared cache."""
        with self._lock:
            self._pair = pair
            self._pending = None
            self._job = None
            self._error = None
            self._version += 1
            return self._version

    def prepare(self, pair: Pair) -> str:
        """Prepare ``pair`` in a background job and make it active when done.

        The current pair stays active meanwhile. Returns the job id (also shown by
        :meth:`status`).
        """
        service = self.service

        def run(ctx: JobContext) -> dict[str, float]:
            seconds = prepare_pair(service, pair, progress=ctx.progress, should_stop=ctx.cancelled)
            self._promote(pair, ctx.job_id, seconds)
            return seconds

        with self._lock:
            if self._job is not None:
                service.cancel(self._job)
            self._pending = pair
            self._error = None
            self._job = service.jobs.submit(
                "prepare", run, params={"pair": pair.to_dict()}, result_json=lambda s: s
            )
            return self._job

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
        for fn in callbacks:
            try:
                fn(pair, seconds)
            except Exception:  # a listener must not break the switch
                logger.exception("on_ready listener failed")
        if self.warm:
            self._start_warm(pair)

    def _finish_failed(self, job_id: str, error: str | None) -> None:
        with self._lock:
            if self._job != job_id:
                return
            self._pending = None
            self._job = None
            self._error = error

    def _start_warm(self, pair: Pair) -> None:
        service = self.service

        def run(ctx: JobContext) -> None:
            calls = {
                WARM_STEPS[0]: lambda: service.foreground_probability(pair),
                WARM_STEPS[1]: lambda: service.de_one_vs_rest(pair, should_stop=ctx.cancelled),
            }
            for i, (name, call) in enumerate(calls.items()):
                ctx.check()
                ctx.progress(i / len(calls), name)
                call()

        with self._lock:
            self._warm_job = service.jobs.submit("warm", run, params={"pair": pair.to_dict()})

    def cancel(self) -> None:
        """Cancel the preparation of a pending pair (the active one stays)."""
        with self._lock:
            job = self._job
        if job is not None:
            self.service.cancel(job)


def _pair_name(pair: Pair) -> str:
    return f"{pair.model.name or pair.model.id} on {pair.dataset.name or pair.dataset.id}"


_state: ActiveState | None = None
_state_lock = threading.Lock()


def get_state() -> ActiveState:
    """The process-wide state (an empty one over ``get_service()`` if none was set)."""
    global _state
    with _state_lock:
        if _state is None:
            from dashboard.backend import get_service

            _state = ActiveState(get_service(), warm=False)
        return _state


def set_state(state: ActiveState | None) -> None:
    """Install the process-wide state (``create_app`` and tests do)."""
    global _state
    with _state_lock:
        _state = state
