"""Model QC in a real browser: Explore coloured by a per-cell QC quantity, and Lookup's
posterior predictive check of a gene (observed vs model counts, zero fraction, coverage)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb


def test_explore_colours_cells_by_reconstruction_error(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """Picking "Model QC: Reconstruction error, RNA" paints every cell by its own value:
    the colours vary, agree with the backend's per-cell values, and the colour bar names
    the quantity; the note under the view says what it is."""
    service, pair = dashboard.service, dashboard.pair
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    tb.pick_option(driver, ids.EXPLORE_COLOR, "reconstruction", "qc:recon_rna")
    info = tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: g["color_numeric"] and "reconstruction" in g["colorbar_title"].lower(),
        "not coloured by the RNA reconstruction error",
    )
    title = info["colorbar_title"].replace("<br>", " ")
    assert "RNA reconstruction error" in title, title
    colors = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP), dtype=float)
    expected = service.cell_qc(pair, "recon_rna")
    assert colors.shape == expected.shape and np.ptp(colors) > 0
    np.testing.assert_allclose(colors, expected, rtol=1e-5)
    tb.wait_for(
        driver,
        lambda d: "negative log-likelihood" in d.find_element(By.ID, ids.EXPLORE_LEGEND).text,
        "the note on what the reconstruction error is did not show",
    )
    tb.wait_idle(driver)
    driver.save_screenshot(str(screenshots / "explore-qc-recon.png"))
    tb.assert_clean(driver, dashboard, "explore coloured by the reconstruction error")


def test_lookup_shows_a_posterior_predictive_check(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """Looking up a gene draws observed vs model counts on the same bins (bars and a line,
    each summing to the cells checked) and a line with zero fractions and coverage."""
    service, pair = dashboard.service, dashboard.pair
    n = service.dataset(pair).n_cells
    tb.open_page(driver, dashboard.url, "lookup")
    tb.pick_option(driver, ids.LOOKUP_SEARCH, "lyz", "gene:LYZ")
    tb.wait_graph(driver, ids.LOOKUP_CHECK, lambda g: g["n_traces"] == 2, "no check figure")
    traces = driver.execute_script(tb.TRACES_JS, ids.LOOKUP_CHECK)
    assert [t["type"] for t in traces] == ["bar", "scatter"]
    observed, model = (np.asarray(t["y"]) for t in traces)
    assert len(observed) == len(model) > 1
    assert observed.sum() == n  # every cell of the slice counted once
    assert model.sum() == pytest.approx(n)  # the draws' mean histogram too
    note = tb.wait_for(
        driver,
        lambda d: d.find_element(By.ID, ids.LOOKUP_CHECK_NOTE).text or False,
        "no zero-fraction line",
    )
    check = service.feature_check(pair, "gene:LYZ")
    zero = f"Zero fraction: observed {100 * check.zero_observed:.1f}%"
    assert zero in note, note
    assert "50%:" in note and "90%:" in note and f"{n:,} cells" in note
    card = driver.find_element(By.ID, ids.LOOKUP_CHECK)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", card)
    tb.wait_idle(driver)
    driver.save_screenshot(str(screenshots / "lookup-check.png"))
    tb.assert_clean(driver, dashboard, "lookup's posterior predictive check")
