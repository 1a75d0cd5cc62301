"""Server paths as the browser may see them: never absolute.

:func:`scrub_paths` rewrites every absolute path in a message: one under a configured
folder (``data_dir``, ``model_dir``, ``cache_dir``, the repository) becomes its name relative
to that folder (``uploads/x.h5ad``, ``models/pbmc10k``), any other its last component. The
view layer applies it to what it renders from messages (``components.alert``, table values).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

#: The repository (the embedded default data and model live under it).
ROOT = Path(__file__).resolve().parents[1]
#: An absolute POSIX path in running text: starts with ``/`` not inside a word or a URL
#: (``http://host/x``; after a colon otherwise, as in ``key:/etc/x``, it is a path), runs
#: to white space, a quote or closing punctuation.
_ABSOLUTE = re.compile(r"(?<![\w.~\-/])(?:(?<!:)|(?<=:)(?!//))/[^\s'\"`<>|,;:()\[\]{}]*")


def configured_roots() -> list[Path]:
    """The folders of the running service's settings, and the repository."""
    from dashboard import backend

    roots = [ROOT]
    service = getattr(backend, "_service", None)  # (get_service would build one)
    settings = getattr(service, "settings", None)
    if settings is None:  # no service yet: the repository only
        return roots
    for name in ("data_dir", "model_dir", "cache_dir"):
        folder = getattr(settings, name, None)
        if folder:
            roots.append(Path(folder))
    return roots


def scrub_paths(text: str, roots: Iterable[str | os.PathLike[str]] | None = None) -> str:
    """``text`` with each absolute path made relative to the deepest of ``roots`` holding
    it (default :func:`configured_roots`), or cut to its last component."""
    if "/" not in text:
        return text
    bases: set[str] = set()
    for root in configured_roots() if roots is None else roots:
        root = Path(root)
        bases.add(str(root).rstrip("/"))
        with contextlib.suppress(OSError):
            bases.add(str(root.resolve()).rstrip("/"))
    ordered = sorted((b for b in bases if b), key=len, reverse=True)

    def public(match: re.Match[str]) -> str:
        path = match.group(0)
        trail = path[len(path.rstrip(".")) :]  # a sentence's full stop
        path = path[: len(path) - len(trail)]
        for base in ordered:
            if path.startswith(base + "/") and len(path) > len(base) + 1:
                return path[len(base) + 1 :] + trail
            if path == base:
                return (Path(base).name or path) + trail
        if path == "/":
            return path + trail
        return (path.rstrip("/").rsplit("/", 1)[-1] or path) + trail

    return _ABSOLUTE.sub(public, text)
