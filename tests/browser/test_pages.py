"""The dashboard in a real headless Chromium: every page renders, and the main interactions
(feature lookup, shared colouring, lasso selection and DE, volcano click, model-card metrics)
work end to end, with no console errors and no tracebacks.

Figures are read from the Plotly graph divs (``gd.data`` / ``gd._fullData``) and the app's
stores, so the checks are about what the browser actually drew.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import components, ids
from dashboard.backend.metrics import CV_DISPLAY_ROWS, DE_COLUMNS
from dashboard.backend.owner import acting_as
from dashboard.testing_browser import (
    CELLS_IN_BOX_JS,
    PAGES,
    PLOT_AREA_JS,
    POINT_PX_JS,
    VOLCANO_JS,
    assert_clean,
    drag,
    forget_workspace,
    graph,
    open_page,
    pick_option,
    wait_for,
    wait_graph,
    wait_idle,
)
from dashboard.views.state import get_workspaces
from dashboard.views.values import obs_labels

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _fresh_session(driver: WebDriver, dashboard: Any) -> None:
    """Each test starts from a blank app state (no colour or selection carried over)."""
    driver.get(dashboard.url + "/model")
    driver.execute_script("window.sessionStorage.clear(); window.localStorage.clear();")
    driver.get_log("browser")  # drop what earlier tests left


# -------------------------------------------------------------------------------- pages
@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders(driver: WebDriver, dashboard: Any, screenshots: Any, page: str) -> None:
    """Each page loads, shows its heading, draws its figures, and shows no error."""
    open_page(driver, dashboard.url, page)
    if page in {"explore", "lookup", "de"}:
        umap = {"explore": ids.EXPLORE_UMAP, "lookup": ids.LOOKUP_UMAP, "de": ids.DE_UMAP}[page]
        n_cells = dashboard.service.dataset(dashboard.pair).n_cells
        wait_graph(driver, umap, lambda g: g.get("n_points") == n_cells, "cells not drawn")
    if page == "de":
        wait_for(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.DE_TABLE} .ag-row"),
            "DE table stayed empty",
        )
    if page == "metrics":
        wait_graph(driver, ids.METRICS_HISTORY, lambda g: g["n_traces"] > 0, "no history")
    wait_idle(driver)
    driver.save_screenshot(str(screenshots / f"{page}.png"))
    assert_clean(driver, dashboard, page)


def test_unknown_page_is_a_readable_404(driver: WebDriver, dashboard: Any) -> None:
    driver.get(dashboard.url + "/no-such-page")
    wait_for(
        driver,
        lambda d: any("not found" in h.text.lower() for h in d.find_elements(By.TAG_NAME, "h1")),
        "no 'Page not found' heading",
    )
    # plotly.js loads with the shell (its hidden graph), not when a page's first graph
    # mounts: this page has none
    wait_for(
        driver,
        lambda d: d.execute_script("return !!(window.Plotly && window.Plotly.react)"),
        "plotly.js did not load with the app shell",
    )
    assert_clean(driver, dashboard, "404")


# ------------------------------------------------------------------------------- lookup
def test_lookup_recolours_and_explore_follows(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """Picking a gene from the autocomplete (typed lower-case) colours the cells by it, draws
    its violins and dot plot, and the Explore page opens coloured the same way."""
    open_page(driver, dashboard.url, "lookup")
    before = wait_graph(driver, ids.LOOKUP_UMAP, lambda g: g["showscale"], "no colour bar")
    assert before["colorbar_ticks"] > 0  # cell types: a categorical colour bar

    pick_option(driver, ids.LOOKUP_SEARCH, "lyz", "gene:LYZ")
    umap = wait_graph(
        driver,
        ids.LOOKUP_UMAP,
        lambda g: "LYZ" in g["colorbar_title"] and g["colorbar_ticks"] == 0,
        "not recoloured by LYZ",
    )
    assert umap["color_numeric"] and umap["color_type"] == "Float32Array", umap
    assert umap["showscale"]
    violin = wait_graph(driver, ids.LOOKUP_VIOLIN, lambda g: g["n_traces"] >= 2, "no violins")
    assert "LYZ" in violin["title"], violin
    dots = wait_graph(driver, ids.LOOKUP_DOTPLOT, lambda g: g["n_traces"] >= 1, "no dot plot")
    ticks = driver.execute_script(
        "const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');"
        "return gd._fullData.map(t => Array.from(t.x || []).concat(Array.from(t.y || [])))"
        ".flat().map(String);",
        ids.LOOKUP_DOTPLOT,
    )
    assert any("LYZ" in t for t in ticks), f"LYZ not in the dot plot ({dots})"
    wait_idle(driver)
    driver.save_screenshot(str(screenshots / "lookup-lyz.png"))
    assert_clean(driver, dashboard, "lookup after picking LYZ")

    # the shared colour store carries the choice to Explore (client-side navigation)
    driver.find_element(By.ID, ids.LOOKUP_OPEN_EXPLORE).click()
    wait_for(
        driver,
        lambda d: d.find_elements(By.ID, ids.EXPLORE_UMAP),
        "the Explore page did not open",
    )
    explore = wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: "LYZ" in g["colorbar_title"] and g["color_numeric"],
        "Explore is not coloured by LYZ",
    )
    assert explore["colorbar_ticks"] == 0
    wait_for(
        driver,
        lambda d: "LYZ" in d.find_element(By.ID, ids.EXPLORE_COLOR).text,
        "Explore's colour dropdown does not show LYZ",
    )
    wait_idle(driver)
    assert_clean(driver, dashboard, "explore coloured from lookup")


# ------------------------------------------------------------------------------ explore
def test_explore_lasso_selects_everywhere_and_compares(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """A lasso drawn with the mouse on the UMAP selects cells in both views, and "Compare
    (DE)" of the selection against the rest fills the DE table."""
    open_page(driver, dashboard.url, "explore")
    n_cells = dashboard.service.dataset(dashboard.pair).n_cells
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["n_points"] == n_cells, "cells not drawn")
    wait_graph(driver, ids.EXPLORE_LINKED, lambda g: g["n_points"] == n_cells, "no linked view")

    left, top, width, height = driver.execute_script(PLOT_AREA_JS, ids.EXPLORE_UMAP)
    # a lasso around the left third of the plot (a closed polygon, drawn point by point)
    x0, x1 = left + 0.02 * width, left + 0.35 * width
    y0, y1 = top + 0.02 * height, top + 0.98 * height
    expected = driver.execute_script(CELLS_IN_BOX_JS, ids.EXPLORE_UMAP, x0, y0, x1, y1)
    assert 10 < len(expected) < n_cells, f"lasso box holds {len(expected)} cells"
    steps = 6
    path = (
        [(x0 + (x1 - x0) * i / steps, y0) for i in range(steps + 1)]
        + [(x1, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
        + [(x1 - (x1 - x0) * i / steps, y1) for i in range(1, steps + 1)]
        + [(x0, y1 - (y1 - y0) * i / steps) for i in range(1, steps + 1)]
    )
    drag(driver, path)

    def selected(graph_id: str) -> Any:
        return wait_graph(driver, graph_id, lambda g: g["selectedpoints"], "no cells highlighted")[
            "selectedpoints"
        ]

    umap_sel = selected(ids.EXPLORE_UMAP)
    linked_sel = selected(ids.EXPLORE_LINKED)
    assert sorted(umap_sel) == sorted(linked_sel)
    # cells right on the lasso's edge may go either way
    overlap = len(set(umap_sel) & set(expected))
    assert overlap >= 0.9 * len(expected), (len(umap_sel), len(expected), overlap)
    assert len(umap_sel) <= 1.1 * len(expected) + 2
    wait_for(
        driver,
        lambda d: (
            f"{len(umap_sel):,} cells selected"
            in d.find_element(By.ID, ids.EXPLORE_SELECTION_INFO).text
        ),
        "the selection summary does not count the lassoed cells",
    )
    wait_for(
        driver,
        lambda d: (
            "Current selection" in d.find_element(By.ID, ids.EXPLORE_COMPARE_A).text
            and "All other cells" in d.find_element(By.ID, ids.EXPLORE_COMPARE_B).text
        ),
        "compare does not default to the selection vs the rest",
    )

    export = driver.find_element(By.ID, ids.EXPLORE_DE_EXPORT)
    assert not export.is_displayed(), "the CSV export shows before there is a table"
    button = driver.find_element(By.ID, ids.EXPLORE_COMPARE)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    rows = wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_DE_TABLE} .ag-row"),
        "the selection-vs-rest DE table stayed empty",
        timeout=60,
    )
    assert rows
    status = driver.find_element(By.ID, ids.EXPLORE_DE_STATUS).text
    assert "selection vs Rest" in status, status
    assert driver.find_element(By.ID, ids.EXPLORE_DE_EXPORT).is_displayed()
    # the comparison ran as a job: its panel is empty again and its Cancel gone
    panel = ids.EXPLORE_DE_JOB
    wait_for(
        driver,
        lambda d: (
            not d.find_element(By.ID, panel.cancel).is_displayed()
            and not d.find_element(By.ID, panel.progress).text
        ),
        "the compare job's panel still shows after its table came",
    )
    wait_idle(driver)
    driver.save_screenshot(str(screenshots / "explore-selection.png"))
    assert_clean(driver, dashboard, "explore after lasso and compare")


