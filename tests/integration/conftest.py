"""Fixtures shared by the integration tests of serving: the app behind basic auth."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from dashboard import backend
from dashboard.app import create_app
from dashboard.auth import set_password
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.state import ActiveState, set_state


@pytest.fixture(scope="module")
def auth_app(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The app (no model loaded: fast) with basic auth for user ``alice`` (password: the
    test module's ``PASSWORD``); ``.auth`` is its ``BasicAuth``."""
    root = tmp_path_factory.mktemp("auth")
    users = root / "users"
    set_password(users, "alice", request.module.PASSWORD)
    settings = Settings(
        cache_dir=root / "cache", data_dir=root / "data", model_dir=root / "models",
        auth_file=users,
    )  # fmt: skip
    service = AnalysisService(settings)
    app = create_app(service, state=ActiveState(service, warm=False))
    yield SimpleNamespace(
        app=app, client=app.server.test_client(), users=users,
        auth=app.server.config["TOTALVI_AUTH"],
    )  # fmt: skip
    set_state(None)
    backend.set_service(None)
    service.close()
