"""Leiden clusters above ``leiden_exact_max_cells``: pynndescent's approximate kNN graph in
the shape scanpy reads (itself first, nearest first), the same clusters as the exact graph
on separable data, and its own cache key (smaller data keeps the exact key)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from dashboard.backend.clustering import KNN_NNDESCENT, NNDescentTransformer, leiden_clusters
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings


def mixture(n_per: int = 250, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(4, 10))
    truth = np.repeat(np.arange(4), n_per)
    return (centres[truth] + rng.normal(size=(truth.size, 10))).astype(np.float32), truth


def test_the_graph_is_what_scanpy_reads() -> None:
    x, _ = mixture()
    graph = NNDescentTransformer(15, seed=0).fit_transform(x)
    n = x.shape[0]
    assert graph.shape == (n, n) and (np.diff(graph.indptr) == 15).all()
    ind = graph.indices.reshape(n, 15)
    dist = graph.data.reshape(n, 15)
    assert (ind[:, 0] == np.arange(n)).all() and (dist[:, 0] == 0).all()
    assert (np.diff(dist, axis=1) >= -1e-5).all()  # nearest first
    assert not (ind[:, 1:] == np.arange(n)[:, None]).any()  # itself once
    exact = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(x, return_distance=False)
    recall = np.mean([len(set(a[1:]) & set(b[1:])) / 14 for a, b in zip(ind, exact, strict=True)])
    assert recall > 0.95
    np.testing.assert_allclose(  # the distances are the real ones
        dist[:, 1], np.linalg.norm(x - x[ind[:, 1]], axis=1), rtol=1e-4, atol=1e-4
    )


def test_a_read_only_latent_is_searched_as_a_writeable_one(monkeypatch) -> None:
    # the cached latent is read-only; numba would compile pynndescent again for it
    import pynndescent

    seen = []

    class Recording(pynndescent.NNDescent):
        def __init__(self, data, **kwargs):
            seen.append(data.flags.writeable and data.flags.c_contiguous)
            super().__init__(data, **kwargs)

    monkeypatch.setattr(pynndescent, "NNDescent", Recording)
    x, _ = mixture()
    x.flags.writeable = False
    graph = NNDescentTransformer(15, seed=0).fit_transform(x)
    assert seen == [True] and graph.shape == (x.shape[0], x.shape[0])


def test_approximate_and_exact_graphs_give_the_same_clusters() -> None:
    x, truth = mixture()
    approx = leiden_clusters(x, resolution=0.3, seed=0, knn=KNN_NNDESCENT)
    exact = leiden_clusters(x, resolution=0.3, seed=0)
    assert adjusted_rand_score(truth, approx) > 0.95
    assert adjusted_rand_score(exact, approx) > 0.95


def test_an_unknown_search_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kNN search"):
        leiden_clusters(np.zeros((20, 2)), knn="annoy")
    with pytest.raises(ValueError, match="neighbours need more"):
        NNDescentTransformer(15).fit_transform(np.zeros((10, 2)))


def test_above_the_threshold_the_key_names_the_search(tmp_path, trained, monkeypatch) -> None:
    from dashboard.backend import embeddings

    searches = []

    def recorded(latent, **params):
        searches.append(params.get("knn", "exact"))
        return np.array([str(i % 3) for i in range(latent.shape[0])])

    monkeypatch.setattr(embeddings, "leiden_clusters", recorded)
    data, model = trained
    small = AnalysisService(Settings(cache_dir=tmp_path / "a"))
    large = AnalysisService(
        Settings(cache_dir=tmp_path / "b", leiden_exact_max_cells=data.n_cells - 1)
    )
    try:
        pairs = [s.add_model(s.add_dataset(data), model) for s in (small, large)]
        for service, pair in zip((small, large), pairs, strict=True):
            assert len(service.clusters(pair)) == data.n_cells
        assert searches == ["exact", KNN_NNDESCENT]
        base = {"resolution": 1.0, "n_neighbors": 15, "seed": 0}
        assert small.results.has("clusters", pairs[0], base)  # the key as before
        assert large.results.has("clusters", pairs[1], {**base, "knn": KNN_NNDESCENT})
        assert not large.results.has("clusters", pairs[1], base)
    finally:
        small.close()
        large.close()
