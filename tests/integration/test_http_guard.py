"""HTTP hardening: login rate limits and the success cache (``dashboard.auth``), malformed
``Authorization`` headers, security headers and the CSP, the JSON body guard
(``dashboard.http_guard``), path scrubbing, and one real waitress server under a flood.

Timing-free: scrypt runs are counted (``check_password_hash`` wrapped) and the auth's clock
is a fake one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import werkzeug.security

from dashboard import auth as auth_mod
from dashboard import http_guard
from dashboard.auth import FailureLimiter, parse_basic, set_password
from dashboard.cli import main
from dashboard.public_paths import scrub_paths

PASSWORD = "correct horse battery"
HEADERS = ("Content-Security-Policy", *http_guard.SECURITY_HEADERS)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def site(auth_app) -> SimpleNamespace:
    """The app with basic auth (``tests/integration/conftest.py``)."""
    return auth_app


def count_scrypt(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count password-hash checks from now on (``["n"]``): what a wrong password costs."""
    calls = {"n": 0}
    real = werkzeug.security.check_password_hash

    def counted(hashed: str, password: str) -> bool:
        calls["n"] += 1
        return real(hashed, password)

    monkeypatch.setattr(werkzeug.security, "check_password_hash", counted)
    return calls


@pytest.fixture
def fresh(site, monkeypatch) -> SimpleNamespace:
    """``site`` with empty limiters and cache, a fake clock, and scrypt runs counted."""
    a = site.auth
    a.clients, a.user_names = FailureLimiter(), FailureLimiter()
    a._verified.clear()
    a._trusted.clear()
    site.clock = a.clock = Clock()
    site.scrypt = count_scrypt(monkeypatch)
    return site


def get(site, headers=None, client="10.0.0.1", path="/_dash-layout"):
    return site.client.get(path, headers=headers or {}, environ_base={"REMOTE_ADDR": client})


# ---------------------------------------------------------------------------- rate limits
def test_bad_passwords_from_one_client_get_429_without_scrypt(fresh) -> None:
    for i in range(auth_mod.MAX_FAILURES):
        assert get(fresh, basic("mallory", f"guess {i}")).status_code == 401
    assert fresh.scrypt["n"] == auth_mod.MAX_FAILURES
    for headers in (basic("mallory", "guess"), basic("alice", PASSWORD)):  # both refused
        r = get(fresh, headers)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert all(h in r.headers for h in HEADERS)
    assert fresh.scrypt["n"] == auth_mod.MAX_FAILURES  # no scrypt while refused
    assert get(fresh, basic("alice", PASSWORD), client="10.0.0.2").status_code == 200

    fresh.clock.now += auth_mod.BASE_DELAY_S + 0.1  # the wait is over: one more try
    assert get(fresh, basic("mallory", "again")).status_code == 401
    r = get(fresh, basic("mallory", "again"))
    assert r.status_code == 429  # ... and the next wait is twice as long
    assert int(r.headers["Retry-After"]) == int(2 * auth_mod.BASE_DELAY_S)


def test_guessing_a_user_from_many_clients_leaves_the_real_user_in(fresh) -> None:
    assert get(fresh, basic("alice", PASSWORD), client="192.168.1.5").status_code == 200
    n0 = fresh.scrypt["n"]
    for i in range(3 * auth_mod.MAX_FAILURES):  # a botnet: each address under its limit
        r = get(fresh, basic("alice", f"guess {i}"), client=f"10.9.{i}.1")
        assert r.status_code == (401 if i < auth_mod.MAX_FAILURES else 429)
    assert fresh.scrypt["n"] == n0 + auth_mod.MAX_FAILURES  # alice's name is now refused
    # the real alice: remembered (no scrypt) ...
    assert get(fresh, basic("alice", PASSWORD), client="192.168.1.5").status_code == 200
    assert fresh.scrypt["n"] == n0 + auth_mod.MAX_FAILURES
    # ... and once forgotten (while her name is still being guessed), her address that
    # logged in before may still verify; a new address for her waits like the guessers
    fresh.clock.now += auth_mod.SUCCESS_TTL_S + 1
    for i in range(2):
        get(fresh, basic("alice", f"guess {i}"), client=f"10.8.{i}.1")
    assert get(fresh, basic("alice", PASSWORD), client="172.16.0.1").status_code == 429
    n1 = fresh.scrypt["n"]
    assert get(fresh, basic("alice", PASSWORD), client="192.168.1.5").status_code == 200
    assert fresh.scrypt["n"] == n1 + 1


