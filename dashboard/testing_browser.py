"""Helpers for the real-browser tests (``tests/browser``): waiting for Dash to settle,
reading what a Plotly graph drew, driving dropdowns and the mouse, and checking a page is
clean (no error alert, traceback text, console error or server-side callback error).

One module for every browser test file; it imports selenium and pytest, so only tests use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import ids

#: The cookie naming a browser's workspace (:mod:`dashboard.identity`).
WORKSPACE_COOKIE = "tve_workspace"
#: The system Chromium and its driver (``.ci/run`` apt-installs them).
CHROMIUM = Path(os.environ.get("TVE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TVE_CHROMEDRIVER", "/usr/bin/chromedriver"))

WAIT = 30
PAGES = {
    "explore": ("/", "Explore"),
    "lookup": ("/lookup", "Lookup"),
    "de": ("/de", "Differential expression"),
    "concordance": ("/concordance", "Gene–protein concordance"),
    "metrics": ("/metrics", "Model metrics"),
    "model": ("/model", "Model"),
}
#: Console noise of software WebGL in headless Chromium (not the app's doing).
BENIGN_CONSOLE = ("webgl", "swiftshader", "gl driver message", "gpu stall", "favicon.ico")
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')

# ------------------------------------------------------------------------------ scripts
#: True when Dash has no callback queued or running and nothing is marked loading.
IDLE_JS = """
const s = window.store && window.store.getState();
if (!s || s.isLoading) return false;
const c = s.callbacks || {};
for (const k of ['requested', 'prioritized', 'blocked', 'executing', 'watched', 'executed',
                 'stored']) {
  if (c[k] && c[k].length) return false;
}
return document.querySelectorAll('[data-dash-is-loading="true"]').length === 0;
"""

#: What a graph drew: its first trace's colouring and selection, and its title.
GRAPH_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullLayout || !gd._fullData) return null;
const out = {n_traces: gd._fullData.length, title: (gd._fullLayout.title || {}).text || ''};
if (!gd._fullData.length) return out;
const t = gd._fullData[0];
const m = t.marker || {};
const c = m.color;
out.n_points = t.x ? t.x.length : 0;
out.color_type = c && c.constructor ? c.constructor.name : typeof c;
out.color_numeric = !!c && (Array.isArray(c) || ArrayBuffer.isView(c)) && c.length > 0
  && typeof c[0] === 'number';
out.showscale = !!m.showscale;
const cb = m.colorbar || {};
out.colorbar_title = (cb.title && cb.title.text) || '';
out.colorbar_ticks = cb.tickvals ? Array.from(cb.tickvals).length : 0;
const sp = gd.data[0].selectedpoints;
out.selectedpoints = sp === undefined || sp === null ? null : Array.from(sp).map(Number);
out.annotations = (gd._fullLayout.annotations || []).length;
return out;
"""

#: The marker colours of a graph's first trace, as numbers (``null`` if not drawn).
COLORS_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullData || !gd._fullData.length) return null;
const c = (gd._fullData[0].marker || {}).color;
if (!c || !(Array.isArray(c) || ArrayBuffer.isView(c))) return null;
return Array.from(c).map(Number);
"""

#: Every trace of a graph: its type, name and y values.
TRACES_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullData) return null;
return gd._fullData.map(t => ({type: t.type, name: t.name,
                              y: t.y ? Array.from(t.y).map(Number) : []}));
"""

#: Viewport pixel position of data point ``(x, y)`` of a graph (``null`` if not drawn).
POINT_PX_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
const L = gd._fullLayout, r = gd.getBoundingClientRect();
return [r.left + L._size.l + L.xaxis.l2p(arguments[1]),
        r.top + L._size.t + L.yaxis.l2p(arguments[2])];
"""

#: Viewport box of a graph's plotting area: [left, top, width, height].
PLOT_AREA_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
gd.scrollIntoView({block: 'center'});
const L = gd._fullLayout, r = gd.getBoundingClientRect();
return [r.left + L._size.l, r.top + L._size.t, L._size.w, L._size.h];
"""

#: Cells of the first trace whose pixel position lies inside a viewport rectangle.
CELLS_IN_BOX_JS = """
const [id, x0, y0, x1, y1] = arguments;
const gd = document.querySelector('#' + CSS.escape(id) + ' .js-plotly-plot');
const L = gd._fullLayout, r = gd.getBoundingClientRect(), t = gd._fullData[0];
const out = [];
for (let i = 0; i < t.x.length; i++) {
  const px = r.left + L._size.l + L.xaxis.l2p(t.x[i]);
  const py = r.top + L._size.t + L.yaxis.l2p(t.y[i]);
  if (px > x0 && px < x1 && py > y0 && py < y1) out.push(i);
}
return out;
"""


#: What the volcano drew: points per marker colour, and the boxes of its text labels.
VOLCANO_JS = """
const gd = document.querySelector('#' + CSS.escape(arguments[0]) + ' .js-plotly-plot');
if (!gd || !gd._fullData) return null;
const by_color = {};
for (const t of gd._fullData) {
  const c = (t.marker || {}).color;
  if (typeof c === 'string' && t.x) by_color[c] = (by_color[c] || 0) + t.x.length;
}
const boxes = Array.from(gd.querySelectorAll('.annotation-text-g')).map(g => {
  const r = g.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom, g.textContent];
});
return {by_color: by_color, labels: boxes};
"""


