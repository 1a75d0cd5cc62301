"""Workspaces: one per user, each with its own active pair, picked dataset and selections.

A workspace is what one biologist sees: the model and dataset they loaded or trained, their
selection and saved selections, their renamed cell types (stored per workspace by
:class:`~dashboard.backend.names.CellTypeNames`) and their jobs. Nothing one user does
changes another's view; results stay shared through the content-keyed cache.

Each workspace is a small JSON record under ``<cache_dir>/workspaces/<id>.json``, written
to a temporary file and renamed, read back when the user next comes (after a reload or a
server restart: the pair is prepared again, from the cache). The states of the workspaces
in use are kept in memory, at most :data:`MAX_IN_MEMORY` (least recently used dropped: it
is read again from its record), and records are pruned beyond :data:`MAX_RECORDS`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.owner import acting_as, workspace_id
from dashboard.backend.paths import in_foreign_area
from dashboard.backend.refs import DatasetRef, Pair
from dashboard.views.state import ActiveState, pair_name

log = logging.getLogger(__name__)

#: Workspace states kept in memory at once (the rest wait on disk).
MAX_IN_MEMORY = 256
#: Workspace records kept on disk at most (the least recently used are removed).
MAX_RECORDS = 2000
#: Largest stored selection state (bytes of JSON): a share link's bound, with room.
MAX_VIEW_BYTES = 4 * 1024 * 1024
#: The view keys a workspace keeps (what the browser's stores hold).
VIEW_KEYS = ("selection", "saved_selections", "color", "gene_sets")
_PAIR_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]{12}")


class WorkspaceStore:
    """The workspace records in ``folder`` (one JSON file each, atomic writes)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def path(self, owner: str) -> Path:
        """The record of ``owner``'s workspace."""
        return self.folder / f"{workspace_id(owner)}.json"

    def read(self, owner: str) -> dict[str, Any]:
        """``owner``'s record (empty when none, or unreadable: a fresh workspace)."""
        try:
            record = json.loads(self.path(owner).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict) or record.get("owner") != owner:
            return {}
        return record

    def update(self, owner: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into ``owner``'s record and store it; returns the record."""
        with self._lock:
            new = not self.path(owner).exists()
            record = {**self.read(owner), **changes, "owner": owner, "updated": time.time()}
            body = json.dumps(record, separators=(",", ":"), default=str)
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".ws-", suffix=".tmp", dir=self.folder)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(body)
                tmp.replace(self.path(owner))
            finally:
                tmp.unlink(missing_ok=True)
            if new:  # only a new record can pass the bound
                self._prune()
            return record

    def _prune(self) -> None:
        """Keep the :data:`MAX_RECORDS` most recently updated records."""
        records = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in records[: max(len(records) - MAX_RECORDS, 0)]:
            with contextlib.suppress(OSError):
                old.unlink()


