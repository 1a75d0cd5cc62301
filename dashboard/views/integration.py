"""What pages need of the integration scorecard (scib-metrics): the job computing it, its
table as grid rows and columns, the lines that say how to read it, and the per-cell batch
mixing as a colouring (``obs:batch_mixing``) once the scorecard has computed it.

The colour pickers offer the mixing score only then (:func:`with_batch_mixing`, applied by
:func:`dashboard.views.features.feature_catalog`); its values are read by
:func:`dashboard.views.values.obs_labels` through :func:`batch_mixing_values` (from the
cache only: a page never starts the computation).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import TYPE_CHECKING, Any

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.integration import (
    AGGREGATE,
    BATCH,
    BIO,
    MIXING_TITLE,
    TOTAL,
    TOTAL_WEIGHTS,
    IntegrationScores,
    scib_version,
)

if TYPE_CHECKING:
    import pandas as pd

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.views.features import FeatureCatalog

__all__ = [
    "AGGREGATE",
    "BATCH",
    "BIO",
    "MIXING_COLUMN",
    "MIXING_FEATURE",
    "MIXING_NOTE",
    "MIXING_TITLE",
    "TOTAL",
    "IntegrationScores",
    "batch_mixing_values",
    "grid_columns",
    "grid_rows",
    "integration_scores",
    "integration_unavailable",
    "scorecard_note",
    "submit_integration",
    "with_batch_mixing",
]

#: The obs-like column the per-cell batch mixing is coloured as.
MIXING_COLUMN = "batch_mixing"
MIXING_FEATURE = f"obs:{MIXING_COLUMN}"
#: What the batch-mixing colouring says under the view.
MIXING_NOTE = (
    "Batch mixing: scib-metrics' per-cell iLISI of the batches among the cell's 90 nearest "
    "neighbours in the TotalVI latent, scaled to 0 (one batch) … 1 (all batches evenly); "
    "its median is the scorecard's iLISI."
)


def integration_unavailable(service: AnalysisService, pair: Pair) -> str:
    """Why the scorecard cannot be computed for the pair, in one line (``""``: it can)."""
    try:
        scib_version()  # installed (a metadata read: nothing heavy is imported)
        service.require_batches(pair)
        service.require_counts(pair, "the integration scorecard (its PCA baseline)")
    except BackendError as err:  # one batch, or minified data (no counts)
        return str(err)
    return ""


def submit_integration(service: AnalysisService, pair: Pair) -> str:
    """Start the job computing the scorecard (refused in one line when the data has one
    batch or no counts); returns the job id."""
    service.require_batches(pair)
    service.require_counts(pair, "the integration scorecard (its PCA baseline)")
    return service.submit("integration_scores", pair)


def integration_scores(service: AnalysisService, pair: Pair) -> IntegrationScores | None:
    """The cached scorecard, or ``None`` while it has not been computed (never computes)."""
    if not service.has_integration_scores(pair):
        return None
    return service.integration_scores(pair)


def _field(column: str) -> str:
    """A grid field for a column name (letters, digits and ``_`` only)."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower()


def grid_columns(scores: IntegrationScores) -> list[dict[str, Any]]:
    """The scorecard grid's column definitions: the embedding, then the metrics grouped as
    bio conservation and batch correction, then the aggregate scores."""
    fmt = {"function": "params.value == null ? '–' : d3.format('.3f')(params.value)"}
    num = {"type": "numericColumn", "valueFormatter": fmt, "minWidth": 105}
    groups: list[dict[str, Any]] = [
        {"field": "embedding", "headerName": "Embedding", "pinned": "left", "minWidth": 170}
    ]
    for kind in (BIO, BATCH, AGGREGATE):
        cols = [str(c) for c in scores.table.columns if scores.metric_types.get(c) == kind]
        if cols:
            children = [{"field": _field(c), "headerName": c, **num} for c in cols]
            groups.append({"headerName": kind, "children": children})
    return groups


def grid_rows(scores: IntegrationScores) -> list[dict[str, Any]]:
    """One grid row per embedding: ``embedding`` and every column's value (``None``: NaN)."""
    rows = []
    for name, values in scores.table.iterrows():
        row: dict[str, Any] = {"embedding": str(name), "key": str(name)}
        for col, value in values.items():
            row[_field(str(col))] = None if value != value else round(float(value), 6)
        rows.append(row)
    return rows


def scorecard_note(scores: IntegrationScores) -> str:
    """How to read the scorecard, in a few sentences (labels, sizes, aggregation)."""
    bio, batch = TOTAL_WEIGHTS[BIO], TOTAL_WEIGHTS[BATCH]
    took = sum(scores.seconds.values())
    return (
        f"scib-metrics {scores.scib_version} on {scores.n_cells:,} cells, {scores.n_batches} "
        f"batches and {scores.n_labels} labels ({scores.labels}). Every score is in [0, 1], "
        f"higher is better, unscaled; {BIO} is the mean of its metrics, {BATCH} the mean of "
        f"its metrics, {TOTAL} = {bio} × bio + {batch} × batch (scib's weights). The PCA "
        "(50 components of the log-normalised RNA, proteins not in it) is the unintegrated "
        f"baseline PCR comparison measures against. Computed in {took:,.0f} s."
    )


# ------------------------------------------------------------------ the colouring
_extended: dict[str, tuple[FeatureCatalog, FeatureCatalog]] = {}
_extended_lock = threading.Lock()


def with_batch_mixing(
    service: AnalysisService, pair: Pair, catalog: FeatureCatalog
) -> FeatureCatalog:
    """``catalog`` with the per-cell batch mixing among its annotations when the pair's
    scorecard has computed it (a cache lookup; nothing is computed), else ``catalog``."""
    if not service.has_batch_mixing(pair):
        return catalog
    with _extended_lock:
        found = _extended.get(pair.id)
        if found is not None and found[0] is catalog:
            return found[1]
    extended = dataclasses.replace(catalog, obs=[*catalog.obs, (MIXING_FEATURE, MIXING_TITLE)])
    with _extended_lock:
        _extended[pair.id] = (catalog, extended)
        while len(_extended) > 4:
            _extended.pop(next(iter(_extended)))
    return extended


def batch_mixing_values(service: AnalysisService, pair: Pair) -> pd.Series:
    """The per-cell batch mixing (float, one per cell), from the cache only; refused in one
    line before the scorecard has run."""
    if not service.has_batch_mixing(pair):
        msg = (
            "the batch-mixing colouring comes with the integration scorecard: run it on the "
            "Metrics page first"
        )
        raise InvalidSelection(msg)
    return service.batch_mixing(pair)
