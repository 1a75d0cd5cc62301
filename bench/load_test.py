"""Load test: N concurrent simulated users against a real dashboard server over HTTP.

The server is what ``totalvi-explorer`` starts: :func:`dashboard.server.bootstrap` on the
embedded default (``data/pbmc10k.h5ad`` + ``data/models/pbmc10k``), its results cache
(``--cache-dir``, default the server's own ``data/cache``, so a warm start), then the Flask
app served on a free loopback port in a background thread: werkzeug's threaded
``make_server`` (a thread per request, like ``app.run``; ``--server werkzeug``, the default)
or waitress (``--server waitress``, ``--threads`` worker threads) where installed. The test
waits until the preparation job and the background warming (foreground probability, DE) are
done, so it measures the steady state.

Each simulated user is a thread with its own HTTP session (``requests``, gzip accepted as a
browser does) that repeats a visit until the time is up: a page load (GET ``/``,
``/_dash-layout``, ``/_dash-dependencies``) then ``--actions`` interactions, each a POST
``/_dash-update-component`` with the body the browser sends (built as ``bench/dashboard.py``
does, from the app's callback map): a recolour (``recolor``: gene raw, gene denoised,
protein denoised or cell type, at random) or a lasso selection of 10% of the cells (the two
callbacks a selection fires: ``highlight`` and ``selection_info``), with a think time
(uniform in 0.5-1.5 x ``--think`` seconds; 0 = closed loop, as fast as the server answers)
between actions. Not simulated: the JS/CSS bundles (static, cached by browsers after the
first visit) and the status poll.

Reported per user count: requests, requests/s, latency p50/p95/p99 (ms, whole request incl.
reading the body) overall and per request kind, and errors (non-2xx, connection errors, or a
callback that answered with the app's error alert). Target: 20 users p95 < 500 ms, 0 errors.

Usage: ``python bench/load_test.py [--users 1 5 20] [--duration 20] [--think 1.0]``; results
go to ``bench/out/load_test.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

DEFAULT_DATA = ROOT / "data" / "pbmc10k.h5ad"
DEFAULT_MODEL = ROOT / "data" / "models" / "pbmc10k"
UPDATE_URL = "/_dash-update-component"
PAGE_URLS = ("/", "/_dash-layout", "/_dash-dependencies")
GENES = ["CD3E", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "CD8A", "FCGR3A", "IL7R", "CST3"]
SEED = 0


class LoadTestError(RuntimeError):
    """A problem the test cannot work around (one readable line)."""


# ============================================================================ server
class Server:
    """The bootstrapped app served on a free loopback port in a background thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        from dashboard.backend.settings import Settings
        from dashboard.server import bootstrap, make_app

        settings = Settings.from_env()
        if args.cache_dir is not None:
            settings = Settings.from_env(cache_dir=args.cache_dir)
        t0 = time.perf_counter()
        self.boot = bootstrap(args.data, args.model, settings=settings, warm=True, out=None)
        if self.boot.job is None:
            raise LoadTestError(f"no model: {self.boot.message}")
        self.app = make_app(self.boot)
        rec = self.boot.service.wait(self.boot.job, timeout=args.ready_timeout)
        if str(rec.status) != "done":
            msg = f"preparing the model failed or timed out: {rec.error or rec.message}"
            raise LoadTestError(msg)
        deadline = time.monotonic() + args.ready_timeout
        while self.boot.state.status().warming and time.monotonic() < deadline:
            time.sleep(0.5)
        self.ready_s = time.perf_counter() - t0
        self.kind = args.server
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        if args.server == "waitress":
            from waitress.server import create_server

            self._srv = create_server(
                self.app.server, host="127.0.0.1", port=0, threads=args.threads
            )
            self.port = int(self._srv.effective_port)
            self._thread = threading.Thread(target=self._srv.run, daemon=True)
        else:
            from werkzeug.serving import make_server

            self._srv = make_server("127.0.0.1", 0, self.app.server, threaded=True)
            self.port = int(self._srv.server_port)
            self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.kind == "waitress":
            self._srv.close()
        else:
            self._srv.shutdown()
        self._thread.join(timeout=10)
        self.boot.service.close()


