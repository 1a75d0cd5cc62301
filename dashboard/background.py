"""Dash background-callback managers for the pages' long jobs (training, DE, metrics).

Lives beside, not inside, ``dashboard.backend``, which imports no Dash at all; Dash is
imported inside the functions only.

One machine (default)
    ``DiskcacheManager`` keeps Dash's job bookkeeping in ``<cache_dir>/callbacks`` and runs
    every background callback in a child process. Needs ``pip install 'dash[diskcache]'``
    (``diskcache``, ``multiprocess``, ``psutil``).

Several workers (Celery + Redis)
    Set ``TOTALVI_EXPLORER_REDIS_URL`` (or ``REDIS_URL``), e.g. ``redis://localhost:6379/0``,
    and ``pip install 'dash[celery]'`` (``celery[redis]``). The app module must expose the
    Celery app next to the Dash app, e.g. in ``dashboard/app.py``::

        settings = Settings.from_env()
        celery_app = make_celery_app(settings)
        manager = make_background_manager(settings, celery_app=celery_app)

    Then start Redis, the web server and at least one worker (from the repository root)::

        redis-server &
        celery -A dashboard.app:celery_app worker --loglevel=INFO --concurrency=2 &
        gunicorn 'dashboard.app:server'

    Workers rebuild the analysis service from the same environment (``Settings.from_env``),
    so they share the results cache and the job registry in ``cache_dir``.

Backend jobs on Celery workers
    :func:`register_tasks` makes the backend's training job a Celery task, and
    :func:`submit_train_celery` queues it: the job is recorded in the shared job registry, so
    its progress, cancel and result work as for local jobs. ``dashboard.worker`` is a worker
    module with the tasks registered::

        celery -A dashboard.worker:celery_app worker --loglevel=INFO --concurrency=1
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.settings import Settings

if TYPE_CHECKING:
    from dashboard.backend.refs import DatasetRef
    from dashboard.backend.service import AnalysisService

#: Name of the Celery task that trains a model (see :func:`register_tasks`).
TRAIN_TASK = "totalvi_explorer.train"


def make_celery_app(settings: Settings | None = None) -> Any:
    """A Celery app with Redis as broker and result backend (``settings.redis_url``)."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        msg = "no Redis URL: set TOTALVI_EXPLORER_REDIS_URL (or REDIS_URL) to use Celery"
        raise BackendError(msg)
    try:
        from celery import Celery
    except ImportError:
        msg = "Celery is not installed: pip install 'dash[celery]' (celery with redis)"
        raise BackendError(msg) from None
    return Celery("totalvi_explorer", broker=settings.redis_url, backend=settings.redis_url)


def make_background_manager(
    settings: Settings | None = None,
    *,
    celery_app: Any = None,
    expire: int | None = None,
) -> Any:
    """Dash's background-callback manager: Celery when a Redis URL is configured (or
    ``celery_app`` is given), else a ``DiskcacheManager`` in ``settings.callbacks_dir``.

    ``expire`` is the seconds Dash keeps a finished callback's result. Raises
    :class:`BackendError` naming the package to install when a dependency is missing.
    """
    settings = settings or Settings.from_env()
    if celery_app is not None or settings.redis_url:
        from dash import CeleryManager

        return CeleryManager(celery_app or make_celery_app(settings), expire=expire)
    try:
        import diskcache
        from dash import DiskcacheManager

        settings.callbacks_dir.mkdir(parents=True, exist_ok=True)
        # bounded by an eighth of the cache limit (diskcache's own default is 1 GiB): the
        # results and blocks fit the limit, this folder the slack around it
        limit = max(settings.cache_size_limit // 8, 1024**2)
        cache = diskcache.Cache(str(settings.callbacks_dir), size_limit=limit)
        return DiskcacheManager(cache, expire=expire)
    except ImportError as err:
        msg = (
            f"Dash's DiskcacheManager needs {err.name or 'a missing package'}: "
            "pip install 'dash[diskcache]' (diskcache, multiprocess, psutil)"
        )
        raise BackendError(msg) from None


def register_tasks(celery_app: Any) -> dict[str, Any]:
    """Register the backend's jobs as tasks of ``celery_app``; returns them by name.

    ``totalvi_explorer.train(job_id, dataset, kwargs)`` rebuilds the analysis service from the
    worker's environment (``Settings.from_env``: the same cache, data and model folders as the
    web server), rereads the dataset from its path, trains, saves the checkpoint atomically and
    records progress and the resulting pair under ``job_id`` in the shared job registry.
    """

    @celery_app.task(name=TRAIN_TASK)
    def train(job_id: str, dataset: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        from dashboard.backend.jobs import JobRegistry, run_job
        from dashboard.backend.refs import DatasetRef
        from dashboard.backend.service import train_in_process

        settings = Settings.from_env()
        ref = DatasetRef.from_dict(dataset)
        done, result = run_job(
            JobRegistry(settings.jobs_dir),
            job_id,
            lambda ctx: train_in_process(ctx, settings, ref, kwargs),
            result_json=lambda r: r,
        )
        return result if done else None

    return {TRAIN_TASK: train}


def submit_train_celery(
    service: AnalysisService, celery_app: Any, dataset: DatasetRef, **kwargs: Any
) -> str:
    """Queue :meth:`AnalysisService.train` on a Celery worker; returns the job id.

    The job is recorded in ``service``'s job registry first, so ``service.job``, ``wait``,
    ``cancel`` and ``job_result`` work on it as on a local job. ``kwargs`` go to
    ``train`` and must be JSON-able (paths as strings); the dataset must come from a file
    the workers can read at the same path.
    """
    from dashboard.backend.jobs import JobInfo

    if dataset.path is None:
        msg = "training on a Celery worker needs a dataset opened from a file"
        raise InvalidSelection(msg)
    kwargs = {k: str(v) if k == "out_dir" else v for k, v in kwargs.items()}
    job_id = uuid.uuid4().hex
    registry = service.jobs.registry
    registry.write(
        JobInfo(id=job_id, kind="train", params={"dataset": dataset.to_dict(), **kwargs})
    )
    celery_app.send_task(TRAIN_TASK, args=[job_id, dataset.to_dict(), kwargs], task_id=job_id)
    return job_id
