"""TotalVAE: the TotalVI generative model split into inference, generative and loss.

Same structure and numerics as scvi-tools' ``TOTALVAE`` (spec §2): an encoder for q(z) and
q(log l), a decoder for the negative-binomial RNA rates and the NB-mixture protein rates
(background + foreground) and a loss that is the negative ELBO with KL warm-up. Protein
columns that a batch did not measure are masked out of that batch's loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.config import TotalVIConfig
from model.distributions import (
    NonZeroCounts,
    log_mixture_nb,
    log_zinb_positive,
    nb_log_likelihood_sum,
    sample_mixture_nb,
    sample_nb,
)
from model.nn import DecoderTotalVI, EncoderTotalVI, Posterior, one_hot


@dataclass
class InferenceOutputs:
    """Posterior quantities for a minibatch (``z`` may carry a leading sample dim)."""

    qz_m: torch.Tensor
    qz_v: torch.Tensor
    ql_m: torch.Tensor
    ql_v: torch.Tensor
    z: torch.Tensor
    untran_z: torch.Tensor
    library_gene: torch.Tensor
    untran_l: torch.Tensor
    prior_mu: torch.Tensor  # background prior mean per cell and protein
    prior_sd: torch.Tensor


@dataclass
class GenerativeOutputs:
    """Decoder outputs: gene parameters ``px``, protein parameters ``py``."""

    px: dict[str, torch.Tensor]
    py: dict[str, torch.Tensor]
    log_pro_back_mean: torch.Tensor
    efficiency: torch.Tensor | None  # per cell and protein (>= 1.3.1 variant), else None

    def protein_rates(self, *, measured: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Background and foreground protein rates: on the measured scale (times the cell's
        batch capture efficiency, as the likelihood uses them) or, with ``measured=False``,
        the decoder's efficiency-free rates (what scvi-tools 1.4.2 samples and denoises)."""
        back, fore = self.py["rate_back"], self.py["rate_fore"]
        if measured and self.efficiency is not None:
            return back * self.efficiency, fore * self.efficiency
        return back, fore


@dataclass
class LossOutput:
    """Training loss (scalar) and the unweighted per-cell terms used for the ELBO."""

    loss: torch.Tensor
    rec_gene: torch.Tensor
    rec_protein: torch.Tensor
    kl_z: torch.Tensor
    kl_l: torch.Tensor
    kl_back: torch.Tensor

    def elbo_per_cell(self) -> torch.Tensor:
        """Negative ELBO per cell (reconstruction + local KL), as scvi-tools' ElboMetric."""
        return self.rec_gene + self.rec_protein + self.kl_z + self.kl_l + self.kl_back


def kl_normal(
    mu_q: torch.Tensor, sd_q: torch.Tensor, mu_p: torch.Tensor, sd_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu_q, sd_q) || N(mu_p, sd_p)), torch's closed form."""
    var_ratio = (sd_q / sd_p).pow(2)
    t1 = ((mu_q - mu_p) / sd_p).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


