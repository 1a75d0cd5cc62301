"""The model-card CV moments accumulated a chunk of cells at a time equal the whole-array
computation they replaced (kept here as the reference), on hand-made edge cases and on the
seed-like scvi-tools 1.4.2 model."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dashboard.backend import metrics as M
from model.protein_scale import EFFICIENCY_FREE, MEASURED
from model.read_options import ReadOptions
from model.totalvi import TotalVI

SEEDLIKE = "scvi_tools_1.4.2_mudata_seedlike_800"


def reference_model_and_raw_cv(
    samples: np.ndarray, raw: np.ndarray | sp.spmatrix, *, cell_wise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The whole-array computation (before chunking)."""
    axis = 1 if cell_wise else 0
    per_sample = np.stack(
        [M.coefficient_of_variation(samples[..., s], axis) for s in range(samples.shape[-1])]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model_cv = np.nanmean(per_sample, axis=0)
    return model_cv, np.nan_to_num(M.coefficient_of_variation(raw, axis))


def edge_case_counts() -> tuple[np.ndarray, np.ndarray]:
    """Poisson samples and counts with all-zero cells, features and single samples."""
    rng = np.random.default_rng(3)
    samples = rng.poisson(rng.uniform(0.05, 20, (1, 9, 1)), (23, 9, 3)).astype(np.float32)
    samples[4] = 0  # a cell all zero in every sample: NaN model CV
    samples[7, :, 1] = 0  # zero in one sample only: that sample is skipped
    samples[:, 2] = 0  # a feature all zero: NaN
    samples[:, 5, 0] = 0  # zero in one sample
    raw = rng.poisson(3, (23, 9)).astype(np.float32)
    raw[10] = 0
    raw[:, 6] = 0
    return samples, raw


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 1000])
@pytest.mark.parametrize("sparse", [False, True])
def test_chunked_cv_equals_the_whole_array(chunk: int, sparse: bool) -> None:
    samples, raw = edge_case_counts()
    raw_in = sp.csr_matrix(raw) if sparse else raw
    for cell_wise in (True, False):
        want = reference_model_and_raw_cv(samples, raw_in, cell_wise=cell_wise)
        got = M.model_and_raw_cv(samples, raw_in, cell_wise=cell_wise, chunk=chunk)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, equal_nan=True)
    # the edge cases are there: NaN model CVs, zero raw CVs
    cell_cv, raw_cell = M.model_and_raw_cv(samples, raw_in, cell_wise=True, chunk=chunk)
    assert np.isnan(cell_cv[4]) and raw_cell[10] == 0 and np.isfinite(cell_cv[7])
    gene_cv, raw_gene = M.model_and_raw_cv(samples, raw_in, cell_wise=False, chunk=chunk)
    assert np.isnan(gene_cv[2]) and raw_gene[6] == 0 and np.isfinite(gene_cv[5])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_sparse_counts_cvs_have_the_whole_matrix_bits(dtype) -> None:
    # bit for bit, not to a tolerance: the card's Spearman correlations rank these values
    rng = np.random.default_rng(5)
    dense = rng.poisson(rng.uniform(0.05, 8, 300), (600, 300)) * (rng.random((600, 300)) < 0.3)
    dense[7] = 0  # an empty cell
    dense[:, 11] = 0  # an undetected feature
    raw = sp.csr_matrix(dense.astype(dtype))
    for chunk in (1, 64, 599, 10_000):
        cell, feature = M.sparse_cvs(raw, chunk=chunk)
        np.testing.assert_array_equal(cell, M.coefficient_of_variation(raw, 1))
        np.testing.assert_array_equal(feature, M.coefficient_of_variation(raw, 0))
    assert np.isnan(cell[7]) and np.isnan(feature[11])
    zero_filled = M.raw_cvs(raw, chunk=64)
    assert zero_filled[0][7] == 0 and zero_filled[1][11] == 0


def test_moments_refuse_wrong_shapes() -> None:
    moments = M.CVMoments(3, 2, 2)
    with pytest.raises(ValueError, match="samples"):
        moments.add(np.ones((3, 2, 1)))
    moments.add(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="2 of 3 cells"):
        moments.model_cv(cell_wise=True)
    with pytest.raises(ValueError, match="more than"):
        moments.add(np.ones((2, 2, 2)))


