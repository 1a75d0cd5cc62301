"""User-facing TotalVI model: build from data, train, map queries, save and load.

This is the façade over :class:`~model.module.TotalVAE` (like scvi-tools' ``TOTALVI`` over
``TOTALVAE``). The posterior queries (:mod:`model.posterior`) run in minibatches over any
:class:`~model.data.CiteSeqData` whose genes and proteins can be aligned to the model, so
large datasets fit in memory. Checkpoints are read into a
:class:`~model.checkpoint.SavedModel` (ours: :mod:`model.checkpoint`, scvi-tools':
:mod:`model.scvi_compat`) that :meth:`TotalVI.load` wraps.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from model.checkpoint import (
    CHECKPOINT_FORMAT,
    SavedModel,
    from_payload,
    read_payload,
    write_checkpoint,
)
from model.config import TotalVIConfig, TrainConfig
from model.correlation import FeatureCorrelation
from model.data import CiteSeqData
from model.gene_columns import GeneColumns
from model.mapping import QueryInfo, map_query
from model.model_folder import locate_model
from model.module import TotalVAE
from model.posterior import Likelihoods, PosteriorQueries
from model.priors import library_size_prior, protein_background_prior
from model.scvi_compat import from_scvi_tools_checkpoint, read_scvi_tools_checkpoint
from model.streams import seeded
from model.train import (
    DeviceData,
    TrainProgress,
    TrainResult,
    resolve_device,
    split_indices,
    train_module,
)

if TYPE_CHECKING:
    import anndata

__all__ = ["TotalVI"]


class TotalVI(PosteriorQueries, Likelihoods, FeatureCorrelation, GeneColumns):
    """TotalVI for CITE-seq (Gayoso et al. 2021) in plain PyTorch.

    Parameters
    ----------
    data
        Training data; fixes the genes, proteins and batch categories of the model.
    n_latent, gene_dispersion, protein_dispersion, gene_likelihood, latent_distribution
        As in scvi-tools' ``TOTALVI``.
    empirical_protein_background_prior
        Initialise the background prior from the data; ``None`` means "if > 10 proteins".
    override_missing_proteins
        Treat all-zero proteins of a batch as measured (no masking, no adversarial training).
    seed
        Seeds weight initialisation and the prior fit.
    **module_kwargs
        Further :class:`~model.config.TotalVIConfig` fields (``n_hidden``, ``n_layers_encoder``…).
    """

    def __init__(
        self,
        data: CiteSeqData,
        *,
        n_latent: int = 20,
        gene_dispersion: str = "gene",
        protein_dispersion: str = "protein",
        gene_likelihood: str = "nb",
        latent_distribution: str = "normal",
        empirical_protein_background_prior: bool | None = None,
        override_missing_proteins: bool = False,
        seed: int = 0,
        **module_kwargs: Any,
    ) -> None:
        n_labels = len(data.label_categories) if data.label_categories else 1
        config = TotalVIConfig(
            n_genes=data.n_genes,
            n_proteins=data.n_proteins,
            n_batch=data.n_batch,
            n_labels=n_labels,
            n_latent=n_latent,
            gene_dispersion=gene_dispersion,  # type: ignore[arg-type]
            protein_dispersion=protein_dispersion,  # type: ignore[arg-type]
            gene_likelihood=gene_likelihood,  # type: ignore[arg-type]
            latent_distribution=latent_distribution,  # type: ignore[arg-type]
            **module_kwargs,
        )
        mask = None if override_missing_proteins else data.protein_batch_mask
        use_prior = (
            data.n_proteins > 10
            if empirical_protein_background_prior is None
            else empirical_protein_background_prior
        )
        prior_mean = prior_scale = None
        if use_prior:
            prior_mean, prior_scale = protein_background_prior(
                data.protein, data.batch, data.n_batch, protein_batch_mask=mask, seed=seed
            )
        lib_means = lib_vars = None
        if not config.use_observed_lib_size:
            lib_means, lib_vars = library_size_prior(data.rna, data.batch, data.n_batch)
        with seeded(seed):  # the initial weights: a stream of their own
            module = TotalVAE(
                config,
                protein_batch_mask=mask,
                protein_background_prior_mean=prior_mean,
                protein_background_prior_scale=prior_scale,
                library_log_means=lib_means,
                library_log_vars=lib_vars,
            )
        self._init(
            module,
            var_names=list(data.var_names),
            protein_names=list(data.protein_names),
            batch_categories=list(data.batch_categories),
            protein_batch_mask=mask,
        )
        self.data: CiteSeqData | None = data
        self.setup_args = {
            "batch_key": data.batch_key,
            "labels_key": data.labels_key,
            "empirical_protein_background_prior": bool(use_prior),
            "override_missing_proteins": override_missing_proteins,
            "seed": seed,
        }
        self.data_fingerprint = data.fingerprint()

    def _init(
        self,
        module: TotalVAE,
        *,
        var_names: list[str],
        protein_names: list[str],
        batch_categories: list[str],
        protein_batch_mask: np.ndarray | None,
    ) -> None:
        self.module = module
        self.config: TotalVIConfig = module.config
        self.var_names = pd.Index(var_names)
        self.protein_names = pd.Index(protein_names)
        self.batch_categories = list(batch_categories)
        self.protein_batch_mask = protein_batch_mask
        self.train_indices: np.ndarray | None = None
        self.validation_indices: np.ndarray | None = None
        self.history: pd.DataFrame = pd.DataFrame()
        self.train_config: TrainConfig | None = None
        self.is_trained = False
        self.source = CHECKPOINT_FORMAT
        self.setup_args: dict[str, Any] = {}
        self.data_fingerprint = ""
        self.data = None
        self.query_info: QueryInfo | None = None  # set by map_query on a mapped model
        self.device = resolve_device(None)
        self.module.to(self.device).eval()

    @classmethod
    def from_module(
        cls,
        module: TotalVAE,
        *,
        var_names: Sequence[str],
        protein_names: Sequence[str],
        batch_categories: Sequence[str],
        protein_batch_mask: np.ndarray | None = None,
    ) -> TotalVI:
        """Wrap an existing module (as the checkpoint loaders and query mapping do)."""
        obj = cls.__new__(cls)
        obj._init(
            module,
            var_names=list(var_names),
            protein_names=list(protein_names),
            batch_categories=list(batch_categories),
            protein_batch_mask=protein_batch_mask,
        )
        return obj

    def __repr__(self) -> str:
        c = self.config
        state = "trained" if self.is_trained else "untrained"
        return (
            f"TotalVI({state}, {c.n_genes} genes, {c.n_proteins} proteins, {c.n_batch} batches,"
            f" n_latent={c.n_latent}, source={self.source})"
        )

    # ------------------------------------------------------------------ training
    @property
    def use_adversarial_classifier(self) -> bool:
        """True when some protein is missing in some batch (spec §1)."""
        return self.protein_batch_mask is not None and not bool(np.all(self.protein_batch_mask))

    def to(self, device: str | torch.device) -> TotalVI:
        """Move the module to ``device`` for queries."""
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def train(
        self,
        config: TrainConfig | None = None,
        *,
        data: CiteSeqData | None = None,
        progress: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **overrides: Any,
    ) -> TrainResult:
        """Train on ``data`` (default: the data the model was built from).

        ``overrides`` replace fields of ``config`` (e.g. ``max_epochs=20``). ``progress`` is
        called after every epoch; ``should_stop`` is polled every step to cancel.
        """
        cfg = config or TrainConfig()
        if overrides:
            cfg = TrainConfig(**{**cfg.to_dict(), **overrides})
        data = self._prepare_data(data)
        self._require_counts(data, "training")
        device = resolve_device(cfg.device)
        train_idx, val_idx = split_indices(
            data.n_cells, train_size=cfg.train_size, seed=cfg.seed, batch_size=cfg.batch_size
        )
        dev_data = DeviceData.for_module(self.module, data, device, cfg.max_dense_bytes)
        adversarial = (
            self.use_adversarial_classifier
            if cfg.adversarial_classifier is None
            else cfg.adversarial_classifier
        )
        self.device = device
        result = train_module(
            self.module,
            dev_data,
            train_idx,
            val_idx,
            cfg,
            n_cells_total=data.n_cells,
            use_adversarial=adversarial,
            progress=progress,
            should_stop=should_stop,
        )
        self.train_indices, self.validation_indices = train_idx, val_idx
        self.history = result.history
        self.train_config = dataclasses.replace(cfg, precision=result.precision)
        self.is_trained = True
        self.data_fingerprint = data.fingerprint()
        return result

    def map_query(
        self,
        query: CiteSeqData | anndata.AnnData,
        *,
        max_epochs: int | None = None,
        freeze_normalization: bool = True,
        progress: Callable[[TrainProgress], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> TotalVI:
        """scArches query mapping: a new model with the query's batches appended, trained on
        the query alone with every reference weight frozen (see
        :func:`model.mapping.map_query` for the options). This model is left unchanged."""
        return map_query(
            self,
            query,
            max_epochs=max_epochs,
            freeze_normalization=freeze_normalization,
            progress=progress,
            cancel=cancel,
            **kwargs,
        )

    @classmethod
    def load_query_data(
        cls,
        query: CiteSeqData | anndata.AnnData,
        reference: TotalVI | str | os.PathLike[str],
        **kwargs: Any,
    ) -> TotalVI:
        """scvi-tools-style spelling of :meth:`map_query`; ``reference`` may be a checkpoint
        path (ours or scvi-tools')."""
        ref = reference if isinstance(reference, TotalVI) else cls.load(reference)
        return ref.map_query(query, **kwargs)

    # --------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``path/model.pt`` atomically (temp file, then rename). Returns the file."""
        saved = SavedModel(
            self.module,
            var_names=list(self.var_names),
            protein_names=list(self.protein_names),
            batch_categories=list(self.batch_categories),
            protein_batch_mask=self.protein_batch_mask,
            train_indices=self.train_indices,
            validation_indices=self.validation_indices,
            history=self.history,
            train_config=self.train_config,
            setup_args=self.setup_args,
            is_trained=self.is_trained,
            source=self.source,
            data_fingerprint=self.data_fingerprint,
        )
        return write_checkpoint(saved, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], data: CiteSeqData | None = None) -> TotalVI:
        """Load our own checkpoint or a scvi-tools ``model.pt`` (file or its folder; see
        :func:`model.model_folder.locate_model`).

        Our format loads with ``weights_only=True``; scvi-tools files go through a restricted
        unpickler that admits only tensors, numpy arrays and pandas tables.
        """
        file = locate_model(path).checkpoint
        payload = read_payload(file)
        if payload is not None:
            saved = from_payload(payload, file)
        else:
            saved = from_scvi_tools_checkpoint(read_scvi_tools_checkpoint(file), source=file)
        model = cls.from_saved(saved)
        if data is not None:
            model.attach_data(data)
        return model

    @classmethod
    def from_saved(cls, saved: SavedModel) -> TotalVI:
        """Wrap a module read from a checkpoint, with the state saved beside it."""
        model = cls.from_module(
            saved.module,
            var_names=saved.var_names,
            protein_names=saved.protein_names,
            batch_categories=saved.batch_categories,
            protein_batch_mask=saved.protein_batch_mask,
        )
        model.train_indices = saved.train_indices
        model.validation_indices = saved.validation_indices
        model.history = saved.history
        model.train_config = saved.train_config
        model.setup_args = saved.setup_args
        model.is_trained = saved.is_trained
        model.source = saved.source
        model.data_fingerprint = saved.data_fingerprint
        return model

    def attach_data(self, data: CiteSeqData) -> TotalVI:
        """Attach ``data`` (aligned to the model's genes, proteins and batches; raises
        :class:`CiteSeqDataError` naming what does not match). Returns the model."""
        self.data = self._prepare_data(data)
        self.data_fingerprint = self.data.fingerprint()
        return self

    def summary(self) -> dict[str, Any]:
        """Summary statistics as an scvi-hub model card lists them."""
        return {
            "n_cells": None if self.data is None else self.data.n_cells,
            "n_vars": self.config.n_genes,
            "n_proteins": self.config.n_proteins,
            "n_batch": self.config.n_batch,
            "n_labels": self.config.n_labels,
            "n_latent": self.config.n_latent,
        }

    def protein_efficiency(self) -> pd.DataFrame | None:
        """The learned capture efficiency, batches x proteins (``exp`` of
        ``log_per_batch_efficiency``); ``None`` for a checkpoint without one (scvi-tools
        before 1.3.1), whose measured and efficiency-free scales are the same."""
        if not self.config.variant.use_efficiency:
            return None
        eff = torch.exp(self.module.log_per_batch_efficiency.detach().float()).cpu().numpy()
        return pd.DataFrame(
            eff.T, index=pd.Index(self.batch_categories), columns=self.protein_names
        )

    @property
    def has_protein_efficiency(self) -> bool:
        """Whether measured and efficiency-free protein values differ (an efficiency not 1)."""
        eff = self.protein_efficiency()
        return eff is not None and not np.allclose(eff.to_numpy(), 1.0)
