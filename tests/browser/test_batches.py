"""Batch features in a real headless Chromium, on a simulated three-batch pair (the
embedded PBMC data has one batch): the simulated-data banner on every page, Explore's
"Decode in" (denoised values as if every cell were measured in one batch: the colours are
the model's ``transform_batch`` values and the colour bar says so), and the DE page's
controls (batch correction, δ, presets, the LFC's credible interval, the trust badge)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb
from dashboard.backend.testing import trained_simulated
from dashboard.views.colours import ColorSpec, color_data
from dashboard.views.de import de_display_table

pytestmark = pytest.mark.browser

DASHBOARD_PAIR = trained_simulated
GENE = "gene0007"


def _option(driver: WebDriver, control: str, label: str) -> Any:
    """The option of a segmented control (radio items) whose text is ``label``."""
    return driver.find_element(
        By.XPATH,
        f"//*[@id='{control}']//*[contains(@class, 'dash-options-list-option')]"
        f"[contains(normalize-space(.), '{label}')]",
    )


def _title(info: dict[str, Any]) -> str:
    """A graph's colour-bar title as one line (it is wrapped with ``<br>``)."""
    return info["colorbar_title"].replace("<br>", " ")


def _status(driver: WebDriver) -> str:
    return driver.find_element(By.ID, ids.DE_STATUS).text


def test_every_page_says_the_data_is_simulated(driver: WebDriver, dashboard: Any) -> None:
    for page in tb.PAGES:
        tb.open_page(driver, dashboard.url, page)
        banner = tb.wait_for(
            driver,
            lambda d: d.find_element(By.ID, ids.SIMULATED_BANNER),
            f"{page}: no simulated-data banner",
        )
        assert banner.text.startswith("Simulated data: simulated data"), banner.text
        assert "generated, not measured" in banner.text
    tb.assert_clean(driver, dashboard, "pages of simulated data")


def test_explore_decodes_every_cell_in_another_batch(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    tb.open_page(driver, dashboard.url, "explore", color=f"gene:{GENE}")
    _option(driver, ids.EXPLORE_LAYER, "Denoised").click()
    own = tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: "denoised" in _title(g) and "as if" not in _title(g),
        "never coloured by the denoised gene",
    )
    assert own["color_numeric"]
    before = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP))
    tb.pick_option(driver, ids.EXPLORE_DECODE.choice, "batch01", "batch01")
    tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: "as if measured in batch01" in _title(g),
        "the colour bar never named the counterfactual batch",
    )
    tb.wait_idle(driver)
    shown = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP))
    spec = ColorSpec(f"gene:{GENE}", "denoised", "batch01")
    expected = color_data(dashboard.service, dashboard.pair, spec).values
    # the cells drawn are the model's transform_batch values (in the figure's order)
    np.testing.assert_allclose(np.sort(shown), np.sort(expected), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.sort(shown), np.sort(before), rtol=1e-3)
    note = driver.find_element(By.ID, ids.EXPLORE_LEGEND).text
    assert "Counterfactual: denoised values as if measured in batch01" in note
    driver.save_screenshot(str(screenshots / "explore-decoded-in-batch01.png"))
    tb.pick_option(driver, ids.EXPLORE_DECODE.choice, "averaged", "__all__")
    tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: "averaged over 3 batches" in _title(g),
        "the colour bar never said the values are averaged over the batches",
    )
    tb.assert_clean(driver, dashboard, "explore decoded in other batches")


