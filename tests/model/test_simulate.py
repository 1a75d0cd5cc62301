"""Simulated CITE-seq data (model/simulate.py): shapes, counts, missing proteins, truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from model.data import from_anndata
from model.simulate import simulate_cite_seq

SMALL = {
    "n_cells": 1200,
    "n_genes": 600,
    "n_proteins": 25,
    "n_batches": 4,
    "n_cell_types": 5,
    "missing_protein_fraction": 0.3,
}


@pytest.fixture(scope="module")
def small():
    return simulate_cite_seq(**SMALL, seed=3, chunk_size=500)  # several chunks


def test_shapes_and_layout(small) -> None:
    a = small
    assert a.shape == (1200, 600)
    assert sp.isspmatrix_csr(a.X) or isinstance(a.X, sp.csr_array)
    assert a.X.dtype == np.float32
    prot = a.obsm["protein_expression"]
    assert isinstance(prot, pd.DataFrame)
    assert prot.shape == (1200, 25)
    assert list(prot.index) == list(a.obs_names)
    assert prot.to_numpy().dtype == np.float32
    assert a.obs_names.is_unique and a.var_names.is_unique and prot.columns.is_unique
    assert isinstance(a.obs["batch"].dtype, pd.CategoricalDtype)
    assert isinstance(a.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert a.obs["batch"].nunique() == 4
    assert a.obs["cell_type"].nunique() == 5
    assert a.obsm["z_true"].shape == (1200, 10)


def test_counts_are_non_negative_integers(small) -> None:
    x = small.X
    assert x.nnz > 0
    assert np.all(x.data > 0)  # no explicit zeros stored
    assert np.array_equal(x.data, np.round(x.data))
    x.check_format(full_check=True)
    assert x.has_sorted_indices
    prot = small.obsm["protein_expression"].to_numpy()
    assert np.all(prot >= 0) and np.array_equal(prot, np.round(prot))
    density = x.nnz / np.prod(x.shape)
    assert 0.005 < density < 0.5


def test_missing_proteins_exactly_in_chosen_batches(small) -> None:
    mask = np.asarray(small.uns["simulation"]["protein_batch_mask"], dtype=bool)
    assert mask.shape == (4, 25)
    assert mask[0].all()  # the reference batch measures every protein
    assert not mask.all()  # something is missing at this fraction
    prot = small.obsm["protein_expression"].to_numpy()
    codes = small.obs["batch"].cat.codes.to_numpy()
    for b in range(4):
        sums = prot[codes == b].sum(axis=0)
        assert np.all(sums[~mask[b]] == 0)
        assert np.all(sums[mask[b]] > 0)
    data = from_anndata(small, batch_key="batch")
    assert data.protein_batch_mask is not None
    order = [list(small.obs["batch"].cat.categories).index(c) for c in data.batch_categories]
    assert np.array_equal(data.protein_batch_mask, mask[order])


def test_no_missing_proteins_gives_no_mask() -> None:
    a = simulate_cite_seq(**{**SMALL, "n_cells": 300, "missing_protein_fraction": 0.0}, seed=1)
    assert from_anndata(a, batch_key="batch").protein_batch_mask is None


def test_cell_types_separable_by_knn(small) -> None:
    x = small.X.toarray()
    x = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    x -= x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, :20] * s[:20]
    y = small.obs["cell_type"].cat.codes.to_numpy()
    d = ((pcs[:, None, :] - pcs[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argpartition(d, 15, axis=1)[:, :15]
    votes = np.apply_along_axis(np.bincount, 1, y[nn], minlength=5).argmax(axis=1)
    assert (votes == y).mean() > 0.8


def test_reproducible_by_seed() -> None:
    kw = {**SMALL, "n_cells": 200, "n_genes": 100}
    a, b, c = (simulate_cite_seq(**kw, seed=s) for s in (7, 7, 8))
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert a.obsm["protein_expression"].equals(b.obsm["protein_expression"])
    assert (a.X != c.X).nnz > 0


def test_chunking_does_not_change_shape_or_labels() -> None:
    kw = {**SMALL, "n_cells": 300, "n_genes": 100}
    a = simulate_cite_seq(**kw, seed=2, chunk_size=64)
    b = simulate_cite_seq(**kw, seed=2, chunk_size=1000)
    assert a.shape == b.shape
    assert a.obs.equals(b.obs)  # labels are drawn before the chunks


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="missing_protein_fraction"):
        simulate_cite_seq(n_cells=10, missing_protein_fraction=1.0)
    with pytest.raises(ValueError, match="positive"):
        simulate_cite_seq(n_cells=0)


def test_missing_proteins_follow_antibody_panels() -> None:
    a = simulate_cite_seq(**{**SMALL, "n_cells": 300, "n_batches": 9}, seed=4)
    sim = a.uns["simulation"]
    mask = np.asarray(sim["protein_batch_mask"], dtype=bool)
    panel = np.asarray(sim["batch_panel"])
    assert panel[0] == 0 and mask[0].all()
    for p in np.unique(panel):  # batches of one panel measure the same proteins
        rows = mask[panel == p]
        assert (rows == rows[0]).all()
        assert (~rows[0]).sum() == (0 if p == 0 else round(0.3 * 25))