#: The names in Explore's category legend, as shown.
LEGEND_NAMES_JS = """
return Array.from(document.querySelectorAll('#' + CSS.escape(arguments[0]) + ' .legend-name'))
  .map(e => e.textContent);
"""


def test_explore_renames_a_cell_type(driver: WebDriver, dashboard: Any, screenshots: Any) -> None:
    """Rename cell types: pick a type, type a name, Apply: the legend shows it at once, and
    after a reload; Reset names brings the automatic name back."""
    service, pair = dashboard.service, dashboard.pair
    type_id = str(service.cell_types(pair).cat.categories[0])
    new = "Renamed in the browser"

    def ticks(d: WebDriver) -> list[str]:
        return d.execute_script(LEGEND_NAMES_JS, ids.EXPLORE_LEGEND) or []

    try:
        open_page(driver, dashboard.url, "explore", color="obs:cell_type")
        driver.find_element(By.CSS_SELECTOR, ".rename-types summary").click()
        pick_option(driver, "explore-rename-type", type_id[:5], type_id)
        box = driver.find_element(By.ID, "explore-rename-name")
        box.send_keys(new)
        driver.find_element(By.ID, "explore-rename-apply").click()
        wait_for(driver, lambda d: new in ticks(d), "legend kept the old name")
        status = driver.find_element(By.ID, "explore-rename-status").text
        assert f"is now “{new}”" in status, status
        assert box.get_attribute("value") == ""
        wait_idle(driver)
        driver.save_screenshot(str(screenshots / "explore-renamed.png"))
        assert_clean(driver, dashboard, "explore after a rename")
        open_page(driver, dashboard.url, "explore")  # kept on the server
        wait_for(driver, lambda d: new in ticks(d), "the name did not persist")
        driver.find_element(By.CSS_SELECTOR, ".rename-types summary").click()
        driver.find_element(By.ID, "explore-rename-reset").click()
        wait_for(
            driver,
            lambda d: new not in ticks(d) and type_id in ticks(d),
            "Reset names did not bring the automatic names back",
        )
        wait_idle(driver)
        assert_clean(driver, dashboard, "explore after resetting the names")
    finally:  # the browser's workspace keeps its own names: reset those too
        service.reset_cell_type_names(pair)
        for owner in get_workspaces().owners():
            with acting_as(owner):
                service.reset_cell_type_names(pair)


