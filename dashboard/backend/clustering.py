"""Leiden clusters of the latent space and readable names for them from marker features.

Clusters come from scanpy's kNN graph on the latent (``use_rep``) and igraph's Leiden. When a
dataset has no cell-type labels, :func:`name_clusters` names each cluster after the surface
proteins that are really up in it and its most specific gene, e.g. ``"CD14+ S100A8"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.names import short_protein_names

#: Version of :func:`name_clusters`' rules (part of the cached names' key).
NAMING_VERSION = 2
#: Names longer than this drop their second protein.
MAX_NAME_LENGTH = 20
#: Genes named only when no other gene fits: mitochondrial, ribosomal, unannotated.
UNINFORMATIVE_GENE = re.compile(r"^(MT-|RP[LS]\d|LINC\d|ENSG\d|A[CLP]\d{6}|MIR\d)|\.|-AS\d")


#: How the kNN graph of :func:`leiden_clusters` is found.
KNN_EXACT, KNN_NNDESCENT = "exact", "nndescent"


def leiden_clusters(
    latent: np.ndarray,
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
    knn: str = KNN_EXACT,
) -> np.ndarray:
    """Leiden cluster of every cell as a string code (``"0"`` = largest cluster).

    Runs ``sc.pp.neighbors(use_rep=...)`` then ``sc.tl.leiden(flavor="igraph",
    n_iterations=2, directed=False)``, both seeded. ``knn``: :data:`KNN_EXACT`
    (scikit-learn's exact search, quadratic in cells) or :data:`KNN_NNDESCENT` (pynndescent's
    approximate graph, as umap-learn and scanpy use at scale: for a million cells).
    """
    import anndata as ad
    import scanpy as sc

    if knn not in (KNN_EXACT, KNN_NNDESCENT):
        msg = f"unknown kNN search {knn!r}; choose {KNN_EXACT!r} or {KNN_NNDESCENT!r}"
        raise ValueError(msg)
    x = np.asarray(latent, dtype=np.float32)
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(x.shape[0])]))
    adata.obsm["X_latent"] = x
    k = min(n_neighbors, x.shape[0] - 1)
    # scanpy's own approximate path (pynndescent, from 8192 cells on) breaks with scipy's
    # sparse arrays ("csr_array has no attribute getnnz"): exact, or our CSR-matrix wrapper
    transformer = "sklearn" if knn == KNN_EXACT else NNDescentTransformer(k, seed=seed)
    sc.pp.neighbors(
        adata, use_rep="X_latent", n_neighbors=k, random_state=seed, transformer=transformer
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


class NNDescentTransformer:
    """scikit-learn-style kNN transformer over pynndescent, what ``sc.pp.neighbors`` takes
    as ``transformer``: ``fit_transform(x)`` is the ``cells x cells`` CSR *matrix* of
    distances from each cell to itself (0, first) and its ``n_neighbors - 1`` approximate
    nearest other cells, nearest first: the rows scanpy reads without re-sorting."""

    def __init__(self, n_neighbors: int, *, seed: int = 0) -> None:
        self.n_neighbors = int(n_neighbors)
        self.seed = int(seed)

    def get_params(self, deep: bool = True) -> dict[str, int]:
        """The parameters (scanpy reads ``n_neighbors``: neighbours per cell, itself in)."""
        return {"n_neighbors": self.n_neighbors, "seed": self.seed}

    def fit(self, x: np.ndarray, y: Any = None) -> NNDescentTransformer:
        """Nothing to fit apart from :meth:`fit_transform` (scanpy calls that)."""
        return self

    def fit_transform(self, x: np.ndarray, y: Any = None) -> sp.csr_matrix:
        """The distance graph of ``x`` (rows: cells)."""
        from pynndescent import NNDescent

        # a writeable C-ordered copy: numba compiles apart (20 s) for the read-only arrays
        # the results cache hands out, which the server's warm-up did not compile
        x = np.array(x, dtype=np.float32, order="C")
        n, k = x.shape[0], self.n_neighbors
        if not 1 < k < n:
            msg = f"{k} neighbours need more than {k} cells (got {n})"
            raise ValueError(msg)
        index = NNDescent(x, n_neighbors=k, random_state=self.seed, n_jobs=-1)
        ind, dist = index.neighbor_graph  # nearest first, usually the cell itself
        own = np.arange(n)[:, None]
        # each row's nearest other cells, in order (a duplicate cell may displace itself)
        order = np.argsort((ind == own) | (ind < 0), axis=1, kind="stable")[:, : k - 1]
        others = np.take_along_axis(ind, order, axis=1)
        far = np.take_along_axis(dist, order, axis=1)
        indices = np.hstack([own, np.maximum(others, 0)]).astype(np.int32).ravel()
        data = np.hstack([np.zeros((n, 1)), np.maximum(far, 0.0)]).astype(np.float32).ravel()
        indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders numbers inside names by value: CD3 < CD4 < CD14 < CD127."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", name)
        if part
    )


def group_means(values: np.ndarray | sp.spmatrix, labels: np.ndarray, groups: Sequence[str]):
    """Mean of every feature inside each group and over all other cells.

    Returns two ``(groups, features)`` float64 arrays: ``(inside, outside)``.
    """
    labels = np.asarray(labels).astype(str)
    index = {g: i for i, g in enumerate(groups)}
    codes = np.asarray([index[v] for v in labels])
    n = labels.size
    member = sp.csr_matrix(
        (np.ones(n), (codes, np.arange(n))), shape=(len(groups), n), dtype=np.float64
    )
    sums = member @ values
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64)
    sizes = np.bincount(codes, minlength=len(groups)).astype(np.float64)[:, None]
    inside = sums / np.maximum(sizes, 1.0)
    outside = (sums.sum(axis=0, keepdims=True) - sums) / np.maximum(n - sizes, 1.0)
    return inside, outside


@dataclass(frozen=True)
class MarkerRules:
    """When a protein names a cluster, and how long a name may be.

    A protein is named (``"CD14+"``) only where it is really up: in at least
    ``min_fraction`` of the cluster's cells it is above background (foreground probability
    over one half), that share is ``min_gain`` above the share among all other cells, and
    the mean denoised level is at least ``2 ** min_log2_fold`` times the rest's.
    """

    min_fraction: float = 0.5
    min_gain: float = 0.2
    min_log2_fold: float = 1.0
    max_proteins: int = 2
    max_length: int = MAX_NAME_LENGTH


def protein_markers(
    labels: np.ndarray,
    groups: Sequence[str],
    *,
    denoised: np.ndarray,
    foreground: np.ndarray,
    rules: MarkerRules = MarkerRules(),
) -> tuple[np.ndarray, np.ndarray]:
    """Per group and protein: whether it is up (:class:`MarkerRules`) and its marker score
    (share gain x log2 fold), each ``(groups, proteins)``."""
    den = np.asarray(denoised, dtype=np.float64)
    up = (np.asarray(foreground, dtype=np.float64) > 0.5).astype(np.float64)
    if den.shape[1] == 0:
        empty = np.zeros((len(groups), 0))
        return empty.astype(bool), empty
    share_in, share_out = group_means(up, labels, groups)
    mean_in, mean_out = group_means(den, labels, groups)
    fold = np.log2((mean_in + 1.0) / (mean_out + 1.0))
    gain = share_in - share_out
    ok = (share_in >= rules.min_fraction) & (gain >= rules.min_gain)
    ok &= fold >= rules.min_log2_fold
    return ok, np.where(ok, gain * fold, 0.0)


def gene_marker_scores(
    log_rna: sp.spmatrix, labels: np.ndarray, groups: Sequence[str], genes: Sequence[str]
) -> np.ndarray:
    """Specificity of every gene to each group, ``(groups, genes)``: the gain of mean
    log expression over the rest relative to the rest's level, ``(in - out) / (out + 0.5)``,
    for genes detected in at least half of the group's cells (others score below every such
    gene, by their plain gain). Mitochondrial, ribosomal and unannotated genes score last."""
    detected = log_rna.copy()
    detected.data = np.ones_like(detected.data)
    share_in, _ = group_means(detected, labels, groups)
    mean_in, mean_out = group_means(log_rna, labels, groups)
    gain = mean_in - mean_out
    specific = gain / (mean_out + 0.5)
    floor = np.nanmin(specific) - np.abs(gain).max() - 1.0
    score = np.where((share_in >= 0.5) & (gain > 0), specific, floor + gain)
    weak = np.asarray([bool(UNINFORMATIVE_GENE.search(str(g))) for g in genes])
    if weak.any() and not weak.all():
        score[:, weak] -= score.max() - score.min() + 1.0
    return score


def name_clusters(
    labels: np.ndarray,
    *,
    rna: sp.spmatrix | np.ndarray,
    protein: np.ndarray,
    foreground: np.ndarray,
    var_names: Sequence[str],
    protein_names: Sequence[str],
    rules: MarkerRules = MarkerRules(),
) -> dict[str, str]:
    """A short, distinct, readable name per cluster from its marker proteins and gene.

    Parameters
    ----------
    labels
        Cluster of every cell.
    rna
        Raw RNA counts, cells x genes (normalised to log1p counts per 10k here).
    protein, foreground
        Denoised protein and its foreground probability, cells x proteins.
    var_names, protein_names
        Gene and protein names.
    rules
        When a protein is named (:class:`MarkerRules`).

    Returns
    -------
    dict
        ``{cluster: name}``: up to two proteins that are really up in the cluster
        (:func:`protein_markers`, strongest first, shown in natural order:
        ``"CD16+CD56+"``) and the cluster's most specific gene (:func:`gene_marker_scores`),
        e.g. ``"CD14+ S100A8"``; two genes (``"FCER1A/CLEC10A"``) when no protein is up.
        Clusters with the same marker set get, each, the gene that best tells it from the
        others sharing it; names still equal get a ``#<cluster>`` suffix.
    """
    labels = np.asarray(labels).astype(str)
    groups = sorted(pd.unique(labels), key=natural_key)
    x = sp.csr_matrix(rna, dtype=np.float32)
    lib = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1e4 / np.where(lib > 0, lib, 1.0)).astype(np.float32) @ x
    x.data = np.log1p(x.data)
    genes = [str(v) for v in var_names]
    short = short_protein_names(str(p) for p in protein_names)
    proteins = [short[str(p)] for p in protein_names]
    up, p_score = protein_markers(
        labels, groups, denoised=protein, foreground=foreground, rules=rules
    )
    g_score = gene_marker_scores(x, labels, groups, genes)

    def prefix_of(i: int) -> str:
        order = [j for j in np.argsort(-p_score[i], kind="stable") if up[i, j]]
        chosen = [
            j for j in order[: rules.max_proteins] if p_score[i, j] >= 0.5 * p_score[i, order[0]]
        ]
        text = _prefix([proteins[j] for j in chosen])
        if (
            len(chosen) > 1
            and len(text) + 1 + len(genes[int(np.argmax(g_score[i]))]) > rules.max_length
        ):
            text = _prefix([proteins[chosen[0]]])
        return text

    prefixes = {g: prefix_of(i) for i, g in enumerate(groups)}
    markers: dict[str, list[str]] = {}
    for i, g in enumerate(groups):
        first, second = np.argsort(-g_score[i], kind="stable")[:2]
        markers[g] = [genes[first]]
        # no protein: a second gene, if it too is specific (not merely the next in line)
        if not prefixes[g] and g_score[i, second] >= 0.25 * max(g_score[i, first], 0.0) > 0:
            markers[g].append(genes[second])

    def join(prefix: str, marker_genes: Sequence[str]) -> str:
        return " ".join(part for part in (prefix, "/".join(marker_genes)) if part)

    names = {g: join(prefixes[g], markers[g]) for g in groups}
    # clusters with the same marker set: each gets the gene that best separates it from
    # the others of that set (scored among their cells only), never one that would give
    # the name of another cluster
    by_set: dict[tuple[str, frozenset[str]], list[str]] = {}
    for g in groups:
        by_set.setdefault((prefixes[g], frozenset(markers[g])), []).append(g)
    for (_, shared), clash in by_set.items():
        if len(clash) < 2:
            continue
        cells = np.isin(labels, clash)
        sub = gene_marker_scores(x[cells], labels[cells], clash, genes)
        taken = set(shared)
        for i, g in enumerate(clash):
            others = {names[h] for h in groups if h != g}
            for k in np.argsort(-sub[i], kind="stable"):
                if genes[k] in taken:
                    continue
                candidate = [*markers[g][:-1], genes[k]] if not prefixes[g] else [genes[k]]
                if join(prefixes[g], candidate) not in others:
                    taken.add(genes[k])
                    markers[g] = candidate
                    names[g] = join(prefixes[g], candidate)
                    break
    dup = pd.Series(names).duplicated(keep=False)
    for g in dup[dup].index:
        names[g] = f"{names[g]} #{g}"
    return names


def _prefix(proteins: Sequence[str]) -> str:
    """``["CD56", "CD16"]`` -> ``"CD16+CD56+"`` (natural order, so the same set always
    reads the same)."""
    return "".join(f"{p}+" for p in sorted(proteins, key=natural_key))
