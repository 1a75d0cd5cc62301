"""The layout of large data (dashboard/backend/embedding.py): umap-learn fitted on a seeded
sample, the other cells placed through their latent neighbours; the neighbour-preservation
measure the first-look benchmark reports."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dashboard.backend import warm_up
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


def test_the_epochs_reach_umap_learn() -> None:
    x, _ = _clusters(300)
    few, again = (compute_umap(x, n_epochs=20) for _ in range(2))
    np.testing.assert_array_equal(few, again)  # seeded
    assert not np.allclose(few, compute_umap(x, n_epochs=200))


def test_warm_up_fits_a_small_layout() -> None:
    # umap-learn's exact-neighbour path (below 4,096 cells) keeps its layout quick; the
    # clusters' pynndescent search is compiled at any size
    assert warm_up.WARM_UP_CELLS > 4096
    assert warm_up.warm_up(n_cells=200) > 0.0


def test_server_warms_up_in_the_background(monkeypatch) -> None:
    import io

    from dashboard.server import start_layout_warm_up

    calls: list[int] = []
    monkeypatch.setattr(warm_up, "warm_up", lambda **_: calls.append(1) or 1.25)
    out = io.StringIO()
    thread = start_layout_warm_up(out)
    thread.join(10)
    assert calls == [1] and thread.daemon
    assert "layout kernels compiled in 1.2s" in out.getvalue()

    def broken(**_: object) -> float:
        raise RuntimeError("no numba")

    monkeypatch.setattr(warm_up, "warm_up", broken)
    out = io.StringIO()
    start_layout_warm_up(out).join(10)  # logged, not raised; nothing printed
    assert out.getvalue() == ""


def test_each_celery_worker_process_warms_up_unless_told_not_to(monkeypatch) -> None:
    pytest.importorskip("celery", reason="celery is not installed (pip install -e .[test])")
    monkeypatch.setenv("TOTALVI_EXPLORER_REDIS_URL", "redis://127.0.0.1:9/0")  # never reached
    from dashboard import worker

    started: list[int] = []
    monkeypatch.setattr(warm_up, "start_in_background", lambda: started.append(1))
    monkeypatch.setattr(worker, "settings", replace(worker.settings, warm_up_layout=True))
    worker.compile_layout_kernels(sender=None)
    assert started == [1]
    monkeypatch.setattr(worker, "settings", replace(worker.settings, warm_up_layout=False))
    worker.compile_layout_kernels(sender=None)
    assert started == [1]


def test_the_first_view_waits_for_no_denoising() -> None:
    from dashboard.backend.preparation import ESSENTIAL_STEPS, WARM_STEPS
    from dashboard.backend.settings import Settings

    first = [name for name, _ in ESSENTIAL_STEPS]
    assert first == ["latent space", "UMAP", "Leiden clusters", "cell types"]
    warm = [name for name, _ in WARM_STEPS]
    assert warm[:2] == ["denoised protein", "denoised RNA decoder state"]
    assert abs(sum(share for _, share in ESSENTIAL_STEPS) - 1.0) < 1e-9
    assert Settings().warm_up_layout is True
    assert Settings.from_env({"TOTALVI_EXPLORER_WARM_UP_LAYOUT": "0"}).warm_up_layout is False
