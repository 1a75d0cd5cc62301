"""Denoised RNA and protein, protein foreground probability and imputed proteins.

Thin, typed wrappers over :class:`~model.totalvi.TotalVI` queries (spec §7.3, §7.4, §7.8) that
fix the dashboard's conventions: tables indexed by cell name, columns by feature, float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI


def denoised_expression(
    model: TotalVI,
    data: CiteSeqData,
    *,
    n_samples: int = 5,
    library_size: float = 1e4,
    include_protein_background: bool = False,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Denoised RNA (per ``library_size`` counts) and protein foreground, mean of samples.

    RNA is ``px_scale * library_size``; protein is ``rate_fore * (1 - pi)`` (plus background
    when asked), both averaged over ``n_samples`` posterior samples at the observed batch.
    """
    rna, pro = model.get_normalized_expression(
        data,
        n_samples=n_samples,
        library_size=library_size,
        include_protein_background=include_protein_background,
        return_mean=True,
        seed=seed,
    )
    return rna.astype(np.float32), pro.astype(np.float32)


def denoised_protein(
    model: TotalVI,
    data: CiteSeqData,
    *,
    n_samples: int = 5,
    include_protein_background: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Denoised protein (foreground) only: cells x proteins."""
    _, pro = model.get_normalized_expression(
        data,
        gene_list=[],
        n_samples=n_samples,
        include_protein_background=include_protein_background,
        return_mean=True,
        seed=seed,
    )
    return pro.astype(np.float32)


def foreground_probability(
    model: TotalVI, data: CiteSeqData, *, n_samples: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Probability that each protein count is foreground (``1 - sigmoid(mixing)``)."""
    return model.get_protein_foreground_probability(data, n_samples=n_samples, seed=seed).astype(
        np.float32
    )


def imputed_proteins(
    model: TotalVI, data: CiteSeqData, *, n_samples: int = 5, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Protein values for every cell, decoded in the batches that measured each protein,
    and a boolean table marking the entries that were imputed (not measured)."""
    values, imputed = model.impute_missing_proteins(data, n_samples=n_samples, seed=seed)
    return values.astype(np.float32), imputed
