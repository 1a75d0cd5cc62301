"""Basic auth under attack, on a live server of its own: a flood of wrong passwords does not
lock out or slow down a signed-in user, and malformed headers get one-line 401s."""

from __future__ import annotations

import base64
import socket
import threading
import time

import requests

from dashboard.testing_live import Live


def raw_get(live: Live, header: bytes) -> tuple[int, bytes]:
    """GET / with an ``Authorization`` header of raw bytes (no client library would send)."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + header
                  + b"\r\n\r\n")  # fmt: skip
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_password_flood_and_malformed_headers(fresh_server) -> None:
    live: Live = fresh_server()
    assert live.get("/_dash-layout").status_code == 200  # alice signs in first
    stop = threading.Event()
    flood_codes: list[int] = []

    def flood(i: int) -> None:
        session = requests.Session()
        j = 0
        while not stop.is_set():
            j += 1
            token = base64.b64encode(f"alice:guess-{i}-{j}".encode()).decode()
            bad = {"Authorization": f"Basic {token}"}
            r = session.get(live.url + "/_dash-layout", headers=bad, timeout=30)
            flood_codes.append(r.status_code)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        alice = [live.get("/_dash-layout").status_code for _ in range(30)]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert alice == [200] * 30  # the signed-in user is never refused during the flood
    assert set(flood_codes) <= {401, 429, 503} and 429 in flood_codes
    assert flood_codes.count(401) <= 5 + 2  # scrypt ran for a handful of guesses only

    n_lines = len(live.log)
    for header in (b"Basic \xff\xfe\xfd", "Basic ü".encode(), b"Basic " + base64.b64encode(
        "bob:\xff".encode("latin-1")), b"Basic !!!notbase64", b"Bearer abc"):  # fmt: skip
        status, body = raw_get(live, header)
        assert status in (401, 429), (header, status, body[:200])
        assert b"Traceback" not in body
    time.sleep(0.5)  # the log reader thread
    new = "".join(live.log[n_lines:])
    assert "Traceback" not in new and "Error" not in new.replace("auth:", ""), new
    assert len(new.splitlines()) <= 5, new  # at most one line per request
    assert live.alive()
