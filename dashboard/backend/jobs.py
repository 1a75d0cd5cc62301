"""Background jobs with progress and cancel, and a job registry persisted in the cache folder.

A job is a function ``fn(ctx) -> result`` run on a worker thread. It reports progress with
``ctx.progress(fraction, message)`` and stops early when ``ctx.cancelled()`` turns true (long
loops poll it; training passes it to ``TotalVI.train(should_stop=...)``). The registry holds
one JSON file per job under ``<cache_dir>/jobs/`` (status, progress, message, error, result
key), written atomically, so another process (a Celery worker, the CLI) can read a
job's state and request its cancellation through a ``<id>.cancel`` flag file.

Results live in the results cache (the registry stores their key); a job that fails records
its error message and writes nothing, so results from earlier runs stay intact.

:meth:`JobRunner.submit_process` runs a job in a child process instead (``multiprocessing``
spawn; training uses it so a stuck or runaway job can be killed like any process). The child
records its pid in the job's record; a job whose process died (killed, out of memory) reads as
failed, and the runner marks it failed once the process is gone, with a readable one-line
reason (``the training process 1234 ended unexpectedly (signal 9, SIGKILL: ...)``).
Cancelling such a job asks the child to stop at its next check and terminates it when it has
not ended ``cancel_grace`` seconds later. The child dies with the process that started it
(:func:`~dashboard.backend.lifetime.die_with_parent`), so a server killed with ``kill -9``
leaves no training running.

Finished records are pruned (:meth:`JobRegistry.prune`) when older than ``max_age`` or
beyond the ``max_count`` newest: when a :class:`JobRunner` starts and, cheaply, on submit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dashboard.backend.errors import BackendError, JobCancelled, JobFailed, JobNotFound
from dashboard.backend.lifetime import die_with_parent
from dashboard.backend.owner import current_owner
from dashboard.backend.priority import lower_thread_priority

logger = logging.getLogger(__name__)
#: Seconds a finished job's record is kept whatever the count limit (its waiters read it).
KEEP_RECENT = 600.0
#: Numbers in a progress message (what changes within one step: "epoch 12/400").
_NUMBERS = re.compile(r"[-+]?\d[\d.,:/%eE+-]*")

__all__ = [
    "JobContext",
    "JobInfo",
    "JobRegistry",
    "JobRunner",
    "JobStatus",
    "run_job",
]


class JobStatus(StrEnum):
    """Life cycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for done, failed and cancelled."""
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobInfo:
    """What the registry knows about one job (JSON-serialisable)."""

    id: str
    kind: str
    status: JobStatus = JobStatus.QUEUED
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    result_key: str | None = None
    result: Any = None  # small JSON-able result (e.g. the reference of a trained model)
    params: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    #: who started it (the request's owner; ``None``: the server itself, shared by all)
    owner: str | None = field(default_factory=current_owner)
    #: what runs it: ``thread``, ``process`` or ``celery``, and the Celery worker's name
    executor: str = "thread"
    worker: str = ""

    def visible_to(self, owner: str | None) -> bool:
        """Whether ``owner`` (``None``: no request, the server) may see this job."""
        return owner is None or self.owner is None or self.owner == owner

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (status as its string value)."""
        d = asdict(self)
        d["status"] = str(self.status)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobInfo:
        """Inverse of :meth:`to_dict`; ignores unknown keys."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = JobStatus(known.get("status", "queued"))
        return cls(**known)


class JobContext:
    """Handed to a job function: report progress, check for cancellation."""

    def __init__(
        self,
        registry: JobRegistry,
        job_id: str,
        cancel_event: threading.Event,
        on_progress: Callable[[float, str], None] | None = None,
    ):
        self.job_id = job_id
        self._registry = registry
        self._event = cancel_event
        self._on_progress = on_progress
        self._last_write = 0.0
        self._last_flag_check = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0..1) and a message; writes are throttled to 5 per second."""
        now = time.monotonic()
        if now - self._last_write < 0.2 and fraction < 1.0:
            return
        self._last_write = now
        fraction = float(min(max(fraction, 0.0), 1.0))
        self._registry.update(self.job_id, progress=fraction, message=message)
        if self._on_progress is not None:
            self._on_progress(fraction, message)

    def cancelled(self) -> bool:
        """True once cancellation was requested (here or by another process)."""
        if self._event.is_set():
            return True
        now = time.monotonic()
        if now - self._last_flag_check > 0.1:
            self._last_flag_check = now
            if self._registry.cancel_requested(self.job_id):
                self._event.set()
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if cancellation was requested."""
        if self.cancelled():
            msg = f"job {self.job_id} cancelled"
            raise JobCancelled(msg)


class ProgressLog:
    """A job's lines in the server log: queued, progress, end.

    Progress is logged when the job enters a new step (its message changes other than in
    its numbers: "UMAP" after "latent space", but not "epoch 13/400" after "epoch 12/400"),
    reaches a new tenth, or every 15 s. Jobs started from the browser (training,
    preparation, DE, mapping) would otherwise run silently; an admin reading the log sees
    what runs, how far it is and how it ended.
    """

    def __init__(self, kind: str, job_id: str, *, every: float = 15.0) -> None:
        self.name = f"{kind} {job_id[:8]}"
        self._every = every
        self._step = -1
        self._stage: str | None = None
        self._last = 0.0
        self._t0 = time.monotonic()
        logger.info("job %s queued", self.name)

    def progress(self, fraction: float, message: str) -> None:
        """Log ``fraction``/``message`` if it is a new step, a new tenth or 15 s on."""
        now = time.monotonic()
        step = int(fraction * 10)
        stage = _NUMBERS.sub("", message)
        if step > self._step or stage != self._stage or now - self._last >= self._every:
            self._step, self._stage, self._last = max(step, self._step), stage, now
            logger.info("job %s [%3.0f%%] %s", self.name, 100 * fraction, message or "running")

    def end(self, info: JobInfo) -> None:
        """Log how the job ended, with its duration."""
        seconds = time.monotonic() - self._t0
        if info.status == JobStatus.DONE:
            logger.info("job %s done in %.1f s", self.name, seconds)
        elif info.status == JobStatus.CANCELLED:
            logger.info("job %s cancelled after %.1f s (%s)", self.name, seconds, info.message)
        else:
            logger.warning("job %s failed after %.1f s: %s", self.name, seconds, info.error)


class JobRegistry:
    """One JSON file per job in ``directory``; safe to read from other processes.

    Parameters
    ----------
    directory
        Folder of the records.
    max_age
        Seconds a finished job's record is kept after it ended (``None``: no limit).
    max_count
        Finished records kept at most, the newest (``None``: no limit). Running and queued
        jobs are never pruned; :meth:`prune` applies both limits.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_age: float | None = None,
        max_count: int | None = None,
    ) -> None:
        if max_count is not None and max_count < 1:
            msg = f"max_count must be at least 1, got {max_count}"
            raise ValueError(msg)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_age = max_age
        self.max_count = max_count
        self._lock = threading.Lock()
        self._last_prune = -float("inf")

    def _path(self, job_id: str) -> Path:
        if not job_id or any(c not in "0123456789abcdef" for c in job_id):
            msg = f"{job_id!r} is not a job id"
            raise JobNotFound(msg)
        return self.directory / f"{job_id}.json"

    def write(self, info: JobInfo) -> None:
        """Store ``info`` atomically (temp file + rename)."""
        path = self._path(info.id)
        fd, name = tempfile.mkstemp(prefix=".job.", suffix=".tmp", dir=self.directory)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(info.to_dict(), fh, default=str)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, job_id: str, *, check_alive: bool = True) -> JobInfo:
        """The job's record; a running job whose process died reads as failed (unless
        ``check_alive`` is false: the record as stored)."""
        path = self._path(job_id)
        try:
            info = JobInfo.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            msg = f"no job {job_id} in {self.directory}"
            raise JobNotFound(msg) from None
        if check_alive and not info.status.finished and not _alive(info.pid, info.host):
            info = replace(
                info,
                status=JobStatus.FAILED,
                error=f"the worker process {info.pid} exited before the job finished",
            )
        return info

    def update(self, job_id: str, **changes: Any) -> JobInfo:
        """Read-modify-write one record (serialised within this process)."""
        with self._lock:
            info = replace(self.read(job_id, check_alive=False), **changes)
            self.write(info)
            return info

    def fail(self, job_id: str, error: str) -> JobInfo:
        """Record job ``job_id`` as failed now with ``error``."""
        return self.update(
            job_id, status=JobStatus.FAILED, error=error, message="failed", finished=time.time()
        )

    def list(self) -> list[JobInfo]:
        """All jobs, newest first."""
        out = []
        for p in self.directory.glob("*.json"):
            with contextlib.suppress(JobNotFound, ValueError, json.JSONDecodeError):
                out.append(self.read(p.stem))
        return sorted(out, key=lambda i: i.created, reverse=True)

    def prune(self) -> list[str]:
        """Remove finished records older than ``max_age`` or beyond the ``max_count``
        newest (with their cancel flags), stray cancel flags and temp files older than an
        hour; returns the ids removed. A job whose process died counts as finished. Jobs
        that ended in the last :data:`KEEP_RECENT` seconds are never removed for the count,
        so whoever waits on one can still read how it ended."""
        self._last_prune = time.monotonic()
        if self.max_age is None and self.max_count is None:
            return []
        now = time.time()
        ended: list[tuple[float, str]] = []
        for p in self.directory.glob("*.json"):
            try:
                info = self.read(p.stem)
                if info.status.finished:
                    ended.append((info.finished or p.stat().st_mtime, p.stem))
            except (JobNotFound, ValueError, TypeError, OSError):
                continue  # unreadable or just removed: not ours to judge
        ended.sort(reverse=True)
        drop = [
            job_id
            for i, (at, job_id) in enumerate(ended)
            if (self.max_age is not None and now - at > self.max_age)
            or (self.max_count is not None and i >= self.max_count and now - at > KEEP_RECENT)
        ]
        for job_id in drop:
            self._path(job_id).unlink(missing_ok=True)
            self._path(job_id).with_suffix(".cancel").unlink(missing_ok=True)
        for p in [*self.directory.glob("*.cancel"), *self.directory.glob(".job.*.tmp")]:
            with contextlib.suppress(OSError):
                if not p.with_suffix(".json").exists() and now - p.stat().st_mtime > 3600:
                    p.unlink()
        return drop

    def maybe_prune(self, every: float = 60.0) -> list[str]:
        """:meth:`prune` when ``every`` seconds passed since the last one or there are more
        records than ``max_count`` (a cheap directory count); else nothing."""
        if self.max_age is None and self.max_count is None:
            return []
        if time.monotonic() - self._last_prune < every:
            if self.max_count is None:
                return []
            with os.scandir(self.directory) as it:
                n = sum(1 for e in it if e.name.endswith(".json"))
            if n <= self.max_count:
                return []
        return self.prune()

    def request_cancel(self, job_id: str) -> None:
        """Ask the job to stop (works across processes via a flag file)."""
        self._path(job_id).with_suffix(".cancel").touch()

    def cancel_requested(self, job_id: str) -> bool:
        """True if :meth:`request_cancel` was called for this job."""
        return self._path(job_id).with_suffix(".cancel").exists()


