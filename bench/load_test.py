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
between actions; ``--no-think`` (same as ``--think 0``) fires them back to back. Not
simulated: the JS/CSS bundles (static, cached by browsers after the first visit) and the
status poll.

``--auth`` serves with HTTP basic auth (``dashboard.auth``): a temporary credentials file with
user ``loadtest`` and a long random password (``Settings(auth_file=...)``); every user sends
the right ``Authorization: Basic`` header and signs in once (one request, outside the
measured time) before each level, so its password is verified by scrypt once and then
served from the server's success cache (sliding 5-minute TTL, which bypasses the login rate
limits). ``--bad-password-clients N`` (implies ``--auth``) adds N threads that, during each
measured level, send GET ``/_dash-layout`` with wrong credentials (a fresh random password
per request, alternately for ``loadtest`` and for a random unknown user name) as fast as
they are answered; their status codes (401 wrong password, 429 rate-limited, 503 every
scrypt slot busy) and request rate are reported apart from the users' figures and are never
the users' errors. With ``--server waitress`` the server trusts ``X-Forwarded-For`` from
127.0.0.1 (``trusted_proxy``, as behind nginx) and every bad client sends its own address
(new ones for each level, so each level meets fresh attackers, not ones already backed off),
every user another one, so the per-client limits see N attackers and the users as distinct
clients; werkzeug has no trusted proxy here, so all of them are the one client 127.0.0.1.
The bad clients are threads of this process (they share its GIL and 2 cores with the server
and the users: a pessimistic setting).

