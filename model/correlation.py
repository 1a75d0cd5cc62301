"""Feature correlations under the model, as scvi-tools' TOTALVI computes them (spec §7.6).

:meth:`FeatureCorrelation._get_denoised_samples` draws from the "adjusted posterior
predictive" of scvi-tools: per latent sample, a Gamma with the NB's mean and shape (the
denoised rate, RNA as ``rna_size_factor · px_scale``, protein as the foreground rate) whose
protein part is zeroed where a Bernoulli(π) draw says background.
:meth:`FeatureCorrelation.get_feature_correlation_matrix` flattens those samples across cells
and correlates the features, averaged over the transform batches.

Both take ``gene_list`` / ``protein_list`` to draw only the features asked for: the
correlation of two features depends on their own columns only, so a subset gives the full
matrix's entries in distribution (not the same draws: fewer numbers are drawn). With every
feature the draws follow scvi-tools' order (per minibatch of 64: the latent samples, then
the Bernoulli over all proteins, then the Gamma over genes and proteins); that was not
compared with scvi-tools draw for draw. Each transform batch's samples start from ``seed``
(scvi-tools draws the batches one after the other on one stream). A mixin of
:class:`~model.totalvi.TotalVI`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from model.data import CiteSeqData
from model.posterior import BatchSpec, PosteriorBase
from model.protein_scale import MEASURED, ProteinScale, is_measured
from model.streams import Stream

CorrelationType = Literal["spearman", "pearson"]


class FeatureCorrelation(PosteriorBase):
    """Denoised posterior samples and the gene-protein correlation matrix of scvi-tools."""

    def _get_denoised_samples(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        n_samples: int = 25,
        batch_size: int = 64,
        rna_size_factor: float = 1000,
        transform_batch: int | str | None = None,
        gene_list: Sequence[str] | None = None,
        protein_list: Sequence[str] | None = None,
        seed: int | Stream | None = 0,
        protein_scale: ProteinScale = MEASURED,
    ) -> np.ndarray:
        """Samples of the adjusted posterior predictive, ``(cells, genes + proteins,
        n_samples)`` (genes of ``gene_list`` first, then proteins of ``protein_list``).

        As scvi-tools' ``_get_denoised_samples``: per minibatch, latent samples decoded in
        ``transform_batch`` (one batch; ``None``: the cells' own), then ``mixing ~
        Bernoulli(π)`` and ``Gamma(r, r / rate)`` with ``rate = [rna_size_factor · px_scale,
        rate_fore]``, the protein part times ``1 − mixing``. On the measured scale (default)
        the foreground rate is times the capture efficiency of the batch decoded in;
        ``protein_scale="efficiency-free"`` is scvi-tools 1.4.2's rate (under one transform
        batch the two differ by a constant factor per protein, so their correlations agree).
        """
        data = self._prepare_data(data)
        gi, pi = self._features(gene_list, protein_list)
        (code,) = self._batch_codes(transform_batch)
        measured = is_measured(protein_scale)
        parts = []
        with self._eval(seed) as stream:
            for minibatch in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    gen = self._decode(
                        data, minibatch, code, n_samples=n_samples, compute_rna=True
                    )
                    px, py = gen.px, gen.py
                    pi_back = torch.sigmoid(py["mixing"])[..., pi]
                    mixing = torch.distributions.Bernoulli(pi_back).sample()
                    _, rate_fore = gen.protein_rates(measured=measured)
                    rate = torch.cat(
                        (rna_size_factor * px["scale"][..., gi], rate_fore[..., pi]), -1
                    )
                    lead = rate.shape[:-1]  # (samples,) cells
                    gene_r = torch.broadcast_to(px["r"], (*lead, px["scale"].shape[-1]))[..., gi]
                    pro_r = torch.broadcast_to(py["r"], (*lead, py["mixing"].shape[-1]))[..., pi]
                    dispersion = torch.cat((gene_r, pro_r), -1)
                    p = rate / (rate + dispersion)
                    draws = torch.distributions.Gamma(dispersion, (1 - p) / p).sample()
                    draws[..., len(gi) :] *= 1 - mixing
                    if n_samples == 1:
                        draws = draws.unsqueeze(0)
                    parts.append(draws.permute(1, 2, 0).cpu().numpy())
        if not parts:
            return np.zeros((0, len(gi) + len(pi), n_samples), np.float32)
        return np.concatenate(parts)

    def get_feature_correlation_matrix(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        n_samples: int = 10,
        batch_size: int = 64,
        rna_size_factor: float = 1000,
        transform_batch: BatchSpec = None,
        correlation_type: CorrelationType = "spearman",
        log_transform: bool = False,
        gene_list: Sequence[str] | None = None,
        protein_list: Sequence[str] | None = None,
        seed: int | None = 0,
        protein_scale: ProteinScale = MEASURED,
    ) -> pd.DataFrame:
        """Gene-protein-gene-protein correlation of the denoised samples (scvi-tools'
        ``get_feature_correlation_matrix``, spec §7.6).

        For each batch of ``transform_batch`` (``None``: the cells' own; a list: each, the
        matrices averaged), ``n_samples`` samples per cell (:meth:`_get_denoised_samples`)
        are flattened across cells and samples and correlated (``"spearman"``: scipy's
        ``spearmanr``; ``"pearson"``: ``np.corrcoef``); with ``log_transform`` RNA becomes
        ``log(x + 1e-8)`` and protein ``log1p(x)`` first. Rows and columns: the genes of
        ``gene_list`` then the proteins of ``protein_list`` (``None``: all, as scvi-tools).
        Unlike scvi-tools, ``data`` and ``indices`` are honoured (scvi-tools draws from the
        model's own AnnData whatever is passed).
        """
        if correlation_type not in ("spearman", "pearson"):
            msg = f"correlation_type must be 'spearman' or 'pearson', not {correlation_type!r}"
            raise ValueError(msg)
        data = self._prepare_data(data)
        gi, pi = self._features(gene_list, protein_list)
        items = (
            transform_batch if isinstance(transform_batch, (list, tuple)) else [transform_batch]
        )
        matrices = []
        stream = Stream(seed, self.device)  # seeded once, as one scvi-tools call
        for batch in items:
            matrices.append(
                self._batch_correlation(
                    data,
                    stream=stream,
                    indices=indices,
                    n_samples=n_samples,
                    batch_size=batch_size,
                    rna_size_factor=rna_size_factor,
                    transform_batch=batch,
                    correlation_type=correlation_type,
                    log_transform=log_transform,
                    gene_list=gene_list,
                    protein_list=protein_list,
                    protein_scale=protein_scale,
                    n_genes=len(gi),
                )
            )
        names = np.concatenate(
            [np.asarray(self.var_names[gi]), np.asarray(self.protein_names[pi])]
        )
        return pd.DataFrame(np.mean(np.stack(matrices), axis=0), index=names, columns=names)

    def _batch_correlation(
        self,
        data: CiteSeqData,
        *,
        stream: Stream,
        indices: np.ndarray | None,
        n_samples: int,
        batch_size: int,
        rna_size_factor: float,
        transform_batch: int | str | None,
        correlation_type: CorrelationType,
        log_transform: bool,
        gene_list: Sequence[str] | None,
        protein_list: Sequence[str] | None,
        protein_scale: ProteinScale,
        n_genes: int,
    ) -> np.ndarray:
        """The correlation matrix of one transform batch's samples, drawn on ``stream``
        (the caller's: scvi-tools draws the batches one after another)."""
        samples = self._get_denoised_samples(
            data,
            indices=indices,
            n_samples=n_samples,
            batch_size=batch_size,
            rna_size_factor=rna_size_factor,
            transform_batch=transform_batch,
            gene_list=None if gene_list is None else list(gene_list),
            protein_list=None if protein_list is None else list(protein_list),
            seed=stream,
            protein_scale=protein_scale,
        )
        # sample-major rows, as scvi-tools: sample i of every cell, then sample i + 1
        flat = np.transpose(samples, (2, 0, 1)).reshape(-1, samples.shape[1])
        flat = flat.astype(np.float64)
        if log_transform:
            flat[:, :n_genes] = np.log(flat[:, :n_genes] + 1e-8)
            flat[:, n_genes:] = np.log1p(flat[:, n_genes:])
        return _correlation(flat, correlation_type)


def _correlation(flat: np.ndarray, correlation_type: CorrelationType) -> np.ndarray:
    """Column correlation matrix of ``flat`` (rows: observations), always 2-D."""
    n = flat.shape[1]
    if n == 1:
        return np.ones((1, 1))
    if correlation_type == "pearson":
        return np.atleast_2d(np.corrcoef(flat, rowvar=False))
    value = spearmanr(flat, axis=0).statistic
    return np.array([[1.0, value], [value, 1.0]]) if n == 2 else np.asarray(value)
