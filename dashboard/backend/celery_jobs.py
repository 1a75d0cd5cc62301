"""Jobs on Celery workers (Redis broker), the executor used when ``redis_url`` is set.

The web server records a job in the shared job registry (``<cache_dir>/jobs/``, a folder
every machine sees) and queues one Celery task, :data:`TASK`, naming the job and what to run
(``kind`` and a JSON payload). A worker (``celery -A dashboard.worker:celery_app worker``)
rebuilds the analysis service from the same settings, runs the job body the web server would
have run on a thread (:meth:`AnalysisService.job_body`) and records progress, the worker's
name, the result's cache key or its one-line error in the registry. Cancel is the registry's
flag file, read by the running body at its next check; a worker process that dies mid-job
leaves a record whose pid is gone, which reads as failed (one line), and results are written
atomically, so nothing half-written is ever served and the job can simply be submitted again.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError
from dashboard.backend.jobs import JobInfo, JobRegistry, run_job

if TYPE_CHECKING:
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

log = logging.getLogger(__name__)

#: The one Celery task: ``run(job_id, kind, payload)``.
TASK = "totalvi_explorer.run"


def make_celery_app(settings: Settings) -> Any:
    """A Celery app on ``settings.redis_url`` (the broker), set up so each worker takes
    one job at a time and a job is handed to one worker only. Results go to the job
    registry and the results cache, not to a Celery result backend."""
    if not settings.redis_url:
        msg = "no Redis URL: set TOTALVI_EXPLORER_REDIS_URL (or REDIS_URL) to use Celery"
        raise BackendError(msg)
    try:
        from celery import Celery
    except ImportError:
        msg = "Celery is not installed: pip install 'celery[redis]'"
        raise BackendError(msg) from None
    app = Celery("totalvi_explorer", broker=settings.redis_url)
    app.conf.update(
        worker_prefetch_multiplier=1,  # an idle worker takes the next job, not a busy one
        task_acks_late=True,
        task_reject_on_worker_lost=False,  # a job whose worker died is failed, not re-run
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # the job registry says how a job ended
        task_serializer="json",
        accept_content=["json"],
    )
    return app


class CeleryJobs:
    """Queues jobs for Celery workers and records them in ``registry``.

    Parameters
    ----------
    settings
        The web server's settings (``redis_url``; workers use the same folders).
    registry
        The shared job registry.
    """

    def __init__(self, settings: Settings, registry: JobRegistry) -> None:
        self.registry = registry
        self.app = make_celery_app(settings)

    def submit(self, kind: str, payload: dict[str, Any], *, params: dict[str, Any]) -> str:
        """Record job ``kind`` (queued, owned by the current request's owner) and queue it;
        returns the job id."""
        job_id = uuid.uuid4().hex
        self.registry.write(JobInfo(id=job_id, kind=kind, params=params, executor="celery"))
        try:
            self.app.send_task(TASK, args=[job_id, kind, payload], task_id=job_id)
        except Exception as err:  # Redis down: the job fails with one line, nothing queued
            log.exception("job %s could not be queued", job_id)
            self.registry.fail(
                job_id, f"the job queue (Redis) cannot be reached ({type(err).__name__})"
            )
        return job_id

    def close(self) -> None:
        """Close the broker connections."""
        self.app.close()


# ------------------------------------------------------------------------- worker side
_services: dict[int, AnalysisService] = {}
_services_lock = threading.Lock()


def register_tasks(celery_app: Any, make_service: Callable[[], AnalysisService]) -> dict[str, Any]:
    """Register :data:`TASK` on ``celery_app`` (a worker's); returns it by name.

    Each worker process keeps one analysis service made by ``make_service()`` (over the
    same settings, hence cache, data and model folders, as the web server; it must run its
    jobs itself rather than queue them again).
    """

    @celery_app.task(name=TASK, bind=True)
    def run(task: Any, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        service = worker_service(make_service)
        body = service.job_body(kind, payload)
        run_job(
            service.jobs.registry,
            job_id,
            body.fn,
            result_key=body.result_key,
            result_json=body.result_json,
            worker=str(getattr(task.request, "hostname", "") or f"pid {os.getpid()}"),
            cleanup=body.cleanup,
        )

    return {TASK: run}


def worker_service(make_service: Callable[[], AnalysisService]) -> AnalysisService:
    """This worker process's analysis service (made on first use, after a fork)."""
    pid = os.getpid()
    with _services_lock:
        if pid not in _services:
            _services[pid] = make_service()
        return _services[pid]