Reported per user count: requests, requests/s, latency p50/p95/p99 (ms, whole request incl.
reading the body) overall, for recolours and for the other interactions (the selection's
``highlight`` and ``selection_info``), and per request kind, and errors (non-2xx, connection
errors, or a callback that answered with the app's error alert); with bad clients their
requests, requests/s and status counts. Target: 20 users recolour p95 < 500 ms, 0 errors.

Usage: ``python bench/load_test.py [--users 1 5 20] [--duration 20] [--think 1.0 | --no-think]
[--auth] [--bad-password-clients 16] [--server waitress]``; results go to
``bench/out/load_test.json`` (``--json-name`` to change the file name).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import platform
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _bench import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_OUT, reported, write_results

UPDATE_URL = "/_dash-update-component"
PAGE_URLS = ("/", "/_dash-layout", "/_dash-dependencies")
GENES = ["CD3E", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "CD8A", "FCGR3A", "IL7R", "CST3"]
SEED = 0
AUTH_USER = "loadtest"
PROBE_URL = "/_dash-layout"


class LoadTestError(RuntimeError):
    """A problem the test cannot work around (one readable line)."""


# ============================================================================ server
class Server:
    """The bootstrapped app served on a free loopback port in a background thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        from dashboard.backend.settings import Settings

        overrides: dict[str, Any] = {}
        if args.cache_dir is not None:
            overrides["cache_dir"] = args.cache_dir
        #: headers every request of this test sends (the right password, when auth is on)
        self.headers: dict[str, str] = {}
        self._auth_dir: str | None = None
        if args.auth:
            from dashboard.auth import set_password

            self._auth_dir = tempfile.mkdtemp(prefix="load-test-auth-")
            auth_file = Path(self._auth_dir) / "users"
            password = secrets.token_urlsafe(32)  # 43 characters
            set_password(auth_file, AUTH_USER, password)
            overrides["auth_file"] = auth_file
            token = base64.b64encode(f"{AUTH_USER}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        # X-Forwarded-For is honoured (from loopback) only by waitress with trusted_proxy
        self.forwarded = bool(args.auth and args.server == "waitress")
        try:
            self._start(args, Settings.from_env(**overrides))
        except BaseException:
            self._remove_auth_dir()
            raise

    def _start(self, args: argparse.Namespace, settings: Any) -> None:
        from dashboard.server import bootstrap, make_app

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

            proxy: dict[str, Any] = {}
            if self.forwarded:  # as dashboard.server._waitress_server with trusted_proxy
                proxy = {
                    "trusted_proxy": "127.0.0.1",
                    "trusted_proxy_headers": {"x-forwarded-for"},
                    "clear_untrusted_proxy_headers": True,
                }
            self._srv = create_server(
                self.app.server, host="127.0.0.1", port=0, threads=args.threads, **proxy
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
        self._remove_auth_dir()

    def _remove_auth_dir(self) -> None:
        if self._auth_dir is not None:
            shutil.rmtree(self._auth_dir, ignore_errors=True)
            self._auth_dir = None

    def client_headers(self, address: str) -> dict[str, str]:
        """The headers of one simulated client: the password, and its own address where
        the server trusts ``X-Forwarded-For``."""
        return {**self.headers, **({"X-Forwarded-For": address} if self.forwarded else {})}


# ============================================================================ bodies
class Bodies:
    """Request bodies of the callbacks a user fires, built from the app's callback map."""

    def __init__(self, server: Server) -> None:
        import requests

        from dashboard import ids
        from dashboard.testing import callbacks_by_name
        from dashboard.views.features import feature_catalog

        r = requests.get(  # registers pages; the first (scrypt) check of the password
            server.url + "/_dash-dependencies",
            headers=server.client_headers("10.255.255.254"),
            timeout=60,
        )
        if r.status_code != 200:
            msg = f"GET /_dash-dependencies answered {r.status_code}"
            raise LoadTestError(msg)
        self.callbacks = callbacks_by_name(server.app.callback_map)
        service, pair = server.boot.service, server.boot.pair
        catalog = feature_catalog(service, pair)
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
        from dashboard.testing import callback_request

        return callback_request(self.callbacks, name, values, changed, error=LoadTestError)


# ============================================================================== users
class Recorder:
    """Thread-safe list of (kind, seconds, ok, error) per request."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, bool, str]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, seconds: float, ok: bool, error: str = "") -> None:
        with self._lock:
            self.rows.append((kind, seconds, ok, error))


def user_address(uid: int) -> str:
    """The address user ``uid`` forwards (10.200.0.1, ...; bad clients use others)."""
    return f"10.200.{uid // 254 % 256}.{uid % 254 + 1}"


def sign_in(session: Any, url: str, args: argparse.Namespace, deadline: float) -> None:
    """One request with the user's headers until it is let in (a 503 while the scrypt
    slots are busy, or a 429, is retried after a moment; any other refusal is fatal)."""
    last = ""
    while time.monotonic() < deadline:
        try:
            r = session.get(url + PROBE_URL, timeout=args.request_timeout)
        except Exception as err:
            last = f"{type(err).__name__}: {str(err)[:200]}"
        else:
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
            if r.status_code not in (429, 503):
                break
        time.sleep(0.2)
    msg = f"a simulated user could not sign in ({last})"
    raise LoadTestError(msg)


def user(
    uid: int,
    url: str,
    bodies: Bodies,
    stop: threading.Event,
    rec: Recorder,
    args: argparse.Namespace,
    session: Any,
) -> None:
    rnd = random.Random(SEED + uid)
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


class BadRecorder:
    """Status-code counts of the bad-password clients (``"error"``: no answer)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def add(self, status: str, seconds: float) -> None:
        with self._lock:
            self.counts[status] = self.counts.get(status, 0) + 1
            self.seconds.append(seconds)


def bad_client(
    address: str,
    url: str,
    stop: threading.Event,
    rec: BadRecorder,
    args: argparse.Namespace,
    forwarded: bool,
) -> None:
    """Wrong passwords as fast as they are answered: for ``loadtest`` and unknown users."""
    import requests

    session = requests.Session()
    if forwarded:
        session.headers["X-Forwarded-For"] = address
    n = 0
    while not stop.is_set():
        name = AUTH_USER if n % 2 == 0 else f"user-{secrets.token_hex(4)}"
        n += 1
        token = base64.b64encode(f"{name}:{secrets.token_urlsafe(16)}".encode()).decode()
        t0 = time.perf_counter()
        try:
            r = session.get(
                url + PROBE_URL,
                headers={"Authorization": f"Basic {token}"},
                timeout=args.request_timeout,
            )
            _ = r.content  # read the whole body
            status = str(r.status_code)
        except Exception:  # connection refused/reset, timeout
            status = "error"
            time.sleep(0.05)  # do not spin on a refused connection
        if not stop.is_set():
            rec.add(status, time.perf_counter() - t0)
    session.close()


