"""Celery worker module: the Celery app (Redis from ``TOTALVI_EXPLORER_REDIS_URL`` or
``REDIS_URL``) with the backend's tasks registered.

Start a worker on any machine that sees the same data, model and cache folders (same
``TOTALVI_EXPLORER_*`` variables as the web server)::

    celery -A dashboard.worker:celery_app worker --loglevel=INFO --concurrency=1
"""

from __future__ import annotations

from dashboard.backend.settings import Settings
from dashboard.background import make_celery_app, register_tasks

settings = Settings.from_env()
celery_app = make_celery_app(settings)
tasks = register_tasks(celery_app)
