"""Who is asking: the owner of a request, its workspace folder name and private areas.

Many biologists share one server; each works in a *workspace* named after its owner (the
basic-auth user, or the browser session when auth is off). The web layer sets the owner of
the request being served (:func:`acting_as`); the backend reads it (:func:`current_owner`)
to record who started a job, to keep renamed cell types per workspace and to confine files
to their owner's area. Outside a request (CLI, jobs on worker threads, Celery workers) there
is no owner and nothing is filtered: those run what a request already allowed.

Files a user uploads live in ``<data_dir>/uploads/<workspace>/`` and models they train in
``<model_dir>/users/<workspace>/``; everything else in ``data_dir`` and ``model_dir`` is the
shared area the admin fills (read-only to the app: it never writes there).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

#: The file kinds datasets come as (10x matrix folders aside): listed, uploaded, and a file
#: of one of them directly in ``uploads/`` is shared rather than a workspace's.
DATA_SUFFIXES = (".h5ad", ".h5mu", ".h5")
#: Folder of each owner's private area: under ``data_dir`` (uploads), under ``model_dir``.
PRIVATE_FOLDERS = ("uploads", "users")
#: The owner of the request being served (``None``: no request, nothing is filtered).
_OWNER: ContextVar[str | None] = ContextVar("totalvi_explorer_owner", default=None)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


def current_owner() -> str | None:
    """The owner of the request this code serves, or ``None`` outside a request."""
    return _OWNER.get()


def set_owner(owner: str | None) -> object:
    """Make ``owner`` current in this context; returns a token for :func:`reset_owner`."""
    return _OWNER.set(owner)


def reset_owner(token: object) -> None:
    """Undo :func:`set_owner` (the web layer does it when the request ends)."""
    _OWNER.reset(token)  # type: ignore[arg-type]


@contextmanager
def acting_as(owner: str | None) -> Iterator[None]:
    """Run the block as ``owner`` (tests, benchmarks, jobs run on an owner's behalf)."""
    token = _OWNER.set(owner)
    try:
        yield
    finally:
        _OWNER.reset(token)


def workspace_id(owner: str) -> str:
    """A folder-safe, stable name of ``owner``'s workspace.

    A user name made of letters, digits and ``_.@-`` is kept readable (``u-alice``);
    anything else, and session tokens (``s:...``, secrets), becomes a hash.
    """
    if owner.startswith("s:"):
        return "s-" + hashlib.sha256(owner.encode()).hexdigest()[:24]
    if _SAFE_NAME.fullmatch(owner):
        return f"u-{owner}"
    return "h-" + hashlib.sha256(owner.encode()).hexdigest()[:24]


def upload_area(data_dir: str | Path, owner: str | None) -> Path:
    """Where ``owner``'s uploads are stored (``<data_dir>/uploads/<workspace>``)."""
    base = Path(data_dir) / PRIVATE_FOLDERS[0]
    return base / workspace_id(owner) if owner is not None else base


def model_area(model_dir: str | Path, owner: str | None) -> Path:
    """Where ``owner``'s trained models go (``<model_dir>/users/<workspace>``)."""
    return (
        Path(model_dir)
        / PRIVATE_FOLDERS[1]
        / (workspace_id(owner) if owner is not None else "local")
    )


def foreign_area(relative: Path, owner: str | None) -> bool:
    """True if ``relative`` (a path relative to a data or model folder) lies in another
    owner's private area (``uploads/<ws>/...`` or ``users/<ws>/...`` not of ``owner``).

    Without an owner nothing is foreign. Files directly in ``uploads/`` (no workspace
    folder: stored before workspaces existed, or by the CLI) are shared.
    """
    if owner is None:
        return False
    parts = relative.parts
    if len(parts) < 2 or parts[0] not in PRIVATE_FOLDERS:
        return False
    if len(parts) == 2 and parts[1].lower().endswith(DATA_SUFFIXES):
        return False  # a file in uploads/ itself
    return parts[1] != workspace_id(owner)
