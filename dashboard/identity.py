"""Whose workspace a request serves: the basic-auth user, else the browser session.

:func:`install_identity` adds Flask hooks that make the request's owner current for the
backend (:func:`dashboard.backend.owner.set_owner`) while it is served: the user name that
:mod:`dashboard.auth` verified, or, when auth is off, a random session token kept in an
``HttpOnly`` cookie (minted on the first request of a browser). A cookie that is not a token
we could have minted is replaced by a new one, never used as a name.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from typing import TYPE_CHECKING

from dashboard.backend.owner import reset_owner, set_owner

if TYPE_CHECKING:
    from flask import Flask, Response

#: The session cookie (auth off) naming the browser's workspace.
COOKIE = "tve_workspace"
#: Seconds the cookie is kept by the browser (a year: the workspace outlives the tab).
COOKIE_MAX_AGE = 365 * 24 * 3600
_TOKEN = re.compile(r"[0-9a-f]{32}")


def request_owner() -> str:
    """The owner of the Flask request being served (minting a session token if needed)."""
    from flask import g, request

    user = g.get("totalvi_user")
    if user:
        return str(user)
    token = request.cookies.get(COOKIE, "")
    if not _TOKEN.fullmatch(token):
        token = secrets.token_hex(16)
        g.totalvi_new_session = token
    return f"s:{token}"


def install_identity(server: Flask) -> None:
    """Serve every request of ``server`` as its owner (see the module docstring)."""
    from flask import g, request

    def begin() -> None:
        g.totalvi_owner_token = set_owner(request_owner())

    def end(response: Response) -> Response:
        token = g.get("totalvi_new_session")
        if token:
            response.set_cookie(
                COOKIE,
                token,
                max_age=COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure,
                path="/",
            )
        return response

    def teardown(_err: BaseException | None) -> None:
        token = g.pop("totalvi_owner_token", None)
        if token is not None:
            with contextlib.suppress(ValueError):  # set in another context: nothing to undo
                reset_owner(token)

    server.before_request(begin)
    server.after_request(end)
    server.teardown_request(teardown)