# ------------------------------------------------------------------ plots stay readable
#: Text and background colour of an element as drawn, and the contrast ratio between
#: them (WCAG: 4.5 for text; 1.0 means the text is invisible).
CONTRAST_JS = """
function rgb(s) { const m = s.match(/[\\d.]+/g).map(Number); return m.slice(0, 3); }
function lum(c) {
  const v = c.map(x => {
    x /= 255;
    return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
const st = getComputedStyle(arguments[0]);
const a = lum(rgb(st.color)), b = lum(rgb(st.backgroundColor));
return [st.color, st.backgroundColor, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
"""

#: Viewport boxes of a graph's annotations (text, left, top, right, bottom), its plot area
#: and the SVG's own box, and the colour-bar title's box.
BOXES_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
const box = e => {
  const r = e.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom];
};
const notes = Array.from(gd.querySelectorAll('.annotation-text-g')).map(
  g => [g.textContent, ...box(g)]);
const L = gd._fullLayout, r = gd.getBoundingClientRect();
const area = [r.left + L._size.l, r.top + L._size.t, r.left + L._size.l + L._size.w,
              r.top + L._size.t + L._size.h];
const title = gd.querySelector('.colorbar .cbtitle');
return {notes: notes, area: area, svg: box(gd.querySelector('svg.main-svg')),
        cbtitle: title ? [title.textContent, ...box(title)] : null};
