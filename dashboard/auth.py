"""Optional HTTP basic auth for the whole app, from a credentials file.

The file holds one ``user:hash`` line per user (blank lines and ``#`` comments ignored);
hashes are werkzeug's ``generate_password_hash`` strings (``scrypt:…`` or ``pbkdf2:…``).
``totalvi-explorer passwd FILE USER`` adds or updates a user. When configured, a Flask
``before_request`` hook checks every request (pages, ``/_dash-*`` endpoints, assets): a
missing or wrong password gets ``401`` with ``WWW-Authenticate``. Neither passwords nor
hashes are ever logged.

Basic auth sends the password with every request: serve it only over HTTPS (for example
behind nginx with TLS, see the README).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)

REALM = "TotalVI Explorer"
_USER = re.compile(r"^[^:\s]+$")
_METHODS = ("scrypt:", "pbkdf2:")


class CredentialsError(ValueError):
    """The credentials file is missing or malformed (the message names the file and line)."""


def check_username(user: str) -> str:
    """A user name is non-empty, without ``:`` or whitespace."""
    if not _USER.match(user or ""):
        msg = f"user name {user!r} must be non-empty, without ':' or spaces"
        raise CredentialsError(msg)
    return user


def read_credentials(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{user: hash}`` from a credentials file; raises :class:`CredentialsError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{path}: credentials file not found (create it with `totalvi-explorer passwd`)"
        raise CredentialsError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read the credentials file ({type(err).__name__})"
        raise CredentialsError(msg) from None
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not _USER.match(user) or not hashed.startswith(_METHODS):
            # never echo the line: it holds a hash
            msg = (
                f"{path}, line {n}: expected 'user:hash' with a werkzeug scrypt or pbkdf2 "
                "hash (use `totalvi-explorer passwd`)"
            )
            raise CredentialsError(msg)
        users[user] = hashed
    return users


def set_password(path: str | os.PathLike[str], user: str, password: str) -> bool:
    """Add or update ``user`` in the credentials file (created if missing), atomically and
    with mode 0600. Returns ``True`` when the user was new."""
    from werkzeug.security import generate_password_hash

    check_username(user)
    if not password:
        msg = "the password must not be empty"
        raise CredentialsError(msg)
    path = Path(path)
    users = read_credentials(path) if path.exists() else {}
    new = user not in users
    users[user] = generate_password_hash(password, method="scrypt")
    body = "".join(f"{u}:{h}\n" for u, h in users.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    return new


class BasicAuth:
    """Checks ``Authorization: Basic`` against a credentials file, re-read when it changes
    (so ``passwd`` takes effect without a restart)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: tuple[int, int, int] | None = None
        self._users = read_credentials(self.path)  # fail at start-up, not on a request
        self._mtime = self._stat()
        # a dummy hash so unknown users cost as much time as known ones
        from werkzeug.security import generate_password_hash

        self._dummy = generate_password_hash("not-a-password", method="scrypt")
        self._key = os.urandom(32)
        self._verified: dict[bytes, str] = {}

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)  # passwd replaces the file

    def users(self) -> dict[str, str]:
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._users = read_credentials(self.path)
                except CredentialsError as err:
                    log.error("auth: %s; refusing every request until it is fixed", err)
                    self._users = {}
                self._mtime = mtime
        return self._users

    def check(self, user: str | None, password: str | None) -> bool:
        """Whether ``password`` is ``user``'s. A verified pair is remembered (as a keyed
        digest, in memory only) so the browser's many requests do not each pay for scrypt."""
        from werkzeug.security import check_password_hash

        if not user or password is None:
            return False
        hashed = self.users().get(user)
        token = hmac.digest(self._key, f"{user}\0{password}".encode(), "sha256")
        if hashed is not None and self._verified.get(token) == hashed:
            return True
        ok = check_password_hash(hashed or self._dummy, password)
        if ok and hashed is not None:
            with self._lock:
                if len(self._verified) >= 256:
                    self._verified.clear()
                self._verified[token] = hashed
            return True
        return False

    def before_request(self) -> Response | None:
        from flask import Response, request

        auth = request.authorization
        if auth is not None and auth.type == "basic" and self.check(auth.username, auth.password):
            return None
        if auth is not None:  # the user name is not logged: it may be a mistyped password
            where = request.remote_addr
            log.warning("auth: wrong credentials for %s from %s", request.path, where)
        return Response(
            "Authentication required.\n",
            status=401,
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            mimetype="text/plain",
        )


def install_basic_auth(server: Flask, path: str | os.PathLike[str]) -> BasicAuth:
    """Require basic auth on every route of ``server`` (Dash's Flask app)."""
    auth = BasicAuth(path)
    # first in line: before Dash's own hooks, so nothing runs for a refused request
    server.before_request_funcs.setdefault(None, []).insert(0, auth.before_request)
    server.config["TOTALVI_AUTH"] = auth
    return auth
