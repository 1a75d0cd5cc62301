"""The integration scorecard in a real browser, on a small simulated 3-batch pair (the
conftest's dashboard with ``DASHBOARD_PAIR``): the Metrics page computes it (scib-metrics, a
background job) and shows one row per embedding with its numbers; Explore then colours the
cells by their per-cell batch mixing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb
from dashboard.backend.testing import exact_kbet_neighbours, trained_simulated

pytestmark = pytest.mark.browser

DASHBOARD_PAIR = trained_simulated

#: Seconds the scorecard job may take (scib-metrics compiles its jax functions on first use).
SCORECARD = 400
#: The scorecard grid's rows: each cell's column id and text.
GRID_JS = """
const grid = document.getElementById(arguments[0]);
if (!grid) return [];
const out = {};
grid.querySelectorAll('.ag-row').forEach(r => {
  const i = r.getAttribute('row-index');
  out[i] = out[i] || {};
  r.querySelectorAll('.ag-cell').forEach(c => {
    out[i][c.getAttribute('col-id')] = c.textContent.trim();
  });
});
return Object.values(out);
"""


@pytest.fixture(scope="module", autouse=True)
def _exact_kbet() -> Iterator[None]:
    """kBET's neighbour search exact while the module runs (no minute-long numba compile
    of pynndescent; the scorecard job runs in this process, on the server's threads)."""
    with exact_kbet_neighbours():
        yield


def grid_rows(driver: WebDriver) -> list[dict[str, str]]:
    return driver.execute_script(GRID_JS, ids.METRICS_INTEGRATION_GRID) or []


def test_metrics_page_computes_the_scorecard_and_shows_both_rows(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    tb.open_page(driver, dashboard.url, "metrics")
    run = driver.find_element(By.ID, ids.METRICS_INTEGRATION_RUN)
    assert run.get_attribute("disabled") is None
    assert not grid_rows(driver)  # nothing computed yet
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", run)
    run.click()
    tb.wait_for(
        driver,
        lambda d: len(grid_rows(d)) == 2,
        "the scorecard table never showed its two rows",
        SCORECARD,
    )
    rows = {r["embedding"]: r for r in grid_rows(driver)}
    assert set(rows) == {"TotalVI latent", "PCA (log1p RNA)"}
    scores = service.integration_scores(pair)
    for name, row in rows.items():
        for column, field in (
            ("Total", "total"),
            ("Bio conservation", "bio_conservation"),
            ("Batch correction", "batch_correction"),
            ("iLISI", "ilisi"),
        ):
            value = float(row[field])
            assert 0.0 <= value <= 1.0
            assert row[field] == f"{scores.table.loc[name, column]:.3f}", (name, column, row)
    text = driver.find_element(By.ID, ids.METRICS_INTEGRATION_CONTENT).text
    assert "Bio conservation" in text and "Batch correction" in text
    assert "0.6 × bio + 0.4 × batch" in text and "3 batches" in text
    tb.wait_graph(
        driver, ids.METRICS_INTEGRATION_PLOT, lambda g: g["n_traces"] == 2, "no scorecard bars"
    )
    content = driver.find_element(By.ID, ids.METRICS_INTEGRATION_CONTENT)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", content)
    tb.wait_idle(driver)
    driver.save_screenshot(str(screenshots / "metrics-integration.png"))
    tb.assert_clean(driver, dashboard, "the integration scorecard")


def test_explore_paints_the_per_cell_batch_mixing(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """After the scorecard, Explore offers the batch mixing: every cell gets its own value
    (they vary, and equal the backend's per-cell iLISI), and the colour bar names it."""
    service, pair = dashboard.service, dashboard.pair
    if not service.has_batch_mixing(pair):  # run alone: compute what the first test does
        service.integration_scores(pair)
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    tb.pick_option(driver, ids.EXPLORE_COLOR, "mixing", "obs:batch_mixing")
    info = tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: g["color_numeric"] and "batch mixing" in g["colorbar_title"].lower(),
        "not coloured by the batch mixing",
    )
    assert "iLISI" in info["colorbar_title"].replace("<br>", " ")
    colors = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP), dtype=float)
    expected = service.batch_mixing(pair).to_numpy()
    assert colors.shape == expected.shape and np.ptp(colors) > 0.05
    np.testing.assert_allclose(colors, expected, rtol=1e-5, atol=1e-6)
    tb.wait_for(
        driver,
        lambda d: "per-cell iLISI" in d.find_element(By.ID, ids.EXPLORE_LEGEND).text,
        "the note on what the batch mixing is did not show",
    )
    tb.wait_idle(driver)
    driver.save_screenshot(str(screenshots / "explore-batch-mixing.png"))
    tb.assert_clean(driver, dashboard, "explore coloured by the batch mixing")
