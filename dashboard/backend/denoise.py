"""Denoised RNA and protein, protein foreground probability and imputed proteins.

Thin, typed wrappers over :class:`~model.totalvi.TotalVI` queries (spec §7.3, §7.4, §7.8) that
fix the dashboard's conventions: tables indexed by cell name, columns by feature, float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from model.protein_scale import MEASURED, ProteinScale

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI


#: The batch choice "decoded in every batch, averaged" (scvi-tools' ``transform_batch`` list).
ALL_BATCHES = "__all__"


@dataclass(frozen=True)
class Sampling:
    """How a denoised view summarises the posterior: the mean of ``n_samples`` samples
    (``seed``) decoded at each cell's observed batch, or as if measured in the batches of
    ``transform_batch`` (one: a counterfactual; several: averaged over them, as
    scvi-tools' ``transform_batch`` list), proteins on ``protein_scale`` (measured: times
    the batch's capture efficiency, as the counts), with the background rate or without."""

    n_samples: int = 5
    seed: int = 0
    protein_scale: ProteinScale = MEASURED
    include_protein_background: bool = False
    transform_batch: tuple[str, ...] | None = None

    def model_args(self) -> dict[str, Any]:
        """The arguments of the model's normalized-expression queries."""
        args = {**asdict(self), "return_mean": True}
        batches = args.pop("transform_batch")
        return {**args, "transform_batch": None if batches is None else list(batches)}


def denoised_expression(
    model: TotalVI, data: CiteSeqData, *, library_size: float = 1e4, how: Sampling = Sampling()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Denoised RNA (per ``library_size`` counts) and protein foreground, mean of samples.

    RNA is ``px_scale * library_size``; protein is ``rate_fore * (1 - pi)`` (plus background
    when asked), both as ``how`` says (:class:`Sampling`).
    """
    args = how.model_args()
    rna, pro = model.get_normalized_expression(data, library_size=library_size, **args)
    return rna.astype(np.float32), pro.astype(np.float32)


def denoised_chunks(
    model: TotalVI,
    data: CiteSeqData,
    *,
    chunk_cells: int = 4096,
    library_size: float = 1e4,
    how: Sampling = Sampling(),
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """:func:`denoised_expression` in chunks of cells: yields ``(first cell, rna, protein)``.

    The values are bit for bit those of :func:`denoised_expression` (the model's minibatches
    and random stream are the same; chunks only group minibatches). ``rna`` is a view of a
    buffer reused for the next chunk: copy what must outlive the iteration step. Memory is
    one ``chunk_cells x genes`` buffer, never ``cells x genes``.
    """
    chunk_cells = max(1, int(chunk_cells))
    buffer: np.ndarray | None = None
    pro_parts: list[np.ndarray] = []
    filled = first = 0
    args = how.model_args()
    for idx, rna, pro in model.iter_normalized_expression(data, library_size=library_size, **args):
        if buffer is None:
            buffer = np.empty((max(chunk_cells, len(idx)), rna.shape[1]), dtype=np.float32)
        if filled + len(idx) > buffer.shape[0]:
            yield first, buffer[:filled], np.concatenate(pro_parts).astype(np.float32)
            first, filled, pro_parts = first + filled, 0, []
        buffer[filled : filled + len(idx)] = rna
        pro_parts.append(pro)
        filled += len(idx)
    if buffer is not None and filled:
        yield first, buffer[:filled], np.concatenate(pro_parts).astype(np.float32)


def chunk_cells_for(
    n_genes: int, *, budget_bytes: int = 64 * 1024**2, minibatch: int = 256
) -> int:
    """Cells per chunk so one ``cells x n_genes`` float32 chunk stays near ``budget_bytes``
    (a multiple of the model's minibatch, at least one minibatch)."""
    cells = budget_bytes // max(1, 4 * n_genes)
    return max(minibatch, cells // minibatch * minibatch)


def denoised_protein(
    model: TotalVI, data: CiteSeqData, how: Sampling = Sampling()
) -> pd.DataFrame:
    """Denoised protein (foreground) only, cells x proteins, as ``how`` says."""
    _, pro = model.get_normalized_expression(data, gene_list=[], **how.model_args())
    return pro.astype(np.float32)


def foreground_probability(
    model: TotalVI, data: CiteSeqData, how: Sampling = Sampling()
) -> pd.DataFrame:
    """Probability that each protein count is foreground (``1 - sigmoid(mixing)``), the
    mean of ``how.n_samples`` samples."""
    found = model.get_protein_foreground_probability(data, n_samples=how.n_samples, seed=how.seed)
    return found.astype(np.float32)


def imputed_proteins(
    model: TotalVI, data: CiteSeqData, how: Sampling = Sampling()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Protein values for every cell, decoded in the batches that measured each protein
    (on ``how.protein_scale``), and a boolean table marking the entries that were imputed."""
    values, imputed = model.impute_missing_proteins(
        data, n_samples=how.n_samples, seed=how.seed, protein_scale=how.protein_scale
    )
    return values.astype(np.float32), imputed


def unmeasured_proteins(model: TotalVI, data: CiteSeqData) -> np.ndarray | None:
    """``(n_cells, n_proteins)`` bool: True where the cell's batch did not measure the protein
    (the model's ``protein_batch_mask``; e.g. a mapped query without those antibodies).

    ``None`` when every protein counts as measured for every cell, or when the dataset's
    batches cannot be matched to the model's by name.
    """
    if model.protein_batch_mask is None:
        return None
    measured = np.asarray(model.protein_batch_mask, dtype=bool)
    if measured.all():
        return None
    cats = list(model.batch_categories)
    if len(cats) == 1:
        codes = np.zeros(data.n_cells, dtype=np.int64)
    else:
        if any(c not in cats for c in data.batch_categories):
            return None
        lookup = np.array([cats.index(c) for c in data.batch_categories], dtype=np.int64)
        codes = lookup[data.batch]
    out = ~measured[codes]
    return out if out.any() else None


def fill_unmeasured(
    frame: pd.DataFrame,
    model: TotalVI,
    data: CiteSeqData,
    predict: Callable[[np.ndarray, list[int], list[str]], np.ndarray],
) -> pd.DataFrame:
    """Replace the entries of unmeasured proteins by predictions decoded in measuring batches.

    Parameters
    ----------
    frame
        Cells x proteins, in ``data`` order (e.g. denoised protein at each cell's own batch).
    model, data
        The pair; :func:`unmeasured_proteins` says which entries to replace.
    predict
        ``predict(cell positions, measuring batch codes, proteins)`` -> ``(cells, proteins)``
        values averaged over those batches (``transform_batch``).

    Returns
    -------
    A copy of ``frame`` (or ``frame`` itself when nothing is unmeasured).
    """
    missing = unmeasured_proteins(model, data)
    if missing is None:
        return frame
    measured = np.asarray(model.protein_batch_mask, dtype=bool)
    names = [str(p) for p in model.protein_names]
    out = frame.copy()
    values = out.to_numpy(copy=True)
    col = {str(c): i for i, c in enumerate(out.columns)}
    # cells that miss the same proteins are predicted together, proteins grouped by the
    # batches that measured them
    patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    for k, pattern in enumerate(patterns):
        cells = np.flatnonzero(inverse.ravel() == k)
        groups: dict[tuple[int, ...], list[str]] = {}
        for j in np.flatnonzero(pattern):
            batches = tuple(int(b) for b in np.flatnonzero(measured[:, j]))
            if batches and names[j] in col:
                groups.setdefault(batches, []).append(names[j])
        for batches, proteins in groups.items():
            pred = predict(cells, list(batches), proteins)
            values[np.ix_(cells, [col[p] for p in proteins])] = pred
    return pd.DataFrame(values.astype(frame.dtypes.iloc[0]), index=out.index, columns=out.columns)
