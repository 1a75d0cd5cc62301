"""2-D UMAP of the TotalVI latent space (umap-learn, seeded; above a size, fitted on a sample
and the other cells placed through their latent neighbours)."""

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
    max_fit_cells: int | None = None,
    n_epochs: int | None = None,
) -> np.ndarray:
    """UMAP coordinates ``(n_cells, 2)`` (float32) of ``latent``.

    ``n_epochs``: umap-learn's (``None``: its default, 500 epochs up to 10,000 cells and
    200 above). ``seed`` is umap-learn's ``random_state``: the same latent and settings give
    the same layout (umap-learn then runs single-threaded, which is what makes it
    reproducible).
    With more than ``max_fit_cells`` cells, umap-learn is fitted on a seeded uniform sample
    of that many and every other cell is placed through its latent neighbours among them
    (:func:`place_by_neighbours`): the cost of the fit stops growing with the data.
    """
    x = np.array(latent, dtype=np.float32, order="C")  # writeable: see NNDescentTransformer
    if x.ndim != 2 or x.shape[0] < 3:
        msg = f"UMAP needs a (cells, dims) array with at least 3 cells, got shape {x.shape}"
        raise ValueError(msg)
    options = {
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "metric": metric,
        "seed": seed,
        "n_epochs": n_epochs,
    }
    if max_fit_cells is None or x.shape[0] <= max(int(max_fit_cells), 3):
        return _umap(x, **options)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(x.shape[0], int(max_fit_cells), replace=False))
    out = np.empty((x.shape[0], 2), dtype=np.float32)
    out[fit] = _umap(x[fit], **options)
    rest = np.setdiff1d(np.arange(x.shape[0]), fit)
    out[rest] = place_by_neighbours(x[fit], out[fit], x[rest], k=n_neighbors, metric=metric)
    return out


def place_by_neighbours(
    reference: np.ndarray,
    reference_xy: np.ndarray,
    query: np.ndarray,
    *,
    k: int = 15,
    metric: str = "euclidean",
) -> np.ndarray:
    """2-D positions of ``query`` cells: the mean of the layout positions of their ``k``
    nearest ``reference`` cells in the latent space, weighted as UMAP weighs an edge
    (``exp(-(d - d_1) / sigma)``, ``d_1`` the nearest distance, ``sigma`` the mean gap), so a
    cell sits among the cells it is like, not between groups."""
    from sklearn.neighbors import NearestNeighbors  # heavy; imported on first use

    k = int(min(k, len(reference)))
    nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(reference)
    dist, ind = nn.kneighbors(query)
    gap = dist - dist[:, :1]
    sigma = np.maximum(gap.mean(axis=1, keepdims=True), 1e-8)
    weights = np.exp(-gap / sigma)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("qk,qkd->qd", weights, reference_xy[ind]).astype(np.float32)


def _umap(
    x: np.ndarray,
    *,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    seed: int,
    n_epochs: int | None = None,
) -> np.ndarray:
    import umap  # heavy (numba); imported on first use

    n_neighbors = int(min(n_neighbors, x.shape[0] - 1))
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        n_components=2,
        metric=metric,
        n_epochs=n_epochs,
        random_state=seed,
        transform_seed=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def knn_preservation(
    latent: np.ndarray, xy: np.ndarray, *, k: int = 15, n_sample: int = 5000, seed: int = 0
) -> float:
    """How well a 2-D layout keeps the latent neighbourhoods: the mean, over ``n_sample``
    seeded cells, of |kNN in 2-D ∩ kNN in the latent| / ``k`` (the cell itself excluded;
    1 = every neighbour kept)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(latent)
    cells = np.random.default_rng(seed).choice(n, min(n_sample, n), replace=False)
    found = []
    for points in (np.asarray(latent, np.float32), np.asarray(xy, np.float32)):
        nn = NearestNeighbors(n_neighbors=k + 1).fit(points)
        ind = nn.kneighbors(points[cells], return_distance=False)
        found.append([set(row[row != c][:k]) for row, c in zip(ind, cells, strict=True)])
    return float(np.mean([len(a & b) / k for a, b in zip(*found, strict=True)]))
