"""The Concordance page in a real headless Chromium: the job fills the pairs' table (CD14
protein ~ CD14 with the model's correlation), the heatmap draws the backend's per-type
correlations with the flagged types ringed, and a clicked row shows its pair's cells."""

from __future__ import annotations

import math
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb
from dashboard.views import concordance as view

pytestmark = pytest.mark.browser

HEADING = "Gene–protein concordance"
CD14 = "CD14_TotalSeqB|CD14"
CD19 = "CD19_TotalSeqB|CD19"

#: The heatmap's z, labels and ringed cells, and the scatter's title and trace names.
FIGURES_JS = """
const get = id => document.querySelector('#' + CSS.escape(id) + ' .js-plotly-plot');
const heat = get(arguments[0]), scatter = get(arguments[1]);
if (!heat || !heat.data || !heat.data.length || heat.data[0].type !== 'heatmap') return null;
const ring = heat.data[1] || {x: [], y: []};
return {
  z: Array.from(heat._fullData[0].z)
    .map(r => Array.from(r).map(v => (v === null || Number.isNaN(v)) ? null : v)),
  x: Array.from(heat.data[0].x), y: Array.from(heat.data[0].y),
  ring: Array.from(ring.x || []).map((x, i) => [ring.y[i], x]),
  scatter_title: scatter && scatter._fullLayout ? (scatter._fullLayout.title || {}).text : '',
  scatter_traces: scatter && scatter._fullData ? scatter._fullData.map(t => t.name) : [],
  scatter_points: scatter && scatter._fullData
    ? scatter._fullData.reduce((n, t) => n + (t.x || []).length, 0) : 0,
};
"""


def _row_cells(driver: WebDriver, key: str) -> dict[str, str]:
    """The text of each column of the grid row ``key`` (by column id; the pinned and the
    scrolling parts of the row together)."""
    parts = driver.find_elements(
        By.CSS_SELECTOR, f"#{ids.CONCORDANCE_GRID} .ag-row[row-id='{key}']"
    )
    return {
        c.get_attribute("col-id"): c.text.strip()
        for part in parts
        for c in part.find_elements(By.CSS_SELECTOR, ".ag-cell")
    }


def test_concordance_page_shows_pairs_heatmap_and_cells(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    driver.get(dashboard.url + "/concordance")
    tb.wait_for(
        driver,
        lambda d: any(h.text.strip() == HEADING for h in d.find_elements(By.TAG_NAME, "h1")),
        "the Concordance heading never appeared",
    )
    tb.wait_for(
        driver,
        lambda d: d.find_elements(
            By.CSS_SELECTOR, f"#{ids.CONCORDANCE_GRID} .ag-row[row-id='{CD14}']"
        ),
        "the CD14 protein ~ CD14 row never appeared (the job did not finish?)",
        timeout=300,
    )
    tb.wait_idle(driver)
    svc, pair = dashboard.service, dashboard.pair
    result = svc.gene_protein_concordance(pair)  # cached by the page's job

    # the table: one row per pair, CD14 with the model's correlation as a number
    shown = driver.find_elements(
        By.CSS_SELECTOR, f"#{ids.CONCORDANCE_GRID} .ag-center-cols-container .ag-row"
    )
    assert len(shown) == len(result.pairs)
    cells = _row_cells(driver, CD14)
    want = result.pairs.set_index(["protein", "gene"]).loc[("CD14_TotalSeqB", "CD14")]
    assert cells["model_correlation"] == f"{want['model_correlation']:.3f}"
    assert cells["pearson_all"] == f"{want['pearson_all']:.3f}"
    assert cells["protein"] == "CD14 protein"
    assert cells["gene"] == "CD14"

    # the heatmap: the backend's per-type correlations, labels and flagged cells
    drawn = tb.wait_for(
        driver,
        lambda d: d.execute_script(FIGURES_JS, ids.CONCORDANCE_HEATMAP, ids.CONCORDANCE_SCATTER),
        "the heatmap was never drawn",
    )
    heat = view.heatmap_data(svc, pair)
    assert drawn["y"] == heat.rows and "CD14 protein ~ CD14" in drawn["y"]
    assert len(drawn["x"]) == len(heat.columns)
    for got_row, want_row in zip(drawn["z"], heat.z, strict=True):
        for got, w in zip(got_row, want_row, strict=True):
            assert (got is None) if w is None else math.isclose(got, w, rel_tol=1e-6)
    n_flags = sum(f != "" for row in heat.flags for f in row)
    assert len(drawn["ring"]) == n_flags == int(result.pairs["n_flagged"].sum())
    for label, column in drawn["ring"]:
        i, j = drawn["y"].index(label), drawn["x"].index(column)
        assert heat.flags[i][j]

    # the scatter opens on CD14 protein ~ CD14, one trace per cell type
    tb.wait_for(
        driver,
        lambda d: (
            d.execute_script(FIGURES_JS, ids.CONCORDANCE_HEATMAP, ids.CONCORDANCE_SCATTER)[
                "scatter_title"
            ]
            == "CD14 protein ~ CD14"
        ),
        "the scatter did not open on CD14 protein ~ CD14",
    )
    frame, _, _ = view.scatter_frame(svc, pair, CD14)
    drawn = driver.execute_script(FIGURES_JS, ids.CONCORDANCE_HEATMAP, ids.CONCORDANCE_SCATTER)
    assert drawn["scatter_points"] == len(frame)
    assert len(drawn["scatter_traces"]) == frame["cell_type"].nunique()
    driver.save_screenshot(str(screenshots / "concordance.png"))
    driver.execute_script(
        "document.getElementById(arguments[0]).scrollIntoView({block: 'center'});",
        ids.CONCORDANCE_HEATMAP,
    )
    driver.save_screenshot(str(screenshots / "concordance-figures.png"))

    # a clicked row shows its pair's cells
    cell = driver.find_element(
        By.CSS_SELECTOR, f"#{ids.CONCORDANCE_GRID} .ag-row[row-id='{CD19}'] [col-id='gene']"
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
    cell.click()
    tb.wait_for(
        driver,
        lambda d: (
            d.execute_script(FIGURES_JS, ids.CONCORDANCE_HEATMAP, ids.CONCORDANCE_SCATTER)[
                "scatter_title"
            ]
            == "CD19 protein ~ CD19"
        ),
        "clicking the CD19 row did not show its cells",
    )
    tb.wait_idle(driver)
    tb.assert_clean(driver, dashboard, "concordance")
