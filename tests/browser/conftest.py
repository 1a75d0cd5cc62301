"""Real-browser fixtures: the dashboard on a small trained PBMC slice, served by werkzeug in a
background thread, and one headless Chromium driven by selenium.

Chromium and chromedriver are system packages (``.ci/run`` apt-installs them). Their absence
fails the browser tests with a clear message instead of skipping them, so CI cannot pass
without having driven a real browser.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboard.testing_browser import CHROMEDRIVER, CHROMIUM, new_driver
from dashboard.testing_live import RESULT_FOLDERS

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
#: A slice that trains in seconds but still has every PBMC cell type.
SLICE = {"n_cells": 800, "n_genes": 400, "max_epochs": 20}


class LogCapture(logging.Handler):
    """Collects the server's ERROR records (a failed callback logs one, with traceback)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@dataclass
class Dashboard:
    """The running app: its URL, service, active pair and the server's error log."""

    url: str
    service: Any
    pair: Any
    errors: LogCapture


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"browser tests need Chromium and chromedriver, missing: {', '.join(missing)}. "
            "Install them (Debian: apt-get install chromium chromium-driver) or point "
            "TVE_CHROMIUM / TVE_CHROMEDRIVER at them.",
            pytrace=False,
        )


#: Prepared results caches by pair (see :func:`_prepared_results`), shared by the modules.
_PREPARED: dict[str, Path] = {}


def _prepare(service: Any, pair: Any, state: Any) -> None:
    """Prepare ``pair`` as a workspace switching to it does, warm steps included."""
    job = state.prepare(pair)
    info = service.wait(job, timeout=600)
    assert str(info.status) == "done", f"preparing the model failed: {info.error}"
    deadline = time.monotonic() + 120
    while state.status().warming and time.monotonic() < deadline:  # DE one-vs-rest
        time.sleep(0.1)


def _prepared_results(name: str, data: Any, model: Any, root: Path) -> Path:
    """A cache folder where ``(data, model)`` was prepared once per session (first view
    and warm steps), for the modules of the same pair to copy: results are keyed by
    content, so a copy serves them as the preparation would compute them."""
    if name not in _PREPARED:
        from dashboard.backend.service import AnalysisService
        from dashboard.backend.settings import Settings
        from dashboard.views.state import ActiveState

        service = AnalysisService(Settings(cache_dir=root, de_n_samples=DE_N_SAMPLES))
        try:
            pair = service.add_model(service.add_dataset(data, name=name), model)
            _prepare(service, pair, ActiveState(service, warm=True))
        finally:
            service.close()
        _PREPARED[name] = root
    return _PREPARED[name]


#: DE draws of the browser tests' service (fewer than the default: quick, still real).
DE_N_SAMPLES = 1000


@pytest.fixture(scope="module")
def dashboard(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """The dashboard over a prepared small model, served on a free local port (module
    scope: its service and state are process-wide while it runs, and reset after). A test
    module's ``DASHBOARD_SETTINGS`` dict (e.g. ``{"max_points": 300}``) adds settings; its
    ``DASHBOARD_PAIR`` (a function returning ``(data, model)``) replaces the PBMC slice.
    The module starts from a copy of the pair's results prepared once per session (its
    jobs, workspaces and names start empty)."""
    _require_browser()
    from werkzeug.serving import make_server

    from dashboard import backend
    from dashboard.app import create_app
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from dashboard.backend.testing import trained_pbmc
    from dashboard.views.state import ActiveState, set_state

    make_pair = getattr(request.module, "DASHBOARD_PAIR", None)
    data, model = make_pair() if make_pair is not None else trained_pbmc(**SLICE)
    name = "simulated pair" if make_pair is not None else "pbmc slice"
    kind = make_pair.__name__ if make_pair is not None else name
    template = _prepared_results(kind, data, model, tmp_path_factory.mktemp("prepared"))
    root = tmp_path_factory.mktemp("browser")
    for folder in RESULT_FOLDERS:
        if (template / folder).is_dir():
            shutil.copytree(template / folder, root / "cache" / folder)
    settings = Settings(
        cache_dir=root / "cache",
        model_dir=root / "models",
        de_n_samples=DE_N_SAMPLES,
        **getattr(request.module, "DASHBOARD_SETTINGS", {}),
    )
    service = AnalysisService(settings)
    pair = service.add_model(service.add_dataset(data, name=name), model)
    state = ActiveState(service, warm=True)
    _prepare(service, pair, state)

    errors = LogCapture()
    logging.getLogger("dashboard").addHandler(errors)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(service, state=state)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Dashboard(f"http://127.0.0.1:{server.server_port}", service, pair, errors)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        logging.getLogger("dashboard").removeHandler(errors)
        backend.set_service(None)  # create_app installed them process-wide
        set_state(None)
        service.close()


@pytest.fixture(scope="module")
def driver(dashboard: Dashboard) -> Iterator[Any]:
    """One headless Chromium for the module."""
    drv = new_driver()
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the page screenshots go (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
