"""The whole Dash app over HTTP (Flask's test client) on a real PBMC slice and a small
trained model: pages, Dash's JSON endpoints, a recolour round trip, error handling and gzip."""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from dashboard import ids
from dashboard.app import GZIP_MIN_BYTES

pytestmark = pytest.mark.slow

PAGES = {
    "/": (ids.EXPLORE_UMAP, ids.EXPLORE_COLOR, ids.EXPLORE_COMPARE),
    "/lookup": (ids.LOOKUP_SEARCH, ids.LOOKUP_VIOLIN, ids.LOOKUP_DOTPLOT),
    "/de": (ids.DE_GROUP, ids.DE_VOLCANO, ids.DE_TABLE),
    "/metrics": (ids.METRICS_SUMMARY, ids.METRICS_HISTORY, ids.METRICS_CONTENT),
    "/model": (ids.MODEL_DATASET, ids.MODEL_TRAIN, ids.MODEL_LOAD),
}
TITLES = {
    "/": "Explore",
    "/lookup": "Lookup",
    "/de": "Differential expression",
    "/metrics": "Model metrics",
    "/model": "Model",
}
CELL_TYPE = {"feature": "obs:cell_type", "layer": "raw"}


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """Results shared with test_callbacks (the same settings)."""
    return {"name": "app", "settings": {"de_n_samples": 1000}}


@pytest.fixture(scope="module")
def app(trained_app: SimpleNamespace) -> SimpleNamespace:
    """The app on the trained slice, its test client and Dash's callback list."""
    client = trained_app.app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    return SimpleNamespace(
        app=trained_app.app,
        client=client,
        deps=deps,
        service=trained_app.service,
        pair=trained_app.pair,
    )


# ----------------------------------------------------------------------------- helpers
def dependency(env: SimpleNamespace, output: str, first_input: str) -> dict:
    """The registered callback writing ``output`` (``id.prop``) from ``first_input``."""
    found = [
        d
        for d in env.deps
        if output in d["output"]
        and d["inputs"]
        and f"{d['inputs'][0]['id']}.{d['inputs'][0]['property']}" == first_input
    ]
    assert len(found) == 1, [d["output"] for d in found]
    return found[0]


def outputs(dep: dict) -> Any:
    """The ``outputs`` field of a request, as the renderer builds it from ``output``."""

    def one(spec: str) -> dict:
        cid, prop = spec.split(".", 1)
        return {"id": cid, "property": prop}

    out = dep["output"]
    if out.startswith(".."):
        return [one(s) for s in out.strip(".").split("...")]
    return one(out)


def call(
    env: SimpleNamespace,
    dep: dict,
    inputs: list[Any],
    state: list[Any] = (),
    *,
    headers: dict | None = None,
    changed: str | None = None,
) -> Any:
    """POST one callback request (fired by ``changed``, default its first input); returns
    Flask's response."""
    first = f"{dep['inputs'][0]['id']}.{dep['inputs'][0]['property']}"
    body = {
        "output": dep["output"],
        "outputs": outputs(dep),
        "inputs": [{**spec, "value": v} for spec, v in zip(dep["inputs"], inputs, strict=True)],
        "state": [{**spec, "value": v} for spec, v in zip(dep["state"], state, strict=True)],
        "changedPropIds": [changed or first],
    }
    return env.client.post("/_dash-update-component", json=body, headers=headers or {})


def route(
    env: SimpleNamespace, path: str, search: str = "", *, changed: str | None = None
) -> dict:
    """The page layout the router sends for ``path`` (what the browser renders; ``changed``:
    what fired it, default a navigation)."""
    dep = dependency(env, "_pages_content.children", "_pages_location.pathname")
    token = {"version": 1, "pair": env.pair.id, "dataset": env.pair.dataset.id}
    response = call(env, dep, [path, search, token], [CELL_TYPE], changed=changed)
    assert response.status_code == 200
    return response.get_json()["response"]["_pages_content"]["children"]


def all_props(tree: Any) -> Iterator[dict]:
    """The ``props`` of every component in a JSON layout tree."""
    return (node["props"] for node in _nodes(tree) if isinstance(node.get("props"), dict))


def ids_in(tree: Any) -> set[Any]:
    return {p["id"] for p in all_props(tree) if isinstance(p.get("id"), str)}


