"""What the Concordance page shows: each protein against its gene's RNA, per cell type.

Figure-ready shapes over the cached
:meth:`~dashboard.backend.concordance.Concordance.gene_protein_concordance` (computed in a
background job, :func:`submit_concordance`): the grid's rows (one per pair), the heatmap of
per-type correlations with the discordant types marked, and the cells of one pair for the
scatter. Cell types show the user's names; pairs are chosen by :func:`pair_key`, checked
against the known pairs (a forged key gets one line, never a traceback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.protein_genes import alias_key
from dashboard.views.features import feature_catalog

if TYPE_CHECKING:
    from dashboard.backend.concordance import ConcordanceResult
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: The backend query the page's job runs (one of the service's job queries).
QUERY = "gene_protein_concordance"
#: Cells per type drawn in the scatter, at most (a seeded sample beyond it).
SCATTER_CELLS_PER_TYPE = 1500
#: Between a protein's and its gene's shown names.
PAIR_SEPARATOR = " ~ "
#: The (protein alias, gene) the scatter opens on when the model has it.
PREFERRED = ("CD14", "CD14")


@dataclass(frozen=True)
class HeatmapData:
    """Per (pair, cell type) correlations and flags, rows = pairs, columns = types."""

    z: list[list[float | None]]  #: Pearson r (``None``: too few cells or constant)
    rows: list[str]  #: ``"CD14 protein ~ CD14"``
    columns: list[str]  #: the types' shown names
    flags: list[list[str]]  #: ``""`` or the flag of the cell
    n_cells: list[int]  #: cells per type (the columns)


def submit_concordance(service: AnalysisService, pair: Pair) -> str:
    """Start the concordance job for ``pair`` (a cached result finishes at once)."""
    return service.submit(QUERY, pair)


def pair_key(protein: str, gene: str) -> str:
    """The id of one (protein, gene) pair in the grid, the dropdown and callbacks."""
    return f"{protein}|{gene}"


def concordance(service: AnalysisService, pair: Pair) -> ConcordanceResult:
    """The cached result (the job computed it; a direct call computes it here)."""
    return service.gene_protein_concordance(pair)


def pair_label(service: AnalysisService, pair: Pair, protein: str, gene: str) -> str:
    """``"CD14 protein ~ CD14"``: the shown names of the protein and the gene."""
    catalog = feature_catalog(service, pair)
    return (
        f"{catalog.shown_name(f'protein:{protein}')}{PAIR_SEPARATOR}"
        f"{catalog.shown_name(f'gene:{gene}')}"
    )


def _shown_types(service: AnalysisService, pair: Pair, ids: list[str]) -> dict[str, str]:
    names = service.cell_type_names(pair)
    return {t: names.get(t, t) for t in ids}


def grid_rows(service: AnalysisService, pair: Pair) -> list[dict[str, object]]:
    """One row per pair: shown names, how it was matched, the model's and the all-cells
    correlation, the median per-type correlation and the flagged types (shown names)."""
    result = concordance(service, pair)
    shown = _shown_types(service, pair, result.cell_types)
    catalog = feature_catalog(service, pair)
    rows = []
    for p in result.pairs.itertuples(index=False):
        per_type = result.per_type[
            (result.per_type["protein"] == p.protein) & (result.per_type["gene"] == p.gene)
        ]
        flagged = per_type[per_type["flag"] != ""]
        median = per_type["correlation"].median(skipna=True)
        rows.append(
            {
                "key": pair_key(p.protein, p.gene),
                "protein": catalog.shown_name(f"protein:{p.protein}"),
                "gene": catalog.shown_name(f"gene:{p.gene}"),
                "how": p.how,
                "model_correlation": _number(p.model_correlation),
                "pearson_all": _number(p.pearson_all),
                "median_type_correlation": _number(median),
                "n_flagged": int(p.n_flagged),
                "flagged": "; ".join(
                    f"{shown[t]} ({f})"
                    for t, f in zip(flagged["cell_type"], flagged["flag"], strict=True)
                ),
            }
        )
    return rows


def heatmap_data(service: AnalysisService, pair: Pair) -> HeatmapData:
    """The per-type correlations as a (pairs x types) grid, with flags and type sizes."""
    result = concordance(service, pair)
    order = result.cell_types
    shown = _shown_types(service, pair, order)
    z, flags, labels = [], [], []
    for p in result.pairs.itertuples(index=False):
        t = result.per_type[
            (result.per_type["protein"] == p.protein) & (result.per_type["gene"] == p.gene)
        ].set_index("cell_type")
        t = t.reindex(order)
        z.append([_number(v) for v in t["correlation"]])
        flags.append([str(f) if isinstance(f, str) else "" for f in t["flag"]])
        labels.append(pair_label(service, pair, p.protein, p.gene))
    sizes = result.per_type.drop_duplicates("cell_type").set_index("cell_type")["n_cells"]
    n_cells = [int(sizes.get(t, 0)) for t in order]
    return HeatmapData(z, labels, [shown[t] for t in order], flags, n_cells)


def pair_options(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """The dropdown's options: every pair, by its shown names."""
    result = concordance(service, pair)
    return [
        {"label": pair_label(service, pair, p, g), "value": pair_key(p, g)}
        for p, g in zip(result.pairs["protein"], result.pairs["gene"], strict=True)
    ]


