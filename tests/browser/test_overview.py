"""Explore in a real browser on a dataset above ``max_points`` (300 of the 800-cell slice):
the views draw the subsample, and a lasso drawn with the mouse selects every cell inside it,
plotted or not, keeps the shape (not a cell list) in the link, and compares by DE."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as pages
from dashboard.backend.sampling import points_in_polygon

pytestmark = pytest.mark.browser

MAX_POINTS = 300
DASHBOARD_SETTINGS = {"max_points": MAX_POINTS}  # read by conftest's ``dashboard`` fixture


#: Data coordinates of viewport pixels of a graph.
PX_TO_DATA_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
const L = gd._fullLayout, r = gd.getBoundingClientRect();
return arguments[1].map(p => [L.xaxis.p2l(p[0] - r.left - L._size.l),
                              L.yaxis.p2l(p[1] - r.top - L._size.t)]);
"""


@pytest.fixture(autouse=True)
def _fresh_session(driver: WebDriver, dashboard: Any) -> None:
    driver.get(dashboard.url + "/model")
    driver.execute_script("window.sessionStorage.clear(); window.localStorage.clear();")
    driver.get_log("browser")


def test_lasso_on_the_overview_selects_every_cell_inside(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    n_cells = service.dataset(pair).n_cells
    assert n_cells > MAX_POINTS
    pages.open_page(driver, dashboard.url, "explore")
    for graph_id in (ids.EXPLORE_UMAP, ids.EXPLORE_LINKED):
        pages.wait_graph(
            driver, graph_id, lambda g: g["n_points"] == MAX_POINTS, "subsample not drawn"
        )
    assert f"Showing {MAX_POINTS:,} of {n_cells:,} cells" in driver.page_source

    left, top, width, height = driver.execute_script(pages.PLOT_AREA_JS, ids.EXPLORE_UMAP)
    x0, x1 = left + 0.02 * width, left + 0.45 * width
    y0, y1 = top + 0.02 * height, top + 0.98 * height
    steps = 6  # a closed lasso along the box's edges, point by point
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    path = [
        (xa + (xb - xa) * i / steps, ya + (yb - ya) * i / steps)
        for (xa, ya), (xb, yb) in itertools.pairwise(corners)
        for i in range(steps)
    ] + [corners[-1]]
    polygon = np.array(driver.execute_script(PX_TO_DATA_JS, ids.EXPLORE_UMAP, path))
    xy = service.umap(pair)
    inside = points_in_polygon(
        xy["UMAP1"].to_numpy(), xy["UMAP2"].to_numpy(), polygon[:, 0], polygon[:, 1]
    )
    expected = int(inside.sum())
    assert 10 < expected < n_cells
    pages.drag(driver, [(int(x), int(y)) for x, y in path])

    umap_sel = pages.wait_graph(
        driver, ids.EXPLORE_UMAP, lambda g: g["selectedpoints"], "no cells highlighted"
    )["selectedpoints"]
    linked_sel = pages.wait_graph(
        driver, ids.EXPLORE_LINKED, lambda g: g["selectedpoints"], "linked view not highlighted"
    )["selectedpoints"]
    assert sorted(umap_sel) == sorted(linked_sel)
    # the selection counts every cell inside the lasso, not only the plotted ones
    info = driver.find_element(By.ID, ids.EXPLORE_SELECTION_INFO)
    pages.wait_for(driver, lambda d: "cells selected" in info.text, "no selection summary")
    selected = int(info.text.split(" cells selected")[0].replace(",", ""))
    assert len(umap_sel) < selected  # more cells than the highlighted plotted points
    assert abs(selected - expected) <= 0.05 * expected + 3, (selected, expected)
    # the link carries the lasso's shape, not a bitset of the cells
    pages.wait_for(driver, lambda d: "region=" in d.current_url, "the link has no region")
    assert "sel=" not in driver.current_url

    button = driver.find_element(By.ID, ids.EXPLORE_COMPARE)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    pages.wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_DE_TABLE} .ag-row"),
        "the selection-vs-rest DE table stayed empty",
        timeout=60,
    )
    assert "selection vs Rest" in driver.find_element(By.ID, ids.EXPLORE_DE_STATUS).text
    pages.wait_idle(driver)
    driver.save_screenshot(str(screenshots / "explore-overview-selection.png"))
    pages.assert_clean(driver, dashboard, "explore overview after lasso and compare")
