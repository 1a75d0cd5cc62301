"""Reading and validating CITE-seq data: RNA and surface-protein UMI counts per cell.

Every reader (``.h5ad``, ``.h5mu``, Cell Ranger ``.h5`` and ``filtered_feature_bc_matrix/``
folders) ends in :class:`CiteSeqData`, a small validated container the model trains on. Bad
input raises :class:`CiteSeqDataError` with a message that names the file, the field and the
cell, gene or protein at fault and says how to fix it, so the dashboard can show it verbatim.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import anndata
import h5py
import mudata
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from model.errors import CiteSeqDataError
from model.hdf5_guard import check_hdf5_file
from model.sparse_check import check_compressed, check_data, check_sparse

__all__ = [
    "CiteSeqData",
    "CiteSeqDataError",
    "align_features",
    "compute_protein_batch_mask",
    "from_anndata",
    "from_mudata",
    "read_10x",
    "read_cite_seq",
]

SINGLE_BATCH = "all"  # batch category used when no batch_key is given
GENE_EXPRESSION = "Gene Expression"
ANTIBODY_CAPTURE = "Antibody Capture"
SUPPORTED_FORMATS = (
    ".h5ad (AnnData), .h5mu (MuData), .h5 (Cell Ranger v3 HDF5), or a Cell Ranger "
    "filtered_feature_bc_matrix/ folder (matrix.mtx[.gz], features.tsv[.gz], barcodes.tsv[.gz])"
)
_N_SHOW = 5  # how many offending names a message lists
#: What to do with RNA-only data (the end of the reader's message when a file holds no
#: protein counts at all).
RNA_ONLY_ADVICE = (
    "This looks like RNA-only data: TotalVI trains on RNA and protein counts together, but "
    "RNA-only cells can be mapped onto a trained model (Model page, “Map new data”; "
    "in Python: model.mapping.map_query), which imputes their proteins"
)
_HDF5_SUFFIXES = (".h5ad", ".h5mu", ".h5")
#: Where the original symbols of names made unique are kept (var column / uns key).
GENE_SYMBOLS = "gene_symbols"
PROTEIN_SYMBOLS = "protein_symbols"


@dataclass(frozen=True)
class MinifiedPosterior:
    """Cached latent posterior of a minified dataset (scvi-hub models ship their data so).

    ``qzv`` is what scvi-tools stores: the posterior *variance* (spec §9).
    """

    qzm: np.ndarray  # (n_cells, n_latent)
    qzv: np.ndarray  # (n_cells, n_latent)
    observed_lib_size: np.ndarray  # (n_cells,)

    def subset(self, idx: np.ndarray | slice) -> MinifiedPosterior:
        """Rows ``idx``."""
        return MinifiedPosterior(self.qzm[idx], self.qzv[idx], self.observed_lib_size[idx])


MINIFY_UNS_KEY = "_scvi_adata_minify_type"
_QZM_KEYS = ("_scvi_latent_qzm", "totalvi_latent_qzm", "latent_qzm")
_QZV_KEYS = ("_scvi_latent_qzv", "totalvi_latent_qzv", "latent_qzv")
_LIB_KEYS = ("_scvi_observed_lib_size", "observed_lib_size")


def _minified_posterior(
    uns: Any, obsms: list[Any], obss: list[pd.DataFrame], n: int, where: str
) -> MinifiedPosterior | None:
    """Read the cached posterior of a minified scvi-tools dataset, or None if not minified."""
    kind = uns.get(MINIFY_UNS_KEY) if uns is not None else None
    if kind is None:
        return None
    if str(kind) != "latent_posterior_parameters":
        msg = f"{where}: minified data of type {kind!r} is not supported"
        raise CiteSeqDataError(msg)

    def find(containers: list[Any], keys: tuple[str, ...], what: str) -> np.ndarray:
        for c in containers:
            for k in keys:
                if k in c:
                    return np.asarray(c[k], dtype=np.float32)
        msg = f"{where}: minified data without {what} (looked for {list(keys)})"
        raise CiteSeqDataError(msg)

    qzm = find(obsms, _QZM_KEYS, "latent means in obsm")
    qzv = find(obsms, _QZV_KEYS, "latent variances in obsm")
    lib = find(obss, _LIB_KEYS, "observed library sizes in obs").ravel()
    if qzm.shape != qzv.shape or qzm.shape[0] != n or lib.shape != (n,):
        msg = f"{where}: minified posterior has inconsistent shapes {qzm.shape}, {qzv.shape}"
        raise CiteSeqDataError(msg)
    return MinifiedPosterior(qzm, qzv, lib)


@dataclass(eq=False)
class CiteSeqData:
    """Validated CITE-seq counts for one dataset, in the layout the model trains on.

    Build it with :func:`read_cite_seq`, :func:`from_anndata`, :func:`from_mudata` or
    :func:`read_10x`; those check the counts. The constructor only coerces dtypes and checks
    that shapes agree.

    Attributes
    ----------
    rna
        ``(n_cells, n_genes)`` CSR float32 of integer-valued counts (sorted indices, no
        duplicate or explicit-zero entries).
    protein
        ``(n_cells, n_proteins)`` C-contiguous float32 of integer-valued counts.
    obs
        Per-cell table; index = unique cell names, all source columns kept.
    var_names, protein_names
        Unique gene and protein names (the keys every result uses).
    batch, batch_categories, batch_key
        int64 batch codes ``0..n_batch-1``, the name of each code, and the obs column they
        came from (``None``: one batch called ``"all"``).
    labels, label_categories, labels_key
        Optional int64 label codes, their names and their obs column.
    protein_batch_mask
        ``(n_batch, n_proteins)`` bool, ``True`` where a protein was measured in a batch;
        ``None`` when every protein was measured in every batch.
    source
        Where the data came from (a path), used in messages.
    minified
        For minified scvi-hub data (all-zero counts): the cached latent posterior that
        replaces the encoder; ``None`` for ordinary data.
    gene_symbols, protein_symbols
        The names as the source file spells them, where duplicates were made unique
        (``var_names`` ``COG8, COG8-1`` from symbols ``COG8, COG8``); ``None`` when they equal
        ``var_names`` / ``protein_names`` (see :attr:`original_var_names`).
    notices
        One-line notes for the user about what reading changed (e.g. duplicate names made
        unique); empty for most files.
    simulated
        For simulated data (:mod:`model.simulate`, which leaves ``uns["simulation"]``): a
        line saying how it was made, which every page shows; empty for measured data.
    layouts
        The file's own 2-D layouts of the cells (``obsm`` keys such as ``X_umap``,
        ``X_tsne``, ``X_pca``: their first two columns, ``(n_cells, 2)`` float32, every value
        finite; see :func:`obsm_layouts`), for display only: not part of
        :meth:`fingerprint`, since the model never reads them.
    """

    rna: sp.csr_matrix
    protein: np.ndarray
    obs: pd.DataFrame
    var_names: pd.Index
    protein_names: pd.Index
    batch: np.ndarray
    batch_categories: list[str]
    batch_key: str | None = None
    labels: np.ndarray | None = None
    label_categories: list[str] | None = None
    labels_key: str | None = None
    protein_batch_mask: np.ndarray | None = None
    source: str = ""
    minified: MinifiedPosterior | None = None
    gene_symbols: pd.Index | None = None
    protein_symbols: pd.Index | None = None
    notices: tuple[str, ...] = ()
    simulated: str = ""
    layouts: dict[str, np.ndarray] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rna = _canonical_csr(self.rna, self.source or "CiteSeqData")
        self.protein = np.ascontiguousarray(self.protein, dtype=np.float32)
        self.var_names = pd.Index(self.var_names).astype(str)
        self.protein_names = pd.Index(self.protein_names).astype(str)
        self.batch = np.asarray(self.batch, dtype=np.int64).ravel()
        self.batch_categories = [str(c) for c in self.batch_categories]
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).ravel()
            self.label_categories = [str(c) for c in (self.label_categories or [])]
        if self.protein_batch_mask is not None:
            self.protein_batch_mask = np.asarray(self.protein_batch_mask, dtype=bool)
        self.gene_symbols = _symbols_or_none(self.gene_symbols, self.var_names)
        self.protein_symbols = _symbols_or_none(self.protein_symbols, self.protein_names)
        self.notices = tuple(str(n) for n in self.notices)
        self.layouts = {
            str(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in self.layouts.items()
        }
        self._check_shapes()

    def _check_shapes(self) -> None:
        n, where = self.rna.shape[0], self.source or "CiteSeqData"
        problems = []
        if self.rna.shape[1] != len(self.var_names):
            problems.append(f"rna has {self.rna.shape[1]} columns but {len(self.var_names)} genes")
        if self.protein.ndim != 2 or self.protein.shape[0] != n:
            problems.append(f"protein has shape {self.protein.shape}, expected ({n}, ...)")
        elif self.protein.shape[1] != len(self.protein_names):
            problems.append(
                f"protein has {self.protein.shape[1]} columns "
                f"but {len(self.protein_names)} protein names"
            )
        if len(self.obs) != n:
            problems.append(f"obs has {len(self.obs)} rows but rna has {n} cells")
        if self.batch.shape != (n,):
            problems.append(f"batch has {self.batch.size} codes for {n} cells")
        elif n and (self.batch.min() < 0 or self.batch.max() >= len(self.batch_categories)):
            problems.append(f"batch codes must lie in 0..{len(self.batch_categories) - 1}")
        if self.labels is not None:
            n_lab = len(self.label_categories or [])
            if self.labels.shape != (n,):
                problems.append(f"labels has {self.labels.size} codes for {n} cells")
            elif n and (self.labels.min() < 0 or self.labels.max() >= n_lab):
                problems.append(f"label codes must lie in 0..{n_lab - 1}")
        mask = self.protein_batch_mask
        if mask is not None and mask.shape != (
            len(self.batch_categories),
            len(self.protein_names),
        ):
            problems.append(
                f"protein_batch_mask has shape {mask.shape}, expected "
                f"({len(self.batch_categories)}, {len(self.protein_names)})"
            )
        for symbols, names, what in (
            (self.gene_symbols, self.var_names, "gene"),
            (self.protein_symbols, self.protein_names, "protein"),
        ):
            if symbols is not None and len(symbols) != len(names):
                problems.append(f"{len(symbols)} {what} symbols for {len(names)} {what}s")
        problems += [
            f"layout {k!r} has shape {v.shape}, expected ({n}, 2)"
            for k, v in self.layouts.items()
            if v.shape != (n, 2)
        ]
        if problems:
            raise CiteSeqDataError(f"{where}: inconsistent CiteSeqData: " + "; ".join(problems))

    # ------------------------------------------------------------------ sizes
    @property
    def n_cells(self) -> int:
        """Number of cells (rows)."""
        return int(self.rna.shape[0])

    @property
    def n_genes(self) -> int:
        """Number of genes (RNA columns)."""
        return int(self.rna.shape[1])

    @property
    def n_proteins(self) -> int:
        """Number of proteins (protein columns)."""
        return int(self.protein.shape[1])

    @property
    def n_batch(self) -> int:
        """Number of batch categories (some may have no cells after :meth:`subset`)."""
        return len(self.batch_categories)

    @property
    def obs_names(self) -> pd.Index:
        """Cell names."""
        return self.obs.index

    @property
    def original_var_names(self) -> pd.Index:
        """Gene names as the source file spells them (duplicates not made unique)."""
        return self.var_names if self.gene_symbols is None else self.gene_symbols

    @property
    def original_protein_names(self) -> pd.Index:
        """Protein names as the source file spells them (duplicates not made unique)."""
        return self.protein_names if self.protein_symbols is None else self.protein_symbols

    # ------------------------------------------------------------- operations
    def subset(self, indices: np.ndarray | slice) -> CiteSeqData:
        """Rows ``indices`` (int positions, bool mask or slice) as a new object.

        Batch and label categories and ``protein_batch_mask`` are kept as they are, so codes
        stay comparable with the full data (and with a model trained on it).
        """
        idx: np.ndarray | slice = indices
        if not isinstance(indices, slice):
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (self.n_cells,):
                    msg = f"boolean subset mask has {idx.size} entries for {self.n_cells} cells"
                    raise CiteSeqDataError(msg)
                idx = np.flatnonzero(idx)
            idx = idx.astype(np.int64, copy=False).ravel()
        return CiteSeqData(
            rna=self.rna[idx],
            protein=self.protein[idx],
            obs=self.obs.iloc[idx].copy(),
            var_names=self.var_names,
            protein_names=self.protein_names,
            batch=self.batch[idx],
            batch_categories=list(self.batch_categories),
            batch_key=self.batch_key,
            labels=None if self.labels is None else self.labels[idx],
            label_categories=None
            if self.label_categories is None
            else list(self.label_categories),
            labels_key=self.labels_key,
            protein_batch_mask=None
            if self.protein_batch_mask is None
            else self.protein_batch_mask.copy(),
            source=self.source,
            minified=None if self.minified is None else self.minified.subset(idx),
            gene_symbols=self.gene_symbols,
            protein_symbols=self.protein_symbols,
            notices=self.notices,
            simulated=self.simulated,
            layouts={k: v[idx] for k, v in self.layouts.items()},
        )

    def select_proteins(self, keep: Sequence[int]) -> CiteSeqData:
        """The same cells with only the protein columns ``keep`` (positions, in that order;
        none: RNA only), e.g. a query that measured part of a reference's panel."""
        cols = np.asarray(keep, dtype=np.int64)
        return replace(
            self,
            protein=self.protein[:, cols],
            protein_names=self.protein_names[cols],
            protein_batch_mask=_mask_columns(self.protein_batch_mask, cols),
            protein_symbols=None if self.protein_symbols is None else self.protein_symbols[cols],
        )

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the content, not the path: same counts and names give the same hash.

        Covers RNA (data, indices, indptr), protein counts, cell/gene/protein names (and the
        original symbols where duplicates were made unique), batch and label codes with their
        categories and the protein batch mask (not ``notices``). Cached on the instance,
        so do not modify the arrays in place afterwards.
        """
        if self._fingerprint is None:
            h = hashlib.sha256(b"CiteSeqData/1")

            def put(tag: str, payload: bytes) -> None:
                h.update(tag.encode() + len(payload).to_bytes(8, "little"))
                h.update(payload)

            def put_names(tag: str, names: Iterable[Any]) -> None:
                put(tag, "\x00".join(str(n) for n in names).encode("utf-8"))

            put("shape", np.array([*self.rna.shape, self.n_proteins], dtype=np.int64).tobytes())
            put("rna.data", np.ascontiguousarray(self.rna.data, dtype=np.float32).tobytes())
            put("rna.indices", np.ascontiguousarray(self.rna.indices, dtype=np.int64).tobytes())
            put("rna.indptr", np.ascontiguousarray(self.rna.indptr, dtype=np.int64).tobytes())
            put("protein", self.protein.tobytes())
            put_names("obs_names", self.obs_names)
            put_names("var_names", self.var_names)
            put_names("protein_names", self.protein_names)
            if self.gene_symbols is not None:  # only when they differ: old hashes stay valid
                put_names("gene_symbols", self.gene_symbols)
            if self.protein_symbols is not None:
                put_names("protein_symbols", self.protein_symbols)
            put("batch", self.batch.tobytes())
            put_names("batch_categories", self.batch_categories)
            if self.labels is not None:
                put("labels", self.labels.tobytes())
                put_names("label_categories", self.label_categories or [])
            if self.protein_batch_mask is not None:
                put("protein_batch_mask", self.protein_batch_mask.tobytes())
            if self.minified is not None:
                put("minified.qzm", self.minified.qzm.tobytes())
                put("minified.qzv", self.minified.qzv.tobytes())
                put("minified.lib", self.minified.observed_lib_size.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def with_batches(
        self, batch: np.ndarray, categories: list[str], *, key: str = "batch"
    ) -> CiteSeqData:
        """Copy with a new batch assignment (e.g. pseudo-batches or a model's batch order).

        ``batch`` holds codes into ``categories``; the codes are also written to
        ``obs[key]`` as a categorical, and ``protein_batch_mask`` is recomputed.
        """
        codes = np.asarray(batch)
        if codes.shape != (self.n_cells,):
            msg = f"{self._where()}: with_batches got {codes.size} codes for {self.n_cells} cells"
            raise CiteSeqDataError(msg)
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            msg = f"{self._where()}: batch codes must be integers, got dtype {codes.dtype}"
            raise CiteSeqDataError(msg)
        codes = codes.astype(np.int64)
        cats = [str(c) for c in categories]
        if len(set(cats)) != len(cats):
            msg = f"{self._where()}: batch categories {cats} contain duplicates"
            raise CiteSeqDataError(msg)
        if codes.size and (codes.min() < 0 or codes.max() >= len(cats)):
            msg = (
                f"{self._where()}: batch codes range {codes.min()}..{codes.max()} but there "
                f"are {len(cats)} categories {cats[:10]}"
            )
            raise CiteSeqDataError(msg)
        obs = self.obs.copy()
        obs[key] = pd.Categorical.from_codes(codes, categories=cats)
        mask = (
            None
            if self.minified is not None
            else compute_protein_batch_mask(self.protein, codes, len(cats))
        )
        return replace(
            self,
            obs=obs,
            batch=codes,
            batch_categories=cats,
            batch_key=key,
            protein_batch_mask=mask,
        )

    def to_anndata(self) -> anndata.AnnData:
        """AnnData in the scvi-tools layout: ``X`` = RNA, ``obsm["protein_expression"]``.

        The batch (and labels) are written to obs as categoricals under ``batch_key``
        (``labels_key``); without a batch key the column is ``"batch"`` (``"_batch"`` if the
        obs table already has an unrelated ``"batch"`` column). Where duplicate names were
        made unique, the original symbols go to ``var["gene_symbols"]`` and
        ``uns["protein_symbols"]`` (the readers take them back from there).
        """
        obs = self.obs.copy()
        obs.index = obs.index.astype(str)
        bkey = self.batch_key or ("batch" if "batch" not in obs.columns else "_batch")
        obs[bkey] = pd.Categorical.from_codes(self.batch, categories=self.batch_categories)
        if self.labels is not None and self.labels_key is not None:
            obs[self.labels_key] = pd.Categorical.from_codes(
                self.labels, categories=self.label_categories or []
            )
        adata = anndata.AnnData(
            X=self.rna.copy(), obs=obs, var=pd.DataFrame(index=self.var_names.copy())
        )
        adata.obsm["protein_expression"] = pd.DataFrame(
            self.protein.copy(), index=adata.obs_names, columns=self.protein_names.copy()
        )
        if self.gene_symbols is not None:
            adata.var[GENE_SYMBOLS] = np.asarray(self.gene_symbols, dtype=object)
        if self.protein_symbols is not None:
            adata.uns[PROTEIN_SYMBOLS] = np.asarray(self.protein_symbols, dtype=object)
        for key, xy in self.layouts.items():  # the file's own layouts, read back as such
            adata.obsm[key] = xy.copy()
        return adata

    def _where(self) -> str:
        return self.source or "data"


# ============================================================== public readers
def read_cite_seq(
    path: str | os.PathLike[str],
    *,
    batch_key: str | None = None,
    labels_key: str | None = None,
    layer: str | None = None,
    protein_layer: str | None = None,
    protein_obsm_key: str = "protein_expression",
    protein_names_uns_key: str | None = None,
    rna_modality: str = "rna",
    protein_modality: str = "protein",
    key_modalities: Mapping[str, str] | None = None,
) -> CiteSeqData:
    """Read CITE-seq counts from ``path``, choosing the reader by file type.

    ``.h5mu`` -> MuData, ``.h5ad`` -> AnnData, ``.h5`` -> Cell Ranger HDF5, a folder (or a
    ``matrix.mtx[.gz]`` inside one) -> Cell Ranger matrix folder. Options that do not apply to
    a format are ignored (10x files carry no batch or label columns: ``batch_key`` and
    ``labels_key`` must then be ``None``). ``key_modalities`` (MuData) says in which
    modality's obs ``batch_key`` / ``labels_key`` live, as ``setup_mudata``'s
    ``modalities``. :class:`model.read_options.ReadOptions` builds these arguments from a
    checkpoint's setup arguments.
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        msg = f"{src}: no such file or folder. Check the path; supported: {SUPPORTED_FORMATS}"
        raise CiteSeqDataError(msg)
    name = p.name.lower()
    if p.is_dir() or name.endswith((".h5", ".mtx", ".mtx.gz")):
        folder = p.parent if name.endswith((".mtx", ".mtx.gz")) else p
        for key, what in ((batch_key, "batch_key"), (labels_key, "labels_key")):
            if key is not None:
                msg = (
                    f"{src}: {what}={key!r} given, but 10x files have no per-cell columns; "
                    "convert to .h5ad/.h5mu with that column, or leave it out"
                )
                raise CiteSeqDataError(msg)
        return read_10x(p if name.endswith(".h5") else folder, source=src)
    keys = {"batch_key": batch_key, "labels_key": labels_key, "layer": layer, "source": src}
    if name.endswith(".h5mu"):
        return from_mudata(
            _read_quietly(mudata.read_h5mu, p, "MuData (.h5mu)"),
            protein_layer=protein_layer,
            rna_modality=rna_modality,
            protein_modality=protein_modality,
            key_modalities=key_modalities,
            **keys,
        )
    if name.endswith(".h5ad"):
        return from_anndata(
            _read_quietly(anndata.read_h5ad, p, "AnnData (.h5ad)"),
            protein_obsm_key=protein_obsm_key,
            protein_names_uns_key=protein_names_uns_key,
            **keys,
        )
    msg = f"{src}: unsupported file type {p.suffix or '(no suffix)'!r}; use {SUPPORTED_FORMATS}"
    raise CiteSeqDataError(msg)


def from_anndata(
    adata: anndata.AnnData,
    *,
    batch_key: str | None = None,
    labels_key: str | None = None,
    layer: str | None = None,
    protein_obsm_key: str = "protein_expression",
    protein_names_uns_key: str | None = None,
    source: str = "",
) -> CiteSeqData:
    """Validated :class:`CiteSeqData` from an AnnData in the scvi-tools TotalVI layout.

    RNA counts come from ``X`` (or ``layers[layer]``), protein counts from
    ``obsm[protein_obsm_key]``: a DataFrame whose columns name the proteins, or an array with
    names in ``uns[protein_names_uns_key]`` (default: ``uns["protein_names"]`` if present,
    else ``protein_0, protein_1, ...``). The input is copied, never modified.

    Duplicate gene or protein names are made unique as anndata's ``var_names_make_unique``
    does (first ``COG8`` stays, later ones become ``COG8-1``, ``COG8-2``, skipping names
    already taken); the original symbols are kept (``gene_symbols``, ``protein_symbols``)
    and a one-line note goes to ``notices``. A ``var["gene_symbols"]`` column (or
    ``uns["protein_symbols"]``) whose names made unique are exactly the var names, as
    :meth:`CiteSeqData.to_anndata` and the dashboard's export write it, is read back as
    those symbols. Duplicate cell names are refused.
    """
    where = source or "AnnData"
    if adata.isbacked:
        adata = adata.to_memory()
    rna = _get_layer(adata, layer, where, "RNA")
    if protein_obsm_key not in adata.obsm:
        others = [str(k) for k in adata.obsm if not _is_embedding_key(str(k))]
        fix = (
            f"If the protein counts are under another key, name it (--protein-key, "
            f"protein_obsm_key=...); else: {RNA_ONLY_ADVICE}"
            if others
            else RNA_ONLY_ADVICE
        )
        msg = (
            f"{where}: no protein counts at obsm[{protein_obsm_key!r}] (obsm keys: "
            f"{_listing(adata.obsm.keys())}). {fix}"
        )
        raise CiteSeqDataError(msg)
    prot_raw = adata.obsm[protein_obsm_key]
    field_name = f"obsm[{protein_obsm_key!r}]"
    if isinstance(prot_raw, pd.DataFrame):
        protein_names = pd.Index(prot_raw.columns).astype(str)
        non_numeric = [
            str(c) for c, t in prot_raw.dtypes.items() if not pd.api.types.is_numeric_dtype(t)
        ]
        if non_numeric:
            msg = (
                f"{where}: {field_name} has non-numeric protein columns "
                f"{_listing(non_numeric)}; it must hold only protein counts"
            )
            raise CiteSeqDataError(msg)
        prot: Any = prot_raw.to_numpy()
    else:
        prot = prot_raw
        n_prot = prot.shape[1] if getattr(prot, "ndim", 0) == 2 else 0
        protein_names = _protein_names_from_uns(adata, protein_names_uns_key, n_prot, where)
    obs = adata.obs.copy()
    obs.index = pd.Index(adata.obs_names).astype(str)
    n = len(obs)
    layouts, layout_notes = obsm_layouts([adata.obsm], n, skip=(protein_obsm_key,))
    keys = _key_fields(
        lambda key, _: _obs_column(key, [obs], where), batch_key, labels_key, where, n
    )
    return _build(
        rna=rna,
        protein=prot,
        obs=obs,
        var_names=pd.Index(adata.var_names),
        protein_names=protein_names,
        **keys,
        source=source,
        rna_field="X" if layer is None else f"layers[{layer!r}]",
        protein_field=field_name,
        minified=_minified_posterior(adata.uns, [adata.obsm], [obs], n, where),
        gene_symbols=adata.var.get(GENE_SYMBOLS),
        protein_symbols=adata.uns.get(PROTEIN_SYMBOLS),
        rna_layers=[str(k) for k in adata.layers],
        simulated=simulation_line(adata.uns),
        layouts=layouts,
        layout_notes=layout_notes,
    )


def from_mudata(
    mdata: mudata.MuData,
    *,
    batch_key: str | None = None,
    labels_key: str | None = None,
    layer: str | None = None,
    protein_layer: str | None = None,
    rna_modality: str = "rna",
    protein_modality: str = "protein",
    key_modalities: Mapping[str, str] | None = None,
    source: str = "",
) -> CiteSeqData:
    """Validated :class:`CiteSeqData` from a MuData with an RNA and a protein modality.

    Both modalities must hold the same cells; the protein rows are reordered to the RNA order
    if needed. ``batch_key``/``labels_key`` are looked up in ``mdata.obs``, then the RNA
    modality's obs, then the protein modality's. obs = ``mdata.obs`` plus the columns of both
    modalities (prefixed ``"<modality>:"`` only where a name is already taken).
    ``key_modalities`` (``{"batch_key": "rna"}``, as ``setup_mudata``'s ``modalities``)
    looks a key up in that modality's obs first.
    """
    where = source or "MuData"
    mods = dict(mdata.mod)
    for mod_name, what in ((rna_modality, "rna_modality"), (protein_modality, "protein_modality")):
        if mod_name not in mods:
            rna_only = what == "protein_modality" and len(mods) == 1
            flag = "--protein-key" if what == "protein_modality" else "--rna-modality"
            fix = RNA_ONLY_ADVICE if rna_only else f"Name it ({flag}, {what}=...)"
            msg = f"{where}: no modality {mod_name!r} (modalities: {_listing(mods.keys())}). {fix}"
            raise CiteSeqDataError(msg)
    rna_ad, prot_ad = mods[rna_modality], mods[protein_modality]
    if rna_ad.isbacked:
        rna_ad = rna_ad.to_memory()
    if prot_ad.isbacked:
        prot_ad = prot_ad.to_memory()
    rna_cells = pd.Index(rna_ad.obs_names).astype(str)
    prot_cells = pd.Index(prot_ad.obs_names).astype(str)
    _check_unique(rna_cells, where, f"cell names of modality {rna_modality!r}", "cell")
    _check_unique(prot_cells, where, f"cell names of modality {protein_modality!r}", "cell")
    rna = _get_layer(rna_ad, layer, where, f"modality {rna_modality!r}")
    prot = _get_layer(prot_ad, protein_layer, where, f"modality {protein_modality!r}")
    if not rna_cells.equals(prot_cells):
        only_rna = rna_cells.difference(prot_cells, sort=False)
        only_prot = prot_cells.difference(rna_cells, sort=False)
        if len(only_rna) or len(only_prot):
            msg = (
                f"{where}: modalities {rna_modality!r} and {protein_modality!r} hold different "
                f"cells: {len(only_rna)} only in {rna_modality!r} ({_listing(only_rna)}), "
                f"{len(only_prot)} only in {protein_modality!r} ({_listing(only_prot)}). "
                "Keep the cells measured in both, e.g. mudata.MuData.intersect_obs()"
            )
            raise CiteSeqDataError(msg)
        order = prot_cells.get_indexer(rna_cells)
        if sp.issparse(prot):
            check_sparse(prot, where, f"modality {protein_modality!r}")
        prot = prot[order]
    # obs: global columns, then each modality's columns (aligned to the RNA cell order)
    parts: list[tuple[str, pd.DataFrame]] = []
    gobs = mdata.obs.copy()
    gobs.index = pd.Index(gobs.index).astype(str)
    if gobs.index.is_unique and rna_cells.isin(gobs.index).all():
        parts.append(("", gobs.loc[rna_cells]))
    for mod_name, mod in ((rna_modality, rna_ad), (protein_modality, prot_ad)):
        mobs = mod.obs.copy()
        mobs.index = pd.Index(mobs.index).astype(str)
        parts.append((mod_name, mobs.loc[rna_cells]))
    obs = pd.DataFrame(index=rna_cells)
    for prefix, part in parts:
        for col in part.columns:
            name = col if col not in obs.columns or not prefix else f"{prefix}:{col}"
            if name not in obs.columns:
                obs[name] = part[col]
    frames = [p for _, p in parts]
    by_mod = dict(parts)

    def lookup(key: str | None, what: str) -> pd.Series | None:
        mod = (key_modalities or {}).get(what)
        first = [by_mod[mod]] if mod in by_mod else []
        return _obs_column(key, first + frames, where)

    n = len(obs)
    global_obsm = [mdata.obsm] if parts and parts[0][0] == "" else []
    if global_obsm and not gobs.index.equals(rna_cells):  # mdata rows in the RNA order
        order = gobs.index.get_indexer(rna_cells)
        global_obsm = [
            {k: np.asarray(v)[order] for k, v in mdata.obsm.items() if _is_embedding_key(k)}
        ]
    layouts, layout_notes = obsm_layouts([*global_obsm, rna_ad.obsm], n)
    return _build(
        rna=rna,
        protein=prot,
        obs=obs,
        var_names=pd.Index(rna_ad.var_names),
        protein_names=pd.Index(prot_ad.var_names),
        **_key_fields(lookup, batch_key, labels_key, where, n),
        source=source,
        rna_field=f"{rna_modality}.X" if layer is None else f"{rna_modality}.layers[{layer!r}]",
        protein_field=f"{protein_modality}.X"
        if protein_layer is None
        else f"{protein_modality}.layers[{protein_layer!r}]",
        minified=_minified_posterior(
            mdata.uns, [mdata.obsm, rna_ad.obsm], [mdata.obs, rna_ad.obs], n, where
        ),
        gene_symbols=rna_ad.var.get(GENE_SYMBOLS),
        protein_symbols=prot_ad.var.get(PROTEIN_SYMBOLS),
        rna_layers=[str(k) for k in rna_ad.layers],
        simulated=simulation_line(mdata.uns),
        layouts=layouts,
        layout_notes=layout_notes,
    )


def read_10x(
    path: str | os.PathLike[str], *, source: str = "", rna_only_protein: str | None = None
) -> CiteSeqData:
    """Read Cell Ranger (v3) output: a matrix folder or a ``.h5`` file.

    ``"Gene Expression"`` features become RNA, ``"Antibody Capture"`` features proteins (other
    feature types are dropped). Feature *names* are used; duplicates are made unique as by
    every reader (see :func:`from_anndata`). One batch, no labels. Output without antibody
    features is refused, unless ``rna_only_protein`` names one all-zero placeholder protein
    column (how RNA-only data is read to be mapped onto a model).
    """
    p = Path(path)
    src = source or str(p)
    if not p.exists():
        msg = f"{src}: no such file or folder; expected a Cell Ranger .h5 file or matrix folder"
        raise CiteSeqDataError(msg)
    if p.is_dir():
        counts, barcodes, names, types = _read_10x_folder(p, src)
    else:
        counts, barcodes, names, types = _read_10x_h5(p, src)
    _check_unique(barcodes, src, "barcodes", "cell")
    is_gex = types == GENE_EXPRESSION
    is_adt = types == ANTIBODY_CAPTURE
    if not is_adt.any() and rna_only_protein is not None:
        counts = sp.hstack(
            [counts, sp.csr_matrix((counts.shape[0], 1), dtype=counts.dtype)], format="csr"
        )
        names = np.append(names, rna_only_protein)
        types = np.append(types, ANTIBODY_CAPTURE)
        is_gex = np.append(is_gex, False)
        is_adt = types == ANTIBODY_CAPTURE
    if not is_adt.any():
        found = sorted(set(types.tolist()))
        msg = (
            f"{src}: no 'Antibody Capture' features (feature types found: {found}), so there are "
            "no protein counts (TotalVI needs Cell Ranger >= 3 output with the antibody library "
            f"included). {RNA_ONLY_ADVICE}"
        )
        raise CiteSeqDataError(msg)
    return _build(
        rna=counts[:, np.flatnonzero(is_gex)],
        protein=counts[:, np.flatnonzero(is_adt)].toarray(),
        obs=pd.DataFrame(index=barcodes),
        var_names=pd.Index(names[is_gex]),
        protein_names=pd.Index(names[is_adt]),
        batch=np.zeros(len(barcodes), dtype=np.int64),
        batch_categories=[SINGLE_BATCH],
        batch_key=None,
        labels=None,
        label_categories=None,
        labels_key=None,
        source=src,
        rna_field="Gene Expression features",
        protein_field="Antibody Capture features",
    )


def align_features(
    data: CiteSeqData,
    *,
    var_names: Sequence[str] | pd.Index,
    protein_names: Sequence[str] | pd.Index,
) -> CiteSeqData:
    """Reorder (and subset) genes and proteins to a model's order.

    Extra genes/proteins in ``data`` are dropped; missing ones raise :class:`CiteSeqDataError`
    naming how many and which. Returns ``data`` itself when the order already matches.
    """
    want_genes = pd.Index(var_names).astype(str)
    want_prots = pd.Index(protein_names).astype(str)
    if data.var_names.equals(want_genes) and data.protein_names.equals(want_prots):
        return data
    for names, what in ((want_genes, "genes"), (want_prots, "proteins")):
        _check_unique(names, "model", what, what[:-1])
    gi = data.var_names.get_indexer(want_genes)
    pi = data.protein_names.get_indexer(want_prots)
    problems = []
    for idx, names, what in ((gi, want_genes, "genes"), (pi, want_prots, "proteins")):
        missing = names[idx < 0]
        if len(missing):
            problems.append(
                f"{len(missing)} of the model's {len(names)} {what} are missing "
                f"({_listing(missing)})"
            )
    if problems:
        msg = (
            f"{data._where()}: " + "; ".join(problems) + ". The data must measure every gene and "
            "protein the model was trained on (same names); use the model's gene panel"
        )
        raise CiteSeqDataError(msg)
    return replace(
        data,
        rna=data.rna[:, gi],
        protein=data.protein[:, pi],
        var_names=want_genes,
        protein_names=want_prots,
        protein_batch_mask=_mask_columns(data.protein_batch_mask, pi),
        gene_symbols=data.original_var_names[gi],
        protein_symbols=data.original_protein_names[pi],
    )


def _mask_columns(mask: np.ndarray | None, cols: np.ndarray) -> np.ndarray | None:
    """The protein batch mask of the protein columns ``cols``; ``None`` when they were all
    measured in every batch (the class's rule: no mask means every protein measured)."""
    if mask is None:
        return None
    kept = mask[:, cols]
    return None if kept.all() else kept


def compute_protein_batch_mask(
    protein: np.ndarray, batch: np.ndarray, n_batch: int
) -> np.ndarray | None:
    """Which proteins were measured in which batch (scvi-tools' rule).

    ``mask[b, j]`` is ``True`` unless protein ``j`` sums to zero over the cells of batch ``b``
    (an all-zero panel column means "not in that batch's antibody panel"). Batches without
    cells count as fully measured. Returns ``None`` when every entry is ``True``.
    """
    codes = np.asarray(batch, dtype=np.int64).ravel()
    prot = np.asarray(protein)
    if codes.size and (codes.min() < 0 or codes.max() >= n_batch):
        msg = f"batch codes range {codes.min()}..{codes.max()}, outside 0..{n_batch - 1}"
        raise CiteSeqDataError(msg)
    onehot = sp.csr_matrix(
        (np.ones(codes.size), (codes, np.arange(codes.size))), shape=(n_batch, codes.size)
    )
    sums = np.asarray(onehot @ prot.astype(np.float64))
    mask = sums != 0
    mask[np.bincount(codes, minlength=n_batch) == 0] = True
    return None if mask.all() else mask


# ================================================================== internals
def simulation_line(uns: Any) -> str:
    """How simulated data was made, from the ``uns["simulation"]`` that
    :func:`model.simulate.simulate_cite_seq` writes (generator and seed); ``""`` when the
    file has none (measured data)."""
    sim = uns.get("simulation") if uns is not None else None
    if not isinstance(sim, Mapping):
        return ""
    generator = str(sim.get("generator", "a simulation"))[:80]
    seed = sim.get("seed")
    return (
        f"simulated data ({generator}, seed {seed})"
        if seed is not None
        else (f"simulated data ({generator})")
    )


def _build(
    *,
    rna: Any,
    protein: Any,
    obs: pd.DataFrame,
    var_names: pd.Index,
    protein_names: pd.Index,
    batch: np.ndarray,
    batch_categories: list[str],
    batch_key: str | None,
    labels: np.ndarray | None,
    label_categories: list[str] | None,
    labels_key: str | None,
    source: str,
    rna_field: str,
    protein_field: str,
    minified: MinifiedPosterior | None = None,
    gene_symbols: Any = None,
    protein_symbols: Any = None,
    rna_layers: Sequence[str] = (),
    simulated: str = "",
    layouts: Mapping[str, np.ndarray] | None = None,
    layout_notes: Sequence[str] = (),
) -> CiteSeqData:
    """Check names and counts, convert to the canonical dtypes and assemble the container.

    Duplicate gene/protein names are made unique (with a notice); ``gene_symbols`` /
    ``protein_symbols`` are symbols stored beside already-unique names (kept only if they
    made unique give exactly those names).
    """
    where = source or "data"
    cells = pd.Index(obs.index).astype(str)
    genes, gene_syms, gene_note = _unique_names(var_names, "gene", gene_symbols)
    prots, prot_syms, prot_note = _unique_names(protein_names, "protein", protein_symbols)
    if len(cells) == 0:
        raise CiteSeqDataError(f"{where}: no cells; the file holds an empty count matrix")
    if len(genes) == 0:
        msg = f"{where}: no genes in {rna_field}; TotalVI needs RNA counts for each cell"
        raise CiteSeqDataError(msg)
    if len(prots) == 0:
        msg = f"{where}: no proteins in {protein_field}; TotalVI needs protein (ADT) counts"
        raise CiteSeqDataError(msg)
    _check_unique(cells, where, "cell names", "cell")
    hint = ""
    if rna_layers and rna_field.endswith("X"):
        hint = (
            f"This file has layers {_listing(rna_layers)}: if one holds the raw counts, read "
            f"it with --layer {rna_layers[0]} (layer={rna_layers[0]!r})"
        )
    rna_csr = _to_checked_csr(rna, _Counts(where, "RNA", rna_field, cells, genes, "gene", hint))
    prot_arr = _to_checked_dense(
        protein, _Counts(where, "protein", protein_field, cells, prots, "protein")
    )
    if prot_arr.shape[1] != len(prots):
        msg = (
            f"{where}: {protein_field} has {prot_arr.shape[1]} columns but there are "
            f"{len(prots)} protein names; give one name per protein column"
        )
        raise CiteSeqDataError(msg)
    obs = obs.copy()
    obs.index = cells
    return CiteSeqData(
        rna=rna_csr,
        protein=prot_arr,
        obs=obs,
        var_names=genes,
        protein_names=prots,
        batch=batch,
        batch_categories=batch_categories,
        batch_key=batch_key,
        labels=labels,
        label_categories=label_categories,
        labels_key=labels_key,
        # minified counts are all zero: the model's own mask applies, not one from the data
        protein_batch_mask=None
        if minified is not None
        else compute_protein_batch_mask(prot_arr, batch, len(batch_categories)),
        source=source,
        minified=minified,
        gene_symbols=gene_syms,
        protein_symbols=prot_syms,
        notices=(*(n for n in (gene_note, prot_note) if n), *layout_notes),
        simulated=simulated,
        layouts=dict(layouts or {}),
    )


def _unique_names(
    names: Any, what: str, stored: Any = None
) -> tuple[pd.Index, pd.Index | None, str | None]:
    """Unique names, the original symbols (``None``: unchanged) and a one-line notice.

    Duplicates are made unique by :func:`_make_unique`. Names that are already unique get
    the ``stored`` symbols when those, made unique, give exactly these names (a file this
    project exported); otherwise ``stored`` is ignored.
    """
    original = pd.Index(names).astype(str)
    if original.is_unique:
        if stored is None:
            return original, None, None
        try:
            symbols = pd.Index(np.asarray(stored, dtype=object).ravel()).astype(str)
        except (TypeError, ValueError):  # not a list of names: not our column, ignore it
            return original, None, None
        if len(symbols) == len(original) and _make_unique(symbols).equals(original):
            return original, _symbols_or_none(symbols, original), None
        return original, None, None
    unique = _make_unique(original)
    return unique, original, _unique_notice(original, unique, what)


def _unique_notice(original: pd.Index, unique: pd.Index, what: str, shown: int = 3) -> str:
    """``"2 duplicate gene names made unique (COG8 -> COG8, COG8-1; ...)"``, one line."""
    groups: dict[str, list[str]] = {}
    dup = original.duplicated(keep=False)
    for name, new in zip(original[dup], unique[dup], strict=True):
        groups.setdefault(str(name), []).append(str(new))

    def one(name: str, news: list[str]) -> str:
        more = f", ... ({len(news)} in all)" if len(news) > shown else ""
        return f"{name} -> {', '.join(news[:shown])}{more}"

    examples = "; ".join(one(k, v) for k, v in list(groups.items())[:shown])
    if len(groups) > shown:
        examples += f"; ... ({len(groups) - shown} more)"
    plural = "s" if len(groups) != 1 else ""
    return (
        f"{len(groups)} duplicate {what} name{plural} made unique ({examples}); "
        f"the original {what} symbols are kept for display and export"
    )


def _symbols_or_none(symbols: Any, names: pd.Index) -> pd.Index | None:
    """``symbols`` as a text Index, or ``None`` when absent or equal to ``names``."""
    if symbols is None:
        return None
    out = pd.Index(np.asarray(symbols, dtype=object).ravel()).astype(str)
    return None if out.equals(names) else out


def _canonical_csr(x: Any, where: str = "CiteSeqData") -> sp.csr_matrix:
    """CSR float32 with summed duplicates, sorted indices and no explicit zeros.

    Returns ``x`` itself when it is already in that form, else a new matrix. A sparse ``x``
    has its structure checked first (:func:`~model.sparse_check.check_sparse`).
    """
    if sp.issparse(x):
        check_sparse(x, where, "rna")
    if (
        isinstance(x, sp.csr_matrix)
        and x.dtype == np.float32
        and x.has_canonical_format
        and (x.nnz == 0 or bool(np.all(x.data != 0)))
    ):
        return x
    if sp.issparse(x):
        m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    else:
        m = sp.csr_matrix(np.asarray(x, dtype=np.float32))
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


@dataclass(frozen=True)
class _Counts:
    """A count matrix being read, for its checks and error messages: the file (``where``),
    modality, field, cell and feature names, and ``hint`` (a sentence added to a bad-count
    message, e.g. which layers the file has)."""

    where: str
    modality: str
    field_name: str
    cells: pd.Index
    features: pd.Index
    feature_kind: str
    hint: str = ""


def _to_checked_csr(x: Any, counts: _Counts) -> sp.csr_matrix:
    """Validate a count matrix (dense or sparse) and return it as canonical CSR float32."""
    where, field_name = counts.where, counts.field_name
    if x is None:
        raise CiteSeqDataError(f"{where}: {field_name} is empty (None); it must hold RNA counts")
    if sp.issparse(x):
        check_sparse(x, where, field_name)
        m = sp.csr_matrix(x, copy=True)
        m.sum_duplicates()
        m.sort_indices()
    else:
        m = sp.csr_matrix(_numeric(np.asarray(x), where, field_name))
    _check_shape(m.shape, counts)
    data = _numeric(m.data, where, field_name)

    def locate(k: int) -> tuple[int, int]:
        return int(np.searchsorted(m.indptr, k, side="right") - 1), int(m.indices[k])

    _check_counts(data, locate, counts)
    m = m.astype(np.float32, copy=False)  # m is already our own sorted, summed copy
    m.eliminate_zeros()
    return m


def _to_checked_dense(x: Any, counts: _Counts) -> np.ndarray:
    """Validate a protein count matrix and return it as C-contiguous float32."""
    where, field_name, cells = counts.where, counts.field_name, counts.cells
    if x is None:
        raise CiteSeqDataError(f"{where}: {field_name} is empty (None); it must hold counts")
    if sp.issparse(x):
        check_sparse(x, where, field_name)
    arr = x.toarray() if sp.issparse(x) else np.asarray(x)
    arr = _numeric(arr, where, field_name)
    if arr.ndim != 2 or arr.shape[0] != len(cells):
        msg = (
            f"{where}: {field_name} has shape {arr.shape}, expected ({len(cells)} cells, "
            "n_proteins)"
        )
        raise CiteSeqDataError(msg)
    n_col = arr.shape[1]

    def locate(k: int) -> tuple[int, int]:
        return k // n_col, k % n_col

    if arr.shape[1] == len(counts.features):
        _check_counts(arr.reshape(-1), locate, counts)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_shape(shape: tuple[int, ...], counts: _Counts) -> None:
    n_cells, n_features = len(counts.cells), len(counts.features)
    if tuple(shape) != (n_cells, n_features):
        msg = (
            f"{counts.where}: {counts.field_name} has shape {tuple(shape)} but there are "
            f"{n_cells} cells and {n_features} {counts.feature_kind}s"
        )
        raise CiteSeqDataError(msg)


def _numeric(arr: np.ndarray, where: str, field_name: str) -> np.ndarray:
    """``arr`` itself if numeric (bool counts as 0/1), else converted to float64 or an error."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating):
        return arr
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        msg = f"{where}: {field_name} holds non-numeric values (dtype {arr.dtype}): {err}"
        raise CiteSeqDataError(msg) from err


def _check_counts(
    values: np.ndarray, locate: Callable[[int], tuple[int, int]], counts: _Counts
) -> None:
    """Raise on the first non-finite, negative or non-integer count (in cell-major order)."""
    is_float = np.issubdtype(values.dtype, np.floating)
    checks: list[tuple[str, Callable[[np.ndarray], np.ndarray], str]] = []
    if is_float:
        checks.append(
            (
                "a NaN or infinite value",
                lambda v: ~np.isfinite(v),
                "Counts must be finite: fix those entries (an unmeasured value is usually 0)",
            )
        )
    checks.append(
        (
            "a negative value",
            lambda v: v < 0,
            "TotalVI models raw UMI counts; pass unnormalized counts (e.g. a 'counts' layer) "
            "rather than scaled or centred data",
        )
    )
    if is_float:
        checks.append(
            (
                "a non-integer value",
                lambda v: v != np.round(v),
                "TotalVI models raw UMI counts; pass the raw integer counts (e.g. a 'counts' "
                "layer) rather than normalized or log-transformed data",
            )
        )
    for what, test, fix in checks:
        bad = np.flatnonzero(test(values))
        if bad.size:
            k = int(bad[0])
            row, col = locate(k)
            c = counts
            msg = (
                f"{c.where}: {c.modality} counts in {c.field_name} contain {what} "
                f"({values[k].item()!r}) at cell {c.cells[row]!r}, {c.feature_kind} "
                f"{c.features[col]!r}"
                f"{f' and {bad.size - 1} more entries' if bad.size > 1 else ''}. {fix}"
                f"{f'. {c.hint}' if c.hint else ''}"
            )
            raise CiteSeqDataError(msg)


def _check_unique(names: pd.Index, where: str, what: str, kind: str) -> None:
    if names.is_unique:
        return
    dups = pd.Index(names[names.duplicated()]).unique()
    fix = {
        "cell": "make them unique, e.g. adata.obs_names_make_unique()",
        "gene": "make them unique, e.g. adata.var_names_make_unique()",
    }.get(kind, f"rename the {kind}s so that each name occurs once")
    msg = f"{where}: {len(dups)} duplicate {what}: {_listing(dups)}; {fix}"
    raise CiteSeqDataError(msg)


def _get_layer(adata: anndata.AnnData, layer: str | None, where: str, what: str) -> Any:
    """``adata.X`` or ``adata.layers[layer]``, with an error listing the available layers."""
    if layer is None:
        if adata.X is None:
            msg = (
                f"{where}: {what} has no X matrix; available layers: "
                f"{_listing(adata.layers.keys())}. Pass the layer holding the counts"
            )
            raise CiteSeqDataError(msg)
        return adata.X
    if layer not in adata.layers:
        msg = (
            f"{where}: {what} has no layer {layer!r}; available layers: "
            f"{_listing(adata.layers.keys())}. Pass one of those, or None to use X"
        )
        raise CiteSeqDataError(msg)
    return adata.layers[layer]


def _protein_names_from_uns(
    adata: anndata.AnnData, key: str | None, n_prot: int, where: str
) -> pd.Index:
    if key is not None and key not in adata.uns:
        msg = (
            f"{where}: no protein names at uns[{key!r}]; available uns keys: "
            f"{_listing(adata.uns.keys())}"
        )
        raise CiteSeqDataError(msg)
    key = key if key is not None else ("protein_names" if "protein_names" in adata.uns else None)
    if key is None:
        return pd.Index([f"protein_{i}" for i in range(n_prot)])
    names = pd.Index(np.asarray(adata.uns[key]).ravel()).astype(str)
    if len(names) != n_prot:
        msg = (
            f"{where}: uns[{key!r}] has {len(names)} protein names but the protein matrix "
            f"has {n_prot} columns; give one name per column"
        )
        raise CiteSeqDataError(msg)
    return names


def _is_embedding_key(key: str) -> bool:
    """An obsm key of a layout or reduction (``X_umap``, ``X_pca``, scvi's ``_scvi_*``)."""
    return key.startswith(("X_", "_scvi")) or key.lower() in {"umap", "pca", "tsne", "spatial"}


#: Most ``obsm`` layouts a dataset keeps (8 x 2 float32 per cell: 64 bytes a cell at most).
MAX_LAYOUTS = 8


def obsm_layouts(
    containers: Sequence[Mapping[str, Any]], n: int, *, skip: Sequence[str] = ()
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The 2-D layouts among ``obsm`` entries (first container first; a key seen twice keeps
    the first): keys :func:`_is_embedding_key` accepts (not scvi's ``_scvi_*`` posterior, not
    ``skip``) holding a numeric ``(n, >=2)`` array; their first two columns as float32.

    A layout with a non-finite value in those columns is not kept (a one-line note says so,
    in the returned notes), nor are more than :data:`MAX_LAYOUTS`; anything else (sparse,
    text, wrong shape) is silently not a layout.
    """
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for container in containers:
        for key in map(str, container.keys()):
            if key in out or key in skip or key.startswith("_scvi"):
                continue
            if not _is_embedding_key(key) or len(out) >= MAX_LAYOUTS:
                continue
            raw = container[key]
            if sp.issparse(raw):
                continue
            arr = raw.to_numpy() if isinstance(raw, pd.DataFrame) else np.asarray(raw)
            if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 2:
                continue
            if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
                continue
            xy = np.ascontiguousarray(arr[:, :2], dtype=np.float32)
            bad = int((~np.isfinite(xy).all(axis=1)).sum())
            if bad:
                notes.append(
                    f"obsm[{key!r}] has {bad:,} cells without finite coordinates; that layout "
                    "is not offered"
                )
                continue
            out[key] = xy
    return out, notes


def _obs_column(key: str | None, frames: list[pd.DataFrame], where: str) -> pd.Series | None:
    """First column ``key`` among ``frames`` (already aligned to the cells), or an error."""
    if key is None:
        return None
    for frame in frames:
        if key in frame.columns:
            return frame[key]
    cols: list[str] = []
    for frame in frames:
        cols += [str(c) for c in frame.columns if str(c) not in cols]
    msg = f"{where}: no obs column {key!r}; available obs columns: {_listing(cols, 30)}"
    raise CiteSeqDataError(msg)


def _key_fields(
    column: Callable[[str | None, str], pd.Series | None],
    batch_key: str | None,
    labels_key: str | None,
    where: str,
    n_cells: int,
) -> dict[str, Any]:
    """The batch and label fields of :func:`_build`, coded from the obs columns that
    ``column(key, "batch_key" | "labels_key")`` finds (batch first)."""
    batch, bcats = _codes(column(batch_key, "batch_key"), batch_key, where, "batch_key", n_cells)
    labels, lcats = _codes(
        column(labels_key, "labels_key"), labels_key, where, "labels_key", n_cells
    )
    has_labels = labels_key is not None
    return {
        "batch": batch,
        "batch_categories": bcats,
        "batch_key": batch_key,
        "labels": labels if has_labels else None,
        "label_categories": lcats if has_labels else None,
        "labels_key": labels_key,
    }


def _codes(
    column: pd.Series | None, key: str | None, where: str, what: str, n_cells: int
) -> tuple[np.ndarray, list[str]]:
    """int64 codes and category names of an obs column (one category "all" if ``None``).

    A categorical keeps its category order (unused ones dropped); other columns use their
    sorted unique values.
    """
    if column is None:
        return np.zeros(n_cells, dtype=np.int64), [SINGLE_BATCH]
    missing = int(column.isna().sum())
    if missing:
        msg = (
            f"{where}: obs column {key!r} ({what}) is missing (NaN) for {missing} of "
            f"{len(column)} cells (first: {column.index[column.isna().to_numpy()][0]!r}); "
            "fill it in or drop those cells"
        )
        raise CiteSeqDataError(msg)
    if isinstance(column.dtype, pd.CategoricalDtype):
        cat = column.cat.remove_unused_categories()
        codes = cat.cat.codes.to_numpy().astype(np.int64)
        names = [str(c) for c in cat.cat.categories]
    else:
        values = column.to_numpy()
        uniq = list(pd.unique(values))
        try:
            uniq = sorted(uniq)
        except TypeError:
            uniq = sorted(uniq, key=str)
        codes = pd.Index(uniq).get_indexer(values).astype(np.int64)
        names = [str(u) for u in uniq]
    if len(set(names)) != len(names):
        msg = f"{where}: obs column {key!r} has values that coincide as text: {names[:10]}"
        raise CiteSeqDataError(msg)
    return codes, names


def _make_unique(names: Iterable[Any], join: str = "-") -> pd.Index:
    """Names made unique as anndata's ``make_index_unique`` does (``var_names_make_unique``).

    The first occurrence keeps its name; later ones get ``-1``, ``-2``, ... counted per name,
    and a generated name already taken (in the input or generated before) is skipped to the
    next number: ``A, A, A-1, A`` -> ``A, A-2, A-1, A-3``.
    """
    values = np.array([str(n) for n in names], dtype=object)
    index = pd.Index(values)
    if index.is_unique:
        return index
    dup = index.duplicated(keep="first")
    taken = set(values.tolist())
    counter: Counter[str] = Counter()
    for i in np.flatnonzero(dup):
        base = values[i]
        while True:
            counter[base] += 1
            candidate = f"{base}{join}{counter[base]}"
            if candidate not in taken:
                taken.add(candidate)
                values[i] = candidate
                break
    return pd.Index(values)


def _read_quietly(reader: Callable[[Path], Any], path: Path, kind: str) -> Any:
    """:func:`_read_or_fail` without anndata's "names are not unique ... call
    var_names_make_unique" warning: the readers make names unique and say so in ``notices``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*names are not unique", category=UserWarning)
        return _read_or_fail(reader, path, kind)


def _listing(names: Iterable[Any], limit: int = _N_SHOW) -> str:
    items = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in items[:limit])
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return f"[{shown}{more}]" if items else "(none)"


def _read_or_fail(reader: Callable[[Path], Any], path: Path, kind: str) -> Any:
    """Call ``reader(path)``, turning any read failure into a :class:`CiteSeqDataError`.

    An HDF5 file (``.h5ad``, ``.h5mu``, ``.h5``) first goes through
    :func:`~model.hdf5_guard.check_hdf5_file`: one that is not self-contained, declares
    more data than it stores or holds inconsistent sparse matrices is refused unread.
    """
    if path.suffix.lower() in _HDF5_SUFFIXES and path.is_file():
        check_hdf5_file(path, source=str(path))
    try:
        return reader(path)
    except MemoryError:
        raise
    except CiteSeqDataError:
        raise
    except Exception as err:  # h5py/OSError/KeyError/... from a corrupt or truncated file
        msg = (
            f"{path}: cannot be read as {kind}: {type(err).__name__}: {err}. The file may be "
            "truncated, corrupt or of another format; re-export or re-download it"
        )
        raise CiteSeqDataError(msg) from err


# ---------------------------------------------------------------- 10x formats
def _find(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _open_text(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _read_10x_folder(
    folder: Path, src: str
) -> tuple[sp.csr_matrix, pd.Index, np.ndarray, np.ndarray]:
    """Counts (cells x features CSR), barcodes, feature names and types of a matrix folder."""
    if _find(folder, ("matrix.mtx.gz", "matrix.mtx")) is None:
        sub = folder / "filtered_feature_bc_matrix"
        if sub.is_dir():
            folder = sub
    mtx = _find(folder, ("matrix.mtx.gz", "matrix.mtx"))
    feats = _find(folder, ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"))
    bcs = _find(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    if mtx is None or feats is None or bcs is None:
        absent = [
            n
            for n, f in (
                ("matrix.mtx[.gz]", mtx),
                ("features.tsv[.gz]", feats),
                ("barcodes.tsv[.gz]", bcs),
            )
            if f is None
        ]
        msg = (
            f"{src}: not a Cell Ranger matrix folder ({', '.join(absent)} missing in {folder}); "
            f"supported: {SUPPORTED_FORMATS}"
        )
        raise CiteSeqDataError(msg)

    def read() -> tuple[sp.csr_matrix, pd.Index, pd.DataFrame]:
        with _open_text(feats) as fh:
            f = pd.read_csv(fh, sep="\t", header=None, dtype=str, keep_default_na=False)
        with _open_text(bcs) as fh:
            b = pd.read_csv(fh, sep="\t", header=None, dtype=str, keep_default_na=False)
        with _open_text(mtx) as fh:
            layout, n_rows, n_cols = _mtx_header(fh, f"{src}: {mtx.name}")
        if layout != "coordinate" or (n_rows, n_cols) != (len(f), len(b)):
            msg = (
                f"{src}: {mtx.name} is a {layout} matrix of {n_rows} features x {n_cols} "
                f"barcodes but {feats.name} lists {len(f)} features and {bcs.name} {len(b)} "
                "barcodes; the three files do not belong together"
            )
            raise CiteSeqDataError(msg)
        with _open_text(mtx) as fh:
            m = scipy.io.mmread(fh)
        if not sp.issparse(m):
            raise CiteSeqDataError(f"{src}: {mtx.name} is not a sparse (coordinate) matrix")
        check_sparse(m, src, mtx.name)
        return sp.csr_matrix(m).T.tocsr(), pd.Index(b.iloc[:, 0]), f

    matrix, barcodes, features = _read_or_fail(lambda _p: read(), folder, "a 10x matrix folder")
    names = features.iloc[:, 1 if features.shape[1] > 1 else 0].to_numpy(dtype=object)
    types = (
        features.iloc[:, 2].to_numpy(dtype=object)
        if features.shape[1] > 2
        else np.full(len(features), GENE_EXPRESSION, dtype=object)
    )
    if matrix.shape != (len(barcodes), len(features)):
        msg = (
            f"{src}: {mtx.name} is {matrix.shape[1]} features x {matrix.shape[0]} barcodes but "
            f"{feats.name} lists {len(features)} features and {bcs.name} {len(barcodes)} "
            "barcodes; the three files do not belong together"
        )
        raise CiteSeqDataError(msg)
    return matrix, barcodes, names, types


def _read_10x_h5(path: Path, src: str) -> tuple[sp.csr_matrix, pd.Index, np.ndarray, np.ndarray]:
    """Counts (cells x features CSR), barcodes, feature names and types of a v3 ``.h5``."""

    def text(ds: h5py.Dataset) -> np.ndarray:
        return np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in ds[()]], dtype=object
        )

    def read(p: Path) -> tuple[sp.csr_matrix, pd.Index, np.ndarray, np.ndarray] | list[str]:
        with h5py.File(p, "r") as f:
            if "matrix" not in f:
                return list(f.keys())
            g = f["matrix"]
            n_feat, n_bc = _10x_shape(g["shape"], src)
            data = g["data"]
            check_data(data, 1, src, "matrix", "csr")
            # CSC of features x barcodes = CSR of barcodes x features; check before scipy
            check_compressed(
                g["indptr"],
                g["indices"],
                data_len=data.shape[0],
                shape=(n_bc, n_feat),
                fmt="csr",
                where=src,
                field="matrix",
                major="barcode",
                minor="feature",
            )
            barcodes = pd.Index(text(g["barcodes"]))
            names, types = text(g["features/name"]), text(g["features/feature_type"])
            for what, got, want in (
                ("matrix/barcodes", len(barcodes), n_bc),
                ("matrix/features/name", len(names), n_feat),
                ("matrix/features/feature_type", len(types), n_feat),
            ):
                if got != want:
                    msg = f"{src}: {what} has {got} entries but matrix/shape says {want}"
                    raise CiteSeqDataError(msg)
            m = sp.csr_matrix((data[()], g["indices"][()], g["indptr"][()]), shape=(n_bc, n_feat))
            return m, barcodes, names, types

    got = _read_or_fail(read, path, "a Cell Ranger HDF5 (.h5) file")
    if isinstance(got, list):
        msg = (
            f"{src}: no /matrix group (top-level groups: {_listing(got)}); this is not a Cell "
            "Ranger v3 .h5 file (v2 files have no antibody counts). Supported: "
            f"{SUPPORTED_FORMATS}"
        )
        raise CiteSeqDataError(msg)
    return got


def _10x_shape(ds: h5py.Dataset, src: str) -> tuple[int, int]:
    """``(n_features, n_barcodes)`` from ``matrix/shape``: two non-negative integers."""
    values = np.asarray(ds[()]).ravel()
    if values.shape != (2,) or not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        msg = f"{src}: matrix/shape is {values.tolist()!r}, not two non-negative integers"
        raise CiteSeqDataError(msg)
    return int(values[0]), int(values[1])


def _mtx_header(fh: IO[bytes], where: str) -> tuple[str, int, int]:
    """Layout (``"coordinate"``/``"array"``) and size of a Matrix Market file, read from its
    header alone (scipy's ``mminfo`` aborts the process on some file handles)."""
    banner = fh.readline(1024).decode("utf-8", "replace").split()
    if len(banner) < 3 or banner[0].lower() != "%%matrixmarket":
        raise CiteSeqDataError(f"{where} is not a Matrix Market file (no %%MatrixMarket line)")
    for _ in range(100_000):
        line = fh.readline(1024).decode("utf-8", "replace").strip()
        if line and not line.startswith("%"):
            break
    else:
        line = ""
    try:
        dims = [int(v) for v in line.split()]
    except ValueError:
        dims = []
    if len(dims) < 2 or min(dims) < 0:
        raise CiteSeqDataError(f"{where}: bad size line {line[:80]!r}")
    return banner[2].lower(), dims[0], dims[1]
