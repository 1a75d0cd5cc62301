"""The errors pages catch (the backend's, and :class:`NotReady`), and how one is shown in
one line."""

from __future__ import annotations

from dashboard.backend.errors import BackendError, DatasetNotFound, InvalidSelection, ModelNotFound

__all__ = [
    "BackendError",
    "DatasetNotFound",
    "InvalidSelection",
    "ModelNotFound",
    "NotReady",
    "one_line",
]


class NotReady(BackendError):
    """No active pair yet (preparing, or none loaded); the message says which."""


def one_line(text: str) -> str:
    """An error as one line: a traceback's last line (the exception; the rest stays in the
    server log), otherwise the whole message with its line breaks folded."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        lines = lines[-1:]
    return " ".join(" ".join(lines).split())
