"""The integration scorecard of a pair: how well the TotalVI latent removes batch effects
while keeping cell types apart, beside PCA of the log-normalised RNA, by scib-metrics.

Cached results of :class:`Integration` (:class:`~dashboard.backend.results.Results`),
computed by :mod:`dashboard.backend.scorecard` (scib-metrics' Benchmarker). The two
embeddings compared:

- ``TotalVI latent``: the posterior mean of z (:meth:`Embeddings.latent`), RNA and proteins;
- ``PCA (log1p RNA)``: 50 principal components of the RNA counts after scanpy's
  ``normalize_total`` (to the median library size) and ``log1p``, every gene (no
  highly-variable selection, as the Benchmarker's own PCA): the proteins are not in it. It
  is also the unintegrated embedding PCR comparison measures against.

Cell labels are those of the model card's DE metric (:meth:`ModelCard.metric_groups`: a
chosen obs column, the dataset's labels, the checkpoint's registered labels, else our Leiden
clusters of the latent, which favour the latent's bio conservation; the result says which).
The per-cell batch mixing painted on cells (:meth:`Integration.batch_mixing`) is
scib-metrics' per-cell iLISI of the latent (:func:`~dashboard.backend.scorecard.per_cell_ilisi`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.results import CachedQueries
from dashboard.backend.scorecard import (
    AGGREGATE,
    BATCH,
    BIO,
    MAX_NEIGHBORS,
    TOTAL,
    TOTAL_WEIGHTS,
    exact_neighbors,
    per_cell_ilisi,
    scib_table,
    scib_version,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from dashboard.backend.embeddings import Embeddings
    from dashboard.backend.model_card import ModelCard
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import ProgressFn, Results
    from dashboard.backend.settings import Settings

LATENT = "TotalVI latent"
PCA = "PCA (log1p RNA)"
N_PCS = 50
#: How the neighbours of both the scorecard and the mixing score are found.
NEIGHBORS = "exact euclidean (scikit-learn)"
#: Said after the labels when they are our Leiden clusters of the latent itself.
LATENT_LABELS_NOTE = (
    "; they were found in the TotalVI latent, which favours its bio conservation: choose a "
    "labels column for a fair comparison"
)
#: What the per-cell mixing score is, in words (the colouring's title).
MIXING_TITLE = "Batch mixing (iLISI, scib-metrics)"

__all__ = [
    "AGGREGATE",
    "BATCH",
    "BIO",
    "LATENT",
    "MIXING_TITLE",
    "PCA",
    "TOTAL",
    "TOTAL_WEIGHTS",
    "Integration",
    "IntegrationScores",
    "TooFewBatches",
    "scib_version",
]


class TooFewBatches(InvalidSelection):
    """The integration scorecard needs at least 2 batches."""


@dataclass(frozen=True)
class IntegrationScores:
    """The scorecard: ``table`` (rows :data:`LATENT` and :data:`PCA`; scib-metrics' metric
    columns, then ``Bio conservation``, ``Batch correction`` and ``Total``, all in [0, 1],
    higher is better), each column's ``metric_types``, what the ``labels`` are, the sizes,
    the scib-metrics version and the seconds each embedding took."""

    table: pd.DataFrame
    metric_types: dict[str, str]
    labels: str
    n_cells: int
    n_batches: int
    n_labels: int
    scib_version: str
    seconds: dict[str, float]

    @property
    def metric_columns(self) -> list[str]:
        """The metric columns (aggregates left out), bio conservation first."""
        cols = [c for c in self.table.columns if self.metric_types.get(c) != AGGREGATE]
        return sorted(cols, key=lambda c: self.metric_types.get(c) != BIO)


class Integration(CachedQueries):
    """The integration scorecard (scib-metrics) and per-cell batch mixing of a pair
    (settings: seed; ``card``: the cell labels and the check for counts; ``embeddings``:
    the latent space)."""

    def __init__(
        self,
        results: Results,
        registry: Registry,
        settings: Settings,
        *,
        card: ModelCard,
        embeddings: Embeddings,
    ) -> None:
        super().__init__(results, registry, settings)
        self.card = card
        self.embeddings = embeddings

    def require_batches(self, pair: Pair) -> None:
        """Raise :class:`TooFewBatches` (one line) when the pair's dataset has one batch."""
        data = self.registry.dataset(pair)
        if data.n_batch < 2:
            name = pair.dataset.name or pair.dataset.id
            msg = f"the integration scorecard needs at least 2 batches; {name} has {data.n_batch}"
            raise TooFewBatches(msg)

    def integration_scores(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> IntegrationScores:
        """scib-metrics' bio conservation, batch correction and total of the TotalVI latent
        and of PCA of the log-normalised RNA (module docstring); also leaves the per-cell
        :meth:`batch_mixing` in the cache, so Explore can paint it."""
        params, types, what = self._params(pair, labels_key=labels_key, resolution=resolution)

        def compute() -> IntegrationScores:
            data = self.registry.dataset(pair)
            batches = np.asarray(data.batch_categories, dtype=object)[data.batch]
            labels = types.astype(str).to_numpy()
            if progress is not None:
                progress(0.02, "latent space and PCA of the log-normalised RNA")
            embeddings = {LATENT: self.embeddings.latent(pair), PCA: self.pca(pair)}

            def scaled(fraction: float, message: str) -> None:
                if progress is not None:
                    progress(0.05 + 0.85 * fraction, message)

            result = scib_table(
                embeddings,
                pre_integrated=embeddings[PCA],
                batches=batches,
                labels=labels,
                progress=scaled,
                should_stop=should_stop,
            )
            return IntegrationScores(
                table=result.table,
                metric_types=result.metric_types,
                labels=what + (LATENT_LABELS_NOTE if "Leiden" in what else ""),
                n_cells=data.n_cells,
                n_batches=data.n_batch,
                n_labels=int(pd.Series(labels).nunique()),
                scib_version=params["scib_metrics"],
                seconds=result.seconds,
            )

        scores = self.results.cached("integration_scores", pair, params, compute, progress)
        with self.results.keeping_last_key():  # the job's result is the scorecard
            if progress is not None:
                progress(0.92, "per-cell batch mixing (iLISI)")
            self.batch_mixing(pair)
        return scores

    def has_integration_scores(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> bool:
        """True if the scorecard for these labels is in the cache (nothing is computed)."""
        data = self.registry.dataset(pair)
        if data.n_batch < 2 or data.minified is not None:
            return False
        params, _, _ = self._params(pair, labels_key=labels_key, resolution=resolution)
        return self.results.has("integration_scores", pair, params)

    def _params(
        self, pair: Pair, *, labels_key: str | None, resolution: float | None
    ) -> tuple[dict, pd.Series, str]:
        """The scorecard's cache parameters, the labels per cell and what they are."""
        self.require_batches(pair)
        self.require_counts(pair, "the integration scorecard (its PCA baseline)")
        types, what = self.card.metric_groups(pair, labels_key=labels_key, resolution=resolution)
        params = {
            "labels": np.asarray(types.astype(str)),
            "seed": self.settings.seed,
            "n_pcs": N_PCS,
            "neighbors": [NEIGHBORS, MAX_NEIGHBORS],
            "metrics": "Benchmarker defaults, unscaled",
            "scib_metrics": scib_version(),
        }
        return params, types, what

    # ------------------------------------------------------------ the PCA baseline
    def pca(self, pair: Pair) -> np.ndarray:
        """50 principal components (fewer for tiny data) of the RNA after scanpy's
        ``normalize_total`` and ``log1p``, all genes, ARPACK seeded: ``(n_cells, n_pcs)``."""
        seed = self.settings.seed
        params = {"n_pcs": N_PCS, "seed": seed, "solver": "arpack", "genes": "all"}

        def compute() -> np.ndarray:
            import anndata as ad
            import scanpy as sc

            data = self.registry.dataset(pair)
            adata = ad.AnnData(data.rna.astype(np.float32, copy=True))
            sc.pp.normalize_total(adata)
            sc.pp.log1p(adata)
            n_pcs = min(N_PCS, min(adata.shape) - 1)
            sc.pp.pca(adata, n_comps=n_pcs, svd_solver="arpack", random_state=seed)
            return np.asarray(adata.obsm["X_pca"], dtype=np.float32)

        return self.results.cached("log_rna_pca", pair, params, compute)

    # ---------------------------------------------------------------- batch mixing
    def _mixing_params(self) -> dict:
        return {"seed": self.settings.seed, "neighbors": [NEIGHBORS, MAX_NEIGHBORS]}

    def batch_mixing(self, pair: Pair, *, progress: ProgressFn | None = None) -> pd.Series:
        """Per-cell batch mixing of the TotalVI latent: scib-metrics' per-cell iLISI over
        the cell's 90 nearest neighbours, scaled to [0, 1] (0: one batch around the cell,
        1: all batches evenly); its median is the scorecard's iLISI of the latent."""
        self.require_batches(pair)

        def compute() -> pd.Series:
            data = self.registry.dataset(pair)
            neighbors = exact_neighbors(self.embeddings.latent(pair), MAX_NEIGHBORS)
            values = per_cell_ilisi(neighbors, data.batch)
            return pd.Series(values, index=data.obs_names, name="batch_mixing")

        return self.results.cached("batch_mixing", pair, self._mixing_params(), compute, progress)

    def has_batch_mixing(self, pair: Pair) -> bool:
        """True if :meth:`batch_mixing` is in the cache (the scorecard ran; nothing is
        computed)."""
        if self.registry.dataset(pair).n_batch < 2:
            return False
        return self.results.has("batch_mixing", pair, self._mixing_params())
