"""Leiden clusters of the latent space and readable names for them from marker features.

Clusters come from scanpy's kNN graph on the latent (``use_rep``) and igraph's Leiden. When a
dataset has no cell-type labels, :func:`name_clusters` names each cluster after its most
specific surface protein(s) and top two genes, e.g. ``"CD14+ LYZ/S100A8"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

PROTEIN_NAME_SUFFIXES = ("_TotalSeqB", "_TotalSeqA", "_TotalSeqC", "_TotalA", "_TotalB", "_ADT")


def leiden_clusters(
    latent: np.ndarray,
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
) -> np.ndarray:
    """Leiden cluster of every cell as a string code (``"0"`` = largest cluster).

    Runs ``sc.pp.neighbors(use_rep=...)`` then ``sc.tl.leiden(flavor="igraph",
    n_iterations=2, directed=False)``, both seeded.
    """
    import anndata as ad
    import scanpy as sc

    x = np.asarray(latent, dtype=np.float32)
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(x.shape[0])]))
    adata.obsm["X_latent"] = x
    # exact kNN at every size: scanpy's approximate path (pynndescent, from 8192 cells on)
    # breaks with scipy's sparse arrays ("csr_array has no attribute getnnz")
    sc.pp.neighbors(
        adata,
        use_rep="X_latent",
        n_neighbors=min(n_neighbors, x.shape[0] - 1),
        random_state=seed,
        transformer="sklearn",
    )
    sc.tl.leiden(
        adata,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
    )
    return adata.obs["leiden"].astype(str).to_numpy()


def short_protein_name(name: str) -> str:
    """``"CD14_TotalSeqB"`` -> ``"CD14"`` (antibody suffixes dropped)."""
    for suffix in PROTEIN_NAME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def marker_scores(
    values: np.ndarray | sp.spmatrix, labels: np.ndarray, *, standardize: bool
) -> pd.DataFrame:
    """Mean in each group minus mean of the rest, per feature: ``(groups, features)``.

    With ``standardize`` the difference is divided by the feature's overall std (so proteins
    with different dynamic ranges compare).
    """
    labels = np.asarray(labels).astype(str)
    groups = pd.unique(labels)
    n = labels.size
    total = np.asarray(values.sum(axis=0)).ravel().astype(np.float64)
    out = np.empty((len(groups), total.size))
    for i, g in enumerate(groups):
        mask = labels == g
        inside = np.asarray(values[mask].sum(axis=0)).ravel()
        n_in = int(mask.sum())
        mean_in = inside / max(n_in, 1)
        mean_out = (total - inside) / max(n - n_in, 1)
        out[i] = mean_in - mean_out
    if standardize:
        if sp.issparse(values):
            sq = np.asarray(values.multiply(values).sum(axis=0)).ravel()
        else:
            sq = (np.asarray(values, dtype=np.float64) ** 2).sum(0)
        mean = total / n
        sd = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
        out = out / np.where(sd > 0, sd, 1.0)
    return pd.DataFrame(out, index=groups)


def name_clusters(
    labels: np.ndarray,
    *,
    rna: sp.spmatrix | np.ndarray,
    protein: np.ndarray,
    var_names: Sequence[str],
    protein_names: Sequence[str],
    n_genes: int = 2,
    max_proteins: int = 2,
    protein_threshold: float = 0.5,
) -> dict[str, str]:
    """A unique, readable name per cluster from its marker proteins and genes.

    Proteins are scored by the standardized difference of ``log1p`` protein expression
    (cluster minus rest); the top protein is always named (``"CD14+"``), a second one when it
    also scores above ``protein_threshold`` and at least half the top score. Genes are scored
    by the difference of mean ``log1p`` counts per 10k (scanpy's normalize_total + log1p);
    the top ``n_genes`` are appended (``"LYZ/S100A8"``). Clusters that would share a name get
    the protein or gene that best separates them from each other (``"... (FCGR3A)"``), and
    if still equal a ``#<cluster>`` suffix.
    """
    labels = np.asarray(labels).astype(str)
    x = sp.csr_matrix(rna, dtype=np.float32)
    lib = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / np.where(lib > 0, lib, 1.0)).astype(np.float32) @ x
    x.data = np.log1p(x.data)
    gene_scores = marker_scores(x, labels, standardize=False)
    pro = np.log1p(np.asarray(protein, dtype=np.float64))
    protein_scores = marker_scores(pro, labels, standardize=True)
    genes = np.asarray([str(v) for v in var_names])
    proteins = [short_protein_name(str(p)) for p in protein_names]

    def base_name(group: str) -> str:
        p_scores = protein_scores.loc[group].to_numpy()
        order = np.argsort(-p_scores, kind="stable")
        parts = []
        if p_scores[order[0]] > 0:
            parts.append(proteins[order[0]])
            for j in order[1:max_proteins]:
                if p_scores[j] > protein_threshold and p_scores[j] >= 0.5 * p_scores[order[0]]:
                    parts.append(proteins[j])
        prefix = "".join(f"{p}+" for p in parts)
        g_scores = gene_scores.loc[group].to_numpy()
        top = genes[np.argsort(-g_scores, kind="stable")[:n_genes]]
        return " ".join(s for s in (prefix, "/".join(top)) if s)

    names = {g: base_name(g) for g in gene_scores.index}
    # clusters that share a name get the feature that best tells them apart from each other
    by_name: dict[str, list[str]] = {}
    for g, n in names.items():
        by_name.setdefault(n, []).append(g)
    for name, clash in by_name.items():
        if len(clash) < 2:
            continue
        cells = np.isin(labels, clash)
        sub_p = marker_scores(pro[cells], labels[cells], standardize=True)
        sub_g = marker_scores(x[cells], labels[cells], standardize=False)
        for g in clash:
            p_row = sub_p.loc[g].to_numpy()
            j = int(np.argmax(p_row))
            if p_row[j] > 2 * protein_threshold and f"{proteins[j]}+" not in name:
                names[g] = f"{name} ({proteins[j]}+)"
                continue
            used = set(name.replace("+", " ").replace("/", " ").split())
            for k in np.argsort(-sub_g.loc[g].to_numpy(), kind="stable"):
                if genes[k] not in used:
                    names[g] = f"{name} ({genes[k]})"
                    break
    dup = pd.Series(names).duplicated(keep=False)
    for g in dup[dup].index:
        names[g] = f"{names[g]} #{g}"
    return names
