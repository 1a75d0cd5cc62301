"""HTTP hardening of the Flask server under Dash: security headers on every response, a
guard on request bodies before Flask or Dash parse them, and a plain ``500``.

* Every response (pages, callbacks, assets, ``401``/``429``/``400``/``404``/``500``) gets
  :data:`SECURITY_HEADERS` and a Content-Security-Policy (:func:`content_security_policy`)
  whose ``script-src`` allows Dash's inline scripts by hash (``app.csp_hashes()``).
* A POST/PUT/PATCH body over ``max_body_bytes`` gets ``413`` unread; a body that is not UTF-8,
  does not start as a JSON object or array, or nests deeper than :data:`MAX_JSON_DEPTH`
  gets ``400`` with one line, before Flask's JSON parser could recurse (a ``[[[…]]]`` body
  100,000 deep raised ``RecursionError`` there). The depth scan skips string contents and
  runs in C/numpy, so a large body (long strings) costs one regex pass.
* An unhandled exception answers ``500`` with one plain line; the traceback stays in the
  server log (Dash only sends tracebacks to the browser with ``debug=True``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dash import Dash
    from flask import Response

log = logging.getLogger(__name__)

#: Deepest JSON nesting accepted in a request body. Dash's own payloads stay far below
#: (a callback with pattern-matching ids carrying a figure: ~10; see the browser test).
MAX_JSON_DEPTH = 64
#: Largest callback body (a selection of 200,000 cell positions is ~1.4 MB of JSON).
CALLBACK_BODY_BYTES = 32 * 1024**2
#: Sent with every response (the CSP is added per app: it holds the script hashes).
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON_START = re.compile(rb"[ \t\r\n]*[\[{]")
_STRING = re.compile(rb'"[^"]*"')  # a JSON string once escapes are gone
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_CHUNK = 1 << 22


def content_security_policy(script_hashes: Iterable[str] = (), *, allow_eval: bool = True) -> str:
    """The CSP for the app: ``'self'`` everywhere, Dash's inline scripts by hash (no other
    inline script runs), inline styles (plotly sets them), ``data:``/``blob:`` images and
    workers (figure downloads, WebGL), no framing.

    ``allow_eval``: ``'unsafe-eval'`` in ``script-src``, which the WebGL traces need (the
    UMAPs' ``scattergl``: plotly.js's regl compiles its draw calls with ``Function``; the
    ``plotly-strict`` bundle that does not is not shipped with the plotly package).
    """
    script = ["'self'", *(["'unsafe-eval'"] if allow_eval else []), *script_hashes]
    directives = {
        "default-src": ["'self'"],
        "script-src": script,
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{k} {' '.join(v)}" for k, v in directives.items())


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of the JSON ``body`` (brackets outside strings), stopping early
    once it passes ``limit`` (then some value over ``limit``); ``-1`` when a bracket closes
    more than was opened."""
    # escapes first (backslash pairs, then escaped quotes), then every byte but brackets
    # and quotes (C speed: a large upload's base64 is gone), then the strings
    if b"\\" in body:  # (memchr: fast when there is none, as in an upload's base64)
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_STRUCTURE)
    structure = _STRING.sub(b"", kept).replace(b'"', b"")
    opens = np.frombuffer(structure, dtype=np.uint8)
    deepest, level = 0, 0
    for start in range(0, len(opens), _CHUNK):
        chunk = opens[start : start + _CHUNK]
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1).astype(np.int64)
        levels = level + np.cumsum(steps)
        if levels.min() < 0:
            return -1
        deepest = max(deepest, int(levels.max()))
        if deepest > limit:
            return deepest
        level = int(levels[-1])
    return deepest


def body_problem(body: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``body`` is refused as a JSON request body (one line), else ``None``."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "the request body is not UTF-8"
    if not _JSON_START.match(body):
        return "the request body is not a JSON object or array"
    depth = json_depth(body, limit)
    if depth < 0:
        return "the request body is not valid JSON"
    if depth > limit:
        return f"the request body nests deeper than {limit} levels"
    return None


def install_http_guard(
    app: Dash,
    *,
    max_body_bytes: int,
    max_depth: int = MAX_JSON_DEPTH,
    raw_body_paths: Iterable[str] = (),
) -> None:
    """Add the headers, the body guard and the plain ``500`` to ``app``'s Flask server.

    Install it before :func:`dashboard.auth.install_basic_auth` (which puts itself first,
    so a refused request's body is never read). ``raw_body_paths``: path prefixes whose
    bodies are not JSON (the streaming upload route, which bounds its own size) are let
    through.
    """
    from flask import request
    from werkzeug.exceptions import InternalServerError

    server = app.server
    server.config["MAX_CONTENT_LENGTH"] = max_body_bytes  # also bounds chunked bodies
    raw = tuple(raw_body_paths)
    csp = _CspCache(app)

    def guard_body() -> Response | None:
        if request.method not in _BODY_METHODS:
            return None
        if raw and request.path.startswith(raw):
            return None  # a streaming route: it bounds its body itself, reading in chunks
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return _one_line(413, f"the request body is over {max_body_bytes} bytes")
        problem = body_problem(request.get_data(cache=True), max_depth)  # Flask reuses it
        if problem is None:
            return None
        log.warning("request: %s (%s from %s)", problem, request.path, request.remote_addr)
        return _one_line(400, problem)

    def add_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Security-Policy"] = csp.policy()
        return response

    def plain_500(_err: Exception) -> Response:
        return _one_line(500, "internal server error (the details are in the server log)")

    server.before_request_funcs.setdefault(None, []).insert(0, guard_body)
    server.after_request(add_headers)
    server.register_error_handler(InternalServerError, plain_500)


class _CspCache:
    """The app's CSP, recomputed only when Dash's inline scripts change."""

    def __init__(self, app: Dash) -> None:
        self.app = app
        self._key: tuple[int, int, int] | None = None
        self._policy = ""

    def policy(self) -> str:
        from dash import _callback

        app = self.app
        key = (len(app._inline_scripts), len(_callback.GLOBAL_INLINE_SCRIPTS), hash(app.renderer))
        if key != self._key:
            self._policy = content_security_policy(app.csp_hashes())
            self._key = key
        return self._policy


def _one_line(status: int, text: str) -> Response:
    from flask import Response

    return Response(text + "\n", status=status, mimetype="text/plain")
