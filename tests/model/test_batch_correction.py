"""scvi-tools' ``batch_correction`` in change-mode DE (spec §7.7): each batch category gets
``int(n_samples_overall / n_batch)`` draws per group, decoded with ``transform_batch`` = that
batch and paired within it; checked on a small simulated three-batch model."""

from __future__ import annotations

import numpy as np
import pytest

from model.differential import DifferentialEngine, differential_expression


@pytest.fixture(scope="module")
def fitted(simulated_fit):
    data, model = simulated_fit(
        n_cells=300, n_genes=50, n_proteins=6, n_batches=3, seed=11, max_epochs=4
    )
    return data, model, data.obs["cell_type"].to_numpy()


def test_draws_are_decoded_in_every_batch_and_paired_within_it(fitted, monkeypatch) -> None:
    data, model, types = fitted
    group1 = np.flatnonzero(types == types[0])
    group2 = np.flatnonzero(types != types[0])
    calls: list[tuple[np.ndarray, int | None]] = []
    original = DifferentialEngine._scales

    def recording(self, data, cells, *, n_samples, seed, transform_batch=None):
        calls.append((np.asarray(cells).copy(), transform_batch))
        return original(
            self, data, cells, n_samples=n_samples, seed=seed, transform_batch=transform_batch
        )

    monkeypatch.setattr(DifferentialEngine, "_scales", recording)
    table = differential_expression(
        model, data, group1, group2, n_samples_overall=100, batch_correction=True
    )
    # int(100 / 3) = 33 draws per group and batch, one call per group and batch
    assert [b for _, b in calls] == [0, 0, 1, 1, 2, 2]
    assert all(cells.size == 33 for cells, _ in calls)
    assert all(np.isin(cells, group1).all() for cells, _ in calls[0::2])
    assert all(np.isin(cells, group2).all() for cells, _ in calls[1::2])
    assert {"lfc_lower", "lfc_upper", "is_de_fdr_0.05"} <= set(table.columns)
    assert (table["lfc_lower"] <= table["lfc_upper"]).all()


def test_corrected_scales_are_the_batch_averaged_expression(fitted) -> None:
    """``scale1`` with correction estimates the group's expression averaged over all batches
    (``transform_batch=[0, 1, 2]``), not the expression at the cells' own batches."""
    data, model, types = fitted
    group1 = np.flatnonzero(types == types[0])
    rest = np.setdiff1d(np.arange(data.n_cells), group1)
    table = differential_expression(
        model, data, group1, rest, n_samples_overall=6000, batch_correction=True, seed=1
    ).sort_index()
    rna, _ = model.get_normalized_expression(
        data, indices=group1, transform_batch=[0, 1, 2], n_samples=20, return_numpy=True
    )
    genes = table[table["modality"] == "rna"].loc[list(model.var_names)]
    expected = rna.mean(0)
    top = np.argsort(expected)[-20:]  # well-expressed genes: sampling noise is small there
    np.testing.assert_allclose(genes["scale1"].to_numpy()[top], expected[top], rtol=0.1)


def test_batch_correction_needs_a_draw_per_batch(fitted) -> None:
    data, model, types = fitted
    cells = np.flatnonzero(types == types[0])
    with pytest.raises(ValueError, match="at least one draw per batch"):
        differential_expression(model, data, cells, n_samples_overall=2, batch_correction=True)
