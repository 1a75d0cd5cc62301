"""The integration scorecard (scib-metrics) on small simulated multi-batch data: its table,
its aggregates, a case with a known answer, the per-cell batch mixing and the one-batch
refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.integration import LATENT, PCA, TooFewBatches
from dashboard.backend.scorecard import (
    AGGREGATE,
    BATCH,
    BIO,
    MAX_NEIGHBORS,
    TOTAL,
    exact_neighbors,
    per_cell_ilisi,
    scib_table,
)
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import exact_kbet_neighbours, trained_simulated

pytest.importorskip("scib_metrics")

AGGREGATES = [BIO, BATCH, TOTAL]


@pytest.fixture(scope="module", autouse=True)
def _fast_kbet():
    """kBET's neighbour search without pynndescent's minute-long numba compile."""
    with exact_kbet_neighbours():
        yield


@pytest.fixture(scope="module")
def simulated():
    """600 simulated cells in 3 batches (true cell types as labels) and a small TotalVI."""
    return trained_simulated()


@pytest.fixture(scope="module")
def service_pair(simulated, tmp_path_factory):
    data, model = simulated
    svc = AnalysisService(Settings(cache_dir=tmp_path_factory.mktemp("integration-cache")))
    pair = svc.add_model(svc.add_dataset(data, name="sim3"), model, name="m")
    yield svc, pair
    svc.close()


@pytest.fixture(scope="module")
def scores(service_pair):
    svc, pair = service_pair
    return svc.integration_scores(pair)


def _check_aggregates(table: pd.DataFrame, types: dict[str, str]) -> None:
    """Bio / batch = the mean of their metric columns; total = 0.6 bio + 0.4 batch."""
    bio = [c for c, t in types.items() if t == BIO]
    batch = [c for c, t in types.items() if t == BATCH]
    assert len(bio) >= 4 and len(batch) >= 4
    np.testing.assert_allclose(table[BIO], table[bio].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(table[BATCH], table[batch].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(table[TOTAL], 0.6 * table[BIO] + 0.4 * table[BATCH], rtol=1e-6)


def test_scorecard_table_rows_columns_and_aggregates(scores) -> None:
    table = scores.table
    assert list(table.index) == [LATENT, PCA]
    assert table.columns[-3:].tolist() == AGGREGATES
    assert {"iLISI", "KBET", "Graph connectivity", "PCR comparison"} <= set(table.columns)
    assert {"Silhouette label", "cLISI", "Isolated labels", "KMeans NMI"} <= set(table.columns)
    assert all(scores.metric_types[c] == AGGREGATE for c in AGGREGATES)
    values = table.to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    _check_aggregates(table, scores.metric_types)
    assert scores.n_cells == 600 and scores.n_batches == 3 and scores.n_labels == 5
    assert "cell_type" in scores.labels  # the dataset's labels, named when opened
    # PCR comparison of the unintegrated embedding against itself: no batch variance removed
    assert table.loc[PCA, "PCR comparison"] == pytest.approx(0.0, abs=1e-6)
    assert scores.metric_columns[0] in {c for c, t in scores.metric_types.items() if t == BIO}


def test_batch_one_hot_embedding_scores_lower_batch_correction(simulated, service_pair) -> None:
    """An embedding that is the batch alone is corrected worse than the batch-free truth
    (both 5-d, as the latent: scib-metrics' jax functions compiled for it are reused)."""
    data, _ = simulated
    svc, pair = service_pair
    rng = np.random.default_rng(0)
    batch = np.asarray(data.batch)
    labels = np.asarray(data.label_categories)[data.labels]
    one_hot = np.eye(5)[batch] + rng.normal(0, 0.05, (data.n_cells, 5))
    truth = from_truth(data)[:, :5]
    result = scib_table(
        {"batch one-hot": one_hot, "truth": truth},
        pre_integrated=svc.integration.pca(pair),
        batches=batch,
        labels=labels,
    )
    t = result.table
    assert t.loc["batch one-hot", BATCH] < t.loc["truth", BATCH] - 0.2
    assert t.loc["batch one-hot", "iLISI"] < 0.1 < t.loc["truth", "iLISI"]
    assert t.loc["batch one-hot", BIO] < t.loc["truth", BIO]
    _check_aggregates(t, result.metric_types)


def from_truth(data) -> np.ndarray:
    """The simulation's true latent z of each cell (batch-free by construction)."""
    from model.simulate import simulate_cite_seq

    adata = simulate_cite_seq(
        n_cells=600, n_genes=200, n_proteins=10, n_batches=3, n_cell_types=5,
        missing_protein_fraction=0.0, seed=0,
    )  # fmt: skip
    assert list(adata.obs_names) == list(data.obs_names)
    return np.asarray(adata.obsm["z_true"], dtype=np.float32)


def test_batch_mixing_is_per_cell_ilisi_with_the_tables_median(service_pair, scores) -> None:
    svc, pair = service_pair
    assert svc.has_integration_scores(pair) and svc.has_batch_mixing(pair)
    mixing = svc.batch_mixing(pair)
    data = svc.dataset(pair)
    assert mixing.index.equals(data.obs_names) and len(mixing) == data.n_cells
    v = mixing.to_numpy()
    assert np.isfinite(v).all() and (v >= -1e-6).all() and (v <= 1 + 1e-6).all()
    assert v.std() > 0.01  # varies across cells
    assert np.median(v) == pytest.approx(scores.table.loc[LATENT, "iLISI"], abs=1e-5)


def test_per_cell_ilisi_separates_mixed_from_unmixed_cells() -> None:
    """Cells among one batch score 0, cells in an even mix of 2 batches score near 1."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(50, 1, (200, 2))])
    # left blob: batches alternate (mixed); right blob: one batch each half, far apart
    batches = np.array(["a", "b"] * 100 + ["a"] * 100 + ["b"] * 100)
    x[300:] += 200  # the right blob's second batch moves away: unmixed
    values = per_cell_ilisi(exact_neighbors(x, MAX_NEIGHBORS), batches)
    assert np.median(values[:200]) > 0.9
    assert np.nanmax(values[200:]) < 0.05


def test_one_batch_is_refused_in_one_line(tmp_path) -> None:
    from model.data import from_anndata
    from model.simulate import simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(
        n_cells=150, n_genes=50, n_proteins=4, n_batches=1, n_cell_types=3, seed=2
    )
    data = from_anndata(adata, batch_key="batch")
    svc = AnalysisService(Settings(cache_dir=tmp_path / "c"))
    try:
        pair = svc.add_model(svc.add_dataset(data, name="one-batch sim"), TotalVI(data))
        with pytest.raises(TooFewBatches) as err:
            svc.integration_scores(pair)
        assert str(err.value) == (
            "the integration scorecard needs at least 2 batches; one-batch sim has 1"
        )
        assert not svc.has_integration_scores(pair) and not svc.has_batch_mixing(pair)
        job = svc.submit("integration_scores", pair)
        info = svc.wait(job, timeout=30)
        assert info.status.value == "failed" and "needs at least 2 batches" in info.error
    finally:
        svc.close()


def test_explore_offers_the_mixing_colouring_only_once_computed(simulated, tmp_path) -> None:
    from dashboard.backend.errors import InvalidSelection
    from dashboard.views.colours import ColorSpec, color_data, color_note
    from dashboard.views.features import feature_catalog
    from dashboard.views.integration import MIXING_FEATURE, MIXING_TITLE

    data, model = simulated
    svc = AnalysisService(Settings(cache_dir=tmp_path / "c"))
    try:
        pair = svc.add_model(svc.add_dataset(data, name="sim3"), model, name="m")
        assert not feature_catalog(svc, pair).has(MIXING_FEATURE)
        spec = ColorSpec.from_state({"feature": MIXING_FEATURE})
        with pytest.raises(InvalidSelection, match="run it on the Metrics page first"):
            color_data(svc, pair, spec)
        expected = svc.batch_mixing(pair).to_numpy()  # what the scorecard job leaves
        catalog = feature_catalog(svc, pair)
        assert catalog.has(MIXING_FEATURE) and catalog.label(MIXING_FEATURE) == MIXING_TITLE
        assert feature_catalog(svc, pair) is catalog  # memoised while the data is the same
        shown = color_data(svc, pair, spec)
        assert not shown.categorical and shown.label == MIXING_TITLE
        np.testing.assert_array_equal(shown.values, expected.astype(np.float32))
        assert "per-cell iLISI" in color_note(svc, pair, spec)
    finally:
        svc.close()
