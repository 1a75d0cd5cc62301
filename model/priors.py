"""Data-driven initialisations: the empirical protein background prior and library priors.

The background prior follows scvi-tools' ``_get_totalvi_protein_priors`` (spec §3.1): per batch,
a 2-component Gaussian mixture on each of 100 sampled cells' log protein counts, keeping the
lower component as the background.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp


def protein_background_prior(
    protein: np.ndarray,
    batch: np.ndarray,
    n_batch: int,
    *,
    protein_batch_mask: np.ndarray | None = None,
    n_cells: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(prior_mean, prior_scale)``, each ``(n_proteins, n_batch)`` float32."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    rng = np.random.RandomState(seed)
    n_proteins = protein.shape[1]
    means = np.zeros(n_batch, dtype=np.float64)
    scales = np.ones(n_batch, dtype=np.float64)
    for b in range(n_batch):
        cells = np.flatnonzero(batch == b)
        if cells.size == 0:
            means[b], scales[b] = 0.0, 1.0
            continue
        pro = protein[cells]
        if protein_batch_mask is not None:
            pro = pro[:, protein_batch_mask[b]]
            if pro.shape[1] < 5:
                means[b], scales[b] = 0.0, 0.05
                continue
        chosen = rng.choice(pro.shape[0], size=n_cells, replace=True)
        mus, sds = np.empty(n_cells), np.empty(n_cells)
        for i, c in enumerate(chosen):
            values = np.log1p(pro[c]).reshape(-1, 1)
            gmm = GaussianMixture(n_components=2, random_state=rng.randint(2**31 - 1))
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConvergenceWarning)
                try:
                    gmm.fit(values)
                except (ConvergenceWarning, ValueError):
                    mus[i], sds[i] = 0.0, 0.05
                    continue
            lower = int(np.argmin(gmm.means_.ravel()))
            mus[i] = gmm.means_.ravel()[lower]
            sds[i] = np.sqrt(gmm.covariances_.ravel()[lower])
        means[b] = mus.mean()
        scales[b] = np.sqrt(np.sum(sds**2) / n_cells**2)
    prior_mean = np.tile(means, (n_proteins, 1)).astype(np.float32)
    prior_scale = np.tile(scales, (n_proteins, 1)).astype(np.float32)
    return prior_mean, prior_scale


def library_size_prior(
    rna: sp.spmatrix | np.ndarray, batch: np.ndarray, n_batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch mean and variance of log total RNA counts, each ``(1, n_batch)``."""
    totals = np.asarray(rna.sum(axis=1)).ravel()
    means = np.zeros((1, n_batch), dtype=np.float32)
    variances = np.ones((1, n_batch), dtype=np.float32)
    for b in range(n_batch):
        lib = totals[batch == b]
        if lib.size == 0:
            continue
        log_lib = np.log(np.maximum(lib, 1e-8))
        means[0, b] = log_lib.mean()
        variances[0, b] = log_lib.var()
    return means, variances
