"""What the first Explore view costs a real browser: bytes transferred and time to the cell
scatter's first paint, measured in headless Chromium with the Performance API.

The app runs in this process as the browser tests run it (``create_app`` over a prepared
service, served by werkzeug on a free local port, the app's own gzip): ``--cells 6855``
(the default) is the embedded PBMC data and model (``data/pbmc10k.h5ad``, prepared once
into ``--cache-dir`` and reused); any other size is the simulated blood CITE-seq data of
``bench/first_look.py`` (``model.simulate``) at that many cells with a TotalVI trained
``--epochs`` epochs on a 10,000-cell subset, prepared through the app's real path (the
switch job's essential steps) on an empty cache. Then one fresh headless Chromium
(``/usr/bin/chromium --headless --no-sandbox --disable-gpu``) opens Explore and the script
waits until the main cell view has drawn its WebGL points and Dash is idle.

Reported (all times from the navigation's start, ``performance.timeOrigin``):

* ``scatter_first_paint_ms``: the first animation frame after the main view's figure holds
  its ``scattergl`` cell trace with every point (polled each frame from a script that
  runs before the page's own);
* ``transferred_bytes``: the navigation's and every resource's ``transferSize`` (headers
  plus the encoded, gzipped body), with ``encoded_body_bytes`` and ``decoded_body_bytes``;
  split into the page and scripts, and the Dash callbacks (``_dash-update-component``);
* the first Explore figure response (the callback whose output is the main view's
  figure): its bytes on the wire, encoded and decoded, and when it ended; and the cell
  trace as the page holds it: each per-point array's kind and length (``x``, ``y``,
  ``marker.color``, ``customdata``: typed arrays) and any per-point strings (``text``,
  ``hovertext``: none expected);
* every callback response's output and sizes (``callbacks`` in the JSON);
* where the renderer's main thread went before the paint: when plotly.js had been
  evaluated (``plotly_ready_ms``), its tasks of 50 ms or more (``long_tasks``, the
  Long Tasks API) and when each script arrived; with ``--js-profile`` the JavaScript
  functions with the most self time (the DevTools profiler, which slows the page a little;
  the whole profile goes to ``FILE``, which DevTools opens).

Usage::

    python bench/browser.py                      # embedded data (6855 cells), quick
    python bench/browser.py --cells 72042 --json bench/out/browser_72k.json
    python bench/browser.py --cells 1000000 --json bench/out/browser_1m.json --timeout 600

The large sizes simulate, train and prepare first (minutes at a million cells, several GB
of memory); run them on an otherwise idle machine. The issue's budget at a million cells:
the first Explore view transfers at most 5 MB and paints within 3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _bench  # noqa: F401  (puts the repository first on sys.path)
from _bench import BENCH, DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_OUT, ROOT, write_results

EMBEDDED_CELLS = 6855
DEFAULT_CACHE = ROOT / "bench" / "out" / "browser-cache"
UPDATE_URL = "_dash-update-component"
GRAPH = "explore-umap"  # dashboard.ids.EXPLORE_UMAP

#: Runs before the page's own scripts: records each Dash callback's request output, its
#: start, end and decoded size (``window.__tveBench.calls``) and the first animation frame
#: in which the main view's figure holds a scattergl trace with all its points
#: (``window.__tveBench.paint``).
PROBE_JS = """
(function () {
  const bench = {calls: [], paint: null, points: 0, long: []};
  window.__tveBench = bench;
  try {  // the renderer's main thread busy for 50 ms or more (start, duration)
    new PerformanceObserver(function (list) {
      for (const e of list.getEntries()) { bench.long.push([e.startTime, e.duration]); }
    }).observe({type: 'longtask', buffered: true});
  } catch (e) {}
  let plotly;  // when plotly.js finished evaluating (its bundle assigns window.Plotly)
  Object.defineProperty(window, 'Plotly', {
    configurable: true,
    get: function () { return plotly; },
    set: function (v) {
      plotly = v;
      if (bench.plotly === undefined) { bench.plotly = performance.now(); }
    },
  });
  const fetch0 = window.fetch.bind(window);
  window.fetch = function (input, init) {
    const url = typeof input === 'string' ? input : (input && input.url) || '';
    if (url.indexOf('__UPDATE__') < 0) { return fetch0(input, init); }
    const call = {start: performance.now(), output: null, end: null, decoded: null};
    try { call.output = JSON.parse((init && init.body) || '{}').output || null; } catch (e) {}
    bench.calls.push(call);
    return fetch0(input, init).then(function (resp) {
      resp.clone().arrayBuffer().then(function (buf) {
        call.decoded = buf.byteLength;
        call.end = performance.now();
      });
      return resp;
    });
  };
  function poll() {
    const gd = document.querySelector('#__GRAPH__ .js-plotly-plot');
    const t = gd && gd._fullData && gd._fullData[0];
    const n = t && t.type === 'scattergl' && t.x ? t.x.length : 0;
    const canvas = gd && gd.querySelector('canvas.gl-canvas-context');
    if (n > 0 && canvas) {
      // the frame after the one in which the points are there: they have been drawn
      requestAnimationFrame(function () { bench.paint = performance.now(); bench.points = n; });
      return;
    }
    requestAnimationFrame(poll);
  }
  requestAnimationFrame(poll);
})();
""".replace("__UPDATE__", UPDATE_URL).replace("__GRAPH__", GRAPH)

#: The navigation and resource timing entries, and the probe's records.
READ_JS = """
const pick = function (e) {
  return {name: e.name, start: e.startTime, end: e.responseEnd, type: e.initiatorType,
          transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize};
};
return {
  navigation: performance.getEntriesByType('navigation').map(pick),
  resources: performance.getEntriesByType('resource').map(pick),
  bench: window.__tveBench || null,
  dom_content_loaded:
    (performance.getEntriesByType('navigation')[0] || {}).domContentLoadedEventEnd,
};
"""

#: The main view's cell trace as the page holds it: how each per-point array came
#: (``gd.data``: a typed-array spec ``{dtype, bdata}``, a list, or none) and what plotly
#: decoded it to (``gd._fullData``: its kind and length), and its hover setting.
FIGURE_JS = """
const gd = document.querySelector('#__GRAPH__ .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length || !gd._fullData) { return null; }
const raw = gd.data[0], full = gd._fullData[0];
const get = function (t, path) {
  return path.split('.').reduce(function (o, k) { return o ? o[k] : undefined; }, t);
};
const one = function (path) {
  const v = get(raw, path), f = get(full, path);
  if (v === undefined || v === null) { return null; }
  const spec = typeof v === 'object' && v.dtype !== undefined && v.bdata !== undefined;
  return {sent: spec ? 'typed array ' + v.dtype : (Array.isArray(v) ? 'list' : typeof v),
          length: f && f.length !== undefined ? f.length : null,
          decoded: f && f.constructor ? f.constructor.name : typeof f};
};
const arrays = {};
for (const k of ['x', 'y', 'marker.color', 'customdata', 'text', 'hovertext']) {
  arrays[k] = one(k);
}
return {type: full.type, hoverinfo: raw.hoverinfo || null, arrays: arrays};
""".replace("__GRAPH__", GRAPH)


class BenchError(RuntimeError):
    """A problem the benchmark cannot work around (one readable line)."""


# ============================================================================ the app
def embedded_pair(service: Any) -> Any:
    """The embedded PBMC data and model."""
    dataset = service.open_dataset(DEFAULT_DATA, batch_key="batch")
    return service.load_model(dataset, DEFAULT_MODEL)


def _first_look() -> Any:
    """``bench/first_look.py`` as a module (``bench/`` is off ``sys.path``, see _bench)."""
    spec = importlib.util.spec_from_file_location("first_look", BENCH / "first_look.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_app(args: argparse.Namespace, cache_dir: Path) -> tuple[Any, Any, Any, Any, dict]:
    """A prepared service, its workspace state, the werkzeug server and its thread; how
    long preparing took. As on the real server, the warm steps (denoised protein first)
    start in the background the moment the pair is active (``--no-warm``: they do not)."""
    import logging

    from werkzeug.serving import make_server

    from dashboard.app import create_app, precompress_scripts
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from dashboard.views.state import ActiveState

    info: dict[str, Any] = {}
    service = AnalysisService(Settings(cache_dir=cache_dir, model_dir=cache_dir / "models"))
    t0 = time.perf_counter()
    if args.cells == EMBEDDED_CELLS:
        pair = embedded_pair(service)
        info["data"] = f"embedded {DEFAULT_DATA.name} and model {DEFAULT_MODEL.name}"
    else:
        pair = _first_look().simulated_pair(service, args.cells, args.epochs)
        info["data"] = f"simulated {args.cells} cells (model.simulate), {args.epochs} epochs"
    info["seconds_data_and_model"] = time.perf_counter() - t0
    state = ActiveState(service, warm=not args.no_warm)
    info["warm_steps"] = "off (--no-warm)" if args.no_warm else "running, as on the server"
    t0 = time.perf_counter()
    job = state.prepare(pair)
    rec = service.wait(job, timeout=args.timeout)
    if str(rec.status) != "done":
        service.close()
        msg = f"preparing the pair failed: {rec.error or rec.message}"
        raise BenchError(msg)
    info["seconds_prepare"] = time.perf_counter() - t0
    info["n_cells"] = int(service.dataset(pair).n_cells)
    info["max_points"] = int(service.settings.max_points)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = create_app(service, state=state)
    info["seconds_precompress_scripts"] = precompress_scripts(app)  # as serve() does
    time_callbacks(app.server, info.setdefault("server_callbacks", []))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return service, state, server, thread, info


def time_callbacks(server: Any, log: list[dict[str, Any]]) -> None:
    """Record each Dash callback request the server handles: its output, when it arrived
    (``time.perf_counter``) and its seconds up to the gzipped response (``after_request``),
    so the report tells the server's time from the browser's."""
    import flask

    @server.before_request
    def _arrived() -> None:
        flask.g.bench_t0 = time.perf_counter()

    @server.after_request
    def _answered(response: Any) -> Any:
        if UPDATE_URL in flask.request.path and hasattr(flask.g, "bench_t0"):
            body = flask.request.get_json(silent=True) or {}
            log.append(
                {
                    "output": str(body.get("output") or ""),
                    "arrived": flask.g.bench_t0,
                    "seconds": time.perf_counter() - flask.g.bench_t0,
                }
            )
        return response


def stop_warm_up(service: Any, state: Any) -> None:
    """Cancel the warm job (if still running) and wait for it: a torch thread still
    working when the interpreter exits aborts it."""
    job = state.warm_job
    if job is not None:
        service.jobs.cancel(job)
        service.wait(job, timeout=600)


# ======================================================================== the browser
def new_driver(chromium: Path) -> Any:
    """A fresh headless Chromium (empty profile and cache): the tests' driver
    (:func:`dashboard.testing_browser.new_driver`), with a longer page-load timeout for
    large datasets."""
    from dashboard.testing_browser import new_driver as test_driver

    drv = test_driver(chromium)
    drv.set_page_load_timeout(120)
    return drv


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


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Open Explore at ``url`` in a fresh Chromium; the timings and sizes it recorded."""
    drv = new_driver(args.chromium)
    try:
        drv.execute_cdp_cmd("Network.enable", {})
        drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE_JS})
        if args.js_profile:
            drv.execute_cdp_cmd("Profiler.enable", {})
            drv.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 500})  # µs
            drv.execute_cdp_cmd("Profiler.start", {})
        t0 = time.perf_counter()
        out_t0 = t0
        drv.get(url + "/")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if drv.execute_script("return window.__tveBench && window.__tveBench.paint"):
                break
            time.sleep(0.05)
        else:
            msg = f"the cell scatter did not paint within {args.timeout:.0f} s"
            raise BenchError(msg)
        wall_paint = time.perf_counter() - t0
        profile = drv.execute_cdp_cmd("Profiler.stop", {})["profile"] if args.js_profile else None
        idle_for = 0.0
        while time.monotonic() < deadline and idle_for < 1.0:  # Dash idle for a second
            time.sleep(0.1)
            idle_for = idle_for + 0.1 if drv.execute_script(IDLE_JS) else 0.0
        time.sleep(0.3)  # the last responses' bodies read
        raw = drv.execute_script(READ_JS)
        figure = drv.execute_script(FIGURE_JS)
    finally:
        drv.quit()
    out = summarise(raw)
    out["wall_seconds_to_paint"] = wall_paint
    out["navigation_perf_counter"] = out_t0
    out["figure_in_browser"] = figure
    if profile is not None:
        out["js_profile_top"] = js_self_time(profile)
        args.js_profile.write_text(json.dumps(profile))
    return out


