"""Label sets: the cell annotations users make (name the cells of a lasso, copy the cell
types and rename, merge or delete their categories), kept per workspace with undo.

A label set gives every cell of a dataset one category or none (*unlabelled*). A
workspace's sets of one dataset live in one JSON file (``labels-<dataset fp>.json`` in the
owner's workspace folder under ``names_dir``, beside the renamed cell types), written to a
temporary file and moved into place, so a reader never sees half a file and nothing one
user does touches another's sets. Every edit keeps the state before it (the last
:data:`UNDO_DEPTH`), so :meth:`LabelSets.undo` steps back.

Jobs run outside the request (worker threads, Celery workers): they are handed a
*snapshot* instead, a read-only copy named by the digest of its content
(``labels@<digest>``, :meth:`LabelSets.snapshot_key`) in ``names_dir/label-snapshots``.
The same labels give the same key, so the cache's content keys stay as they are.

Per-cell codes are stored as zlib-compressed little-endian int32 (base64): about 1-4 bytes a
cell for a million cells.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.owner import current_owner, workspace_id

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair

#: What cells without a label show (a name no category may take).
UNLABELLED = "unlabelled"
#: Label sets a workspace may keep per dataset.
MAX_SETS = 24
#: Categories a label set may have.
MAX_CATEGORIES = 500
#: Longest set or category name.
MAX_NAME = 60
#: Edits that can be undone.
UNDO_DEPTH = 20
#: Largest label-set CSV accepted (bytes).
MAX_CSV_BYTES = 64 * 1024 * 1024
#: Largest label-set file read (bytes): a bigger one drops its oldest undo steps.
MAX_FILE_BYTES = 96 * 1024 * 1024
#: The key prefix of a snapshot (what jobs get).
SNAPSHOT_PREFIX = "labels@"
#: The key prefix of a workspace's live set (read in a request only).
LIVE_PREFIX = "labels:"
#: Parsed label-set files kept in memory.
PARSED_FILES = 16
_DIGEST = re.compile(r"[0-9a-f]{32}")


# =============================================================================== one set
@dataclass(frozen=True)
class LabelSet:
    """One label set: its ``name``, its ``categories`` (in order) and, per cell of the
    dataset, the position of its category (``codes``, int32; -1: unlabelled)."""

    name: str
    categories: tuple[str, ...]
    codes: np.ndarray

    @functools.cached_property
    def packed_codes(self) -> str:
        """The codes as the file stores them (little-endian int32, zlib, base64): computed
        once per set, and taken from the file for a set read from it, so an edit compresses
        only the set it changed."""
        raw = np.ascontiguousarray(self.codes, dtype="<i4").tobytes()
        return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")

    def series(self, index: pd.Index) -> pd.Series:
        """Per cell its category (categorical over :attr:`categories`, plus
        :data:`UNLABELLED` last when some cells have none)."""
        cats = list(self.categories)
        codes = self.codes.astype(np.int64)
        if (codes < 0).any():
            codes = np.where(codes < 0, len(cats), codes)
            cats.append(UNLABELLED)
        return pd.Series(
            pd.Categorical.from_codes(codes, categories=cats), index=index, name=self.name
        )

    def counts(self) -> dict[str, int]:
        """Cells per category (in order; unlabelled ones left out)."""
        n = np.bincount(self.codes[self.codes >= 0], minlength=len(self.categories))
        return {c: int(k) for c, k in zip(self.categories, n, strict=True)}

    def digest(self, dataset: str) -> str:
        """A digest of the labels (not the name) over dataset fingerprint ``dataset``."""
        h = hashlib.sha256(dataset.encode())
        h.update(json.dumps(list(self.categories), ensure_ascii=False).encode())
        h.update(np.ascontiguousarray(self.codes, dtype="<i4").tobytes())
        return h.hexdigest()[:32]

    def compacted(self) -> LabelSet:
        """The set without categories no cell has (codes renumbered, order kept)."""
        used = np.zeros(len(self.categories), dtype=bool)
        used[np.unique(self.codes[self.codes >= 0])] = True
        if used.all():
            return self
        new_pos = np.cumsum(used) - 1
        codes = np.where(self.codes >= 0, new_pos[np.maximum(self.codes, 0)], -1)
        cats = tuple(c for c, u in zip(self.categories, used, strict=True) if u)
        return LabelSet(self.name, cats, codes.astype(np.int32))


def _encode(s: LabelSet) -> dict[str, Any]:
    return {"name": s.name, "categories": list(s.categories), "codes": s.packed_codes}


def _decode(entry: Any, n_cells: int) -> LabelSet | None:
    """A stored set, or ``None`` when the entry is damaged (wrong length, codes out of
    range, not the format): a hand-edited file loses that set, not the page."""
    try:
        name, cats = str(entry["name"]), [str(c) for c in entry["categories"]]
        packed = base64.b64decode(str(entry["codes"]), validate=True)
        unpack = zlib.decompressobj()
        raw = unpack.decompress(packed, 4 * n_cells + 1)
        if len(raw) != 4 * n_cells or unpack.unconsumed_tail:
            return None
        codes = np.frombuffer(raw, dtype="<i4").astype(np.int32)
    except (KeyError, TypeError, ValueError, zlib.error):
        return None
    out_of_range = codes.size > 0 and (codes.max() >= len(cats) or codes.min() < -1)
    if len(cats) > MAX_CATEGORIES or out_of_range:
        return None
    codes.flags.writeable = False  # shared by every reader of the parsed file
    out = LabelSet(name, tuple(cats), codes)
    out.__dict__["packed_codes"] = str(entry["codes"])  # as read: no need to compress again
    return out


def check_name(new: Any, what: str, *, taken: Sequence[str] = ()) -> str:
    """``new`` as a set or category name (stripped), else one line saying why not: it is
    non-empty, at most :data:`MAX_NAME` printable characters, not :data:`UNLABELLED` and
    none of ``taken`` (case ignored)."""
    name = new.strip() if isinstance(new, str) else ""
    if not name:
        msg = f"type a name for the {what}"
        raise InvalidSelection(msg)
    if len(name) > MAX_NAME:
        msg = f"a {what} name can have at most {MAX_NAME} characters ({len(name)} given)"
        raise InvalidSelection(msg)
    if not name.isprintable():
        msg = f"a {what} name cannot hold tabs, line breaks or other control characters"
        raise InvalidSelection(msg)
    if name.casefold() == UNLABELLED:
        msg = f"“{UNLABELLED}” is what cells without a label show; choose another {what} name"
        raise InvalidSelection(msg)
    for other in taken:
        if other.casefold() == name.casefold():
            msg = f"there is already a {what} “{other}”; choose another name"
            raise InvalidSelection(msg)
    return name


def _positions(cells: Any, n_cells: int) -> np.ndarray:
    """Distinct cell positions from a list (each an int in range), else one line."""
    try:
        pos = np.asarray(cells, dtype=np.int64).ravel()
    except (TypeError, ValueError, OverflowError):
        msg = "the cells to label are not a list of cell positions"
        raise InvalidSelection(msg) from None
    if pos.size == 0:
        msg = "no cells selected: select cells (lasso or box) first"
        raise InvalidSelection(msg)
    if pos.min() < 0 or pos.max() >= n_cells:
        msg = f"a cell position is outside the dataset's {n_cells:,} cells"
        raise InvalidSelection(msg)
    return np.unique(pos)


def _with_label(s: LabelSet, cells: np.ndarray, label: str) -> LabelSet:
    """``s`` with ``cells`` labelled ``label`` (a new category when it has none)."""
    cats = list(s.categories)
    match = [i for i, c in enumerate(cats) if c.casefold() == label.casefold()]
    if match:
        pos = match[0]
    else:
        if len(cats) >= MAX_CATEGORIES:
            msg = f"a label set has at most {MAX_CATEGORIES} categories"
            raise InvalidSelection(msg)
        cats.append(check_name(label, "category"))
        pos = len(cats) - 1
    codes = s.codes.copy()
    codes[cells] = pos
    return LabelSet(s.name, tuple(cats), codes).compacted()


def _from_labels(name: str, labels: pd.Series) -> LabelSet:
    """A set of per-cell ``labels`` (``""``: unlabelled; a categorical keeps its order)."""
    values = labels.astype(str).str.strip()
    if isinstance(labels.dtype, pd.CategoricalDtype):
        cats = [str(c).strip() for c in labels.cat.categories]
    else:
        cats = sorted(set(values.to_numpy().tolist()))
    cats = list(dict.fromkeys(c for c in cats if c))
    if len(cats) > MAX_CATEGORIES:
        msg = f"a label set has at most {MAX_CATEGORIES} categories ({len(cats):,} given)"
        raise InvalidSelection(msg)
    for c in cats:
        check_name(c, "category")
    codes = pd.Categorical(values, categories=cats).codes  # "" and unknown: -1
    return LabelSet(name, tuple(cats), np.asarray(codes, dtype=np.int32)).compacted()


# ============================================================================= the store
@dataclass(frozen=True)
class _State:
    sets: tuple[LabelSet, ...]
    undo: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]  # (what, encoded sets before)


class LabelSets:
    """Every workspace's label sets, per dataset, in ``folder`` (``names_dir``).

    Reads go to the file each time (so every thread, process and restarted server over the
    folder shows the same sets); edits hold a lock, read, change, and write the new state
    atomically with the state before on the undo list.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        #: Parsed files by path, valid while the file's (mtime, size) stays: a page's
        #: many reads of one request cost a ``stat`` each, not a parse.
        self._parsed: OrderedDict[Path, tuple[tuple[int, int, int], _State]] = OrderedDict()
        self._parsed_lock = threading.Lock()

    # ---------------------------------------------------------------------- reading
    def path(self, pair: Pair) -> Path:
        """The file of the current owner's sets of the pair's dataset (outside a request,
        CLI: in ``folder`` itself)."""
        name = f"labels-{pair.dataset.fingerprint[:32]}.json"
        owner = current_owner()
        if owner is None:
            return self.folder / name
        return self.folder / "workspaces" / workspace_id(owner) / name

    def sets(self, pair: Pair, n_cells: int) -> list[LabelSet]:
        """The label sets of the pair's dataset (``n_cells`` cells), in order made."""
        return list(self._read(pair, n_cells).sets)

    def get(self, pair: Pair, n_cells: int, name: str) -> LabelSet:
        """The set called ``name`` (case ignored), else one line naming the sets there are."""
        sets = self.sets(pair, n_cells)
        for s in sets:
            if s.name.casefold() == str(name).casefold():
                return s
        there = ", ".join(f"“{s.name}”" for s in sets[:8]) or "none yet"
        msg = f"no label set “{str(name)[:60]}” in this workspace (label sets: {there})"
        raise InvalidSelection(msg)

    def undo_steps(self, pair: Pair, n_cells: int) -> list[str]:
        """What each undo step would undo, the next first."""
        return [what for what, _ in reversed(self._read(pair, n_cells).undo)]

    def _read(self, pair: Pair, n_cells: int) -> _State:
        path = self.path(pair)
        try:
            st = path.stat()
        except OSError:
            return _State((), ())
        stamp = (st.st_mtime_ns, st.st_size, n_cells)
        with self._parsed_lock:
            found = self._parsed.get(path)
            if found is not None and found[0] == stamp:
                self._parsed.move_to_end(path)
                return found[1]
        state = self._parse(path, pair, n_cells, st.st_size)
        with self._parsed_lock:
            self._parsed[path] = (stamp, state)
            while len(self._parsed) > PARSED_FILES:
                self._parsed.popitem(last=False)
        return state

    def _parse(self, path: Path, pair: Pair, n_cells: int, size: int) -> _State:
        if size > MAX_FILE_BYTES:
            return _State((), ())
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _State((), ())
        if not isinstance(raw, dict) or raw.get("dataset") != pair.dataset.fingerprint:
            return _State((), ())
        if raw.get("n_cells") != n_cells:
            return _State((), ())
        sets = tuple(
            s for s in (_decode(e, n_cells) for e in raw.get("sets") or []) if s is not None
        )
        undo = []
        for step in raw.get("undo") or []:
            if isinstance(step, dict) and isinstance(step.get("sets"), list):
                undo.append((str(step.get("what", "an edit")), tuple(step["sets"])))
        return _State(sets[:MAX_SETS], tuple(undo[-UNDO_DEPTH:]))

    # ---------------------------------------------------------------------- editing
    def _edit(
        self,
        pair: Pair,
        n_cells: int,
        what: str,
        change: Callable[[list[LabelSet]], list[LabelSet]],
    ) -> list[LabelSet]:
        with self._lock:
            state = self._read(pair, n_cells)
            new = change(list(state.sets))
            undo = [*state.undo, (what, tuple(_encode(s) for s in state.sets))]
            self._write(pair, n_cells, new, undo[-UNDO_DEPTH:])
            return new

    def _write(
        self,
        pair: Pair,
        n_cells: int,
        sets: Sequence[LabelSet],
        undo: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    ) -> None:
        path = self.path(pair)
        path.parent.mkdir(parents=True, exist_ok=True)
        encoded = [_encode(s) for s in sets]
        steps = [{"what": w, "sets": list(b)} for w, b in undo]
        while True:
            body = {
                "dataset": pair.dataset.fingerprint,
                "n_cells": n_cells,
                "sets": encoded,
                "undo": steps,
            }
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            if len(text) <= MAX_FILE_BYTES or not steps:
                break
            steps = steps[1:]  # the oldest undo steps go first
        fd, tmp_name = tempfile.mkstemp(prefix=".labels-", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            tmp.replace(path)  # os.replace: atomic within the folder
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _replace(self, sets: list[LabelSet], name: str, new: LabelSet) -> list[LabelSet]:
        return [new if s.name == name else s for s in sets]

    def _one(self, sets: list[LabelSet], name: str) -> LabelSet:
        for s in sets:
            if s.name.casefold() == str(name).casefold():
                return s
        msg = f"no label set “{str(name)[:60]}” in this workspace"
        raise InvalidSelection(msg)

    def create(
        self,
        pair: Pair,
        n_cells: int,
        name: Any,
        *,
        labels: pd.Series | None = None,
        cells: Any = None,
        label: Any = None,
    ) -> LabelSet:
        """A new set called ``name``: a copy of ``labels`` (one per cell, e.g. the cell
        types as shown), or ``cells`` labelled ``label`` and the rest unlabelled."""

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            set_name = check_name(name, "label set", taken=[s.name for s in sets])
            if len(sets) >= MAX_SETS:
                msg = f"a workspace keeps at most {MAX_SETS} label sets per dataset; delete one"
                raise InvalidSelection(msg)
            if labels is not None:
                if len(labels) != n_cells:
                    msg = f"the labels cover {len(labels):,} cells, not the {n_cells:,}"
                    raise InvalidSelection(msg)
                new = _from_labels(set_name, pd.Series(labels))
            else:
                empty = LabelSet(set_name, (), np.full(n_cells, -1, dtype=np.int32))
                new = _with_label(empty, _positions(cells, n_cells), label)
            return [*sets, new]

        sets = self._edit(pair, n_cells, f"new label set “{str(name).strip()[:60]}”", change)
        return sets[-1]

    def label_cells(self, pair: Pair, n_cells: int, name: str, cells: Any, label: Any) -> LabelSet:
        """Label ``cells`` ``label`` in set ``name`` (their old label replaced)."""
        pos = _positions(cells, n_cells)

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            s = self._one(sets, name)
            return self._replace(sets, s.name, _with_label(s, pos, label))

        what = f"label {pos.size:,} cells “{str(label).strip()[:60]}” in “{name}”"
        return self._one(self._edit(pair, n_cells, what, change), name)

    def rename_category(self, pair: Pair, n_cells: int, name: str, old: str, new: Any) -> LabelSet:
        """Call category ``old`` of set ``name`` ``new`` (not the name of another: merge)."""

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            s = self._one(sets, name)
            if old not in s.categories:
                msg = f"label set “{s.name}” has no category “{str(old)[:60]}”"
                raise InvalidSelection(msg)
            others = [c for c in s.categories if c != old]
            try:
                label = check_name(new, "category", taken=others)
            except InvalidSelection as err:
                if any(c.casefold() == str(new).strip().casefold() for c in others):
                    msg = f"“{str(new).strip()}” is another category of “{s.name}”: merge them"
                    raise InvalidSelection(msg) from None
                raise err from None
            cats = tuple(label if c == old else c for c in s.categories)
            return self._replace(sets, s.name, LabelSet(s.name, cats, s.codes))

        what = f"rename “{old}” → “{str(new).strip()[:60]}” in “{name}”"
        return self._one(self._edit(pair, n_cells, what, change), name)

    def merge(
        self, pair: Pair, n_cells: int, name: str, categories: Sequence[str], into: Any
    ) -> LabelSet:
        """Merge ``categories`` (two or more) of set ``name`` into one called ``into`` (one
        of them, or a new name)."""
        if isinstance(categories, str) or len(set(categories)) < 2:
            msg = "choose two or more categories to merge"
            raise InvalidSelection(msg)

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            s = self._one(sets, name)
            missing = [c for c in categories if c not in s.categories]
            if missing:
                msg = f"label set “{s.name}” has no category “{str(missing[0])[:60]}”"
                raise InvalidSelection(msg)
            merged = set(categories)
            others = [c for c in s.categories if c not in merged]
            label = check_name(into, "category", taken=others)
            first = min(s.categories.index(c) for c in merged)
            cats = [c for c in s.categories if c not in merged or s.categories.index(c) == first]
            cats[cats.index(s.categories[first])] = label
            new_pos = {c: cats.index(label if c in merged else c) for c in s.categories}
            lookup = np.array([new_pos[c] for c in s.categories] + [-1], dtype=np.int32)
            codes = lookup[np.where(s.codes < 0, len(s.categories), s.codes)]
            return self._replace(sets, s.name, LabelSet(s.name, tuple(cats), codes))

        shown = ", ".join(f"“{c}”" for c in categories)
        what = f"merge {shown} into “{str(into).strip()[:60]}” in “{name}”"
        return self._one(self._edit(pair, n_cells, what, change), name)

    def delete_category(self, pair: Pair, n_cells: int, name: str, category: str) -> LabelSet:
        """Drop category ``category`` of set ``name``: its cells become unlabelled."""

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            s = self._one(sets, name)
            if category not in s.categories:
                msg = f"label set “{s.name}” has no category “{str(category)[:60]}”"
                raise InvalidSelection(msg)
            pos = s.categories.index(category)
            codes = s.codes.copy()
            codes[codes == pos] = -1
            return self._replace(sets, s.name, LabelSet(s.name, s.categories, codes).compacted())

        what = f"delete category “{category}” of “{name}”"
        return self._one(self._edit(pair, n_cells, what, change), name)

    def delete_set(self, pair: Pair, n_cells: int, name: str) -> None:
        """Forget set ``name`` (undo brings it back)."""

        def change(sets: list[LabelSet]) -> list[LabelSet]:
            s = self._one(sets, name)
            return [o for o in sets if o.name != s.name]

        self._edit(pair, n_cells, f"delete label set “{name}”", change)

    def undo(self, pair: Pair, n_cells: int) -> str:
        """Step back over the last edit; returns what it undid (one line when none)."""
        with self._lock:
            state = self._read(pair, n_cells)
            if not state.undo:
                msg = "nothing to undo"
                raise InvalidSelection(msg)
            what, before = state.undo[-1]
            sets = [s for s in (_decode(e, n_cells) for e in before) if s is not None]
            self._write(pair, n_cells, sets, state.undo[:-1])
            return what

    # --------------------------------------------------------------------- CSV files
    def import_csv(
        self, pair: Pair, obs_names: pd.Index, name: Any, content: bytes, *, filename: str = ""
    ) -> LabelSet:
        """A new set from a CSV of cell id and label (the first column names the cells as
        the dataset does; the label column is ``label``, else the second). Cells missing
        from the file are unlabelled; an empty label leaves a cell unlabelled. Refusals
        name the file and the row, cell or column."""
        where = filename[:80] or "the CSV"
        labels = parse_labels_csv(content, obs_names, where=where)
        return self.create(pair, len(obs_names), name, labels=labels)

    def snapshot_key(self, pair: Pair, n_cells: int, name: str) -> str:
        """``labels@<digest>``: a read-only copy of set ``name`` that jobs and other
        processes can read (written once; the same labels give the same key)."""
        s = self.get(pair, n_cells, name)
        digest = s.digest(pair.dataset.fingerprint)
        path = self.folder / "label-snapshots" / f"{digest}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            body = {"dataset": pair.dataset.fingerprint, "n_cells": n_cells, "set": _encode(s)}
            fd, tmp_name = tempfile.mkstemp(prefix=".snap-", suffix=".tmp", dir=path.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(body, fh, ensure_ascii=False)
                tmp.replace(path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        return f"{SNAPSHOT_PREFIX}{digest}"

    def snapshot(self, pair: Pair, n_cells: int, key: str) -> LabelSet:
        """The set a :meth:`snapshot_key` names (one line when unknown or not this
        dataset's)."""
        digest = key[len(SNAPSHOT_PREFIX) :] if key.startswith(SNAPSHOT_PREFIX) else ""
        gone = InvalidSelection("that label set is gone; pick it again")
        if not _DIGEST.fullmatch(digest):
            raise gone
        try:
            raw = json.loads(
                (self.folder / "label-snapshots" / f"{digest}.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            raise gone from None
        if not isinstance(raw, dict) or raw.get("dataset") != pair.dataset.fingerprint:
            raise gone
        s = _decode(raw.get("set"), n_cells) if raw.get("n_cells") == n_cells else None
        if s is None:
            raise gone
        return s


def parse_labels_csv(content: bytes, obs_names: pd.Index, *, where: str = "the CSV") -> pd.Series:
    """Per cell of ``obs_names`` its label from a CSV (``""``: unlabelled), else one line
    naming the problem (size, encoding, columns, an unknown or repeated cell)."""
    if len(content) > MAX_CSV_BYTES:
        msg = f"{where} is larger than {MAX_CSV_BYTES // 2**20} MB"
        raise InvalidSelection(msg)
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = f"{where} is not UTF-8 text"
        raise InvalidSelection(msg) from None
    head = text.split("\n", 1)[0]
    sep = "\t" if "\t" in head else ";" if ";" in head and "," not in head else ","
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=sep)
    except (ValueError, pd.errors.ParserError) as err:
        first = str(err).splitlines()[0][:120] if str(err) else "unreadable"
        msg = f"{where} is not a readable CSV ({first})"
        raise InvalidSelection(msg) from None
    if table.shape[1] < 2:
        msg = f"{where} needs two columns: the cell id and its label"
        raise InvalidSelection(msg)
    cols = [str(c) for c in table.columns]
    label_col = next((c for c in cols[1:] if c.strip().lower() == "label"), cols[1])
    cells = table.iloc[:, 0].astype(str).str.strip()
    labels = table[label_col].astype(str).str.strip()
    repeated = cells[cells.duplicated()]
    if len(repeated):
        msg = f"{where}: cell “{repeated.iloc[0][:60]}” is listed more than once"
        raise InvalidSelection(msg)
    pos = pd.Index(obs_names.astype(str)).get_indexer(cells)
    if (pos < 0).any():
        bad = int(np.flatnonzero(pos < 0)[0])
        msg = (
            f"{where}, row {bad + 2}: no cell “{cells.iloc[bad][:60]}” in this dataset "
            f"(the first column must hold the dataset's cell ids, e.g. “{obs_names[0]}”)"
        )
        raise InvalidSelection(msg)
    for i, lab in enumerate(labels):
        if lab:
            try:
                check_name(lab, "category")
            except InvalidSelection as err:
                msg = f"{where}, row {i + 2}, column “{label_col[:40]}”: {err}"
                raise InvalidSelection(msg) from None
    out = np.full(len(obs_names), "", dtype=object)
    out[pos] = labels.to_numpy()
    return pd.Series(out, index=obs_names)


def labels_csv(s: LabelSet, obs_names: pd.Index) -> str:
    """The set as CSV: ``cell,<set name>`` (unlabelled cells: empty)."""
    cats = np.array([*s.categories, ""], dtype=object)
    values = cats[np.where(s.codes < 0, len(s.categories), s.codes)]
    frame = pd.DataFrame({"cell": obs_names.astype(str), s.name: values})
    return frame.to_csv(index=False)


__all__ = [
    "LIVE_PREFIX",
    "SNAPSHOT_PREFIX",
    "UNLABELLED",
    "LabelSet",
    "LabelSets",
    "check_name",
    "labels_csv",
    "parse_labels_csv",
]
