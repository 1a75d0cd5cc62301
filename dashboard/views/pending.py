"""What Explore's linked view shows while the workspace's warm steps still compute the
denoised protein.

A new pair becomes active once its layout and cell types exist; the denoised protein of
every cell is the first warm step (:data:`~dashboard.backend.preparation.WARM_STEPS`). At a
million cells it takes minutes, so a linked view that asked for it inside its request
would hold a server thread that long and show nothing. While the warm job runs and the
table is not cached, protein vs protein is drawn on raw counts instead (its title says so,
and a lasso on it selects by the values shown; cells whose batch did not measure a
protein are left out, their raw values being the model's predictions); views that cannot
do without denoised values (raw vs denoised, minified data) say they fill in when ready.
The page polls :func:`waiting` and redraws once it is ``False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dashboard.views.errors import NotReady
from dashboard.views.state import get_state
from dashboard.views.values import MEASURED_COUNTS, imputed_cells, is_minified

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: The title's note on a view drawn on raw counts while the denoised protein is computed.
RAW_NOTE = "raw counts until the denoised protein is computed"
#: The note when some cells' batches did not measure a protein of the view: those cells
#: are left out (their values would be the model's predictions) until it is computed.
MEASURED_NOTE = "raw counts where measured, until the denoised protein is computed"
#: The message of a view that needs the denoised protein while it is computed.
WAIT_MESSAGE = (
    "The denoised protein is being computed (warm-up after the model opened); "
    "this view fills in when it is ready."
)

__all__ = ["MEASURED_NOTE", "RAW_NOTE", "WAIT_MESSAGE", "shown_view", "waiting"]


def waiting(service: AnalysisService, pair: Pair) -> bool:
    """True while the denoised protein of ``pair`` is not cached and the workspace's warm
    job (which computes it first) still runs. Without a warm job a view computes it as
    before: nothing else would."""
    if service.expression.denoised_protein_ready(pair):
        return False
    return bool(get_state().status().warming)


def shown_view(
    service: AnalysisService, pair: Pair, view: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The linked ``view`` to draw now and the note its title gains (``None``: as asked).

    Protein vs protein in the denoised layer becomes the same view on raw counts while
    :func:`waiting` (layer :data:`~dashboard.views.values.MEASURED_COUNTS`, without the
    cells of batches that did not measure a protein, when there are some); raw vs
    denoised, and minified data (no counts), raise :class:`NotReady` with
    :data:`WAIT_MESSAGE` then (the page shows it in place of the figure).
    """
    kind, layer = view.get("kind"), view.get("layer") or "denoised"
    needs_denoised = kind == "raw_denoised" or (kind == "proteins" and layer == "denoised")
    if not needs_denoised or not waiting(service, pair):
        return dict(view), None
    if kind == "raw_denoised" or is_minified(service, pair):
        raise NotReady(WAIT_MESSAGE)
    proteins = {str(view.get("x") or ""), str(view.get("y") or view.get("x") or "")}
    if any(imputed_cells(service, pair, p) is not None for p in proteins if p):
        # raw counts would be predictions where a batch did not measure the protein
        return {**view, "layer": MEASURED_COUNTS}, MEASURED_NOTE
    return {**view, "layer": "raw"}, RAW_NOTE