@pytest.fixture(scope="module")
def seedlike(test_data):
    folder = test_data / SEEDLIKE
    model = TotalVI.load(folder)
    data = ReadOptions.from_setup_args(model.setup_args).read(folder / "mdata.h5mu")
    return model, data


def test_minibatch_iterator_draws_what_the_whole_call_draws(seedlike) -> None:
    model, data = seedlike
    whole = model.posterior_predictive_sample(data, n_samples=3, seed=0, batch_size=32)
    parts = list(model.iter_posterior_predictive_sample(data, n_samples=3, seed=0, batch_size=32))
    assert len(parts) == -(-data.n_cells // 32)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), np.arange(data.n_cells))
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole["rna"])
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), whole["protein"])


def test_streamed_card_metrics_equal_the_whole_array_tables(seedlike) -> None:
    """compute_metrics (RNA streamed a minibatch at a time) gives the tables the
    whole-array computation gives on the same draws, on both protein scales."""
    model, data = seedlike
    labels = data.obs["cell_type"].astype(str).to_numpy()
    result = M.compute_metrics(model, data, labels, n_samples=3, seed=0, calibration_samples=0)
    pp = model.posterior_predictive_sample(
        data, n_samples=3, seed=0, batch_size=32, protein_scale=EFFICIENCY_FREE
    )
    measured = model.posterior_predictive_sample(
        data, gene_list=[], n_samples=3, seed=0, batch_size=32, protein_scale=MEASURED
    )["protein"]
    train, val = np.asarray(model.train_indices), np.asarray(model.validation_indices)
    cases = [
        (result, "rna", pp["rna"]),
        (result, "protein", measured),
        (result.for_scale(EFFICIENCY_FREE), "protein", pp["protein"]),
    ]
    raw = {"rna": data.rna, "protein": data.protein}
    for res, mod, samples in cases:
        samples = samples.astype(np.float32)
        m_cell, r_cell = reference_model_and_raw_cv(samples, raw[mod], cell_wise=True)
        m_gene, r_gene = reference_model_and_raw_cv(samples, raw[mod], cell_wise=False)
        pd.testing.assert_frame_equal(
            res.cell_wise_cv[mod],
            M.cv_table(m_cell, r_cell, train_indices=train, validation_indices=val),
            rtol=1e-5,
        )
        pd.testing.assert_frame_equal(res.gene_wise_cv[mod], M.cv_table(m_gene, r_gene), rtol=1e-5)
        np.testing.assert_allclose(res.gene_cv_points[mod]["generated"], m_gene, rtol=1e-5)
        np.testing.assert_allclose(res.gene_cv_points[mod]["observed"], r_gene, rtol=1e-5)
        names = list(model.var_names if mod == "rna" else model.protein_names)
        de = M.de_metric_table(raw[mod], samples[..., 0], labels, feature_names=names)
        pd.testing.assert_frame_equal(res.diff_exp[mod], de, rtol=1e-5)
    assert list(result.cell_wise_cv["rna"].columns) == ["Training Value", "Validation Value"]


def test_the_draws_report_progress_as_they_go(seedlike, monkeypatch) -> None:
    """The card's job shows how far the posterior predictive draws are (its longest part),
    and a job's cancel check in its progress callback stops them there."""
    model, data = seedlike
    labels = data.obs["cell_type"].astype(str).to_numpy()
    monkeypatch.setattr(M, "PROGRESS_EVERY", 2)
    seen: list[tuple[float, str]] = []
    M.compute_metrics(
        model,
        data,
        labels,
        n_samples=1,
        calibration_samples=0,
        progress=lambda f, m: seen.append((f, m)),
    )
    drawing = [f for f, m in seen if m.startswith("posterior predictive samples")]
    n_batches = -(-data.n_cells // M.PPC_BATCH_SIZE)
    assert len(drawing) == n_batches // 2
    assert drawing == sorted(drawing) and drawing[0] > 0 and drawing[-1] <= 0.45

    def cancelled(fraction: float, message: str) -> None:
        if message.startswith("posterior predictive samples"):
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        M.compute_metrics(
            model, data, labels, n_samples=1, calibration_samples=0, progress=cancelled
        )
