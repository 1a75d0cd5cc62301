"""scArches-style query mapping onto a trained TotalVI, and kNN label transfer.

:func:`map_query` follows scvi-tools' ``TOTALVI.load_query_data`` (architecture surgery,
Lotfollahi et al. 2022): the query's batches become new batch categories; every weight that
reads the batch one-hot (encoder and decoder layers, the per-batch background prior,
efficiency, dispersions and library prior) gets new columns, initialised as a freshly built
model initialises them; then only those new columns are trained, on the query cells alone.

Differences from scvi-tools, chosen so that the reference is reproduced exactly:

- Old columns and every other reference weight are frozen by gradient masks and Adam runs
  without weight decay, so they stay bit-identical (scvi-tools leaves the background prior
  of old batches trainable and only zero-gradients the rest).
- With ``freeze_normalization=True`` (default) BatchNorm layers use the reference's running
  statistics during training as well (scvi-tools sets momentum 0 but normalises with
  minibatch statistics, and leaves decoder BatchNorm trainable). ``False`` trains the
  BatchNorm affine parameters and statistics too; the reference latent then changes.
- A reference trained with a single batch has no batch columns; the mapped model gets one
  column per batch, the reference batch's column fixed at zero, so reference cells decode
  exactly as before.
- No adversarial batch classifier is used (scvi-tools' tutorial turns it off too).

Query genes are reordered to the reference's; missing genes are filled with zeros (refused
below ``min_gene_fraction``). Proteins missing from the query, or RNA-only queries, are filled
with zeros and masked out of the likelihood for the new batches, so the mapped model imputes
them from the latent space (``TotalVI.impute_missing_proteins`` or
``get_normalized_expression(transform_batch=<reference batch>)``).

Query batch names that equal a reference batch name are treated as *new* batches and renamed
with the suffix ``"-query"`` (``batch_collision="suffix"``), or refused
(``batch_collision="error"``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from model.config import TrainConfig
from model.data import CiteSeqData, compute_protein_batch_mask, from_anndata
from model.errors import QueryDataError, QueryGeneMismatchError
from model.module import TotalVAE
from model.nn import FCLayers
from model.priors import library_size_prior, protein_background_prior
from model.streams import seeded
from model.train import (
    DeviceData,
    TrainProgress,
    max_epochs_heuristic,
    resolve_device,
    split_indices,
    train_module,
)

if TYPE_CHECKING:
    import anndata

    from model.totalvi import TotalVI

log = logging.getLogger(__name__)

#: Default lowest share of the reference genes a query must measure.
MIN_GENE_FRACTION = 0.5
#: Suffix given to query batch names that collide with reference batch names.
QUERY_SUFFIX = "-query"
#: Default epoch cap for query training (scvi-tools' scArches tutorial uses 200).
DEFAULT_QUERY_EPOCHS = 200


@dataclass
class QueryInfo:
    """What :func:`map_query` did; kept as ``TotalVI.query_info`` on the mapped model.

    Attributes
    ----------
    n_genes_missing, missing_genes
        Reference genes absent from the query (filled with zero counts).
    n_genes_extra
        Query genes the reference does not know (dropped).
    n_proteins_missing, missing_proteins
        Reference proteins absent from the query (zero counts, masked).
    reference_batches, query_batches
        Batch names before mapping and the new ones appended for the query.
    renamed_batches
        Original query batch name -> its new name, for names that collided.
    n_trainable
        Number of scalar weights the query training could change.
    epochs, seconds
        Length of the query training.
    """

    n_genes_missing: int
    missing_genes: list[str]
    n_genes_extra: int
    n_proteins_missing: int
    missing_proteins: list[str]
    reference_batches: list[str]
    query_batches: list[str]
    renamed_batches: dict[str, str] = field(default_factory=dict)
    n_trainable: int = 0
    epochs: int = 0
    seconds: float = 0.0


# ======================================================================= alignment
def align_query(
    query: CiteSeqData | anndata.AnnData,
    *,
    var_names: Sequence[str] | pd.Index,
    protein_names: Sequence[str] | pd.Index,
    batch_key: str | None = None,
    protein_obsm_key: str = "protein_expression",
    min_gene_fraction: float = MIN_GENE_FRACTION,
) -> tuple[CiteSeqData, dict[str, Any]]:
    """Put a query in the reference's gene and protein order, filling gaps with zeros.

    Parameters
    ----------
    query
        Query cells; an AnnData without ``obsm[protein_obsm_key]`` is read as RNA-only.
    var_names, protein_names
        The reference's features, in model order.
    batch_key, protein_obsm_key
        Only for AnnData input (see :func:`model.data.from_anndata`).
    min_gene_fraction
        Refuse (:class:`QueryGeneMismatchError`) when fewer reference genes are present.

    Returns
    -------
    The aligned data (query batches unchanged, protein mask recomputed with missing proteins
    masked) and a dict with ``missing_genes``, ``n_genes_extra`` and ``missing_proteins``.
    """
    data = _as_cite_seq(query, batch_key=batch_key, protein_obsm_key=protein_obsm_key)
    if data.minified is not None:
        msg = f"{data._where()}: minified data has no counts; a query needs its RNA counts"
        raise QueryDataError(msg)
    if data.n_cells == 0:
        raise QueryDataError(f"{data._where()}: the query has no cells")
    want_g = pd.Index(var_names).astype(str)
    want_p = pd.Index(protein_names).astype(str)
    gi = data.var_names.get_indexer(want_g)
    present = gi >= 0
    n_present = int(present.sum())
    frac = n_present / max(len(want_g), 1)
    if frac < min_gene_fraction:
        msg = (
            f"{data._where()}: only {n_present} of the reference's {len(want_g)} genes "
            f"({frac:.0%}) are in the query ({data.n_genes} genes); at least "
            f"{min_gene_fraction:.0%} are needed. Use the same gene identifiers (symbols vs "
            "Ensembl IDs) as the reference"
        )
        raise QueryGeneMismatchError(msg)
    missing_genes = [str(g) for g in want_g[~present]]
    n_extra = int(data.n_genes - n_present)
    rna = _select_columns(data.rna, gi)
    pi = data.protein_names.get_indexer(want_p) if data.n_proteins else np.full(len(want_p), -1)
    missing_proteins = [str(p) for p in want_p[pi < 0]]
    if data.n_proteins and missing_proteins:
        log.info(
            "query lacks %d of the reference's %d proteins (masked, imputed): %s",
            len(missing_proteins),
            len(want_p),
            missing_proteins[:10],
        )
    protein = np.zeros((data.n_cells, len(want_p)), dtype=np.float32)
    protein[:, pi >= 0] = data.protein[:, pi[pi >= 0]]
    mask = compute_protein_batch_mask(protein, data.batch, data.n_batch)
    if missing_proteins:  # absent means unmeasured, even for batches without cells
        mask = np.ones((data.n_batch, len(want_p)), dtype=bool) if mask is None else mask
        mask[:, pi < 0] = False
    aligned = dataclasses.replace(  # same cells, batches and labels; no symbols or notices
        data,
        rna=rna,
        protein=protein,
        var_names=want_g,
        protein_names=want_p,
        protein_batch_mask=mask,
        gene_symbols=None,
        protein_symbols=None,
        notices=(),
    )
    report = {
        "missing_genes": missing_genes,
        "n_genes_extra": n_extra,
        "missing_proteins": missing_proteins,
    }
    return aligned, report


def _as_cite_seq(
    query: CiteSeqData | anndata.AnnData, *, batch_key: str | None, protein_obsm_key: str
) -> CiteSeqData:
    if isinstance(query, CiteSeqData):
        return query
    adata = query
    if protein_obsm_key not in adata.obsm:  # RNA only: one dummy all-zero protein column
        adata = adata.copy()
        adata.obsm[protein_obsm_key] = pd.DataFrame(
            np.zeros((adata.n_obs, 1), dtype=np.float32),
            index=adata.obs_names,
            columns=["__no_protein__"],
        )
    return from_anndata(
        adata, batch_key=batch_key, protein_obsm_key=protein_obsm_key, source="query"
    )


def _select_columns(rna: sp.csr_matrix, gi: np.ndarray) -> sp.csr_matrix:
    """Columns ``gi`` of ``rna`` (``-1``: an all-zero column)."""
    keep = np.flatnonzero(gi >= 0)
    sel = sp.csr_matrix(
        (np.ones(keep.size, dtype=np.float32), (gi[keep], keep)), shape=(rna.shape[1], gi.size)
    )
    out = sp.csr_matrix(rna @ sel, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _query_batches(
    data: CiteSeqData, reference: Sequence[str], on_collision: Literal["suffix", "error"]
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Codes 0..k-1 over the query batches that have cells, their new names, renames."""
    used = np.unique(data.batch)
    local = np.searchsorted(used, data.batch)
    taken = set(reference)
    names: list[str] = []
    renamed: dict[str, str] = {}
    for code in used:
        name = data.batch_categories[int(code)]
        if name in taken:
            if on_collision == "error":
                msg = (
                    f"{data._where()}: query batch {name!r} has the name of a reference batch "
                    f"(reference batches: {list(reference)[:10]}); rename it, or pass "
                    "batch_collision='suffix' to map it as a new batch"
                )
                raise QueryDataError(msg)
            new, i = name + QUERY_SUFFIX, 2
            while new in taken:
                new, i = f"{name}{QUERY_SUFFIX}{i}", i + 1
            renamed[name] = new
            name = new
        taken.add(name)
        names.append(name)
    return local.astype(np.int64), names, renamed


