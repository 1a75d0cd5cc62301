"""Differential expression for the dashboard: cell types one-vs-rest and any two selections.

What the dashboard adds to :mod:`model.differential` (TotalVI's Bayesian "change" mode,
spec §7.7): the checks of the selections compared and the marker table the pages show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection, LimitExceeded

#: Bounds of the DE controls a user may set (checked on every request: forged values too).
DELTA_RANGE = (0.0, 5.0)
FDR_RANGE = (0.001, 0.5)
SAMPLES_RANGE = (100, 50_000)


@dataclass(frozen=True)
class DEControls:
    """What a user may change of a DE test: the change threshold ``delta`` (|LFC| in log2
    units), the posterior FDR target, ``batch_correction`` (draws decoded in every batch,
    scvi-tools' option) and ``n_samples_overall`` posterior draws per group. Fields of
    :class:`model.differential.ChangeMode`; the defaults are scvi-tools'."""

    delta: float = 0.25
    fdr_target: float = 0.05
    batch_correction: bool = False
    n_samples_overall: int = 5000

    @classmethod
    def checked(cls, raw: Mapping[str, Any] | None, default: DEControls) -> DEControls:
        """Controls from a request or job payload (any subset of the fields over
        ``default``); a value of the wrong type or out of range raises one line naming
        the field."""
        if raw is None:
            return default
        if not isinstance(raw, Mapping):
            raise InvalidSelection("DE controls: expected a mapping of settings")
        unknown = sorted(set(raw) - set(asdict(default)))
        if unknown:
            raise InvalidSelection(f"DE controls: unknown setting {unknown[0]!r}")
        checks = {
            "delta": lambda v: _number(v, "delta (|LFC| threshold)", DELTA_RANGE),
            "fdr_target": lambda v: _number(v, "FDR target", FDR_RANGE),
            "batch_correction": lambda v: _flag(v, "batch correction"),
            "n_samples_overall": lambda v: int(
                _number(v, "posterior samples", SAMPLES_RANGE, whole=True)
            ),
        }
        # only what the request sets is checked: configured defaults may lie outside
        return replace(default, **{key: checks[key](value) for key, value in raw.items()})

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (job payloads, the browser's store)."""
        return asdict(self)


#: Named presets; the first is scvi-tools' ``differential_expression`` defaults.
DE_PRESETS: dict[str, DEControls] = {
    "scvi-tools defaults": DEControls(),
    "batch-corrected (scvi-tools)": DEControls(batch_correction=True),
    "strict (|LFC| > 1, FDR 1%)": DEControls(delta=1.0, fdr_target=0.01),
    "quick look (1,000 samples)": DEControls(n_samples_overall=1000),
}


def _number(value: Any, what: str, bounds: tuple[float, float], *, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InvalidSelection(f"DE controls: {what} must be a number, got {value!r:.40}")
    if whole and float(value) != int(value):
        raise InvalidSelection(f"DE controls: {what} must be a whole number, got {value}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise InvalidSelection(f"DE controls: {what} must lie in {lo:g}..{hi:g}, got {value:g}")
    return float(value)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSelection(f"DE controls: {what} must be true or false, got {value!r:.40}")
    return value


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
