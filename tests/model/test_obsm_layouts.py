"""A dataset keeps its file's own 2-D layouts (``obsm`` X_umap, X_tsne, X_pca, ...): their
first two columns as float32, every value finite; other ``obsm`` entries are not layouts."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

from model.data import MAX_LAYOUTS, from_anndata, from_mudata, read_cite_seq

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "pbmc_10k_protein_v3_200cells.h5ad"


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """The 200-cell fixture with layouts, a NaN layout and entries that are no layouts."""
    a = ad.read_h5ad(FIXTURE)
    rng = np.random.default_rng(0)
    n = a.n_obs
    a.obsm["X_tsne"] = rng.normal(size=(n, 2)) * 10
    a.obsm["X_pca"] = rng.normal(size=(n, 30))
    bad = rng.normal(size=(n, 2))
    bad[[3, 7], 1] = np.nan
    a.obsm["X_broken"] = bad
    a.obsm["_scvi_latent_qzm"] = rng.normal(size=(n, 10))  # scvi's posterior, no layout
    a.obsm["X_flat"] = rng.normal(size=(n, 1))  # one column: no 2-D layout
    a.obsm["neighbours"] = rng.normal(size=(n, 2))  # not a layout's key
    return a


def test_h5ad_layouts_are_read_as_their_first_two_columns(adata, tmp_path) -> None:
    path = tmp_path / "with_layouts.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    data = read_cite_seq(path)
    assert set(data.layouts) == {"X_tsne", "X_pca"}  # (h5ad sorts the keys)
    for key in data.layouts:
        assert data.layouts[key].dtype == np.float32
        assert data.layouts[key].shape == (adata.n_obs, 2)
    np.testing.assert_allclose(data.layouts["X_tsne"], adata.obsm["X_tsne"], rtol=1e-6)
    np.testing.assert_allclose(data.layouts["X_pca"], adata.obsm["X_pca"][:, :2], rtol=1e-6)
    # the layout with NaNs is not offered, and a note says so in one line
    (note,) = [n for n in data.notices if "X_broken" in n]
    assert "2 cells without finite coordinates" in note and "\n" not in note


def test_subset_and_round_trip_keep_the_layouts(adata) -> None:
    data = from_anndata(adata)
    part = data.subset(np.array([5, 0, 9]))
    np.testing.assert_array_equal(part.layouts["X_tsne"], data.layouts["X_tsne"][[5, 0, 9]])
    mask = np.zeros(data.n_cells, dtype=bool)
    mask[:4] = True
    assert data.subset(mask).layouts["X_pca"].shape == (4, 2)
    back = from_anndata(data.to_anndata())
    assert list(back.layouts) == ["X_tsne", "X_pca"]
    np.testing.assert_array_equal(back.layouts["X_tsne"], data.layouts["X_tsne"])
    # layouts are for display: the counts' fingerprint (and so the model's pair) is the same
    plain = adata.copy()
    plain.obsm = {"protein_expression": adata.obsm["protein_expression"]}
    assert from_anndata(plain).fingerprint() == data.fingerprint()
    assert from_anndata(plain).layouts == {}


def test_layouts_are_bounded(adata) -> None:
    many = adata.copy()
    for i in range(MAX_LAYOUTS + 3):
        many.obsm[f"X_extra{i}"] = np.zeros((adata.n_obs, 2))
    assert len(from_anndata(many).layouts) == MAX_LAYOUTS


def test_h5mu_layouts_from_the_global_and_rna_obsm(adata) -> None:
    base = from_anndata(adata)
    cells = pd.DataFrame(index=base.obs_names)
    rna = ad.AnnData(X=base.rna.copy(), obs=cells.copy(), var=pd.DataFrame(index=base.var_names))
    rna.obsm["X_umap"] = np.asarray(adata.obsm["X_pca"][:, 2:4])
    prot = ad.AnnData(
        X=base.protein.copy(), obs=cells.copy(), var=pd.DataFrame(index=base.protein_names)
    )
    mdata = md.MuData({"rna": rna, "protein": prot})
    mdata.obsm["X_tsne"] = np.asarray(adata.obsm["X_tsne"])
    data = from_mudata(mdata)
    assert set(data.layouts) == {"X_tsne", "X_umap"}
    np.testing.assert_allclose(data.layouts["X_tsne"], adata.obsm["X_tsne"], rtol=1e-6)
    np.testing.assert_allclose(data.layouts["X_umap"], adata.obsm["X_pca"][:, 2:4], rtol=1e-6)
