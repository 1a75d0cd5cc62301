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
"""

from __future__ import annotations

from typing import Any

from dashboard.backend.errors import BackendError
from dashboard.backend.settings import Settings


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
        return DiskcacheManager(diskcache.Cache(str(settings.callbacks_dir)), expire=expire)
    except ImportError as err:
        msg = (
            f"Dash's DiskcacheManager needs {err.name or 'a missing package'}: "
            "pip install 'dash[diskcache]' (diskcache, multiprocess, psutil)"
        )
        raise BackendError(msg) from None
