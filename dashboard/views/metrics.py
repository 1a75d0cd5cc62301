"""What the Metrics page needs: the model card beside the checkpoint, the job computing the
card metrics, and the tables and notes the backend gives for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dashboard.backend.card import compare_summary, compare_tables
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.label_sets import SNAPSHOT_PREFIX
from dashboard.backend.metrics import (
    CALIBRATION_CELLS,
    CALIBRATION_PROTEIN_CELLS,
    CALIBRATION_SAMPLES,
    WHY_SCALES_DIFFER,
    cv_advice,
    cv_display_table,
    de_top_note,
)
from dashboard.public_paths import scrub_paths
from dashboard.views.values import is_minified
from model.protein_scale import EFFICIENCY_FREE, MEASURED, PROTEIN_SCALES

if TYPE_CHECKING:
    from dashboard.backend.jobs import JobContext
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from model.hub_card import HubCard

__all__ = [
    "CALIBRATION_CELLS",
    "CALIBRATION_PROTEIN_CELLS",
    "CALIBRATION_SAMPLES",
    "EFFICIENCY_FREE",
    "MEASURED",
    "PROTEIN_SCALES",
    "WHY_SCALES_DIFFER",
    "card_text",
    "compare_summary",
    "compare_tables",
    "cv_advice",
    "cv_display_table",
    "de_top_note",
    "history_note",
    "is_minified",
    "model_card",
    "submit_metrics",
]


def model_card(service: AnalysisService, pair: Pair) -> HubCard | None:
    """The scvi-hub model card beside the pair's checkpoint (``None`` when there is none,
    or its README.md holds nothing of a card)."""
    card = service.hub_card(pair)
    return None if card is None or card.is_empty else card


def card_text(card: HubCard) -> dict[str, str]:
    """A model card's free text as the page shows it, no server path in it: its
    ``description``, one ``training`` line (the training data and code links) and one line of
    ``notes`` on what was not read from it (``""`` where it has none)."""
    links = [
        f"{what}: {scrub_paths(url)}"
        for what, url in (
            ("Training data", card.training_data_url),
            ("Training code", card.training_code_url),
        )
        if url
    ]
    return {
        "description": scrub_paths(card.description) if card.description else "",
        "training": " · ".join(links),
        "notes": "Not read from the card: " + scrub_paths("; ".join(card.notes))
        if card.notes
        else "",
    }


def submit_metrics(service: AnalysisService, pair: Pair, *, labels_key: str | None = None) -> str:
    """Submit the job computing the card metrics (tables of both protein scales, the CV
    points behind the plots and the calibration), the DE metric over ``labels_key``'s
    groups (:func:`~dashboard.views.label_sets.grouping_key`; ``None``: the default)."""

    def run(ctx: JobContext) -> None:
        ctx.check()
        service.metrics(pair, labels_key=labels_key, progress=ctx.progress)

    params = {"pair": pair.to_dict(), "labels_key": labels_key}
    return service.submit_local("metrics_page", run, params=params)


def checked_labels_key(service: AnalysisService, pair: Pair, key: Any) -> str | None:
    """A metrics job's ``labels_key`` read back from the page's store: ``None``, a label
    set snapshot or a label-like obs column (anything else is refused in one line)."""
    if key is None:
        return None
    if isinstance(key, str) and (
        key.startswith(SNAPSHOT_PREFIX) or key in service.label_columns(pair)
    ):
        return key
    msg = "those metric groups are not one of the listed ones; choose again"
    raise InvalidSelection(msg)


def history_note(history: Any) -> str:
    """One line on a training history: epochs and the final validation ELBO."""
    if history is None or history.empty:
        return "This checkpoint has no training history."
    last = history.iloc[-1]
    val = last.get("elbo_validation", float("nan"))
    return (
        f"{len(history)} epochs; final validation ELBO {float(val):,.1f} per cell "
        "(negative ELBO: lower is better)."
    )
