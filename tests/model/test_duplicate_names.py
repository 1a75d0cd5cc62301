"""Duplicate gene and protein names (common in real 10x files) are made unique as anndata's
``var_names_make_unique`` does, with a one-line notice; the original symbols survive.

Fixtures are slices of the embedded ``data/pbmc10k.h5ad`` (200 cells x 300 genes) with a few
names duplicated, written in every supported format under ``tmp_path``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from anndata.utils import make_index_unique

from model.data import (
    CiteSeqData,
    CiteSeqDataError,
    _make_unique,
    align_features,
    from_anndata,
    read_cite_seq,
)

PBMC = Path(__file__).resolve().parents[2] / "data" / "pbmc10k.h5ad"
#: positions -> the name they copy: HES4 three times, TTLL10 twice; gene 7 becomes
#: "HES4-1" before the copies, so anndata's rule must skip that name
GENE_COPIES = {5: 1, 9: 1, 11: 3, 7: None}
GENE_NOTICE = (
    "2 duplicate gene names made unique (HES4 -> HES4, HES4-2, HES4-3; TTLL10 -> TTLL10, "
    "TTLL10-1); the original gene symbols are kept for display and export"
)
PROTEIN_NOTICE = (
    "1 duplicate protein name made unique (CD4_TotalSeqB -> CD4_TotalSeqB, "
    "CD4_TotalSeqB-1); the original protein symbols are kept for display and export"
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*names are not unique:UserWarning"),
    # anndata's own make_index_unique (the reference) warns when it skips "HES4-1"
    pytest.mark.filterwarnings("ignore:Suffix used:UserWarning"),
]


def dup_names(names: list[str]) -> list[str]:
    out = list(names)
    for pos, src in GENE_COPIES.items():
        out[pos] = "HES4-1" if src is None else names[src]
    return out


def dup_adata() -> ad.AnnData:
    """200 cells x 300 genes of the embedded PBMC data; genes and one protein duplicated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ad.read_h5ad(PBMC)
        a = full[:200, :300].copy()
    assert a.var_names[1] == "HES4" and a.var_names[3] == "TTLL10"
    a.var_names = dup_names(list(a.var_names))
    prot = a.obsm["protein_expression"]
    cols = list(prot.columns)
    cols[cols.index("CD8a_TotalSeqB")] = "CD4_TotalSeqB"
    # h5ad cannot store a DataFrame with repeated columns: an array and uns names, as
    # scvi-tools' own files do
    a.obsm["protein_expression"] = prot.to_numpy()
    a.uns["protein_names"] = np.array(cols, dtype=object)
    return a


def protein_names(a: ad.AnnData) -> list[str]:
    return [str(p) for p in a.uns["protein_names"]]


