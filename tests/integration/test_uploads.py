"""Uploads: streamed to disk in chunks, validated, stored under a name no other upload has;
temporary files are never listed or opened, and are removed at start-up."""

from __future__ import annotations

import io
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from dashboard.backend.errors import BackendError, DatasetNotFound, LimitExceeded
from dashboard.backend.paths import list_datasets, resolve_in_folder
from dashboard.backend.uploads import (
    INCOMING,
    clean_stale_uploads,
    safe_upload_name,
    store_upload,
)


def accept(path: Path, shown: str) -> int:
    return path.stat().st_size


def test_same_name_uploads_never_replace_each_other(tmp_path) -> None:
    first, _ = store_upload(io.BytesIO(b"first"), "pbmc.h5ad", tmp_path, max_bytes=100,
                            validate=accept)  # fmt: skip
    second, _ = store_upload(io.BytesIO(b"second"), "pbmc.h5ad", tmp_path, max_bytes=100,
                             validate=accept)  # fmt: skip
    assert (first.name, second.name) == ("pbmc.h5ad", "pbmc-2.h5ad")
    assert first.read_bytes() == b"first" and second.read_bytes() == b"second"


def test_concurrent_same_name_uploads_each_keep_their_file(tmp_path) -> None:
    n = 12
    barrier = threading.Barrier(n)
    got: dict[int, Path] = {}

    def slow_validate(path: Path, shown: str) -> None:
        barrier.wait(timeout=10)  # every upload is checked before any is named
        time.sleep(0.01)

    def one(k: int) -> None:
        body = io.BytesIO(f"upload {k}".encode())
        got[k], _ = store_upload(body, "same.h5ad", tmp_path, max_bytes=100,
                                 validate=slow_validate)  # fmt: skip

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in got.values()}) == n  # n different names
    for k, p in got.items():
        assert p.read_bytes() == f"upload {k}".encode()  # each user's own bytes
    assert not list((tmp_path / INCOMING).iterdir())  # no temporary file left


def test_an_upload_over_the_limit_stops_while_arriving(tmp_path) -> None:
    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self.sent += n
            return b"x" * n

    body = Endless()
    with pytest.raises(LimitExceeded, match="over the upload limit of 3 MB"):
        store_upload(body, "big.h5ad", tmp_path, max_bytes=3 * 1024**2, validate=accept)
    assert body.sent <= 4 * 1024**2  # read no further than the limit + one chunk
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with pytest.raises(LimitExceeded):  # declared too large: refused unread
        store_upload(None, "big.h5ad", tmp_path, max_bytes=10, validate=accept,
                     declared_bytes=11)  # fmt: skip


def test_streaming_holds_one_chunk_not_the_file(tmp_path) -> None:
    body = io.BytesIO(os.urandom(48 * 1024**2))
    tracemalloc.start()
    path, _ = store_upload(body, "x.h5ad", tmp_path, max_bytes=64 * 1024**2, validate=accept)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert path.stat().st_size == 48 * 1024**2
    assert peak < 4 * 1024**2, peak  # about one 1 MB chunk at a time


@pytest.mark.parametrize(
    ("given", "stored"),
    [("../../etc/x.h5ad", "x.h5ad"), ("C:\\\\u\\\\a b.H5AD", "a_b.h5ad"),
     (".hidden.h5mu", "hidden.h5mu"), ("ü.h5", "upload.h5")],
)  # fmt: skip
def test_upload_names_are_plain_and_visible(given: str, stored: str) -> None:
    assert safe_upload_name(given) == stored
    with pytest.raises(DatasetNotFound, match=r"upload an \.h5ad"):
        safe_upload_name("notes.txt")


def test_temporary_files_are_never_listed_or_opened_and_are_cleaned(tmp_path) -> None:
    uploads = tmp_path / "uploads"
    (uploads / INCOMING).mkdir(parents=True)
    stale = uploads / INCOMING / "0123abcd.h5ad"
    legacy = uploads / ".upload-x1y2.h5ad"  # what earlier versions left beside uploads
    fresh = uploads / INCOMING / "feedbeef.h5ad"  # another process is receiving it now
    for p in (stale, legacy, fresh):
        p.write_bytes(b"half an upload")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    os.utime(legacy, (old, old))
    (uploads / "real.h5ad").write_bytes(b"stored")
    listed = list_datasets(tmp_path)
    assert listed == [uploads / "real.h5ad"]
    for p in (stale, legacy):
        with pytest.raises(BackendError, match="hidden"):
            resolve_in_folder(tmp_path, str(p.relative_to(tmp_path)))
    assert clean_stale_uploads(uploads) == 2
    assert not stale.exists() and not legacy.exists() and fresh.exists()
