"""The layout of large data (dashboard/backend/embedding.py): umap-learn fitted on a seeded
sample, the other cells placed through their latent neighbours; the neighbour-preservation
measure the first-look benchmark reports."""

from __future__ import annotations

import numpy as np

from dashboard.backend.embedding import compute_umap, knn_preservation, place_by_neighbours


def _clusters(n: int = 900, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.eye(3, 10) * 12
    return (centres[labels] + rng.normal(size=(n, 10))).astype(np.float32), labels


def test_placement_is_the_weighted_mean_of_the_neighbours_layout() -> None:
    reference = np.array([[0.0, 0.0], [2.0, 0.0], [50.0, 0.0]], dtype=np.float32)
    layout = np.array([[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]], dtype=np.float32)
    # equidistant from the first two: their mean; the far third is not a neighbour (k=2)
    got = place_by_neighbours(reference, layout, np.array([[1.0, 0.0]]), k=2)
    np.testing.assert_allclose(got, [[2.0, 3.0]])
    # nearer the first: pulled towards it, never outside the two
    got = place_by_neighbours(reference, layout, np.array([[0.5, 0.0]]), k=2)
    assert 1.0 < got[0, 0] < 2.0 and 1.0 < got[0, 1] < 3.0


def test_a_sampled_fit_keeps_the_fitted_cells_and_places_the_rest_in_their_cluster() -> None:
    x, labels = _clusters()
    full = compute_umap(x, seed=0)
    sampled = compute_umap(x, seed=0, max_fit_cells=300)
    assert sampled.shape == (900, 2) and np.isfinite(sampled).all()
    fit = np.sort(np.random.default_rng(0).choice(900, 300, replace=False))
    np.testing.assert_array_equal(sampled[fit], compute_umap(x[fit], seed=0))
    # every placed cell is nearest the centre of its own cluster's fitted cells
    centres = np.stack([sampled[fit][labels[fit] == c].mean(0) for c in range(3)])
    rest = np.setdiff1d(np.arange(900), fit)
    nearest = np.argmin(((sampled[rest, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels[rest]).mean() > 0.99
    # neighbourhoods about as well kept as by umap-learn on every cell
    ours, reference = knn_preservation(x, sampled), knn_preservation(x, full)
    assert ours > reference - 0.1, (ours, reference)
    # below the bound nothing changes
    np.testing.assert_array_equal(compute_umap(x, seed=0, max_fit_cells=900), full)


def test_knn_preservation_is_one_for_the_latent_itself_and_low_for_noise() -> None:
    x, _ = _clusters(400)
    pad = np.zeros((400, 8), np.float32)
    assert knn_preservation(np.c_[x[:, :2], pad], x[:, :2], k=10) == 1.0
    noise = np.random.default_rng(1).normal(size=(400, 2))
    assert knn_preservation(x, noise, k=10) < 0.15
