"""Analysis backend of the dashboard: loading, caching, model queries and background jobs.

It imports no Dash and no plotly, so scripts, the CLI and tests use it directly. Pages reach
the service through :func:`get_service`; ``create_app`` and tests choose it with
:func:`configure` (settings) or :func:`set_service` (a prepared service). Heavy modules
(torch, scanpy, umap) load on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

_service: AnalysisService | None = None
_settings: Settings | None = None
_lock = threading.Lock()


def get_service() -> AnalysisService:
    """The process-wide service, built on first use from the settings given to
    :func:`configure` (default: :func:`~dashboard.backend.settings.load_settings`, the one
    configuration loader), so background workers in other processes rebuild the same
    service."""
    global _service
    with _lock:
        if _service is None:
            from dashboard.backend.service import AnalysisService
            from dashboard.backend.settings import load_settings

            _service = AnalysisService(_settings if _settings is not None else load_settings())
        return _service


def set_service(service: AnalysisService | None) -> None:
    """Install ``service`` as the process-wide one (``None`` resets to lazy creation)."""
    global _service
    with _lock:
        _service = service


def configure(settings: Settings | None) -> None:
    """Use ``settings`` for the lazily built service; drops a service built with others."""
    global _service, _settings
    with _lock:
        if _service is not None and _service.settings != settings:
            _service = None
        _settings = settings


__all__ = ["configure", "get_service", "set_service"]
