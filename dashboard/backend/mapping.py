"""Map new cells onto the active model (scArches) and build the combined dataset.

:func:`map_query` runs :meth:`model.totalvi.TotalVI.map_query` for a (reference dataset,
model) pair and a query dataset, then builds one *combined* dataset: the reference cells
followed by the query cells (genes in the reference's order, missing genes and proteins as
zero counts, the proteins masked per batch), with the obs columns

- :data:`DATASET_COLUMN` (``"reference"`` / ``"query"``) and the batch column;
- :data:`LABEL_COLUMN`: each reference cell's own cell type (the reference pair's
  :meth:`~dashboard.backend.service.AnalysisService.cell_types`) and, for query cells, the
  label transferred by a k-nearest-neighbour vote in the latent space;
- :data:`CONFIDENCE_COLUMN`: the share of the k neighbours that voted for it (1 for
  reference cells).

The combined dataset's labels are the transferred labels, so the combined pair's cell types
are the reference's types extended to the query. The combined dataset and the mapped model
are registered in the service as a new pair; the reference pair is left as it was. The
mapping is cached under the reference dataset's and model's fingerprints with the query's
fingerprint, the reference labels and every parameter, so mapping the same query again is
instant (also after a restart).

Query proteins that were not measured are zeros in the counts; the service's denoised and
foreground tables hold predictions for them (decoded in batches that measured the protein).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata
import mudata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.errors import DatasetNotFound, InvalidSelection, ModelDataMismatch
from dashboard.backend.refs import DatasetRef, Pair
from dashboard.backend.untrusted import QUERY_READER, validate_file
from model.data import (
    CiteSeqData,
    CiteSeqDataError,
    _read_or_fail,
    from_anndata,
    from_mudata,
    read_10x,
    read_cite_seq,
)
from model.errors import QueryDataError

if TYPE_CHECKING:
    from dashboard.backend.service import AnalysisService
    from model.totalvi import TotalVI

ProgressFn = Callable[[float, str], None]

#: obs column telling reference and query cells apart.
DATASET_COLUMN = "dataset"
#: obs column of the cell types: the reference's own, transferred for query cells.
LABEL_COLUMN = "transferred_label"
#: obs column of the label's confidence (share of the k neighbours that voted for it).
CONFIDENCE_COLUMN = "label_confidence"
REFERENCE, QUERY = "reference", "query"
#: obsm key of the protein counts in an ``.h5ad`` (absent: an RNA-only query).
PROTEIN_OBSM_KEY = "protein_expression"
_NO_PROTEIN = "__no_protein__"
#: Neighbours of the label vote.
DEFAULT_K = 15


@dataclass(frozen=True)
class QueryMapResult:
    """What a mapping produced: the combined pair and a short report.

    Attributes
    ----------
    pair
        Combined dataset (reference + query cells) with the mapped model.
    reference, query
        The pair mapped onto and the query dataset.
    n_reference, n_query
        Cells of each part (reference cells come first in the combined dataset).
    info
        The model's ``query_info`` (missing genes/proteins, renamed batches, epochs...).
    label_counts
        Query cells per transferred label.
    mean_confidence
        Mean label confidence over the query cells.
    cache_key
        Where the mapping is cached.
    """

    pair: Pair
    reference: Pair
    query: DatasetRef
    n_reference: int
    n_query: int
    info: dict[str, Any]
    label_counts: dict[str, int]
    mean_confidence: float
    cache_key: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (job records)."""
        return {
            "pair": self.pair.to_dict(),
            "reference": self.reference.to_dict(),
            "query": self.query.to_dict(),
            "n_reference": self.n_reference,
            "n_query": self.n_query,
            "info": self.info,
            "label_counts": self.label_counts,
            "mean_confidence": self.mean_confidence,
            "cache_key": self.cache_key,
        }


@dataclass
class _Mapped:
    """The cached value: the mapped model, the combined data and the report."""

    model: TotalVI
    combined: CiteSeqData
    info: dict[str, Any]
    n_reference: int


# ============================================================================ reading
def read_query(path: str | Path, *, batch_key: str | None = None) -> CiteSeqData:
    """Read a query file; an ``.h5ad`` without protein counts is read as RNA-only.

    Raises :class:`DatasetNotFound` with the reader's message when the file cannot be used.
    """
    try:
        return load_query_file(path, batch_key=batch_key)
    except CiteSeqDataError as err:
        raise DatasetNotFound(str(err)) from None


