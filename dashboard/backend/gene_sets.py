"""Per-cell scores of gene sets (genes and/or proteins) from the model's denoised values.

The score of a cell for a set of features ``F`` is

    score(cell) = mean over f in F of z_f(cell),
    z_f = (x_f - mean_cells(x_f)) / sd_cells(x_f),   x_f = log1p(denoised value of f),

with the mean and the (population, ``ddof=0``) standard deviation taken across all cells of
the dataset (``scipy.stats.zscore``, as ``scanpy.pp.scale`` scales). Genes read the denoised
RNA per 10k counts (:meth:`~dashboard.backend.expression.Expression.denoised_rna`, each
cell decoded in its own batch), proteins the denoised foreground protein on the configured
scale (:meth:`~dashboard.backend.expression.Expression.denoised_protein`). Each feature
counts once whatever its level, so a set of genes and proteins mixes both on one scale. A
feature that does not vary across cells (standard deviation below :data:`MIN_SD`) has no
z-score: it is dropped, and the result says so.

Cached by content (:class:`~dashboard.backend.results.Results`): the key holds the sorted
genes and proteins and the denoising's parameters, so the same set asked for in another
order, by another user or after a restart is read back, never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import zscore

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.results import CachedQueries

if TYPE_CHECKING:
    from dashboard.backend.expression import Expression
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import ProgressFn, Results
    from dashboard.backend.settings import Settings

#: Most features a set may have.
MAX_FEATURES = 500
#: A feature whose log1p denoised values vary less than this (sd across cells) is dropped.
MIN_SD = 1e-6
#: Genes read from the denoised RNA blocks at once (memory: cells x this many values).
GENES_PER_READ = 16
_VERSION = 1  # of the score's definition (part of the cache key)


@dataclass(frozen=True)
class GeneSetScore:
    """A set's per-cell score (``values``, float32, one per cell in the dataset's order),
    the genes and proteins it averages, and the features dropped for not varying."""

    values: np.ndarray
    genes: tuple[str, ...]
    proteins: tuple[str, ...]
    dropped: tuple[str, ...]  # "gene:<name>" / "protein:<name>"


class GeneSetScores(CachedQueries):
    """Scores of gene sets over a pair's cells (:func:`GeneSetScores.gene_set_score`).

    Parameters
    ----------
    results, registry, settings
        As :class:`~dashboard.backend.results.CachedQueries`.
    expression
        The part that answers the denoised RNA and protein.
    """

    def __init__(
        self, results: Results, registry: Registry, settings: Settings, *, expression: Expression
    ) -> None:
        super().__init__(results, registry, settings)
        self.expression = expression

    def gene_set_score(
        self,
        pair: Pair,
        genes: Sequence[str] = (),
        proteins: Sequence[str] = (),
        *,
        progress: ProgressFn | None = None,
    ) -> GeneSetScore:
        """The per-cell score of the set ``genes`` + ``proteins`` (the module's definition:
        the mean over its features of the z-scored log1p denoised values).

        Unknown names, an empty set or more than :data:`MAX_FEATURES` features raise one
        line (:class:`~dashboard.backend.errors.InvalidSelection`); so does a set whose
        every feature is constant across cells.
        """
        genes_s, proteins_s = self._checked(pair, genes, proteins)
        params: dict[str, Any] = {
            "genes": list(genes_s),
            "proteins": list(proteins_s),
            "n_samples": self.settings.denoise_n_samples,
            "seed": self.settings.seed,
            "library_size": 1e4,
            "protein_scale": self.expression.protein_scale(),
            "version": _VERSION,
        }

        def compute() -> GeneSetScore:
            return self._score(pair, genes_s, proteins_s, progress)

        return self.results.cached("gene_set_score", pair, params, compute, progress)

    def _checked(
        self, pair: Pair, genes: Sequence[str], proteins: Sequence[str]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The set's genes and proteins, distinct and sorted, each checked against the
        model (one line naming the unknown)."""
        if isinstance(genes, str) or isinstance(proteins, str):
            msg = "a gene set's genes and proteins are lists of names"
            raise InvalidSelection(msg)
        genes_s = tuple(sorted({str(g) for g in genes}))
        proteins_s = tuple(sorted({str(p) for p in proteins}))
        n = len(genes_s) + len(proteins_s)
        if n == 0:
            msg = "the gene set is empty: give at least one gene or protein"
            raise InvalidSelection(msg)
        if n > MAX_FEATURES:
            msg = f"a gene set has at most {MAX_FEATURES} genes and proteins; this one has {n}"
            raise InvalidSelection(msg)
        model = self.registry.model(pair)
        for kind, names, known in (
            ("gene", genes_s, set(map(str, model.var_names))),
            ("protein", proteins_s, set(map(str, model.protein_names))),
        ):
            missing = [name for name in names if name not in known]
            if missing:
                shown = ", ".join(m[:40] for m in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                msg = f"the model has no {kind}(s) {shown}{more}"
                raise InvalidSelection(msg)
        return genes_s, proteins_s

    def _score(
        self,
        pair: Pair,
        genes: tuple[str, ...],
        proteins: tuple[str, ...],
        progress: ProgressFn | None,
    ) -> GeneSetScore:
        """Sum the features' z-scores block by block (memory: cells x a few features)."""
        n_cells = self.registry.dataset(pair).n_cells
        total = np.zeros(n_cells, dtype=np.float64)
        used: list[str] = []
        dropped: list[str] = []
        for kind, names, values in self._log_values(pair, genes, proteins):
            varies = values.std(axis=0) >= MIN_SD  # a constant feature has no z-score
            if varies.any():
                total += zscore(values[:, varies], axis=0, ddof=0).sum(axis=1)
            used += [f"{kind}:{n}" for n, ok in zip(names, varies, strict=True) if ok]
            dropped += [f"{kind}:{n}" for n, ok in zip(names, varies, strict=True) if not ok]
            if progress is not None:
                progress((len(used) + len(dropped)) / (len(genes) + len(proteins)), "scoring")
        if not used:
            msg = "every feature of the gene set is constant across cells: nothing to score"
            raise InvalidSelection(msg)
        return GeneSetScore(
            values=(total / len(used)).astype(np.float32),
            genes=tuple(u.split(":", 1)[1] for u in used if u.startswith("gene:")),
            proteins=tuple(u.split(":", 1)[1] for u in used if u.startswith("protein:")),
            dropped=tuple(dropped),
        )

    def _log_values(
        self, pair: Pair, genes: tuple[str, ...], proteins: tuple[str, ...]
    ) -> Iterator[tuple[str, tuple[str, ...], np.ndarray]]:
        """``(kind, names, log1p denoised values: cells x names)``, genes a few at a time."""
        for first in range(0, len(genes), GENES_PER_READ):
            chunk = genes[first : first + GENES_PER_READ]
            frame = self.expression.denoised_rna(pair, list(chunk))
            yield "gene", chunk, np.log1p(frame.to_numpy(dtype=np.float64))
        if proteins:
            table = self.expression.denoised_protein(pair)
            yield "protein", proteins, np.log1p(table[list(proteins)].to_numpy(dtype=np.float64))
