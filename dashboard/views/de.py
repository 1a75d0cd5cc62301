"""Differential expression as the pages show it: the groups a user can compare, the DE
jobs of a group, and the result as a table (one row per feature, display names, strongest
first)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.de import DE_PRESETS, DEControls
from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.label_sets import SNAPSHOT_PREFIX
from dashboard.backend.names import display_name
from dashboard.views.cells import cell_type_choices, group_name, groups_from_selection_stores
from dashboard.views.features import FeatureCatalog, feature_catalog
from dashboard.views.label_sets import (
    COMPARE_PREFIX,
    compare_entries,
    label_group,
    resolve_compare,
)
from model.differential import PROTEIN_SUFFIX
from model.protein_scale import DE_PROTEIN_SCALE

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

__all__ = ["DE_PRESETS", "DE_PROTEIN_SCALE", "DEControls"]

#: What the DE page says for minified data (the test needs no counts; some columns do).
DE_NO_COUNTS_NOTE = (
    "Raw counts are not in this file (minified data): the test runs on the model's stored "
    "latent posterior; the count columns (non-zero proportions) are empty."
)


DE_COLUMNS = [
    "feature",
    "modality",
    "lfc_mean",
    "lfc_lower",
    "lfc_upper",
    "lfc_std",
    "bayes_factor",
    "proba_de",
    "is_de",
    "scale1",
    "scale2",
    "non_zeros_proportion1",
    "non_zeros_proportion2",
    "group1",
    "group2",
]


def de_display_table(
    de: pd.DataFrame, *, group: str | None = None, catalog: FeatureCatalog | None = None
) -> pd.DataFrame:
    """A DE result as the pages show it: one row per feature, sorted by Bayes factor
    (strongest first), ``is_de`` from the FDR column.

    ``key`` (``"protein:CD19_TotalSeqB"``) colours the cells by the row, ``feature`` is its
    display name (``"CD19 protein"``, :meth:`FeatureCatalog.shown_name` of ``catalog``) and
    ``feature_id`` the name in the dataset (``"CD19_TotalSeqB"``: the grid's tooltip and
    CSV column).
    """
    df = de if group is None else de[de["group1"].astype(str) == str(group)]
    fdr_col = next((c for c in df.columns if c.startswith("is_de_fdr_")), None)
    modality = df["modality"].astype(str) if "modality" in df else pd.Series("rna", df.index)
    is_protein = modality.to_numpy() == "protein"
    # DE tables suffix protein rows ("CD4_TotalSeqB_protein"); the key must name the
    # protein as the dataset does, or a click would colour by a protein that is not there
    names = [
        f[: -len(PROTEIN_SUFFIX)] if p and f.endswith(PROTEIN_SUFFIX) else f
        for f, p in zip(df.index.astype(str), is_protein, strict=True)
    ]
    kind = np.where(is_protein, "protein", "gene")
    keys = [f"{k}:{f}" for k, f in zip(kind, names, strict=True)]
    shown = catalog.shown_name if catalog is not None else display_name
    out = pd.DataFrame(
        {
            "key": keys,
            "feature": [shown(k) for k in keys],
            "feature_id": names,
            "modality": np.where(is_protein, "protein", "rna"),
        }
    )
    for col in DE_COLUMNS[2:]:
        if col == "is_de":
            out[col] = df[fdr_col].to_numpy(dtype=bool) if fdr_col else False
        elif col in df:
            out[col] = df[col].to_numpy()
    return out.sort_values("bayes_factor", ascending=False, kind="stable").reset_index(drop=True)


def de_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows for the grid (floats rounded to 4 significant digits)."""
    out = table.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: float(f"{v:.4g}") if np.isfinite(v) else None)
    return out.to_dict("records")


def feature_key_from_click(click: Mapping[str, Any] | None) -> str | None:
    """The feature key carried by a volcano point's ``customdata``."""
    if not click or not click.get("points"):
        return None
    value = click["points"][0].get("customdata")
    return str(value) if isinstance(value, str) and ":" in value else None


# ------------------------------------------------------------------------------ groups
def compare_choices(
    service: AnalysisService, pair: Pair, selection: dict | None, saved: dict | None
) -> tuple[list, list]:
    """Options of the two compare dropdowns: the selection, saved selections, cell types,
    the categories of the user's label sets (and "all other cells" for the second)."""
    n = service.dataset(pair).n_cells
    groups = groups_from_selection_stores(selection, saved, pair.dataset.id, n)
    first = []
    if "__current__" in groups:
        first.append(
            {
                "label": f"Current selection ({len(groups['__current__']):,})",
                "value": "__current__",
            }
        )
    first += [
        {"label": f"{k.split(':', 1)[1]} ({len(v):,}, saved)", "value": k}
        for k, v in groups.items()
        if k.startswith("saved:")
    ]
    first += [
        {"label": f"{name} ({n:,})", "value": f"type:{t}"}
        for t, name, n in cell_type_choices(service, pair)
    ]
    first += compare_entries(service, pair)  # each category of the user's label sets
    second = [{"label": "All other cells", "value": "__rest__"}, *first]
    return first, second


