"""Explore's linked view in a real headless Chromium: the kind "Embedding" plots a layout
of the file's own (``obsm``), and a lasso in it selects the same cells in the main view; the
kind "Two-feature blend" colours the UMAP by two features with a two-axis key. The main view
opens on the file's layout and switches to our latent UMAP."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard.testing_browser import (
    CELLS_IN_BOX_JS,
    COLORS_JS,
    PLOT_AREA_JS,
    assert_clean,
    drag,
    open_page,
    pick_option,
    wait_for,
    wait_graph,
    wait_idle,
)
from dashboard.views.blend import blend_values
from dashboard.views.cells import umap_xy
from dashboard.views.colours import ColorSpec, feature_values
from dashboard.views.features import default_protein_pair, feature_catalog
from dashboard.views.layouts import OURS

pytestmark = pytest.mark.browser

#: The browser tests' PBMC slice (conftest's ``SLICE``: the model trains once per process).
SLICE = {"n_cells": 800, "n_genes": 400, "max_epochs": 20}
#: Seed of the synthetic t-SNE-like layout (a random cloud: unlike the UMAP's clusters).
LAYOUT_SEED = 7


def pbmc_with_a_layout() -> tuple[Any, Any]:
    """The browser tests' PBMC slice and model, the slice carrying ``obsm["X_tsne"]``."""
    from dashboard.backend.testing import trained_pbmc

    data, model = trained_pbmc(**SLICE)
    tsne = np.random.default_rng(LAYOUT_SEED).normal(size=(data.n_cells, 2)) * 20
    return dataclasses.replace(data, layouts={"X_tsne": tsne}), model


DASHBOARD_PAIR = pbmc_with_a_layout

XY_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullData || !gd._fullData.length || !gd._fullData[0].x) return null;
const t = gd._fullData[0];
return [Array.from(t.x).map(Number), Array.from(t.y).map(Number)];
"""

KEY_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
const L = gd && gd._fullLayout;
if (!L || !L.xaxis2 || !L.yaxis2) return null;
const title = a => (a.title && a.title.text) || '';
return {x: title(L.xaxis2), y: title(L.yaxis2), xticks: Array.from(L.xaxis2.ticktext || []),
        traces: gd._fullData.map(t => t.name)};
"""


def _kind(driver: WebDriver, label: str) -> None:
    """Click the linked view's kind ``label``."""
    driver.find_element(
        By.XPATH,
        f"//*[@id='{ids.EXPLORE_LINKED_KIND}']//*[contains(@class, 'dash-options-list-option')]"
        f"[contains(normalize-space(.), '{label}')]",
    ).click()


def _selected(driver: WebDriver, graph_id: str) -> list[int]:
    info = wait_graph(driver, graph_id, lambda g: g["selectedpoints"], "no cells highlighted")
    return sorted(info["selectedpoints"])


@pytest.fixture(autouse=True)
def _fresh_session(driver: WebDriver, dashboard: Any) -> None:
    driver.get(dashboard.url + "/model")
    driver.execute_script("window.sessionStorage.clear(); window.localStorage.clear();")
    driver.get_log("browser")


