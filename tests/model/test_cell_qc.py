"""Per-cell diagnostics and feature-wise posterior predictive draws (model/cell_qc.py),
against the model's own dataset-level queries and direct computations.

A small simulated multi-batch dataset with proteins some batches did not measure, and an
untrained model (the identities hold for any weights; no training keeps this fast).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.cell_qc import DIAGNOSTICS, cell_diagnostics, iter_predictive_samples
from model.data import MinifiedPosterior
from model.protein_scale import EFFICIENCY_FREE, MEASURED


@pytest.fixture(scope="module")
def small(simulated_fit):
    data, model = simulated_fit(
        n_cells=240, n_genes=80, n_proteins=10, n_batches=3, seed=1,
        missing_protein_fraction=0.3, n_hidden=32, n_latent=5,
    )  # fmt: skip
    with torch.no_grad():  # a learned-looking efficiency, so both protein scales differ
        model.module.log_per_batch_efficiency.normal_(0.0, 0.3)
    assert model.protein_batch_mask is not None and not model.protein_batch_mask.all()
    return data, model


def test_per_cell_reconstruction_error_averages_to_the_models(small) -> None:
    data, model = small
    for batch_size in (1024, 70):  # one minibatch, and several
        diag = cell_diagnostics(model, data, batch_size=batch_size, seed=3)
        assert set(diag) == set(DIAGNOSTICS)
        assert all(v.shape == (data.n_cells,) for v in diag.values())
        expected = model.get_reconstruction_error(data, batch_size=batch_size, seed=3)
        assert diag["reconstruction_loss_gene"].mean() == pytest.approx(
            expected["reconstruction_loss_gene"], rel=1e-6
        )
        assert diag["reconstruction_loss_protein"].mean() == pytest.approx(
            expected["reconstruction_loss_protein"], rel=1e-6
        )
        assert (diag["reconstruction_loss_gene"] > 0).all()


def test_latent_uncertainty_is_the_mean_posterior_variance(small) -> None:
    data, model = small
    diag = cell_diagnostics(model, data, batch_size=100)
    _, var = model.get_latent_representation(data, return_dist=True)
    np.testing.assert_allclose(diag["latent_variance"], var.mean(1), rtol=1e-5)
    # the encoder by hand: variance = exp(var head) + 1e-4
    module = model.module.eval()
    with torch.no_grad():
        x = torch.as_tensor(data.rna[:5].toarray(), dtype=torch.float32)
        y = torch.as_tensor(data.protein[:5], dtype=torch.float32)
        b = torch.as_tensor(data.batch[:5]).view(-1, 1)
        enc = module.encoder
        h = enc.encoder(module.encoder_input(x, y), b)
        qz_v = torch.exp(enc.z_var_encoder(h)) + 1e-4
    np.testing.assert_allclose(diag["latent_variance"][:5], qz_v.mean(1).numpy(), rtol=1e-5)


def test_protein_background_is_the_masked_mean_log_background(small) -> None:
    data, model = small
    n = data.n_cells
    for scale in (MEASURED, EFFICIENCY_FREE):
        diag = cell_diagnostics(model, data, batch_size=n, seed=5, protein_scale=scale)
        # the same pass by hand (one minibatch, the same seeded stream)
        with model._eval(5) as stream, stream.turn():
            x = torch.as_tensor(data.rna.toarray(), dtype=torch.float32)
            y = torch.as_tensor(data.protein, dtype=torch.float32)
            b = torch.as_tensor(data.batch).view(-1, 1)
            _, gen, _ = model.module(x, y, b, 1.0)
            log_back = gen.py["back_alpha"].numpy().astype(np.float64)
            eff = gen.efficiency.numpy()
        if scale == MEASURED:
            log_back = log_back + np.log(eff)
        measured = model.protein_batch_mask[data.batch]
        expected = np.array([log_back[i, measured[i]].mean() for i in range(n)])
        np.testing.assert_allclose(diag["log_protein_background"], expected, rtol=1e-5, atol=1e-6)
    shift = np.log(model.module.log_per_batch_efficiency.detach().exp().numpy())
    assert np.abs(shift).max() > 0.01  # the two scales do differ here


def test_minified_data_keeps_what_needs_no_counts(small) -> None:
    data, model = small
    n, k = data.n_cells, model.config.n_latent
    rng = np.random.default_rng(0)
    qzv = rng.uniform(0.01, 0.5, (n, k)).astype(np.float32)
    lib = np.asarray(data.rna.sum(1), dtype=np.float32).ravel()
    minified = dataclasses.replace(
        data, minified=MinifiedPosterior(np.zeros((n, k), np.float32), qzv, lib)
    )
    diag = cell_diagnostics(model, minified, batch_size=64)
    assert np.isnan(diag["reconstruction_loss_gene"]).all()
    assert np.isnan(diag["reconstruction_loss_protein"]).all()
    np.testing.assert_allclose(diag["latent_variance"], qzv.mean(1), rtol=1e-6)
    assert np.isfinite(diag["log_protein_background"]).all()


@pytest.mark.parametrize("n_samples", [1, 3])
def test_predictive_draws_of_every_feature_are_posterior_predictive_samples(
    small, n_samples: int
) -> None:
    data, model = small
    kw = {"n_samples": n_samples, "batch_size": 70, "seed": 4}
    pp = model.posterior_predictive_sample(data, **kw)
    parts = list(iter_predictive_samples(model, data, **kw))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), np.arange(240))
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), pp["rna"])
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), pp["protein"])
    # proteins only (no gene heads): posterior_predictive_sample's protein-only draws
    pp = model.posterior_predictive_sample(data, gene_list=[], protein_scale=MEASURED, **kw)
    parts = list(iter_predictive_samples(model, data, gene_list=[], **kw))
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), pp["protein"])
    assert np.concatenate([p[1] for p in parts]).shape[1] == 0


def test_one_genes_draws_have_the_models_mean(small) -> None:
    data, model = small
    gene = str(data.var_names[3])
    cells = np.arange(40)
    parts = list(
        iter_predictive_samples(
            model, data, indices=cells, n_samples=100, gene_list=[gene], protein_list=[]
        )
    )
    rna = np.concatenate([p[1] for p in parts])
    assert rna.shape == (40, 1, 100) and np.concatenate([p[2] for p in parts]).shape[1] == 0
    assert np.all(rna == np.round(rna)) and rna.min() >= 0
    rate, _ = model.get_normalized_expression(
        data,
        indices=cells,
        gene_list=[gene],
        protein_list=[],
        library_size="latent",
        n_samples=20,
        return_numpy=True,
    )
    # NB mean = rate (over 20 draws of z); 4,000 counts: the mean within a few percent
    assert rna.mean() == pytest.approx(float(rate.mean()), rel=0.1)