def bad_address(level: int, i: int) -> str:
    """Bad client ``i``'s address during level ``level`` (10.<level+1>.x.y: new each level)."""
    return f"10.{1 + level % 199}.{i // 254 % 256}.{i % 254 + 1}"


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
    n_users: int, server: Server, bodies: Bodies, args: argparse.Namespace, level: int = 0
) -> dict[str, Any]:
    import requests

    stop = threading.Event()
    rec = Recorder()
    bad = BadRecorder()
    # every user's session, signed in before the clock starts (and before the bad clients)
    sessions = []
    deadline = time.monotonic() + 60.0
    for i in range(n_users):
        session = requests.Session()
        session.headers.update(server.client_headers(user_address(i)))
        if server.headers:
            sign_in(session, server.url, args, deadline)
        sessions.append(session)
    threads = [
        threading.Thread(
            target=user, args=(i, server.url, bodies, stop, rec, args, sessions[i]), daemon=True
        )
        for i in range(n_users)
    ]
    bad_threads = [
        threading.Thread(
            target=bad_client,
            args=(bad_address(level, i), server.url, stop, bad, args, server.forwarded),
            daemon=True,
        )
        for i in range(args.bad_password_clients)
    ]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in (*bad_threads, *threads):
        t.start()
    stop.wait(args.duration)
    stop.set()
    elapsed = time.perf_counter() - t0
    for t in (*threads, *bad_threads):
        t.join(timeout=args.request_timeout + 5)
    for session in sessions:
        session.close()
    res = {
        "users": n_users,
        "bad_password_clients": args.bad_password_clients,
        "seconds": elapsed,
        **stats(rec.rows, elapsed),
    }
    res["load_before"] = load0
    kinds = sorted({r[0] for r in rec.rows})
    res["by_kind"] = {k: stats([r for r in rec.rows if r[0] == k], elapsed) for k in kinds}
    res["recolour"] = stats([r for r in rec.rows if r[0] == "POST recolour"], elapsed)
    res["other_interactions"] = stats(
        [r for r in rec.rows if r[0] in ("POST highlight", "POST selection_info")], elapsed
    )
    n_bad = sum(bad.counts.values())
    res["bad_clients"] = {
        "requests": n_bad,
        "requests_per_s": n_bad / elapsed if elapsed > 0 else 0.0,
        "status_counts": dict(sorted(bad.counts.items())),
        **(
            {"p95_ms": float(np.percentile(np.asarray(bad.seconds) * 1e3, 95))}
            if bad.seconds
            else {}
        ),
    }
    res["target_met"] = bool(
        n_users < 20 or (res["recolour"].get("p95_ms", float("inf")) < 500 and res["errors"] == 0)
    )
    return res


