"""Denoised expression of a pair's cells: RNA (stored in gene blocks), protein foreground,
the probability that a protein count is foreground, and imputed proteins.

Cached results of :class:`Expression` (:class:`~dashboard.backend.results.Results`), computed
by :mod:`dashboard.backend.denoise`. Cells whose batch did not measure a protein (a mapped
query without those antibodies) get predictions in the protein tables, decoded in batches
that measured it (:func:`~dashboard.backend.denoise.fill_unmeasured`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend import denoise
from dashboard.backend.blocks import read_with_retry
from dashboard.backend.denoise import Sampling
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.results import CachedQueries
from model.protein_scale import ProteinScale, check_protein_scale

if TYPE_CHECKING:
    from dashboard.backend.blocks import BlockManifest
    from dashboard.backend.refs import Pair
    from dashboard.backend.results import ProgressFn
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

#: Genes per block decoded on demand (:meth:`Expression.denoised_rna_block`): small, so one
#: gene's first request decodes few others (at 72k cells a block is 4.6 MB).
DEMAND_BLOCK_GENES = 16
#: A protein table of a model and its data.
Table = Callable[["TotalVI", "CiteSeqData"], pd.DataFrame]
#: ``decode(model, data, indices=, transform_batch=, protein_list=, n_samples=,
#: return_numpy=True, seed=)``: protein values of some cells decoded in other batches.
Decode = Callable[..., Any]


class Expression(CachedQueries):
    """Denoised RNA and protein, foreground probability and imputed proteins of a pair
    (the RNA cached in blocks of ``settings.denoise_block_genes`` genes)."""

    # ====================================================================== RNA
    def decode_batches(self, pair: Pair, batch: str | None) -> tuple[str, ...] | None:
        """The model batches a denoised view is decoded in: ``None`` (each cell's own) for
        no ``batch``, every batch for :data:`~dashboard.backend.denoise.ALL_BATCHES`
        (averaged), else that one batch (a counterfactual); an unknown name raises one
        line."""
        if batch in (None, ""):
            return None
        names = [str(b) for b in self.registry.model(pair).batch_categories]
        if batch == denoise.ALL_BATCHES:
            return tuple(names)
        if not isinstance(batch, str) or batch not in names:
            known = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            msg = f"unknown batch {str(batch)[:40]!r}; the model knows {known}"
            raise InvalidSelection(msg)
        return (batch,)

    def denoised_rna(
        self,
        pair: Pair,
        genes: list[str] | None = None,
        *,
        batch: str | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Denoised RNA (per 10k counts), cells x genes (all genes, or ``genes``), decoded
        in each cell's own batch or as ``batch`` says (:meth:`decode_batches`).

        A few genes in each cell's own batch are decoded on first request, in blocks of
        :data:`DEMAND_BLOCK_GENES` genes (:meth:`denoised_rna_block`, from the stored
        decoder state: no pass over every gene). Every gene, many genes, a counterfactual
        batch, or genes of an already stored all-genes table come from the all-genes blocks
        (:meth:`denoised_rna_manifest`): ``genes=None`` assembles the whole table (small
        data; code that needs every gene at scale reads block by block:
        ``blocks.read_block``, or by chunks of cells: ``blocks.iter_cells``, as the
        ``.h5mu`` export does).
        """
        names = self.registry.model(pair).var_names
        if genes is not None:
            missing = [g for g in genes if g not in names]
            if missing:
                msg = f"unknown gene(s) {missing[:5]}"
                raise InvalidSelection(msg)
        index = self.registry.dataset(pair).obs_names
        if self._on_demand(pair, genes, batch):
            positions = names.get_indexer(list(genes or []))
            values = np.empty((len(index), len(positions)), dtype=np.float32)
            with self.results.keeping_last_key():
                for b in np.unique(positions // DEMAND_BLOCK_GENES):
                    block = self.denoised_rna_block(pair, int(b), progress=progress)
                    mine = np.flatnonzero(positions // DEMAND_BLOCK_GENES == b)
                    values[:, mine] = block[:, positions[mine] - b * DEMAND_BLOCK_GENES]
            return pd.DataFrame(values, index=index, columns=pd.Index(list(genes or [])))
        blocks = self.results.blocks
        manifest = self.denoised_rna_manifest(pair, batch=batch, progress=progress)
        with self.results.keeping_last_key() as key:
            values = read_with_retry(
                blocks,
                key,
                manifest,
                lambda: self.denoised_rna_manifest(pair, batch=batch, progress=progress),
                lambda m: blocks.read(m, None if genes is None else list(genes)),
            )
        columns = pd.Index(list(manifest.columns) if genes is None else list(genes))
        return pd.DataFrame(values, index=index, columns=columns)

    def _on_demand(self, pair: Pair, genes: list[str] | None, batch: str | None) -> bool:
        """True if ``genes`` are best decoded on demand: in each cell's own batch, at most
        a quarter of the model's demand blocks, and no all-genes table stored yet."""
        if genes is None or self.decode_batches(pair, batch) is not None:
            return False
        names = self.registry.model(pair).var_names
        wanted = len(np.unique(names.get_indexer(list(genes)) // DEMAND_BLOCK_GENES))
        every = -(-len(names) // DEMAND_BLOCK_GENES)
        if wanted > max(1, every // 4):
            return False
        return not self.results.has("denoised_rna", pair, self._denoise_params())

    def denoised_rna_state(self, pair: Pair, *, progress: ProgressFn | None = None) -> Any:
        """The decoder state a gene is decoded from on demand
        (:class:`~model.gene_columns.RnaDecoderState`: latent samples and the softmax's log
        normaliser per cell and sample; one encoder and decoder pass, about as long as
        decoding every gene once, but nothing per gene is written). Cache key: kind
        ``"denoised_rna_state"``, the params of :meth:`denoised_rna_manifest` (each cell's
        own batch), so its draws are those of the all-genes table."""
        params = self._denoise_params()

        def compute() -> Any:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            return model.rna_decoder_state(
                data,
                n_samples=params["n_samples"],
                library_size=params["library_size"],
                seed=params["seed"],
            )

        return self.results.cached("denoised_rna_state", pair, params, compute, progress)

    def denoised_rna_block(
        self, pair: Pair, block: int, *, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Denoised RNA (per 10k) of the model's genes ``block * DEMAND_BLOCK_GENES`` up to
        the next block, every cell, float32 ``cells x genes``: decoded from
        :meth:`denoised_rna_state` on first request and cached (kind
        ``"denoised_rna_genes"``, params those of the state plus ``"block"`` and
        ``"block_genes"``)."""
        n_genes = len(self.registry.model(pair).var_names)
        first = int(block) * DEMAND_BLOCK_GENES
        if not 0 <= first < n_genes:
            msg = f"gene block {block} is outside the model's {n_genes} genes"
            raise InvalidSelection(msg)
        params = {**self._denoise_params(), "block": int(block), "block_genes": DEMAND_BLOCK_GENES}

        def compute() -> np.ndarray:
            state = self.denoised_rna_state(pair, progress=progress)
            model = self.registry.model(pair)
            return model.rna_columns(
                state, np.arange(first, min(first + DEMAND_BLOCK_GENES, n_genes))
            )

        return self.results.cached("denoised_rna_genes", pair, params, compute, progress)

    def denoised_rna_rows(self, pair: Pair, cells: np.ndarray) -> tuple[np.ndarray, pd.Index]:
        """Denoised RNA (per 10k) of the ``cells`` positions (sorted), read by chunks of
        cells from the stored blocks, and its genes."""
        manifest = self.denoised_rna_manifest(pair)
        rows = []
        with self.results.keeping_last_key():
            for first, chunk in self.results.blocks.iter_cells(manifest, 4096):
                inside = cells[(cells >= first) & (cells < first + len(chunk))]
                rows.append(chunk[inside - first])
        values = np.concatenate(rows) if rows else np.zeros((0, len(manifest.columns)))
        return values.astype(np.float32), pd.Index(list(manifest.columns))

    def denoised_rna_manifest(
        self, pair: Pair, *, batch: str | None = None, progress: ProgressFn | None = None
    ) -> BlockManifest:
        """Compute (once) and return the manifest of the stored denoised RNA blocks.

        One pass of the model over the cells in chunks writes gene blocks of
        ``settings.denoise_block_genes`` genes (memory: one chunk of cells x genes, never
        the whole table); the denoised protein comes out of the same pass and is stored
        under its own key if missing. Cache key: kind ``"denoised_rna"``, params
        ``{"n_samples", "library_size": 1e4, "seed"}`` (plus ``"transform_batch"``, the
        batches decoded in, for a ``batch`` other than each cell's own).
        """
        batches = self.decode_batches(pair, batch)
        params = self._denoise_params(batches)

        def compute(open_writer: Any) -> None:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            genes = [str(g) for g in model.var_names]
            writer = open_writer(data.n_cells, genes, self.settings.denoise_block_genes)
            pro_parts = []
            scale = self.protein_scale()
            how = Sampling(
                n_samples=params["n_samples"],
                seed=params["seed"],
                protein_scale=scale,
                transform_batch=batches,
            )
            for first, rna, pro in denoise.denoised_chunks(
                model,
                data,
                chunk_cells=denoise.chunk_cells_for(len(genes)),
                library_size=params["library_size"],
                how=how,
            ):
                writer.write(rna)
                pro_parts.append(pro)
                if progress is not None:
                    done = (first + len(rna)) / max(1, data.n_cells)
                    progress(0.95 * done, f"denoised RNA: {first + len(rna)} cells")
            pro_all = (
                np.concatenate(pro_parts)
                if pro_parts
                else np.zeros((0, len(model.protein_names)), np.float32)
            )
            protein = pd.DataFrame(pro_all, index=data.obs_names, columns=model.protein_names)
            self._denoised_protein(pair, computed=protein, protein_scale=scale, batches=batches)

        return self.results.cached_blocks(
            "denoised_rna", pair, params, compute, progress, what="denoised RNA"
        )

    def denoised_rna_key(self, pair: Pair, *, batch: str | None = None) -> str:
        """Cache key of the denoised RNA manifest (its blocks live under ``blocks_dir``)."""
        batches = self.decode_batches(pair, batch)
        return self.results.key("denoised_rna", pair, self._denoise_params(batches))

    def _denoise_params(self, batches: tuple[str, ...] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "n_samples": self.settings.denoise_n_samples,
            "library_size": 1e4,
            "seed": self.settings.seed,
        }
        if batches is not None:  # the observed-batch key stays as it was
            params["transform_batch"] = list(batches)
        return params

    # ================================================================== protein
    def protein_scale(self, scale: str | None = None) -> ProteinScale:
        """``scale`` checked, or the configured default (``settings.protein_scale``)."""
        return check_protein_scale(self.settings.protein_scale if scale is None else scale)

    def denoised_protein(
        self,
        pair: Pair,
        *,
        protein_scale: str | None = None,
        batch: str | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Denoised protein (foreground rate), cells x proteins, on ``protein_scale``
        (default :meth:`protein_scale`: measured, times the batch's capture efficiency),
        decoded in each cell's own batch or as ``batch`` says (:meth:`decode_batches`)."""
        return self._denoised_protein(
            pair,
            protein_scale=protein_scale,
            batches=self.decode_batches(pair, batch),
            progress=progress,
        )

    def denoised_protein_ready(self, pair: Pair, *, protein_scale: str | None = None) -> bool:
        """True if the denoised protein of each cell's own batch (on ``protein_scale``) is
        in the cache: a view that would otherwise decode every cell inside a request shows
        raw counts while the warm steps compute it (:mod:`dashboard.views.pending`)."""
        params = self._protein_key_params(protein_scale)
        return self.results.has("denoised_protein", pair, self._with_unmeasured(pair, params))

    def _protein_key_params(self, protein_scale: str | None) -> dict[str, Any]:
        """The key params every denoised-protein table shares."""
        return {
            "n_samples": self.settings.denoise_n_samples,
            "seed": self.settings.seed,
            "protein_scale": self.protein_scale(protein_scale),
        }

    def _denoised_protein(
        self,
        pair: Pair,
        *,
        computed: pd.DataFrame | None = None,
        protein_scale: str | None = None,
        batches: tuple[str, ...] | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Cached denoised protein (kind ``"denoised_protein"``, params ``{"n_samples",
        "seed", "protein_scale"}`` plus ``"unmeasured": "predicted"`` when some cells lack
        proteins, or ``"transform_batch"`` when every cell is decoded in ``batches``: then
        every value is that decoding, measured or not).

        ``computed``: the protein table of a denoised-RNA pass (same draws as a protein-only
        pass, on the same scale), stored if the key is missing instead of running the model
        again.
        """
        params = self._protein_key_params(protein_scale)
        if batches is not None:
            how = Sampling(**params, transform_batch=batches)
            params["transform_batch"] = list(batches)

            def counterfactual() -> pd.DataFrame:
                if computed is not None:
                    return computed
                model, data = self.registry.model(pair), self.registry.dataset(pair)
                return denoise.denoised_protein(model, data, how)

            return self.results.cached("denoised_protein", pair, params, counterfactual, progress)

        def table(model: TotalVI, data: CiteSeqData) -> pd.DataFrame:
            return (
                denoise.denoised_protein(model, data, Sampling(**params))
                if computed is None
                else computed
            )

        def decode(model: TotalVI, data: CiteSeqData, **where: Any) -> Any:
            return model.get_normalized_expression(
                data, gene_list=[], protein_scale=params["protein_scale"], **where
            )[1]

        return self._with_predictions("denoised_protein", pair, params, table, decode, progress)

    def foreground_probability(
        self, pair: Pair, *, progress: ProgressFn | None = None
    ) -> pd.DataFrame:
        """Probability that each protein count is foreground, cells x proteins."""
        params = {"n_samples": self.settings.denoise_n_samples, "seed": self.settings.seed}

        def table(model: TotalVI, data: CiteSeqData) -> pd.DataFrame:
            return denoise.foreground_probability(model, data, Sampling(**params))

        def decode(model: TotalVI, data: CiteSeqData, **where: Any) -> Any:
            return model.get_protein_foreground_probability(data, **where)

        return self._with_predictions("foreground", pair, params, table, decode, progress)

    def imputed_proteins(
        self, pair: Pair, *, progress: ProgressFn | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Proteins for every cell decoded where measured (on the configured
        :meth:`protein_scale`), and which entries are imputed."""
        params = {
            "n_samples": self.settings.denoise_n_samples,
            "seed": self.settings.seed,
            "protein_scale": self.protein_scale(),
        }

        def compute() -> tuple[pd.DataFrame, pd.DataFrame]:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            return denoise.imputed_proteins(model, data, Sampling(**params))

        return self.results.cached("imputed", pair, params, compute, progress)

    def _with_predictions(
        self,
        kind: str,
        pair: Pair,
        params: dict[str, Any],
        table: Table,
        decode: Decode,
        progress: ProgressFn | None,
    ) -> pd.DataFrame:
        """Cached protein ``table`` of the pair; where cells lack a protein its entries are
        ``decode``-d in batches that measured it (key params then gain ``"unmeasured":
        "predicted"``)."""
        predicted = self._predicts_unmeasured(pair)
        key_params = self._with_unmeasured(pair, params, predicted)

        def compute() -> pd.DataFrame:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            values = table(model, data)
            if not predicted:
                return values

            def predict(cells: np.ndarray, batches: list[int], proteins: list[str]) -> Any:
                return decode(
                    model,
                    data,
                    indices=cells,
                    transform_batch=batches,
                    protein_list=proteins,
                    n_samples=params["n_samples"],
                    return_numpy=True,
                    seed=params["seed"],
                )

            return denoise.fill_unmeasured(values, model, data, predict)

        return self.results.cached(kind, pair, key_params, compute, progress)

    def _with_unmeasured(
        self, pair: Pair, params: dict[str, Any], predicted: bool | None = None
    ) -> dict[str, Any]:
        """The cache key params of a protein table: ``params`` plus ``"unmeasured":
        "predicted"`` where some cells lack proteins (:meth:`_predicts_unmeasured`)."""
        if predicted is None:
            predicted = self._predicts_unmeasured(pair)
        return {**params, "unmeasured": "predicted"} if predicted else params

    def _predicts_unmeasured(self, pair: Pair) -> bool:
        """True if some cells of the dataset lack proteins (a mapped query without those
        antibodies): protein tables then hold predictions for them, decoded in batches that
        measured the protein (:func:`~dashboard.backend.denoise.fill_unmeasured`)."""
        data = self.registry.dataset(pair)
        if data.minified is not None:  # all-zero counts: the model's panel says
            return denoise.unmeasured_proteins(self.registry.model(pair), data) is not None
        mask = data.protein_batch_mask
        if mask is None or data.n_cells == 0:
            return False
        present = np.bincount(data.batch, minlength=data.n_batch) > 0
        return bool((~np.asarray(mask, dtype=bool)[present]).any())
