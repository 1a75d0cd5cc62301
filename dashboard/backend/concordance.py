"""Gene-protein concordance: does each measured protein follow the RNA of its gene?

For every protein with a gene of the model (:func:`~dashboard.backend.protein_genes.
match_proteins_to_genes`), per cell type:

- the **Pearson** correlation across the type's cells of ``log1p`` denoised RNA (per 10k)
  and ``log1p`` denoised protein (foreground, the configured protein scale), with the type's
  mean of each (types with fewer than :data:`MIN_CELLS` cells, or a constant value, get NaN);
- a **discordance flag** (:func:`discordance_flags`): the type's mean protein is clearly high
  among the types while its gene's RNA is not (``"protein without RNA"``: e.g. a protein
  taken up or kept on the surface, or an antibody's off-target binding), or the reverse
  (``"RNA without protein"``);

and over all cells the **model's** correlation of the gene and the protein:
scvi-tools' ``get_feature_correlation_matrix(n_samples=10, correlation_type="spearman")``
on the denoised posterior samples, averaged over every batch as ``transform_batch``
(:meth:`~model.correlation.FeatureCorrelation.get_feature_correlation_matrix`).

Cached by :class:`Concordance` (kind ``"gene_protein_concordance"``), keyed by the cell types
(their automatic names; pages show the user's names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.protein_genes import ProteinGene, match_proteins_to_genes
from dashboard.backend.results import CachedQueries

if TYPE_CHECKING:
    from dashboard.backend.annotation import Annotation
    from dashboard.backend.expression import Expression
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import ProgressFn, Results
    from dashboard.backend.settings import Settings

#: Fewest cells of a type for its correlation (fewer: NaN).
MIN_CELLS = 10
#: Posterior samples per cell of the model's correlation (scvi-tools' default).
MODEL_SAMPLES = 10
#: A type is flagged when one modality's z-score across types exceeds the other's by this...
DISCORDANCE_GAP = 1.5
#: ... and the high one is at least this far above the types' average (clearly present).
PRESENT_Z = 0.5
PROTEIN_ONLY = "protein without RNA"
RNA_ONLY = "RNA without protein"
#: Bumped when the computation changes (older cached results are not reused).
VERSION = 2  # 2: the batch-averaged model correlation seeded once, as scvi-tools

CORRELATION_NOTE = (
    "Per cell type: Pearson correlation across the type's cells of log1p denoised RNA (per "
    "10k) and log1p denoised protein. Model: Spearman correlation of the gene and the "
    "protein over the model's denoised posterior samples (scvi-tools' "
    f"get_feature_correlation_matrix, {MODEL_SAMPLES} samples per cell, averaged over every "
    "batch as transform batch)."
)
FLAG_NOTE = (
    "Flag: z-score of the type's mean log1p denoised value among the types, per modality; "
    f"flagged when one is at least {PRESENT_Z} (clearly present) and exceeds the other by "
    f"{DISCORDANCE_GAP} or more: '{PROTEIN_ONLY}' or '{RNA_ONLY}'."
)


@dataclass(frozen=True)
class ConcordanceResult:
    """The concordance of every matched (protein, gene) pair.

    Attributes
    ----------
    pairs
        One row per pair, in the proteins' order: ``protein``, ``gene``, ``how`` (alias or
        same name), ``model_correlation``, ``pearson_all`` (over all cells), ``n_flagged``.
    per_type
        One row per (pair, cell type): ``protein``, ``gene``, ``cell_type`` (automatic
        name), ``n_cells``, ``correlation``, ``mean_rna``, ``mean_protein`` (log1p means),
        ``z_rna``, ``z_protein``, ``flag`` (``""`` when concordant).
    cell_types
        The types' automatic names, in their order.
    notes
        How the numbers were computed (what the page says under them).
    """

    pairs: pd.DataFrame
    per_type: pd.DataFrame
    cell_types: list[str]
    notes: dict[str, str] = field(default_factory=dict)

    def flagged(self, protein: str, gene: str) -> pd.DataFrame:
        """The flagged types of one pair (rows of :attr:`per_type`)."""
        t = self.per_type
        return t[(t["protein"] == protein) & (t["gene"] == gene) & (t["flag"] != "")]


def pearson_per_type(
    x: np.ndarray, y: np.ndarray, types: np.ndarray, order: list[str]
) -> pd.DataFrame:
    """Per type of ``order``: cells, Pearson r of ``x`` and ``y`` (NaN below
    :data:`MIN_CELLS` cells or for a constant vector) and both means."""
    rows = []
    for t in order:
        inside = types == t
        xs, ys = x[inside], y[inside]
        r = np.nan
        if len(xs) >= MIN_CELLS and np.ptp(xs) > 0 and np.ptp(ys) > 0:
            r = float(np.corrcoef(xs, ys)[0, 1])
        rows.append(
            {
                "cell_type": t,
                "n_cells": int(inside.sum()),
                "correlation": r,
                "mean_rna": float(xs.mean()) if len(xs) else np.nan,
                "mean_protein": float(ys.mean()) if len(ys) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _z(values: np.ndarray) -> np.ndarray:
    """z-scores across types (types weigh alike; all 0 when the values do not vary)."""
    finite = np.isfinite(values)
    out = np.zeros_like(values, dtype=float)
    if finite.sum() < 2:
        return out
    mean, sd = values[finite].mean(), values[finite].std()
    if sd > 0:
        out[finite] = (values[finite] - mean) / sd
    return out


def discordance_flags(
    mean_rna: np.ndarray, mean_protein: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """z-scores of the types' means across types, per modality, and each type's flag.

    Scale-free (the two modalities are never compared in their own units): a type is
    ``"protein without RNA"`` when ``z_protein >= PRESENT_Z`` and ``z_protein - z_rna >=
    DISCORDANCE_GAP``, ``"RNA without protein"`` the other way round, else ``""``.
    """
    z_rna, z_pro = _z(np.asarray(mean_rna, float)), _z(np.asarray(mean_protein, float))
    flags = []
    for zr, zp in zip(z_rna, z_pro, strict=True):
        if zp >= PRESENT_Z and zp - zr >= DISCORDANCE_GAP:
            flags.append(PROTEIN_ONLY)
        elif zr >= PRESENT_Z and zr - zp >= DISCORDANCE_GAP:
            flags.append(RNA_ONLY)
        else:
            flags.append("")
    return z_rna, z_pro, flags


def compute_concordance(
    matches: list[ProteinGene],
    rna: pd.DataFrame,
    protein: pd.DataFrame,
    types: np.ndarray,
    order: list[str],
    model_correlation: Callable[[list[str], list[str]], pd.DataFrame],
) -> ConcordanceResult:
    """The :class:`ConcordanceResult` of ``matches`` from denoised ``rna`` (cells x genes)
    and ``protein`` (cells x proteins), the cell ``types`` (in ``order``) and
    ``model_correlation(genes, proteins)`` (the model's gene-protein correlation matrix:
    genes then proteins)."""
    genes = list(dict.fromkeys(m.gene for m in matches))
    proteins = list(dict.fromkeys(m.protein for m in matches))
    matrix = model_correlation(genes, proteins) if matches else None
    pair_rows, type_rows = [], []
    for m in matches:
        x = np.log1p(rna[m.gene].to_numpy(np.float64))
        y = np.log1p(protein[m.protein].to_numpy(np.float64))
        table = pearson_per_type(x, y, types, order)
        z_rna, z_pro, flags = discordance_flags(table["mean_rna"], table["mean_protein"])
        table = table.assign(z_rna=z_rna, z_protein=z_pro, flag=flags)
        table.insert(0, "gene", m.gene)
        table.insert(0, "protein", m.protein)
        type_rows.append(table)
        model_r = np.nan
        if matrix is not None:
            model_r = float(
                matrix.iat[genes.index(m.gene), len(genes) + proteins.index(m.protein)]
            )
        whole = np.nan
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            whole = float(np.corrcoef(x, y)[0, 1])
        pair_rows.append(
            {
                "protein": m.protein,
                "gene": m.gene,
                "how": m.how,
                "model_correlation": model_r,
                "pearson_all": whole,
                "n_flagged": int(sum(f != "" for f in flags)),
            }
        )
    columns = ["protein", "gene", "cell_type", "n_cells", "correlation", "mean_rna"]
    columns += ["mean_protein", "z_rna", "z_protein", "flag"]
    per_type = (
        pd.concat(type_rows, ignore_index=True) if type_rows else pd.DataFrame(columns=columns)
    )
    pairs = pd.DataFrame(
        pair_rows,
        columns=["protein", "gene", "how", "model_correlation", "pearson_all", "n_flagged"],
    )
    notes = {"correlation": CORRELATION_NOTE, "flag": FLAG_NOTE}
    return ConcordanceResult(pairs, per_type, list(order), notes)


class Concordance(CachedQueries):
    """Cached gene-protein concordance of a pair.

    Parameters
    ----------
    results, registry, settings
        As :class:`~dashboard.backend.results.CachedQueries`.
    annotation, expression
        The cell types, and the denoised values compared.
    """

    def __init__(
        self,
        results: Results,
        registry: Registry,
        settings: Settings,
        *,
        annotation: Annotation,
        expression: Expression,
    ) -> None:
        super().__init__(results, registry, settings)
        self.annotation = annotation
        self.expression = expression

    def protein_gene_pairs(self, pair: Pair) -> list[ProteinGene]:
        """The (protein, gene) pairs of the pair's model, alias table first."""
        model = self.registry.model(pair)
        return match_proteins_to_genes(list(model.protein_names), list(model.var_names))

    def gene_protein_concordance(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        progress: ProgressFn | None = None,
    ) -> ConcordanceResult:
        """Per cell type correlation and discordance of every matched (protein, gene)
        pair, and the model's correlation of each (module docstring); the cell types are
        :meth:`~dashboard.backend.annotation.Annotation.cell_types` (``labels_key``,
        ``resolution``)."""
        report = progress or (lambda _f, _m: None)
        report(0.0, "cell types")
        types = self.annotation.cell_types(pair, labels_key=labels_key, resolution=resolution)
        matches = self.protein_gene_pairs(pair)
        scale = self.expression.protein_scale()
        params: dict[str, Any] = {
            "labels": np.asarray(types.astype(str)),
            "pairs": [[m.protein, m.gene, m.how] for m in matches],
            "denoise_n_samples": self.settings.denoise_n_samples,
            "protein_scale": scale,
            "model_samples": MODEL_SAMPLES,
            "seed": self.settings.seed,
            "rules": [MIN_CELLS, DISCORDANCE_GAP, PRESENT_Z],
            "version": VERSION,
        }

        def compute() -> ConcordanceResult:
            genes = list(dict.fromkeys(m.gene for m in matches))
            report(0.05, "denoised RNA")
            rna = self.expression.denoised_rna(pair, genes) if genes else pd.DataFrame()
            report(0.3, "denoised protein")
            protein = self.expression.denoised_protein(pair, protein_scale=scale)
            model, data = self.registry.model(pair), self.registry.dataset(pair)

            def model_correlation(g: list[str], p: list[str]) -> pd.DataFrame:
                report(0.4, "the model's correlation (posterior samples)")
                return model.get_feature_correlation_matrix(
                    data,
                    n_samples=MODEL_SAMPLES,
                    correlation_type="spearman",
                    transform_batch=list(range(len(model.batch_categories))),
                    gene_list=g,
                    protein_list=p,
                    seed=self.settings.seed,
                    protein_scale=scale,
                )

            labels = types.astype(str).to_numpy()
            order = [str(c) for c in types.cat.categories]
            result = compute_concordance(matches, rna, protein, labels, order, model_correlation)
            report(1.0, "done")
            return result

        return self.results.cached("gene_protein_concordance", pair, params, compute, progress)
