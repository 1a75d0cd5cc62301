"""The posterior queries of :class:`~model.totalvi.TotalVI`, one minibatch at a time.

Every query aligns its data to the model first (:meth:`PosteriorBase.aligned`), then runs
the module over minibatches of cells in eval mode on a seeded random stream of its own
(:mod:`model.streams`; one draw ahead, as scvi-tools' DataLoader), so results match
scvi-tools' draw for draw, whatever other threads draw meanwhile. The classes here are
mixins: :class:`~model.totalvi.TotalVI` builds the module and sets the
attributes :class:`PosteriorBase` declares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from model.config import TotalVIConfig
from model.data import CiteSeqData, CiteSeqDataError, align_features
from model.module import GenerativeOutputs, InferenceOutputs, TotalVAE
from model.nn import Posterior
from model.protein_scale import MEASURED, ProteinScale, is_measured
from model.streams import Stream

#: A batch to decode in: its name or code, several (averaged over), or ``None`` (the cell's own).
BatchSpec = None | int | str | Sequence[int | str]


class PassTurns:
    """The turns of one posterior pass on its random stream, each without gradients."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """One minibatch's draws: on the pass's stream (:meth:`Stream.turn`), no autograd."""
        with torch.no_grad(), self.stream.turn():
            yield


class NormalizedExpressionOptions(TypedDict, total=False):
    """Keyword arguments of :meth:`PosteriorQueries.iter_normalized_expression` (its defaults)."""

    indices: np.ndarray | None
    transform_batch: BatchSpec
    gene_list: Sequence[str] | None
    protein_list: Sequence[str] | None
    n_samples: int
    library_size: float | Literal["latent"]
    sample_protein_mixing: bool
    scale_protein: bool
    include_protein_background: bool
    return_mean: bool
    batch_size: int
    seed: int | None
    protein_scale: ProteinScale


class PosteriorBase:
    """Data alignment and minibatching shared by the queries.

    Attributes
    ----------
    module, config, device
        The module, its configuration and where it runs.
    var_names, protein_names, batch_categories, protein_batch_mask
        The model's features and batches (the data is aligned to them).
    data
        The attached data, used when a query is given none.
    """

    module: TotalVAE
    config: TotalVIConfig
    device: torch.device
    var_names: pd.Index
    protein_names: pd.Index
    batch_categories: list[str]
    protein_batch_mask: np.ndarray | None
    data: CiteSeqData | None

    def aligned(self, data: CiteSeqData | None = None) -> CiteSeqData:
        """``data`` (or the attached data) aligned to the model's features and batches, as
        every query aligns it first: call once before many queries on parts of it."""
        return self._prepare_data(data)

    def _prepare_data(self, data: CiteSeqData | None) -> CiteSeqData:
        """Return ``data`` (or the attached data) aligned to the model's features and batches."""
        if data is None:
            if self.data is None:
                msg = "this model has no attached data: pass a CiteSeqData to the query"
                raise CiteSeqDataError(msg)
            data = self.data
        if not (
            data.var_names.equals(self.var_names) and data.protein_names.equals(self.protein_names)
        ):
            data = align_features(data, var_names=self.var_names, protein_names=self.protein_names)
        if list(data.batch_categories) != self.batch_categories:
            data = self._map_batches(data)
        if data.minified is not None and data.minified.qzm.shape[1] != self.config.n_latent:
            msg = (
                f"{data.source or 'data'}: its stored latent posterior has "
                f"{data.minified.qzm.shape[1]} dimensions, the model {self.config.n_latent}"
            )
            raise CiteSeqDataError(msg)
        return data

    def _map_batches(self, data: CiteSeqData) -> CiteSeqData:
        if len(self.batch_categories) == 1 and data.n_batch == 1:
            return data.with_batches(np.zeros(data.n_cells, dtype=np.int64), self.batch_categories)
        lookup = {name: i for i, name in enumerate(self.batch_categories)}
        unknown = [c for c in data.batch_categories if c not in lookup]
        if unknown:
            msg = (
                f"{data.source or 'data'}: batch categories {unknown[:5]} are not in the model "
                f"(model batches: {self.batch_categories[:10]}); map them onto the model first"
            )
            raise CiteSeqDataError(msg)
        codes = np.array([lookup[c] for c in data.batch_categories], dtype=np.int64)[data.batch]
        return data.with_batches(codes, self.batch_categories, key=data.batch_key or "batch")

    def _batch_codes(self, transform_batch: BatchSpec) -> list[int | None]:
        if transform_batch is None:
            return [None]
        items = [transform_batch] if isinstance(transform_batch, (int, str)) else transform_batch
        codes: list[int | None] = []
        for item in items:
            if isinstance(item, str):
                if item not in self.batch_categories:
                    msg = f"unknown batch {item!r}; the model knows {self.batch_categories}"
                    raise ValueError(msg)
                codes.append(self.batch_categories.index(item))
            else:
                if not 0 <= int(item) < self.config.n_batch:
                    msg = f"batch code {item} out of range 0..{self.config.n_batch - 1}"
                    raise ValueError(msg)
                codes.append(int(item))
        return codes

    def _minibatches(
        self, data: CiteSeqData, indices: np.ndarray | None, batch_size: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        idx_all = np.arange(data.n_cells) if indices is None else np.asarray(indices)
        if idx_all.dtype == bool:
            idx_all = np.flatnonzero(idx_all)
        for start in range(0, len(idx_all), batch_size):
            idx = idx_all[start : start + batch_size]
            rows = data.rna[idx]
            x = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
            yield (
                idx,
                torch.as_tensor(x, dtype=torch.float32, device=self.device),
                torch.as_tensor(data.protein[idx], dtype=torch.float32, device=self.device),
                torch.as_tensor(data.batch[idx], dtype=torch.long, device=self.device).view(-1, 1),
            )

    def _infer(
        self,
        data: CiteSeqData,
        idx: np.ndarray,
        x: torch.Tensor,
        y: torch.Tensor,
        b: torch.Tensor,
        n_samples: int = 1,
        posterior: Posterior | None = None,
    ) -> InferenceOutputs:
        """Encoder pass (or draws from its ``posterior``, :meth:`_encode`), or the stored
        posterior for minified (scvi-hub) data."""
        if data.minified is None:
            return self.module.inference(x, y, b, n_samples=n_samples, posterior=posterior)
        m = data.minified
        return self.module.cached_inference(
            torch.as_tensor(m.qzm[idx], device=self.device),
            torch.as_tensor(m.qzv[idx], device=self.device),
            torch.as_tensor(m.observed_lib_size[idx], device=self.device),
            b,
            n_samples=n_samples,
        )

    def _encode(
        self,
        data: CiteSeqData,
        minibatch: tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor],
        codes: Sequence[int | None],
    ) -> Posterior | None:
        """The encoder's posterior of a minibatch when it is decoded in several batch
        ``codes`` (each decoding then draws from it instead of encoding the same cells
        again; the draws are the same); ``None`` for one code or minified data."""
        if len(codes) < 2 or data.minified is not None:
            return None
        _, x, y, b = minibatch
        return self.module.encode(x, y, b)

    def _decode(
        self,
        data: CiteSeqData,
        minibatch: tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor],
        code: int | None,
        *,
        n_samples: int,
        compute_rna: bool,
        posterior: Posterior | None = None,
    ) -> GenerativeOutputs:
        """Fresh latent samples of a minibatch (drawn from ``posterior`` when given, the
        encoder's of these cells) decoded in batch ``code`` (``None``: the cells' own),
        without the dropout head."""
        idx, x, y, b = minibatch
        inf = self._infer(data, idx, x, y, b, n_samples=n_samples, posterior=posterior)
        return self._generate(inf, b, code, compute_rna=compute_rna)

    def _generate(
        self, inf: InferenceOutputs, b: torch.Tensor, code: int | None, *, compute_rna: bool
    ) -> GenerativeOutputs:
        """The latent samples ``inf`` of cells in batches ``b`` decoded in batch ``code``
        (``None``: their own), without the dropout head (the queries never read it)."""
        return self.module.generative(
            inf.z,
            inf.library_gene,
            b,
            transform_batch=code,
            compute_dropout=False,
            compute_rna=compute_rna,
        )

    @staticmethod
    def _denoised_protein(
        gen: GenerativeOutputs,
        *,
        measured: bool,
        sample_mixing: bool = False,
        include_background: bool = False,
        scale: bool = False,
    ) -> torch.Tensor:
        """Denoised protein of a decoding (spec §7.3): the foreground rate times
        ``1 - π`` (π drawn as a Bernoulli when ``sample_mixing``), plus the background rate
        times π if asked, L1-normalised per cell if ``scale``; rates on the measured scale
        when ``measured``."""
        mix = torch.sigmoid(gen.py["mixing"])
        if sample_mixing:
            mix = torch.bernoulli(mix)
        rate_back, rate_fore = gen.protein_rates(measured=measured)
        pro = rate_fore * (1 - mix)
        if include_background:
            pro = pro + rate_back * mix
        if scale:
            pro = torch.nn.functional.normalize(pro, p=1, dim=-1)
        return pro

    @staticmethod
    def _require_counts(data: CiteSeqData, what: str) -> None:
        if data.minified is not None:
            msg = (
                f"{data.source or 'data'} is minified (counts were dropped, only the latent "
                f"posterior is kept): {what} needs the original counts"
            )
            raise CiteSeqDataError(msg)

    @contextlib.contextmanager
    def _eval(self, seed: int | Stream | None) -> Iterator[PassTurns]:
        """Eval mode, and the pass's turns on its random stream
        (:class:`~model.streams.Stream`): seeded ``seed``, or from the generator's current
        state for ``None`` (which stays as it was), or ``seed`` itself when it is a stream
        (a caller making several passes as one scvi-tools call, seeded once). Every
        minibatch draws inside one ``turn()``, without gradients, so passes on other
        threads do not change its numbers. Gradients are off in the turns only: grad mode
        is per thread, and a generator suspended mid-pass would leave it off for the
        caller (or, with two passes advanced in turn, switch it back on for the other)."""
        was = self.module.training
        self.module.eval()
        turns = PassTurns(seed if isinstance(seed, Stream) else Stream(seed, self.device))
        # scvi-tools' DataLoader draws its base seed before the first minibatch: one draw
        # here keeps every later draw on scvi-tools' random stream (bit-equal samples)
        with turns.turn():
            torch.empty((), dtype=torch.int64).random_()
        try:
            yield turns
        finally:
            self.module.train(was)

    def _feature_index(self, names: Sequence[str] | None, all_names: pd.Index) -> np.ndarray:
        if names is None:
            return np.arange(len(all_names))
        pos = all_names.get_indexer(list(names))
        if (pos < 0).any():
            missing = [n for n, p in zip(names, pos, strict=True) if p < 0]
            msg = f"unknown feature(s) {missing[:5]} (model has {len(all_names)} of this kind)"
            raise KeyError(msg)
        return pos

    def _features(
        self, gene_list: Sequence[str] | None, protein_list: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``gene_list`` and ``protein_list`` (``None``: all) in the model."""
        return (
            self._feature_index(gene_list, self.var_names),
            self._feature_index(protein_list, self.protein_names),
        )


class PosteriorQueries(PosteriorBase):
    """Latent representation, denoised expression, foreground probability and samples."""

    def get_latent_representation(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        return_dist: bool = False,
        batch_size: int = 1024,
        seed: int | None = 0,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior mean (or one sample) of z per cell; ``return_dist`` gives (mean, var)."""
        data = self._prepare_data(data)
        means, variances, out = [], [], []
        with self._eval(seed) as stream:
            for idx, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    inf = self._infer(data, idx, x, y, b)
                    means.append(inf.qz_m.cpu().numpy())
                    variances.append(inf.qz_v.cpu().numpy())
                    if not give_mean:
                        out.append(inf.z.cpu().numpy())
                    elif self.config.latent_distribution == "ln":
                        samples = torch.distributions.Normal(inf.qz_m, inf.qz_v.sqrt()).sample(
                            (mc_samples,)
                        )
                        out.append(torch.softmax(samples, dim=-1).mean(0).cpu().numpy())
                    else:
                        out.append(inf.qz_m.cpu().numpy())
        if return_dist:
            return np.concatenate(means), np.concatenate(variances)
        return np.concatenate(out)

    def get_latent_library_size(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        give_mean: bool = True,
        batch_size: int = 1024,
        seed: int | None = 0,
    ) -> np.ndarray:
        """Library size per cell: log-normal mean of q(l) or the observed RNA total."""
        data = self._prepare_data(data)
        self._require_counts(data, "the latent library size")
        out = []
        with self._eval(seed) as stream:
            for _, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    inf = self.module.inference(x, y, b)
                    if give_mean:
                        out.append(torch.exp(inf.ql_m + 0.5 * inf.ql_v).cpu().numpy())
                    else:
                        out.append(inf.library_gene.cpu().numpy())
        return np.concatenate(out).ravel()

    def get_normalized_expression(
        self,
        data: CiteSeqData | None = None,
        *,
        return_numpy: bool = False,
        **options: Unpack[NormalizedExpressionOptions],
    ) -> tuple[Any, Any]:
        """Denoised RNA and protein (spec §7.3), averaged over ``transform_batch``.

        RNA is ``px_scale · library_size`` (or ``px_rate`` for ``"latent"``); protein is the
        foreground rate ``rate_fore · (1 − π)`` (+ background if asked). On the measured
        scale (default) the rates are times the capture efficiency of the batch decoded in
        (the cell's own, or ``transform_batch``), as the counts are;
        ``protein_scale="efficiency-free"`` leaves it out, as scvi-tools 1.4.2 does.
        ``options`` (and their defaults) are those of :meth:`iter_normalized_expression`;
        data frames unless ``return_numpy`` or ``n_samples > 1`` with ``return_mean=False``.
        """
        data = self._prepare_data(data)
        rna_parts, pro_parts, cells = [], [], []
        for idx, rna, pro in self.iter_normalized_expression(data, **options):
            rna_parts.append(rna)
            pro_parts.append(pro)
            cells.append(idx)
        rna_out, pro_out = np.concatenate(rna_parts), np.concatenate(pro_parts)
        if return_numpy or rna_out.ndim == 3:
            return rna_out, pro_out
        gi, pi = self._features(options.get("gene_list"), options.get("protein_list"))
        obs_names = data.obs_names[np.concatenate(cells)]
        return (
            pd.DataFrame(rna_out, index=obs_names, columns=self.var_names[gi]),
            pd.DataFrame(pro_out, index=obs_names, columns=self.protein_names[pi]),
        )

    def iter_normalized_expression(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        transform_batch: BatchSpec = None,
        gene_list: Sequence[str] | None = None,
        protein_list: Sequence[str] | None = None,
        n_samples: int = 1,
        library_size: float | Literal["latent"] = 1.0,
        sample_protein_mixing: bool = False,
        scale_protein: bool = False,
        include_protein_background: bool = False,
        return_mean: bool = True,
        batch_size: int = 256,
        seed: int | None = 0,
        protein_scale: ProteinScale = MEASURED,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`get_normalized_expression` one minibatch at a time, for callers that must
        not hold every cell at once: yields ``(cell positions, rna, protein)`` numpy arrays.

        The draws are those of :meth:`get_normalized_expression` with the same arguments (one
        random stream seeded once, minibatches in order), so concatenating the parts gives
        its result bit for bit. The model stays in eval mode, under ``no_grad`` and on its
        own random stream until the generator is exhausted or closed; each minibatch is
        drawn in one turn of the stream, so the consumer may draw in between.
        """
        data = self._prepare_data(data)
        gi, pi = self._features(gene_list, protein_list)
        codes = self._batch_codes(transform_batch)
        measured = is_measured(protein_scale)
        with self._eval(seed) as stream:
            for minibatch in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    rna_acc = pro_acc = None
                    posterior = self._encode(data, minibatch, codes)
                    for code in codes:
                        gen = self._decode(
                            data,
                            minibatch,
                            code,
                            n_samples=n_samples,
                            compute_rna=len(gi) > 0,
                            posterior=posterior,
                        )
                        px, py = gen.px, gen.py
                        if len(gi):
                            rna = px["rate"] if library_size == "latent" else px["scale"]
                            rna = rna[..., gi]
                        else:  # protein-only query: the gene heads were skipped
                            rna = py["mixing"][..., :0]
                        pro = self._denoised_protein(
                            gen,
                            measured=measured,
                            sample_mixing=sample_protein_mixing,
                            include_background=include_protein_background,
                            scale=scale_protein,
                        )[..., pi]
                        rna_acc = rna if rna_acc is None else rna_acc + rna
                        pro_acc = pro if pro_acc is None else pro_acc + pro
                    rna_acc = rna_acc / len(codes)
                    pro_acc = pro_acc / len(codes)
                    if library_size != "latent":
                        rna_acc = rna_acc * float(library_size)
                    if n_samples > 1:
                        rna_acc, pro_acc = rna_acc.permute(1, 2, 0), pro_acc.permute(1, 2, 0)
                        if return_mean:
                            rna_acc, pro_acc = rna_acc.mean(-1), pro_acc.mean(-1)
                    out = minibatch[0], rna_acc.cpu().numpy(), pro_acc.cpu().numpy()
                yield out

    def get_protein_foreground_probability(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        transform_batch: BatchSpec = None,
        protein_list: Sequence[str] | None = None,
        n_samples: int = 1,
        return_numpy: bool = False,
        batch_size: int = 256,
        seed: int | None = 0,
    ) -> Any:
        """Probability that each protein count is foreground: ``1 − mean_b σ(mixing)``."""
        data = self._prepare_data(data)
        pi = self._feature_index(protein_list, self.protein_names)
        codes = self._batch_codes(transform_batch)
        parts, cells = [], []
        with self._eval(seed) as stream:
            for minibatch in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    acc = None
                    posterior = self._encode(data, minibatch, codes)
                    for code in codes:
                        gen = self._decode(
                            data,
                            minibatch,
                            code,
                            n_samples=n_samples,
                            compute_rna=False,
                            posterior=posterior,
                        )
                        mix = torch.sigmoid(gen.py["mixing"])[..., pi]
                        if n_samples > 1:
                            mix = mix.mean(0)
                        acc = mix if acc is None else acc + mix
                    parts.append((1 - acc / len(codes)).cpu().numpy())
                    cells.append(minibatch[0])
        out = np.concatenate(parts)
        if return_numpy:
            return out
        return pd.DataFrame(
            out, index=data.obs_names[np.concatenate(cells)], columns=self.protein_names[pi]
        )

    def posterior_predictive_sample(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        protein_list: Sequence[str] | None = None,
        batch_size: int = 256,
        seed: int | None = 0,
        protein_scale: ProteinScale = MEASURED,
    ) -> dict[str, np.ndarray]:
        """Counts drawn from the posterior predictive: ``{"rna", "protein"}`` arrays.

        Shapes are ``(cells, features)`` or ``(cells, features, n_samples)``. Proteins come
        from the likelihood the model was trained with (capture efficiency of the cell's
        batch applied); ``protein_scale="efficiency-free"`` leaves it out and draws what
        scvi-tools 1.4.2 draws. An empty ``gene_list`` skips the RNA heads and draws (faster;
        the random stream is then not scvi-tools').
        """
        rna_parts, pro_parts = [], []
        for _, rna, pro in self.iter_posterior_predictive_sample(
            data,
            indices=indices,
            n_samples=n_samples,
            gene_list=gene_list,
            protein_list=protein_list,
            batch_size=batch_size,
            seed=seed,
            protein_scale=protein_scale,
        ):
            rna_parts.append(rna)
            pro_parts.append(pro)
        return {"rna": np.concatenate(rna_parts), "protein": np.concatenate(pro_parts)}

    def iter_posterior_predictive_sample(
        self,
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
        """:meth:`posterior_predictive_sample` one minibatch at a time: ``(cells, rna,
        protein)`` per minibatch, the same draws in the same order (memory: one minibatch).

        The draws run on a stream of their own (one turn per minibatch, :mod:`model.streams`):
        the consumer, or another thread, may draw between minibatches.
        """
        if self.config.gene_likelihood != "nb":
            msg = "posterior_predictive_sample needs gene_likelihood='nb' (as in scvi-tools)"
            raise ValueError(msg)
        data = self._prepare_data(data)
        gi, pi = self._features(gene_list, protein_list)
        measured = is_measured(protein_scale)
        with self._eval(seed) as stream:
            for idx, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    inf = self._infer(data, idx, x, y, b, n_samples=n_samples)
                    rna, pro = self.module.sample(
                        x,
                        y,
                        b,
                        n_samples=n_samples,
                        inf=inf,
                        measured=measured,
                        compute_rna=len(gi) > 0,
                    )
                    rna, pro = rna[..., gi], pro[..., pi]
                    if n_samples > 1:
                        rna, pro = rna.permute(1, 2, 0), pro.permute(1, 2, 0)
                    out = idx, rna.cpu().numpy(), pro.cpu().numpy()
                yield out

    def impute_missing_proteins(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        n_samples: int = 1,
        batch_size: int = 256,
        seed: int | None = 0,
        protein_scale: ProteinScale = MEASURED,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Denoised protein for every cell, with each protein decoded in the batches that
        measured it (on their measured scale by default, see :meth:`get_normalized_expression`);
        also a boolean table of which entries were imputed (not measured)."""
        data = self._prepare_data(data)
        measured = (
            np.ones((self.config.n_batch, self.config.n_proteins), dtype=bool)
            if self.protein_batch_mask is None
            else np.asarray(self.protein_batch_mask, dtype=bool)
        )
        weights = measured[:, None, :].astype(np.float32)
        counts = np.maximum(weights.sum(0), 1)
        on_measured_scale = is_measured(protein_scale)
        parts = []
        # One pass: a minibatch is encoded and its latents drawn once, then decoded (proteins
        # only) in every batch, each decoding from the same point of the random stream. A
        # query per batch seeded ``seed`` draws exactly these numbers (the same latents, and
        # the background draw of each decoding), so the values are theirs bit for bit (test)
        # at a seventeenth of the encoder passes for 17 batches.
        with self._eval(seed) as stream:
            for idx, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    inf = self._infer(data, idx, x, y, b, n_samples=n_samples)
                    start = _stream_state(x.device)
                    per_batch = []
                    for code in range(self.config.n_batch):
                        _set_stream_state(x.device, start)
                        gen = self._generate(inf, b, code, compute_rna=False)
                        pro = self._denoised_protein(gen, measured=on_measured_scale)
                        if n_samples > 1:
                            pro = pro.permute(1, 2, 0).mean(-1)
                        per_batch.append(pro.cpu().numpy())
                    parts.append((np.stack(per_batch) * weights).sum(0) / counts)
        values = np.concatenate(parts)
        idx = np.arange(data.n_cells) if indices is None else np.asarray(indices)
        obs_names = data.obs_names[idx]
        imputed = ~measured[data.batch[idx]]
        return (
            pd.DataFrame(values, index=obs_names, columns=self.protein_names),
            pd.DataFrame(imputed, index=obs_names, columns=self.protein_names),
        )


def _stream_state(device: torch.device) -> torch.Tensor:
    """The state of the random stream that draws on ``device`` (CPU or a CUDA device)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.random.get_rng_state()


def _set_stream_state(device: torch.device, state: torch.Tensor) -> None:
    """Put the stream of ``device`` back at ``state`` (:func:`_stream_state`)."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.random.set_rng_state(state)


class Likelihoods(PosteriorBase):
    """ELBO, reconstruction error and marginal likelihood of data under the model."""

    def get_elbo(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int = 1024,
        seed: int | None = 0,
    ) -> float:
        """Mean ELBO per cell, ``-(reconstruction loss + local KL)``: higher is better.

        The same sign as scvi-tools' ``get_elbo`` (which returns ``-compute_elbo(...)``: "not
        the negative ELBO, higher is better"), so it is negative for count data and is minus
        the training history's ``elbo_validation`` (the per-cell loss scvi-tools logs under
        that name) on the same cells.
        """
        return -self._mean_losses(data, indices=indices, batch_size=batch_size, seed=seed)[
            "negative_elbo"
        ]

    def get_reconstruction_error(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int = 1024,
        seed: int | None = 0,
    ) -> dict[str, float]:
        """Mean per-cell reconstruction losses (negative log-likelihoods, lower is better).

        Keys ``reconstruction_loss_gene`` and ``reconstruction_loss_protein``, values as
        scvi-tools' ``get_reconstruction_error`` returns them for TOTALVI (positive losses).
        """
        losses = self._mean_losses(data, indices=indices, batch_size=batch_size, seed=seed)
        return {k: losses[k] for k in ("reconstruction_loss_gene", "reconstruction_loss_protein")}

    def _mean_losses(
        self,
        data: CiteSeqData | None,
        *,
        indices: np.ndarray | None,
        batch_size: int,
        seed: int | None,
    ) -> dict[str, float]:
        """Per-cell means of the reconstruction losses and of the negative ELBO (kl weight 1)."""
        data = self._prepare_data(data)
        self._require_counts(data, "the ELBO / reconstruction error")
        tot = {
            "reconstruction_loss_gene": 0.0,
            "reconstruction_loss_protein": 0.0,
            "negative_elbo": 0.0,
        }
        n = 0
        with self._eval(seed) as stream:
            for idx, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    _, _, out = self.module(x, y, b, 1.0)
                    tot["reconstruction_loss_gene"] += out.rec_gene.sum().item()
                    tot["reconstruction_loss_protein"] += out.rec_protein.sum().item()
                    tot["negative_elbo"] += out.elbo_per_cell().sum().item()
                    n += len(idx)
        return {k: v / max(n, 1) for k, v in tot.items()}

    def get_marginal_ll(
        self,
        data: CiteSeqData | None = None,
        *,
        indices: np.ndarray | None = None,
        n_mc_samples: int = 100,
        batch_size: int = 256,
        seed: int | None = 0,
    ) -> float:
        """Importance-sampled mean log p(x, y) per cell."""
        data = self._prepare_data(data)
        self._require_counts(data, "the marginal likelihood")
        total, n = 0.0, 0
        with self._eval(seed) as stream:
            for idx, x, y, b in self._minibatches(data, indices, batch_size):
                with stream.turn():
                    total += self.module.marginal_ll(x, y, b, n_mc_samples).sum().item()
                    n += len(idx)
        return total / max(n, 1)
