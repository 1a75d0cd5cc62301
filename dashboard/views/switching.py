"""The job that switches the app to a new model, followed on the server.

Training, loading a checkpoint or mapping new data ends with a new (dataset, model) pair
whose results must be prepared before the app switches to it. :class:`ModelSwitch` holds
that chain on the server: it submits the first job, and a follower thread waits for it,
starts the preparation of the pair it made and records how it ended. So the switch happens
when the jobs end whether or not a browser tab is open, every tab (and a reload) reads the
same progress through :meth:`ModelSwitch.view`, and only one switch runs at a time (a second
Train, Load or Map is refused while one runs, whichever tab asks).

Each step is a backend job (progress, cancel, one-line error); this module only chains them
and keeps the last outcome for the pages to show.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError
from dashboard.views.errors import one_line

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.views.state import ActiveState

log = logging.getLogger(__name__)

#: What each step is called on the page.
LABELS = {
    "train": "Training",
    "load": "Loading",
    "map": "Mapping",
    "prepare": "Preparing results",
}


class SwitchBusy(BackendError):
    """A switch is already running (the message says which, and what to do)."""


@dataclass(frozen=True)
class SwitchView:
    """What the pages show of the current (or last) switch (JSON-able values).

    ``kind`` is what the user started (``train``, ``load``, ``map``; ``None`` before the
    first), ``stage`` the step running now (``kind``, then ``prepare``), ``outcome`` how it
    ended (``None`` while running; ``done``, ``failed``, ``cancelled``) and ``line`` one
    readable sentence about it.
    """

    kind: str | None = None
    stage: str | None = None
    name: str = ""
    job: str | None = None
    progress: float = 0.0
    message: str = ""
    outcome: str | None = None
    line: str = ""
    started: float | None = None
    finished: float | None = None

    @property
    def running(self) -> bool:
        """True from the first job's submission until the preparation has ended."""
        return self.kind is not None and self.outcome is None

    @property
    def label(self) -> str:
        """The running step as the page names it (``"Training"``)."""
        return LABELS.get(self.stage or "", "Working")


#: Turns a finished first job's result into the pair to prepare and a sentence about it.
ToPair = Callable[[Any], "tuple[Pair, str]"]


class ModelSwitch:
    """The one model switch of an :class:`~dashboard.views.state.ActiveState`.

    Parameters
    ----------
    state
        The app state whose :meth:`~dashboard.views.state.ActiveState.prepare` makes a pair
        active once its results are ready.
    """

    def __init__(self, state: ActiveState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._view = SwitchView()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ reading
    def view(self) -> SwitchView:
        """The current switch with its running step's progress (the last one when idle)."""
        with self._lock:
            view = self._view
        if not view.running or view.job is None:
            return view
        try:
            info = self._state.service.job(view.job)
        except BackendError:
            return view
        return replace(view, progress=float(info.progress), message=info.message or "queued")

    def check_idle(self) -> None:
        """Raise :class:`SwitchBusy` while a switch runs (a cheap check before slow work)."""
        with self._lock:
            _refuse_if_running(self._view)

    # ------------------------------------------------------------------ changing
    def start(
        self,
        kind: str,
        submit: Callable[[], str],
        *,
        name: str = "",
        to_pair: ToPair | None = None,
    ) -> str:
        """Submit the first job (``submit()`` returns its id) and follow it on the server.

        ``to_pair(result)`` gives the pair to prepare and a sentence for the page (default:
        the result is the pair). Raises :class:`SwitchBusy` if a switch is running; the
        check and the submission are one step, so two tabs cannot both start one.
        """
        with self._lock:  # check and submit in one step: two tabs cannot both start one
            _refuse_if_running(self._view)
            job = submit()
            self._view = SwitchView(kind=kind, stage=kind, name=name, job=job, started=time.time())
        log.info("%s %s started (job %s)", LABELS[kind], name, job[:8])
        thread = threading.Thread(
            target=self._follow, args=(job, to_pair), name=f"switch-{job[:8]}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    def cancel(self) -> SwitchView:
        """Cancel the running step (training stops at its next step; the active pair stays)."""
        view = self.view()
        if view.running and view.job is not None:
            self._state.service.cancel(view.job)
            log.info("%s %s: cancel requested", view.label, view.name)
        return view

    def join(self, timeout: float | None = None) -> SwitchView:
        """Wait until the running switch has ended (tests, shutdown); returns its view."""
        for thread in list(self._threads):
            thread.join(timeout)
        return self.view()

    # ------------------------------------------------------------------ following
    def _follow(self, job: str, to_pair: ToPair | None) -> None:
        service = self._state.service
        view = self._view
        try:
            info = service.wait(job)
            if str(info.status) != "done":
                if info.kind == "train":
                    service.discard_partial_checkpoint(job)
                self._end(job, str(info.status), info.error or info.message)
                return
            result = service.job_result(job)
            pair, summary = to_pair(result) if to_pair is not None else (result, "")
            prepare = self._state.prepare(pair)
        except Exception as err:  # a result that cannot be read: the switch failed
            log.exception("%s %s: could not hand over to the preparation", view.label, view.name)
            self._end(job, "failed", f"{type(err).__name__}: {err}")
            return
        with self._lock:
            if self._view.job != job:
                return
            self._view = replace(self._view, stage="prepare", job=prepare, line=summary)
        info = service.wait(prepare)
        self._end(prepare, str(info.status), info.error or info.message)

    def _end(self, job: str, status: str, reason: str | None) -> None:
        with self._lock:
            view = self._view
            if view.job != job:
                return
            if status == "done" and view.kind == "map":
                line = f"{view.line} The reference and the new cells are active on every page."
            elif status == "done":
                what = {"train": "Trained", "load": "Loaded"}.get(view.kind or "", "Prepared")
                line = f"{what} {view.name}: it is active on every page."
            elif status == "cancelled":
                line = f"{view.label}: cancelled; the previous model stays active."
            else:
                line = f"{view.label} failed: {one_line(reason or 'unknown error')}"
            self._view = replace(view, outcome=status, line=line, finished=time.time())
        log.info("%s %s: %s", LABELS[view.kind or "prepare"], view.name, line)


def _refuse_if_running(view: SwitchView) -> None:
    if view.running:
        what = f"{view.label} {view.name}".strip()
        msg = f"{what} is running; wait for it to finish or cancel it first."
        raise SwitchBusy(msg)
