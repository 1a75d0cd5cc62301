"""Differential expression for the dashboard: cell types one-vs-rest and any two selections.

What the dashboard adds to :mod:`model.differential` (TotalVI's Bayesian "change" mode,
spec §7.7): the checks of the selections compared and the marker table the pages show.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection, LimitExceeded


def selection_positions(selection: Any, n_cells: int, *, name: str = "selection") -> np.ndarray:
    """Sorted unique cell positions from positions or a boolean mask; checks bounds."""
    arr = np.asarray(selection)
    if arr.dtype == bool:
        if arr.shape != (n_cells,):
            msg = f"{name}: boolean mask has {arr.size} entries for {n_cells} cells"
            raise InvalidSelection(msg)
        arr = np.flatnonzero(arr)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        msg = f"{name}: give cell positions (integers) or a boolean mask, got {arr.dtype}"
        raise InvalidSelection(msg)
    arr = np.unique(arr.astype(np.int64).ravel())
    if arr.size == 0:
        msg = f"{name} is empty: select at least one cell"
        raise InvalidSelection(msg)
    if arr[0] < 0 or arr[-1] >= n_cells:
        msg = f"{name}: cell positions must lie in 0..{n_cells - 1}"
        raise InvalidSelection(msg)
    return arr


def top_markers(
    table: pd.DataFrame,
    *,
    group: str | None = None,
    modality: str | None = None,
    n: int = 10,
    direction: str = "up",
) -> pd.DataFrame:
    """The ``n`` strongest DE features of one comparison: FDR-significant first, then by
    ``lfc_mean`` (descending for ``"up"``, ascending for ``"down"``)."""
    df = table
    if group is not None:
        df = df[df["group1"] == group]
    if modality is not None:
        df = df[df["modality"] == modality]
    fdr_col = next((c for c in df.columns if c.startswith("is_de_fdr_")), None)
    sign = 1.0 if direction == "up" else -1.0
    df = df[sign * df["lfc_mean"] > 0]
    keys = [sign * df["lfc_mean"]]
    if fdr_col is not None:
        keys.insert(0, df[fdr_col].astype(int))
    order = np.lexsort([k.to_numpy() for k in reversed(keys)])[::-1]
    return df.iloc[order[:n]]


def check_groups(
    pos1: np.ndarray, pos2: np.ndarray | None, n_cells: int, *, max_cells: int | None = None
) -> None:
    """Refuse two groups (``pos2=None``: the rest) that DE cannot compare: shared cells, a
    rest that is empty, a group over ``max_cells``."""
    if pos2 is not None and np.intersect1d(pos1, pos2).size:
        msg = "the two selections share cells; pick disjoint groups"
        raise InvalidSelection(msg)
    if pos2 is None and pos1.size == n_cells:
        msg = "the selection holds every cell, so 'the rest' is empty"
        raise InvalidSelection(msg)
    if max_cells is not None:
        for p, what in ((pos1, "group 1"), (pos2, "group 2")):
            if p is not None and p.size > max_cells:
                msg = f"{what} has {p.size} cells; the limit is {max_cells}"
                raise LimitExceeded(msg)
