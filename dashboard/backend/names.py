"""Names as the user sees them: display names of features, and renamed cell types.

Features are keyed ``"gene:<name>"`` / ``"protein:<name>"`` everywhere; :func:`display_name`
is the one place that turns a key into what a page shows. Genes show their symbol
(``"CD4"``), proteins their short antibody name followed by ``" protein"`` (``"CD4
protein"``), so a gene and the protein of the same symbol never read alike, on their own or
side by side. Where two proteins of a dataset would get the same short name
(``CD4_TotalSeqB`` and ``CD4_TotalSeqC``) both keep their full name.

Cell types keep their automatic names as ids (cached results, DE tables' ``group1`` and
``type:<name>`` choices are keyed by them); a user's renames are a small map from id to
shown name, kept per (dataset, model) pair in one JSON file (:class:`CellTypeNames`) and
applied where types are shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.owner import current_owner, workspace_id

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair

PROTEIN_NAME_SUFFIXES = ("_TotalSeqB", "_TotalSeqA", "_TotalSeqC", "_TotalA", "_TotalB", "_ADT")
#: What follows a protein's short name in its display name.
PROTEIN_MARK = " protein"
#: Longest cell-type name a user may give.
MAX_TYPE_NAME = 60
#: Renames (and resets) that can be undone.
UNDO_RENAMES = 20


# ============================================================================ features
def short_protein_name(name: str) -> str:
    """``"CD14_TotalSeqB"`` -> ``"CD14"`` (antibody suffixes dropped)."""
    for suffix in PROTEIN_NAME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def short_protein_names(names: Iterable[str]) -> dict[str, str]:
    """``{name: short name}`` of a dataset's proteins, distinct: proteins whose short names
    would clash keep their full names."""
    full = [str(n) for n in names]
    short = [short_protein_name(n) for n in full]
    seen: dict[str, int] = {}
    for s in short:
        seen[s] = seen.get(s, 0) + 1
    return {n: (s if seen[s] == 1 else n) for n, s in zip(full, short, strict=True)}


def display_name(
    key: str,
    *,
    proteins: Mapping[str, str] | None = None,
    genes: Mapping[str, str] | None = None,
) -> str:
    """What a page shows for feature ``key`` (``"gene:CD4"`` -> ``"CD4"``,
    ``"protein:CD4_TotalSeqB"`` -> ``"CD4 protein"``).

    Parameters
    ----------
    key
        ``"gene:<name>"`` or ``"protein:<name>"`` (anything else is returned as it is).
    proteins
        The dataset's :func:`short_protein_names` (default: the suffix-stripped name).
    genes
        Shown names of genes that differ from their key's name (e.g. duplicated symbols
        made unique in the data); other genes show their name.
    """
    kind, sep, name = key.partition(":")
    if not sep:
        return key
    if kind == "protein":
        short = (proteins or {}).get(name) or short_protein_name(name)
        return f"{short}{PROTEIN_MARK}"
    if kind == "gene":
        return (genes or {}).get(name, name)
    return key


# ========================================================================== cell types
def check_type_name(new: str, type_id: str, shown: Mapping[str, str]) -> str:
    """``new`` as a valid name for type ``type_id`` (stripped), else :class:`InvalidSelection`
    with one line: it must be non-empty, at most :data:`MAX_TYPE_NAME` characters,
    printable and not the name another type shows (case ignored).

    ``shown`` maps every type id to the name it shows now.
    """
    if type_id not in shown:
        msg = f"no cell type {type_id!r}; pick one of the listed types"
        raise InvalidSelection(msg)
    name = (new or "").strip()
    if not name:
        msg = "type a new name for the cell type"
        raise InvalidSelection(msg)
    if len(name) > MAX_TYPE_NAME:
        msg = f"a cell-type name can have at most {MAX_TYPE_NAME} characters ({len(name)} given)"
        raise InvalidSelection(msg)
    if not name.isprintable():
        msg = "a cell-type name cannot hold tabs, line breaks or other control characters"
        raise InvalidSelection(msg)
    for other, label in shown.items():
        if other != type_id and label.casefold() == name.casefold():
            msg = f"“{label}” is already the name of another cell type; choose another name"
            raise InvalidSelection(msg)
    return name


class CellTypeNames:
    """Renamed cell types, one small JSON file per (dataset, model) pair in ``folder``.

    The file holds ``{"dataset": fp, "model": fp, "names": {type id: name}, "previous":
    [the names before each of the last 20 renames or resets]}`` (:meth:`undo`); it is
    written to a temporary file in the same folder and moved into place (``os.replace``),
    so a reader never sees half a file. Reads go to the file every time, so every service
    over the same folder (other threads, other processes, a restarted server, the CLI)
    shows the same names.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def path(self, pair: Pair) -> Path:
        """The pair's file: in the current owner's workspace folder inside a request
        (``<folder>/workspaces/<ws>/``), else in ``folder`` itself (CLI, exports)."""
        name = f"{pair.dataset.fingerprint[:24]}-{pair.model.fingerprint[:24]}.json"
        owner = current_owner()
        if owner is None:
            return self.folder / name
        return self.folder / "workspaces" / workspace_id(owner) / name

    def get(self, pair: Pair) -> dict[str, str]:
        """``{type id: name}`` of the renamed types (empty when none, or unreadable)."""
        return self._read(pair)[0]

    def _read(self, pair: Pair) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The renames and the earlier states (oldest first; empty when unreadable)."""
        try:
            raw = json.loads(self.path(pair).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, []
        if not isinstance(raw, dict) or raw.get("dataset") != pair.dataset.fingerprint:
            return {}, []
        if raw.get("model") != pair.model.fingerprint:
            return {}, []
        names = raw.get("names")
        if not isinstance(names, dict):
            return {}, []
        previous = [
            {str(k): str(v) for k, v in p.items()}
            for p in raw.get("previous") or []
            if isinstance(p, dict)
        ]
        return {str(k): str(v) for k, v in names.items()}, previous[-UNDO_RENAMES:]

    def undo(self, pair: Pair) -> dict[str, str]:
        """Step back over the last rename or reset; returns the renames now (one line when
        there is nothing to undo)."""
        with self._lock:
            _, previous = self._read(pair)
            if not previous:
                msg = "no rename to undo"
                raise InvalidSelection(msg)
            names = previous.pop()
            self._write(pair, names, previous)
            return names

    def rename(self, pair: Pair, type_id: str, new: str, ids: Sequence[str]) -> dict[str, str]:
        """Name type ``type_id`` (one of ``ids``, the pair's type ids) ``new``; returns the
        renames. A name equal to the id drops that rename. Refusals: :func:`check_type_name`.
        """
        with self._lock:
            names, previous = self._read(pair)
            before = dict(names)
            shown = {t: names.get(t, t) for t in ids}
            name = check_type_name(new, type_id, shown)
            if name == type_id:
                names.pop(type_id, None)
            else:
                names[type_id] = name
            self._write(pair, names, [*previous, before])
            return names

    def reset(self, pair: Pair) -> None:
        """Forget every rename of the pair (types show their automatic names again; Undo
        brings them back)."""
        with self._lock:
            names, previous = self._read(pair)
            if names:
                self._write(pair, {}, [*previous, names])

    def _write(self, pair: Pair, names: Mapping[str, str], previous: list[dict[str, str]]) -> None:
        path = self.path(pair)
        previous = previous[-UNDO_RENAMES:]
        if not names and not previous:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "dataset": pair.dataset.fingerprint,
            "model": pair.model.fingerprint,
            "names": dict(names),
            "previous": previous,
        }
        fd, tmp_name = tempfile.mkstemp(prefix=".names-", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=1, ensure_ascii=False)
            tmp.replace(path)  # os.replace: atomic within the folder
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


__all__ = [
    "MAX_TYPE_NAME",
    "PROTEIN_MARK",
    "CellTypeNames",
    "check_type_name",
    "display_name",
    "short_protein_name",
    "short_protein_names",
]