def file_name(url: str) -> str:
    """The last part of a URL's path (a script's file name), without its query."""
    return url.split("?")[0].rsplit("/", 1)[-1]


def js_self_time(profile: dict[str, Any], top: int = 25) -> list[dict[str, Any]]:
    """The renderer's JavaScript up to the paint by self time (CDP ``Profiler`` samples):
    the ``top`` functions, each with its script's file name and milliseconds."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    deltas = profile.get("timeDeltas") or []
    per_node: dict[int, float] = {}
    for node_id, delta in zip(profile.get("samples") or [], [*deltas[1:], 0], strict=False):
        per_node[node_id] = per_node.get(node_id, 0.0) + delta / 1000.0
    per_function: dict[tuple[str, str], float] = {}
    for node_id, spent in per_node.items():
        frame = nodes[node_id]["callFrame"]
        script = file_name(frame.get("url", ""))
        key = (frame.get("functionName") or "(anonymous)", script)
        per_function[key] = per_function.get(key, 0.0) + spent
    rows = sorted(per_function.items(), key=lambda kv: -kv[1])[:top]
    return [{"function": f, "script": s, "self_ms": round(t, 1)} for (f, s), t in rows]


def _match(call: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The resource entry of a recorded callback: the update request started nearest it."""
    best, gap = None, 50.0  # ms
    for r in resources:
        if UPDATE_URL in r["name"] and abs(r["start"] - call["start"]) < gap:
            best, gap = r, abs(r["start"] - call["start"])
    return best


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Totals of the timing entries and the callbacks, the first figure response."""
    entries = raw["navigation"] + raw["resources"]
    bench = raw["bench"] or {}
    paint = bench.get("paint")

    def total(rows: list[dict[str, Any]], key: str) -> int:
        return int(sum(r.get(key) or 0 for r in rows))

    dash_rows = [r for r in raw["resources"] if UPDATE_URL in r["name"]]
    page_rows = [r for r in entries if UPDATE_URL not in r["name"]]
    before_paint = [r for r in entries if paint is None or (r["end"] or 0) <= paint]
    calls = []
    first = None
    for call in bench.get("calls", []):
        entry = _match(call, raw["resources"])
        row = {
            "output": call.get("output"),
            "start_ms": call.get("start"),
            "end_ms": call.get("end"),
            "decoded_bytes": call.get("decoded"),
            "transfer_bytes": entry["transfer"] if entry else None,
            "encoded_bytes": entry["encoded"] if entry else None,
        }
        calls.append(row)
        output = str(call.get("output") or "")
        if first is None and output.startswith(f"{GRAPH}.figure"):
            first = row
    return {
        "scatter_first_paint_ms": paint,
        "scatter_points": bench.get("points"),
        "dom_content_loaded_ms": raw.get("dom_content_loaded"),
        "transferred_bytes": total(entries, "transfer"),
        "encoded_body_bytes": total(entries, "encoded"),
        "decoded_body_bytes": total(entries, "decoded"),
        "transferred_bytes_before_paint": total(before_paint, "transfer"),
        "page_and_scripts": {
            "requests": len(page_rows),
            "transfer_bytes": total(page_rows, "transfer"),
            "decoded_bytes": total(page_rows, "decoded"),
        },
        "dash_callbacks": {
            "requests": len(dash_rows),
            "transfer_bytes": total(dash_rows, "transfer"),
            "encoded_bytes": total(dash_rows, "encoded"),
            "decoded_bytes": total(dash_rows, "decoded"),
        },
        "largest": [
            {
                "name": r["name"].split("?")[0],
                "transfer_bytes": r["transfer"],
                "decoded_bytes": r["decoded"],
            }
            for r in sorted(entries, key=lambda r: -(r.get("transfer") or 0))[:5]
        ],
        "first_figure_response": first,
        "callbacks": calls,
        "plotly_ready_ms": bench.get("plotly"),
        "long_tasks": [
            {"start_ms": start, "duration_ms": duration}
            for start, duration in bench.get("long", [])
            if paint is None or start <= paint
        ],
        "scripts": [
            {
                "name": file_name(r["name"]),
                "start_ms": r["start"],
                "end_ms": r["end"],
            }
            for r in raw["resources"]
            if r["type"] == "script" and (paint is None or (r["end"] or 0) <= paint)
        ],
    }


def server_timeline(log: list[dict[str, Any]], browser: dict[str, Any]) -> dict[str, Any]:
    """The server's callback times from the navigation's start (the driver's ``get``, a few
    ms before the browser's ``timeOrigin``), and when the first figure was answered."""
    t0 = browser.pop("navigation_perf_counter")
    calls = [
        {
            "output": c["output"],
            "arrived_ms": 1000 * (c["arrived"] - t0),
            "server_ms": 1000 * c["seconds"],
        }
        for c in log
    ]
    first = next((c for c in calls if c["output"].startswith(f"{GRAPH}.figure")), None)
    return {"callbacks": calls, "first_figure": first}


# ============================================================================= report
def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f} MB"