"""


def _apart(a: list, b: list) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_segmented_controls_stay_readable_on_hover(driver: WebDriver, dashboard: Any) -> None:
    """The selected option of Raw / Denoised / Foreground keeps its label visible under the
    pointer (its text took the background's colour), and so do the other options."""
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(driver, dashboard.url, "explore")
    css = f"#{ids.EXPLORE_LAYER} .dash-options-list-option"
    # by cell type the switch is off, and its choice still readable
    off = driver.find_element(By.CSS_SELECTOR, css + ".selected")
    assert driver.execute_script(CONTRAST_JS, off)[2] >= 4.5
    pick_option(driver, ids.EXPLORE_COLOR, "LYZ", "gene:LYZ")
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: "LYZ" in g["colorbar_title"], "no LYZ")
    wait_idle(driver)
    options = driver.find_elements(By.CSS_SELECTOR, css)
    assert len(options) == 3
    selected = driver.find_element(By.CSS_SELECTOR, css + ".selected")
    ActionChains(driver).move_to_element(selected).perform()
    color, background, ratio = driver.execute_script(CONTRAST_JS, selected)
    assert ratio >= 4.5, f"selected option under the pointer: {color} on {background}"
    selected.click()  # focus-within, as after a click
    ActionChains(driver).move_to_element(selected).perform()
    assert driver.execute_script(CONTRAST_JS, selected)[2] >= 4.5
    other = next(o for o in options if "selected" not in o.get_attribute("class"))
    ActionChains(driver).move_to_element(other).perform()
    color, background, ratio = driver.execute_script(CONTRAST_JS, other)
    assert ratio >= 4.5, f"option under the pointer: {color} on {background}"


def test_cluster_labels_legend_and_colour_bar_titles_are_whole(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """On Explore the cell-type labels on the UMAP do not overlap and stay inside the plot,
    each name whole; the legend lists every type whole with its number of cells; a long
    colour-bar title (a protein's foreground probability) is not cut at the edge."""
    service, pair = dashboard.service, dashboard.pair
    open_page(driver, dashboard.url, "explore", color="obs:cell_type")
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["annotations"] > 0, "no cell-type labels")
    wait_idle(driver)
    types = service.shown_cell_types(pair).astype(str)
    names = [str(c) for c in service.shown_cell_types(pair).cat.categories]
    drawn = driver.execute_script(BOXES_JS, ids.EXPLORE_UMAP)
    notes = drawn["notes"]
    assert sorted(n[0] for n in notes) == sorted(names)  # every type, whole
    for i, a in enumerate(notes):
        x0, y0, x1, y1 = drawn["area"]
        assert a[1] >= x0 - 1 and a[3] <= x1 + 1 and a[2] >= y0 - 1 and a[4] <= y1 + 1, a
        for b in notes[:i]:
            assert _apart(a[1:], b[1:]), f"labels {a[0]!r} and {b[0]!r} overlap"
    entries = driver.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .legend-item")
    shown = {
        e.find_element(By.CLASS_NAME, "legend-name").text: e.find_element(
            By.CLASS_NAME, "legend-count"
        ).text
        for e in entries
    }
    assert shown == {n: f"{int((types == n).sum()):,}" for n in names}
    for e in entries:  # nothing clipped: the name fits its entry
        name = e.find_element(By.CLASS_NAME, "legend-name")
        assert driver.execute_script(
            "return arguments[0].scrollWidth <= arguments[0].clientWidth + 1;", name
        ), name.text
    driver.save_screenshot(str(screenshots / "explore-labels.png"))

    protein = next(p for p in service.dataset(pair).protein_names if p.startswith("CD3"))
    pick_option(driver, ids.EXPLORE_COLOR, protein.split("_")[0], f"protein:{protein}")
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["showscale"], "no colour bar")
    driver.find_element(
        By.XPATH, f"//*[@id='{ids.EXPLORE_LAYER}']//*[contains(text(), 'Foreground')]"
    ).click()
    wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: "foreground" in g["colorbar_title"],
        "not coloured by the foreground probability",
    )
    wait_idle(driver)
    drawn = driver.execute_script(BOXES_JS, ids.EXPLORE_UMAP)
    title = drawn["cbtitle"]
    assert title is not None and "probability" in title[0], title
    assert title[3] <= drawn["svg"][2] + 1, f"the colour-bar title is cut: {title}"
    assert "…" not in title[0]
    driver.save_screenshot(str(screenshots / "explore-foreground.png"))
    assert_clean(driver, dashboard, "explore coloured by a foreground probability")


