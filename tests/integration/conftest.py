"""Fixtures shared by the integration tests of serving: the app behind basic auth, and
``serve`` itself on waitress in a thread."""

from __future__ import annotations

import contextvars
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dashboard import backend
from dashboard.app import create_app
from dashboard.auth import set_password
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views.state import ActiveState, set_state


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


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory) -> Path:
    """A 200-cell, 100-gene PBMC slice as ``.h5ad`` (no model: serving starts fast)."""
    from dashboard.backend.testing import pbmc_slice

    path = tmp_path_factory.mktemp("serve-data") / "small.h5ad"
    pbmc_slice(n_cells=200, n_genes=100).to_anndata().write_h5ad(path)
    return path


@pytest.fixture
def waitress_serve(
    request: pytest.FixtureRequest, tmp_path: Path, small_h5ad: Path
) -> Callable[..., AbstractContextManager[Any]]:
    """``with waitress_serve(threads=2, **serve_kwargs) as server:`` runs the production
    ``serve`` (waitress, basic auth for ``alice`` with the module's ``PASSWORD``) on a free
    port in a thread; ``server.effective_port`` is where it listens. On leaving, the server
    is closed (after open connections drained, up to 10 s) and must have returned 0."""
    from dashboard.server import serve

    @contextmanager
    def start(*, threads: int, **serve_kwargs: Any) -> Iterator[Any]:
        users = tmp_path / "users"
        set_password(users, "alice", request.module.PASSWORD)
        settings = Settings(
            cache_dir=tmp_path / "cache", data_dir=small_h5ad.parent,
            model_dir=tmp_path / "models", auth_file=users, warm_up_layout=False,
        )  # fmt: skip
        started = threading.Event()
        box: dict[str, object] = {}

        def on_start(server: object) -> None:
            box["server"] = server
            started.set()

        def run() -> None:
            try:
                box["rc"] = serve(
                    small_h5ad, tmp_path / "no-model", host="127.0.0.1", port=0,
                    threads=threads, settings=settings, production=True, on_start=on_start,
                    out=io.StringIO(), **serve_kwargs,
                )  # fmt: skip
            except BaseException as err:  # surfaced below
                box["error"] = err
                started.set()

        # Dash's pages need the main thread's context (its callback context variable)
        thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        thread.start()
        try:
            assert started.wait(30), "serve did not start"
            assert "error" not in box, box.get("error")
            yield box["server"]
        finally:
            if "server" in box:
                server: Any = box["server"]
                deadline = time.monotonic() + 10  # closing under a select() of a still-open
                while len(server._map) > 2 and time.monotonic() < deadline:  # connection
                    time.sleep(0.05)  # raised EBADF now and then
                server.close()
            thread.join(15)
        assert not thread.is_alive() and box.get("rc") == 0, box.get("error")
        set_state(None)
        backend.set_service(None)

    return start