def test_busy_verification_slots_answer_503_but_remembered_users_get_in(fresh) -> None:
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    slots = fresh.auth._slots
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        assert taken == auth_mod.MAX_CONCURRENT_VERIFICATIONS
        r = get(fresh, basic("bob", "whatever"), client="10.0.0.7")
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    finally:
        for _ in range(taken):
            slots.release()
    assert fresh.scrypt["n"] == 1


def test_success_cache_ttl_and_file_change(fresh) -> None:
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    assert fresh.scrypt["n"] == 1
    fresh.clock.now += auth_mod.SUCCESS_TTL_S - 1  # in use: the TTL slides
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    fresh.clock.now += auth_mod.SUCCESS_TTL_S - 1
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    assert fresh.scrypt["n"] == 1
    fresh.clock.now += auth_mod.SUCCESS_TTL_S + 1  # idle past the TTL: verified again
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    assert fresh.scrypt["n"] == 2
    set_password(fresh.users, "bob", "bob's password")  # any change empties the cache
    assert get(fresh, basic("alice", PASSWORD)).status_code == 200
    assert fresh.scrypt["n"] == 3


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(cap=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
    assert auth_mod.MAX_TRACKED == 10_000


# -------------------------------------------------------------------- malformed headers
MALFORMED = {
    "latin-1 bytes": "Basic " + base64.b64encode("jos\xe9:pw".encode("latin-1")).decode(),
    "raw non-ASCII": "Basic \xe9\xff\xfe",
    "bad base64": "Basic !!!not-base64",
    "no colon": "Basic " + base64.b64encode(b"alice").decode(),
    "empty user": "Basic " + base64.b64encode(b":" + PASSWORD.encode()).decode(),
    "other scheme": "Bearer abc",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_authorization_is_401_with_one_log_line(fresh, caplog, name) -> None:
    caplog.set_level("DEBUG")
    r = fresh.client.get("/", environ_overrides={"HTTP_AUTHORIZATION": MALFORMED[name]})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert all(h in r.headers for h in HEADERS)
    records = [rec for rec in caplog.records if rec.levelno >= 30]
    assert len(records) == 1 and records[0].exc_info is None, caplog.text
    assert "Traceback" not in caplog.text and "malformed Authorization" in caplog.text
    assert fresh.scrypt["n"] == 0


def test_parse_basic() -> None:
    assert parse_basic(basic("alice", "pw:with:colons")["Authorization"]) == (
        "alice", "pw:with:colons"
    )  # fmt: skip
    assert parse_basic(basic("alice", "")["Authorization"]) == ("alice", "")
    assert all(parse_basic(h) is None for h in [*MALFORMED.values(), "", None, "Basic"])


def test_passwd_refuses_short_passwords(tmp_path, capsys, monkeypatch) -> None:
    users = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["passwd", str(users), "alice", "--password-stdin"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "at least 8 characters" in err and "short" not in err
    assert not users.exists()
    with pytest.raises(ValueError, match="at least 8"):
        set_password(users, "alice", "1234567")
    assert set_password(users, "alice", "12345678") is True


# ---------------------------------------------------------------------- headers and CSP
def test_security_headers_on_every_kind_of_response(fresh) -> None:
    ok = basic("alice", PASSWORD)
    responses = {
        "page": get(fresh, ok, path="/"),
        "layout": get(fresh, ok),
        "asset": get(fresh, ok, path="/assets/style.css"),
        "401": get(fresh, path="/"),
        "404": get(fresh, ok, path="/assets/no-such-file.css"),
        "400": fresh.client.post(
            "/_dash-update-component",
            data=b"[" * 1000,
            headers=ok,
            content_type="application/json",
        ),
    }
    expected = {"page": 200, "layout": 200, "asset": 200, "401": 401, "404": 404, "400": 400}
    for name, r in responses.items():
        assert r.status_code == expected[name], name
        assert r.headers["X-Frame-Options"] == "DENY", name
        assert r.headers["X-Content-Type-Options"] == "nosniff", name
        assert r.headers["Referrer-Policy"] == "same-origin", name
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], name


def test_csp_allows_exactly_the_pages_inline_scripts(fresh) -> None:
    r = get(fresh, basic("alice", PASSWORD), path="/")
    policy = r.headers["Content-Security-Policy"]
    directives = dict(d.split(" ", 1) for d in policy.split("; "))
    script_src = directives["script-src"].split()
    assert "'unsafe-inline'" not in script_src and script_src[0] == "'self'"
    assert set(fresh.app.csp_hashes()) <= set(script_src)
    html = re.sub(r"<!--.*?-->", "", r.get_data(as_text=True), flags=re.S)  # IE-only ones
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", html, re.S)
    executed = [body for attrs, body in inline if "application/json" not in attrs]
    assert executed, "the page has no inline script (Dash's renderer is one)"
    for body in executed:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    assert directives["style-src"] == "'self' 'unsafe-inline'"
    assert directives["default-src"] == "'self'" and directives["object-src"] == "'none'"


# ---------------------------------------------------------------------------- body guard
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64"),
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
        (b"output=x&inputs=y", "not a JSON object"),
        (b"", "not a JSON object"),
        (b'{"a": ]]}', "not valid JSON"),
    ],
)
def test_bad_json_bodies_get_400_with_one_line(fresh, caplog, body, words) -> None:
    ok = basic("alice", PASSWORD)
    r = fresh.client.post(
        "/_dash-update-component", data=body, headers=ok, content_type="application/json"
    )
    assert r.status_code == 400 and words in r.get_data(as_text=True)
    assert r.get_data(as_text=True).count("\n") == 1
    assert "Traceback" not in caplog.text
    assert get(fresh, ok).status_code == 200  # still answering