def test_embedding_plots_the_files_layout_and_a_lasso_selects_in_the_umap(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    data = dashboard.service.dataset(dashboard.pair)
    tsne = data.layouts["X_tsne"]
    open_page(driver, dashboard.url, "explore")
    n = data.n_cells
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: g["n_points"] == n, "no linked view")
    _kind(driver, "Embedding")
    # ours first: the latent UMAP, in the page's colouring
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: "Latent UMAP" in g["title"], "no UMAP")
    pick_option(driver, ids.EXPLORE_LINKED_LAYOUT, "tsne", "obsm:X_tsne")
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: "X_tsne" in g["title"], "no X_tsne")
    wait_idle(driver)
    x, y = driver.execute_script(XY_JS, ids.EXPLORE_LINKED)
    np.testing.assert_allclose(x, tsne[:, 0], rtol=1e-6)
    np.testing.assert_allclose(y, tsne[:, 1], rtol=1e-6)
    main_x, _ = driver.execute_script(XY_JS, ids.EXPLORE_UMAP)
    np.testing.assert_allclose(main_x, x, rtol=1e-6)  # the main view opens on the file's
    # "same as the UMAP": the same colours per cell
    assert driver.execute_script(COLORS_JS, ids.EXPLORE_LINKED) == driver.execute_script(
        COLORS_JS, ids.EXPLORE_UMAP
    )
    assert (
        "carries no 2-D layout"
        not in driver.find_element(By.ID, ids.EXPLORE_LINKED_EMBEDDING).text
    )

    left, top, width, height = driver.execute_script(PLOT_AREA_JS, ids.EXPLORE_LINKED)
    x0, x1 = left + 0.02 * width, left + 0.4 * width
    y0, y1 = top + 0.02 * height, top + 0.98 * height
    expected = driver.execute_script(CELLS_IN_BOX_JS, ids.EXPLORE_LINKED, x0, y0, x1, y1)
    assert 10 < len(expected) < n, f"lasso box holds {len(expected)} cells"
    steps = 6
    path = (
        [(x0 + (x1 - x0) * i / steps, y0) for i in range(steps + 1)]
        + [(x1, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
        + [(x1 - (x1 - x0) * i / steps, y1) for i in range(1, steps + 1)]
        + [(x0, y1 - (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    )
    drag(driver, path)
    in_umap = _selected(driver, ids.EXPLORE_UMAP)
    assert in_umap == _selected(driver, ids.EXPLORE_LINKED)
    overlap = len(set(in_umap) & set(expected))  # cells right on the edge may go either way
    assert overlap >= 0.9 * len(expected) and len(in_umap) <= 1.1 * len(expected) + 2
    # they are the cells on the left of the t-SNE layout
    chosen = tsne[in_umap, 0]
    assert np.quantile(chosen, 0.9) < np.quantile(tsne[:, 0], 0.6)
    wait_for(
        driver,
        lambda d: (
            f"{len(in_umap):,} cells selected"
            in d.find_element(By.ID, ids.EXPLORE_SELECTION_INFO).text
        ),
        "the selection summary does not count the lassoed cells",
    )
    card = driver.find_element(By.ID, ids.EXPLORE_LINKED).find_element(
        By.XPATH, "./ancestor::section[1]"
    )
    card.screenshot(str(screenshots / "linked-embedding.png"))
    assert_clean(driver, dashboard, "linked embedding")


def test_two_feature_blend_colours_each_cell_and_names_both_axes_of_its_key(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    catalog = feature_catalog(service, pair)
    open_page(driver, dashboard.url, "explore")
    n = service.dataset(pair).n_cells
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: g["n_points"] == n, "no linked view")
    _kind(driver, "Two-feature blend")
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: "blend" in g["title"], "no blend")
    wait_idle(driver)
    pick_option(driver, ids.EXPLORE_LINKED_A, "LYZ", "gene:LYZ")  # a gene, found by search
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: "LYZ" in g["title"], "no LYZ blend")
    wait_idle(driver)
    b_key = f"protein:{default_protein_pair(catalog)[1]}"  # B as the page opened it
    # the colours: each cell's code on the blend's grid, as the view module computes it
    spec = {"layer": "denoised"}
    expected = blend_values(
        feature_values(service, pair, ColorSpec("gene:LYZ", **spec)),
        feature_values(service, pair, ColorSpec(b_key, **spec)),
        ("", ""),
    )
    drawn = driver.execute_script(COLORS_JS, ids.EXPLORE_LINKED)
    assert drawn == expected.codes.tolist()
    assert len(set(drawn)) > 5, "the blend does not tell the cells apart"
    umap_colors = driver.execute_script(COLORS_JS, ids.EXPLORE_UMAP)
    assert drawn != umap_colors  # its own colours, not the page's
    key = driver.execute_script(KEY_JS, ids.EXPLORE_LINKED)
    assert key["x"] == catalog.shown_name("gene:LYZ")
    assert key["y"] == catalog.shown_name(b_key)
    low, high = expected.scaled_a.low, expected.scaled_a.high
    assert key["xticks"] == [f"{low:.3g}", f"{high:.3g}"]
    assert key["traces"][-1] == "blend key"
    driver.find_element(By.ID, ids.EXPLORE_LINKED).screenshot(str(screenshots / "blend.png"))
    assert_clean(driver, dashboard, "linked blend")


def test_the_main_view_opens_on_the_files_layout_and_switches_to_ours(
    driver: WebDriver, dashboard: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    tsne = service.dataset(pair).layouts["X_tsne"]
    n = service.dataset(pair).n_cells
    open_page(driver, dashboard.url, "explore")
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["n_points"] == n, "no main view")
    wait_idle(driver)
    choice = driver.find_element(By.ID, ids.EXPLORE_LAYOUT.choice)
    assert "X_tsne (from the file)" in choice.text
    x, y = driver.execute_script(XY_JS, ids.EXPLORE_UMAP)
    np.testing.assert_allclose(x, tsne[:, 0], rtol=1e-6)
    np.testing.assert_allclose(y, tsne[:, 1], rtol=1e-6)
    pick_option(driver, ids.EXPLORE_LAYOUT.choice, "Latent", OURS)
    ux, uy = umap_xy(service, pair)
    wait_for(
        driver,
        lambda d: np.allclose(d.execute_script(XY_JS, ids.EXPLORE_UMAP)[0], ux, rtol=1e-6),
        "the main view does not show our UMAP",
        timeout=60,  # (computed by a job if the warm steps have not yet)
    )
    np.testing.assert_allclose(driver.execute_script(XY_JS, ids.EXPLORE_UMAP)[1], uy, rtol=1e-6)
    assert "Latent UMAP (ours)" in choice.text
    assert "layout=umap" in driver.current_url  # a shared link opens ours
    assert_clean(driver, dashboard, "main view layout")