# ------------------------------------------------------------------------------ helpers
def new_driver(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER) -> WebDriver:
    """A headless Chromium (console log kept at ALL), a browser of its own: its own
    cookies, hence its own workspace."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(chromedriver))  # selenium 4.2 to 4.x alike
    drv = webdriver.Chrome(options=options, service=service)
    drv.set_page_load_timeout(60)
    return drv


def wait_for(driver: WebDriver, predicate: Any, message: str, timeout: float = WAIT) -> Any:
    """``WebDriverWait`` that tolerates a re-rendered element between polls."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(StaleElementReferenceException,),
    ).until(predicate, message)


def wait_idle(driver: WebDriver, timeout: float = WAIT) -> None:
    """Until Dash has settled (no callback pending for two polls in a row)."""
    quiet = {"n": 0}

    def settled(d: WebDriver) -> bool:
        quiet["n"] = quiet["n"] + 1 if d.execute_script(IDLE_JS) else 0
        return quiet["n"] >= 2

    wait_for(driver, settled, "Dash callbacks did not settle", timeout)


def forget_workspace(driver: WebDriver) -> None:
    """Drop the browser's session cookie: its next page load comes as a new user's browser
    (a new workspace: no selection, the default colouring and names)."""
    driver.delete_cookie(WORKSPACE_COOKIE)


def open_page(driver: WebDriver, base: str, page: str, *, color: str | None = None) -> None:
    """Load a page from scratch and wait until its heading shows and callbacks settle;
    ``color`` opens it coloured by that feature, as a link does (else the workspace keeps
    the colouring and selection it had)."""
    path, heading = PAGES[page]
    driver.get(base + path + (f"?color={quote(color)}" if color else ""))
    wait_for(
        driver,
        lambda d: any(h.text.strip() == heading for h in d.find_elements(By.TAG_NAME, "h1")),
        f"{page}: heading {heading!r} never appeared",
    )
    wait_idle(driver)


def graph(driver: WebDriver, graph_id: str) -> dict[str, Any] | None:
    """What the graph ``graph_id`` drew (see :data:`GRAPH_JS`)."""
    return driver.execute_script(GRAPH_JS, graph_id)


def wait_graph(
    driver: WebDriver, graph_id: str, check: Any, message: str, timeout: float = WAIT
) -> dict[str, Any]:
    """Until ``check(graph info)`` holds; returns the info (fails showing the last one)."""

    def ok(d: WebDriver) -> Any:
        info = graph(d, graph_id)
        try:
            return info if info and check(info) else False
        except KeyError:  # drawn with no trace yet (a page still building its figure)
            return False

    try:
        return wait_for(driver, ok, f"{graph_id}: {message}", timeout)
    except TimeoutException:
        info = graph(driver, graph_id) or {}
        sel = info.get("selectedpoints")
        if sel is not None:
            info["selectedpoints"] = f"{len(sel)} points"
        pytest.fail(f"{graph_id}: {message} (the graph now: {info})", pytrace=False)


def pick_option(driver: WebDriver, dropdown_id: str, search: str, value: str) -> None:
    """Open a Dash dropdown, type ``search`` and click the option with ``value``."""
    driver.find_element(By.ID, dropdown_id).click()
    box = wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, ".dash-dropdown-content input[type=search]"),
        f"{dropdown_id}: the search box did not open",
    )
    box.send_keys(search)
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')  # a CSS string
    selector = f'.dash-dropdown-content [role=option] input[value="{quoted}"]'
    option = wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, selector),
        f"{dropdown_id}: no option {value!r} for {search!r}",
    )
    option.find_element(By.XPATH, "./ancestor::*[@role='option'][1]").click()


def console_problems(driver: WebDriver) -> list[str]:
    """SEVERE browser console entries since the last call (software-WebGL noise aside)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not any(b in e["message"].lower() for b in BENIGN_CONSOLE)
    ]


def assert_clean(driver: WebDriver, dashboard: Any, where: str) -> None:
    """No error alert, no traceback text, no console error, no server-side callback error."""
    alerts = [
        a.text
        for a in driver.find_elements(By.CSS_SELECTOR, f"#{ids.ALERT} .alert, .alert-error")
        if a.is_displayed()
    ]
    assert not alerts, f"{where}: error alert shown: {alerts}"
    source = driver.page_source
    for marker in TRACEBACK_MARKERS:
        assert marker not in source, f"{where}: traceback text in the page ({marker!r})"
    problems = console_problems(driver)
    assert not problems, f"{where}: browser console errors: {problems}"
    assert not dashboard.errors.records, f"{where}: server errors: {dashboard.errors.messages()}"


def drag(driver: WebDriver, points: list[tuple[float, float]]) -> None:
    """Press the mouse at the first viewport point, move through the rest, release."""
    builder = ActionBuilder(driver)
    mouse = builder.pointer_action
    x0, y0 = points[0]
    mouse.move_to_location(int(x0), int(y0))
    mouse.pointer_down()
    for x, y in points[1:]:
        mouse.move_to_location(int(x), int(y))
    mouse.pointer_up()
    builder.perform()