def test_body_guard_runs_after_auth_and_bounds_the_size(fresh) -> None:
    deep = b"[" * 100_000
    r = fresh.client.post("/_dash-update-component", data=deep, content_type="application/json")
    assert r.status_code == 401  # refused before the body is read
    limit = fresh.app.server.config["MAX_CONTENT_LENGTH"]
    r = fresh.client.post(
        "/_dash-update-component", data=b"{}", content_type="application/json",
        headers=basic("alice", PASSWORD), environ_overrides={"CONTENT_LENGTH": str(limit + 1)},
    )  # fmt: skip
    assert r.status_code == 413


def test_depth_limit_leaves_room_for_dash_payloads() -> None:
    figure = {"data": [{"marker": {"color": {"bdata": "AAA=", "dtype": "f4"}}}], "layout": {}}
    payload = {
        "output": "..x.children..",
        "outputs": [[{"id": {"type": "t", "index": 1}, "property": "children"}]],
        "inputs": [[{"id": {"type": "t", "index": 1}, "property": "figure", "value": figure}]],
        "state": [{"id": "s", "property": "data", "value": {"cells": [1, 2], "region": {}}}],
        "changedPropIds": ["x.n_clicks"],
    }
    body = json.dumps(payload).encode()
    assert http_guard.body_problem(body) is None
    assert http_guard.json_depth(body) <= 10 < http_guard.MAX_JSON_DEPTH // 2


