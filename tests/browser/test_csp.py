"""The Content-Security-Policy in a real headless Chromium: every page renders and draws
its figures under the policy the server sends, with no violation (neither a
``securitypolicyviolation`` event nor a console error); Dash's own request bodies nest far
less deeply than the body guard's limit."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import http_guard, ids
from dashboard import testing_browser as pages

pytestmark = pytest.mark.browser


#: Installed before any page script runs: collects every CSP violation of the document.
RECORD_VIOLATIONS_JS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + (e.sample || '') + ' at '
  + e.sourceFile + ':' + e.lineNumber + ':' + e.columnNumber));
"""


def test_every_page_renders_under_the_csp(
    driver: WebDriver, dashboard: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with urllib.request.urlopen(dashboard.url + "/", timeout=30) as r:
        policy = r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src "))
    assert "'unsafe-inline'" not in script_src and "frame-ancestors 'none'" in policy

    depths: list[int] = []
    real_depth = http_guard.json_depth

    def recording_depth(body: bytes, limit: int = http_guard.MAX_JSON_DEPTH) -> int:
        depths.append(real_depth(body, 10_000))
        return real_depth(body, limit)

    monkeypatch.setattr(http_guard, "json_depth", recording_depth)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS_JS}
    )
    driver.get_log("browser")
    n_cells = dashboard.service.dataset(dashboard.pair).n_cells
    umaps = {"explore": ids.EXPLORE_UMAP, "lookup": ids.LOOKUP_UMAP, "de": ids.DE_UMAP}
    for page in pages.PAGES:
        pages.open_page(driver, dashboard.url, page)
        if page in umaps:
            pages.wait_graph(
                driver, umaps[page], lambda g: g.get("n_points") == n_cells, "cells not drawn"
            )
        pages.wait_idle(driver)
        violations = driver.execute_script("return window.__csp")
        assert violations == [], f"{page}: CSP violations: {violations}"
        console = pages.console_problems(driver)
        assert not [m for m in console if "Content Security Policy" in m], console
        assert not console, f"{page}: browser console errors: {console}"
        pages.assert_clean(driver, dashboard, page)
    assert depths, "no callback body went through the guard"
    print(f"deepest Dash request body: {max(depths)} levels ({len(depths)} bodies)")
    assert max(depths) <= http_guard.MAX_JSON_DEPTH // 2, max(depths)
