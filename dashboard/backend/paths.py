"""Confine file names that come from the browser to a configured folder.

The Model page names datasets (the picker, the new-data picker, uploads) and model folders;
those names arrive in callback requests, so anyone who can reach the server can send any
string. :func:`resolve_in_folder` turns such a name into a path inside the folder or refuses
it with one readable line: ``..`` components, absolute paths outside the folder and symlinks
that resolve outside it are refused; symlinks that stay inside are fine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from dashboard.backend.errors import DatasetNotFound


def resolve_in_folder(
    folder: str | os.PathLike[str],
    name: str | os.PathLike[str],
    *,
    what: str = "dataset",
    where: str = "data folder",
    allowed: Iterable[str | os.PathLike[str] | None] = (),
    error: type[Exception] = DatasetNotFound,
) -> Path:
    """``name`` (relative to ``folder``, or an absolute path inside it) as a resolved path.

    ``allowed`` lists exact paths accepted even outside the folder (the dataset the operator
    opened at start-up). Raises ``error`` (default :class:`DatasetNotFound`) naming the
    problem; the file itself need not exist (reading it reports that).
    """
    raw = os.fspath(name).strip() if name is not None else ""
    if not raw:
        msg = f"no {what} given"
        raise error(msg)
    if "\x00" in raw:
        msg = f"{what} name {raw!r} is not a valid file name"
        raise error(msg)
    for ok in allowed:
        if ok is not None and raw == os.fspath(ok):
            return Path(raw)
    base = Path(folder).expanduser().resolve()
    parts = set(PurePosixPath(raw).parts) | set(PureWindowsPath(raw).parts)
    if ".." in parts:
        msg = f"{what} {raw!r} refused: '..' is not allowed; name a file in the {where}"
        raise error(msg)
    path = Path(raw).expanduser()
    if path.is_absolute():
        if not _inside(Path(os.path.normpath(path)), base) and not _inside(path, Path(folder)):
            msg = f"{what} {raw!r} refused: only files in the {where} can be opened"
            raise error(msg)
    else:
        path = base / path
    resolved = path.resolve()
    if not _inside(resolved, base):
        msg = f"{what} {raw!r} refused: it links outside the {where}"
        raise error(msg)
    if any(part.startswith(".") for part in resolved.relative_to(base).parts):
        # temporary files (uploads still arriving or being checked) are never offered
        msg = f"{what} {raw!r} refused: hidden files and folders cannot be opened"
        raise error(msg)
    return resolved


def is_inside(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` resolves (symlinks followed) inside ``folder``."""
    return _inside(Path(path).resolve(), Path(folder).expanduser().resolve())


def _inside(path: Path, base: Path) -> bool:
    return path == base or path.is_relative_to(base)
