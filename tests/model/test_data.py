"""Reading and validating CITE-seq data (model/data.py) on real 10x PBMC files and small toys."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from model.data import (
    CiteSeqData,
    CiteSeqDataError,
    align_features,
    compute_protein_batch_mask,
    from_anndata,
    from_mudata,
    read_10x,
    read_cite_seq,
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide warnings these tests provoke on purpose (old fixture format, duplicate names)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ad.OldFormatWarning)  # the 2020 scvi file
        warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
        warnings.filterwarnings("ignore", message="Suffix used", category=UserWarning)
        yield


@pytest.fixture(autouse=True)
def _quiet_expected_warnings() -> Iterator[None]:
    with quiet():
        yield


@pytest.fixture(scope="module")
def pbmc200_path(test_data: Path) -> Path:
    return test_data / "pbmc_10k_protein_v3_200cells.h5ad"


@pytest.fixture(scope="module")
def mtx_dir(test_data: Path) -> Path:
    return test_data / "pbmc_10k_protein_v3_10x_mtx"


@pytest.fixture(scope="module")
def pbmc200(pbmc200_path: Path) -> CiteSeqData:
    with quiet():
        return read_cite_seq(pbmc200_path)


@pytest.fixture(scope="module")
def tenx(mtx_dir: Path) -> CiteSeqData:
    return read_cite_seq(mtx_dir)


def toy_adata(n_cells: int = 8, n_genes: int = 6, n_prot: int = 4, seed: int = 0) -> ad.AnnData:
    """Small AnnData in the scvi-tools layout with integer counts and two batches."""
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(
                ["s2", "s1"] * (n_cells // 2), categories=["s2", "s1", "unused"]
            ),
            "kind": ["T", "B", "NK", "T"] * (n_cells // 4),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(
        X=rng.poisson(2.0, (n_cells, n_genes)).astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["protein_expression"] = pd.DataFrame(
        rng.poisson(20.0, (n_cells, n_prot)).astype(np.float32) + 1,
        index=adata.obs_names,
        columns=[f"prot{j}" for j in range(n_prot)],
    )
    return adata


def write_h5ad(adata: ad.AnnData, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


def toy_mudata(seed: int = 0) -> md.MuData:
    a = toy_adata(seed=seed)
    rna = ad.AnnData(X=sp.csr_matrix(a.X), obs=a.obs[["kind"]].copy(), var=a.var.copy())
    prot = ad.AnnData(
        X=a.obsm["protein_expression"].to_numpy(),
        obs=pd.DataFrame({"qc": np.arange(a.n_obs)}, index=a.obs_names),
        var=pd.DataFrame(index=a.obsm["protein_expression"].columns),
    )
    prot.layers["raw"] = prot.X.copy()
    mdata = md.MuData({"rna": rna, "protein": prot})
    mdata.obs["sample"] = a.obs["sample"].to_numpy()
    return mdata


def write_10x_h5(data: CiteSeqData, path: Path, gene_ids: list[str], prot_ids: list[str]) -> None:
    """A Cell Ranger v3 .h5 (features x barcodes CSC) holding ``data``."""
    full = sp.hstack([data.rna, sp.csr_matrix(data.protein)]).tocsr().astype(np.int32)
    names = [*data.var_names, *data.protein_names]
    types = ["Gene Expression"] * data.n_genes + ["Antibody Capture"] * data.n_proteins
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = full.data, full.indices, full.indptr
        g["shape"] = np.array([full.shape[1], full.shape[0]], dtype=np.int32)
        g["barcodes"] = np.array(data.obs_names, dtype="S")
        feats = g.create_group("features")
        feats["id"] = np.array([*gene_ids, *prot_ids], dtype="S")
        feats["name"] = np.array(names, dtype="S")
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(names), dtype="S")


def write_10x_folder(
    folder: Path, counts: np.ndarray, names: list[str], types: list[str] | None
) -> Path:
    """A matrix folder with ``counts`` (cells x features); ``types=None`` writes v2 genes.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(np.asarray(counts).T.astype(int)))
    cols = [[f"ID{i}", n] + ([] if types is None else [types[i]]) for i, n in enumerate(names)]
    feat_file = "genes.tsv" if types is None else "features.tsv"
    (folder / feat_file).write_text("".join("\t".join(c) + "\n" for c in cols))
    (folder / "barcodes.tsv").write_text("".join(f"BC{i}-1\n" for i in range(len(counts))))
    return folder


