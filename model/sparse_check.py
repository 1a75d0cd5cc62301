"""Structure checks of compressed sparse matrices, done before any scipy operation.

scipy trusts ``indptr`` and ``indices``: an ``indptr`` that decreases or overruns, or an
index outside the matrix, corrupts memory inside its C++ kernels (a crash of the whole
process, not an exception). Every reader therefore checks the three arrays here first:
numpy only, reading large (e.g. HDF5-backed) ``indices`` in blocks. A failure raises
:class:`~model.errors.CiteSeqDataError` with one line naming the field and the first bad
position, e.g. ``X: CSR indptr decreases at row 17``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.errors import CiteSeqDataError

__all__ = ["check_compressed", "check_data", "check_sparse"]

#: Entries of ``indices`` read (and compared) at once.
BLOCK = 1 << 22
_AXES = {"csr": ("row", "column"), "csc": ("column", "row")}


def check_compressed(
    indptr: Any,
    indices: Any,
    *,
    data_len: int,
    shape: Any,
    fmt: str,
    where: str,
    field: str,
    major: str | None = None,
    minor: str | None = None,
) -> None:
    """Raise unless ``(indptr, indices)`` describe a valid ``fmt`` (``"csr"``/``"csc"``) matrix.

    Checks a 2-d non-negative integer ``shape``; 1-d integer ``indptr`` of length
    ``n_major + 1`` starting at 0, never decreasing and ending at ``nnz``; 1-d integer
    ``indices`` with ``nnz == data_len`` entries, each in ``0 <= i < n_minor``.
    ``indices`` may be any sliceable array (an ``h5py.Dataset`` is read in blocks).
    ``major``/``minor`` name the axes in messages (default: row/column).
    """
    kind = fmt.upper()
    major = major or _AXES[fmt][0]
    minor = minor or _AXES[fmt][1]
    n_rows, n_cols = _shape2(shape, where, field, kind)
    n_major, n_minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
    head = f"{where}: {field}: {kind}"
    for name, arr in (("indptr", indptr), ("indices", indices)):
        if len(getattr(arr, "shape", ())) != 1:
            msg = f"{head} {name} must be 1-d, has shape {tuple(getattr(arr, 'shape', ()))}"
            raise CiteSeqDataError(msg)
        if not np.issubdtype(np.dtype(arr.dtype), np.integer):
            raise CiteSeqDataError(f"{head} {name} has dtype {arr.dtype}; it must hold integers")
    ptr = np.asarray(indptr[()] if not isinstance(indptr, np.ndarray) else indptr)
    if ptr.shape[0] != n_major + 1:
        msg = (
            f"{head} indptr has {ptr.shape[0]} entries for {n_major} {major}s "
            f"(expected {n_major + 1})"
        )
        raise CiteSeqDataError(msg)
    if ptr[0] != 0:
        raise CiteSeqDataError(f"{head} indptr starts at {ptr[0]}, not 0")
    ptr = ptr.astype(np.int64, copy=False) if ptr.dtype != np.uint64 else ptr
    down = np.flatnonzero(ptr[1:] < ptr[:-1])
    if down.size:
        raise CiteSeqDataError(f"{head} indptr decreases at {major} {int(down[0])}")
    nnz = int(ptr[-1])
    n_ind = int(indices.shape[0])
    if nnz != n_ind or n_ind != int(data_len):
        msg = (
            f"{head} indptr ends at {nnz} but there are {n_ind} indices and "
            f"{int(data_len)} values; the three must agree"
        )
        raise CiteSeqDataError(msg)
    for start in range(0, n_ind, BLOCK):
        block = np.asarray(indices[start : start + BLOCK])
        bad = np.flatnonzero((block < 0) | (block >= n_minor))
        if bad.size:
            k = start + int(bad[0])
            at = int(np.searchsorted(ptr, k, side="right") - 1)
            msg = (
                f"{head} indices out of range at {major} {at}: {minor} index "
                f"{int(block[bad[0]])} with {n_minor} {minor}s (entry {k})"
            )
            raise CiteSeqDataError(msg)


def check_sparse(x: Any, where: str, field: str) -> None:
    """Check the structure of an in-memory scipy sparse matrix or array (any format).

    CSR/CSC/BSR go through :func:`check_compressed`; COO's ``row``/``col`` must be integer,
    equally long and inside the shape. DIA, LIL and DOK have no compressed arrays to trust.
    """
    fmt = getattr(x, "format", None)
    if fmt in ("csr", "csc"):
        check_data(x.data, 1, where, field, fmt)
        check_compressed(
            x.indptr,
            x.indices,
            data_len=x.data.shape[0],
            shape=x.shape,
            fmt=fmt,
            where=where,
            field=field,
        )
    elif fmt == "bsr":
        check_data(x.data, 3, where, field, fmt)
        r, c = (int(v) for v in x.data.shape[1:])
        n_rows, n_cols = _shape2(x.shape, where, field, "BSR")
        if r <= 0 or c <= 0 or n_rows % r or n_cols % c:
            msg = f"{where}: {field}: BSR blocks {r}x{c} do not tile shape {(n_rows, n_cols)}"
            raise CiteSeqDataError(msg)
        check_compressed(
            x.indptr,
            x.indices,
            data_len=x.data.shape[0],
            shape=(n_rows // r, n_cols // c),
            fmt="csr",
            where=where,
            field=field,
            major="block row",
            minor="block column",
        )
    elif fmt == "coo":
        _check_coo(x, where, field)


def _check_coo(x: Any, where: str, field: str) -> None:
    n_rows, n_cols = _shape2(x.shape, where, field, "COO")
    check_data(x.data, 1, where, field, "coo")
    for raw, size, name in ((x.row, n_rows, "row"), (x.col, n_cols, "column")):
        arr = np.asarray(raw)
        if arr.ndim != 1 or arr.shape[0] != x.data.shape[0]:
            msg = (
                f"{where}: {field}: COO has {arr.size} {name} coordinates for "
                f"{x.data.shape[0]} values"
            )
            raise CiteSeqDataError(msg)
        if not np.issubdtype(arr.dtype, np.integer):
            msg = f"{where}: {field}: COO {name} coordinates have dtype {arr.dtype}"
            raise CiteSeqDataError(msg)
        bad = np.flatnonzero((arr < 0) | (arr >= size))
        if bad.size:
            k = int(bad[0])
            msg = (
                f"{where}: {field}: COO {name} index {int(arr[k])} out of range "
                f"(shape {(n_rows, n_cols)}) at entry {k}"
            )
            raise CiteSeqDataError(msg)


def check_data(data: Any, ndim: int, where: str, field: str, fmt: str) -> None:
    """Raise unless a sparse matrix's ``data`` array has ``ndim`` dimensions (1; 3 for BSR)."""
    if len(getattr(data, "shape", ())) != ndim:
        shape = tuple(getattr(data, "shape", ()))
        msg = f"{where}: {field}: {fmt.upper()} data must be {ndim}-d, has shape {shape}"
        raise CiteSeqDataError(msg)


def _shape2(shape: Any, where: str, field: str, kind: str) -> tuple[int, int]:
    """``shape`` as two non-negative ints, or an error."""
    try:
        dims = [int(v) for v in np.asarray(shape).ravel()]
        exact = all(float(a) == b for a, b in zip(np.asarray(shape).ravel(), dims, strict=True))
    except (TypeError, ValueError, OverflowError):
        dims, exact = [], False
    if len(dims) != 2 or not exact or min(dims) < 0:
        msg = f"{where}: {field}: {kind} shape {shape!r} is not two non-negative integers"
        raise CiteSeqDataError(msg)
    return dims[0], dims[1]
