"""Untrusted files are refused, with one line naming the object, before anything is read:
HDF5 files that are not self-contained or declare far more than they store, and sparse
matrices (HDF5, 10x ``.h5``, matrix folders, in memory) whose structure scipy would trust."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from model.data import CiteSeqData, CiteSeqDataError, from_anndata, read_cite_seq
from model.hdf5_guard import check_hdf5_file
from model.sparse_check import check_compressed, check_sparse

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "hunter2-db-password"


def small_adata(n: int = 30, g: int = 20) -> ad.AnnData:
    rng = np.random.default_rng(0)
    x = sp.random(n, g, density=0.3, format="csr", random_state=1, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(rng.choice(["B", "T"], n)), "n_counts": np.arange(n) * 1.0},
        index=[f"c{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(g)]))
    adata.obsm["protein_expression"] = pd.DataFrame(
        rng.poisson(3, (n, 3)).astype(np.float32), index=adata.obs_names, columns=["A", "B", "C"]
    )
    return adata


@pytest.fixture
def h5ad(tmp_path: Path) -> Path:
    path = tmp_path / "upload.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small_adata().write_h5ad(path)
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.h5"
    with h5py.File(path, "w") as f:
        f["categories"] = np.array([SECRET.encode(), b"other"])
        f["values"] = np.arange(30, dtype=np.float64)
    (tmp_path / "secret.bin").write_bytes(SECRET.encode() * 100)
    return path


def refused(path: Path, *fragments: str) -> str:
    """Read ``path``; assert a one-line refusal holding ``fragments`` and no secret."""
    with pytest.raises(CiteSeqDataError) as info:
        read_cite_seq(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert SECRET not in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def replace(path: Path, name: str, make) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        make(f, name)


# ------------------------------------------------------------------- not self-contained
def test_external_link_in_obs_categories_is_refused_unfollowed(h5ad: Path, secret: Path):
    def link(f: h5py.File, name: str) -> None:
        f[name] = h5py.ExternalLink(str(secret), "/categories")

    replace(h5ad, "obs/cell_type/categories", link)
    msg = refused(h5ad, "obs/cell_type/categories is an HDF5 external link to another file")
    assert msg.endswith("refused (files must be self-contained)")
    assert str(secret) not in msg


def test_external_raw_storage_is_refused(h5ad: Path, secret: Path):
    def external(f: h5py.File, name: str) -> None:
        f.create_dataset(
            name, shape=(30,), dtype="f8", external=[(str(secret.with_suffix(".bin")), 0, 240)]
        )

    replace(h5ad, "obs/n_counts", external)
    refused(h5ad, "obs/n_counts keeps its data in external raw files", "self-contained")


def test_virtual_dataset_is_refused(h5ad: Path, secret: Path):
    def virtual(f: h5py.File, name: str) -> None:
        layout = h5py.VirtualLayout(shape=(30,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(secret), "values", shape=(30,))
        f.create_virtual_dataset(name, layout)

    replace(h5ad, "obs/n_counts", virtual)
    refused(h5ad, "obs/n_counts is an HDF5 virtual dataset")


def test_plugin_filter_is_refused(h5ad: Path):
    def plugin(f: h5py.File, name: str) -> None:
        f.create_dataset(
            name, data=np.arange(30.0), chunks=(10,), compression=32001, allow_unknown_filter=True
        )

    replace(h5ad, "obs/n_counts", plugin)
    refused(h5ad, "obs/n_counts needs HDF5 filter 32001", "not built in", "gzip, lzf")


def test_gzip_lzf_shuffle_fletcher_pass(tmp_path: Path):
    path = tmp_path / "ok.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.arange(1000), compression="gzip", shuffle=True)
        f.create_dataset("b", data=np.arange(1000), compression="lzf", fletcher32=True)
        f.create_dataset("c", data=np.arange(1000), scaleoffset=0)
    check_hdf5_file(path, source="ok.h5")


@pytest.mark.parametrize(
    ("target", "what"), [("/uns/nowhere", "dangles or loops"), ("/uns/loop_b", "dangles or loops")]
)
def test_dangling_and_looping_soft_links_are_refused(h5ad: Path, target: str, what: str):
    with h5py.File(h5ad, "r+") as f:
        f["uns/loop_a"] = h5py.SoftLink(target)
        f["uns/loop_b"] = h5py.SoftLink("/uns/loop_a")
    refused(h5ad, "is an HDF5 soft link", what)


def test_hard_link_loop_is_refused(h5ad: Path):
    with h5py.File(h5ad, "r+") as f:
        f["uns/again"] = f["uns"]
    refused(h5ad, "uns/again is a second hard link to group uns")


def _unlinked_external_ref(f: h5py.File, secret_bin: Path) -> h5py.Reference:
    """A reference to a dataset (raw storage: the secret file) no link leads to: created,
    its reference count raised through libhdf5, then unlinked."""
    import ctypes

    ds = f["uns"].create_dataset(
        "tmp", shape=(1,), dtype="S19", external=[(str(secret_bin), 0, 19)]
    )
    ref = ds.ref
    lib = ctypes.CDLL(h5py.h5.__file__)  # the module links libhdf5: its symbols are there
    lib.H5Oincr_refcount.argtypes = [ctypes.c_int64]
    assert lib.H5Oincr_refcount(ds.id.id) >= 0
    del f["uns/tmp"]
    return ref


def test_a_reference_to_an_object_outside_the_tree_is_refused(h5ad: Path, secret: Path):
    """An old-format categorical's ``categories`` attribute may hold an object reference
    (anndata follows it): one to an object no link leads to is refused before reading."""
    with h5py.File(h5ad, "r+") as f:
        f["obs/cell_type/codes"].attrs["categories"] = _unlinked_external_ref(
            f, secret.with_name("secret.bin")
        )
    refused(h5ad, "obs/cell_type/codes attribute 'categories'", "outside the file's tree")


def test_references_inside_the_tree_pass_and_reference_datasets_do_not(h5ad: Path):
    with h5py.File(h5ad, "r+") as f:
        f["uns"].attrs["points_at"] = f["obs/_index"].ref  # a dataset the walk checks
        f["uns"].attrs["nothing"] = h5py.Reference()  # a null reference reads as nothing
    check_hdf5_file(h5ad)
    with h5py.File(h5ad, "r+") as f:
        f["uns"].create_dataset("refs", data=[f["obs/_index"].ref], dtype=h5py.ref_dtype)
    refused(h5ad, "uns/refs is a dataset of HDF5 references")


def test_soft_links_count_the_bytes_they_lead_to(tmp_path: Path):
    """One hollow 60 MB dataset (under the floor) behind 1,000 soft links: 60 GB for a
    reader, refused as the sum of what the file declares."""
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", shape=(15_000_000,), dtype="f4", chunks=(1_000_000,))
        for i in range(1000):
            f[f"s{i}"] = h5py.SoftLink("/d")
    with pytest.raises(CiteSeqDataError, match=r"declare .* in all"):
        check_hdf5_file(path)


def test_soft_link_to_a_group_is_refused_relative_links_resolve(h5ad: Path):
    with h5py.File(h5ad, "r+") as f:
        f["uns/rel"] = h5py.SoftLink("../obs/_index")  # relative: from /uns
        f["uns"].create_dataset("t", data=np.arange(3))
        f["uns/rel2"] = h5py.SoftLink("t")
    with h5py.File(h5ad, "r+") as f:
        del f["uns/rel"]  # HDF5 does not resolve "..": keep only the valid relative link
    check_hdf5_file(h5ad)
    with h5py.File(h5ad, "r+") as f:
        f["uns/obs_again"] = h5py.SoftLink("/obs")
    refused(h5ad, "uns/obs_again is an HDF5 soft link to group '/obs'")


# ---------------------------------------------------------------------- declared sizes
def test_unallocated_dense_matrix_is_refused(h5ad: Path):
    def hollow(f: h5py.File, name: str) -> None:
        ds = f.create_dataset(name, shape=(50_000, 4000), dtype="f4", chunks=(1000, 400))
        ds.attrs["encoding-type"] = "array"
        ds.attrs["encoding-version"] = "0.2.0"

    replace(h5ad, "X", hollow)
    refused(h5ad, "X declares 762.9 MB but stores 0 bytes", "0 of its 500 chunks", "fill values")


def test_contiguous_unallocated_and_huge_declared_are_refused(tmp_path: Path):
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("m", shape=(50_000, 4000), dtype="f4")
    with pytest.raises(CiteSeqDataError, match=r"^big.h5: m declares 762.9 MB but stores 0 bytes"):
        check_hdf5_file(path, source="big.h5")


# --------------------------------------------------------------------- sparse at HDF5 level
def edit(path: Path, name: str, fn) -> None:
    with h5py.File(path, "r+") as f:
        values = fn(f[name][()])
        del f[name]
        f[name] = values


def decrease_at_17(p: np.ndarray) -> np.ndarray:
    p = p.copy()
    p[18] = p[17] - 1
    return p


@pytest.mark.parametrize(
    ("member", "fn", "expected"),
    [
        ("indptr", decrease_at_17, "upload.h5ad: X: CSR indptr decreases at row 17"),
        ("indptr", lambda p: np.r_[p[:-1], p[-1] + 5], "X: CSR indptr ends at"),
        ("indptr", lambda p: p[:-1], "X: CSR indptr has 30 entries for 30 rows (expected 31)"),
        ("indptr", lambda p: p + 1, "X: CSR indptr starts at 1, not 0"),
        ("indices", lambda i: np.r_[-1, i[1:]], "X: CSR indices out of range at row 0"),
        ("indices", lambda i: np.r_[i[:-1], 20], "column index 20 with 20 columns"),
        ("indices", lambda i: i.astype(np.float64), "indices has dtype float64"),
    ],
)
def test_inconsistent_csr_in_h5ad_is_refused(h5ad: Path, member: str, fn, expected: str):
    edit(h5ad, f"X/{member}", fn)
    refused(h5ad, expected)


def test_inconsistent_csr_in_h5mu_names_the_modality(tmp_path: Path):
    adata = small_adata()
    prot = ad.AnnData(X=adata.obsm["protein_expression"].to_numpy(), obs=adata.obs[[]])
    prot.var_names = ["A", "B", "C"]
    del adata.obsm["protein_expression"]
    path = tmp_path / "upload.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.MuData({"rna": adata, "protein": prot}).write(path)
    assert read_cite_seq(path).n_cells == 30  # the file as written reads
    edit(path, "mod/rna/X/indptr", decrease_at_17)
    refused(path, "upload.h5mu: mod/rna/X: CSR indptr decreases at row 17")


# ----------------------------------------------------------------------------- 10x .h5
def write_10x(path: Path, **override: np.ndarray) -> None:
    m = sp.random(5, 8, density=0.5, format="csc", random_state=2) * 10  # features x barcodes
    m.data = np.ceil(m.data)
    parts = {
        "data": m.data.astype(np.int32),
        "indices": m.indices.astype(np.int64),
        "indptr": m.indptr.astype(np.int64),
        "shape": np.array([5, 8], dtype=np.int32),
        "barcodes": np.array([f"AAAC-{i}".encode() for i in range(8)]),
    }
    parts.update(override)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        for key, value in parts.items():
            g[key] = value
        g["features/name"] = np.array([b"G1", b"G2", b"G3", b"P1", b"P2"])
        g["features/id"] = np.array([b"G1", b"G2", b"G3", b"P1", b"P2"])
        g["features/feature_type"] = np.array([b"Gene Expression"] * 3 + [b"Antibody Capture"] * 2)


def test_good_10x_h5_reads(tmp_path: Path):
    write_10x(tmp_path / "ok.h5")
    d = read_cite_seq(tmp_path / "ok.h5")
    assert (d.n_cells, d.n_genes, d.n_proteins) == (8, 3, 2)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"indptr": np.array([0, 2, 1, 3, 3, 3, 3, 3, 3])},
            "matrix: CSR indptr decreases at barcode 1",
        ),
        ({"indptr": np.array([0, 1, 2])}, "indptr has 3 entries for 8 barcodes"),
        ({"indices": np.full(3, 1)}, "indptr ends at"),
        ({"shape": np.array([5, 8, 1])}, "matrix/shape is [5, 8, 1]"),
        ({"shape": np.array([-5, 8])}, "not two non-negative integers"),
        (
            {"barcodes": np.array([b"x"] * 7)},
            "matrix/barcodes has 7 entries but matrix/shape says 8",
        ),
    ],
)
def test_inconsistent_10x_h5_is_refused(tmp_path: Path, override: dict, expected: str):
    write_10x(tmp_path / "bad.h5", **override)
    refused(tmp_path / "bad.h5", expected)


def test_10x_h5_indices_out_of_range(tmp_path: Path):
    write_10x(tmp_path / "ok.h5")
    with h5py.File(tmp_path / "ok.h5", "r") as f:
        indices = f["matrix/indices"][()]
    indices[3] = 5  # 5 features: valid 0..4
    write_10x(tmp_path / "bad.h5", indices=indices)
    refused(
        tmp_path / "bad.h5",
        "CSR indices out of range at barcode",
        "feature index 5 with 5 features",
    )


# ------------------------------------------------------------------------- matrix folder
def copy_mtx(tmp_path: Path) -> Path:
    folder = tmp_path / "mtx"
    shutil.copytree(DATA / "pbmc_10k_protein_v3_10x_mtx", folder)
    return folder


def rewrite_mtx(folder: Path, fn) -> None:
    with gzip.open(folder / "matrix.mtx.gz", "rt") as fh:
        lines = fh.read().splitlines()
    with gzip.open(folder / "matrix.mtx.gz", "wt") as fh:
        fh.write("\n".join(fn(lines)) + "\n")


def first_entry(lines: list[str]) -> int:
    header = next(i for i, line in enumerate(lines) if not line.startswith("%"))
    return header + 1


def test_good_10x_folder_reads(tmp_path: Path):
    assert read_cite_seq(copy_mtx(tmp_path)).n_cells > 0


def test_mtx_coordinate_out_of_range_is_refused(tmp_path: Path):
    folder = copy_mtx(tmp_path)

    def bad(lines: list[str]) -> list[str]:
        k = first_entry(lines)
        n_rows = int(lines[k - 1].split()[0])
        _, col, value = lines[k].split()
        lines[k] = f"{n_rows + 7} {col} {value}"
        return lines

    rewrite_mtx(folder, bad)
    with pytest.raises(CiteSeqDataError) as info:
        read_cite_seq(folder)
    assert "\n" not in str(info.value)
    assert "out of bounds" in str(info.value) or "out of range" in str(info.value)


def test_mtx_header_that_does_not_match_is_refused_before_reading(tmp_path: Path):
    folder = copy_mtx(tmp_path)

    def huge(lines: list[str]) -> list[str]:
        k = first_entry(lines)
        _, _, nnz = lines[k - 1].split()
        lines[k - 1] = f"2000000000 2000000000 {nnz}"
        return lines

    rewrite_mtx(folder, huge)
    with pytest.raises(CiteSeqDataError, match="matrix of 2000000000 features"):
        read_cite_seq(folder)


# ----------------------------------------------------------------------------- in memory
def bad_csr(kind: str) -> sp.csr_matrix:
    m = sp.random(30, 20, density=0.3, format="csr", random_state=1, dtype=np.float32)
    m.data = np.ceil(m.data * 5)
    if kind == "decreasing":
        m.indptr[18] = m.indptr[17] - 1
    elif kind == "out_of_range":
        m.indices[4] = 25
    elif kind == "negative":
        m.indices[4] = -3
    elif kind == "nnz":
        m.indptr[-1] = m.nnz - 1
    return m


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("decreasing", "CSR indptr decreases at row 17"),
        ("out_of_range", r"column index 25 with 20 columns \(entry 4\)"),
        ("negative", "column index -3 with 20 columns"),
        ("nnz", "indptr ends at"),
    ],
)
def test_in_memory_csr_is_checked_before_scipy(kind: str, expected: str):
    adata = small_adata()
    adata.X = bad_csr(kind)  # assigning keeps the arrays as given
    with pytest.raises(CiteSeqDataError, match=expected) as info:
        from_anndata(adata, source="mem")
    assert str(info.value).startswith("mem: X: CSR")
    with pytest.raises(CiteSeqDataError, match=expected):
        CiteSeqData(
            rna=bad_csr(kind),
            protein=np.zeros((30, 1)),
            obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]),
            var_names=[f"g{i}" for i in range(20)],
            protein_names=["p"],
            batch=np.zeros(30),
            batch_categories=["all"],
        )


def test_check_sparse_coo_csc_and_bsr():
    coo = sp.coo_matrix((np.ones(2), (np.array([0, 3]), np.array([1, 1]))), shape=(4, 2))
    check_sparse(coo, "mem", "X")
    coo.row[1] = 4
    with pytest.raises(CiteSeqDataError, match="COO row index 4 out of range"):
        check_sparse(coo, "mem", "X")
    csc = sp.random(6, 5, density=0.5, format="csc", random_state=0)
    check_sparse(csc, "mem", "X")
    csc.indices[0] = 6
    with pytest.raises(CiteSeqDataError, match="CSC indices out of range at column 0"):
        check_sparse(csc, "mem", "X")
    check_sparse(sp.random(6, 4, density=0.5, format="bsr", random_state=0), "mem", "X")


def test_check_compressed_reads_hdf5_indices_in_blocks(tmp_path: Path, monkeypatch):
    import model.sparse_check as sc

    monkeypatch.setattr(sc, "BLOCK", 7)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["indices"] = np.r_[np.zeros(20, dtype=np.int32), 9]
        with pytest.raises(CiteSeqDataError, match="at row 2: column index 9 with 9 columns"):
            check_compressed(
                np.array([0, 10, 20, 21]),
                f["indices"],
                data_len=21,
                shape=(3, 9),
                fmt="csr",
                where="m.h5",
                field="X",
            )


def test_good_files_still_read():
    d = read_cite_seq(DATA / "pbmc_10k_protein_v3_200cells.h5ad")
    assert d.n_cells == 200
    check_hdf5_file(DATA / "pbmc_10k_protein_v3_200cells.h5ad")
    assert read_cite_seq(DATA / "pbmc_10k_protein_v3_10x_mtx").n_proteins > 0
