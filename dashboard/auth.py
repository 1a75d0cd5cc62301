"""Optional HTTP basic auth for the whole app, from a credentials file.

The file holds one ``user:hash`` line per user (blank lines and ``#`` comments ignored);
hashes are werkzeug's ``generate_password_hash`` strings (``scrypt:…`` or ``pbkdf2:…``).
``totalvi-explorer passwd FILE USER`` adds or updates a user. When configured, a Flask
``before_request`` hook checks every request (pages, ``/_dash-*`` endpoints, assets): a
missing, malformed or wrong password gets ``401`` with ``WWW-Authenticate``. Neither
passwords nor hashes are ever logged.

Wrong passwords cannot take the server down: each costs a scrypt verification (~0.3 s), so

* failures are counted per client address (as waitress gives it, behind a trusted proxy
  the forwarded one) and per known user name; after :data:`MAX_FAILURES` the client or user
  is answered ``429`` with ``Retry-After`` without running scrypt, for a delay doubling
  from :data:`BASE_DELAY_S` up to :data:`MAX_DELAY_S` (:class:`FailureLimiter`, at most
  :data:`MAX_TRACKED` keys each);
* at most :data:`MAX_CONCURRENT_VERIFICATIONS` scrypt checks run at once; a request that
  finds them all busy gets ``503`` with ``Retry-After`` at once (waitress threads stay free);
* a verified (user, password) pair is remembered as a keyed digest for
  :data:`SUCCESS_TTL_S` after its last use (forgotten when the file changes), and such a
  pair bypasses every limit: a user whose name is being guessed elsewhere still gets in.
  So does a client that has logged in as that user before (per-user limit only).

Basic auth sends the password with every request: serve it only over HTTPS (for example
behind nginx with TLS, see the README).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hmac
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)

REALM = "TotalVI Explorer"
_USER = re.compile(r"^[^:\s]+$")
_METHODS = ("scrypt:", "pbkdf2:")

#: Passwords shorter than this are refused by :func:`set_password` (``passwd``).
MIN_PASSWORD_LENGTH = 8
#: Failed logins of one client address (or one user name) before it must wait.
MAX_FAILURES = 5
#: The first wait after :data:`MAX_FAILURES` failures; doubles with each further failure.
BASE_DELAY_S = 2.0
#: The longest wait.
MAX_DELAY_S = 300.0
#: A key with no failure for this long starts afresh.
FORGET_AFTER_S = 900.0
#: Client addresses (and, separately, user names) tracked at most (least recent dropped).
MAX_TRACKED = 10_000
#: scrypt verifications running at once; more get ``503`` without waiting.
MAX_CONCURRENT_VERIFICATIONS = 2
#: How long a verified pair is remembered after its last use.
SUCCESS_TTL_S = 300.0
#: Verified pairs remembered at most.
MAX_REMEMBERED = 1024
#: How long a (user, client) pair that logged in stays exempt from the per-user limit.
TRUSTED_CLIENT_S = 7 * 24 * 3600.0


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
    if len(password or "") < MIN_PASSWORD_LENGTH:
        msg = f"the password must have at least {MIN_PASSWORD_LENGTH} characters; nothing changed"
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


class Outcome(enum.Enum):
    """What :meth:`BasicAuth.verify` decided for one request."""

    OK = "ok"
    DENIED = "denied"  # wrong user or password (scrypt ran): 401
    LIMITED = "limited"  # too many failures for this client or user (no scrypt): 429
    BUSY = "busy"  # every verification slot is taken (no scrypt): 503


class _LRU(OrderedDict):  # type: ignore[type-arg]
    """An ``OrderedDict`` that forgets its least recently set entries beyond ``cap``."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def put(self, key: object, value: object) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