def test_a_legend_click_selects_that_types_cells(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    """Clicking a legend entry selects every cell of that type in both views (cellxgene's
    habit) and the selection line counts them; clicking it again clears the selection."""
    service, pair = dashboard.service, dashboard.pair
    forget_workspace(driver)  # a new user's browser: no selection from the earlier tests
    open_page(driver, dashboard.url, "explore")
    types = service.shown_cell_types(pair).astype(str).to_numpy()
    name = str(service.shown_cell_types(pair).cat.categories[1])
    expected = [i for i, t in enumerate(types) if t == name]
    entry = next(
        e
        for e in driver.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .legend-item")
        if e.find_element(By.CLASS_NAME, "legend-name").text == name
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", entry)
    entry.click()
    for graph_id in (ids.EXPLORE_UMAP, ids.EXPLORE_LINKED):
        got = wait_graph(
            driver, graph_id, lambda g: g["selectedpoints"], f"{name}: nothing highlighted"
        )
        assert sorted(got["selectedpoints"]) == expected, graph_id
    wait_for(
        driver,
        lambda d: (
            f"{len(expected):,} cells selected"
            in d.find_element(By.ID, ids.EXPLORE_SELECTION_INFO).text
        ),
        "the selection line does not count the type's cells",
    )
    active = driver.find_elements(By.CSS_SELECTOR, f"#{ids.EXPLORE_LEGEND} .legend-item.is-active")
    assert [a.find_element(By.CLASS_NAME, "legend-name").text for a in active] == [name]
    driver.save_screenshot(str(screenshots / "explore-legend-selection.png"))
    active[0].click()  # again: cleared
    wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: g["selectedpoints"] is None or g["selectedpoints"] == [],
        "a second click did not clear the selection",
    )
    assert_clean(driver, dashboard, "explore after a legend selection")


# ----------------------------------------------------------------------------------- DE
def test_de_table_and_volcano_click(driver: WebDriver, dashboard: Any, screenshots: Any) -> None:
    """Picking a cell type fills the table for it; clicking a volcano point colours the
    cells by that feature."""
    from dashboard.figures import HIGHLIGHT
    from dashboard.views.de import de_display_table

    open_page(driver, dashboard.url, "de")
    # the type with the most DE features: its volcano must show them in red
    table = de_display_table(dashboard.service.de_one_vs_rest(dashboard.pair))
    counts = table.groupby("group1")["is_de"].sum()
    target = str(counts.idxmax())
    n_de = int(counts.max())
    assert n_de > 0
    pick_option(driver, ids.DE_GROUP, target.split(" ")[0][:6], f"type:{target}")
    wait_for(
        driver,
        lambda d: d.find_element(By.ID, ids.DE_STATUS).text.startswith(target),
        f"the DE status never named {target!r}",
    )
    status = driver.find_element(By.ID, ids.DE_STATUS).text
    assert f": {n_de:,} of" in status, status
    rows = wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#{ids.DE_TABLE} .ag-row"),
        "the DE table stayed empty",
    )
    assert rows
    volcano = wait_graph(
        driver, ids.DE_VOLCANO, lambda g: target in g["title"], "volcano not redrawn"
    )
    assert volcano["n_traces"] >= 1
    drawn = driver.execute_script(VOLCANO_JS, ids.DE_VOLCANO)
    assert drawn["by_color"].get(HIGHLIGHT) == n_de, drawn["by_color"]  # as many as it says
    labels = drawn["labels"]
    assert labels, "no feature is labelled"
    for i, a in enumerate(labels):  # every label readable: no two overlap
        for b in labels[:i]:
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, f"labels {a[4]!r} and {b[4]!r} overlap"
    before = graph(driver, ids.DE_UMAP)
    assert before and before["colorbar_ticks"] > 0  # cell types

    # the point with the largest log Bayes factor of the first trace, clicked for real
    driver.execute_script(PLOT_AREA_JS, ids.DE_VOLCANO)
    x, y = driver.execute_script(
        "const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');"
        "const t = gd._fullData[gd._fullData.length > 1 ? 1 : 0];"
        "let b = 0; for (let i = 1; i < t.y.length; i++) if (t.y[i] > t.y[b]) b = i;"
        "return [t.x[b], t.y[b]];",
        ids.DE_VOLCANO,
    )
    px, py = driver.execute_script(POINT_PX_JS, ids.DE_VOLCANO, x, y)
    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(int(px) - 3, int(py))
    builder.pointer_action.pause(0.1)
    builder.pointer_action.move_to_location(int(px), int(py))  # hover first, as a hand does
    builder.pointer_action.pause(0.2)
    builder.pointer_action.click()
    builder.perform()
    umap = wait_graph(
        driver,
        ids.DE_UMAP,
        lambda g: g["title"].endswith("(denoised)") and g["colorbar_ticks"] == 0,
        "the cells were not recoloured by the clicked feature",
    )
    assert umap["color_numeric"] and umap["color_type"] == "Float32Array", umap
    wait_graph(driver, ids.DE_VOLCANO, lambda g: g["n_traces"] > volcano["n_traces"], "no ring")
    wait_idle(driver)
    driver.save_screenshot(str(screenshots / "de-clicked.png"))
    assert_clean(driver, dashboard, "de after a volcano click")


