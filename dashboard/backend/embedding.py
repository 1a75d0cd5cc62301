"""2-D UMAP of the TotalVI latent space (umap-learn, seeded)."""

from __future__ import annotations

import warnings

import numpy as np


def compute_umap(
    latent: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.5,
    metric: str = "euclidean",
    seed: int = 0,
) -> np.ndarray:
    """UMAP coordinates ``(n_cells, 2)`` (float32) of ``latent``.

    ``seed`` is umap-learn's ``random_state``: the same latent and settings give the same
    layout (umap-learn then runs single-threaded, which is what makes it reproducible).
    """
    import umap  # heavy (numba); imported on first use

    x = np.asarray(latent, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        msg = f"UMAP needs a (cells, dims) array with at least 3 cells, got shape {x.shape}"
        raise ValueError(msg)
    n_neighbors = int(min(n_neighbors, x.shape[0] - 1))
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_components=2,
        metric=metric,
        random_state=seed,
        transform_seed=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
