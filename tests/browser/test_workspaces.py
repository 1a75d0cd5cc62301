"""Two Chromium sessions at once, as two users of one server: each browser has its own
workspace (a session cookie), so what one colours and selects never shows in the other,
and comes back for its own user after a reload (kept on the server, not in the tab)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard import ids
from dashboard import testing_browser as pages

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def second(dashboard) -> Iterator[Any]:
    """Bob's browser, beside the module's (Alice's)."""
    drv = pages.new_driver()
    try:
        yield drv
    finally:
        drv.quit()


def colour_shown(driver: Any) -> str:
    return driver.find_element(By.ID, ids.EXPLORE_COLOR).text


def test_two_browsers_have_their_own_workspaces(dashboard, driver, second) -> None:
    base = dashboard.url
    driver.get(base + "/?color=gene%3ALYZ")  # Alice follows a link colouring by LYZ
    pages.wait_for(driver, lambda d: "LYZ" in colour_shown(d), "Alice: LYZ never shown")
    pages.wait_idle(driver)
    pages.wait_graph(
        driver, ids.EXPLORE_UMAP, lambda g: "LYZ" in g["colorbar_title"], "no LYZ colour bar"
    )
    pages.open_page(second, base, "explore")  # Bob, at the same time, in his own browser
    assert "LYZ" not in colour_shown(second)
    assert "cell type" in colour_shown(second).lower()
    genes = [str(g) for g in dashboard.service.dataset(dashboard.pair).var_names]
    gene = next(g for g in ("CD3E", "S100A8", "NKG7", "MS4A1", "CD74") if g in genes)
    pages.pick_option(second, ids.EXPLORE_COLOR, gene, f"gene:{gene}")
    pages.wait_for(second, lambda d: gene in colour_shown(d), f"Bob: {gene} never shown")
    pages.wait_idle(second)

    a_cookie = driver.get_cookie("tve_workspace")
    b_cookie = second.get_cookie("tve_workspace")
    assert a_cookie and b_cookie and a_cookie["value"] != b_cookie["value"]
    assert a_cookie["httpOnly"] and b_cookie["httpOnly"]
    assert driver.execute_script("return document.cookie").find("tve_workspace") < 0

    # a reload (no link) brings each user's own colouring back from the server
    pages.open_page(driver, base, "explore")
    assert "LYZ" in colour_shown(driver) and gene not in colour_shown(driver)
    pages.open_page(second, base, "explore")
    assert gene in colour_shown(second) and "LYZ" not in colour_shown(second)
    for browser, who in ((driver, "Alice"), (second, "Bob")):
        pages.assert_clean(browser, dashboard, f"{who}'s Explore")
