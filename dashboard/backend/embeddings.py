"""The cells' latent space and what is built on it: UMAP coordinates and Leiden clusters.

Cached results of :class:`Embeddings` (:class:`~dashboard.backend.results.Results`), computed
by :mod:`dashboard.backend.embedding` and :mod:`dashboard.backend.clustering`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from dashboard.backend import embedding
from dashboard.backend.clustering import KNN_NNDESCENT, leiden_clusters
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.results import CachedQueries

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.results import ProgressFn


class UmapOptions(TypedDict, total=False):
    """UMAP layout options (``None`` or left out: the settings' ``umap_n_neighbors``,
    ``umap_min_dist`` and ``seed``)."""

    n_neighbors: int | None
    min_dist: float | None
    seed: int | None


class Embeddings(CachedQueries):
    """Latent space, UMAP and Leiden clusters of a pair's cells (settings: seed and the UMAP
    and neighbour-graph defaults)."""

    def latent(self, pair: Pair, *, progress: ProgressFn | None = None) -> np.ndarray:
        """Posterior mean of z per cell: ``(n_cells, n_latent)`` float32."""
        seed = self.settings.seed

        def compute() -> np.ndarray:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            return np.asarray(model.get_latent_representation(data, seed=seed), dtype=np.float32)

        return self.results.cached("latent", pair, {"seed": seed}, compute, progress)

    def umap_params(self, pair: Pair, **options: Unpack[UmapOptions]) -> dict[str, Any]:
        """The parameters (and cache key parts) of :meth:`umap` for ``pair``: the options
        over the settings; above ``umap_max_fit_cells`` cells, the fit's sample size."""
        s = self.settings
        min_dist, seed = options.get("min_dist"), options.get("seed")
        params: dict[str, Any] = {
            "n_neighbors": int(options.get("n_neighbors") or s.umap_n_neighbors),
            "min_dist": float(s.umap_min_dist if min_dist is None else min_dist),
            "seed": int(s.seed if seed is None else seed),
            "n_epochs": int(s.umap_n_epochs),
        }
        if self.registry.dataset(pair).n_cells > s.umap_max_fit_cells:  # smaller: as before
            params["max_fit_cells"] = int(s.umap_max_fit_cells)
        return params

    def umap(
        self, pair: Pair, *, progress: ProgressFn | None = None, **options: Unpack[UmapOptions]
    ) -> pd.DataFrame:
        """UMAP of the latent space (``options``: :class:`UmapOptions`): columns ``UMAP1``,
        ``UMAP2``, index = cell names."""
        params = self.umap_params(pair, **options)

        def compute() -> pd.DataFrame:
            if progress is not None:
                progress(0.1, "latent space")
            latent = self.latent(pair)
            if progress is not None:
                progress(0.3, "UMAP")
            xy = embedding.compute_umap(latent, **params)
            cells = self.registry.dataset(pair).obs_names
            return pd.DataFrame(xy, index=cells, columns=["UMAP1", "UMAP2"])

        return self.results.cached("umap", pair, params, compute, progress)

    def clusters_params(
        self, pair: Pair, resolution: float | None = None, *, n_neighbors: int | None = None
    ) -> dict[str, Any]:
        """The parameters (and cache key parts) of :meth:`clusters` for ``pair``; above
        ``leiden_exact_max_cells`` cells, the approximate kNN search."""
        s = self.settings
        params: dict[str, Any] = {
            "resolution": float(s.leiden_resolution if resolution is None else resolution),
            "n_neighbors": int(n_neighbors or s.n_neighbors),
            "seed": s.seed,
        }
        if params["resolution"] <= 0:
            msg = f"resolution must be positive, got {params['resolution']}"
            raise InvalidSelection(msg)
        if self.registry.dataset(pair).n_cells > s.leiden_exact_max_cells:
            params["knn"] = KNN_NNDESCENT  # smaller data: the key (and clusters) as before
        return params

    def clusters(
        self,
        pair: Pair,
        resolution: float | None = None,
        *,
        n_neighbors: int | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.Series:
        """Leiden cluster per cell (categorical of ``"0"``, ``"1"``..., largest first)."""
        params = self.clusters_params(pair, resolution, n_neighbors=n_neighbors)

        def compute() -> pd.Series:
            codes = leiden_clusters(self.latent(pair), **params)
            cats = sorted(set(codes), key=int)
            return pd.Series(
                pd.Categorical(codes, categories=cats),
                index=self.registry.dataset(pair).obs_names,
                name="leiden",
            )

        return self.results.cached("clusters", pair, params, compute, progress)