# ============================================================================ bodies
class Bodies:
    """Request bodies of the callbacks a user fires, built from the app's callback map."""

    def __init__(self, server: Server) -> None:
        import requests

        from dashboard import ids, queries

        r = requests.get(server.url + "/_dash-dependencies", timeout=60)  # registers pages
        if r.status_code != 200:
            msg = f"GET /_dash-dependencies answered {r.status_code}"
            raise LoadTestError(msg)
        self.callbacks: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, cb in server.app.callback_map.items():
            name = getattr(cb.get("callback"), "__name__", None)
            if name is not None:
                self.callbacks[name] = ("", {}) if name in self.callbacks else (key, cb)
        service, pair = server.boot.service, server.boot.pair
        catalog = queries.feature_catalog(service, pair)
        genes = [g for g in GENES if g in set(catalog.genes)] or list(catalog.genes[:10])
        proteins = list(catalog.proteins)
        self.recolours: list[bytes] = []
        for feature, layer in (
            *((f"gene:{g}", "raw") for g in genes),
            *((f"gene:{g}", "denoised") for g in genes),
            *((f"protein:{p}", "denoised") for p in proteins),
            ("obs:cell_type", "raw"),
        ):
            before = (
                {"feature": f"gene:{genes[0]}", "layer": "raw"}
                if feature.startswith("obs:")
                else {"feature": "obs:cell_type", "layer": "raw"}
            )
            self.recolours.append(
                self.body(
                    "recolor",
                    {
                        f"{ids.EXPLORE_COLOR}.value": feature,
                        f"{ids.EXPLORE_LAYER}.value": layer,
                        f"{ids.COLOR_STORE}.data": before,
                    },
                    [f"{ids.EXPLORE_COLOR}.value"],
                )
            )
        xy = service.umap(pair)[["UMAP1", "UMAP2"]].to_numpy(dtype=np.float64)
        rng = np.random.default_rng(SEED)
        k = max(1, round(0.1 * len(xy)))
        sel_key = f"{ids.SELECTION_STORE}.data"
        self.selections: list[tuple[bytes, bytes]] = []
        for centre in rng.choice(len(xy), size=20, replace=False):
            d = ((xy - xy[centre]) ** 2).sum(axis=1)
            cells = sorted(int(i) for i in np.argpartition(d, k - 1)[:k])
            sel = {"cells": cells, "source": ids.EXPLORE_UMAP, "dataset": pair.dataset.id}
            self.selections.append(
                (
                    self.body("highlight", {sel_key: sel}, [sel_key]),
                    self.body("selection_info", {sel_key: sel}, [sel_key]),
                )
            )
        self.alert_id = ids.ALERT

    def body(self, name: str, values: dict[str, Any], changed: list[str]) -> bytes:
        """JSON body of callback ``name`` (``values`` maps ``"id.prop"`` to values)."""
        from dash._utils import split_callback_id

        key, cb = self.callbacks.get(name, ("", {}))
        if not key:
            msg = f"callback {name!r} not found exactly once in the app (renamed?)"
            raise LoadTestError(msg)

        def fill(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**d, "value": values.get(f"{d['id']}.{d['property']}")} for d in deps]

        return json.dumps(
            {
                "output": key,
                "outputs": split_callback_id(key),
                "inputs": fill(cb["inputs"]),
                "state": fill(cb["state"]),
                "changedPropIds": changed,
            }
        ).encode()