class TotalVAE(nn.Module):
    """The TotalVI variational autoencoder for paired RNA and protein counts.

    Parameters
    ----------
    config
        Architecture and version variant.
    protein_batch_mask
        ``(n_batch, n_proteins)`` bool, True where a batch measured the protein; None if all.
    protein_background_prior_mean, protein_background_prior_scale
        ``(n_proteins, n_batch)`` empirical background prior (spec §3.1), or None.
    library_log_means, library_log_vars
        ``(1, n_batch)`` library-size prior; only used when the library is latent.
    """

    def __init__(
        self,
        config: TotalVIConfig,
        *,
        protein_batch_mask: np.ndarray | None = None,
        protein_background_prior_mean: np.ndarray | None = None,
        protein_background_prior_scale: np.ndarray | None = None,
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        c = config
        self.config = c
        v = c.variant
        G, P, n_batch = c.n_genes, c.n_proteins, c.n_batch

        if not c.use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                msg = "library_log_means/vars are required when use_observed_lib_size=False"
                raise ValueError(msg)
            self.register_buffer(
                "library_log_means", torch.as_tensor(library_log_means, dtype=torch.float32)
            )
            self.register_buffer(
                "library_log_vars", torch.as_tensor(library_log_vars, dtype=torch.float32)
            )

        self.background_pro_alpha, self.background_pro_log_beta = _background_prior(
            c, protein_background_prior_mean, protein_background_prior_scale
        )
        if v.use_efficiency:
            self.log_per_batch_efficiency = nn.Parameter(torch.zeros(P, n_batch))

        n_disp_gene = {"gene": 0, "gene-batch": n_batch, "gene-label": c.n_labels, "gene-cell": 0}
        n_disp_prot = {"protein": 0, "protein-batch": n_batch, "protein-label": c.n_labels}
        ng = n_disp_gene[c.gene_dispersion]
        npr = n_disp_prot[c.protein_dispersion]
        self.px_r = nn.Parameter(torch.randn(G, ng) if ng else torch.randn(G))
        self.py_r = nn.Parameter(2 * torch.rand(P, npr) if npr else 2 * torch.rand(P))
        self.encoder = _encoder(c)
        self.decoder = _decoder(c)
        mask = None if protein_batch_mask is None else torch.as_tensor(protein_batch_mask)
        self.register_buffer(
            "protein_batch_mask",
            None if mask is None else mask.to(torch.float32).reshape(n_batch, P),
            persistent=False,
        )

    # ------------------------------------------------------------------ inference
    def encoder_input(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the encoder reads: RNA and protein counts, normalised as configured
        (per-cell mean, ``log1p``), side by side."""
        c = self.config
        if c.variant.encoder_input_mean_norm:
            x = x / (1 + x.mean(1, keepdim=True))
            y = y / (1 + y.mean(1, keepdim=True))
        if c.log_variational:
            x = torch.log(1 + x)
            y = torch.log(1 + y)
        return torch.cat((x, y), dim=-1)

    def encode(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        *,
        compute_library: bool = True,
        encoder_input: torch.Tensor | None = None,
    ) -> Posterior:
        """q(z) and q(log l) of the cells, without drawing (:meth:`inference` draws)."""
        if encoder_input is None:
            encoder_input = self.encoder_input(x, y)
        compute_library = compute_library or not self.config.use_observed_lib_size
        return self.encoder.posterior(encoder_input, batch_index, compute_library=compute_library)

    def inference(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        n_samples: int = 1,
        *,
        compute_library: bool = True,
        encoder_input: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
        posterior: Posterior | None = None,
    ) -> InferenceOutputs:
        """Encode counts into q(z) and q(log l); sample ``n_samples`` latents.

        ``compute_library=False`` (only valid with the observed library size) skips q(l);
        its outputs are then NaN. ``encoder_input`` (:meth:`encoder_input` of these cells)
        and ``library`` (their total counts) may be passed precomputed, e.g. by a training
        loop that stores them per cell; ``x`` is then not read and may be ``None``.
        ``posterior``: :meth:`encode` of the same cells (and ``compute_library``), for a
        caller that draws from it several times; the draws are those of a fresh encoding.
        """
        c = self.config
        if posterior is None:
            posterior = self.encode(
                x, y, batch_index, compute_library=compute_library, encoder_input=encoder_input
            )
        qz, ql, untran_z, log_library = self.encoder.draw(*posterior)
        if ql is None:
            nan = torch.full_like(log_library, float("nan"))
            ql = torch.distributions.Normal(nan, torch.ones_like(nan), validate_args=False)
        z = self.encoder.z_transformation(untran_z)
        untran_l = log_library
        if c.use_observed_lib_size:
            library_gene = x.sum(1, keepdim=True) if library is None else library
        else:
            library_gene = torch.exp(log_library)
        if n_samples > 1:
            untran_z = qz.sample((n_samples,))
            z = self.encoder.z_transformation(untran_z)
            untran_l = ql.sample((n_samples,))
            if c.use_observed_lib_size:
                library_gene = library_gene.unsqueeze(0).expand(n_samples, -1, -1)
            else:
                library_gene = torch.exp(untran_l)
        oh = one_hot(batch_index, c.n_batch)
        prior_mu = oh @ self.background_pro_alpha.T
        prior_sd = oh @ torch.exp(self.background_pro_log_beta).T
        return InferenceOutputs(
            qz_m=qz.loc,
            qz_v=qz.scale.pow(2),
            ql_m=ql.loc,
            ql_v=ql.scale.pow(2),
            z=z,
            untran_z=untran_z,
            library_gene=library_gene,
            untran_l=untran_l,
            prior_mu=prior_mu,
            prior_sd=prior_sd,
        )

    def cached_inference(
        self,
        qzm: torch.Tensor,
        qzv: torch.Tensor,
        observed_lib_size: torch.Tensor,
        batch_index: torch.Tensor,
        n_samples: int = 1,
    ) -> InferenceOutputs:
        """Inference from a stored posterior (minified scvi-hub data, spec §9).

        As scvi-tools' ``_cached_inference`` does, the stored *variance* ``qzv`` is used as
        the standard deviation of q(z), so samples match what scvi-tools produces.
        """
        qz = torch.distributions.Normal(qzm, qzv)
        untran_z = qz.sample() if n_samples == 1 else qz.sample((n_samples,))
        z = self.encoder.z_transformation(untran_z)
        library = observed_lib_size.reshape(-1, 1)
        nan = torch.full_like(library, float("nan"))
        oh = one_hot(batch_index, self.config.n_batch)
        return InferenceOutputs(
            qz_m=qzm,
            qz_v=qzv,
            ql_m=nan,
            ql_v=nan,
            z=z,
            untran_z=untran_z,
            library_gene=library,
            untran_l=nan,
            prior_mu=oh @ self.background_pro_alpha.T,
            prior_sd=oh @ torch.exp(self.background_pro_log_beta).T,
        )

    # ----------------------------------------------------------------- generative
    def generative(
        self,
        z: torch.Tensor,
        library_gene: torch.Tensor,
        batch_index: torch.Tensor,
        label: torch.Tensor | None = None,
        transform_batch: int | None = None,
        *,
        compute_dropout: bool = True,
        compute_rna: bool = True,
    ) -> GenerativeOutputs:
        """Decode latents into RNA and protein likelihood parameters (``compute_rna=False``:
        protein parameters only, for protein-only queries)."""
        c = self.config
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        px_, py_, log_pro_back_mean = self.decoder(
            z, library_gene, batch_index, compute_dropout=compute_dropout, compute_rna=compute_rna
        )
        oh_batch = one_hot(batch_index, c.n_batch)
        if c.gene_dispersion == "gene-batch":
            px_r = oh_batch @ self.px_r.T
        elif c.gene_dispersion == "gene-cell":
            px_r = px_["r_log"] if compute_rna else self.px_r[:0]
        elif c.gene_dispersion == "gene-label":
            px_r = one_hot(_labels_or_zero(label, batch_index), c.n_labels) @ self.px_r.T
        else:
            px_r = self.px_r
        if c.protein_dispersion == "protein-batch":
            py_r = oh_batch @ self.py_r.T
        elif c.protein_dispersion == "protein-label":
            py_r = one_hot(_labels_or_zero(label, batch_index), c.n_labels) @ self.py_r.T
        else:
            py_r = self.py_r
        px_["r"] = torch.exp(px_r)
        py_["r"] = torch.exp(py_r)
        efficiency = None
        if c.variant.use_efficiency:
            efficiency = torch.exp(oh_batch @ self.log_per_batch_efficiency.T)
        return GenerativeOutputs(px_, py_, log_pro_back_mean, efficiency)

    # ----------------------------------------------------------------------- loss
    def reconstruction_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        gen: GenerativeOutputs,
        lgamma_x_plus_1_sum: torch.Tensor | None = None,
        *,
        nonzero: NonZeroCounts | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell negative log-likelihood of RNA and (masked) protein counts
        (``nonzero``: the non-zeros of ``x`` when the caller already knows them)."""
        px, py = gen.px, gen.py
        if self.config.gene_likelihood == "zinb":
            rec_gene = -log_zinb_positive(x, px["rate"], px["r"], px["dropout"]).sum(-1)
        else:
            rec_gene = -nb_log_likelihood_sum(
                x, px["rate"], px["r"], lgamma_x_plus_1_sum, nonzero=nonzero
            )
        rate_back, rate_fore = gen.protein_rates()
        ll_prot = log_mixture_nb(y, rate_back, rate_fore, py["r"], py["mixing"])
        mask = self.cell_protein_mask(batch_index)
        if mask is not None:
            ll_prot = ll_prot * mask
        return rec_gene, -ll_prot.sum(-1)

    def cell_protein_mask(self, batch_index: torch.Tensor) -> torch.Tensor | None:
        """``(B, P)`` float mask of measured proteins per cell, or None when all measured."""
        if self.protein_batch_mask is None:
            return None
        return self.protein_batch_mask[batch_index.reshape(-1).long()]

    def loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        inf: InferenceOutputs,
        gen: GenerativeOutputs,
        kl_weight: float = 1.0,
        lgamma_x_plus_1_sum: torch.Tensor | None = None,
        *,
        nonzero: NonZeroCounts | None = None,
    ) -> LossOutput:
        """Negative ELBO with KL warm-up weight (spec §2.9)."""
        c = self.config
        rec_gene, rec_protein = self.reconstruction_terms(
            x, y, batch_index, gen, lgamma_x_plus_1_sum, nonzero=nonzero
        )
        kl_z = 0.5 * (inf.qz_v + inf.qz_m.pow(2) - 1 - inf.qz_v.log())
        kl_z = kl_z.sum(-1)
        if c.use_observed_lib_size:
            kl_l = torch.zeros_like(rec_gene)
        else:
            oh = one_hot(batch_index, c.n_batch)
            lm = oh @ self.library_log_means.T
            lv = oh @ self.library_log_vars.T
            kl_l = kl_normal(inf.ql_m, inf.ql_v.sqrt(), lm, lv.sqrt()).sum(-1)
        kl_back = kl_normal(gen.py["back_alpha"], gen.py["back_beta"], inf.prior_mu, inf.prior_sd)
        mask = self.cell_protein_mask(batch_index)
        if mask is not None:
            kl_back = kl_back * mask
        kl_back = kl_back.sum(-1)
        if c.variant.extra_background_penalties:
            log_eff = one_hot(batch_index, c.n_batch) @ self.log_per_batch_efficiency.T
            kl_back = kl_back + (log_eff.pow(2) / 2 + 0.5 * math.log(2 * math.pi) + log_eff).sum(
                -1
            )
            kl_back = kl_back + (1e-3 * F.softplus(-gen.py["mixing"])).sum(-1)
        prot_w = kl_weight if c.variant.kl_weight_on_protein_rec else 1.0
        loss = torch.mean(
            rec_gene + prot_w * rec_protein + kl_weight * kl_z + kl_l + kl_weight * kl_back
        )
        return LossOutput(loss, rec_gene, rec_protein, kl_z, kl_l, kl_back)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        kl_weight: float = 1.0,
        lgamma_x_plus_1_sum: torch.Tensor | None = None,
        *,
        nonzero: NonZeroCounts | None = None,
        encoder_input: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
    ) -> tuple[InferenceOutputs, GenerativeOutputs, LossOutput]:
        """One full pass: inference, generative and loss (skips heads the loss never reads).

        With ``nonzero``, ``lgamma_x_plus_1_sum``, ``encoder_input`` and ``library`` all
        given, an NB model does not read ``x`` (it may be ``None``).
        """
        inf = self.inference(
            x,
            y,
            batch_index,
            compute_library=False,
            encoder_input=encoder_input,
            library=library,
        )
        gen = self.generative(
            inf.z,
            inf.library_gene,
            batch_index,
            compute_dropout=self.config.gene_likelihood == "zinb",
        )
        loss = self.loss(
            x, y, batch_index, inf, gen, kl_weight, lgamma_x_plus_1_sum, nonzero=nonzero
        )
        return inf, gen, loss

    # ------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_index: torch.Tensor,
        n_samples: int = 1,
        inf: InferenceOutputs | None = None,
        *,
        measured: bool = True,
        compute_rna: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior-predictive RNA and protein counts (spec §7.5).

        Proteins come from the likelihood the model was trained with (rates times the
        batch's capture efficiency); ``measured=False`` leaves the efficiency out, as
        scvi-tools 1.4.2 does (scvi-tools issue #4022), and then (with ``compute_rna``)
        draws bit for bit what it draws. ``compute_rna=False`` skips the gene heads and RNA
        draws (an empty RNA array; the random stream then differs from a full call).
        """
        if inf is None:
            inf = self.inference(x, y, batch_index, n_samples=n_samples)
        gen = self.generative(inf.z, inf.library_gene, batch_index, compute_rna=compute_rna)
        px, py = gen.px, gen.py
        if compute_rna:
            rna = sample_nb(px["rate"], px["r"])
            if self.config.gene_likelihood == "zinb":
                rna = rna.masked_fill(torch.bernoulli(torch.sigmoid(px["dropout"])).bool(), 0.0)
        else:
            rna = py["mixing"][..., :0]
        rate_back, rate_fore = gen.protein_rates(measured=measured)
        protein = sample_mixture_nb(rate_back, rate_fore, py["r"], py["mixing"])
        return rna, protein

    @torch.no_grad()
    def marginal_ll(
        self, x: torch.Tensor, y: torch.Tensor, batch_index: torch.Tensor, n_mc_samples: int
    ) -> torch.Tensor:
        """Importance-sampled log p(x, y) per cell (spec §2.10)."""
        log_ws = []
        for _ in range(n_mc_samples):
            inf = self.inference(x, y, batch_index)
            gen = self.generative(inf.z, inf.library_gene, batch_index)
            rec_gene, rec_prot = self.reconstruction_terms(x, y, batch_index, gen)
            py = gen.py
            normal = torch.distributions.Normal
            log_prior_z = normal(0, 1).log_prob(inf.untran_z).sum(-1)
            log_q_z = normal(inf.qz_m, inf.qz_v.sqrt()).log_prob(inf.untran_z).sum(-1)
            lp_back = normal(inf.prior_mu, inf.prior_sd).log_prob(gen.log_pro_back_mean)
            lq_back = normal(py["back_alpha"], py["back_beta"]).log_prob(gen.log_pro_back_mean)
            mask = self.cell_protein_mask(batch_index)
            if mask is not None:
                lp_back, lq_back = lp_back * mask, lq_back * mask
            log_w = log_prior_z + lp_back.sum(-1) - rec_gene - rec_prot - log_q_z - lq_back.sum(-1)
            if not self.config.use_observed_lib_size:
                oh = one_hot(batch_index, self.config.n_batch)
                lm, lv = oh @ self.library_log_means.T, oh @ self.library_log_vars.T
                log_w = log_w + normal(lm, lv.sqrt()).log_prob(inf.untran_l).sum(-1)
                log_w = log_w - normal(inf.ql_m, inf.ql_v.sqrt()).log_prob(inf.untran_l).sum(-1)
            log_ws.append(log_w)
        stacked = torch.stack(log_ws)
        return torch.logsumexp(stacked, dim=0) - math.log(n_mc_samples)


def _labels_or_zero(label: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if label is None else label


def _background_prior(
    c: TotalVIConfig, mean: np.ndarray | None, scale: np.ndarray | None
) -> tuple[nn.Parameter, nn.Parameter]:
    """``background_pro_alpha`` and ``background_pro_log_beta``, ``(n_proteins, n_batch)``:
    the empirical prior if given, else the initialisation of the scvi-tools version."""
    P, n_batch = c.n_proteins, c.n_batch
    if mean is None:
        if c.variant.use_efficiency:  # >= 1.3.1 initialisation
            return (
                nn.Parameter(3.0 * torch.ones(P, n_batch)),
                nn.Parameter(torch.zeros(P, n_batch)),
            )
        alpha = nn.Parameter(torch.randn(P, n_batch))
        return alpha, nn.Parameter(torch.clamp(torch.randn(P, n_batch), -10, 1))
    mean_t = torch.as_tensor(mean, dtype=torch.float32)
    scale_t = torch.as_tensor(scale, dtype=torch.float32)
    return (
        nn.Parameter(mean_t.reshape(P, n_batch).clone()),
        nn.Parameter(torch.log(scale_t.reshape(P, n_batch)).clone()),
    )


def _encoder(c: TotalVIConfig) -> EncoderTotalVI:
    """The encoder of counts (genes then proteins) into q(z) and q(log l)."""
    return EncoderTotalVI(
        c.n_genes + c.n_proteins,
        c.n_latent,
        n_cat_list=[c.n_batch] if c.encode_covariates else None,
        n_layers=c.n_layers_encoder,
        n_hidden=c.n_hidden,
        dropout_rate=c.dropout_rate_encoder,
        distribution=c.latent_distribution,
        use_batch_norm=c.use_batch_norm in ("encoder", "both"),
        use_layer_norm=c.use_layer_norm in ("encoder", "both"),
    )


def _decoder(c: TotalVIConfig) -> DecoderTotalVI:
    """The decoder of latents into RNA and protein likelihood parameters."""
    return DecoderTotalVI(
        c.n_latent,
        c.n_genes,
        c.n_proteins,
        n_cat_list=[c.n_batch],
        n_layers=c.n_layers_decoder,
        n_hidden=c.n_hidden,
        dropout_rate=c.dropout_rate_decoder,
        use_batch_norm=c.use_batch_norm in ("decoder", "both"),
        use_layer_norm=c.use_layer_norm in ("decoder", "both"),
        bg_activation=c.variant.bg_activation,
        bg_beta_eps=c.variant.bg_beta_eps,
        gene_dispersion_per_cell=c.gene_dispersion == "gene-cell",
    )