# ============================================================================== report
def print_report(res: dict[str, Any]) -> None:
    think = (
        f"think time {res['think']:g}s x U(0.5, 1.5)"
        if res["think"] > 0
        else "no think time (back to back)"
    )
    auth = ""
    if res["auth"]:
        auth = "; basic auth" + (
            f", {res['bad_password_clients']} bad-password clients"
            + (
                " (each its own X-Forwarded-For address, as are the users)"
                if res["forwarded"]
                else " (all from 127.0.0.1, as are the users)"
            )
            if res["bad_password_clients"]
            else ""
        )
    print(
        f"\nLoad test: {res['server']} server on loopback, {res['cpu_count']} CPUs, "
        f"{think}, {res['actions']} actions per page load, {res['duration']:g}s per level"
        f"{auth}; server ready in {res['ready_s']:.1f}s"
    )
    nan = float("nan")
    print(
        "\n| users | bad clients | requests | req/s | p50 ms | p95 ms | p99 ms | max ms "
        "| errors | recolour p50 ms | recolour p95 ms | recolour p99 ms | other p95 ms "
        "| bad req | bad req/s | bad 401 | bad 429 | bad 503 | bad other "
        "| 20-user target (recolour p95 < 500 ms, 0 errors) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    )
    for lv in res["levels"]:
        target = ("met" if lv["target_met"] else "NOT met") if lv["users"] >= 20 else ""
        rc, other, bad = lv["recolour"], lv["other_interactions"], lv["bad_clients"]
        counts = bad["status_counts"]
        rest = sum(v for k, v in counts.items() if k not in ("401", "429", "503"))
        print(
            f"| {lv['users']} | {lv['bad_password_clients']} | {lv['requests']} | "
            f"{lv['requests_per_s']:.1f} | "
            f"{lv.get('p50_ms', nan):.0f} | {lv.get('p95_ms', nan):.0f} | "
            f"{lv.get('p99_ms', nan):.0f} | {lv.get('max_ms', nan):.0f} | "
            f"{lv['errors']} | {rc.get('p50_ms', nan):.0f} | {rc.get('p95_ms', nan):.0f} | "
            f"{rc.get('p99_ms', nan):.0f} | {other.get('p95_ms', nan):.0f} | "
            f"{bad['requests']} | {bad['requests_per_s']:.1f} | {counts.get('401', 0)} | "
            f"{counts.get('429', 0)} | {counts.get('503', 0)} | {rest} | {target} |"
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
        unexpected = {
            k: v
            for k, v in lv["bad_clients"]["status_counts"].items()
            if k not in ("401", "429", "503")
        }
        if unexpected:  # a 200 would mean a wrong password got in
            print(f"({lv['users']} users) bad clients' other answers: {unexpected}")


# ================================================================================ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    thinking = parser.add_mutually_exclusive_group()
    thinking.add_argument(
        "--think", type=float, default=1.0, help="mean think time between actions (s); 0: none"
    )
    thinking.add_argument(
        "--no-think",
        action="store_true",
        help="fire the interactions back to back (the same as --think 0)",
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
    parser.add_argument(
        "--auth",
        action="store_true",
        help="serve with HTTP basic auth (a temporary user 'loadtest'; users send its password)",
    )
    parser.add_argument(
        "--bad-password-clients",
        type=int,
        default=0,
        metavar="N",
        help="N clients sending wrong passwords during each level as fast as they can "
        "(implies --auth; their answers are counted apart from the users')",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--json-name", default="load_test.json", help="file name of the results under --out"
    )
    args = parser.parse_args(argv)
    if min(args.users) < 1 or args.duration <= 0 or args.actions < 1:
        parser.error("--users, --duration and --actions must be positive")
    if args.bad_password_clients < 0:
        parser.error("--bad-password-clients must be 0 or more")
    if args.no_think:
        args.think = 0.0
    if args.bad_password_clients:
        args.auth = True
    if Path(args.json_name).name != args.json_name:
        parser.error("--json-name must be a file name, not a path")
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
        "auth": args.auth,
        "bad_password_clients": args.bad_password_clients,
        "levels": [],
    }
    print("starting the server (bootstrap, prepare, warm)...", flush=True)
    try:
        server = Server(args)
    except LoadTestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    res["ready_s"] = server.ready_s
    res["forwarded"] = server.forwarded
    print(f"serving {server.url} (ready in {server.ready_s:.1f}s)", flush=True)
    try:
        bodies = Bodies(server)
        for level, n in enumerate(args.users):
            lv = run_level(n, server, bodies, args, level)
            res["levels"].append(lv)
            bad = lv["bad_clients"]
            bad_line = (
                f"; bad clients {bad['requests']} requests, {bad['requests_per_s']:.1f}/s, "
                f"{bad['status_counts']}"
                if args.bad_password_clients
                else ""
            )
            print(
                f"  {n} users: {lv['requests']} requests, {lv['requests_per_s']:.1f}/s, "
                f"p95 {lv.get('p95_ms', float('nan')):.0f} ms, recolour p95 "
                f"{lv['recolour'].get('p95_ms', float('nan')):.0f} ms, "
                f"errors {lv['errors']}{bad_line}",
                flush=True,
            )
            time.sleep(1.0)
    except LoadTestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        server.close()
        write_results(res, args.out / args.json_name)
    return reported(res, args.out / args.json_name, print_report)


if __name__ == "__main__":
    sys.exit(main())