def write(obj: ad.AnnData | md.MuData, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj.write(path)
    return path


def to_mudata(a: ad.AnnData) -> md.MuData:
    rna = ad.AnnData(X=sp.csr_matrix(a.X), obs=a.obs.copy(), var=pd.DataFrame(index=a.var_names))
    protein = ad.AnnData(
        X=a.obsm["protein_expression"],
        obs=pd.DataFrame(index=a.obs_names),
        var=pd.DataFrame(index=protein_names(a)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.MuData({"rna": rna, "protein": protein})


def check(d: CiteSeqData, a: ad.AnnData) -> None:
    """``d`` read from ``a``: unique names by anndata's rule, symbols and counts kept."""
    genes = pd.Index(a.var_names)
    prots = pd.Index(protein_names(a))
    assert d.var_names.is_unique and d.protein_names.is_unique
    assert d.var_names.equals(make_index_unique(genes))
    assert list(d.var_names[[1, 5, 7, 9, 3, 11]]) == [
        "HES4", "HES4-2", "HES4-1", "HES4-3", "TTLL10", "TTLL10-1",
    ]  # fmt: skip
    assert d.protein_names.equals(make_index_unique(prots))
    assert list(d.original_var_names) == list(genes)
    assert list(d.original_protein_names) == list(prots)
    assert d.notices == (GENE_NOTICE, PROTEIN_NOTICE)
    np.testing.assert_array_equal(d.rna.toarray(), np.asarray(sp.csr_matrix(a.X).todense()))
    np.testing.assert_array_equal(d.protein, a.obsm["protein_expression"])


# ------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    "names",
    [
        ["A", "A", "A-1", "A"],
        ["A-1", "A", "A", "A"],
        ["x", "x", "x-1", "x-1", "x"],
        ["B", "B-1", "B", "B-1", "B-2", "B"],
        ["COG8", "EMG1", "COG8", "EMG1", "COG8-2"],
        ["u", "v", "w"],
    ],
)
def test_make_unique_is_anndatas_rule(names: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns about "-1" names it has to skip
        want = make_index_unique(pd.Index(names))
    got = _make_unique(names)
    assert list(got) == list(want) and got.is_unique
    firsts = ~pd.Index(names).duplicated()
    assert all(g == n for g, n, f in zip(got, names, firsts, strict=True) if f)


def test_make_unique_matches_anndata_on_random_collisions() -> None:
    rng = np.random.default_rng(0)
    pool = ["G", "G-1", "G-2", "G-1-1", "H", "H-3"]
    for _ in range(200):
        names = list(rng.choice(pool, size=int(rng.integers(1, 12))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = make_index_unique(pd.Index(names))
        assert list(_make_unique(names)) == list(want), names


# ---------------------------------------------------------------------------- readers
def test_h5ad_duplicates_are_made_unique_with_a_notice(tmp_path: Path) -> None:
    a = dup_adata()
    d = read_cite_seq(write(a, tmp_path / "dup.h5ad"))
    check(d, a)


def test_h5mu_duplicates_are_made_unique_with_a_notice(tmp_path: Path) -> None:
    a = dup_adata()
    d = read_cite_seq(write(to_mudata(a), tmp_path / "dup.h5mu"))
    check(d, a)


def test_10x_folder_duplicates_are_made_unique_with_a_notice(tmp_path: Path) -> None:
    a = dup_adata()
    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    prot = a.obsm["protein_expression"]
    counts = sp.hstack([sp.csr_matrix(a.X), sp.csr_matrix(prot)]).T.tocoo()
    scipy.io.mmwrite(folder / "matrix.mtx", counts.astype(np.int64))
    names = [*a.var_names, *protein_names(a)]
    types = ["Gene Expression"] * a.n_vars + ["Antibody Capture"] * prot.shape[1]
    rows = [f"ID{i}\t{n}\t{t}\n" for i, (n, t) in enumerate(zip(names, types, strict=True))]
    (folder / "features.tsv").write_text("".join(rows))
    (folder / "barcodes.tsv").write_text("".join(f"{c}\n" for c in a.obs_names))
    d = read_cite_seq(folder)
    check(d, a)


def test_10x_h5_duplicates_are_made_unique_with_a_notice(tmp_path: Path) -> None:
    a = dup_adata()
    prot = a.obsm["protein_expression"]
    full = sp.hstack([sp.csr_matrix(a.X), sp.csr_matrix(prot)]).tocsr()  # = features x cells CSC
    names = [*a.var_names, *protein_names(a)]
    types = ["Gene Expression"] * a.n_vars + ["Antibody Capture"] * prot.shape[1]
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = full.data, full.indices, full.indptr
        g["shape"] = np.array([full.shape[1], full.shape[0]], dtype=np.int32)
        g["barcodes"] = np.array(a.obs_names, dtype="S")
        g["features/name"] = np.array(names, dtype="S")
        g["features/feature_type"] = np.array(types, dtype="S")
    check(read_cite_seq(path), a)


def test_in_memory_anndata_and_a_single_duplicate() -> None:
    a = dup_adata()[:, :3].copy()
    a.var_names = ["CD3E", "CD3E", "MS4A1"]
    # in memory, a protein DataFrame may repeat a column name
    a.obsm["protein_expression"] = pd.DataFrame(
        a.obsm["protein_expression"][:, :2], index=a.obs_names, columns=["CD4", "CD4"]
    )
    d = from_anndata(a)
    assert list(d.var_names) == ["CD3E", "CD3E-1", "MS4A1"]
    assert list(d.protein_names) == ["CD4", "CD4-1"]
    assert d.notices == (
        "1 duplicate gene name made unique (CD3E -> CD3E, CD3E-1); the original gene "
        "symbols are kept for display and export",
        "1 duplicate protein name made unique (CD4 -> CD4, CD4-1); the original protein "
        "symbols are kept for display and export",
    )
    assert list(a.var_names) == ["CD3E", "CD3E", "MS4A1"]  # the input is not modified


def test_notice_lists_three_names_and_counts_the_rest() -> None:
    a = dup_adata()[:, :12].copy()
    a.var_names = ["A", "A", "B", "B", "C", "C", "D", "D", "E", "E", "E", "E"]
    note = from_anndata(a).notices[0]
    assert note == (
        "5 duplicate gene names made unique (A -> A, A-1; B -> B, B-1; C -> C, C-1; "
        "... (2 more)); the original gene symbols are kept for display and export"
    )
    a.var_names = ["A"] * 5 + [f"g{i}" for i in range(7)]
    note = from_anndata(a).notices[0]
    assert note.startswith("1 duplicate gene name made unique (A -> A, A-1, A-2, ... (5 in all));")


def test_duplicate_cell_names_are_still_refused(tmp_path: Path) -> None:
    a = dup_adata()
    names = list(a.obs_names)
    names[7] = names[0]
    a.obs_names = names
    with pytest.raises(CiteSeqDataError, match=r"dup\.h5ad: 1 duplicate cell names: \['.*'\]"):
        read_cite_seq(write(a, tmp_path / "dup.h5ad"))


# ----------------------------------------------------- the symbols survive every copy
def test_subset_batches_and_alignment_keep_the_symbols() -> None:
    d = from_anndata(dup_adata())
    for copy in (
        d.subset(np.arange(50)),
        d.with_batches(np.zeros(d.n_cells, dtype=np.int64), ["one"]),
    ):
        assert copy.original_var_names.equals(d.original_var_names)
        assert copy.original_protein_names.equals(d.original_protein_names)
        assert copy.notices == d.notices
    order = d.var_names[::-1]
    prots = d.protein_names[::-1]
    aligned = align_features(d, var_names=order, protein_names=prots)
    assert list(aligned.original_var_names) == list(d.original_var_names[::-1])
    assert list(aligned.original_protein_names) == list(d.original_protein_names[::-1])
    plain = align_features(d, var_names=["ISG15", "HES4"], protein_names=["CD3_TotalSeqB"])
    assert plain.gene_symbols is None and list(plain.original_var_names) == ["ISG15", "HES4"]


def test_fingerprint_tells_made_unique_from_genuine_names() -> None:
    d = from_anndata(dup_adata())
    genuine = CiteSeqData(
        rna=d.rna, protein=d.protein, obs=d.obs, var_names=d.var_names,
        protein_names=d.protein_names, batch=d.batch, batch_categories=d.batch_categories,
    )  # fmt: skip
    assert genuine.gene_symbols is None and genuine.notices == ()
    assert genuine.fingerprint() != d.fingerprint()  # labels differ, so cached views must
    same = CiteSeqData(
        rna=d.rna, protein=d.protein, obs=d.obs, var_names=d.var_names,
        protein_names=d.protein_names, batch=d.batch, batch_categories=d.batch_categories,
        gene_symbols=d.var_names, protein_symbols=d.protein_names,
    )  # fmt: skip
    assert same.gene_symbols is None and same.fingerprint() == genuine.fingerprint()
    with pytest.raises(CiteSeqDataError, match="3 gene symbols for 300 genes"):
        CiteSeqData(
            rna=d.rna, protein=d.protein, obs=d.obs, var_names=d.var_names,
            protein_names=d.protein_names, batch=d.batch,
            batch_categories=d.batch_categories, gene_symbols=["a", "b", "c"],
        )  # fmt: skip


def test_to_anndata_keeps_symbols_and_reads_them_back(tmp_path: Path) -> None:
    d = from_anndata(dup_adata())
    out = d.to_anndata()
    assert out.var_names.equals(d.var_names)
    assert list(out.var["gene_symbols"]) == list(d.original_var_names)
    assert list(out.uns["protein_symbols"]) == list(d.original_protein_names)
    back = read_cite_seq(write(out, tmp_path / "unique.h5ad"))
    assert back.var_names.equals(d.var_names)
    assert back.original_var_names.equals(d.original_var_names)
    assert back.original_protein_names.equals(d.original_protein_names)
    assert back.notices == ()  # the file's names are unique: nothing was changed
    assert back.fingerprint() == d.fingerprint()


def test_unrelated_symbol_columns_are_ignored() -> None:
    a = dup_adata()
    a.var_names = [f"ENSG{i:05d}" for i in range(a.n_vars)]  # ids as names, symbols beside
    a.var["gene_symbols"] = [f"G{i % 7}" for i in range(a.n_vars)]
    d = from_anndata(a)
    assert d.gene_symbols is None and d.original_var_names.equals(d.var_names)
    a.var["gene_symbols"] = list(a.var_names)
    assert from_anndata(a).gene_symbols is None
    a.uns["protein_names"] = [f"P{i}" for i in range(len(a.uns["protein_names"]))]
    a.uns["protein_symbols"] = {"not": "names"}
    assert from_anndata(a).protein_symbols is None
    a.uns["protein_symbols"] = ["P0"] * len(a.uns["protein_names"])  # P0, P0-1, ... no
    assert from_anndata(a).protein_symbols is None


def test_reading_gives_the_notice_instead_of_anndatas_warning(tmp_path: Path) -> None:
    a = dup_adata()
    paths = [write(a, tmp_path / "dup.h5ad"), write(to_mudata(a), tmp_path / "dup.h5mu")]
    for path in paths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d = read_cite_seq(path)
        assert d.notices == (GENE_NOTICE, PROTEIN_NOTICE)
        assert not [w for w in caught if "not unique" in str(w.message)], path.name
