"""The chunked one-vs-rest t-test equals scanpy's rank_genes_groups (t-test) tables."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from dashboard.backend.group_ttest import GroupTTest, log_normalized


def scanpy_tables(counts, labels, groups, names) -> dict[str, pd.DataFrame]:
    adata = ad.AnnData(
        X=counts.copy(),
        obs=pd.DataFrame(
            {"group": pd.Categorical(labels)}, index=[str(i) for i in range(len(labels))]
        ),
        var=pd.DataFrame(index=names),
    )
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "group", groups=groups, use_raw=False, method="t-test")
    return {g: sc.get.rank_genes_groups_df(adata, group=g) for g in groups}


def counts_and_labels(rng, *, n_cells=600, n_genes=80):
    labels = rng.choice(["B", "T", "NK", "mono"], size=n_cells, p=[0.2, 0.4, 0.1, 0.3])
    rate = rng.gamma(0.6, 2.0, size=(4, n_genes))
    which = pd.Categorical(labels, categories=["B", "T", "NK", "mono"]).codes
    counts = rng.poisson(rate[which] * rng.uniform(0.5, 2.0, size=(n_cells, 1)))
    counts[:, 5] = 0  # a gene no cell expresses: score NaN -> 0, p-value 1
    counts[3] = 0  # a cell without counts
    return counts.astype(np.float32), labels


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("chunk", [600, 97])
def test_chunked_tables_equal_scanpys(sparse: bool, chunk: int) -> None:
    rng = np.random.default_rng(3)
    counts, labels = counts_and_labels(rng)
    names = [f"g{i}" for i in range(counts.shape[1])]
    groups = ["B", "NK", "T"]  # "mono" is only ever part of the rest
    x = sp.csr_matrix(counts) if sparse else counts
    want = scanpy_tables(x, labels, groups, names)
    test = GroupTTest(labels, groups, names)
    for start in range(0, counts.shape[0], chunk):
        test.add(x[start : start + chunk])
    for g in groups:
        got, ref = test.table(g), want[g]
        assert list(got.columns) == list(ref.columns)
        # the order is scanpy's down to near-ties of float rounding: compare by name
        assert got["names"].iloc[:20].tolist() == ref["names"].iloc[:20].tolist()
        got, ref = got.set_index("names"), ref.set_index("names").loc[got["names"]]
        np.testing.assert_allclose(got["scores"], ref["scores"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            got["logfoldchanges"], ref["logfoldchanges"], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(got["pvals"], ref["pvals"], rtol=1e-4, atol=1e-12)
        np.testing.assert_allclose(got["pvals_adj"], ref["pvals_adj"], rtol=1e-4, atol=1e-12)
        assert got.loc["g5", "scores"] == 0 and got.loc["g5", "pvals"] == 1


def test_log_normalized_is_scanpys_and_leaves_its_input() -> None:
    rng = np.random.default_rng(0)
    counts, _ = counts_and_labels(rng, n_cells=50, n_genes=20)
    before = counts.copy()
    adata = ad.AnnData(X=counts.copy())
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    np.testing.assert_allclose(log_normalized(counts), adata.X, rtol=1e-6)
    np.testing.assert_allclose(log_normalized(sp.csr_matrix(counts)).toarray(), adata.X, rtol=1e-6)
    np.testing.assert_array_equal(counts, before)


def test_cells_must_match_the_labels() -> None:
    test = GroupTTest(["a", "b", "a"], ["a", "b"], ["g0", "g1"])
    with pytest.raises(ValueError, match="more than the 3 cells"):
        test.add(np.ones((4, 2)))
    with pytest.raises(ValueError, match="expected 2 features"):
        test.add(np.ones((1, 3)))
    test.add(np.ones((2, 2)))
    with pytest.raises(ValueError, match="2 of 3 cells"):
        test.table("a")
