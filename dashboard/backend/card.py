"""The scvi-hub model card of the active model, and its numbers beside ours.

:func:`hub_card_for` finds the ``README.md`` of a model folder (as the model loader does,
:func:`model.model_folder.locate_model`) and parses it once per file version.
:func:`compare_tables` and :func:`compare_summary` set the card's metric tables and summary
statistics beside the ones recomputed here; they are plain pandas, for the pages to render.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.hub_card import HubCard, ModelCardError, read_model_card

__all__ = ["SUMMARY_KEYS", "compare_summary", "compare_tables", "hub_card_for"]

#: Summary statistics compared between the card and this model and data.
SUMMARY_KEYS = ("n_cells", "n_vars", "n_proteins", "n_batch", "n_labels", "n_latent")
#: Column suffixes of :func:`compare_tables`.
CARD, OURS, DIFF = "card", "ours", "ours − card"
_CACHE_SIZE = 16
_cache: OrderedDict[tuple[str, int, int], HubCard] = OrderedDict()
_lock = threading.Lock()


def hub_card_for(model_path: str | None) -> HubCard | None:
    """The parsed model card beside a model (a model folder or its ``model.pt``), or
    ``None`` when it has none or it cannot be read (too large, not UTF-8, a link outside
    the folder).

    Cached by the card's resolved path, modification time and size, so an edited card is
    read again.
    """
    if not model_path:
        return None
    from model.errors import CheckpointError
    from model.model_folder import locate_model

    try:
        card = locate_model(model_path).card
        if card is None:
            return None
        real = Path(card).resolve()
        st = real.stat()
    except (CheckpointError, OSError):
        return None
    key = (str(real), st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    try:
        parsed = read_model_card(real)
    except (ModelCardError, OSError):
        return None
    with _lock:
        _cache[key] = parsed
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return parsed


def clear_cache() -> None:
    """Forget every parsed card (tests)."""
    with _lock:
        _cache.clear()


def _norm(name: Any) -> str:
    return " ".join(str(name).split()).casefold()


def _aligned(card: list[Any], ours: list[Any]) -> list[tuple[Any, Any, Any]]:
    """``(shown name, card name, our name)``: the card's order, then ours not in it; names
    match ignoring case and runs of white space."""
    mine = {}
    for name in ours:
        mine.setdefault(_norm(name), name)
    out, seen = [], set()
    for name in card:
        key = _norm(name)
        if key in seen:
            continue
        seen.add(key)
        out.append((name, name, mine.get(key)))
    out += [(name, None, name) for key, name in mine.items() if key not in seen]
    return out


def _number(frame: pd.DataFrame | None, row: Any, col: Any) -> float:
    if frame is None or row is None or col is None:
        return float("nan")
    try:
        value = frame.loc[row, col]
    except KeyError:
        return float("nan")
    if isinstance(value, pd.Series):  # a repeated row name: the first
        value = value.iloc[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def compare_tables(card: pd.DataFrame | None, ours: pd.DataFrame | None) -> pd.DataFrame:
    """The card's table beside ours: for each column ``c`` (aligned by name) the columns
    ``"c: card"``, ``"c: ours"`` and ``"c: ours − card"``, rows aligned by name (the card's
    first, then ours). A value one side lacks is NaN.

    The index keeps the card's index name (else ours').
    """
    empty = pd.DataFrame()
    c = card if card is not None else empty
    o = ours if ours is not None else empty
    rows = _aligned(list(c.index), list(o.index))
    cols = _aligned(list(c.columns), list(o.columns))
    data: dict[str, list[float]] = {}
    for shown, c_col, o_col in cols:
        a = [_number(card, c_row, c_col) for _, c_row, _ in rows]
        b = [_number(ours, o_row, o_col) for _, _, o_row in rows]
        data[f"{shown}: {CARD}"] = a
        data[f"{shown}: {OURS}"] = b
        data[f"{shown}: {DIFF}"] = list(np.subtract(b, a)) if rows else []
    index = pd.Index([shown for shown, _, _ in rows], name=c.index.name or o.index.name)
    return pd.DataFrame(data, index=index, columns=list(data), dtype=np.float64)


def _card_stat(card: HubCard, key: str) -> Any:
    stats = card.summary_statistics
    if key in stats:
        return stats[key]
    if key == "n_latent":  # scvi-hub lists n_latent_qzm; the parameters have n_latent
        for alt in (stats.get("n_latent_qzm"), card.model_parameters.get("n_latent")):
            if alt is not None:
                return alt
    return None


def compare_summary(card: HubCard, ours: Mapping[str, Any]) -> pd.DataFrame:
    """Summary statistics of the card beside this model and data (:data:`SUMMARY_KEYS`,
    then the card's other numeric ones): columns ``card``, ``this data``, ``difference``
    (this data − card) and ``same`` (``"same"``, ``"differs"`` or ``"–"`` when one side
    lacks it)."""
    keys = list(SUMMARY_KEYS) + [k for k in card.summary_statistics if k not in SUMMARY_KEYS]
    rows = []
    for key in keys:
        a, b = _card_stat(card, key), ours.get(key)
        na, nb = _as_number(a), _as_number(b)
        if a is None and b is None:
            continue
        if na is not None and nb is not None:
            diff: float | int | None = nb - na
            if _is_int(a) and _is_int(b):
                diff = int(b) - int(a)
            same = "same" if diff == 0 else "differs"
        else:
            diff = None
            same = "–" if a is None or b is None else ("same" if str(a) == str(b) else "differs")
        rows.append({"key": key, "card": a, "this data": b, "difference": diff, "same": same})
    columns = ["key", "card", "this data", "difference", "same"]
    frame = pd.DataFrame(rows, columns=columns, dtype=object)  # ints stay ints
    return frame.set_index("key").rename_axis("Statistic")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None
