"""Celery worker module: the Celery app (Redis from ``TOTALVI_EXPLORER_REDIS_URL`` or
``REDIS_URL``) with the backend's job task registered.

Start a worker on any machine that sees the same data, model and cache folders (same
settings as the web server: ``TOTALVI_EXPLORER_*`` variables or ``TOTALVI_EXPLORER_CONFIG``)::

    celery -A dashboard.worker:celery_app worker --loglevel=INFO --concurrency=1
"""

from __future__ import annotations

from dashboard.backend.celery_jobs import make_celery_app, register_tasks
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import load_settings

settings = load_settings()  # the web server's loader: env, TOTALVI_EXPLORER_CONFIG file
celery_app = make_celery_app(settings)
tasks = register_tasks(celery_app, lambda: AnalysisService(settings, max_jobs=1, remote=False))