# ----------------------------------------------------------------------- real data
def test_reads_pbmc_200_cells_h5ad(pbmc200: CiteSeqData, pbmc200_path: Path) -> None:
    d = pbmc200
    assert (d.n_cells, d.n_genes, d.n_proteins, d.n_batch) == (200, 16727, 14, 1)
    assert isinstance(d.rna, sp.csr_matrix) and d.rna.dtype == np.float32
    assert d.rna.has_canonical_format
    assert d.protein.dtype == np.float32 and d.protein.flags.c_contiguous
    assert d.protein_names[0] == "CD3_TotalSeqB"  # from uns["protein_names"] (obsm is an array)
    assert d.batch_categories == ["all"] and d.batch_key is None and not d.batch.any()
    assert d.labels is None and d.protein_batch_mask is None
    assert list(d.obs.columns) == ["n_genes", "percent_mito", "n_counts"]
    assert d.source == str(pbmc200_path)
    raw = ad.read_h5ad(pbmc200_path)
    np.testing.assert_array_equal(d.rna.toarray(), raw.X)
    np.testing.assert_array_equal(d.protein, raw.obsm["protein_expression"])


def test_reads_pbmc_6855_cells_with_batch(pbmc_adata: ad.AnnData) -> None:
    d = from_anndata(pbmc_adata, batch_key="batch", source="pbmc10k")
    assert (d.n_cells, d.n_genes, d.n_proteins) == (6855, 4000, 14)
    assert d.batch_categories == ["pbmc10k"] and d.batch_key == "batch"
    assert list(d.protein_names) == list(pbmc_adata.obsm["protein_expression"].columns)
    assert d.protein_batch_mask is None
    assert d.rna.nnz == pbmc_adata.X.nnz
    assert d.rna is not pbmc_adata.X  # a copy: the caller's AnnData is never aliased


def test_reads_10x_folder(tenx: CiteSeqData, mtx_dir: Path) -> None:
    d = tenx
    assert (d.n_cells, d.n_genes, d.n_proteins) == (1024, 100, 17)
    assert d.obs_names[0] == "GGAGGTACATTAAAGG-1"
    assert list(d.protein_names[-3:]) == [
        "IgG2a_control_TotalSeqB",
        "IgG1_control_TotalSeqB",
        "IgG2b_control_TotalSeqB",
    ]
    assert d.var_names[-1] == "KRTAP19-1"
    with gzip.open(mtx_dir / "matrix.mtx.gz", "rb") as fh:
        full = sp.csr_matrix(scipy.io.mmread(fh)).T.toarray()
    np.testing.assert_array_equal(d.rna.toarray(), full[:, :100])
    np.testing.assert_array_equal(d.protein, full[:, 100:])
    # same file through matrix.mtx.gz and through a parent with filtered_feature_bc_matrix/
    assert read_cite_seq(mtx_dir / "matrix.mtx.gz").fingerprint() == d.fingerprint()


def test_10x_parent_folder_and_uncompressed_files(tenx: CiteSeqData, mtx_dir: Path, tmp_path):
    inner = tmp_path / "run" / "filtered_feature_bc_matrix"
    inner.mkdir(parents=True)
    for name in ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"):
        with gzip.open(mtx_dir / name, "rb") as src, (inner / name[:-3]).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    d = read_cite_seq(tmp_path / "run")
    assert d.fingerprint() == tenx.fingerprint()
    assert d.source == str(tmp_path / "run")


