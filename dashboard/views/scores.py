"""Per-cell scores that colour cells as a gene does but are computed from the model: the
model QC quantities (``qc:<name>``, :mod:`dashboard.views.qc`) and gene-set scores
(``set:<name>=<members>``, :mod:`dashboard.views.gene_sets`).

:data:`SCORES` says once, per kind, how a score's values, colour-bar title and note are
read; :mod:`dashboard.views.colours` reads it for every kind, so a new kind of score is one
entry here (plus its dropdown entries in :mod:`dashboard.views.features`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dashboard.views.gene_set_keys import SET_KIND
from dashboard.views.gene_sets import set_note, set_title, set_values
from dashboard.views.qc import QC_KIND, qc_note, qc_title, qc_values

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


@dataclass(frozen=True)
class ScoreKind:
    """How one kind of score is read, each from the colouring's whole feature key:
    ``values(service, pair, key)`` (float32 per cell, NaN where undefined),
    ``title(key)`` (the colour bar's) and ``note(service, pair, key)`` (the line under the
    view: what the score is)."""

    values: Callable[[AnalysisService, Pair, str], np.ndarray]
    title: Callable[[str], str]
    note: Callable[[AnalysisService, Pair, str], str]


def _name(key: str) -> str:
    return key.split(":", 1)[1]


#: Every kind of score, by the feature key's prefix.
SCORES: dict[str, ScoreKind] = {
    QC_KIND: ScoreKind(
        values=lambda service, pair, key: qc_values(service, pair, _name(key)),
        title=lambda key: qc_title(_name(key)),
        note=lambda _service, _pair, key: qc_note(_name(key)),
    ),
    SET_KIND: ScoreKind(values=set_values, title=set_title, note=set_note),
}
