"""A gene's or protein's values per cell, and which batches measured which proteins.

Raw values are log1p of counts (genes: per 10k, library-size normalised), denoised values
log1p of the model's estimate, foreground the probability that a protein count is
foreground. A protein a batch did not measure reads as the model's prediction there
(imputed). Minified data (scvi-hub: counts dropped, the latent posterior kept) has no raw
values: they read as denoised. Which of these a colouring shows:
:data:`dashboard.views.colours.LAYERS`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.errors import InvalidSelection
from dashboard.views.integration import MIXING_COLUMN, batch_mixing_values
from dashboard.views.label_sets import is_set_column, label_set_labels

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


def _dataset(service: AnalysisService, pair: Pair) -> Any:
    return service.dataset(pair)


class _ColumnCache:
    """Per-dataset CSC copy of the RNA counts and library sizes: one gene column is then a
    slice instead of a scan of the whole CSR matrix (kept for the two newest datasets)."""

    def __init__(self, size: int = 2) -> None:
        self._items: OrderedDict[str, tuple[sp.csc_matrix, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, data: Any) -> tuple[sp.csc_matrix, np.ndarray]:
        key = data.fingerprint()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        csc = data.rna.tocsc()
        lib = np.asarray(data.rna.sum(axis=1), dtype=np.float64).ravel()
        with self._lock:
            self._items[key] = (csc, lib)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return csc, lib


_columns = _ColumnCache()


def warm_gene_columns(service: AnalysisService, pair: Pair) -> None:
    """Build (once per process and dataset) the column-major counts that
    :func:`gene_raw` reads (nothing for minified data: it has no counts)."""
    data = _dataset(service, pair)
    if data.minified is None:
        _columns.get(data)


def gene_counts(service: AnalysisService, pair: Pair) -> sp.csc_matrix | None:
    """The RNA counts, column-major (one gene is a slice); ``None`` for minified data."""
    data = _dataset(service, pair)
    return None if data.minified is not None else _columns.get(data)[0]


#: What a page says where raw counts would be shown for minified data.
NO_COUNTS_NOTE = (
    "Raw counts are not in this file (minified data: only the latent posterior is kept); "
    "denoised values shown."
)


def is_minified(service: AnalysisService, pair: Pair) -> bool:
    """True if the pair's dataset is minified (scvi-hub: counts dropped, the latent
    posterior kept), so nothing that needs raw counts can be shown."""
    return _dataset(service, pair).minified is not None


def _panel(service: AnalysisService, pair: Pair) -> np.ndarray | None:
    """``(n_batch, n_proteins)`` bool over the dataset's batches and proteins: ``True``
    where a batch measured a protein (``None``: every batch measured every protein).

    The data's own mask; for minified data (all-zero counts) the model's, matched by batch
    and protein name.
    """
    data = _dataset(service, pair)
    mask = data.protein_batch_mask
    if mask is None and data.minified is not None:
        mask = _model_panel(service.model(pair), data)
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    return None if mask[present].all() else mask


def _model_panel(model: Any, data: Any) -> np.ndarray | None:
    if model.protein_batch_mask is None:
        return None
    measured = np.asarray(model.protein_batch_mask, dtype=bool)
    rows = pd.Index([str(b) for b in model.batch_categories]).get_indexer(data.batch_categories)
    cols = pd.Index([str(p) for p in model.protein_names]).get_indexer(data.protein_names)
    out = np.ones((data.n_batch, data.n_proteins), dtype=bool)
    for i, r in enumerate(rows):
        if r >= 0:
            out[i, cols >= 0] = measured[r, cols[cols >= 0]]
    return out


def unmeasured_batches(service: AnalysisService, pair: Pair, protein: str) -> list[str]:
    """The batches (with cells) that did not measure ``protein``: there its raw, denoised
    and foreground values are the model's predictions (empty: measured everywhere)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    mask = _panel(service, pair)
    if mask is None:
        return []
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    missing = present & ~mask[:, pos]
    return [str(data.batch_categories[b]) for b in np.flatnonzero(missing)]


