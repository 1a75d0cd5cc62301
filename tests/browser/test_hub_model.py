"""An scvi-hub model folder in a real headless Chromium: the app opened by
``bootstrap(None, folder)`` on a copy of the seed-like checkpoint (no flag) reaches ready,
the Model page lists its 17 batches, and colouring by a protein that two batches did not
measure says so on the Explore page."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import ids
from dashboard.testing_browser import wait_idle

pytestmark = pytest.mark.browser

SEEDLIKE = Path(__file__).resolve().parents[1] / "data" / "scvi_tools_1.4.2_mudata_seedlike_800"
WAIT = 60
NOTE_90 = "ADT_90 protein was not measured in s03, s11: the model's prediction is shown"
#: The UMAP's colour-bar title, lines joined.
COLORBAR_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullData || !gd._fullData.length) return '';
const cb = (gd._fullData[0].marker || {}).colorbar || {};
return ((cb.title && cb.title.text) || '').split('<br>').join(' ');
"""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The app on a copy of the seed-like folder, served while it is still preparing (this
    module's own ``dashboard``: the conftest's ``driver`` drives it)."""
    from werkzeug.serving import make_server

    from dashboard import backend
    from dashboard.backend.settings import Settings
    from dashboard.server import bootstrap, make_app
    from dashboard.testing import fast_umap
    from dashboard.views.state import set_state

    root = tmp_path_factory.mktemp("hub-browser")
    folder = root / "seedlike"
    shutil.copytree(SEEDLIKE, folder)
    mp = pytest.MonkeyPatch()
    mp.setattr("dashboard.backend.embedding.compute_umap", fast_umap)
    settings = Settings(cache_dir=root / "cache", data_dir=root, model_dir=root, de_n_samples=500)
    boot = bootstrap(None, folder, settings=settings, warm=False, out=None)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("dashboard").addHandler(handler)
    server = make_server("127.0.0.1", 0, make_app(boot).server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{server.server_port}", service=boot.service, pair=boot.pair,
            errors=errors,
        )  # fmt: skip
    finally:
        server.shutdown()
        thread.join(timeout=10)
        logging.getLogger("dashboard").removeHandler(handler)
        backend.set_service(None)
        set_state(None)
        boot.service.close()
        mp.undo()


def wait_for(driver: WebDriver, predicate: Any, message: str) -> Any:
    """``WebDriverWait`` that tolerates a re-rendered element between polls."""
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(predicate, message)


def status_ready(driver: WebDriver) -> bool:
    """The top bar names the active model and shows no preparation."""
    bar = driver.find_element(By.ID, ids.STATUS)
    return bool(bar.find_elements(By.CSS_SELECTOR, ".status-model")) and not (
        bar.find_elements(By.ID, "app-status-preparing")
    )


def test_explore_says_where_a_protein_is_imputed(driver: WebDriver, dashboard: Any) -> None:
    driver.get(dashboard.url + "/")
    wait_for(driver, status_ready, "the status bar never reached ready")
    assert "seedlike on mdata.h5mu" in driver.find_element(By.ID, ids.STATUS).text
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_UMAP} .js-plotly-plot"),
        "the Explore UMAP was never drawn",
    )
    # colour by ADT_90 through the colour picker (once the page has settled)
    wait_idle(driver)
    wait_for(driver, lambda d: d.find_elements(By.ID, ids.EXPLORE_COLOR), "no colour picker")
    driver.find_element(By.ID, ids.EXPLORE_COLOR).click()
    box = wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, ".dash-dropdown-content input[type=search]"),
        "the colour picker's search box did not open",
    )
    box.send_keys("ADT_90")
    option = wait_for(
        driver,
        lambda d: d.find_element(
            By.CSS_SELECTOR, '.dash-dropdown-content [role=option] input[value="protein:ADT_90"]'
        ),
        "no option protein:ADT_90",
    )
    option.find_element(By.XPATH, "./ancestor::*[@role='option'][1]").click()
    note = wait_for(
        driver,
        lambda d: next(
            (
                e
                for e in d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .color-note")
                if NOTE_90 in e.text
            ),
            False,
        ),
        "the imputed note never showed under the UMAP",
    )
    assert note.is_displayed()
    title = wait_for(
        driver,
        lambda d: (t := d.execute_script(COLORBAR_JS, ids.EXPLORE_UMAP)) and "ADT_90" in t and t,
        "the UMAP was never coloured by ADT_90",
    )
    assert title == "ADT_90 protein · raw (log1p); imputed in s03, s11 (not measured)"
    # the Model page lists the 17 batches under their key
    driver.get(dashboard.url + "/model")
    wait_for(
        driver,
        lambda d: "17 (sample_id): s00, s01" in d.find_element(By.TAG_NAME, "body").text,
        "the Model page never listed 17 batches (sample_id)",
    )
    assert not dashboard.errors, [r.getMessage() for r in dashboard.errors]