def default_pair(options: list[dict[str, str]]) -> str | None:
    """The pair the scatter opens on: CD14 protein ~ CD14 (a classic monocyte check) when
    the model has it, else the first."""
    for o in options:
        protein, _, gene = o["value"].partition("|")
        if alias_key(protein) == PREFERRED[0] and gene.upper() == PREFERRED[1]:
            return o["value"]
    return options[0]["value"] if options else None


def check_pair(service: AnalysisService, pair: Pair, key: object) -> tuple[str, str]:
    """``(protein, gene)`` of a pair key from the browser, else :class:`InvalidSelection`
    (one line); checked against the model's matched pairs (nothing is computed)."""
    known = {
        pair_key(m.protein, m.gene): (m.protein, m.gene) for m in service.protein_gene_pairs(pair)
    }
    if not isinstance(key, str) or key not in known:
        shown = str(key)[:60]
        msg = f"unknown protein-gene pair {shown!r}: pick one of the table's pairs"
        raise InvalidSelection(msg)
    return known[key]


def scatter_frame(
    service: AnalysisService,
    pair: Pair,
    key: object,
    *,
    per_type: int = SCATTER_CELLS_PER_TYPE,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str], tuple[str, str]]:
    """log1p denoised RNA (``rna``) and protein (``protein``) of one pair's cells with each
    cell's shown type (``cell_type``; at most ``per_type`` cells per type, seeded), the
    types' order and the axes' names (gene, protein)."""
    protein, gene = check_pair(service, pair, key)
    rna = service.denoised_rna(pair, [gene])[gene].to_numpy(np.float64)
    pro = service.denoised_protein(pair)[protein].to_numpy(np.float64)
    types = service.shown_cell_types(pair)
    order = [str(c) for c in types.cat.categories]
    labels = types.astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for t in order:
        idx = np.flatnonzero(labels == t)
        keep.append(idx if len(idx) <= per_type else rng.choice(idx, per_type, replace=False))
    rows = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    frame = pd.DataFrame(
        {"cell_type": labels[rows], "rna": np.log1p(rna[rows]), "protein": np.log1p(pro[rows])}
    )
    catalog = feature_catalog(service, pair)
    names = (catalog.shown_name(f"gene:{gene}"), catalog.shown_name(f"protein:{protein}"))
    return frame, order, names


def _number(value: object) -> float | None:
    """A finite float, or ``None`` (JSON null: the grid and plotly show a gap)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