def assert_no_traceback(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text
    assert 'File "' not in text
    assert "site-packages" not in text


# ------------------------------------------------------------------------------- pages
@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_is_served_with_its_layout(app, path: str) -> None:
    response = app.client.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<title>" in html and "TotalVI Explorer" in html
    assert 'id="react-entry-point"' in html
    layout = route(app, path)
    found = ids_in(layout)
    assert set(PAGES[path]) <= found, set(PAGES[path]) - found
    assert TITLES[path] in json.dumps(layout)


def test_unknown_path_gets_the_not_found_page(app) -> None:
    assert app.client.get("/no-such-page").status_code == 200  # the router answers
    layout = json.dumps(route(app, "/no-such-page"))
    assert "not found" in layout.lower() or "404" in layout


def test_shared_link_with_a_foreign_selection_is_explained(app) -> None:
    layout = route(app, "/", "?color=gene%3ALYZ&sel=eNpzAgAAQwBD&n=8")
    stores = [node for node in _nodes(layout) if node.get("props", {}).get("id") == ids.PAGE_STATE]
    assert len(stores) == 1
    data = stores[0]["props"]["data"]
    assert "cells" not in data
    assert data["error"] == "the shared selection is for 8 cells; this dataset has 1500"


def test_a_links_pair_switches_on_navigation_only(app) -> None:
    """The router reads the URL the page opened with; rendered again because the
    workspace's model changed, its ``pair=`` must not switch the workspace back. And the
    URL the page writes follows the model, so a reload opens the current one."""
    gone = "0123456789ab-0123456789ab"  # a pair id of the right form no workspace has

    def notice(**how: Any) -> str:
        layout = route(app, "/", f"?pair={gone}", **how)
        store = next(n for n in _nodes(layout) if n.get("props", {}).get("id") == ids.PAGE_STATE)
        return str(store["props"]["data"].get("notice", ""))

    assert "not known to this server" in notice()  # opened from the link: it is honoured
    assert notice(changed=f"{ids.MODEL_VERSION_STORE}.data") == ""  # a re-render: ignored
    dep = dependency(app, f"{ids.URL_QUERY_STORE}.data", f"{ids.COLOR_STORE}.data")
    assert f"{ids.MODEL_VERSION_STORE}.data" in [
        f"{i['id']}.{i['property']}" for i in dep["inputs"]
    ]
    token = {"version": 2, "pair": app.pair.id, "dataset": app.pair.dataset.id}
    response = call(app, dep, [None, None, token, None], changed=f"{ids.MODEL_VERSION_STORE}.data")
    assert f"pair={app.pair.id}" in response.get_json()["response"][ids.URL_QUERY_STORE]["data"]


def _nodes(tree: Any) -> Iterator[dict]:
    if isinstance(tree, dict):
        yield tree
        for v in tree.values():
            yield from _nodes(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _nodes(v)


def test_dash_layout_and_dependencies_are_json(app) -> None:
    layout = app.client.get("/_dash-layout")
    assert layout.status_code == 200
    assert layout.mimetype == "application/json"
    shell_ids = ids_in(layout.get_json())
    assert {ids.COLOR_STORE, ids.SELECTION_STORE, ids.STATUS, ids.ALERT} <= shell_ids
    # the status bar names the active model right away
    assert "small on PBMC slice" in layout.get_data(as_text=True)
    deps = app.client.get("/_dash-dependencies")
    assert deps.status_code == 200
    assert deps.mimetype == "application/json"
    outputs_all = " ".join(d["output"] for d in deps.get_json())
    for target in (ids.EXPLORE_UMAP, ids.LOOKUP_VIOLIN, ids.DE_VOLCANO, ids.METRICS_CONTENT):
        assert target in outputs_all


# -------------------------------------------------------------------------- callbacks
def test_recolour_over_http_is_a_small_patch(app) -> None:
    build = dependency(app, "explore-umap.figure", "explore-umap.id")
    full = call(app, build, [ids.EXPLORE_UMAP, None], ["gene:LYZ", "raw", None, None, None])
    assert full.status_code == 200
    trace = full.get_json()["response"][ids.EXPLORE_UMAP]["figure"]["data"][0]
    assert trace["type"] == "scattergl"
    assert len(base64.b64decode(trace["x"]["bdata"])) == 4 * 1500  # float32 per cell
    assert "text" not in trace and trace["hoverinfo"] == "none"  # no string per point
    assert len(base64.b64decode(trace["customdata"]["bdata"])) == 2 * 1500  # uint16 cells

    recolor = dependency(app, "app-color-store.data", "explore-color.value")
    response = call(app, recolor, ["gene:LYZ", "raw", None], [CELL_TYPE, "proteins", None, None])
    assert response.status_code == 200
    payload = response.get_json()["response"]
    patch = payload[ids.EXPLORE_UMAP]["figure"]
    assert patch["__dash_patch_update"] == "__dash_patch_update"
    locations = {tuple(op["location"]) for op in patch["operations"]}
    assert ("data", 0, "marker") in locations
    assert not any("x" in loc or "y" in loc or "text" in loc for loc in locations)
    assert payload[ids.COLOR_STORE]["data"] == {"feature": "gene:LYZ", "layer": "raw"}
    # the recolour sends both views' colours (typed arrays), still less than one figure's
    # coordinates, colours and cell positions
    assert len(response.get_data()) < 0.6 * len(full.get_data())


def test_a_failing_callback_shows_one_line_and_no_traceback(app) -> None:
    recolor = dependency(app, "app-color-store.data", "explore-color.value")
    response = call(
        app, recolor, ["gene:NOT_A_GENE", "raw", None], [CELL_TYPE, "proteins", None, None]
    )
    body = response.get_data()
    assert_no_traceback(body)
    alert = response.get_json()["sideUpdate"][ids.ALERT]["children"]
    text = json.dumps(alert)
    assert "no gene 'NOT_A_GENE'" in text
    assert "alert" in alert["props"]["className"]


def test_a_forged_selection_is_refused_in_one_line(app) -> None:
    highlight = dependency(app, "explore-linked.figure", "app-selection-store.data")
    response = call(app, highlight, [{"cells": ["not-a-number"], "source": "x"}])
    assert_no_traceback(response.get_data())
    message = json.dumps(response.get_json()["sideUpdate"][ids.ALERT]["children"])
    assert "the selection holds 'not-a-number', which is not a cell position" in message


def test_an_unexpected_error_is_logged_not_sent(app, caplog, monkeypatch) -> None:
    def broken(values):
        raise ValueError("a bug")

    monkeypatch.setattr("dashboard.views.cells.cell_positions", broken)
    highlight = dependency(app, "explore-linked.figure", "app-selection-store.data")
    with caplog.at_level("ERROR", logger="dashboard.app"):
        response = call(app, highlight, [{"cells": [1, 2], "source": "x"}])
    body = response.get_data()
    assert_no_traceback(body)
    message = json.dumps(response.get_json()["sideUpdate"][ids.ALERT]["children"])
    assert "Something went wrong (ValueError" in message
    assert "server log" in message
    # ... where the traceback is
    assert any(r.exc_info for r in caplog.records if r.name == "dashboard.app")


def test_lookup_search_over_http(app) -> None:
    search = dependency(app, "lookup-search.options", "lookup-search.search_value")
    response = call(app, search, ["ms4a"], [None])
    assert response.status_code == 200
    options = response.get_json()["response"][ids.LOOKUP_SEARCH]["options"]
    assert options[0] == {"label": "MS4A1", "value": "gene:MS4A1"}


# ------------------------------------------------------------------------------- gzip
def test_gzip_when_the_client_accepts_it(app) -> None:
    plain = app.client.get("/_dash-dependencies")
    assert "Content-Encoding" not in plain.headers
    assert len(plain.get_data()) > GZIP_MIN_BYTES
    zipped = app.client.get("/_dash-dependencies", headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    raw = zipped.get_data()
    assert int(zipped.headers["Content-Length"]) == len(raw)
    assert len(raw) < len(plain.get_data()) / 2
    assert json.loads(gzip.decompress(raw)) == plain.get_json()


def test_gzip_applies_to_callback_responses(app) -> None:
    build = dependency(app, "explore-umap.figure", "explore-umap.id")
    args = ([ids.EXPLORE_UMAP, None], ["obs:cell_type", "raw", None, None, None])
    plain = call(app, build, *args)
    zipped = call(app, build, *args, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.get_data())) == plain.get_json()
    # a figure is mostly base64 typed arrays now (no string per point): they shrink less
    assert len(zipped.get_data()) < 0.75 * len(plain.get_data())


def test_small_responses_are_not_compressed(app) -> None:
    controls = dependency(app, "explore-linked-y.disabled", "explore-linked-kind.value")
    response = call(app, controls, ["proteins"], headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert len(response.get_data()) < GZIP_MIN_BYTES
    assert "Content-Encoding" not in response.headers
    assert response.get_json()["response"][ids.EXPLORE_LINKED_Y]["disabled"] is False


def _store_data(layout: Any, store_id: str) -> Any:
    """The ``data`` of the store ``store_id`` in a layout tree."""
    found = [p.get("data") for p in all_props(layout) if p.get("id") == store_id]
    assert len(found) == 1, store_id
    return found[0]


def test_each_browser_session_has_its_own_workspace(app) -> None:
    """Without auth each browser gets its own workspace (an HttpOnly session cookie): a
    selection, saved selections and colour one of them makes are kept on the server and
    come back on its next page load, and never show in the other's."""
    alice = app.app.server.test_client()
    bob = app.app.server.test_client()
    first = alice.get("/_dash-layout")
    cookie = first.headers.get("Set-Cookie", "")
    assert "tve_workspace=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    bob.get("/_dash-layout")
    a_token = alice.get_cookie("tve_workspace").value
    assert a_token != bob.get_cookie("tve_workspace").value
    assert alice.get("/_dash-layout").headers.get("Set-Cookie") is None  # kept, not minted

    selection = {"cells": [1, 2, 3], "dataset": app.pair.dataset.id, "source": "lasso"}
    saved = {app.pair.dataset.id: {"three cells": [1, 2, 3]}}
    env = SimpleNamespace(client=alice)
    gene = {"feature": "gene:CD3E", "layer": "raw"}
    for store, value in (
        (ids.SELECTION_STORE, selection),
        (ids.SAVED_SELECTIONS_STORE, saved),
        (ids.COLOR_STORE, gene),
    ):  # each store is saved by its own callback, only it sent
        saver = dependency(app, "app-workspace-sink.children", f"{store}.data")
        assert [f"{i['id']}.{i['property']}" for i in saver["inputs"]] == [f"{store}.data"]
        assert call(env, saver, [value]).status_code in (200, 204)

    a_layout = alice.get("/_dash-layout").get_json()
    assert _store_data(a_layout, ids.SELECTION_STORE) == selection
    assert _store_data(a_layout, ids.SAVED_SELECTIONS_STORE) == saved
    assert _store_data(a_layout, ids.COLOR_STORE) == gene
    b_layout = bob.get("/_dash-layout").get_json()
    assert _store_data(b_layout, ids.SELECTION_STORE) is None
    assert _store_data(b_layout, ids.SAVED_SELECTIONS_STORE) == {}
    assert _store_data(b_layout, ids.COLOR_STORE)["feature"] != "gene:CD3E"

    # a forged cookie is not a name: the browser gets a fresh workspace, not a file path
    forged = app.app.server.test_client()
    forged.set_cookie("tve_workspace", "../../etc/passwd")
    response = forged.get("/_dash-layout")
    assert "tve_workspace=" in response.headers.get("Set-Cookie", "")
    assert _store_data(response.get_json(), ids.SELECTION_STORE) is None
    records = list(app.service.settings.workspaces_dir.glob("*.json"))
    assert records and all(p.name.startswith("s-") for p in records)


def test_the_page_scripts_go_gzipped_and_are_compressed_once(app) -> None:
    from dashboard import app as app_module

    page = app.client.get("/").get_data(as_text=True)
    scripts = re.findall(r'src="(/_dash-component-suites/[^"]+\.js[^"]*)"', page)
    grid = next(s for s in scripts if "dash_ag_grid" in s)  # plotly.js loads as a chunk
    plain = app.client.get(grid)
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert len(plain.get_data()) > 1_000_000  # dash_ag_grid.min.js, 1.3 MB
    zipped = app.client.get(grid, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.get_data()) == plain.get_data()
    assert len(zipped.get_data()) < len(plain.get_data()) / 3
    cached = {k: v for k, v in app_module._gzip_cache.items() if k[0] in grid}
    assert len(cached) == 1
    again = app.client.get(grid, headers={"Accept-Encoding": "gzip"})
    assert again.get_data() == zipped.get_data()
    # forged fingerprints serve the same file under new keys: the kept bytes stay bounded
    for n in range(30):
        forged = re.sub(r"m\d+\.min\.js", f"m{n}.min.js", grid)
        assert app.client.get(forged, headers={"Accept-Encoding": "gzip"}).status_code == 200
    assert len(app_module._gzip_cache) <= app_module.GZIP_CACHE_ITEMS
    assert sum(map(len, app_module._gzip_cache.values())) <= app_module.GZIP_CACHE_BYTES


def test_the_scripts_are_compressed_before_the_first_visitor(app) -> None:
    """``precompress_scripts`` (the server runs it at start) fills the gzip cache with
    every script the page loads, plotly.js included; a browser then gets those bytes."""
    from dashboard import app as app_module

    app_module._gzip_cache.clear()
    paths = app_module.page_script_paths(app.app)
    page = app.client.get("/").get_data(as_text=True)
    in_page = re.findall(r'<script src="(/_dash-component-suites/[^"]+)"', page)
    assert paths[:-1] == in_page and paths[-1].endswith("plotly/package_data/plotly.min.js")
    app_module.precompress_scripts(app.app)
    assert {k[0] for k in app_module._gzip_cache} == set(paths)
    plotly = next(v for k, v in app_module._gzip_cache.items() if k[0] == paths[-1])
    assert len(plotly) > 1_000_000  # 4.8 MB, about 1.5 MB gzipped
    served = app.client.get(paths[-1], headers={"Accept-Encoding": "gzip"})
    assert served.headers["Content-Encoding"] == "gzip" and served.get_data() == plotly
    assert gzip.decompress(plotly) == app.client.get(paths[-1]).get_data()
    assert len(app_module._gzip_cache) == len(paths)  # served from the cache, no new entry