@dataclass(kw_only=True, eq=False)
class FailureLimiter:
    """Exponential back-off on failed logins per key (a client address or a user name).

    After :data:`MAX_FAILURES` failures a key is refused for :data:`BASE_DELAY_S` seconds,
    doubling with each further failure up to :data:`MAX_DELAY_S`; a key with no failure for
    :data:`FORGET_AFTER_S` starts afresh. At most ``cap`` keys are tracked (LRU).
    """

    max_failures: int = MAX_FAILURES
    base_delay: float = BASE_DELAY_S
    max_delay: float = MAX_DELAY_S
    forget_after: float = FORGET_AFTER_S
    cap: InitVar[int] = MAX_TRACKED

    def __post_init__(self, cap: int) -> None:
        self._failures = _LRU(cap)  # key -> (count, time of the last failure)
        self._lock = threading.Lock()

    def retry_after(self, key: object, now: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            n, last = self._failures.get(key, (0, 0.0))
        if n < self.max_failures or now - last > self.forget_after:
            return 0.0
        return max(0.0, last + self._delay(n) - now)

    def failed(self, key: object, now: float) -> bool:
        """Count a failure; ``True`` when it (newly) makes ``key`` wait."""
        with self._lock:
            n, last = self._failures.get(key, (0, 0.0))
            n = 1 if now - last > self.forget_after else n + 1
            self._failures.put(key, (n, now))
        return n >= self.max_failures

    def forget(self, key: object) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _delay(self, n: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** min(n - self.max_failures, 32))

    def __len__(self) -> int:
        return len(self._failures)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header, else ``None``.

    ``None`` for anything malformed: another scheme, non-ASCII bytes, bad base64, bytes that
    are not UTF-8, no ``:``, an empty user name (never raises).
    """
    if not header:
        return None
    scheme, _, data = header.strip().partition(" ")
    if scheme.lower() != "basic" or not data.isascii():
        return None
    try:
        decoded = base64.b64decode(data.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


class BasicAuth:
    """Checks ``Authorization: Basic`` against a credentials file, re-read when it changes
    (so ``passwd`` takes effect without a restart), with the limits of the module docstring.

    ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent: int = MAX_CONCURRENT_VERIFICATIONS,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._mtime: tuple[int, int, int] | None = None
        self._users = read_credentials(self.path)  # fail at start-up, not on a request
        self._mtime = self._stat()
        # a dummy hash so unknown users cost as much time as known ones
        from werkzeug.security import generate_password_hash

        self._dummy = generate_password_hash("not-a-password", method="scrypt")
        self._key = os.urandom(32)
        self._verified = _LRU(MAX_REMEMBERED)  # digest -> (hash, expiry)
        self._trusted = _LRU(MAX_TRACKED)  # (user, client) -> expiry
        self.clients = FailureLimiter()
        self.user_names = FailureLimiter()
        self._slots = threading.BoundedSemaphore(max_concurrent)

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
                self._verified.clear()
        return self._users

    def check(self, user: str | None, password: str | None, client: str = "") -> bool:
        """Whether ``password`` is ``user``'s (limits included: see :meth:`verify`)."""
        return self.verify(user, password, client)[0] is Outcome.OK

    def verify(
        self, user: str | None, password: str | None, client: str = ""
    ) -> tuple[Outcome, float]:
        """The outcome for ``user``/``password`` from ``client``, and the seconds to wait
        (for ``LIMITED`` and ``BUSY``). A verified pair is remembered (as a keyed digest,
        in memory only) so the browser's many requests do not each pay for scrypt."""
        from werkzeug.security import check_password_hash

        if not user or password is None:
            return Outcome.DENIED, 0.0
        hashed = self.users().get(user)
        token = hmac.digest(self._key, f"{user}\0{password}".encode(), "sha256")
        now = self.clock()
        with self._lock:
            seen = self._verified.get(token)
            if hashed is not None and seen is not None and seen[0] == hashed and seen[1] > now:
                self._verified.put(token, (hashed, now + SUCCESS_TTL_S))
                return Outcome.OK, 0.0
        wait = self.clients.retry_after(client, now)
        if hashed is not None and not self._is_trusted(user, client, now):
            wait = max(wait, self.user_names.retry_after(user, now))
        if wait > 0:
            return Outcome.LIMITED, wait
        if not self._slots.acquire(blocking=False):
            return Outcome.BUSY, 1.0
        try:
            ok = check_password_hash(hashed or self._dummy, password)
        finally:
            self._slots.release()
        now = self.clock()
        if ok and hashed is not None:
            with self._lock:
                self._verified.put(token, (hashed, now + SUCCESS_TTL_S))
                self._trusted.put((user, client), now + TRUSTED_CLIENT_S)
            self.clients.forget(client)  # not the user's count: others may be guessing it
            return Outcome.OK, 0.0
        if self.clients.failed(client, now):
            log.warning("auth: %s failed logins from %s; it must wait", MAX_FAILURES, client)
        if hashed is not None and self.user_names.failed(user, now):  # known users only
            log.warning("auth: %s failed logins for one user; it must wait", MAX_FAILURES)
        return Outcome.DENIED, 0.0

    def _is_trusted(self, user: str, client: str, now: float) -> bool:
        with self._lock:
            return self._trusted.get((user, client), 0.0) > now

    def before_request(self) -> Response | None:
        from flask import g, request

        client = request.remote_addr or ""
        header = request.headers.get("Authorization")
        if header is None:
            return _refusal(401)
        creds = parse_basic(header)
        if creds is None:  # one line, no traceback, nothing of the header
            where = request.path
            log.warning("auth: malformed Authorization header for %s from %s", where, client)
            return _refusal(401)
        outcome, wait = self.verify(*creds, client)
        if outcome is Outcome.OK:
            g.totalvi_user = creds[0]  # whose workspace this request serves
            return None
        if outcome is Outcome.DENIED:  # the user name is not logged: it may be a password
            log.warning("auth: wrong credentials for %s from %s", request.path, client)
            return _refusal(401)
        return _refusal(429 if outcome is Outcome.LIMITED else 503, wait)


def _refusal(status: int, wait: float = 0.0) -> Response:
    from flask import Response

    text = {
        401: "Authentication required.",
        429: "Too many failed logins; try again later.",
        503: "Busy checking passwords; try again in a moment.",
    }[status]
    headers = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
    if status != 401:
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
    return Response(text + "\n", status=status, headers=headers, mimetype="text/plain")


def install_basic_auth(server: Flask, path: str | os.PathLike[str]) -> BasicAuth:
    """Require basic auth on every route of ``server`` (Dash's Flask app)."""
    auth = BasicAuth(path)
    # first in line: before Dash's own hooks, so nothing runs for a refused request
    server.before_request_funcs.setdefault(None, []).insert(0, auth.before_request)
    server.config["TOTALVI_AUTH"] = auth
    return auth