def test_10x_agrees_with_the_h5ad_on_shared_cells(tenx: CiteSeqData, pbmc200: CiteSeqData):
    cells = pbmc200.obs_names.intersection(tenx.obs_names)
    genes = pbmc200.var_names.intersection(tenx.var_names)
    assert len(cells) == 34 and len(genes) == 53
    a = align_features(tenx, var_names=genes, protein_names=pbmc200.protein_names).subset(
        tenx.obs_names.get_indexer(cells)
    )
    b = align_features(pbmc200, var_names=genes, protein_names=pbmc200.protein_names).subset(
        pbmc200.obs_names.get_indexer(cells)
    )
    np.testing.assert_array_equal(a.rna.toarray(), b.rna.toarray())
    np.testing.assert_array_equal(a.protein, b.protein)


def test_10x_h5_matches_folder(tenx: CiteSeqData, mtx_dir: Path, tmp_path: Path) -> None:
    ids = pd.read_csv(mtx_dir / "features.tsv.gz", sep="\t", header=None)[0].tolist()
    h5 = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(tenx, h5, ids[:100], ids[100:])
    d = read_cite_seq(h5)
    assert d.source == str(h5)
    for attr in ("var_names", "protein_names", "obs_names"):
        assert getattr(d, attr).equals(getattr(tenx, attr))
    assert (d.rna != tenx.rna).nnz == 0
    np.testing.assert_array_equal(d.protein, tenx.protein)
    assert d.fingerprint() == tenx.fingerprint()


def test_10x_duplicate_names_made_unique(tmp_path: Path) -> None:
    counts = np.arange(1, 3 * 6 + 1).reshape(3, 6)
    names = ["A", "A", "A-1", "A", "CD3", "CD3"]
    types = ["Gene Expression"] * 4 + ["Antibody Capture"] * 2
    d = read_cite_seq(write_10x_folder(tmp_path / "m", counts, names, types))
    # anndata's var_names_make_unique: the existing "A-1" pushes the second "A" copy to "A-2"
    assert list(d.var_names) == ["A", "A-2", "A-1", "A-3"]
    assert d.var_names.equals(ad.utils.make_index_unique(pd.Index(names[:4])))
    assert list(d.protein_names) == ["CD3", "CD3-1"]
    np.testing.assert_array_equal(d.protein, counts[:, 4:])


def test_10x_without_antibody_capture_is_refused(tmp_path: Path) -> None:
    counts = np.ones((3, 2))
    v2 = write_10x_folder(tmp_path / "v2", counts, ["G1", "G2"], None)
    with pytest.raises(CiteSeqDataError, match=r"no 'Antibody Capture'.*Gene Expression"):
        read_cite_seq(v2)
    other = write_10x_folder(tmp_path / "v3", counts, ["G1", "g"], ["Gene Expression", "CRISPR"])
    with pytest.raises(CiteSeqDataError, match=r"no 'Antibody Capture'.*CRISPR"):
        read_10x(other)


def test_10x_refuses_batch_key_and_bad_folders(mtx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CiteSeqDataError, match=r"batch_key='batch'.*10x"):
        read_cite_seq(mtx_dir, batch_key="batch")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CiteSeqDataError, match=r"empty.*matrix\.mtx\[\.gz\].*missing"):
        read_cite_seq(tmp_path / "empty")
    bad = write_10x_folder(tmp_path / "bad", np.ones((3, 2)), ["G", "P"], ["Gene Expression"] * 2)
    (bad / "barcodes.tsv").write_text("BC0-1\nBC1-1\n")
    with pytest.raises(CiteSeqDataError, match="do not belong together"):
        read_cite_seq(bad)
    with h5py.File(tmp_path / "v2.h5", "w") as f:
        f.create_group("GRCh38")
    with pytest.raises(CiteSeqDataError, match=r"v2\.h5: no /matrix group.*'GRCh38'"):
        read_cite_seq(tmp_path / "v2.h5")


# ----------------------------------------------------------------- AnnData / MuData
def test_anndata_batches_labels_and_layers(tmp_path: Path) -> None:
    adata = toy_adata()
    adata.X = np.zeros_like(adata.X)  # counts only in the layer
    path = write_h5ad(adata, tmp_path / "toy.h5ad")
    d = read_cite_seq(path, batch_key="sample", labels_key="kind", layer="counts")
    assert d.batch_categories == ["s2", "s1"]  # categorical order kept, unused dropped
    np.testing.assert_array_equal(d.batch, [0, 1] * 4)
    assert d.label_categories == ["B", "NK", "T"]  # plain column: sorted unique values
    np.testing.assert_array_equal(d.labels, [2, 0, 1, 2] * 2)
    np.testing.assert_array_equal(d.rna.toarray(), adata.layers["counts"])
    assert list(d.obs.columns) == ["sample", "kind"]


