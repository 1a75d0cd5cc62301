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


@pytest.mark.parametrize("n_samples", [1, 3])
def test_imputed_proteins_draw_once_and_equal_a_query_per_batch(
    fitted, monkeypatch, n_samples
) -> None:
    """:meth:`impute_missing_proteins` encodes and draws each minibatch once and decodes
    it in every batch: bit for bit the weighted mean of one seeded query per batch."""
    data, model = fitted
    measured = np.ones((3, len(model.protein_names)), dtype=bool)
    measured[1, 0] = measured[0, 2] = measured[2, 2] = False  # panels with gaps
    monkeypatch.setattr(model, "protein_batch_mask", measured)
    calls = encodings(monkeypatch)
    values, imputed = model.impute_missing_proteins(
        data, n_samples=n_samples, seed=4, batch_size=128
    )
    assert len(calls) == 3  # one encoding per minibatch for all three batches
    per_batch = np.stack(
        [
            model.get_normalized_expression(
                data, transform_batch=code, n_samples=n_samples, seed=4, batch_size=128,
                return_numpy=True,
            )[1]
            for code in range(3)
        ]
    )  # fmt: skip
    weights = measured[:, None, :].astype(np.float32)
    expected = (per_batch * weights).sum(0) / np.maximum(weights.sum(0), 1)
    np.testing.assert_array_equal(values.to_numpy(), expected)
    np.testing.assert_array_equal(values.iloc[:, 2].to_numpy(), per_batch[1][:, 2])
    np.testing.assert_array_equal(imputed.to_numpy(), ~measured[data.batch])
