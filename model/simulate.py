"""Simulated CITE-seq data from a TotalVI-like generative process (numpy/pandas/anndata only).

Used to benchmark the model and the dashboard at sizes no real file in the repository has
(the seed's 72k-cell, 17-batch, 111-protein layout, or 1M cells). The generative process:

- ``n_cell_types`` cell types, each with a latent mean ``mu_k ~ N(0, type_spread^2 I)`` in
  ``n_latent`` dimensions; a cell of type ``k`` has ``z ~ N(mu_k, I)``.
- RNA: ``rho = softmax(gene_base + z @ W + batch_offset[b])`` (``W`` and the batch offset
  Gaussian), library ``l ~ LogNormal(batch_log_lib[b], 0.35)``; counts
  ``NB(mean = l * rho, dispersion theta_g)`` drawn as Poisson(Gamma), per gene dispersion.
- Protein: background ``beta[b, p] ~ LogNormal(log_bg[p] + N(0, 0.3))`` per batch and
  protein; foreground ``beta * (1 + softplus(z @ V + v0))``; a cell/protein is foreground
  with probability ``sigmoid(z @ U + u0)``; the rate is the chosen component times a per-cell
  log-normal factor, then NB noise with per-protein dispersion.
- Missing proteins: antibody panels, as in real multi-batch CITE-seq. The first batch
  uses the full panel; every other batch uses one of ``n_panels`` panels at random: the full
  one or one of ``n_panels - 1`` reduced panels, each lacking its own random
  ``missing_protein_fraction`` of the proteins (all-zero columns in those batches). Every
  protein stays measured somewhere (in the first batch at least).

RNA counts are built in chunks of cells straight into a CSR float32 matrix, so 1M cells x
4000 genes (~5% non-zero, ~1.6 GB of CSR) fits in memory; dense work is one chunk at a time.

The truth is kept: ``obs["batch"]``, ``obs["cell_type"]`` (categoricals), ``obsm["z_true"]``
and ``uns["simulation"]`` (parameters and the ``protein_batch_mask``, batches x proteins,
``True`` = measured). Proteins are in ``obsm["protein_expression"]``, a DataFrame with the
protein names as columns (the layout :func:`model.data.from_anndata` reads).
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["BLOOD_TYPE_NAMES", "simulate_cite_seq"]

#: Blood cell-type names for a simulated example that reads like a PBMC atlas (labels only:
#: each type's profile is random, not that type's biology).
BLOOD_TYPE_NAMES = (
    "CD4 naive T",
    "CD4 memory T",
    "Treg",
    "CD8 naive T",
    "CD8 effector T",
    "MAIT",
    "gamma-delta T",
    "NK CD56dim",
    "NK CD56bright",
    "naive B",
    "memory B",
    "plasmablast",
    "CD14 monocytes",
    "CD16 monocytes",
    "cDC1",
    "cDC2",
    "pDC",
    "platelets",
    "erythrocytes",
    "HSPC",
    "doublets",
)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _nb(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """NB(mean, dispersion ``theta``) draws as Poisson(Gamma(theta, mean / theta))."""
    lam = rng.standard_gamma(np.broadcast_to(theta, mean.shape), dtype=np.float32)
    lam *= mean / theta
    return rng.poisson(lam)


def simulate_cite_seq(
    n_cells: int = 72042,
    n_genes: int = 4000,
    n_proteins: int = 111,
    n_batches: int = 17,
    n_cell_types: int = 21,
    missing_protein_fraction: float = 0.1,
    seed: int = 0,
    *,
    n_panels: int = 3,
    n_latent: int = 10,
    type_spread: float = 2.0,
    mean_library: float = 1500.0,
    chunk_size: int = 4096,
    cell_type_names: Sequence[str] | None = None,
) -> anndata.AnnData:
    """Simulated CITE-seq AnnData (see the module docstring for the process).

    Parameters
    ----------
    n_cells, n_genes, n_proteins, n_batches, n_cell_types
        Sizes (the defaults are the seed's 72k-cell data).
    missing_protein_fraction
        Fraction of the proteins each reduced panel lacks (0: every protein measured in
        every batch).
    seed
        Seeds everything: the same arguments give the same data.
    n_panels
        Antibody panels: the full one plus ``n_panels - 1`` reduced ones.
    n_latent, type_spread
        Latent dimension and the spread of the cell-type means (larger: more separable).
    mean_library
        Typical RNA UMIs per cell (about 5% of 4000 genes non-zero at the default).
    chunk_size
        Cells simulated at a time (bounds the dense working memory:
        ``chunk_size * n_genes * 4`` bytes per array).
    cell_type_names
        Names of the cell types (``n_cell_types`` distinct strings; default ``type00``,
        ``type01``, ...). They are labels only: the types' profiles are random either way.
    """
    if min(n_cells, n_genes, n_proteins, n_batches, n_cell_types, n_panels, n_latent) < 1:
        msg = "sizes must be positive"
        raise ValueError(msg)
    if chunk_size < 1:
        msg = "chunk_size must be positive"
        raise ValueError(msg)
    if not 0 <= missing_protein_fraction < 1:
        msg = f"missing_protein_fraction must be in [0, 1), got {missing_protein_fraction}"
        raise ValueError(msg)
    if cell_type_names is not None and (
        len(cell_type_names) != n_cell_types or len(set(cell_type_names)) != n_cell_types
    ):
        msg = f"cell_type_names must be {n_cell_types} distinct names"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    d = n_latent

    # ----------------------------------------------------------- global parameters
    type_means = rng.normal(0.0, type_spread, size=(n_cell_types, d))
    type_p = rng.dirichlet(np.full(n_cell_types, 3.0))
    batch_p = rng.dirichlet(np.full(n_batches, 5.0))
    # genes: a heavy-tailed base expression, latent loadings, batch offsets, dispersions
    gene_base = rng.normal(0.0, 1.5, size=n_genes)
    w = (rng.normal(0.0, 1.0, size=(d, n_genes)) * (rng.random((d, n_genes)) < 0.3)).astype(
        np.float32
    ) * np.float32(0.6)
    batch_offset = rng.normal(0.0, 0.2, size=(n_batches, n_genes))
    theta_gene = np.exp(rng.normal(1.0, 0.6, size=n_genes)).astype(np.float32)
    batch_log_lib = np.log(mean_library) + rng.normal(0.0, 0.25, size=n_batches)
    # proteins: background per batch/protein, foreground loadings, mixing, dispersion
    log_bg = rng.normal(np.log(30.0), 0.6, size=n_proteins)
    background = np.exp(log_bg[None, :] + rng.normal(0.0, 0.3, size=(n_batches, n_proteins)))
    v = rng.normal(0.0, 0.6, size=(d, n_proteins))
    v0 = rng.normal(1.0, 0.5, size=n_proteins)
    u = rng.normal(0.0, 0.8, size=(d, n_proteins))
    u0 = rng.normal(-0.5, 0.5, size=n_proteins)
    theta_prot = np.exp(rng.normal(2.0, 0.4, size=n_proteins)).astype(np.float32)
    # antibody panels: panel 0 is full, the others each lack their own random proteins;
    # batch 0 uses the full panel, the other batches a random one
    panels = np.ones((n_panels, n_proteins), dtype=bool)
    n_missing = round(missing_protein_fraction * n_proteins)
    for k in range(1, n_panels):
        panels[k, rng.choice(n_proteins, size=n_missing, replace=False)] = False
    batch_panel = rng.integers(0, n_panels, size=n_batches)
    batch_panel[0] = 0
    mask = panels[batch_panel]

    # ---------------------------------------------------------- per-cell labels
    # every batch and type gets cells when there are enough cells; the rest drawn
    batch = rng.choice(n_batches, size=n_cells, p=batch_p)
    ctype = rng.choice(n_cell_types, size=n_cells, p=type_p)
    head = rng.permutation(n_cells)
    if n_cells >= n_batches:
        batch[head[:n_batches]] = np.arange(n_batches)
    if n_cells >= n_cell_types:
        ctype[head[-n_cell_types:]] = np.arange(n_cell_types)

    # ----------------------------------------------------------------- chunks
    z_all = np.empty((n_cells, d), dtype=np.float32)
    protein = np.empty((n_cells, n_proteins), dtype=np.float32)
    data_parts: list[np.ndarray] = []
    index_parts: list[np.ndarray] = []
    row_nnz = np.zeros(n_cells, dtype=np.int64)
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        b, k = batch[start:stop], ctype[start:stop]
        m = stop - start
        z = (type_means[k] + rng.normal(size=(m, d))).astype(np.float32)
        z_all[start:stop] = z
        # RNA
        logits = z @ w
        logits += (gene_base[None, :] + batch_offset[b]).astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        lib = np.exp(batch_log_lib[b] + rng.normal(0.0, 0.35, size=m)).astype(np.float32)
        logits *= lib[:, None]
        counts = _nb(rng, logits, theta_gene[None, :])
        del logits
        rows, cols = np.nonzero(counts)
        data_parts.append(counts[rows, cols].astype(np.float32))
        index_parts.append(cols.astype(np.int32))
        row_nnz[start:stop] = np.bincount(rows, minlength=m)
        del counts, rows, cols
        # protein
        zf = z.astype(np.float64)
        bg = background[b]
        fg = bg * (1.0 + _softplus(zf @ v + v0))
        is_fg = rng.random((m, n_proteins)) < _sigmoid(zf @ u + u0)
        rate = np.where(is_fg, fg, bg) * np.exp(rng.normal(0.0, 0.2, size=(m, 1)))
        prot = _nb(rng, rate.astype(np.float32), theta_prot[None, :]).astype(np.float32)
        prot[~mask[b]] = 0.0
        protein[start:stop] = prot

    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, np.float32)
    data_parts.clear()
    indices = np.concatenate(index_parts) if index_parts else np.zeros(0, np.int32)
    index_parts.clear()
    rna = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    rna.has_sorted_indices = True  # np.nonzero returns each row's columns in order

    # ------------------------------------------------------------------ AnnData
    width = len(str(max(n_cells - 1, 1)))
    cell_names = pd.Index([f"cell{i:0{width}d}" for i in range(n_cells)])
    gene_names = pd.Index([f"gene{i:04d}" for i in range(n_genes)])
    protein_names = [f"prot{i:03d}" for i in range(n_proteins)]
    batch_names = [f"batch{i:02d}" for i in range(n_batches)]
    type_names = (
        [str(t) for t in cell_type_names]
        if cell_type_names is not None
        else [f"type{i:02d}" for i in range(n_cell_types)]
    )
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical.from_codes(batch, categories=batch_names),
            "cell_type": pd.Categorical.from_codes(ctype, categories=type_names),
        },
        index=cell_names,
    )
    adata = anndata.AnnData(X=rna, obs=obs, var=pd.DataFrame(index=gene_names))
    adata.obsm["protein_expression"] = pd.DataFrame(
        protein, index=cell_names, columns=protein_names
    )
    adata.obsm["z_true"] = z_all
    adata.uns["simulation"] = {
        "generator": "model.simulate.simulate_cite_seq",
        "seed": int(seed),
        "n_latent": int(d),
        "type_spread": float(type_spread),
        "mean_library": float(mean_library),
        "missing_protein_fraction": float(missing_protein_fraction),
        "protein_batch_mask": mask,
        "batch_panel": batch_panel,
        "batch_names": np.asarray(batch_names),
        "protein_names": np.asarray(protein_names),
    }
    return adata