def imputed_cells(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray | None:
    """Per cell: ``True`` where its batch did not measure ``protein`` (``None``: none)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    mask = _panel(service, pair)
    if mask is None:
        return None
    out = ~mask[data.batch, pos]
    return out if out.any() else None


def _protein_position(data: Any, pair: Pair, protein: str) -> int:
    """Column of ``protein`` in the dataset; an unknown name is an :class:`InvalidSelection`."""
    pos = int(data.protein_names.get_indexer([protein])[0])
    if pos < 0:
        msg = f"no protein {protein!r} in {pair.dataset.name or 'the dataset'}"
        raise InvalidSelection(msg)
    return pos


def panel_summary(service: AnalysisService, pair: Pair) -> str | None:
    """One line on the proteins some batches did not measure, e.g. ``"31 of 111 proteins
    not measured in 2 batches (s03, s11); the model imputes them there"``; ``None`` when
    every batch measured every protein."""
    mask = _panel(service, pair)
    if mask is None:
        return None
    data = _dataset(service, pair)
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    missing = ~mask & present[:, None]
    proteins = int(missing.any(axis=0).sum())
    batches = [str(data.batch_categories[b]) for b in np.flatnonzero(missing.any(axis=1))]
    what = "protein" if data.n_proteins == 1 else "proteins"
    where = "batch" if len(batches) == 1 else "batches"
    return (
        f"{proteins} of {data.n_proteins} {what} not measured in {len(batches)} {where} "
        f"({names_list(batches)}); the model imputes them there"
    )


def names_list(names: Sequence[str], shown: int = 6) -> str:
    """``"s03, s11"``; past ``shown`` names ``"a, b, c, d, e, f and 4 more"``."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def gene_raw(service: AnalysisService, pair: Pair, gene: str) -> np.ndarray:
    """log1p of counts per 10k (library-size normalised) for one gene, per cell (minified
    data, which has no counts: :func:`gene_denoised`)."""
    data = _dataset(service, pair)
    if data.minified is not None:
        return gene_denoised(service, pair, gene)
    pos = data.var_names.get_indexer([gene])[0]
    if pos < 0:
        msg = f"no gene {gene!r} in {pair.dataset.name or 'the dataset'}"
        raise InvalidSelection(msg)
    csc, lib = _columns.get(data)
    col = np.asarray(csc[:, pos].toarray(), dtype=np.float64).ravel()
    return np.log1p(col / np.maximum(lib, 1.0) * 1e4).astype(np.float32)


def gene_denoised(
    service: AnalysisService, pair: Pair, gene: str, *, batch: str | None = None
) -> np.ndarray:
    """log1p of the model's denoised expression (per 10k) for one gene, per cell (decoded
    as if measured in ``batch``, or averaged over all, when given)."""
    values = service.denoised_rna(pair, [gene], batch=batch)[gene].to_numpy(dtype=np.float32)
    return np.log1p(values)


def protein_raw(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """log1p of the raw protein counts, per cell; the model's prediction (denoised) in
    batches that did not measure it, and everywhere for minified data (no counts)."""
    data = _dataset(service, pair)
    _protein_position(data, pair, protein)  # an unknown name: one line, before anything
    if data.minified is not None:
        return protein_denoised(service, pair, protein)
    values, unmeasured = _log_counts(service, pair, protein)
    if unmeasured is not None:  # e.g. a mapped query without this antibody: its prediction
        values[unmeasured] = protein_denoised(service, pair, protein)[unmeasured]
    return values


def _log_counts(
    service: AnalysisService, pair: Pair, protein: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """log1p of the raw counts of ``protein`` per cell, and :func:`imputed_cells` (the
    cells whose batch did not measure it, whose counts mean nothing)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    values = np.log1p(np.asarray(data.protein[:, pos], dtype=np.float32))
    return values, imputed_cells(service, pair, protein)


#: A linked view's layer of raw protein counts where measured and no value (NaN: not
#: drawn) where the cell's batch did not measure the protein: what it shows while the
#: model's predictions for those cells are still computed (:mod:`dashboard.views.pending`).
MEASURED_COUNTS = "raw-measured"


def protein_counts(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """log1p of the raw protein counts, per cell, NaN where its batch did not measure
    ``protein`` (no model involved: :func:`protein_raw` fills those with predictions)."""
    values, unmeasured = _log_counts(service, pair, protein)
    if unmeasured is not None:
        values[unmeasured] = np.nan
    return values


def _protein_column(frame: pd.DataFrame, protein: str, what: str) -> np.ndarray:
    if protein not in frame.columns:
        msg = f"the model has no {what} for protein {protein!r}"
        raise InvalidSelection(msg)
    return frame[protein].to_numpy(dtype=np.float32)


def protein_denoised(
    service: AnalysisService, pair: Pair, protein: str, *, batch: str | None = None
) -> np.ndarray:
    """log1p of the denoised (foreground) protein value, per cell (decoded as if measured
    in ``batch``, or averaged over all, when given)."""
    table = service.denoised_protein(pair, batch=batch)
    return np.log1p(_protein_column(table, protein, "denoised value"))


def protein_foreground(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """Probability that the protein count is foreground, per cell."""
    return _protein_column(service.foreground_probability(pair), protein, "foreground value")


def obs_labels(service: AnalysisService, pair: Pair, column: str) -> pd.Series:
    """A per-cell annotation: cell type, Leiden cluster, batch, a label set
    (``labels:<name>``) or any obs column."""
    data = _dataset(service, pair)
    if column == "cell_type":
        return service.shown_cell_types(pair)
    if column == "cluster":
        return service.clusters(pair)
    if column == "batch":
        cats = list(data.batch_categories)
        return pd.Series(
            pd.Categorical.from_codes(data.batch, categories=cats), index=data.obs_names
        )
    if column == MIXING_COLUMN:  # the integration scorecard's per-cell batch mixing
        return batch_mixing_values(service, pair)
    if is_set_column(column):  # a label set of the user's workspace
        return label_set_labels(service, pair, column)
    if column not in data.obs.columns:
        msg = f"no cell annotation {column!r}; choose one of {list(data.obs.columns)}"
        raise InvalidSelection(msg)
    return data.obs[column]