def test_callback_errors_are_a_plain_500(fresh) -> None:
    r = fresh.client.post(
        "/_dash-update-component", json={"output": "nope.children", "inputs": []},
        headers=basic("alice", PASSWORD),
    )  # fmt: skip
    text = r.get_data(as_text=True)
    assert r.status_code == 500 and text.count("\n") == 1
    assert "Traceback" not in text and "/" not in text and "nope" not in text


# ---------------------------------------------------------------------------- path scrub
def test_scrub_paths() -> None:
    roots = ["/srv/data", "/srv/models"]
    cases = {
        "cannot read /srv/data/uploads/x.h5ad.": "cannot read uploads/x.h5ad.",
        "no model.pt in '/srv/models/pbmc10k'": "no model.pt in 'pbmc10k'",
        "[Errno 2] /usr/lib/python3/x.py (y)": "[Errno 2] x.py (y)",
        "open http://host:8050/model, a/b": "open http://host:8050/model, a/b",
        "key:/opt/secret/key and x:/etc/shadow.": "key:key and x:shadow.",
    }
    for text, public in cases.items():
        assert scrub_paths(text, roots) == public
    repo = Path(__file__).resolve().parents[2]
    assert scrub_paths(f"at {repo}/models/pbmc10k") == "at models/pbmc10k"


# ------------------------------------------------------------------------- real waitress
def test_waitress_under_a_password_flood_and_a_deep_body(waitress_serve, monkeypatch) -> None:
    """Behind a trusted proxy (``X-Forwarded-For`` gives the client): a flood of wrong
    passwords from 8 addresses runs scrypt at most MAX_FAILURES times per address, the
    real user gets every answer right; a deep JSON body gets 400 and the server answers."""
    calls = count_scrypt(monkeypatch)

    def request(path: str, headers: dict[str, str], data: bytes | None = None) -> int:
        req = urllib.request.Request(base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    with waitress_serve(threads=4, trusted_proxy="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.effective_port}"
        alice = {**basic("alice", PASSWORD), "X-Forwarded-For": "192.168.7.7"}
        assert request("/_dash-layout", alice) == 200
        codes: list[int] = []

        def flood(i: int) -> None:
            # until this address is limited: a busy verification slot (503) does not count
            # as a failure, so how many tries that takes depends on the machine's speed
            for j in range(1000):
                bad = {**basic(f"user{i}", f"guess {j}"), "X-Forwarded-For": f"10.0.0.{i}"}
                codes.append(request("/_dash-layout", bad))
                if codes[-1] == 429:
                    break

        flooders = [threading.Thread(target=flood, args=(i,)) for i in range(8)]
        for t in flooders:
            t.start()
        alice_codes = [request("/_dash-layout", alice) for _ in range(20)]
        for t in flooders:
            t.join(120)
        assert alice_codes == [200] * 20
        assert set(codes) <= {401, 429, 503} and codes.count(429) == 8  # each one limited
        assert calls["n"] <= 1 + 8 * auth_mod.MAX_FAILURES

        deep = b'{"output":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        headers = {**alice, "Content-Type": "application/json"}
        assert request("/_dash-update-component", headers, deep) == 400
        assert request("/_dash-layout", alice) == 200


def test_progress_and_status_lines_show_no_server_paths(monkeypatch) -> None:
    """The status bar and job progress lines go through the same scrubbing as alerts."""
    from dashboard import components, layout
    from dashboard.testing import text

    monkeypatch.setattr("dashboard.public_paths.configured_roots", lambda: [Path("/srv/models")])
    bar = layout.status_view(
        {"state": "preparing", "pending_name": "m", "message": "loading /srv/models/pbmc10k",
         "progress": 0.5}
    )  # fmt: skip
    failed = layout.status_view({"state": "failed", "message": "no file /etc/totalvi/x.pt"})
    progress = components.progress_children(0.3, "reading /srv/models/a/model.pt")
    shown = text(bar) + text(failed) + text(progress)
    assert "/srv" not in shown and "/etc" not in shown, shown
    assert "loading pbmc10k" in shown and "no file x.pt" in shown and "a/model.pt" in shown