def test_anndata_array_proteins_and_numeric_batches(tmp_path: Path) -> None:
    adata = toy_adata()
    prot = adata.obsm["protein_expression"].to_numpy().astype(np.int64)
    adata.obsm["adt"] = prot
    del adata.obsm["protein_expression"]
    adata.uns["my_names"] = np.array(["a", "b", "c", "d"])
    adata.obs["lane"] = [10, 2, 1, 2, 10, 1, 1, 2]
    adata.X = sp.csc_matrix(adata.X)
    path = write_h5ad(adata, tmp_path / "toy.h5ad")
    d = read_cite_seq(path, protein_obsm_key="adt", protein_names_uns_key="my_names",
                      batch_key="lane")  # fmt: skip
    assert list(d.protein_names) == ["a", "b", "c", "d"]
    assert d.batch_categories == ["1", "2", "10"]  # sorted as numbers, named as text
    np.testing.assert_array_equal(d.protein, prot)
    assert isinstance(d.rna, sp.csr_matrix)
    unnamed = from_anndata(adata, protein_obsm_key="adt")
    assert list(unnamed.protein_names) == [f"protein_{i}" for i in range(4)]


def test_sparse_input_is_canonicalised() -> None:
    adata = toy_adata()
    # row 0: unsorted with a duplicate column 3; row 1: an explicit zero; row 2: one entry
    data, indices, indptr = [1.0, 5.0, 2.0, 0.0, 3.0], [3, 1, 3, 1, 0], [0, 3, 4, 5, 5, 5, 5, 5, 5]
    adata.X = sp.csr_matrix((data, indices, indptr), shape=adata.shape)
    assert not adata.X.has_canonical_format
    d = from_anndata(adata)
    assert d.rna.has_canonical_format and d.rna.nnz == 3 and d.rna.dtype == np.float32
    np.testing.assert_array_equal(d.rna.indices, [1, 3, 0])
    assert (d.rna[0, 3], d.rna[0, 1], d.rna[2, 0]) == (3.0, 5.0, 3.0)


def test_mudata_reorders_protein_cells_and_finds_batch_key(tmp_path: Path) -> None:
    mdata = toy_mudata()
    order = np.arange(mdata["protein"].n_obs)[::-1]
    mdata.mod["protein"] = mdata["protein"][order].copy()
    mdata.update()
    path = tmp_path / "toy.h5mu"
    mdata.write(path)
    d = read_cite_seq(path, batch_key="sample", labels_key="kind", protein_layer="raw")
    ref = toy_adata()
    assert d.obs_names.equals(ref.obs_names)
    np.testing.assert_array_equal(d.protein, ref.obsm["protein_expression"].to_numpy())
    np.testing.assert_array_equal(d.rna.toarray(), ref.X)
    assert d.batch_categories == ["s1", "s2"] and d.label_categories == ["B", "NK", "T"]
    assert {"sample", "kind", "qc"} <= set(d.obs.columns)
    np.testing.assert_array_equal(d.obs["qc"], np.arange(8))  # follows the RNA cell order


def test_mudata_labels_from_protein_modality() -> None:
    d = from_mudata(toy_mudata(), labels_key="qc", source="m")
    assert d.label_categories == [str(i) for i in range(8)]


# ------------------------------------------------------------------ bad input
def _neg_rna(a: ad.AnnData) -> None:
    a.X[2, 3] = -1


def _nan_rna(a: ad.AnnData) -> None:
    a.X[1, 4] = np.nan


def _frac_rna(a: ad.AnnData) -> None:
    a.X[5, 0] = 1.5


def _inf_prot(a: ad.AnnData) -> None:
    a.obsm["protein_expression"].iloc[3, 2] = np.inf