# ------------------------------------------------------------------------------ metrics
def _table(driver: WebDriver, css: str) -> tuple[list[str], list[str]]:
    """Header cells and row labels of an HTML table."""
    table = driver.find_element(By.CSS_SELECTOR, css)
    head = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    rows = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "tbody th")]
    return head, rows


def test_metrics_model_card_tables(driver: WebDriver, dashboard: Any, screenshots: Any) -> None:
    """The model-card tables appear (after the metrics job) with the card's columns."""
    open_page(driver, dashboard.url, "metrics")
    wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, ".de-metric-table"),
        "the model-card tables never appeared",
        timeout=90,
    )
    for mod in ("rna", "protein"):
        head, rows = _table(driver, f".cell-cv-{mod}")
        assert head[0] == "Metric" and "Training Value" in head, head
        assert rows == list(CV_DISPLAY_ROWS), rows
        head, rows = _table(driver, f".gene-cv-{mod}")
        assert head == ["Metric", "Training Value"], head
        assert rows == list(CV_DISPLAY_ROWS), rows
        head, rows = _table(driver, f".de-metric-{mod}")
        assert head == ["Cell type", *DE_COLUMNS], head
        assert len(rows) >= 3, rows
        wait_graph(driver, f"{ids.METRICS_CV_PLOT}-{mod}", lambda g: g["n_traces"], "no CV plot")
        wait_graph(driver, f"{ids.METRICS_DE_PLOT}-{mod}", lambda g: g["n_traces"], "no DE bars")
    wait_for(
        driver,
        lambda d: not d.find_element(By.ID, ids.METRICS_CANCEL).is_displayed(),
        "the metrics' Cancel button still shows after the job finished",
    )
    summary = driver.find_element(By.ID, ids.METRICS_SUMMARY).text.lower()
    assert "summary statistics" in summary and "model parameters" in summary
    # calibration of both protein scales, and the per-protein means
    head, rows = _table(driver, ".calibration-table")
    assert head[-2:] == ["calibration error", "cells"] and "95%" in head, head
    assert rows == [
        "RNA",
        "Protein (measured scale)",
        "Protein (efficiency-free, as scvi-tools samples)",
    ], rows
    head, _ = _table(driver, ".protein-means")
    assert "ratio (measured)" in head and "ratio (efficiency-free)" in head, head
    assert "issue #4022" in driver.find_element(By.CSS_SELECTOR, ".metrics-scale-why").text

    def protein_gene_cv() -> str:
        return driver.find_element(By.CSS_SELECTOR, ".gene-cv-protein tbody").text

    measured = protein_gene_cv()
    assert "measured scale" in driver.find_element(By.CSS_SELECTOR, ".metrics-scale-shown").text
    css = f"#{ids.METRICS_SCALE} .dash-options-list-option"
    scvi = next(o for o in driver.find_elements(By.CSS_SELECTOR, css) if "scvi-tools" in o.text)
    scvi.click()
    wait_for(
        driver,
        lambda d: (
            "scvi-tools 1.4.2" in d.find_element(By.CSS_SELECTOR, ".metrics-scale-shown").text
            and protein_gene_cv() != measured
        ),
        "the scvi-tools 1.4.2 tables never replaced the measured-scale ones",
    )
    wait_idle(driver)
    driver.save_screenshot(str(screenshots / "metrics-card-scvi-scale.png"))
    assert_clean(driver, dashboard, "metrics")


