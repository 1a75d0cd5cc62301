"""Storing uploaded datasets: streamed to disk, validated, then given a name no one else has.

An upload arrives as a byte stream (the request body, never held whole in memory). It is
copied in chunks to a hidden temporary file under ``<folder>/.incoming/``
(:func:`receive_upload`, in the upload request), refused as soon as it passes the size
limit, then checked by a job (:func:`accept_upload`: :mod:`dashboard.backend.untrusted`
reads it in a child process, with progress and cancel like every job), and only then
linked to its final name with an *exclusive* create: two users uploading ``pbmc.h5ad`` at
the same moment get ``pbmc.h5ad`` and ``pbmc-2.h5ad``, each told the name they got;
nothing is ever overwritten. Temporary files are invisible to every listing (hidden
folder) and removed at start-up when left by a crash.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dashboard.backend.errors import DatasetNotFound, LimitExceeded
from dashboard.backend.owner import DATA_SUFFIXES, upload_area
from dashboard.backend.settings import Settings
from dashboard.backend.untrusted import DATASET_READER, QUERY_READER, child_validator

#: Hidden folder (under the upload folder) of uploads still arriving or being checked.
INCOMING = ".incoming"
#: Suffixes an upload may have (the reader picks its format by suffix).
UPLOAD_SUFFIXES = DATA_SUFFIXES
#: Bytes copied per read of the request body.
CHUNK = 1024 * 1024
#: Temporary uploads older than this (seconds) are left by a crash and removed at start.
STALE_AFTER = 3600.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


def safe_upload_name(filename: str | None) -> str:
    """The name an upload is stored under: letters, digits, ``._-`` only, no folder part,
    not hidden; refused (:class:`DatasetNotFound`) without a supported suffix."""
    raw = str(filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    suffix = next((x for x in UPLOAD_SUFFIXES if raw.lower().endswith(x)), None)
    if suffix is None:
        msg = f"{raw or 'upload'}: upload an .h5ad, .h5mu or 10x .h5 file"
        raise DatasetNotFound(msg)
    stem = _SAFE_NAME.sub("_", raw[: -len(suffix)]).strip("._")[:_MAX_NAME] or "upload"
    return stem + suffix.lower()


def megabytes(n: int) -> str:
    """``n`` bytes as megabytes, readable for small limits too (``0.01 MB``)."""
    mb = n / 1024**2
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


@dataclass(frozen=True)
class Incoming:
    """An upload that arrived whole and waits for its check: the hidden temporary file,
    the name it will be stored under, the name the user gave, the folder it goes to."""

    tmp: Path
    name: str
    shown: str
    folder: Path

    def to_dict(self) -> dict[str, str]:
        """JSON form (a job's payload)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incoming:
        """Inverse of :meth:`to_dict`."""
        return cls(Path(d["tmp"]), str(d["name"]), str(d["shown"]), Path(d["folder"]))


def receive_upload(
    stream: BinaryIO | None,
    filename: str | None,
    folder: str | os.PathLike[str],
    *,
    max_bytes: int,
    declared_bytes: int | None = None,
) -> Incoming:
    """Copy ``stream`` to a hidden temporary file under ``folder/.incoming``.

    Parameters
    ----------
    stream
        The upload's bytes (read in :data:`CHUNK` pieces).
    filename
        The name the user gave; made safe by :func:`safe_upload_name`.
    folder
        Where uploads are kept (created if missing).
    max_bytes
        Size limit; a larger upload is refused as soon as it passes it (or before reading
        when ``declared_bytes`` says so), and what arrived is deleted.
    declared_bytes
        The request's Content-Length, when known.

    Returns
    -------
    The arrived upload, for :func:`accept_upload` (run as a job: it reads the file).
    """
    name = safe_upload_name(filename)
    shown = str(filename or name)
    if declared_bytes is not None and declared_bytes > max_bytes:
        msg = f"{shown} is over the upload limit of {megabytes(max_bytes)}"
        raise LimitExceeded(msg)
    if stream is None:
        msg = f"{shown}: no file was sent"
        raise DatasetNotFound(msg)
    folder = Path(folder)
    incoming = folder / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{secrets.token_hex(8)}{Path(name).suffix}"
    try:
        size = 0
        with open(tmp, "xb") as fh:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    msg = f"{shown} is over the upload limit of {megabytes(max_bytes)}"
                    raise LimitExceeded(msg)
                fh.write(chunk)
        if size == 0:
            msg = f"{shown} is empty"
            raise DatasetNotFound(msg)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return Incoming(tmp, name, shown, folder)


def accept_upload(arrived: Incoming, validate: Callable[[Path, str], Any]) -> tuple[Path, Any]:
    """Check an arrived upload and give it its final name; the temporary file goes either way.

    ``validate(temp_path, shown_name)`` reads the file and returns what it read; it raises
    a :class:`~dashboard.backend.errors.BackendError` naming ``shown_name``. Returns the
    final path (never an existing file's) and what ``validate`` returned.
    """
    try:
        data = validate(arrived.tmp, arrived.shown)
        return _link_new_name(arrived.tmp, arrived.folder, arrived.name), data
    finally:
        with contextlib.suppress(FileNotFoundError):
            arrived.tmp.unlink()


def store_upload(
    stream: BinaryIO | None,
    filename: str | None,
    folder: str | os.PathLike[str],
    *,
    max_bytes: int,
    validate: Callable[[Path, str], Any],
    declared_bytes: int | None = None,
) -> tuple[Path, Any]:
    """:func:`receive_upload` then :func:`accept_upload` in one call (tests; the route
    runs the second as a job)."""
    arrived = receive_upload(
        stream, filename, folder, max_bytes=max_bytes, declared_bytes=declared_bytes
    )
    return accept_upload(arrived, validate)


def is_incoming(arrived: Incoming, data_dir: str | os.PathLike[str]) -> bool:
    """Whether ``arrived`` is what :func:`receive_upload` makes under ``data_dir``'s upload
    areas: a temporary file in a hidden incoming folder, stored beside that folder under a
    safe name. A job given a payload (from Redis) reads, links and deletes nothing else."""
    tmp, base = arrived.tmp.resolve(), upload_area(data_dir, None).resolve()
    try:
        safe = safe_upload_name(arrived.name) == arrived.name
    except DatasetNotFound:
        safe = False
    return (
        safe
        and tmp.parent.name == INCOMING
        and tmp.is_relative_to(base)
        and tmp.parent.parent == arrived.folder.resolve()
        and tmp.is_file()
    )


def _link_new_name(tmp: Path, folder: Path, name: str) -> Path:
    """Hard-link ``tmp`` as ``folder/name``, or ``name-2``, ``name-3``, ... : ``os.link``
    fails when the name exists, so a name is taken by exactly one upload."""
    stem, suffix = name[: -len(Path(name).suffix)], Path(name).suffix
    for n in range(1, 10_000):
        final = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        return final
    msg = f"{name}: too many uploads of that name; rename the file"
    raise DatasetNotFound(msg)


def clean_stale_uploads(folder: str | os.PathLike[str], *, older_than: float = STALE_AFTER) -> int:
    """Remove temporary uploads left under ``folder/.incoming`` by a crash; their count.

    Called when the server starts; ``older_than`` spares uploads another server process
    sharing the folder may still be receiving.
    """
    folder = Path(folder)
    incoming = folder / INCOMING
    found = list(incoming.iterdir()) if incoming.is_dir() else []
    if folder.is_dir():  # earlier versions kept them beside the uploads, as .upload-*
        found += [p for p in folder.iterdir() if p.name.startswith(".upload-")]
    removed, now = 0, time.time()
    for p in found:
        with contextlib.suppress(OSError):
            if p.is_file() and now - p.stat().st_mtime >= older_than:
                p.unlink()
                removed += 1
    return removed


#: What an upload may be for (``POST /_upload/<target>``), and the reader that checks it.
UPLOAD_TARGETS = {"dataset": DATASET_READER, "query": QUERY_READER}


def upload_validators(settings: Settings) -> dict[str, Callable[..., Any]]:
    """How an upload is checked, per target: ``dataset`` (a CITE-seq file the Model page
    can train on or load a model for) and ``query`` (new data to map; proteins optional).

    Each reads the whole file as the app will, in a child process with a memory and time
    cap (:mod:`dashboard.backend.untrusted`), and raises one line naming the file as the
    user called it (never the temporary path).
    """
    return {target: child_validator(settings, reader) for target, reader in UPLOAD_TARGETS.items()}
