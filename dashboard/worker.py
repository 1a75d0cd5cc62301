"""Celery worker module: the Celery app (Redis from ``TOTALVI_EXPLORER_REDIS_URL`` or
``REDIS_URL``) with the backend's job task registered.

Start a worker on any machine that sees the same data, model and cache folders (same
settings as the web server: ``TOTALVI_EXPLORER_*`` variables or ``TOTALVI_EXPLORER_CONFIG``)::

    celery -A dashboard.worker:celery_app worker --loglevel=INFO --concurrency=1
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from dashboard.backend import warm_up
from dashboard.backend.celery_jobs import make_celery_app, register_tasks
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import load_settings

settings = load_settings()  # the web server's loader: env, TOTALVI_EXPLORER_CONFIG file
celery_app = make_celery_app(settings)
tasks = register_tasks(celery_app, lambda: AnalysisService(settings, max_jobs=1, remote=False))


@worker_process_init.connect
def compile_layout_kernels(**_: Any) -> None:
    """In each worker process, compile the layout's and clusters' kernels in the background
    as ``serve`` does (``Settings.warm_up_layout``): a model's first view prepared on this
    worker does not wait for numba."""
    if settings.warm_up_layout:
        warm_up.start_in_background()