def test_console_clean_across_pages(driver: WebDriver, dashboard: Any) -> None:
    """Navigating through every page with the top bar links logs no console error."""
    open_page(driver, dashboard.url, "explore")
    for page, (path, heading) in PAGES.items():
        link = driver.find_element(By.CSS_SELECTOR, f"#{ids.NAV} a[href='{path}']")
        link.click()
        wait_for(
            driver,
            lambda d, h=heading: any(
                e.text.strip() == h for e in d.find_elements(By.TAG_NAME, "h1")
            ),
            f"{page}: heading {heading!r} never appeared after navigation",
        )
        wait_idle(driver)
        assert "active" in (link.get_attribute("class") or ""), f"{page}: nav link not active"
        assert_clean(driver, dashboard, f"navigated to {page}")


#: The cell drawn farthest from any other (in data units; the axes are near-equal in
#: scale): hover picks the point nearest the pointer, so it must be that cell's own. Also
#: the per-point strings the browser holds.
EDGE_POINT_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
const t = gd._fullData[0], raw = gd.data[0];
let b = 0, far = -1;
for (let i = 0; i < t.x.length; i++) {
  let near = Infinity;
  for (let j = 0; j < t.x.length; j++) {
    if (j !== i) { near = Math.min(near, Math.hypot(t.x[i] - t.x[j], t.y[i] - t.y[j])); }
  }
  if (near > far) { far = near; b = i; }
}
return {x: t.x[b], y: t.y[b], cell: Number(t.customdata[b]),
        text: raw.text ? raw.text.length : null,
        hovertext: raw.hovertext ? raw.hovertext.length : null};
"""


def test_hovering_a_cell_shows_its_name_type_and_batch(driver: WebDriver, dashboard: Any) -> None:
    open_page(driver, dashboard.url, "explore")
    wait_graph(driver, ids.EXPLORE_UMAP, lambda g: g["n_points"] > 0, "no cells drawn")
    driver.execute_script(PLOT_AREA_JS, ids.EXPLORE_UMAP)  # scrolled into view
    point = driver.execute_script(EDGE_POINT_JS, ids.EXPLORE_UMAP)
    assert point["text"] is None and point["hovertext"] is None  # no string per point
    px, py = driver.execute_script(POINT_PX_JS, ids.EXPLORE_UMAP, point["x"], point["y"])
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(px) + 6, int(py))
    actions.pointer_action.pause(0.1)
    actions.pointer_action.move_to_location(int(px), int(py))
    actions.perform()
    tip_id = components.tooltip_id(ids.EXPLORE_UMAP)

    def shown(d: WebDriver) -> str | None:
        found = d.find_elements(By.ID, tip_id)
        return found[0].text if found and found[0].is_displayed() and found[0].text else None

    tip = wait_for(driver, shown, "no tooltip on the hovered cell")
    cell = point["cell"]
    service, pair = dashboard.service, dashboard.pair
    name = str(service.dataset(pair).obs_names[cell])
    cell_type = str(service.shown_cell_types(pair).iloc[cell])
    batch = str(obs_labels(service, pair, "batch").iloc[cell])
    lines = tip.splitlines()
    assert lines[:3] == [name, f"type: {cell_type}", f"batch: {batch}"], tip
    # the workspace's colouring (an earlier test's) adds its value: "FCMR · ...: 0.241"
    assert len(lines) == 3 or (len(lines) == 4 and re.fullmatch(r"[^:]+: \S.*", lines[3])), tip
    # the pointer leaves the cells (onto the card's title above the plot): the tooltip goes
    left, top, _, _ = driver.execute_script(PLOT_AREA_JS, ids.EXPLORE_UMAP)
    away = ActionBuilder(driver)
    away.pointer_action.move_to_location(int(left) + 5, max(int(top) - 60, 1))
    away.perform()
    wait_for(driver, lambda d: not shown(d), "the tooltip stayed after the pointer left")
    assert_clean(driver, dashboard, "explore after a hover")
