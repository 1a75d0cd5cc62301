"""Crafted uploads against a live server: no read outside the file, no crash, bounded
memory, one readable line, nothing stored, and same-name uploads that never overwrite."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dashboard.testing_live import ATTACKS, SECRET, UPLOAD_LIMIT_MB, USER, Live, secret_h5

MB = 1024**2


@pytest.fixture(scope="module")
def files(live: Live, tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    work = tmp_path_factory.mktemp("crafted")
    secret = secret_h5(live.secret.parent / "secret.h5", SECRET)
    good = live.data_dir / "small.h5ad"
    return {
        name: (build(good, secret, work / f"{name}.h5ad"), word)
        for name, (build, word) in ATTACKS.items()
    }


def stored_uploads(live: Live) -> list[Path]:
    folder = live.data_dir / "uploads"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("target", ["dataset", "query"])
def test_crafted_upload_is_refused_in_one_line(live: Live, files, attack: str, target) -> None:
    raw, word = files[attack]
    before, rss0 = stored_uploads(live), live.rss()
    line = live.upload_message(raw, f"{attack}.h5ad", target)
    assert line.startswith(f"{attack}.h5ad: "), line  # names the file as the user called it
    assert word in line and "Nothing was stored" in line, line
    assert SECRET not in line and str(live.root) not in line and "Traceback" not in line
    assert "\n" not in line
    assert live.alive()  # the server still answers
    assert stored_uploads(live) == before  # nothing stored, no temp file left behind
    assert live.rss() - rss0 < 300 * MB


def test_nothing_outside_the_folders_reached_the_browser_or_the_log(live: Live, files) -> None:
    for raw, _ in files.values():
        live.upload(raw, "again.h5ad")
    assert SECRET not in live.log_text()


def test_upload_at_the_limit_is_streamed_not_held(live: Live) -> None:
    """A body of exactly the upload limit (not a valid file): refused after reading it,
    with the server's memory grown by far less than the file (it goes to disk in chunks)."""
    raw = b"\x89HDF\r\n\x1a\n" + os.urandom(UPLOAD_LIMIT_MB * MB - 8)
    rss0 = live.rss()
    line = live.upload_message(raw, "limit.h5ad")
    grown = live.rss() - rss0
    assert "limit.h5ad" in line and "Nothing was stored" in line, line
    assert grown < UPLOAD_LIMIT_MB * MB, f"RSS grew by {grown / MB:.0f} MB"
    over = live.upload_message(raw + b"x", "over.h5ad")
    assert f"over the upload limit of {UPLOAD_LIMIT_MB} MB" in over, over
    assert live.alive()


def test_same_name_uploads_keep_every_file(live: Live) -> None:
    good = (live.data_dir / "small.h5ad").read_bytes()
    lines: list[str] = []

    def one() -> None:
        lines.append(live.upload_message(good, "shared name.h5ad"))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines.append(live.upload_message(good, "shared name.h5ad"))  # and one after them
    names = sorted(line.split("Uploaded and checked ")[1].split(".h5ad")[0] for line in lines)
    assert names == ["shared_name", "shared_name-2", "shared_name-3", "shared_name-4"], lines
    stored = [p for p in stored_uploads(live) if p.name.startswith("shared_name")]
    assert len(stored) == 4 and all(p.read_bytes() == good for p in stored)
    assert {p.parent.name for p in stored} == {f"u-{USER}"}  # the user's own area
    incoming = live.data_dir / "uploads" / f"u-{USER}" / ".incoming"
    assert not list(incoming.iterdir())


def test_temporary_files_are_not_offered(live: Live) -> None:
    """A temp file left by a crash is in no listing and cannot be picked by name."""
    incoming = live.data_dir / "uploads" / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (incoming / "deadbeef.h5ad").write_bytes(b"half")
    (live.data_dir / "uploads" / ".upload-x1.h5ad").write_bytes(b"half")
    layout = live.callback(
        "_pages_content.children",
        {"_pages_location.pathname": "/model", "_pages_location.search": ""},
        ["_pages_location.pathname"],
    )
    text = str(layout)
    assert "deadbeef" not in text and ".upload-x1" not in text
    for name in ("uploads/.incoming/deadbeef.h5ad", "uploads/.upload-x1.h5ad"):
        out = live.callback(
            "model-dataset-info.children", {"model-dataset.value": name}, ["model-dataset.value"]
        )
        shown = str(out["response"]["model-dataset-info"]["children"])
        assert "hidden files and folders cannot be opened" in shown, shown
    assert live.alive()
