"""Gene sets in a real browser: paste a T-cell set on Explore, score it, and the cells are
coloured by the backend's score (the colour bar naming the set), the violin shows one
violin per cell type, a reload keeps the saved set (its chip colours the cells again), and
"DE: high vs low" fills the compare table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb

pytestmark = pytest.mark.browser

T_CELLS = "CD3E, CD3D\nCD8A CD2 protein:CD3 NOT_A_GENE"


def _scroll_to(driver: WebDriver, element_id: str) -> Any:
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    return element


def _coloured_by_set(driver: WebDriver) -> dict:
    return tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: (
            g["color_numeric"] and "Gene set: T cells" in g["colorbar_title"].replace("<br>", " ")
        ),
        "not coloured by the gene set",
    )


def test_a_pasted_set_scores_colours_and_is_kept(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    data = service.dataset(pair)
    genes = [g for g in ("CD2", "CD3D", "CD3E", "CD8A") if g in set(data.var_names)]
    protein = next(p for p in data.protein_names if p.split("_")[0].upper() == "CD3")
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")

    _scroll_to(driver, ids.GENE_SET_NAME).send_keys("T cells")
    driver.find_element(By.ID, ids.GENE_SET_TEXT).send_keys(T_CELLS)
    driver.find_element(By.ID, ids.GENE_SET_SCORE).click()
    status = tb.wait_for(
        driver,
        lambda d: d.find_element(By.ID, ids.GENE_SET_STATUS).text or False,
        "no result line after Score",
    )
    assert f"T cells: {len(genes)} genes, 1 protein." in status, status
    unknown = [g for g in ("CD3E", "CD3D", "CD8A", "CD2") if g not in genes] + ["NOT_A_GENE"]
    assert f"Not found ({len(unknown)}): {', '.join(unknown)}." in status, status
    assert f"Score of {len(genes)} genes and 1 protein over {data.n_cells:,} cells." in status

    # the UMAP shows the backend's score, and its colour bar names the set
    info = _coloured_by_set(driver)
    assert "score" in info["colorbar_title"]
    colours = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP), dtype=float)
    expected = service.gene_set_score(pair, genes, [protein]).values
    assert colours.shape == expected.shape and np.ptp(colours) > 0
    np.testing.assert_allclose(colours, expected, rtol=1e-5, atol=1e-6)
    legend = driver.find_element(By.ID, ids.EXPLORE_LEGEND).text
    assert "z-scored (across all cells) log1p denoised" in legend, legend

    # one violin per cell type
    types = set(service.shown_cell_types(pair).astype(str))
    tb.wait_graph(driver, ids.GENE_SET_VIOLIN, lambda g: g["n_traces"] == len(types), "no violins")
    traces = driver.execute_script(tb.TRACES_JS, ids.GENE_SET_VIOLIN)
    assert {t["type"] for t in traces} == {"violin"}
    assert sum(len(t["y"]) for t in traces) == data.n_cells  # every cell in one violin
    chip = tb.wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.GENE_SET_LIST} .chip"),
        "the set was not saved as a chip",
    )
    assert chip[0].text == f"T cells · {len(genes) + 1}"
    tb.wait_idle(driver)
    _scroll_to(driver, ids.GENE_SET_VIOLIN)
    driver.save_screenshot(str(screenshots / "explore-gene-set.png"))
    tb.assert_clean(driver, dashboard, "explore coloured by a gene set")

    # a reload keeps the set (and the colouring); its chip colours the cells again
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    chips = tb.wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.GENE_SET_LIST} .chip"),
        "the saved set did not come back after a reload",
    )
    assert chips[0].text.startswith("T cells")
    tb.wait_graph(driver, ids.EXPLORE_UMAP, lambda g: not g["showscale"], "not by cell type")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chips[0])
    chips[0].click()
    _coloured_by_set(driver)
    colours = np.asarray(driver.execute_script(tb.COLORS_JS, ids.EXPLORE_UMAP), dtype=float)
    np.testing.assert_allclose(colours, expected, rtol=1e-5, atol=1e-6)

    # DE between the top and bottom quartile of the score fills the compare table
    _scroll_to(driver, ids.GENE_SET_DE).click()
    tb.wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_DE_TABLE} .ag-row"),
        "the high-vs-low DE table stayed empty",
        timeout=90,
    )
    line = driver.find_element(By.ID, ids.EXPLORE_DE_STATUS).text
    assert "T cells high (top 25%) vs T cells low (bottom 25%)" in line, line
    tb.wait_idle(driver)
    tb.assert_clean(driver, dashboard, "explore after DE high vs low")


def test_an_uploaded_list_fills_the_box_and_a_list_with_no_known_entry_is_refused(
    driver: WebDriver, dashboard: Any, tmp_path: Any
) -> None:
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    listing = tmp_path / "b_cells.csv"
    listing.write_text("gene\nMS4A1\nCD79A\n", encoding="utf-8")
    upload = driver.find_element(By.CSS_SELECTOR, f"#{ids.GENE_SET_UPLOAD} input[type=file]")
    upload.send_keys(str(listing))
    box = driver.find_element(By.ID, ids.GENE_SET_TEXT)
    tb.wait_for(driver, lambda d: "MS4A1" in (box.get_attribute("value") or ""), "upload not read")
    name = driver.find_element(By.ID, ids.GENE_SET_NAME)
    assert name.get_attribute("value") == "b_cells"
    assert "File read" in driver.find_element(By.ID, ids.GENE_SET_STATUS).text
    for field in (name, box):  # emptied as a user would (React sees the keys)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
    tb.wait_for(driver, lambda d: not box.get_attribute("value"), "the box did not empty")
    _scroll_to(driver, ids.GENE_SET_NAME).send_keys("junk")
    driver.find_element(By.ID, ids.GENE_SET_TEXT).send_keys("FOO BAR")
    driver.find_element(By.ID, ids.GENE_SET_SCORE).click()
    refusal = "none of the entries is a gene or protein of this dataset: FOO, BAR"
    tb.wait_for(
        driver,
        lambda d: refusal in d.find_element(By.ID, ids.GENE_SET_STATUS).text,
        "no refusal line",
    )
    driver.execute_script("window.scrollTo(0, 0);")
    tb.pick_option(driver, ids.EXPLORE_COLOR, "lyz", "gene:LYZ")  # the page still works
    tb.wait_graph(driver, ids.EXPLORE_UMAP, lambda g: "LYZ" in g["colorbar_title"], "no LYZ")
    tb.wait_idle(driver)
    tb.assert_clean(driver, dashboard, "explore after a refused gene set")