def resolve_group(
    service: AnalysisService,
    pair: Pair,
    value: str | None,
    selection: dict | None,
    saved: dict | None,
) -> tuple[list[int] | None, str]:
    """Cell positions and a display name of a compare choice (``None`` = the rest)."""
    n = service.dataset(pair).n_cells
    if value in (None, "__rest__"):
        return None, "Rest"
    if value.startswith("type:"):
        type_id = value.split(":", 1)[1]
        types = service.cell_types(pair).astype(str).to_numpy()
        cells = [int(i) for i in (types == type_id).nonzero()[0]]
        return cells, group_name(service, pair, value)
    if value.startswith(COMPARE_PREFIX):  # a category of a label set
        return resolve_compare(service, pair, value)
    groups = groups_from_selection_stores(selection, saved, pair.dataset.id, n)
    if value not in groups:
        msg = "that selection is gone; select cells or pick another group"
        raise BackendError(msg)
    name = "selection" if value == "__current__" else value.split(":", 1)[1]
    return groups[value], name


def compare_groups(
    service: AnalysisService,
    pair: Pair,
    a: str | None,
    b: str | None,
    selection: dict | None,
    saved: dict | None,
) -> tuple[np.ndarray, np.ndarray | None, str, str]:
    """Cells and names of the two compare choices (B ``None``: the rest); cells in both
    groups count in A only. Problems (no cells, B inside A) raise one readable line."""
    cells_a, name_a = resolve_group(service, pair, a, selection, saved)
    if not cells_a:
        msg = "Choose a group of cells to compare (select cells first)."
        raise BackendError(msg)
    cells_b, name_b = resolve_group(service, pair, b, selection, saved)
    first = np.asarray(cells_a, dtype=np.int64)
    if cells_b is None:
        return first, None, name_a, name_b
    others = np.setdiff1d(np.asarray(cells_b, dtype=np.int64), first)
    if others.size == 0:
        msg = f"{name_b} lies inside {name_a}; pick groups that differ"
        raise InvalidSelection(msg)
    return first, others, name_a, name_b


def submit_compare(
    service: AnalysisService,
    pair: Pair,
    cells_a: np.ndarray,
    cells_b: np.ndarray | None,
    name_a: str,
    name_b: str,
) -> str:
    """Start (or find cached) the DE job of group A vs group B (``None``: the rest)."""
    return service.submit(
        "de_groups",
        pair,
        idx1=cells_a,
        idx2=cells_b,
        name1=name_a,
        name2=None if cells_b is None else name_b,
    )


def _saved_cells(
    service: AnalysisService, pair: Pair, group: str, saved: Mapping[str, Any] | None
) -> list[int]:
    """The cells of a ``saved:<name>`` group choice, or why there are none."""
    n = service.dataset(pair).n_cells
    cells = groups_from_selection_stores(None, saved, pair.dataset.id, n).get(group)
    if cells is None:
        msg = "that saved selection no longer exists"
        raise BackendError(msg)
    return cells


def submit_group(
    service: AnalysisService,
    pair: Pair,
    group: str,
    saved: Mapping[str, Any] | None,
    controls: DEControls | None = None,
    labels_key: str | None = None,
) -> str:
    """Start (or find cached) the DE job of a group (a cell type vs the rest, a saved
    selection vs the rest, or a category of a label set vs the rest: ``labels_key``, its
    :func:`group_labels_key`) with the user's ``controls``; returns the job id."""
    options: dict[str, Any] = {} if controls is None else {"controls": controls.to_dict()}
    if group.startswith("saved:"):
        cells = _saved_cells(service, pair, group, saved)
        return service.submit(
            "de_groups", pair, idx1=cells, name1=group.split(":", 1)[1], **options
        )
    if labels_key is not None:
        options["labels_key"] = _snapshot(labels_key)
    return service.submit("de_one_vs_rest", pair, **options)


def group_labels_key(service: AnalysisService, pair: Pair, group: str) -> str | None:
    """The snapshot key of the label set a ``lab:`` group is a category of (what its
    one-vs-rest job groups cells by); ``None`` for other groups."""
    if not group.startswith(COMPARE_PREFIX):
        return None
    set_name = label_group(group)[0]
    return service.label_set_snapshot(pair, set_name)


def _snapshot(labels_key: Any) -> str:
    """A label-set snapshot key from a page's store, checked (forged: one line)."""
    if not isinstance(labels_key, str) or not labels_key.startswith(SNAPSHOT_PREFIX):
        msg = "that label-set group is not one of the listed ones"
        raise InvalidSelection(msg)
    return labels_key