def _neg_prot(a: ad.AnnData) -> None:
    a.obsm["protein_expression"].iloc[0, 1] = -2


def _frac_prot(a: ad.AnnData) -> None:
    a.obsm["protein_expression"].iloc[7, 3] = 0.25


def _tiny_frac_rna(a: ad.AnnData) -> None:
    a.X = a.X.astype(np.float64)
    a.X[0, 0] += 1e-9


BAD_COUNTS = [
    (
        _neg_rna,
        r"RNA counts in X contain a negative value \(-1\.0\) at cell 'cell2', gene 'gene3'",
    ),
    (_nan_rna, r"RNA counts in X contain a NaN or infinite value.*'cell1', gene 'gene4'"),
    (_frac_rna, r"RNA counts in X contain a non-integer value \(1\.5\) at cell 'cell5'"),
    (_tiny_frac_rna, r"non-integer value .* at cell 'cell0', gene 'gene0'"),
    (
        _inf_prot,
        r"protein counts in obsm\['protein_expression'\] contain a NaN or infinite.*"
        r"cell 'cell3', protein 'prot2'",
    ),
    (_neg_prot, r"protein counts .* negative value \(-2\.0\) at cell 'cell0', protein 'prot1'"),
    (
        _frac_prot,
        r"protein counts .* non-integer value \(0\.25\) at cell 'cell7', protein 'prot3'",
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "message"), BAD_COUNTS, ids=lambda v: getattr(v, "__name__", None)
)
def test_bad_counts_are_refused(corrupt, message: str, tmp_path: Path) -> None:
    adata = toy_adata()
    corrupt(adata)
    path = write_h5ad(adata, tmp_path / "bad.h5ad")
    with pytest.raises(CiteSeqDataError, match=message) as err:
        read_cite_seq(path)
    assert str(path) in str(err.value)


def test_integer_valued_dtypes_are_accepted() -> None:
    adata = toy_adata()
    adata.X = adata.X.astype(np.int32)
    adata.obsm["protein_expression"] = adata.obsm["protein_expression"].astype(np.float64)
    d = from_anndata(adata)
    assert d.rna.dtype == np.float32 and d.protein.dtype == np.float32


def _no_cells(a: ad.AnnData) -> ad.AnnData:
    return a[:0].copy()


def _no_genes(a: ad.AnnData) -> ad.AnnData:
    return a[:, :0].copy()


def _no_proteins(a: ad.AnnData) -> ad.AnnData:
    a.obsm["protein_expression"] = a.obsm["protein_expression"].iloc[:, :0]
    return a


def _dup_cells(a: ad.AnnData) -> ad.AnnData:
    a.obs_names = ["cell0", "cell1", "cell0", *a.obs_names[3:]]
    return a


def _dup_genes(a: ad.AnnData) -> ad.AnnData:
    a.var_names = ["gene0", "TNF", "TNF", "gene3", "gene4", "gene0"]
    return a


def _dup_proteins(a: ad.AnnData) -> ad.AnnData:
    a.obsm["protein_expression"] = a.obsm["protein_expression"].to_numpy()
    a.uns["protein_names"] = ["CD4", "CD4", "CD8", "CD3"]
    return a


def test_duplicate_gene_and_protein_names_are_made_unique(tmp_path: Path) -> None:
    adata = _dup_proteins(_dup_genes(toy_adata()))  # refused before; common in real files
    d = read_cite_seq(write_h5ad(adata, tmp_path / "dup.h5ad"))
    assert list(d.var_names) == ["gene0", "TNF", "TNF-1", "gene3", "gene4", "gene0-1"]
    assert list(d.protein_names) == ["CD4", "CD4-1", "CD8", "CD3"]
    assert list(d.original_var_names) == list(adata.var_names)
    assert list(d.original_protein_names) == ["CD4", "CD4", "CD8", "CD3"]
    assert d.notices == (
        "2 duplicate gene names made unique (gene0 -> gene0, gene0-1; TNF -> TNF, TNF-1); "
        "the original gene symbols are kept for display and export",
        "1 duplicate protein name made unique (CD4 -> CD4, CD4-1); "
        "the original protein symbols are kept for display and export",
    )