def ms(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f} ms"


def print_report(res: dict[str, Any]) -> None:
    m = res["browser"]
    app = res["app"]
    first = m.get("first_figure_response") or {}
    rows = [
        ("cells (plotted)", f"{app['n_cells']:,} ({m.get('scatter_points') or 0:,})"),
        ("data", app["data"]),
        ("warm steps", app.get("warm_steps", "-")),
        ("scatter first paint", ms(m["scatter_first_paint_ms"])),
        ("DOMContentLoaded", ms(m["dom_content_loaded_ms"])),
        ("transferred, all", mb(m["transferred_bytes"])),
        ("transferred before the paint", mb(m["transferred_bytes_before_paint"])),
        (
            "  page and scripts",
            f"{mb(m['page_and_scripts']['transfer_bytes'])} "
            f"({m['page_and_scripts']['requests']} requests)",
        ),
        (
            "  Dash callbacks",
            f"{mb(m['dash_callbacks']['transfer_bytes'])} on the wire, "
            f"{mb(m['dash_callbacks']['decoded_bytes'])} decoded "
            f"({m['dash_callbacks']['requests']} requests)",
        ),
        (
            "first Explore figure",
            f"{mb(first.get('transfer_bytes'))} on the wire, "
            f"{mb(first.get('decoded_bytes'))} decoded, ends {ms(first.get('end_ms'))}",
        ),
    ]
    server_first = (res.get("server") or {}).get("first_figure") or {}
    if server_first:
        answered = server_first["arrived_ms"] + server_first["server_ms"]
        rows.append(
            (
                "  first figure on the server",
                f"arrived {ms(server_first['arrived_ms'])}, answered {ms(answered)} "
                f"({ms(server_first['server_ms'])} in the callback and gzip)",
            )
        )
    paint = m["scatter_first_paint_ms"]
    for call in m.get("callbacks", []):  # what the server did before the paint
        if paint is not None and (call.get("start_ms") or 0) > paint:
            continue
        output = str(call.get("output") or "")
        output = output if len(output) <= 38 else output[:35] + "..."
        rows.append(
            (
                f"  callback {output}",
                f"{ms(call.get('start_ms'))} to {ms(call.get('end_ms'))}, "
                f"{mb(call.get('transfer_bytes'))} on the wire",
            )
        )
    long_tasks = m.get("long_tasks") or []
    if long_tasks:
        busy = sum(t["duration_ms"] for t in long_tasks)
        spans = ", ".join(
            f"{t['start_ms']:,.0f}+{t['duration_ms']:,.0f}"
            for t in sorted(long_tasks, key=lambda t: -t["duration_ms"])[:6]
        )
        rows.append(("plotly.js evaluated", ms(m.get("plotly_ready_ms"))))
        rows.append(("main thread busy before the paint", f"{ms(busy)} in tasks >= 50 ms"))
        rows.append(("  longest (start+ms)", spans))
    scripts = m.get("scripts") or []
    if scripts:
        last = max(scripts, key=lambda r: r["end_ms"] or 0)
        rows.append(("  last script arrived", f"{last['name'][:40]} at {ms(last['end_ms'])}"))
    for r in m.get("largest", [])[:3]:
        name = r["name"].rsplit("/", 1)[-1] or r["name"]
        rows.append(
            (f"  {name[:40]}", f"{mb(r['transfer_bytes'])} ({mb(r['decoded_bytes'])} decoded)")
        )
    fig = m.get("figure_in_browser") or {}
    arrays = fig.get("arrays") or {}
    strings = {k: (arrays.get(k) or {}).get("length") for k in ("text", "hovertext")}
    rows.append(
        (
            "per-point strings",
            f"text {strings['text']}, hovertext {strings['hovertext']} "
            f"(hoverinfo {fig.get('hoverinfo')})",
        )
    )
    for name in ("x", "y", "marker.color", "customdata"):
        spec = arrays.get(name)
        if spec:
            n = "-" if spec["length"] is None else f"{spec['length']:,}"
            rows.append((f"  {name}", f"sent as {spec['sent']}, {spec['decoded']} x {n}"))
    width = max(len(r[0]) for r in rows)
    print(f"\nExplore's first view in headless Chromium ({res['machine']})")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    budget = res.get("budget")
    if budget:
        print(
            f"  the issue's budget at 1M cells (this run: {app['n_cells']:,}): "
            f"<= {budget['max_bytes'] / 1e6:.0f} MB, "
            f"<= {budget['max_paint_ms'] / 1000:.0f} s paint: "
            + ("within" if budget["within"] else "OVER")
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cells", type=int, default=EMBEDDED_CELLS, help="6855: the embedded data; else simulated"
    )
    p.add_argument("--epochs", type=int, default=2, help="simulated: epochs on 10,000 cells")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="embedded data's cache")
    p.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for prepare, paint")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT / "browser.json")
    p.add_argument("--no-warm", action="store_true", help="no warm steps behind the page")
    p.add_argument(
        "--js-profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="sample the page's JavaScript up to the paint into FILE (.cpuprofile, opens in "
        "DevTools; adds profiler overhead) and report the top functions",
    )
    args = p.parse_args(argv)
    if not args.chromium.exists():
        raise SystemExit(f"no Chromium at {args.chromium} (--chromium PATH)")
    res: dict[str, Any] = {
        "cells": args.cells,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"load {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir if args.cells == EMBEDDED_CELLS else Path(tmp) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        service, state, server, thread, info = start_app(args, cache)
        res["app"] = info
        try:
            res["browser"] = measure(f"http://127.0.0.1:{server.server_port}", args)
            res["server"] = server_timeline(info.pop("server_callbacks"), res["browser"])
        finally:
            stop_warm_up(service, state)
            server.shutdown()
            thread.join(timeout=10)
            service.close()
    m = res["browser"]
    if m["scatter_first_paint_ms"] is not None:
        res["budget"] = {
            "max_bytes": 5_000_000,
            "max_paint_ms": 3000,
            "within": m["transferred_bytes"] <= 5_000_000 and m["scatter_first_paint_ms"] <= 3000,
        }
    res["load_after"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_results(res, args.json)
    print_report(res)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
