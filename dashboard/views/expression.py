"""A gene or protein per cell type: raw and denoised values for violins, and the dot
plot's mean value and share of cells expressing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.views.colours import ColorSpec, feature_values
from dashboard.views.features import feature_catalog
from dashboard.views.label_sets import grouping_labels, grouping_name
from dashboard.views.values import gene_counts, protein_foreground
from model.protein_scale import SCALE_SHORT

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


def violin_frame(
    service: AnalysisService,
    pair: Pair,
    feature: str,
    *,
    max_per_group: int = 2000,
    seed: int = 0,
    batch: str = "",
) -> tuple[pd.DataFrame, list[str]]:
    """Raw and denoised values (log1p) of a gene or protein with each cell's type, and
    with a ``batch`` (:attr:`ColorSpec.batch`) the denoised values decoded there too
    (column ``decoded``).

    At most ``max_per_group`` cells per type are kept (seeded draw) so the payload stays
    small at any dataset size; returns the frame and the cell-type order.
    """
    spec = ColorSpec(feature)
    if spec.kind not in {"gene", "protein"}:
        msg = f"{feature} is not a gene or protein"
        raise InvalidSelection(msg)
    raw = feature_values(service, pair, ColorSpec(feature, "raw"))
    den = feature_values(service, pair, ColorSpec(feature, "denoised"))
    types = service.shown_cell_types(pair)
    order = [str(c) for c in types.cat.categories]
    frame = pd.DataFrame({"cell_type": types.astype(str).to_numpy(), "raw": raw, "denoised": den})
    if batch:
        frame["decoded"] = feature_values(service, pair, ColorSpec(feature, "denoised", batch))
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in frame.groupby("cell_type", observed=True).indices.items():
        keep.append(idx if len(idx) <= max_per_group else rng.choice(idx, max_per_group, False))
    rows = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    return frame.iloc[rows].reset_index(drop=True), order


def dotplot_tables(
    service: AnalysisService,
    pair: Pair,
    features: Sequence[str],
    *,
    layer: str = "denoised",
    grouping: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell type (or group of ``grouping``, a
    :func:`~dashboard.views.label_sets.grouping_choices` value: an obs column or a label
    set): mean value (``layer``, log1p) and fraction of cells with a raw count above zero,
    for each feature (columns named by display name). Minified data has no counts: its
    genes' fractions are NaN (unknown)."""
    types = grouping_labels(service, pair, grouping)
    order = [str(c) for c in types.cat.categories]
    labels = types.astype(str).to_numpy()
    data = service.dataset(pair)
    csc = gene_counts(service, pair)
    means, fracs = {}, {}
    for feature in features:
        spec = ColorSpec(feature, layer)
        values = feature_values(service, pair, spec)
        if spec.kind == "gene":
            pos = data.var_names.get_indexer([spec.name])[0]
            expressed = (
                np.full(data.n_cells, np.nan)
                if csc is None
                else np.asarray(csc[:, pos].toarray()).ravel() > 0
            )
        else:
            pos = data.protein_names.get_indexer([spec.name])[0]
            expressed = _protein_expressed(service, pair, spec.name, data.protein[:, pos])
        frame = pd.DataFrame({"t": labels, "v": values, "e": expressed})
        grouped = frame.groupby("t")
        name = feature_catalog(service, pair).shown_name(spec.feature)
        means[name] = grouped["v"].mean().reindex(order)
        fracs[name] = grouped["e"].mean().reindex(order)
    return pd.DataFrame(means, index=order), pd.DataFrame(fracs, index=order)


def dotplot_title(service: AnalysisService, pair: Pair, grouping: str | None = None) -> str:
    """The dot plot's title: what its colour is, what groups its rows, and the scale of
    denoised proteins."""
    rows = "cell type" if not grouping else f"group of {grouping_name(service, pair, grouping)}"
    return (
        f"Mean denoised value (log1p) per {rows}, scaled per feature; denoised proteins: "
        f"{SCALE_SHORT[service.protein_scale()]}"
    )


def _protein_expressed(
    service: AnalysisService, pair: Pair, protein: str, counts: np.ndarray
) -> np.ndarray:
    """Proteins have background in every cell: "expressing" means foreground probability
    above one half when the model has it, else any count."""
    try:
        return protein_foreground(service, pair, protein) > 0.5
    except BackendError:
        return np.asarray(counts) > 0