def load_query_file(path: str | Path, *, batch_key: str | None = None) -> CiteSeqData:
    """:func:`read_query` raising the reader's ``CiteSeqDataError`` (upload validation)."""
    p = Path(path)
    name = p.name.lower()
    if (
        p.exists()
        and batch_key is None
        and (p.is_dir() or name.endswith((".h5", ".mtx", ".mtx.gz")))
    ):
        folder = p.parent if name.endswith((".mtx", ".mtx.gz")) else p
        return read_10x(folder, source=str(p), rna_only_protein=_NO_PROTEIN)
    if p.exists() and name.endswith(".h5mu"):
        mdata = _read_or_fail(mudata.read_h5mu, p, "MuData (.h5mu)")
        if "protein" in mdata.mod or len(mdata.mod) != 1:
            return from_mudata(mdata, batch_key=batch_key, source=str(p))
        (adata,) = mdata.mod.values()  # RNA only: map it like an RNA-only .h5ad
    elif not p.exists() or p.suffix.lower() != ".h5ad":
        return read_cite_seq(p, batch_key=batch_key)
    else:
        adata = _read_or_fail(anndata.read_h5ad, p, "AnnData (.h5ad)")
    if PROTEIN_OBSM_KEY not in adata.obsm:  # RNA only: one placeholder protein column
        adata.obsm[PROTEIN_OBSM_KEY] = pd.DataFrame(
            np.zeros((adata.n_obs, 1), dtype=np.float32),
            index=adata.obs_names,
            columns=[_NO_PROTEIN],
        )
    return from_anndata(adata, batch_key=batch_key, source=str(p))


def is_rna_only(data: CiteSeqData) -> bool:
    """True for a query read without protein counts."""
    return _NO_PROTEIN in data.protein_names


def open_query(
    service: AnalysisService,
    path: str | Path,
    *,
    batch_key: str | None = None,
    name: str = "",
    untrusted: bool = False,
) -> DatasetRef:
    """Read a query (relative paths under the data folder) and register it in the service.

    Files with proteins are registered with their path (reloadable like any dataset);
    RNA-only files without (they are not CITE-seq datasets of their own). ``untrusted``:
    read it first in a limited child process, as :meth:`AnalysisService.open_dataset`.
    """
    p = service.registry.resolve_path(path, service.settings.data_dir)
    if untrusted:
        validate_file(
            p, settings=service.settings, read_kwargs={"batch_key": batch_key}, reader=QUERY_READER
        )
    data = read_query(p, batch_key=batch_key)
    path_ = None if is_rna_only(data) else str(p)
    return service.add_dataset(data, name=name or p.name, path=path_)


def check_query(model: TotalVI, query: CiteSeqData, *, min_gene_fraction: float) -> None:
    """Raise :class:`ModelDataMismatch` (readable) when the query cannot be mapped: no cells,
    no counts, or too few of the model's genes."""
    if query.n_cells == 0:
        raise ModelDataMismatch(f"{query.source or 'the query'} has no cells")
    if query.minified is not None:
        msg = f"{query.source or 'the query'} is minified (no counts); a query needs RNA counts"
        raise ModelDataMismatch(msg)
    check_genes(model, query.var_names, min_gene_fraction=min_gene_fraction)


def check_genes(model: TotalVI, genes: pd.Index, *, min_gene_fraction: float) -> None:
    """Raise :class:`ModelDataMismatch` when ``genes`` hold too few of the model's genes."""
    n_ref = len(model.var_names)
    n_shared = int(pd.Index(model.var_names).isin(pd.Index(genes).astype(str)).sum())
    frac = n_shared / max(n_ref, 1)
    if frac < min_gene_fraction:
        msg = (
            f"The new data shares only {n_shared:,} of the model's {n_ref:,} genes "
            f"({frac:.0%}); at least {min_gene_fraction:.0%} are needed. Use the same gene "
            "identifiers (symbols or Ensembl IDs) as the reference data."
        )
        raise ModelDataMismatch(msg)