def group_table(
    service: AnalysisService,
    pair: Pair,
    group: str,
    modality: str,
    saved: Mapping[str, Any] | None,
    controls: DEControls | None = None,
    labels_key: str | None = None,
) -> pd.DataFrame:
    """The DE table of a group whose job is done (a cache hit), of one ``modality``
    (``rna``, ``protein``; else both), with the user's ``controls`` (and, for a category
    of a label set, the ``labels_key`` its job ran with)."""
    catalog = feature_catalog(service, pair)
    options: dict[str, Any] = {} if controls is None else {"controls": controls.to_dict()}
    if group.startswith("saved:"):
        cells = _saved_cells(service, pair, group, saved)
        de = service.de_groups(pair, cells, name1=group.split(":", 1)[1], **options)
        table = de_display_table(de, catalog=catalog)
    elif group.startswith(COMPARE_PREFIX):
        de = service.de_one_vs_rest(pair, labels_key=_snapshot(labels_key), **options)
        table = de_display_table(de, group=label_group(group)[1], catalog=catalog)
    else:
        table = de_display_table(
            service.de_one_vs_rest(pair, **options),
            group=group.split(":", 1)[1],
            catalog=catalog,
        )
    if modality in {"rna", "protein"}:
        table = table[table["modality"] == modality].reset_index(drop=True)
    return table


# ---------------------------------------------------------------------------- controls
def de_controls(service: AnalysisService, raw: Mapping[str, Any] | None) -> DEControls:
    """The DE controls the page sent, checked (one line naming a bad field), over the
    server's defaults."""
    return DEControls.checked(raw, service.differential.default_controls())


def preset_options() -> list[dict[str, str]]:
    """The DE presets as dropdown options (the first: scvi-tools' defaults)."""
    return [{"label": name, "value": name} for name in DE_PRESETS]


def preset(name: Any) -> DEControls:
    """The controls of preset ``name`` (a forged name is refused in one line)."""
    if not isinstance(name, str) or name not in DE_PRESETS:
        raise InvalidSelection(f"unknown DE preset {str(name)[:40]!r}")
    return DE_PRESETS[name]


def preset_of(controls: DEControls) -> str | None:
    """The preset the controls equal, if any (the dropdown shows it)."""
    return next((k for k, v in DE_PRESETS.items() if v == controls), None)


def n_batches(service: AnalysisService, pair: Pair) -> int:
    """Batches the model knows (batch correction decodes in each)."""
    return len(service.model(pair).batch_categories)


def controls_line(controls: DEControls, batches: int) -> str:
    """What the test ran with, in words (the page's status and the export say it)."""
    corrected = (
        f"batch-corrected: each group decoded as if measured in each of the {batches} batches"
        if controls.batch_correction
        else "each cell decoded in its own batch"
    )
    return (
        f"|LFC| > {controls.delta:g}, FDR target {controls.fdr_target:.3g}, "
        f"{controls.n_samples_overall:,} posterior samples per group, {corrected}; "
        "LFC interval: central 95% of the posterior draws"
    )


# ------------------------------------------------------------------------------ trust
#: Pearson r of the model's LFC vs the raw counts' LFC at which a type's badge reads
#: "high" or "fair" (the model-card DE metric; below "fair": "low").
TRUST_LEVELS = ((0.8, "high"), (0.5, "fair"))


def trust_badge(service: AnalysisService, pair: Pair, group: str) -> dict[str, Any] | None:
    """The model-card DE metric of the group's cell type, as a badge: ``{"level", "text"}``
    (``level``: high, fair, low by the genes' LFC Pearson r; :data:`TRUST_LEVELS`), or
    ``None`` when the metrics were not computed yet (nothing is started here), for a saved
    selection, or for a type the metric has no row for."""
    if not group.startswith("type:"):
        return None
    result = service.shown_metrics(pair, computed_only=True)
    if result is None:
        return None
    name = group_name(service, pair, group)
    parts, first = [], None
    for mod, label in (("rna", "genes"), ("protein", "proteins")):
        table = result.diff_exp.get(mod)
        if table is None or name not in table.index:
            continue
        row = table.loc[name]
        r = float(row.get("lfc_pearson", np.nan))
        auc = float(row.get("roc_auc", np.nan))
        first = r if first is None else first
        parts.append(f"{label}: LFC Pearson r {r:.2f}, ROC AUC {auc:.2f}")
    if first is None or not np.isfinite(first):
        return None
    level = next((lvl for cut, lvl in TRUST_LEVELS if first >= cut), "low")
    return {
        "level": level,
        "text": f"Model trust for {name} ({level}): "
        + "; ".join(parts)
        + " (model-card DE metric: the model's DE of this type vs the raw counts' DE)",
    }
