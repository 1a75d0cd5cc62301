"""Denoised RNA of a few genes from the stored decoder state equals the all-genes query.

:meth:`TotalVI.rna_columns` reads a gene as ``exp(logit − logsumexp)`` from the state of one
pass (:meth:`TotalVI.rna_decoder_state`); it must give what ``get_normalized_expression``
gives for the same genes (same samples, seed and minibatches), for several samples, several
batches and any gene order, and the pass must leave the random stream where that query does
(the latent draws of later minibatches depend on it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def fit(simulated_fit):
    # 300 cells in minibatches of 64: five minibatches, so a drifted stream would show
    return simulated_fit(
        n_cells=300, n_genes=60, n_proteins=8, n_batches=3, seed=4, n_hidden=16, max_epochs=1
    )


def _full(model, data, n_samples: int) -> np.ndarray:
    rna, _ = model.get_normalized_expression(
        data, n_samples=n_samples, library_size=1e4, batch_size=64, seed=3, return_numpy=True
    )
    return rna


@pytest.mark.parametrize("n_samples", [1, 4])
def test_columns_equal_the_all_genes_query(fit, n_samples: int) -> None:
    data, model = fit
    state = model.rna_decoder_state(
        data, n_samples=n_samples, library_size=1e4, batch_size=64, seed=3
    )
    assert state.z.shape == (300, n_samples, model.config.n_latent)
    assert state.log_norm is not None and state.log_norm.shape == (300, n_samples)
    genes = [17, 3, 59, 0]  # any order, first and last gene included
    ours = model.rna_columns(state, genes, batch_size=50)  # chunks unlike the minibatches
    full = _full(model, data, n_samples)
    assert ours.dtype == np.float32 and ours.shape == (300, 4)
    np.testing.assert_allclose(ours, full[:, genes], rtol=2e-5, atol=1e-6)
    every = model.rna_columns(state, np.arange(60))
    np.testing.assert_allclose(every.sum(1), 1e4, rtol=1e-4)  # a softmax: sums to the library


def test_the_pass_leaves_the_random_stream_as_the_full_query(fit) -> None:
    data, model = fit
    torch.manual_seed(11)
    model.rna_decoder_state(data, n_samples=2, batch_size=64, seed=None)
    after_state = torch.rand(3)
    torch.manual_seed(11)
    _, _ = model.get_normalized_expression(data, n_samples=2, batch_size=64, seed=None)
    after_full = torch.rand(3)
    assert torch.equal(after_state, after_full)


def test_softplus_scale_needs_no_normaliser(fit) -> None:
    data, model = fit
    decoder = model.module.decoder
    decoder.use_softplus_scale = True
    try:
        state = model.rna_decoder_state(data, n_samples=2, library_size=1e4, batch_size=64)
        assert state.log_norm is None
        ours = model.rna_columns(state, [5, 6])
        rna, _ = model.get_normalized_expression(
            data, n_samples=2, library_size=1e4, batch_size=64, return_numpy=True
        )
        np.testing.assert_allclose(ours, rna[:, [5, 6]], rtol=2e-5, atol=1e-6)
    finally:
        decoder.use_softplus_scale = False


def test_positions_outside_the_genes_are_refused(fit) -> None:
    data, model = fit
    state = model.rna_decoder_state(data, batch_size=64)
    with pytest.raises(IndexError, match=r"0\.\.59"):
        model.rna_columns(state, [60])
    with pytest.raises(IndexError):
        model.rna_columns(state, [-1])
    assert model.rna_columns(state, []).shape == (300, 0)


def test_forward_columns_is_the_head_restricted(fit) -> None:
    _, model = fit
    head = model.module.decoder.px_scale_decoder
    x = torch.randn(2, 7, head.fc_layers[0][0].in_features - 3)
    b = torch.tensor([0, 1, 2, 0, 1, 2, 0]).view(-1, 1)
    cols = torch.tensor([9, 2, 40])
    with torch.no_grad():
        np.testing.assert_allclose(
            head.forward_columns(x, b, columns=cols), head(x, b)[..., cols], rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ValueError, match="one-layer linear head"):
        model.module.decoder.px_decoder.forward_columns(x, b, columns=cols)
