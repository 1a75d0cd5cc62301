"""Per-cell model diagnostics of a :class:`~model.totalvi.TotalVI`, one minibatch at a time.

* :func:`cell_diagnostics`: each cell's reconstruction loss per modality (the negative
  log-likelihood terms of :meth:`~model.posterior.Likelihoods.get_reconstruction_error`,
  from the same pass and draws, so their mean is that method's value), its latent
  uncertainty (mean variance of q(z | x) over the latent dimensions) and its protein
  background level (mean over measured proteins of the decoder's log background mean).
* :func:`iter_predictive_samples`: posterior predictive counts of only the features asked
  for (one gene's draws without drawing every gene); with every feature the draws are those
  of :meth:`~model.posterior.PosteriorQueries.posterior_predictive_sample`, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.distributions import sample_mixture_nb, sample_nb
from model.protein_scale import MEASURED, ProteinScale, is_measured

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

#: The arrays :func:`cell_diagnostics` returns, one value per cell.
DIAGNOSTICS = (
    "reconstruction_loss_gene",
    "reconstruction_loss_protein",
    "latent_variance",
    "log_protein_background",
)


def cell_diagnostics(
    model: TotalVI,
    data: CiteSeqData | None = None,
    *,
    indices: np.ndarray | None = None,
    batch_size: int = 1024,
    seed: int | None = 0,
    protein_scale: ProteinScale = MEASURED,
) -> dict[str, np.ndarray]:
    """Per-cell diagnostics (keys :data:`DIAGNOSTICS`, float64 arrays in cell order).

    ``reconstruction_loss_gene`` / ``_protein``: the cell's negative log-likelihood of its
    RNA and (measured) protein counts under the decoder at one draw of z, the very terms
    (same pass, seed and minibatches) whose mean
    :meth:`~model.posterior.Likelihoods.get_reconstruction_error` returns; NaN for minified
    data (no counts). ``latent_variance``: mean over latent dimensions of the variance of
    q(z | x) (for minified data the stored ``qzv``). ``log_protein_background``: mean over
    the proteins the cell's batch measured of the decoder's mean log background rate
    (``back_alpha``), plus the log capture efficiency on the measured scale: the log of the
    geometric-mean background count the model expects in this cell.
    """
    data = model.aligned(data)
    module = model.module
    measured = is_measured(protein_scale)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in DIAGNOSTICS}
    with model._eval(seed) as stream:
        for idx, x, y, b in model._minibatches(data, indices, batch_size):
            with stream.turn():
                if data.minified is None:  # the pass of get_reconstruction_error
                    inf, gen, out = module(x, y, b, 1.0)
                    rec_gene, rec_protein = out.rec_gene, out.rec_protein
                else:
                    inf = model._infer(data, idx, x, y, b)
                    gen = module.generative(
                        inf.z, inf.library_gene, b, compute_dropout=False, compute_rna=False
                    )
                    rec_gene = rec_protein = torch.full((len(idx),), float("nan"))
                log_back = gen.py["back_alpha"]
                if measured and gen.efficiency is not None:
                    log_back = log_back + torch.log(gen.efficiency)
                mask = module.cell_protein_mask(b)
                # mean over the measured proteins (0/0, none measured: NaN)
                back = (
                    log_back.mean(-1) if mask is None else (log_back * mask).sum(-1) / mask.sum(-1)
                )
                parts["reconstruction_loss_gene"].append(rec_gene.reshape(-1).cpu().numpy())
                parts["reconstruction_loss_protein"].append(rec_protein.reshape(-1).cpu().numpy())
                parts["latent_variance"].append(inf.qz_v.mean(-1).cpu().numpy())
                parts["log_protein_background"].append(back.cpu().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}


def iter_predictive_samples(
    model: TotalVI,
    data: CiteSeqData | None = None,
    *,
    indices: np.ndarray | None = None,
    n_samples: int = 1,
    gene_list: Sequence[str] | None = None,
    protein_list: Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int | None = 0,
    protein_scale: ProteinScale = MEASURED,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Posterior predictive counts of the asked features, one minibatch at a time: yields
    ``(cell positions, rna, protein)`` shaped as
    :meth:`~model.posterior.PosteriorQueries.posterior_predictive_sample`'s arrays.

    Only the asked columns are drawn (``None``: all; ``[]``: none of that modality, whose
    heads or draws are then skipped), so one gene costs one decoder pass, not a draw of
    every gene. With every gene and protein, or no gene and every protein, the draws are
    ``posterior_predictive_sample``'s with the same arguments; with fewer features the
    random stream differs but each count has the same distribution.
    """
    data = model.aligned(data)
    module = model.module
    gi, pi = model._features(gene_list, protein_list)
    measured = is_measured(protein_scale)
    zinb = model.config.gene_likelihood == "zinb"
    with model._eval(seed) as stream:
        for idx, x, y, b in model._minibatches(data, indices, batch_size):
            with stream.turn():
                inf = model._infer(data, idx, x, y, b, n_samples=n_samples)
                z, library = inf.z, inf.library_gene
                if n_samples > 1:  # draws x cells as one batch: one decoder pass, not per draw
                    z, library = z.reshape(-1, z.shape[-1]), library.reshape(-1, 1)
                    b = b.repeat(n_samples, 1)
                gen = module.generative(
                    z, library, b, compute_dropout=zinb, compute_rna=len(gi) > 0
                )
                px, py = gen.px, gen.py
                if len(gi):
                    rna = sample_nb(px["rate"][..., gi], px["r"][..., gi])
                    if zinb:
                        drop = torch.bernoulli(torch.sigmoid(px["dropout"][..., gi])).bool()
                        rna = rna.masked_fill(drop, 0.0)
                else:
                    rna = py["mixing"][..., :0]
                if len(pi):
                    rate_back, rate_fore = gen.protein_rates(measured=measured)
                    protein = sample_mixture_nb(
                        rate_back[..., pi],
                        rate_fore[..., pi],
                        py["r"][..., pi],
                        py["mixing"][..., pi],
                    )
                else:
                    protein = py["mixing"][..., :0]
                if n_samples > 1:
                    rna = rna.reshape(n_samples, len(idx), -1).permute(1, 2, 0)
                    protein = protein.reshape(n_samples, len(idx), -1).permute(1, 2, 0)
                out = idx, rna.cpu().numpy(), protein.cpu().numpy()
            yield out
