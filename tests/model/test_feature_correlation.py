"""scvi-tools' ``get_feature_correlation_matrix`` and its denoised samples (model/correlation.py)
against direct computations on the same posterior samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from model.streams import Stream

GENES = ["gene0000", "gene0001", "gene0002", "gene0003"]
PROTEINS = ["prot000", "prot001", "prot002"]


@pytest.fixture(scope="module")
def fitted(simulated_fit):
    return simulated_fit(n_cells=240, n_genes=60, n_proteins=8, n_batches=2, seed=5, max_epochs=4)


def _flat(samples: np.ndarray) -> np.ndarray:
    return np.concatenate([samples[:, :, i] for i in range(samples.shape[2])]).astype(np.float64)


def test_spearman_matrix_is_the_mean_over_batches_of_the_samples_correlation(fitted) -> None:
    data, model = fitted
    kw = {"n_samples": 6, "gene_list": GENES, "protein_list": PROTEINS, "seed": 3}
    got = model.get_feature_correlation_matrix(data, transform_batch=[0, 1], **kw)
    direct, draws = [], []
    stream = Stream(kw["seed"])  # one seed, the batches drawn one after another
    for b in (0, 1):
        samples = model._get_denoised_samples(data, transform_batch=b, **{**kw, "seed": stream})
        assert samples.shape == (data.n_cells, len(GENES) + len(PROTEINS), 6)
        direct.append(spearmanr(_flat(samples), axis=0).statistic)
        draws.append(samples)
    # the first batch's draws are those of a call seeded on its own; the second draws on
    np.testing.assert_array_equal(
        draws[0], model._get_denoised_samples(data, transform_batch=0, **kw)
    )
    assert not np.array_equal(draws[1], model._get_denoised_samples(data, transform_batch=1, **kw))
    np.testing.assert_allclose(got.to_numpy(), np.mean(direct, axis=0), rtol=1e-10)
    assert list(got.index) == GENES + PROTEINS
    assert list(got.columns) == GENES + PROTEINS
    np.testing.assert_allclose(np.diag(got.to_numpy()), 1.0)


def test_pearson_and_log_transform(fitted) -> None:
    data, model = fitted
    kw = {"n_samples": 4, "gene_list": GENES[:2], "protein_list": PROTEINS[:1], "seed": 1}
    got = model.get_feature_correlation_matrix(
        data, transform_batch=1, correlation_type="pearson", log_transform=True, **kw
    )
    flat = _flat(model._get_denoised_samples(data, transform_batch=1, **kw))
    flat[:, :2] = np.log(flat[:, :2] + 1e-8)
    flat[:, 2:] = np.log1p(flat[:, 2:])
    np.testing.assert_allclose(got.to_numpy(), np.corrcoef(flat, rowvar=False), rtol=1e-10)


def test_two_features_give_a_two_by_two_matrix(fitted) -> None:
    data, model = fitted
    got = model.get_feature_correlation_matrix(
        data, n_samples=3, gene_list=GENES[:1], protein_list=PROTEINS[:1]
    )
    assert got.shape == (2, 2)
    assert -1 <= got.iloc[0, 1] <= 1 and got.iloc[0, 1] == got.iloc[1, 0]


def test_samples_average_to_the_denoised_expression(fitted) -> None:
    """Gamma(r, r / rate) has mean ``rate`` and the protein part is foreground with
    probability 1 − π: many samples average to ``1000 · px_scale`` and ``rate_fore (1 − π)``,
    the denoised values of :meth:`get_normalized_expression`."""
    data, model = fitted
    cells = np.arange(20)
    samples = model._get_denoised_samples(
        data, indices=cells, n_samples=1500, transform_batch=0, batch_size=20, seed=0
    )
    rna, pro = model.get_normalized_expression(
        data, indices=cells, transform_batch=0, n_samples=1500, library_size=1000, seed=0,
        return_numpy=True,
    )  # fmt: skip
    mean = samples.mean(-1)
    g = data.n_genes
    np.testing.assert_allclose(mean[:, :g].sum(0), rna.sum(0), rtol=0.05)
    np.testing.assert_allclose(mean[:, g:].sum(0), pro.sum(0), rtol=0.05)


def test_full_call_is_every_feature_and_bad_type_is_refused(fitted) -> None:
    data, model = fitted
    full = model.get_feature_correlation_matrix(data, indices=np.arange(30), n_samples=2)
    assert full.shape == (data.n_genes + data.n_proteins,) * 2
    assert list(full.index[-data.n_proteins :]) == list(model.protein_names)
    with pytest.raises(ValueError, match="correlation_type"):
        model.get_feature_correlation_matrix(data, correlation_type="kendall")  # type: ignore[arg-type]