class JobRunner:
    """Runs job functions on worker threads and records them in a :class:`JobRegistry`.

    Parameters
    ----------
    registry
        Where job records go.
    max_workers
        Jobs running at once (more wait in a queue).
    cancel_grace
        Seconds a cancelled :meth:`submit_process` job has to stop by itself before its
        process is terminated.
    nice
        How much lower than the server's threads the job threads' CPU priority is
        (:func:`~dashboard.backend.priority.lower_thread_priority`; 0: the same).
    """

    def __init__(
        self,
        registry: JobRegistry,
        *,
        max_workers: int = 2,
        cancel_grace: float = 5.0,
        nice: int = 0,
    ) -> None:
        self.registry = registry
        self.cancel_grace = cancel_grace
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers,
            thread_name_prefix="job",
            initializer=lower_thread_priority,
            initargs=(nice,),
        )
        self._events: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[Any]] = {}
        self._results: dict[str, Any] = {}
        self._processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self._process_jobs: set[str] = set()
        self._forget(registry.prune())

    def _forget(self, job_ids: list[str]) -> None:
        """Drop what this runner holds of pruned jobs (their result, event, future)."""
        for job_id in job_ids:
            future = self._futures.get(job_id)
            if future is not None and not future.done():
                continue
            for held in (self._events, self._futures, self._results, self._processes):
                held.pop(job_id, None)
            self._process_jobs.discard(job_id)

    def submit(
        self,
        kind: str,
        fn: Callable[[JobContext], Any],
        *,
        params: dict[str, Any] | None = None,
        result_key: Callable[[], str | None] | None = None,
        result_json: Callable[[Any], Any] | None = None,
        cleanup: Callable[[], None] | None = None,
    ) -> str:
        """Queue ``fn(ctx)``; returns the job id.

        ``result_key()`` is read after ``fn`` returns and stored in the record (the cache key
        of the result); ``result_json(result)`` gives a small JSON-able result to store too;
        ``cleanup()`` runs when the job ends without one (:func:`run_job`).
        """
        self._forget(self.registry.maybe_prune())
        job_id = uuid.uuid4().hex
        event = threading.Event()
        self._events[job_id] = event
        self.registry.write(JobInfo(id=job_id, kind=kind, params=_jsonable(params or {})))
        plog = ProgressLog(kind, job_id)
        self._futures[job_id] = self._pool.submit(
            self._run, job_id, fn, event, result_key, result_json, cleanup, plog
        )
        return job_id

    def refuse(self, kind: str, error: str, *, params: dict[str, Any] | None = None) -> str:
        """Record a job that could not start (failed with ``error``); returns its id."""
        job_id, now = uuid.uuid4().hex, time.time()
        info = JobInfo(
            id=job_id,
            kind=kind,
            status=JobStatus.FAILED,
            message="refused",
            error=error,
            params=_jsonable(params or {}),
            started=now,
            finished=now,
        )
        self.registry.write(info)
        return job_id

    def _run(
        self,
        job_id: str,
        fn: Callable[[JobContext], Any],
        event: threading.Event,
        result_key: Callable[[], str | None] | None,
        result_json: Callable[[Any], Any] | None,
        cleanup: Callable[[], None] | None,
        plog: ProgressLog,
    ) -> None:
        done, result = run_job(
            self.registry,
            job_id,
            fn,
            event=event,
            result_key=result_key,
            result_json=result_json,
            on_progress=plog.progress,
            cleanup=cleanup,
        )
        if done:
            self._results[job_id] = result
        with contextlib.suppress(JobNotFound):  # pruned at once: a flood of short jobs
            plog.end(self.registry.read(job_id, check_alive=False))

    def submit_process(
        self,
        kind: str,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        *,
        params: dict[str, Any] | None = None,
        cleanup: Callable[[], None] | None = None,
    ) -> str:
        """Queue ``target(ctx, *args)`` to run in a child process (``multiprocessing``
        spawn); returns the job id.

        ``target`` must be importable by name (a module-level function) and ``args``
        picklable; its return value must be JSON-able and becomes the record's ``result``.
        The child's pid is recorded in the registry, so the job can be killed as a process;
        a killed job reads as failed and leaves nothing half-written (results are written
        atomically). Progress, cancel and the queue work as for thread jobs; a cancelled
        child that has not stopped ``cancel_grace`` seconds later is terminated.
        ``cleanup()`` runs here once the child has ended without success (failed, killed,
        cancelled), e.g. to remove what it was writing when it died.
        """
        self._forget(self.registry.maybe_prune())
        job_id = uuid.uuid4().hex
        event = threading.Event()
        self._events[job_id] = event
        self._process_jobs.add(job_id)
        self.registry.write(
            JobInfo(id=job_id, kind=kind, params=_jsonable(params or {}), executor="process")
        )
        plog = ProgressLog(kind, job_id)
        self._futures[job_id] = self._pool.submit(
            self._run_process, job_id, target, tuple(args), event, plog, cleanup
        )
        return job_id

    def _run_process(
        self,
        job_id: str,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        event: threading.Event,
        plog: ProgressLog,
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        if event.is_set() or self.registry.cancel_requested(job_id):
            plog.end(
                self.registry.update(
                    job_id,
                    status=JobStatus.CANCELLED,
                    message="cancelled before start",
                    finished=time.time(),
                )
            )
            return
        proc = multiprocessing.get_context("spawn").Process(
            target=_process_main,
            args=(str(self.registry.directory), job_id, target, args, os.getpid()),
            name=f"job-{job_id[:8]}",
            daemon=True,
        )
        self.registry.update(job_id, message="starting its process")
        try:
            proc.start()
        except Exception as err:  # e.g. arguments that do not pickle, no memory to fork
            logger.exception("job %s: its process did not start", job_id)
            self.registry.fail(
                job_id, f"could not start the job's process ({type(err).__name__}: {err})"
            )
            return
        self._processes[job_id] = proc
        # wait on the sentinel, not waitpid, so a cancel's terminate() cannot race the reaping;
        # meanwhile the child's progress (in the registry) goes to this server's log
        while not multiprocessing.connection.wait([proc.sentinel], timeout=2.0):
            with contextlib.suppress(JobNotFound, OSError, ValueError):
                now = self.registry.read(job_id, check_alive=False)
                plog.progress(now.progress, now.message)
        proc.join()
        info = self.registry.read(job_id, check_alive=False)
        if not info.status.finished:  # died before recording an end (killed, crashed)
            if self.registry.cancel_requested(job_id):
                info = self.registry.update(
                    job_id,
                    status=JobStatus.CANCELLED,
                    message="cancelled (its process was stopped)",
                    finished=time.time(),
                )
            else:
                info = self.registry.fail(job_id, _process_end(info.kind, proc.pid, proc.exitcode))
        plog.end(info)
        if info.status != JobStatus.DONE and cleanup is not None:
            clean_up(job_id, cleanup)

    def _stop_after_grace(self, job_id: str, future: Future[Any]) -> None:
        """Terminate a cancelled job's process that has not stopped by itself in time."""
        if wait_futures([future], timeout=self.cancel_grace).done:
            return
        proc = self._processes.get(job_id)
        if proc is None or multiprocessing.connection.wait([proc.sentinel], timeout=0):
            return  # still queued (it will not start) or already ended
        logger.warning(
            "job %s: process %s did not stop %g s after cancel; terminating it",
            job_id,
            proc.pid,
            self.cancel_grace,
        )
        proc.terminate()
        if not multiprocessing.connection.wait([proc.sentinel], timeout=3.0):
            proc.kill()

    def process(self, job_id: str) -> multiprocessing.process.BaseProcess | None:
        """The child process of a :meth:`submit_process` job (``None`` before it starts)."""
        return self._processes.get(job_id)

    def status(self, job_id: str) -> JobInfo:
        """Current record of a job."""
        return self.registry.read(job_id)

    def cancel(self, job_id: str) -> JobInfo:
        """Request cancellation; a queued job never starts, a running one stops at its next
        check (a process job's process is terminated if it has not stopped
        ``cancel_grace`` seconds later). Returns the record as it is now."""
        self.registry.request_cancel(job_id)
        event = self._events.get(job_id)
        if event is not None:
            event.set()
        future = self._futures.get(job_id)
        if job_id in self._process_jobs and future is not None and not future.done():
            threading.Thread(
                target=self._stop_after_grace,
                args=(job_id, future),
                name=f"cancel-{job_id[:8]}",
                daemon=True,
            ).start()
        return self.registry.read(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Block until the job finishes (or ``timeout`` seconds pass); returns its record."""
        future = self._futures.get(job_id)
        if future is not None:
            with contextlib.suppress(TimeoutError):
                future.result(timeout=timeout)
            return self.registry.read(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # a job of another process: poll the registry
            info = self.registry.read(job_id)
            if info.status.finished or (deadline is not None and time.monotonic() > deadline):
                return info
            time.sleep(0.1)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """The job's return value; raises :class:`JobFailed` / :class:`JobCancelled`."""
        info = self.wait(job_id, timeout)
        if info.status == JobStatus.FAILED:
            raise JobFailed(info.error or f"job {job_id} failed")
        if info.status == JobStatus.CANCELLED:
            raise JobCancelled(info.message or f"job {job_id} was cancelled")
        if job_id not in self._results:
            msg = f"job {job_id} ran in another process; read its result_key from the cache"
            raise JobNotFound(msg)
        return self._results[job_id]

    def shutdown(self, *, cancel: bool = True) -> None:
        """Stop accepting jobs; with ``cancel``, ask running jobs to stop, then wait."""
        if cancel:
            for job_id, event in self._events.items():
                if not self._futures[job_id].done():
                    event.set()
                    if job_id in self._processes:  # a child process polls the flag file
                        self.registry.request_cancel(job_id)
        self._pool.shutdown(wait=True, cancel_futures=cancel)


def run_job(
    registry: JobRegistry,
    job_id: str,
    fn: Callable[[JobContext], Any],
    *,
    event: threading.Event | None = None,
    result_key: Callable[[], str | None] | None = None,
    result_json: Callable[[Any], Any] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    worker: str = "",
    cleanup: Callable[[], None] | None = None,
) -> tuple[bool, Any]:
    """Run ``fn(ctx)`` for the registered job ``job_id`` here (thread, child process or
    another machine's worker), recording status, pid, progress, result or error in
    ``registry`` (and passing each recorded progress to ``on_progress``). Returns
    ``(True, result)`` when it finished, else ``(False, None)``.

    ``worker`` names the Celery worker running it (kept in the record). A job that is no
    longer queued (a task delivered twice, a job already failed) is not run again.
    ``cleanup()`` removes what the job leaves when this call ends it without a result
    (cancelled before or while running, failed): a temporary upload, a partial model."""
    ctx = JobContext(registry, job_id, event or threading.Event(), on_progress)
    if registry.read(job_id, check_alive=False).status != JobStatus.QUEUED:
        logger.warning("job %s is not queued any more; not running it again", job_id)
        return False, None
    done, result = False, None
    try:
        done, result = _run_queued(registry, job_id, fn, ctx, result_key, result_json, worker)
    finally:
        if not done and cleanup is not None:
            clean_up(job_id, cleanup)
    return done, result


def clean_up(job_id: str, cleanup: Callable[[], None]) -> None:
    """Run a job's ``cleanup``; a failure is logged, never raised over the job's end."""
    try:
        cleanup()
    except Exception:
        logger.exception("job %s: its clean-up failed", job_id)


def _run_queued(
    registry: JobRegistry,
    job_id: str,
    fn: Callable[[JobContext], Any],
    ctx: JobContext,
    result_key: Callable[[], str | None] | None,
    result_json: Callable[[Any], Any] | None,
    worker: str,
) -> tuple[bool, Any]:
    """:func:`run_job` for a job that is queued: start, run and record it."""
    if ctx.cancelled():
        registry.update(
            job_id,
            status=JobStatus.CANCELLED,
            message="cancelled before start",
            finished=time.time(),
        )
        return False, None
    registry.update(
        job_id,
        status=JobStatus.RUNNING,
        started=time.time(),
        pid=os.getpid(),
        host=socket.gethostname(),
        **({"worker": worker} if worker else {}),
    )
    try:
        result = fn(ctx)
    except (JobCancelled, InterruptedError) as err:
        registry.update(job_id, status=JobStatus.CANCELLED, message=str(err), finished=time.time())
        return False, None
    except Exception as err:
        if _is_cancel(err) or ctx.cancelled():
            registry.update(
                job_id, status=JobStatus.CANCELLED, message=str(err), finished=time.time()
            )
            return False, None
        if isinstance(err, BackendError):  # the user's input: its one line says it all
            registry.fail(job_id, str(err))
            return False, None
        logger.exception("job %s failed", job_id)
        registry.fail(job_id, f"{type(err).__name__}: {err}")
        return False, None
    changes: dict[str, Any] = {
        "status": JobStatus.DONE,
        "progress": 1.0,
        "message": "done",
        "finished": time.time(),
    }
    if result_key is not None:
        changes["result_key"] = result_key()
    if result_json is not None:
        changes["result"] = _jsonable(result_json(result))
    registry.update(job_id, **changes)
    return True, result


def _process_main(
    directory: str,
    job_id: str,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    parent_pid: int | None = None,
) -> None:
    """Entry point of a :meth:`JobRunner.submit_process` child (it dies with
    ``parent_pid``, the server that started it)."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    registry = JobRegistry(directory)
    run_job(registry, job_id, lambda ctx: target(ctx, *args), result_json=lambda r: r)


def _process_end(kind: str, pid: int | None, code: int | None) -> str:
    """One readable line on a job process that ended before recording its end."""
    what = "training" if kind == "train" else f"{kind} job's"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        how = f"signal {-code}, {name}"
        if -code == signal.SIGKILL:
            how += ": killed from outside, e.g. for lack of memory"
    else:
        how = f"exit code {code}"
    return f"the {what} process {pid} ended unexpectedly ({how})"


def _is_cancel(err: BaseException) -> bool:
    """Cancellation raised by lower layers (e.g. ``model.train.TrainingCancelled``)."""
    return type(err).__name__ in {"TrainingCancelled", "JobCancelled"}


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell; trust the record
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """True for a process that exited but was not reaped yet (e.g. just killed)."""
    try:
        import psutil

        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