def _nan_batch(a: ad.AnnData) -> ad.AnnData:
    a.obs["sample"] = a.obs["sample"].astype(object)
    a.obs.iloc[[1, 4], 0] = np.nan
    return a


def _uns_mismatch(a: ad.AnnData) -> ad.AnnData:
    a.obsm["protein_expression"] = a.obsm["protein_expression"].to_numpy()
    a.uns["protein_names"] = ["CD4", "CD8"]
    return a


def _array_proteins(a: ad.AnnData) -> ad.AnnData:
    a.obsm["protein_expression"] = a.obsm["protein_expression"].to_numpy()
    return a


BAD_FILES = [
    (_no_cells, {}, r"no cells"),
    (_no_genes, {}, r"no genes in X"),
    (_no_proteins, {}, r"no proteins in obsm\['protein_expression'\]"),
    (_dup_cells, {}, r"1 duplicate cell names: \['cell0'\]; make them unique"),
    (_nan_batch, {"batch_key": "sample"}, r"obs column 'sample'.*NaN.*for 2 of 8 cells"),
    (_uns_mismatch, {}, r"uns\['protein_names'\] has 2 protein names but .* 4 columns"),
    (None, {"layer": "raw"}, r"no layer 'raw'; available layers: \['counts'\]"),
    (
        None,
        {"protein_obsm_key": "adt"},
        r"obsm\[.adt.\] \(obsm keys: "
        r"\['protein_expression'\]",
    ),
    (None, {"batch_key": "donor"}, r"no obs column 'donor'; available .*\['sample', 'kind'\]"),
    (None, {"labels_key": "cell_type"}, r"no obs column 'cell_type'"),
    (_array_proteins, {"protein_names_uns_key": "names"}, r"no protein names at uns\['names'\]"),
]


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    BAD_FILES,
    ids=[c.__name__ if c else next(iter(k)) for c, k, _ in BAD_FILES],
)
def test_bad_anndata_is_refused(change, kwargs: dict, message: str, tmp_path: Path) -> None:
    adata = toy_adata()
    if change is not None:
        adata = change(adata)
    if change is _no_proteins:  # an empty DataFrame does not survive h5ad: test in memory
        with pytest.raises(CiteSeqDataError, match=message):
            from_anndata(adata, source="mem")
        return
    path = write_h5ad(adata, tmp_path / "bad.h5ad")
    with pytest.raises(CiteSeqDataError, match=message) as err:
        read_cite_seq(path, **kwargs)
    assert str(path) in str(err.value)


