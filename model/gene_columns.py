"""Denoised RNA of a few genes without decoding every gene (spec §7.3, RNA part).

A gene's denoised RNA is ``library_size · mean_s softmax(logits_s)[gene]``: the softmax's
normaliser needs every gene's logit, the numerator only that gene's. So one pass over the
cells (:meth:`GeneColumns.rna_decoder_state`) keeps, per cell and latent sample, the latent
``z`` and the log normaliser ``logsumexp_g logits``; afterwards any set of genes is
``exp(logit_gene − log normaliser)`` from the decoder's hidden layer and those genes' rows of
the output layer (:meth:`GeneColumns.rna_columns`), at the cost of ``len(genes)`` outputs
instead of every gene's. The values are those of
:meth:`~model.posterior.PosteriorQueries.get_normalized_expression` with the same
``n_samples``, ``seed`` and ``batch_size`` (the same latent draws, the same random stream) to
float32 rounding; decoded in each cell's own batch (a counterfactual batch decodes every
gene, as before). A mixin of :class:`~model.totalvi.TotalVI`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.data import CiteSeqData
from model.posterior import PosteriorBase


@dataclass(frozen=True)
class RnaDecoderState:
    """What decoding some genes of every cell needs (a few floats per cell and sample).

    Attributes
    ----------
    z
        Latent samples, ``(cells, n_samples, n_latent)`` float32.
    log_norm
        ``logsumexp`` over genes of the scale head's logits, ``(cells, n_samples)``
        float32; ``None`` for a softplus scale (not normalised over genes).
    batch
        Each cell's batch code in the model, ``(cells,)`` int64.
    library_size
        What the scale is multiplied by (counts per ``library_size``).
    """

    z: np.ndarray
    log_norm: np.ndarray | None
    batch: np.ndarray
    library_size: float

    @property
    def n_cells(self) -> int:
        """Cells the state covers."""
        return int(self.z.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory the arrays take."""
        norm = 0 if self.log_norm is None else self.log_norm.nbytes
        return int(self.z.nbytes + norm + self.batch.nbytes)


class GeneColumns(PosteriorBase):
    """Denoised RNA of chosen genes from a stored :class:`RnaDecoderState`."""

    def rna_decoder_state(
        self,
        data: CiteSeqData | None = None,
        *,
        n_samples: int = 1,
        library_size: float = 1.0,
        batch_size: int = 256,
        seed: int | None = 0,
    ) -> RnaDecoderState:
        """One pass over the cells keeping ``z`` and the softmax's log normaliser per cell
        and sample: the draws of ``get_normalized_expression(data, n_samples=, seed=,
        batch_size=)`` (each minibatch also decodes the proteins, as that call does, so
        the random stream, and with it every later minibatch's draws, is the same)."""
        data = self._prepare_data(data)
        softplus = self.module.decoder.use_softplus_scale
        zs, norms = [], []
        with self._eval(seed) as stream:
            for minibatch in self._minibatches(data, None, batch_size):
                with stream.turn():
                    idx, x, y, b = minibatch
                    inf = self._infer(data, idx, x, y, b, n_samples=n_samples)
                    # the protein heads draw the background: keep the stream where the full
                    # query leaves it (the gene heads draw nothing)
                    self.module.generative(
                        inf.z, inf.library_gene, b, compute_dropout=False, compute_rna=False
                    )
                    z = inf.z if inf.z.dim() == 3 else inf.z.unsqueeze(0)  # (S, B, L)
                    zs.append(z.permute(1, 0, 2).cpu().numpy())
                    if not softplus:
                        logits = self._scale_logits(z, b, None)
                        norms.append(torch.logsumexp(logits, dim=-1).T.cpu().numpy())
        n_latent = self.config.n_latent
        z_all = np.concatenate(zs) if zs else np.zeros((0, n_samples, n_latent), np.float32)
        norm = None
        if not softplus:
            norm = np.concatenate(norms) if norms else np.zeros((0, n_samples), np.float32)
        return RnaDecoderState(
            z=np.ascontiguousarray(z_all, dtype=np.float32),
            log_norm=None if norm is None else np.ascontiguousarray(norm, dtype=np.float32),
            batch=np.asarray(data.batch, dtype=np.int64).copy(),
            library_size=float(library_size),
        )

    def rna_columns(
        self,
        state: RnaDecoderState,
        genes: Sequence[int] | np.ndarray,
        *,
        batch_size: int = 4096,
    ) -> np.ndarray:
        """Denoised RNA of the genes at positions ``genes``, ``(cells, len(genes))`` float32:
        the mean over the state's samples of ``library_size · exp(logit − log_norm)``."""
        cols = torch.as_tensor(np.asarray(genes, dtype=np.int64), device=self.device)
        n_genes = len(self.var_names)
        if len(cols) and (int(cols.min()) < 0 or int(cols.max()) >= n_genes):
            msg = f"gene positions must lie in 0..{n_genes - 1}"
            raise IndexError(msg)
        out = np.empty((state.n_cells, len(cols)), dtype=np.float32)
        was = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                for start in range(0, state.n_cells, batch_size):
                    stop = min(start + batch_size, state.n_cells)
                    z = torch.as_tensor(state.z[start:stop], device=self.device).permute(1, 0, 2)
                    b = torch.as_tensor(state.batch[start:stop], device=self.device).view(-1, 1)
                    logits = self._scale_logits(z, b, cols)  # (S, B, G)
                    if state.log_norm is None:
                        scale = torch.nn.functional.softplus(logits)
                    else:
                        norm = torch.as_tensor(state.log_norm[start:stop], device=self.device)
                        scale = torch.exp(logits - norm.T.unsqueeze(-1))
                    out[start:stop] = (scale * state.library_size).mean(0).cpu().numpy()
        finally:
            self.module.train(was)
        return out

    def _scale_logits(
        self, z: torch.Tensor, b: torch.Tensor, columns: torch.Tensor | None
    ) -> torch.Tensor:
        """The scale head's logits for ``z`` ``(S, B, L)`` in batches ``b`` (every gene for
        ``columns=None``), as the decoder computes them."""
        decoder = self.module.decoder
        hidden = decoder.px_decoder(z, b)
        cat = torch.cat([hidden, z], dim=-1)
        if columns is None:
            return decoder.px_scale_decoder(cat, b)
        return decoder.px_scale_decoder.forward_columns(cat, b, columns=columns)
