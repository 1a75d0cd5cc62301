"""Confine file names that come from the browser to a configured folder.

The Model page names datasets (the picker, the new-data picker, uploads) and model folders;
those names arrive in callback requests, so anyone who can reach the server can send any
string. :func:`resolve_in_folder` turns such a name into a path inside the folder or refuses
it with one readable line: ``..`` components, absolute paths outside the folder and symlinks
that resolve outside it are refused; symlinks that stay inside are fine. Inside a request, a
path in another user's private area (``uploads/<workspace>/``, ``users/<workspace>/``, see
:mod:`dashboard.backend.owner`) is refused as well, and the listings
(:func:`list_datasets`, :func:`list_model_folders`) leave those areas out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from dashboard.backend.errors import DatasetNotFound
from dashboard.backend.owner import DATA_SUFFIXES, current_owner, foreign_area, workspace_id
from model.model_folder import ModelFolder, find_model_folders


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
    if foreign_area(resolved.relative_to(base), current_owner()):
        msg = f"{what} {raw!r} refused: it belongs to another user's workspace"
        raise error(msg)
    return resolved


def shown_path(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` as a list shows it: relative to ``base``, the current owner's private area
    named ``my uploads`` / ``my models`` (not its workspace id), else the path itself."""
    try:
        rel = Path(path).relative_to(base)
    except ValueError:
        return str(path)
    owner = current_owner()
    parts = rel.parts
    if owner is not None and len(parts) > 2 and parts[1] == workspace_id(owner):
        mine = {"uploads": "my uploads", "users": "my models"}.get(parts[0])
        if mine is not None:
            return str(Path(mine, *parts[2:]))
    return str(rel)


def list_datasets(folder: str | os.PathLike[str], *, max_depth: int = 3) -> list[Path]:
    """CITE-seq files (``.h5ad``, ``.h5mu``, 10x ``.h5`` and matrix folders) under
    ``folder`` that the current owner may open: the shared area and their own uploads
    (not the cache and model folders, hidden files, or other users' uploads)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    owner = current_owner()
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in {"cache", "models"}
            and not foreign_area(rel / d, owner)
        )
        if len(rel.parts) >= max_depth:
            dirs[:] = []
        if any(f.startswith("matrix.mtx") for f in files):
            out.append(Path(root))
            dirs[:] = []
            continue
        out += [
            Path(root) / f
            for f in sorted(files)
            if f.lower().endswith(DATA_SUFFIXES) and not f.startswith(".")  # no temp files
        ]
    return out


def list_model_folders(model_dir: str | os.PathLike[str]) -> list[ModelFolder]:
    """The model folders under ``model_dir`` the current owner may load (the shared area
    and the models they trained)."""
    owner = current_owner()
    return [
        folder
        for folder in find_model_folders(model_dir)
        if not in_foreign_area(folder.root or folder.folder, model_dir, owner)
    ]


def in_foreign_area(
    path: str | os.PathLike[str], folder: str | os.PathLike[str], owner: str | None
) -> bool:
    """Whether ``path`` (symlinks followed) lies in another owner's private area of the data
    or model ``folder`` (:func:`~dashboard.backend.owner.foreign_area`); a path outside
    ``folder`` is in none."""
    where, base = Path(path).resolve(), Path(folder).expanduser().resolve()
    return where.is_relative_to(base) and foreign_area(where.relative_to(base), owner)


def is_inside(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` resolves (symlinks followed) inside ``folder``."""
    return _inside(Path(path).resolve(), Path(folder).expanduser().resolve())


def _inside(path: Path, base: Path) -> bool:
    return path == base or path.is_relative_to(base)