# ====================================================================== surgery
def extend_module(
    reference: TotalVAE,
    n_new: int,
    *,
    protein_batch_mask: np.ndarray | None,
    prior_mean: np.ndarray | None = None,
    prior_scale: np.ndarray | None = None,
    library_log_means: np.ndarray | None = None,
    library_log_vars: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[TotalVAE, dict[str, torch.Tensor]]:
    """A copy of ``reference`` with ``n_new`` batch categories appended.

    Parameters
    ----------
    reference
        The trained module (left unchanged).
    n_new
        Number of query batches.
    protein_batch_mask
        ``(n_ref + n_new, P)`` measured proteins per batch, or None (all measured).
    prior_mean, prior_scale
        ``(P, n_new)`` background prior for the new batches (None: default initialisation).
    library_log_means, library_log_vars
        ``(1, n_new)``; needed only when the library size is latent.
    seed
        Seeds the fresh initialisation of the new columns.

    Returns
    -------
    The new module (on the CPU) and, per parameter name, a bool mask of its new (trainable)
    entries; parameters without new entries are absent.
    """
    cfg = reference.config
    n_ref = cfg.n_batch
    n_tot = n_ref + n_new
    new_cfg = dataclasses.replace(cfg, n_batch=n_tot)
    P = cfg.n_proteins

    def padded(new: np.ndarray | None, fill: float, rows: int) -> np.ndarray | None:
        if new is None:
            return None
        out = np.full((rows, n_tot), fill, dtype=np.float32)
        out[:, n_ref:] = np.asarray(new, dtype=np.float32).reshape(rows, n_new)
        return out

    kwargs: dict[str, Any] = {}
    if prior_mean is not None and prior_scale is not None:
        kwargs["protein_background_prior_mean"] = padded(prior_mean, 0.0, P)
        kwargs["protein_background_prior_scale"] = padded(prior_scale, 1.0, P)
    if not cfg.use_observed_lib_size:
        kwargs["library_log_means"] = padded(library_log_means, 0.0, 1)
        kwargs["library_log_vars"] = padded(library_log_vars, 1.0, 1)
    with seeded(seed):  # the initial weights: a stream of their own
        module = TotalVAE(new_cfg, protein_batch_mask=protein_batch_mask, **kwargs)

    one_hot_weights = _one_hot_weight_names(module)
    ref_state = {k: v.detach().cpu() for k, v in reference.state_dict().items()}
    new_state = module.state_dict()
    trainable: dict[str, torch.Tensor] = {}
    param_names = {name for name, _ in module.named_parameters()}
    for key, new in new_state.items():
        old = ref_state.get(key)
        if old is None:
            msg = f"reference module has no {key!r}"
            raise RuntimeError(msg)
        if old.shape == new.shape:
            new.copy_(old)
            continue
        if old.dim() != new.dim() or old.shape[:-1] != new.shape[:-1]:
            msg = f"{key}: cannot extend shape {tuple(old.shape)} to {tuple(new.shape)}"
            raise RuntimeError(msg)
        w_old = old.shape[-1]
        new[..., :w_old] = old
        first_new = w_old
        if key in one_hot_weights and n_ref == 1:
            # a 1-batch reference has no batch column: its batch's column must be zero
            new[..., w_old] = 0.0
            first_new = w_old + 1
        if key in param_names:
            m = torch.zeros(new.shape, dtype=torch.bool)
            m[..., first_new:] = True
            trainable[key] = m
    return module, trainable


def _one_hot_weight_names(module: nn.Module) -> set[str]:
    """Names of the Linear weights that read batch one-hots (inside :class:`FCLayers`)."""
    names: set[str] = set()
    for mod_name, mod in module.named_modules():
        if isinstance(mod, FCLayers) and any(n > 1 for n in mod.n_cat_list):
            for i in range(len(mod.fc_layers)):
                if i == 0 or mod.inject_covariates:
                    names.add(f"{mod_name}.fc_layers.Layer {i}.0.weight")
    return names


class _FrozenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that stays in eval mode (running statistics) whatever ``train()`` says."""

    def train(self, mode: bool = True) -> _FrozenBatchNorm1d:
        """Ignore ``mode``: always evaluate with the stored statistics."""
        return super().train(False)


@contextmanager
def frozen_reference(
    module: TotalVAE, trainable: dict[str, torch.Tensor], *, freeze_normalization: bool = True
) -> Iterator[int]:
    """Within the block only the ``trainable`` entries (and, if not frozen, BatchNorm) learn.

    Gradients of frozen entries are zeroed by hooks (with ``torch.where``, so a NaN cannot
    leak), fully frozen parameters get ``requires_grad=False`` and frozen BatchNorm layers
    use their running statistics. Everything is restored on exit. Yields the number of
    trainable scalars.
    """
    params = dict(module.named_parameters())
    bn_modules = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    bn_params = {id(p) for m in bn_modules for p in m.parameters(recurse=False)}
    hooks = []
    old_flags = {name: p.requires_grad for name, p in params.items()}
    n_trainable = 0
    try:
        for name, p in params.items():
            if name in trainable:
                keep = trainable[name].to(p.device)
                hooks.append(p.register_hook(_masked_grad(keep)))
                p.requires_grad_(True)
                n_trainable += int(keep.sum())
            elif not freeze_normalization and id(p) in bn_params:
                p.requires_grad_(True)
                n_trainable += p.numel()
            else:
                p.requires_grad_(False)
        if freeze_normalization:
            for m in bn_modules:
                m.__class__ = _FrozenBatchNorm1d
                m.train(False)
        yield n_trainable
    finally:
        for h in hooks:
            h.remove()
        for name, p in params.items():
            p.requires_grad_(old_flags[name])
        for m in bn_modules:
            if type(m) is _FrozenBatchNorm1d:
                m.__class__ = nn.BatchNorm1d


def _masked_grad(keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))

    return hook


# ====================================================================== mapping
def map_query(
    reference: TotalVI,
    query: CiteSeqData | anndata.AnnData,
    *,
    max_epochs: int | None = None,
    freeze_normalization: bool = True,
    batch_collision: Literal["suffix", "error"] = "suffix",
    min_gene_fraction: float = MIN_GENE_FRACTION,
    batch_key: str | None = None,
    protein_obsm_key: str = "protein_expression",
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    seed: int = 0,
    **train_kwargs: Any,
) -> TotalVI:
    """Map query cells onto a trained reference (scArches) and return the mapped model.

    Parameters
    ----------
    reference
        A trained :class:`~model.totalvi.TotalVI` (ours or a loaded scvi-tools checkpoint);
        it is not modified.
    query
        Query cells: all, some or none of the reference's proteins (RNA-only: no protein
        columns, or an AnnData without ``obsm[protein_obsm_key]``).
    max_epochs
        Query training epochs; None: ``min(200, scvi-tools' heuristic)``.
    freeze_normalization
        Keep BatchNorm weights and statistics of the reference (see the module docstring).
    batch_collision
        Query batch named like a reference batch: ``"suffix"`` maps it as a new batch named
        ``name + "-query"``; ``"error"`` raises :class:`QueryDataError`.
    min_gene_fraction
        Lowest share of reference genes the query must measure.
    batch_key, protein_obsm_key
        Only for AnnData input.
    progress, cancel
        Called after every epoch / polled every step (raise ``TrainingCancelled``).
    seed
        Seeds the new columns' initialisation and the training.
    **train_kwargs
        Further :class:`~model.config.TrainConfig` fields (``lr``, ``batch_size``,
        ``n_steps_kl_warmup``…). ``weight_decay`` is always 0 (it would move frozen weights).

    Returns
    -------
    A new TotalVI with the reference batches plus the query's, the aligned query attached as
    ``data`` and the mapping report in ``query_info``.
    """
    t0 = time.perf_counter()
    ref_cfg = reference.config
    data, report = align_query(
        query,
        var_names=reference.var_names,
        protein_names=reference.protein_names,
        batch_key=batch_key,
        protein_obsm_key=protein_obsm_key,
        min_gene_fraction=min_gene_fraction,
    )
    missing_genes = report["missing_genes"]
    if missing_genes:
        msg = (
            f"query lacks {len(missing_genes)} of the reference's {ref_cfg.n_genes} genes "
            f"(filled with zeros), e.g. {missing_genes[:5]}"
        )
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    local, new_names, renamed = _query_batches(data, reference.batch_categories, batch_collision)
    if renamed:
        log.info("query batches renamed (names taken by the reference): %s", renamed)
    n_ref, n_new = ref_cfg.n_batch, len(new_names)

    # query-batch-local quantities (mask rows, empirical prior, library prior)
    q_mask = compute_protein_batch_mask(data.protein, local, n_new)
    q_mask = np.ones((n_new, ref_cfg.n_proteins), bool) if q_mask is None else q_mask
    if report["missing_proteins"]:
        q_mask[:, data.protein_names.get_indexer(report["missing_proteins"])] = False
    ref_mask = reference.protein_batch_mask
    ref_mask = np.ones((n_ref, ref_cfg.n_proteins), bool) if ref_mask is None else ref_mask
    mask = np.concatenate([np.asarray(ref_mask, dtype=bool), q_mask])
    mask_or_none = None if mask.all() else mask
    prior_mean = prior_scale = None
    if _uses_empirical_prior(reference):
        prior_mean, prior_scale = protein_background_prior(
            data.protein, local, n_new, protein_batch_mask=q_mask, seed=seed
        )
    lib_means = lib_vars = None
    if not ref_cfg.use_observed_lib_size:
        lib_means, lib_vars = library_size_prior(data.rna, local, n_new)
    module, trainable = extend_module(
        reference.module,
        n_new,
        protein_batch_mask=mask_or_none,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        library_log_means=lib_means,
        library_log_vars=lib_vars,
        seed=seed,
    )
    categories = [*reference.batch_categories, *new_names]
    data = data.with_batches(local + n_ref, categories, key=data.batch_key or "batch")
    data.protein_batch_mask = mask_or_none

    epochs = max_epochs or min(DEFAULT_QUERY_EPOCHS, max_epochs_heuristic(data.n_cells))
    overrides = {
        "max_epochs": epochs,
        "seed": seed,
        **train_kwargs,
        "weight_decay": 0.0,
        "adversarial_classifier": False,
    }
    cfg = TrainConfig(**{**TrainConfig().to_dict(), **overrides})
    device = resolve_device(cfg.device)
    train_idx, val_idx = split_indices(
        data.n_cells, train_size=cfg.train_size, seed=cfg.seed, batch_size=cfg.batch_size
    )
    dev_data = DeviceData.for_module(module, data, device, cfg.max_dense_bytes)
    with frozen_reference(module, trainable, freeze_normalization=freeze_normalization) as n_tr:
        result = train_module(
            module,
            dev_data,
            train_idx,
            val_idx,
            cfg,
            n_cells_total=data.n_cells,
            use_adversarial=False,
            progress=progress,
            should_stop=cancel,
        )
    module.eval()

    model = type(reference).from_module(  # the reference's class: no import of model.totalvi
        module,
        var_names=list(reference.var_names),
        protein_names=list(reference.protein_names),
        batch_categories=categories,
        protein_batch_mask=mask_or_none,
    )
    model.to(device)
    model.data = data
    model.data_fingerprint = data.fingerprint()
    model.train_indices, model.validation_indices = train_idx, val_idx
    model.history = result.history
    model.train_config = cfg
    model.is_trained = True
    model.source = f"{reference.source} + query"
    model.setup_args = dict(reference.setup_args)
    model.query_info = QueryInfo(
        n_genes_missing=len(missing_genes),
        missing_genes=missing_genes,
        n_genes_extra=report["n_genes_extra"],
        n_proteins_missing=len(report["missing_proteins"]),
        missing_proteins=report["missing_proteins"],
        reference_batches=list(reference.batch_categories),
        query_batches=new_names,
        renamed_batches=renamed,
        n_trainable=n_tr,
        epochs=result.epochs,
        seconds=time.perf_counter() - t0,
    )
    return model


def _uses_empirical_prior(model: TotalVI) -> bool:
    setting = model.setup_args.get("empirical_protein_background_prior")
    if isinstance(setting, bool):
        return setting
    return model.config.n_proteins > 10  # scvi-tools' default rule


# =================================================================== evaluation
def median_protein_r(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Median over the proteins (columns) of the Pearson r of ``log1p`` predicted and
    ``log1p`` measured counts: how well a mapped model predicts proteins it did not see."""
    rs = [
        np.corrcoef(np.log1p(predicted[:, j]), np.log1p(measured[:, j]))[0, 1]
        for j in range(measured.shape[1])
    ]
    return float(np.median(rs))


def protein_scenarios(query: CiteSeqData) -> dict[str, tuple[CiteSeqData, list[int]]]:
    """The query with all (``"all"``), every other (``"half"``) and none (``"none"``, RNA
    only) of its proteins, each with the positions of the proteins to predict: the hidden
    ones (all of them for ``"all"``, where they are also the input)."""
    every = list(range(query.n_proteins))
    hidden_half = every[::2]
    return {
        "all": (query, every),
        "half": (query.select_proteins([j for j in every if j not in hidden_half]), hidden_half),
        "none": (query.select_proteins([]), every),
    }


# =============================================================== label transfer
def transfer_labels(
    reference_latent: np.ndarray | torch.Tensor,
    reference_labels: Sequence[Any] | np.ndarray | pd.Series,
    query_latent: np.ndarray | torch.Tensor,
    *,
    k: int = 15,
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of the ``k`` nearest reference cells (Euclidean, in latent space).

    Parameters
    ----------
    reference_latent, query_latent
        ``(n_ref, d)`` and ``(n_query, d)`` latent coordinates.
    reference_labels
        One label per reference cell (any hashable values).
    k
        Number of neighbours (capped at ``n_ref``).
    batch_size
        Query cells per distance block.

    Returns
    -------
    ``(labels, confidence)``: the voted label per query cell (ties go to the label of the
    nearer neighbours) and the fraction of the ``k`` neighbours that carry it.
    """
    ref = torch.as_tensor(np.asarray(reference_latent, dtype=np.float32))
    qry = torch.as_tensor(np.asarray(query_latent, dtype=np.float32))
    labels_arr = np.asarray(reference_labels)
    if ref.ndim != 2 or qry.ndim != 2 or ref.shape[1] != qry.shape[1]:
        msg = f"latents must be 2-D with equal width, got {tuple(ref.shape)}, {tuple(qry.shape)}"
        raise ValueError(msg)
    if labels_arr.shape != (ref.shape[0],):
        msg = f"{labels_arr.size} reference labels for {ref.shape[0]} reference cells"
        raise ValueError(msg)
    if ref.shape[0] == 0:
        raise ValueError("no reference cells")
    classes, codes = np.unique(labels_arr, return_inverse=True)
    codes_t = torch.as_tensor(codes.ravel(), dtype=torch.long)
    k = max(1, min(int(k), ref.shape[0]))
    rank_w = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
    rank_w = 0.5 * rank_w / rank_w.sum()  # < 1 in total: only breaks ties
    out_codes, out_conf = [], []
    for start in range(0, qry.shape[0], batch_size):
        block = qry[start : start + batch_size]
        nn_idx = torch.cdist(block, ref).topk(k, dim=1, largest=False).indices
        nn_codes = codes_t[nn_idx]
        votes = torch.zeros(block.shape[0], len(classes), dtype=torch.float64)
        votes.scatter_add_(1, nn_codes, torch.ones_like(nn_codes, dtype=torch.float64))
        counts = votes.clone()
        votes.scatter_add_(1, nn_codes, rank_w.expand(block.shape[0], -1).contiguous())
        best = votes.argmax(1)
        out_codes.append(best.numpy())
        out_conf.append((counts.gather(1, best[:, None]).squeeze(1) / k).numpy())
    if not out_codes:
        return classes[:0], np.zeros(0)
    return classes[np.concatenate(out_codes)], np.concatenate(out_conf)