# ============================================================================ mapping
def map_query(
    service: AnalysisService,
    pair: Pair,
    query: DatasetRef,
    *,
    max_epochs: int | None = None,
    k: int = DEFAULT_K,
    min_gene_fraction: float | None = None,
    name: str = "",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> QueryMapResult:
    """Map ``query`` onto the model of ``pair`` and register the combined pair.

    Parameters
    ----------
    service
        The analysis service (results cache, datasets, models).
    pair
        The reference: dataset and trained model (left unchanged).
    query
        A registered query dataset (:func:`open_query` or ``service.add_dataset``).
    max_epochs
        Query training epochs (None: ``model.mapping``'s default).
    k
        Neighbours of the label vote.
    min_gene_fraction
        Lowest share of the model's genes the query must have (None: ``model.mapping``'s).
    name
        Name of the combined dataset (default ``"<reference> + <query>"``).
    progress, should_stop
        Job progress ``(fraction, message)`` and cancel poll (training stops at the next
        step; nothing is cached or registered).

    Returns
    -------
    The combined pair and the mapping report.
    """
    from model.mapping import MIN_GENE_FRACTION  # torch: loaded when a mapping runs

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    min_frac = MIN_GENE_FRACTION if min_gene_fraction is None else float(min_gene_fraction)
    if max_epochs is not None and int(max_epochs) < 1:
        raise InvalidSelection(f"max epochs must be at least 1, got {max_epochs}")
    model = service.model(pair)
    query_data = service.dataset(query)
    check_query(model, query_data, min_gene_fraction=min_frac)
    report(0.0, "reference cell types")
    types = service.cell_types(pair).astype(str)
    ref_latent = service.latent(pair)
    params = {
        "query": query.fingerprint,
        "max_epochs": None if max_epochs is None else int(max_epochs),
        "k": int(k),
        "min_gene_fraction": min_frac,
        "labels": types.to_numpy(),
        "seed": service.settings.seed,
        "device": service.settings.device,
        "freeze_normalization": True,
        "batch_collision": "suffix",
    }

    def compute() -> _Mapped:
        return _compute(
            service,
            pair,
            query,
            types,
            ref_latent,
            max_epochs=params["max_epochs"],
            k=params["k"],
            min_gene_fraction=min_frac,
            progress=report,
            should_stop=should_stop,
        )

    key = service.results.key("query_map", pair, params)
    mapped: _Mapped = service.results.cached("query_map", pair, params, compute, progress)
    report(0.98, "registering the combined dataset")
    combined_name = name or f"{pair.dataset.name or 'reference'} + {query.name or 'query'}"
    dataset = service.add_dataset(mapped.combined, name=combined_name)
    model_name = f"{pair.model.name or pair.model.id} + {query.name or 'query'}"
    new_pair = service.add_model(dataset, mapped.model, name=model_name)
    obs = mapped.combined.obs.iloc[mapped.n_reference :]
    counts = obs[LABEL_COLUMN].astype(str).value_counts()
    report(1.0, "done")
    return QueryMapResult(
        pair=new_pair,
        reference=pair,
        query=query,
        n_reference=mapped.n_reference,
        n_query=len(obs),
        info=mapped.info,
        label_counts={str(i): int(v) for i, v in counts.items()},
        mean_confidence=float(obs[CONFIDENCE_COLUMN].mean()) if len(obs) else float("nan"),
        cache_key=key,
    )


def _compute(
    service: AnalysisService,
    pair: Pair,
    query: DatasetRef,
    types: pd.Series,
    ref_latent: np.ndarray,
    *,
    max_epochs: int | None,
    k: int,
    min_gene_fraction: float,
    progress: ProgressFn,
    should_stop: Callable[[], bool] | None,
) -> _Mapped:
    from model.mapping import transfer_labels  # torch

    model = service.model(pair)
    ref_data = service.dataset(pair)
    query_data = service.dataset(query)

    def on_epoch(p: Any) -> None:
        progress(
            0.02 + 0.88 * p.fraction,
            f"mapping: epoch {p.epoch}/{p.max_epochs}  ELBO train {p.elbo_train:.1f}",
        )

    progress(0.02, "aligning the query to the model's genes and proteins")
    kwargs: dict[str, Any] = {}
    if service.settings.device is not None:
        kwargs["device"] = service.settings.device
    t0 = time.perf_counter()
    try:
        mapped = model.map_query(
            query_data,
            max_epochs=max_epochs,
            min_gene_fraction=min_gene_fraction,
            progress=on_epoch,
            cancel=should_stop,
            seed=service.settings.seed,
            **kwargs,
        )
    except QueryDataError as err:
        raise ModelDataMismatch(str(err)) from None
    progress(0.92, "transferring labels")
    q_latent = mapped.get_latent_representation(mapped.data, seed=service.settings.seed)
    q_labels, q_conf = transfer_labels(np.array(ref_latent), types.to_numpy(), q_latent, k=k)
    progress(0.95, "building the combined dataset")
    combined = combine(model, ref_data, mapped, types.to_numpy(), q_labels, q_conf)
    _attach(mapped, combined, reference=model, ref_data=ref_data)
    info = asdict(mapped.query_info)
    info["seconds"] = time.perf_counter() - t0
    return _Mapped(model=mapped, combined=combined, info=info, n_reference=ref_data.n_cells)


# ========================================================================== combining
def combine(
    reference: TotalVI,
    ref_data: CiteSeqData,
    mapped: TotalVI,
    ref_labels: np.ndarray,
    query_labels: np.ndarray,
    query_confidence: np.ndarray,
) -> CiteSeqData:
    """Reference cells followed by the mapped query's cells, in the mapped model's layout.

    Parameters
    ----------
    reference
        The reference model (puts the reference data in its gene and batch order).
    ref_data
        The reference dataset.
    mapped
        The model :meth:`~model.totalvi.TotalVI.map_query` returned (its ``data`` is the
        aligned query).
    ref_labels, query_labels, query_confidence
        Cell type per reference cell; transferred label and confidence per query cell.

    Returns
    -------
    The combined :class:`~model.data.CiteSeqData` (labels = :data:`LABEL_COLUMN`).
    """
    ref = reference.aligned(ref_data)  # model's genes, proteins and batch codes
    qry = mapped.data
    if qry is None:
        raise ModelDataMismatch("the mapped model has no query data attached")
    n_ref, n_q = ref.n_cells, qry.n_cells
    batch = np.concatenate([ref.batch, qry.batch])
    cats = list(mapped.batch_categories)
    batch_col = ref_data.batch_key or "batch"
    skip = {batch_col, DATASET_COLUMN, LABEL_COLUMN, CONFIDENCE_COLUMN}
    common = [c for c in ref.obs.columns if c in qry.obs.columns and c not in skip]
    q_obs = qry.obs[common].copy()
    q_obs.index = _unique_names(pd.Index(qry.obs_names).astype(str), set(ref.obs_names))
    obs = pd.concat([ref.obs[common], q_obs])
    obs[batch_col] = pd.Categorical.from_codes(batch, categories=cats)
    obs[DATASET_COLUMN] = pd.Categorical.from_codes(
        np.repeat([0, 1], [n_ref, n_q]), categories=[REFERENCE, QUERY]
    )
    labels = np.concatenate([np.asarray(ref_labels, dtype=str), np.asarray(query_labels, str)])
    ref_order = list(dict.fromkeys(np.asarray(ref_labels, dtype=str)))
    label_cats = ref_order + sorted(set(labels) - set(ref_order))
    obs[LABEL_COLUMN] = pd.Categorical(labels, categories=label_cats)
    obs[CONFIDENCE_COLUMN] = np.concatenate(
        [np.ones(n_ref), np.asarray(query_confidence, dtype=np.float64)]
    ).astype(np.float32)
    return CiteSeqData(
        rna=sp.vstack([ref.rna, qry.rna], format="csr"),
        protein=np.concatenate([ref.protein, qry.protein]),
        obs=obs,
        var_names=mapped.var_names,
        protein_names=mapped.protein_names,
        batch=batch,
        batch_categories=cats,
        batch_key=batch_col,
        labels=obs[LABEL_COLUMN].cat.codes.to_numpy(),
        label_categories=label_cats,
        labels_key=LABEL_COLUMN,
        protein_batch_mask=mapped.protein_batch_mask,
        source=f"{ref_data.source or 'reference'} + {qry.source or 'query'}",
        # the reference's original symbols (names it made unique) label the combined data
        gene_symbols=ref.gene_symbols if ref.var_names.equals(mapped.var_names) else None,
        protein_symbols=ref.protein_symbols
        if ref.protein_names.equals(mapped.protein_names)
        else None,
    )


def _attach(mapped: TotalVI, combined: CiteSeqData, *, reference: TotalVI, ref_data: Any) -> None:
    """Give the mapped model the combined data and its split in combined positions: the
    reference's own split (when it was trained on exactly this dataset) and the query's."""
    n_ref = ref_data.n_cells
    own = reference.data_fingerprint == ref_data.fingerprint()
    parts = []
    for ref_idx, q_idx in (
        (reference.train_indices, mapped.train_indices),
        (reference.validation_indices, mapped.validation_indices),
    ):
        ref_part = np.asarray(ref_idx if own and ref_idx is not None else [], dtype=np.int64)
        q_part = np.asarray([] if q_idx is None else q_idx, dtype=np.int64) + n_ref
        parts.append(np.concatenate([ref_part, q_part]))
    mapped.train_indices, mapped.validation_indices = parts
    mapped.data = combined
    mapped.data_fingerprint = combined.fingerprint()


def _unique_names(names: pd.Index, taken: set[str]) -> pd.Index:
    """``names`` with ``-query`` appended where a name is already taken."""
    if not taken.intersection(names):
        return names
    out = []
    for n in names:
        new, i = n, 1
        while new in taken:
            new = f"{n}-query" if i == 1 else f"{n}-query{i}"
            i += 1
        taken.add(new)
        out.append(new)
    return pd.Index(out)