# ============================================================================== users
class Recorder:
    """Thread-safe list of (kind, seconds, ok, error) per request."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, bool, str]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, seconds: float, ok: bool, error: str = "") -> None:
        with self._lock:
            self.rows.append((kind, seconds, ok, error))


def user(
    uid: int,
    url: str,
    bodies: Bodies,
    stop: threading.Event,
    rec: Recorder,
    args: argparse.Namespace,
) -> None:
    import requests

    rnd = random.Random(SEED + uid)
    session = requests.Session()
    headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}

    def call(kind: str, fn: Callable[[], Any], check_alert: bool = False) -> None:
        t0 = time.perf_counter()
        try:
            r = fn()
            content = r.content  # read the whole body
            seconds = time.perf_counter() - t0
            ok = 200 <= r.status_code < 300
            error = "" if ok else f"HTTP {r.status_code}"
            if ok and check_alert and r.status_code == 200:
                side = (json.loads(content).get("sideUpdate") or {}).get(bodies.alert_id)
                if side:
                    ok, error = False, f"alert: {json.dumps(side)[:200]}"
        except Exception as err:  # connection refused/reset, timeout
            seconds = time.perf_counter() - t0
            ok, error = False, f"{type(err).__name__}: {str(err)[:200]}"
        if not stop.is_set() or args.count_tail:
            rec.add(kind, seconds, ok, error)

    def think() -> None:
        if args.think > 0:
            stop.wait(args.think * rnd.uniform(0.5, 1.5))

    while not stop.is_set():
        for path in PAGE_URLS:
            call(f"GET {path}", lambda p=path: session.get(url + p, timeout=args.request_timeout))
            if stop.is_set():
                break
        for _ in range(args.actions):
            if stop.is_set():
                break
            think()
            if stop.is_set():
                break
            if rnd.random() < args.recolour_share:
                body = rnd.choice(bodies.recolours)
                call(
                    "POST recolour",
                    lambda b=body: session.post(
                        url + UPDATE_URL, data=b, headers=headers, timeout=args.request_timeout
                    ),
                    check_alert=True,
                )
            else:
                hl, info = rnd.choice(bodies.selections)
                for kind, body in (("POST highlight", hl), ("POST selection_info", info)):
                    call(
                        kind,
                        lambda b=body: session.post(
                            url + UPDATE_URL, data=b, headers=headers, timeout=args.request_timeout
                        ),
                        check_alert=True,
                    )
    session.close()


def stats(rows: list[tuple[str, float, bool, str]], seconds: float) -> dict[str, Any]:
    lat = np.asarray([r[1] for r in rows]) * 1e3
    errors = [r for r in rows if not r[2]]
    out: dict[str, Any] = {
        "requests": len(rows),
        "requests_per_s": len(rows) / seconds if seconds > 0 else 0.0,
        "errors": len(errors),
        "error_examples": sorted({f"{r[0]}: {r[3]}" for r in errors})[:5],
    }
    if len(lat):
        out.update(
            p50_ms=float(np.percentile(lat, 50)),
            p95_ms=float(np.percentile(lat, 95)),
            p99_ms=float(np.percentile(lat, 99)),
            max_ms=float(lat.max()),
        )
    return out


def run_level(
    n_users: int, server: Server, bodies: Bodies, args: argparse.Namespace
) -> dict[str, Any]:
    stop = threading.Event()
    rec = Recorder()
    threads = [
        threading.Thread(target=user, args=(i, server.url, bodies, stop, rec, args), daemon=True)
        for i in range(n_users)
    ]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(args.duration)
    stop.set()
    elapsed = time.perf_counter() - t0
    for t in threads:
        t.join(timeout=args.request_timeout + 5)
    res = {"users": n_users, "seconds": elapsed, **stats(rec.rows, elapsed)}
    res["load_before"] = load0
    kinds = sorted({r[0] for r in rec.rows})
    res["by_kind"] = {k: stats([r for r in rec.rows if r[0] == k], elapsed) for k in kinds}
    res["target_met"] = bool(
        n_users < 20 or (res.get("p95_ms", float("inf")) < 500 and res["errors"] == 0)
    )
    return res


# ============================================================================== report
def print_report(res: dict[str, Any]) -> None:
    print(
        f"\nLoad test: {res['server']} server on loopback, {res['cpu_count']} CPUs, "
        f"think time {res['think']:g}s x U(0.5, 1.5), {res['actions']} actions per page "
        f"load, {res['duration']:g}s per level; server ready in {res['ready_s']:.1f}s"
    )
    print(
        "\n| users | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| 20-user target (p95 < 500 ms, 0 errors) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    for lv in res["levels"]:
        target = ("met" if lv["target_met"] else "NOT met") if lv["users"] >= 20 else ""
        print(
            f"| {lv['users']} | {lv['requests']} | {lv['requests_per_s']:.1f} | "
            f"{lv.get('p50_ms', float('nan')):.0f} | {lv.get('p95_ms', float('nan')):.0f} | "
            f"{lv.get('p99_ms', float('nan')):.0f} | {lv.get('max_ms', float('nan')):.0f} | "
            f"{lv['errors']} | {target} |"
        )
    print(
        "\nBy request kind\n| users | request | n | p50 ms | p95 ms | p99 ms | errors |\n"
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for lv in res["levels"]:
        for kind, s in lv["by_kind"].items():
            print(
                f"| {lv['users']} | {kind} | {s['requests']} | {s.get('p50_ms', 0):.0f} | "
                f"{s.get('p95_ms', 0):.0f} | {s.get('p99_ms', 0):.0f} | {s['errors']} |"
            )
    for lv in res["levels"]:
        for ex in lv["error_examples"]:
            print(f"({lv['users']} users) error: {ex}")


# ================================================================================ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument(
        "--think", type=float, default=1.0, help="mean think time between actions (s); 0: none"
    )
    parser.add_argument("--actions", type=int, default=10, help="interactions per page load")
    parser.add_argument(
        "--recolour-share", type=float, default=0.6, help="share of actions that recolour"
    )
    parser.add_argument("--server", choices=["werkzeug", "waitress"], default="werkzeug")
    parser.add_argument("--threads", type=int, default=8, help="waitress worker threads")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="results cache (default: the server's)"
    )
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument(
        "--count-tail",
        action="store_true",
        help="also count requests that finish after the level's time is up",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    if min(args.users) < 1 or args.duration <= 0 or args.actions < 1:
        parser.error("--users, --duration and --actions must be positive")
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if args.server == "waitress":
        try:
            import waitress  # noqa: F401
        except ImportError:
            parser.error("--server waitress: waitress is not installed")
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    res: dict[str, Any] = {
        "server": args.server,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "think": args.think,
        "actions": args.actions,
        "duration": args.duration,
        "levels": [],
    }
    print("starting the server (bootstrap, prepare, warm)...", flush=True)
    try:
        server = Server(args)
    except LoadTestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    res["ready_s"] = server.ready_s
    print(f"serving {server.url} (ready in {server.ready_s:.1f}s)", flush=True)
    try:
        bodies = Bodies(server)
        for n in args.users:
            lv = run_level(n, server, bodies, args)
            res["levels"].append(lv)
            print(
                f"  {n} users: {lv['requests']} requests, {lv['requests_per_s']:.1f}/s, "
                f"p95 {lv.get('p95_ms', float('nan')):.0f} ms, errors {lv['errors']}",
                flush=True,
            )
            time.sleep(1.0)
    except LoadTestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        server.close()
        (args.out / "load_test.json").write_text(json.dumps(res, indent=2, default=str))
    print_report(res)
    print(f"\nwrote {args.out / 'load_test.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