class Workspaces:
    """The workspace state of every owner, over one analysis service.

    Parameters
    ----------
    default
        The server's default state (the embedded or configured pair): what a new workspace
        shows until it loads or trains its own.
    folder
        Where the records go (``<cache_dir>/workspaces``).
    """

    def __init__(self, default: ActiveState, folder: str | os.PathLike[str]) -> None:
        self.default = default
        self.service = default.service
        self.store = WorkspaceStore(folder)
        self._states: OrderedDict[str, ActiveState] = OrderedDict()
        self._lock = threading.Lock()

    def state(self, owner: str) -> ActiveState:
        """``owner``'s workspace state (restored from its record on first use)."""
        with self._lock:
            state = self._states.get(owner)
            if state is not None:
                self._states.move_to_end(owner)
                return state
            state = ActiveState(
                self.service,
                warm=self.default.warm,
                owner=owner,
                fallback=self.default,
                on_change=self._save,
            )
            self._states[owner] = state
            while len(self._states) > MAX_IN_MEMORY:
                self._states.popitem(last=False)
        self._restore(state)
        return state

    def view(self, owner: str) -> dict[str, Any]:
        """What ``owner``'s browser stores start from (selection, saved selections, colour)."""
        record = self.store.read(owner)
        return {k: record.get(k) for k in VIEW_KEYS if record.get(k) is not None}

    def save_view(self, owner: str, **view: Any) -> None:
        """Keep ``owner``'s selection, saved selections or colour (refused when too big)."""
        changes = {k: v for k, v in view.items() if k in VIEW_KEYS}
        size = len(json.dumps(changes, default=str))
        if size > MAX_VIEW_BYTES:
            msg = f"the selection is too large to keep ({size // 1024} kB)"
            raise InvalidSelection(msg)
        self.store.update(owner, **changes)

    def open_link(self, owner: str, pair_id: str) -> str | None:
        """Switch ``owner``'s workspace to the pair a shared link names (``pair_id``), if
        another; returns one line for the page (``None``: it is the active one already).

        The pair is found among the default's, the workspaces in memory and the stored
        records; one in another user's private area is refused, as its files would be.
        """
        state = self.state(owner)
        active = state.pair
        if active is not None and active.id == pair_id:
            return None
        if not _PAIR_ID.fullmatch(pair_id):
            return "the link names no model of this server; showing your own"
        pair = self.find_pair(pair_id)
        if pair is None:
            return "the link's model is not known to this server any more; showing your own"
        if not self._may_open(pair, owner):
            return "the link's model is in another user's workspace; showing your own"
        if state.switch.view().running or state.job_id is not None:
            return "the link's model opens when the running job ends; showing your own"
        state.prepare(pair)
        return f"opening the link's model ({pair_name(pair)}); the view switches when it is ready"

    def find_pair(self, pair_id: str) -> Pair | None:
        """A pair some workspace (or the default) has shown, by its id."""
        candidates = [self.default.pair]
        with self._lock:
            candidates += [st.own_pair for st in self._states.values()]
        for pair in candidates:
            if pair is not None and pair.id == pair_id:
                return pair
        for path in self.store.folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                raw = json.loads(path.read_text(encoding="utf-8")).get("pair")
                if raw and Pair.from_dict(raw).id == pair_id:
                    return Pair.from_dict(raw)
        return None

    def _may_open(self, pair: Pair, owner: str) -> bool:
        """Whether ``owner`` may open ``pair``: its files are in no other user's private
        area; a pair that lives only in memory (a mapped query: a reference plus another
        user's own cells) only when it is the server's default."""
        if pair.dataset.path is None or pair.model.path is None:
            return pair == self.default.pair
        settings = self.service.settings
        return not (
            in_foreign_area(pair.dataset.path, settings.data_dir, owner)
            or in_foreign_area(pair.model.path, settings.model_dir, owner)
        )

    def owners(self) -> list[str]:
        """Owners whose workspace state is in memory now (most recent last)."""
        with self._lock:
            return list(self._states)

    # ------------------------------------------------------------------ internals
    def _save(self, state: ActiveState) -> None:
        if state.owner is None:
            return
        pair, dataset = state.own_pair, state.picked_dataset
        self.store.update(
            state.owner,
            pair=pair.to_dict() if pair is not None else None,
            dataset=dataset.to_dict() if dataset is not None else None,
        )

    def _restore(self, state: ActiveState) -> None:
        """Bring back a workspace's pair and picked dataset after a restart (prepared again:
        its results come from the cache). A pair whose files are gone or changed is
        dropped with a log line: the workspace then follows the default."""
        assert state.owner is not None
        record = self.store.read(state.owner)
        try:
            if record.get("dataset"):
                state.set_dataset(DatasetRef.from_dict(record["dataset"]))
            if record.get("pair"):
                pair = Pair.from_dict(record["pair"])
                if self.default.pair is not None and pair == self.default.pair:
                    return
                with acting_as(state.owner):
                    self.service.dataset(pair)  # the file is still there and the same
                    self.service.model(pair)
                state.prepare(pair)
        except (BackendError, KeyError, TypeError, ValueError) as err:
            log.warning("workspace %s: its model cannot be restored (%s)", state.owner, err)
            state.set_dataset(None)
