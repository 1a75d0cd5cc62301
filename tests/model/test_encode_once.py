"""Decoding the same cells in several batches (``transform_batch`` = a list) encodes each
minibatch once and draws from that posterior for every batch: the values are bit for bit
those of encoding the cells again for each batch (the path verified against scvi-tools),
because the encoder is deterministic and the draws come in the same order."""

from __future__ import annotations

import numpy as np
import pytest

from model.nn import EncoderTotalVI


@pytest.fixture(scope="module")
def fitted(simulated_fit):
    return simulated_fit(n_cells=300, n_genes=50, n_proteins=6, n_batches=3, seed=3, max_epochs=2)


def encodings(monkeypatch) -> list[int]:
    """Counts the encoder passes (:meth:`EncoderTotalVI.posterior` calls)."""
    calls: list[int] = []
    original = EncoderTotalVI.posterior

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EncoderTotalVI, "posterior", counted)
    return calls


@pytest.mark.parametrize("n_samples", [1, 4])
def test_several_batches_encode_once_and_give_the_same_values(
    fitted, monkeypatch, n_samples
) -> None:
    data, model = fitted
    options = {"n_samples": n_samples, "seed": 5, "return_numpy": True, "batch_size": 128}

    def decode_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rna, pro = model.get_normalized_expression(data, transform_batch=[0, 1, 2], **options)
        fore = model.get_protein_foreground_probability(data, transform_batch=[0, 2], **options)
        return rna, pro, fore

    calls = encodings(monkeypatch)
    rna, pro, fore = decode_all()
    assert len(calls) == 2 * 3  # 3 minibatches of 128 (300 cells), once each, per call
    calls.clear()
    monkeypatch.setattr(type(model), "_encode", lambda *a, **k: None)  # the per-batch path
    rna_again, pro_again, fore_again = decode_all()
    assert len(calls) == 3 * 3 + 3 * 2  # every batch encodes its minibatch again
    np.testing.assert_array_equal(rna, rna_again)
    np.testing.assert_array_equal(pro, pro_again)
    np.testing.assert_array_equal(fore, fore_again)


def test_one_batch_encodes_as_before(fitted, monkeypatch) -> None:
    data, model = fitted
    calls = encodings(monkeypatch)
    model.get_normalized_expression(data, transform_batch=1, return_numpy=True, batch_size=128)
    assert len(calls) == 3  # one encoding per minibatch, no posterior kept
