"""The app in process on one dataset and model, for callback and HTTP tests.

:func:`app_on` is the one set-up the page tests share: a service with the given settings,
the pair registered (and prepared), made active, the Dash app built (which runs the page
modules), umap-learn replaced by :func:`~dashboard.testing.fast_umap`; on exit the active
state, the service and the patch are undone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any
from unittest import mock

from dashboard import backend
from dashboard.app import create_app
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.testing import fast_umap
from dashboard.views.state import ActiveState, prepare_pair, set_state


@contextmanager
def app_on(
    settings: Settings,
    data: Any,
    model: Any,
    *,
    name: str = "small",
    path: str | None = None,
    prepare: bool = True,
) -> Iterator[SimpleNamespace]:
    """Yield ``service``, ``pair`` (``data`` named "PBMC slice", ``model`` named ``name``,
    registered with ``path`` when given), ``state`` and ``app`` with the pair active;
    ``prepare`` computes its start-up results first, as the server does."""
    with mock.patch("dashboard.backend.embedding.compute_umap", fast_umap):
        service = AnalysisService(settings)
        try:
            dataset = service.add_dataset(data, name="PBMC slice")
            extra = {} if path is None else {"path": path}
            pair = service.add_model(dataset, model, name=name, **extra)
            state = ActiveState(service, warm=False)
            if prepare:
                prepare_pair(service, pair)
            state.activate(pair)
            app = create_app(service, state=state)  # runs the page modules
            yield SimpleNamespace(service=service, pair=pair, state=state, app=app)
        finally:
            set_state(None)
            backend.set_service(None)
            service.close()