def test_de_controls_batch_correction_interval_and_trust(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    service.metrics(pair)  # the trust badge reads the model card's DE metric
    tb.open_page(driver, dashboard.url, "de")
    tb.wait_for(driver, lambda d: " vs all other cells" in _status(d), "no DE status")
    name = _status(driver).split(" vs all other cells")[0]
    assert "|LFC| > 0.25, FDR target 0.05" in _status(driver)
    badge = driver.find_element(By.ID, ids.DE_TRUST).text
    r = service.shown_metrics(pair, computed_only=True).diff_exp["rna"].loc[name, "lfc_pearson"]
    assert f"Model trust for {name}" in badge and f"LFC Pearson r {r:.2f}" in badge, badge

    # the credible interval of each shown LFC brackets its mean
    headers = [h.text for h in driver.find_elements(By.CSS_SELECTOR, ".ag-header-cell-text")]
    assert "LFC 95% low" in headers and "LFC 95% high" in headers, headers
    rows = driver.find_elements(
        By.CSS_SELECTOR, f"#{ids.DE_TABLE} .ag-center-cols-container .ag-row"
    )
    assert rows
    for row in rows[:10]:
        cell = {
            c.get_attribute("col-id"): c.text
            for c in row.find_elements(By.CSS_SELECTOR, ".ag-cell")
        }
        low, mean, high = (
            float(cell[k].replace("\u2212", "-")) for k in ("lfc_lower", "lfc_mean", "lfc_upper")
        )  # d3 writes a minus sign
        assert low <= mean + 1e-3 and mean <= high + 1e-3, cell

    # batch correction: draws decoded in each of the 3 batches, and the page says so
    corrected = _option(driver, ids.DE_BATCH_CORRECTION, "Batch-corrected")
    assert "disabled" not in (corrected.get_attribute("class") or "")
    corrected.click()
    tb.wait_for(
        driver,
        lambda d: (
            "batch-corrected: each group decoded as if measured in each of the 3 batches"
            in _status(d)
        ),
        "the status never said the test is batch-corrected",
        timeout=120,
    )
    # a stricter threshold: the count the page shows is the backend's, and smaller
    loose = int(_status(driver).split(": ", 1)[1].split(" of ")[0].replace(",", ""))
    box = driver.find_element(By.ID, ids.DE_DELTA)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("1", Keys.ENTER)
    tb.wait_for(driver, lambda d: "|LFC| > 1," in _status(d), "δ never reached the test", 120)
    strict = int(_status(driver).split(": ", 1)[1].split(" of ")[0].replace(",", ""))
    controls = {"delta": 1.0, "batch_correction": True}
    table = de_display_table(service.de_one_vs_rest(pair, controls=controls), group=name)
    assert strict == int(table["is_de"].sum()) and strict <= loose
    assert driver.find_element(By.ID, ids.DE_PRESET).text.strip() in {"", "custom"}
    driver.save_screenshot(str(screenshots / "de-controls.png"))
    tb.pick_option(driver, ids.DE_PRESET, "scvi", "scvi-tools defaults")
    tb.wait_for(
        driver,
        lambda d: (
            "|LFC| > 0.25, FDR target 0.05, 5,000 posterior samples" in _status(d)
            and "each cell decoded in its own batch" in _status(d)
        ),
        "the preset never set scvi-tools' defaults",
        timeout=120,
    )
    assert tb.graph(driver, ids.DE_VOLCANO)["n_traces"] >= 1
    tb.assert_clean(driver, dashboard, "DE controls")


def test_lookup_violins_add_the_decoded_values(driver: WebDriver, dashboard: Any) -> None:
    tb.open_page(driver, dashboard.url, "lookup", color=f"gene:{GENE}")
    tb.pick_option(driver, ids.LOOKUP_DECODE.choice, "batch02", "batch02")
    titles_js = (
        "const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');"
        "return (gd._fullLayout.annotations || []).map(a => a.text);"
    )
    titles = tb.wait_for(
        driver,
        lambda d: (
            (t := d.execute_script(titles_js, ids.LOOKUP_VIOLIN))
            and any("as if measured in batch02" in x for x in t)
            and t
        ),
        "the violins never showed the values decoded in batch02",
        timeout=60,
    )
    assert len([t for t in titles if "(log1p" in t]) == 3, titles  # raw | denoised | decoded
    violins = driver.execute_script(
        "const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');"
        "return gd._fullData.filter(t => t.xaxis === 'x3').map(t => Array.from(t.y));",
        ids.LOOKUP_VIOLIN,
    )
    drawn = np.sort(np.concatenate([np.asarray(v, dtype=float) for v in violins]))
    spec = ColorSpec(f"gene:{GENE}", "denoised", "batch02")
    expected = np.sort(color_data(dashboard.service, dashboard.pair, spec).values)
    np.testing.assert_allclose(drawn, expected, rtol=1e-4, atol=1e-5)  # every cell, once
    tb.assert_clean(driver, dashboard, "lookup decoded in batch02")
