"""Annotations in a real browser: select the cells of a cell type from the legend and name
them in a new label set; copy the cell types into a set and rename the CD14+ cluster to
"CD14 monocytes", merge two types, undo; the UMAP and its legend show each step, the
compare dropdown and the DE page offer the set's categories, Lookup's dot plot rows follow
the set, and a reload keeps it (saved server-side in the workspace)."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as tb

pytestmark = pytest.mark.browser


def _scroll_to(driver: WebDriver, element_id: str) -> Any:
    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    return element


def _type(driver: WebDriver, element_id: str, value: str) -> None:
    """Replace an input's text as a user would (React sees every key)."""
    box = _scroll_to(driver, element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(value)
    tb.wait_for(driver, lambda d: box.get_attribute("value") == value, f"{element_id} not typed")


def _click(driver: WebDriver, element_id: str) -> None:
    _scroll_to(driver, element_id).click()


def _legend(driver: WebDriver) -> dict[str, int]:
    """The legend's entries under the UMAP: ``{name: cells}``."""
    out = {}
    for item in driver.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .legend-item"):
        name = item.find_element(By.CSS_SELECTOR, ".legend-name").text
        out[name] = int(item.find_element(By.CSS_SELECTOR, ".legend-count").text.replace(",", ""))
    return out


def _wait_legend(driver: WebDriver, want: Any, message: str) -> dict[str, int]:
    return tb.wait_for(driver, lambda d: (lambda g: g if want(g) else False)(_legend(d)), message)


def _status(driver: WebDriver, starts: str) -> str:
    return tb.wait_for(
        driver,
        lambda d: (lambda t: t if t.startswith(starts) else False)(
            d.find_element(By.ID, ids.ANN_STATUS).text
        ),
        f"no status line starting {starts!r}",
    )


def _pick_category(driver: WebDriver, name: str) -> None:
    tb.pick_option(driver, ids.ANN_CATEGORIES, name[:8], name)
    driver.find_element(By.TAG_NAME, "body").click()  # close the menu


def test_label_sets_from_a_selection_and_from_the_types(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    service, pair = dashboard.service, dashboard.pair
    types = service.shown_cell_types(pair).astype(str)
    counts = types.value_counts()
    mono = next(t for t in counts.index if t.startswith("CD14+"))
    two = [t for t in counts.index if t != mono][:2]
    tb.open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    tb.wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["n_points"] > 0, "no UMAP")

    # the monocytes, selected from the legend, become "picked" in a new set
    entry = tb.wait_for(
        driver,
        lambda d: next(
            (
                e
                for e in d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .legend-item")
                if e.find_element(By.CSS_SELECTOR, ".legend-name").text == mono
            ),
            False,
        ),
        "no legend entry of the monocytes",
    )
    entry.click()
    tb.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: g["selectedpoints"] is not None and len(g["selectedpoints"]) == counts[mono],
        "the legend click did not select the monocytes",
    )
    _type(driver, ids.ANN_NEW_NAME, "Picked")
    _type(driver, ids.ANN_LABEL, "my monocytes")
    _click(driver, ids.ANN_FROM_SELECTION)
    line = _status(driver, "Made:")
    assert f"“Picked”: 1 category, {counts[mono]:,} of {len(types):,} cells labelled" in line
    legend = _wait_legend(
        driver, lambda g: "my monocytes" in g, "the UMAP is not coloured by the new set"
    )
    assert legend == {"my monocytes": counts[mono], "unlabelled": len(types) - counts[mono]}
    shown = driver.find_element(By.ID, ids.EXPLORE_COLOR).text  # "Colour by" names the set
    assert "Picked (label set)" in shown, shown

    # a copy of the types: rename the CD14+ cluster, then merge two others
    _type(driver, ids.ANN_NEW_NAME, "Lineage")
    _click(driver, ids.ANN_FROM_TYPES)
    _status(driver, "Made: “Lineage”")
    legend = _wait_legend(driver, lambda g: mono in g and "my monocytes" not in g, "no copy")
    assert legend == counts.to_dict()
    _pick_category(driver, mono)
    _type(driver, ids.ANN_CATEGORY_NAME, "CD14 monocytes")
    _click(driver, ids.ANN_RENAME)
    _status(driver, "Renamed:")
    legend = _wait_legend(driver, lambda g: "CD14 monocytes" in g, "the rename is not shown")
    assert mono not in legend and legend["CD14 monocytes"] == counts[mono]
    for t in two:
        _pick_category(driver, t)
    _type(driver, ids.ANN_CATEGORY_NAME, "Lymphoid")
    _click(driver, ids.ANN_RENAME)
    _status(driver, "Merged:")
    legend = _wait_legend(driver, lambda g: "Lymphoid" in g, "the merge is not shown")
    assert legend["Lymphoid"] == counts[two[0]] + counts[two[1]]
    assert not set(two) & set(legend)
    tb.wait_idle(driver)
    _scroll_to(driver, ids.EXPLORE_UMAP)
    driver.save_screenshot(str(screenshots / "explore-annotations.png"))

    # undo the merge: the two types are back
    _click(driver, ids.ANN_UNDO)
    _status(driver, "Undone: merge")
    legend = _wait_legend(driver, lambda g: "Lymphoid" not in g, "undo did not restore")
    assert legend[two[0]] == counts[two[0]] and legend["CD14 monocytes"] == counts[mono]

    # the compare dropdown offers the categories
    tb.pick_option(
        driver,
        ids.EXPLORE_COMPARE_A,
        "Lineage: CD14",
        'lab:["Lineage", "CD14 monocytes"]',
    )
    tb.assert_clean(driver, dashboard, "explore after label-set edits")

    # a reload keeps the sets (server-side, this workspace); Lookup's dot plot uses them
    tb.open_page(driver, dashboard.url, "lookup")
    tb.pick_option(driver, ids.LOOKUP_DOT_GROUPING, "Lineage", "labels:Lineage")
    dots = tb.wait_graph(
        driver,
        ids.LOOKUP_DOTPLOT,
        lambda g: "label set “Lineage”" in g["title"],
        "the dot plot rows are not the label set's",
    )
    assert dots["n_traces"] >= 1
    rows = driver.execute_script(
        "const gd = document.querySelector('#" + ids.LOOKUP_DOTPLOT + " .js-plotly-plot');"
        "return Array.from(new Set(gd._fullData.flatMap(t => Array.from(t.y || []))));"
    )
    assert "CD14 monocytes" in rows and mono not in rows
    tb.open_page(driver, dashboard.url, "de")
    tb.pick_option(driver, ids.DE_GROUP, "Lineage: CD14", 'lab:["Lineage", "CD14 monocytes"]')
    status = tb.wait_for(
        driver,
        lambda d: (lambda t: t if "Lineage: CD14 monocytes vs" in t else False)(
            d.find_element(By.ID, ids.DE_STATUS).text
        ),
        "the DE of the label set's category did not finish",
        timeout=120,
    )
    assert "features DE at FDR" in status, status
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{ids.DE_TABLE} .ag-row")
    assert rows, "the DE table of the label set's category is empty"
    tb.assert_clean(driver, dashboard, "DE of a label set's category")
