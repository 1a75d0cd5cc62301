"""Model QC on the cells (dashboard/backend/cell_qc.py, dashboard/views/qc.py): per-cell
quantities against the model's dataset-level numbers and direct computations, the
one-feature posterior predictive check against a count on its draws, and the colourings.

A small simulated multi-batch dataset (some proteins unmeasured in some batches) and an
untrained model: the identities hold for any weights.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from dashboard import figures
from dashboard.backend import cell_qc as Q
from dashboard.backend.errors import InvalidSelection, MinifiedData
from dashboard.backend.metrics import PPC_BATCH_SIZE, model_and_raw_cv
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views import qc as V
from dashboard.views.colours import ColorSpec, color_data, color_label, color_note, layer_options
from dashboard.views.features import feature_catalog, search_features
from model.cell_qc import iter_predictive_samples
from model.data import MinifiedPosterior
from model.protein_scale import EFFICIENCY_FREE, MEASURED


@pytest.fixture(scope="module")
def env(simulated_fit, tmp_path_factory):
    data, model = simulated_fit(
        n_cells=260, n_genes=90, n_proteins=10, n_batches=3, seed=2,
        missing_protein_fraction=0.3, n_hidden=32, n_latent=5,
    )  # fmt: skip
    with torch.no_grad():
        model.module.log_per_batch_efficiency.normal_(0.0, 0.3)
    root = tmp_path_factory.mktemp("cell_qc")
    service = AnalysisService(Settings(cache_dir=root / "cache", model_dir=root / "models"))
    pair = service.add_model(service.add_dataset(data, name="sim"), model)
    yield service, pair, data, model
    service.close()


def test_reconstruction_error_per_cell_averages_to_the_models(env) -> None:
    service, pair, data, model = env
    rna = service.cell_qc(pair, "recon_rna")
    protein = service.cell_qc(pair, "recon_protein")
    assert rna.shape == protein.shape == (data.n_cells,)
    expected = model.get_reconstruction_error(
        data, batch_size=Q.DIAGNOSTICS_BATCH_SIZE, seed=service.settings.seed
    )
    assert rna.mean() == pytest.approx(expected["reconstruction_loss_gene"], rel=1e-6)
    assert protein.mean() == pytest.approx(expected["reconstruction_loss_protein"], rel=1e-6)
    frame = service.cell_diagnostics(pair)
    assert list(frame.index) == list(data.obs_names)


def test_latent_uncertainty_is_the_mean_of_qzv(env) -> None:
    service, pair, data, model = env
    _, qzv = model.get_latent_representation(data, return_dist=True)
    np.testing.assert_allclose(service.cell_qc(pair, "latent_uncertainty"), qzv.mean(1), rtol=1e-5)
    assert np.isfinite(service.cell_qc(pair, "protein_background")).all()


def test_cell_cv_is_the_model_cards_cell_wise_cv_per_cell(env) -> None:
    service, pair, data, model = env
    assert not service.has_cell_cv(pair)
    table = service.cell_cv(pair)
    assert service.has_cell_cv(pair)
    n = service.settings.n_posterior_samples
    kw = {"n_samples": n, "seed": service.settings.seed, "batch_size": PPC_BATCH_SIZE}
    # the card's draws: all features efficiency-free, then proteins measured on their own
    pp = model.posterior_predictive_sample(data, protein_scale=EFFICIENCY_FREE, **kw)
    m_rna, r_rna = model_and_raw_cv(pp["rna"], data.rna, cell_wise=True)
    np.testing.assert_allclose(table["model_rna"], m_rna, rtol=1e-6)
    np.testing.assert_allclose(table["observed_rna"], r_rna, rtol=1e-6)
    pro = model.posterior_predictive_sample(data, gene_list=[], protein_scale=MEASURED, **kw)
    m_pro, _ = model_and_raw_cv(pro["protein"], data.protein, cell_wise=True)
    np.testing.assert_allclose(table["model_protein"], m_pro, rtol=1e-6)
    ratio = np.log2(m_rna / r_rna)
    np.testing.assert_allclose(service.cell_qc(pair, "cv_ratio_rna"), ratio, rtol=1e-6)
    assert np.isfinite(service.cell_qc(pair, "cv_ratio_protein")).any()


def test_unknown_quantity_is_one_readable_line(env) -> None:
    service, pair, _, _ = env
    with pytest.raises(InvalidSelection, match="unknown cell QC quantity"):
        service.cell_qc(pair, "../../etc")
    with pytest.raises(InvalidSelection, match="not a gene or protein"):
        service.feature_check(pair, "gene:NOPE")
    with pytest.raises(InvalidSelection, match="not a gene or protein"):
        service.feature_check(pair, "obs:batch")


def _coverage_by_hand(samples: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    lo90, lo50, hi50, hi90 = np.quantile(samples, [0.05, 0.25, 0.75, 0.95], axis=1)
    return {
        "90%": float(np.mean((observed >= lo90) & (observed <= hi90))),
        "50%": float(np.mean((observed >= lo50) & (observed <= hi50))),
    }


def test_gene_check_histograms_coverage_and_zeros(env) -> None:
    service, pair, data, model = env
    gene = str(data.var_names[int(np.argmax(np.asarray(data.rna.sum(0)).ravel()))])
    check = service.feature_check(pair, f"gene:{gene}", n_samples=12)
    assert check.n_cells == check.n_measured == data.n_cells and check.n_samples == 12
    assert check.observed.sum() == data.n_cells
    assert check.predicted.sum() == pytest.approx(data.n_cells)
    # the same draws by hand
    parts = iter_predictive_samples(
        model,
        model.aligned(data),
        indices=np.arange(data.n_cells),
        n_samples=12,
        gene_list=[gene],
        protein_list=[],
        batch_size=Q.CHECK_BATCH_SIZE,
        seed=service.settings.seed,
    )
    samples = np.concatenate([p[1][:, 0, :] for p in parts])
    observed = data.rna[:, data.var_names.get_loc(gene)].toarray().ravel()
    assert check.coverage == pytest.approx(_coverage_by_hand(samples, observed))
    assert check.zero_observed == pytest.approx(np.mean(observed == 0))
    assert check.zero_predicted == pytest.approx(np.mean(samples == 0))
    hist = np.histogram(observed, bins=check.edges)[0]
    np.testing.assert_array_equal(check.observed, hist)


def test_protein_check_counts_only_the_cells_that_measured_it(env) -> None:
    service, pair, data, model = env
    mask = model.protein_batch_mask[data.batch]
    col = int(np.argmin(mask.sum(0)))  # a protein some batch did not measure
    protein = str(data.protein_names[col])
    check = service.feature_check(pair, f"protein:{protein}")
    measured = int(mask[:, col].sum())
    assert 0 < measured < data.n_cells
    assert check.n_cells == check.n_measured == measured
    assert check.observed.sum() == measured
    assert check.predicted.sum() == pytest.approx(measured)
    summary = V.check_summary(check)
    assert "Zero fraction: observed" in summary and f"{measured:,} cells" in summary


def test_check_of_many_cells_uses_a_seeded_sample(env) -> None:
    _, _, data, model = env
    aligned = model.aligned(data)
    gene = str(data.var_names[0])
    a, b = (
        Q.feature_check(model, aligned, "gene", gene, n_samples=4, seed=1, max_cells=50)
        for _ in range(2)
    )
    assert a.n_cells == 50 and a.n_measured == data.n_cells
    assert a.observed.sum() == 50 and a.predicted.sum() == pytest.approx(50)
    np.testing.assert_array_equal(a.observed, b.observed)  # the same cells, the same draws
    np.testing.assert_array_equal(a.predicted, b.predicted)
    assert "50 of 260 cells (a seeded sample)" in V.check_summary(a)


def test_check_summary_by_hand() -> None:
    # by hand: observed 0, 0, 1, 2 against draws that are the cell's own count or 5
    observed = np.array([0.0, 0.0, 1.0, 2.0])
    samples = np.array([[0, 0, 0, 0], [5, 5, 5, 5], [1, 1, 1, 5], [2, 2, 2, 2]], float)
    check = Q.summarise_check("gene:x", observed, samples)
    np.testing.assert_array_equal(check.edges, np.arange(7.0))  # 0..5, one bin per count
    np.testing.assert_array_equal(check.observed, [2, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(check.predicted, [1, 0.75, 1, 0, 0, 1.25])
    assert check.zero_observed == 0.5 and check.zero_predicted == 0.25
    assert check.coverage == pytest.approx(_coverage_by_hand(samples, observed))
    assert check.coverage["50%"] == 0.75  # the second cell's 0 is outside [5, 5]
    # wide counts: log-spaced bins, draws above the last edge in the last bin
    wide = Q.summarise_check("gene:y", np.array([0.0, 500.0]), np.full((2, 3), 1e6))
    assert wide.log_bins and len(wide.edges) <= Q.CHECK_BINS + 1
    np.testing.assert_array_equal(wide.edges[:3], [0, 1, 2])  # whole counts
    assert np.all(np.diff(wide.edges) >= 1) and wide.edges[-1] >= 500
    assert wide.observed.sum() == 2 and wide.predicted.sum() == pytest.approx(2)


def test_minified_data_colours_what_needs_no_counts(env, tmp_path) -> None:
    _, _, data, model = env
    n, k = data.n_cells, model.config.n_latent
    qzv = np.full((n, k), 0.2, np.float32)
    lib = np.asarray(data.rna.sum(1), dtype=np.float32).ravel()
    minified = dataclasses.replace(
        data, minified=MinifiedPosterior(np.zeros((n, k), np.float32), qzv, lib)
    )
    service = AnalysisService(Settings(cache_dir=tmp_path / "c", model_dir=tmp_path / "m"))
    try:
        pair = service.add_model(service.add_dataset(minified, name="hub"), model)
        np.testing.assert_allclose(service.cell_qc(pair, "latent_uncertainty"), 0.2, rtol=1e-6)
        for name, what in (("recon_rna", "reconstruction"), ("cv_ratio_rna", "cell-wise CV")):
            with pytest.raises(MinifiedData, match=what):
                service.cell_qc(pair, name)
        with pytest.raises(MinifiedData, match="posterior predictive check"):
            service.feature_check(pair, f"gene:{data.var_names[0]}")
        assert not service.has_cell_cv(pair)
        entries = dict(V.qc_entries(minified=True))
        assert set(entries) == {"qc:latent_uncertainty", "qc:protein_background"}
    finally:
        service.close()


def test_qc_colourings_in_the_catalog_and_colour_data(env) -> None:
    service, pair, _, _ = env
    catalog = feature_catalog(service, pair)
    assert catalog.has("qc:recon_rna") and not catalog.has("qc:nope")
    assert catalog.label("qc:latent_uncertainty") == "Model QC: Latent uncertainty"
    first = [o["value"] for o in search_features(catalog, "")]
    assert [v for v in first if v.startswith("qc:")] == [f"qc:{k}" for k in V.QC]
    assert "qc:recon_rna" in [o["value"] for o in search_features(catalog, "reconstruction")]
    assert not [o for o in search_features(catalog, "", include_obs=False) if "qc:" in o["value"]]
    spec = ColorSpec.from_state({"feature": "qc:recon_rna", "layer": "denoised"})
    assert spec.feature == "qc:recon_rna"
    assert all(o["disabled"] for o in layer_options(spec.feature))  # no value layers
    cd = color_data(service, pair, spec, np.arange(10))
    assert not cd.categorical and cd.values.shape == (10,)
    np.testing.assert_allclose(cd.values, service.cell_qc(pair, "recon_rna")[:10], rtol=1e-6)
    assert color_label(service, pair, spec) == "RNA reconstruction error (NLL)"
    assert "negative log-likelihood" in color_note(service, pair, spec)


def test_cv_colouring_starts_one_job_then_shows_the_ratios(tmp_path, env) -> None:
    _, _, data, model = env
    service = AnalysisService(Settings(cache_dir=tmp_path / "c", model_dir=tmp_path / "m"))
    try:
        pair = service.add_model(service.add_dataset(data, name="sim"), model)
        spec = ColorSpec("qc:cv_ratio_rna")
        with pytest.raises(V.CVNotReady, match="background job"):
            color_data(service, pair, spec)
        job = V._cv_jobs[pair.id]
        with pytest.raises(V.CVNotReady):  # a second pick while it runs: the same job
            color_data(service, pair, spec)
        assert V._cv_jobs[pair.id] == job
        assert str(service.wait(job, timeout=120).status) == "done"
        deadline = time.monotonic() + 10
        while not service.has_cell_cv(pair) and time.monotonic() < deadline:
            time.sleep(0.05)
        values = color_data(service, pair, spec).values
        assert values.shape == (data.n_cells,) and np.isfinite(values).all()
        assert values.std() > 0
    finally:
        service.close()


def test_check_view_and_figure_show_both_histograms_on_the_same_bins() -> None:
    observed = np.array([0.0, 0.0, 1.0, 2.0])
    samples = np.array([[0, 0, 0, 0], [5, 5, 5, 5], [1, 1, 1, 5], [2, 2, 2, 2]], float)
    view = V.check_view(Q.summarise_check("gene:x", observed, samples))
    np.testing.assert_allclose(view.centres, np.arange(6.0))  # one bar per count, centred
    np.testing.assert_allclose(view.widths, 1.0)
    fig = figures.predictive_check_figure(
        view.centres,
        view.widths,
        view.observed,
        view.predicted,
        tickvals=view.tickvals,
        ticktext=view.ticktext,
        title="x",
    )
    bars, line = fig.data
    assert (bars.type, line.type) == ("bar", "scatter")
    np.testing.assert_array_equal(np.asarray(bars.y), [2, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(np.asarray(line.y), [1, 0.75, 1, 0, 0, 1.25])
    np.testing.assert_array_equal(np.asarray(bars.x), np.asarray(line.x))
    assert "Zero fraction: observed 50.0%, model 25.0%" in view.summary
    assert "50%: 75.0%" in view.summary
    wide = V.check_view(Q.summarise_check("gene:y", np.array([0.0, 500.0]), np.ones((2, 3))))
    assert wide.log_bins and wide.ticktext[:3] == ["0", "1", "3"]
    np.testing.assert_allclose(wide.centres[0], np.log1p(1) / 2)  # bin [0, 1) on log1p