def test_bad_mudata_is_refused(tmp_path: Path) -> None:
    mdata = toy_mudata()
    path = tmp_path / "m.h5mu"
    mdata.write(path)
    with pytest.raises(CiteSeqDataError, match=r"no modality 'adt'.*\['rna', 'protein'\]"):
        read_cite_seq(path, protein_modality="adt")
    with pytest.raises(CiteSeqDataError, match=r"modality 'protein' has no layer 'counts'.*'raw'"):
        read_cite_seq(path, protein_layer="counts")
    with pytest.raises(CiteSeqDataError, match=r"modality 'rna' has no layer 'counts'.*\(none\)"):
        read_cite_seq(path, layer="counts")
    with pytest.raises(CiteSeqDataError, match=r"no obs column 'donor'.*'sample', 'kind', 'qc'"):
        read_cite_seq(path, batch_key="donor")
    prot = mdata["protein"][2:].copy()
    prot.obs_names = [*prot.obs_names[:-1], "stray"]
    uneven = md.MuData({"rna": mdata["rna"], "protein": prot})
    with pytest.raises(
        CiteSeqDataError,
        match=r"different cells: 3 only in 'rna' \(\['cell0', 'cell1', 'cell7'\]\), "
        r"1 only in 'protein' \(\['stray'\]\)",
    ):
        from_mudata(uneven, source="m")


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    good = write_h5ad(toy_adata(), tmp_path / "good.h5ad")
    blob = good.read_bytes()
    cases = {
        "truncated.h5ad": blob[: len(blob) // 2],
        "garbage.h5mu": b"not an hdf5 file",
        "garbage.h5": b"\x89HDF\r\n\x1a\n" + b"\x00" * 64,
        "empty.h5ad": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CiteSeqDataError, match=rf"{name}: cannot be read as"):
            read_cite_seq(tmp_path / name)
    with pytest.raises(CiteSeqDataError, match=r"missing\.h5ad: no such file"):
        read_cite_seq(tmp_path / "missing.h5ad")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(CiteSeqDataError, match=r"table\.csv: unsupported file type '\.csv'.*h5mu"):
        read_cite_seq(tmp_path / "table.csv")


# ----------------------------------------------------------------- operations
def test_protein_batch_mask_detection() -> None:
    adata = toy_adata()
    assert from_anndata(adata, batch_key="sample").protein_batch_mask is None
    s1 = (adata.obs["sample"] == "s1").to_numpy()
    adata.obsm["protein_expression"].loc[s1, "prot2"] = 0.0
    d = from_anndata(adata, batch_key="sample")
    expected = np.ones((2, 4), dtype=bool)
    expected[d.batch_categories.index("s1"), 2] = False
    np.testing.assert_array_equal(d.protein_batch_mask, expected)
    # zero in a single cell is not "unmeasured"; a batch without cells counts as measured
    prot = np.ones((4, 2), dtype=np.float32)
    prot[0, 0] = 0
    assert compute_protein_batch_mask(prot, np.array([0, 0, 1, 1]), 3) is None
    with pytest.raises(CiteSeqDataError, match=r"outside 0\.\.1"):
        compute_protein_batch_mask(prot, np.array([0, 0, 2, 1]), 2)


def test_selecting_proteins_keeps_the_mask_rule() -> None:
    """A protein subset keeps the mask of its columns, and no mask once every protein it
    keeps was measured in every batch (as :func:`align_features`)."""
    adata = toy_adata()
    s1 = (adata.obs["sample"] == "s1").to_numpy()
    adata.obsm["protein_expression"].loc[s1, "prot2"] = 0.0
    d = from_anndata(adata, batch_key="sample")
    kept = d.select_proteins([2, 0])
    assert list(kept.protein_names) == ["prot2", "prot0"]
    np.testing.assert_array_equal(kept.protein_batch_mask, d.protein_batch_mask[:, [2, 0]])
    assert d.select_proteins([0, 1]).protein_batch_mask is None
    assert d.select_proteins([]).protein_batch_mask is None
    # the same content as a file without that protein: the same fingerprint (cache key)
    adata.obsm["protein_expression"] = adata.obsm["protein_expression"].drop(columns="prot2")
    without = from_anndata(adata, batch_key="sample")
    assert d.select_proteins([0, 1, 3]).fingerprint() == without.fingerprint()


def test_subset_keeps_categories_and_mask() -> None:
    adata = toy_adata()
    adata.obsm["protein_expression"].iloc[1::2, 0] = 0.0  # prot0 absent in batch "s1"
    d = from_anndata(adata, batch_key="sample", labels_key="kind")
    for idx, n in ((np.array([0, 2, 4]), 3), (np.arange(8) % 2 == 0, 4), (slice(0, 8, 2), 4)):
        s = d.subset(idx)
        assert s.n_cells == n
        assert s.batch_categories == ["s2", "s1"] and s.label_categories == ["B", "NK", "T"]
        assert not s.batch.any()  # only batch "s2" left, codes unchanged
        np.testing.assert_array_equal(s.protein_batch_mask, d.protein_batch_mask)
        np.testing.assert_array_equal(s.protein, d.protein[idx])
        assert s.obs_names.equals(d.obs_names[idx])
    with pytest.raises(CiteSeqDataError, match="boolean subset mask has 3 entries"):
        d.subset(np.ones(3, dtype=bool))


def test_fingerprint_is_content_not_path(pbmc200: CiteSeqData, pbmc200_path, tmp_path) -> None:
    copy = tmp_path / "elsewhere.h5ad"
    shutil.copy(pbmc200_path, copy)
    other = read_cite_seq(copy)
    assert other.source != pbmc200.source
    assert other.fingerprint() == pbmc200.fingerprint()
    assert len(pbmc200.fingerprint()) == 64
    adata = ad.read_h5ad(copy)
    adata.X[17, 123] += 1
    assert from_anndata(adata).fingerprint() != pbmc200.fingerprint()
    adata.X[17, 123] -= 1
    adata.obs_names = [*adata.obs_names[:-1], "renamed"]
    assert from_anndata(adata).fingerprint() != pbmc200.fingerprint()
    d = from_anndata(toy_adata())
    assert d.with_batches(d.batch, ["other"]).fingerprint() != d.fingerprint()


def test_with_batches_recomputes_mask() -> None:
    adata = toy_adata()
    adata.obsm["protein_expression"].iloc[4:, 3] = 0.0
    d = from_anndata(adata)
    assert d.protein_batch_mask is None and d.batch_categories == ["all"]
    pseudo = (np.arange(8) >= 4).astype(np.int64)
    b = d.with_batches(pseudo, ["first", "second"], key="half")
    assert b.batch_key == "half" and b.n_batch == 2
    assert list(b.obs["half"]) == ["first"] * 4 + ["second"] * 4
    np.testing.assert_array_equal(b.protein_batch_mask, [[1, 1, 1, 1], [1, 1, 1, 0]])
    assert "half" not in d.obs.columns  # the original is untouched
    with pytest.raises(CiteSeqDataError, match=r"batch codes range 0\.\.2 but there are 2"):
        d.with_batches(np.array([0, 1, 2, 0, 0, 0, 0, 0]), ["a", "b"])
    with pytest.raises(CiteSeqDataError, match="3 codes for 8 cells"):
        d.with_batches(np.zeros(3, dtype=np.int64), ["a"])


def test_align_features_reorders_and_names_missing() -> None:
    adata = toy_adata()
    adata.obsm["protein_expression"].iloc[1::2, 0] = 0.0
    d = from_anndata(adata, batch_key="sample")
    genes, prots = list(d.var_names[::-1]), ["prot3", "prot0", "prot1", "prot2"]
    a = align_features(d, var_names=genes, protein_names=prots)
    assert list(a.var_names) == genes and list(a.protein_names) == prots
    np.testing.assert_array_equal(a.rna.toarray(), d.rna.toarray()[:, ::-1])
    np.testing.assert_array_equal(a.protein, d.protein[:, [3, 0, 1, 2]])
    assert a.protein.flags.c_contiguous and a.rna.has_canonical_format
    np.testing.assert_array_equal(a.protein_batch_mask, d.protein_batch_mask[:, [3, 0, 1, 2]])
    assert align_features(d, var_names=d.var_names, protein_names=d.protein_names) is d
    sub = align_features(d, var_names=genes[:2], protein_names=["prot3"])  # extras dropped
    assert (sub.n_genes, sub.n_proteins, sub.protein_batch_mask) == (2, 1, None)
    want = [*genes, "CD3E", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY"]
    with pytest.raises(
        CiteSeqDataError,
        match=r"6 of the model's 12 genes are missing \(\['CD3E', 'MS4A1', 'CD14', 'LYZ', "
        r"'NKG7', \.\.\. \(1 more\)\]\); 1 of the model's 5 proteins are missing \(\['CD19'\]\)",
    ):
        align_features(d, var_names=want, protein_names=[*prots, "CD19"])


def test_to_anndata_round_trip(tmp_path: Path) -> None:
    adata = toy_adata()
    d = from_anndata(adata, batch_key="sample", labels_key="kind", source="toy")
    out = d.to_anndata()
    assert isinstance(out.obs["sample"].dtype, pd.CategoricalDtype)
    assert isinstance(out.obsm["protein_expression"], pd.DataFrame)
    path = write_h5ad(out, tmp_path / "round.h5ad")
    back = read_cite_seq(path, batch_key="sample", labels_key="kind")
    assert back.fingerprint() == d.fingerprint()
    single = from_anndata(adata).to_anndata()
    assert list(single.obs["batch"].cat.categories) == ["all"]
    assert (
        from_anndata(single, batch_key="batch").fingerprint() == from_anndata(adata).fingerprint()
    )
