"""The workspace records: one JSON file per workspace, merged key by key, bounded in number."""

from __future__ import annotations

import os

from dashboard.views import workspaces
from dashboard.views.workspaces import WorkspaceStore


def test_records_merge_key_by_key_and_stay_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(workspaces, "MAX_RECORDS", 3)
    store = WorkspaceStore(tmp_path)
    store.update("u-alice", selection={"cells": [1, 2]})
    store.update("u-alice", color={"feature": "gene:CD3E"})  # another tab's store
    assert store.read("u-alice")["selection"] == {"cells": [1, 2]}  # kept, not overwritten
    for n, owner in enumerate(["u-bob", "u-carol", "u-dave"]):
        path = store.path("u-alice")
        os.utime(path, (1000 + n, 1000 + n))  # alice's record is the oldest
        store.update(owner, color={"feature": "gene:LYZ"})
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(
        store.path(o).stem for o in ("u-bob", "u-carol", "u-dave")
    )
    assert store.read("u-alice") == {}  # the least recently updated went
