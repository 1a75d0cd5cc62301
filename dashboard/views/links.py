"""What a page opens with when it comes from a shared link (or the workspace's stores):
its colouring, its cells, and a line on what of the link cannot be used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dashboard.url_state import state_from_query
from dashboard.views.colours import ColorSpec
from dashboard.views.features import FeatureCatalog, feature_catalog
from dashboard.views.layouts import link_layout
from dashboard.views.state import open_link

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


def initial_color(
    service: AnalysisService,
    pair: Pair,
    query: Mapping[str, Any],
    color_state: Mapping[str, Any] | None,
) -> tuple[FeatureCatalog, ColorSpec]:
    """The pair's feature catalog and the colouring a page opens with: the link's, else
    the shared one, else cell type."""
    catalog = feature_catalog(service, pair)
    if query.get("color"):
        spec = ColorSpec.from_state({"feature": query["color"], "layer": query.get("layer")})
    else:
        spec = ColorSpec.from_state(dict(color_state) if color_state else None)
    return catalog, (spec if catalog.has(spec.feature) else ColorSpec())


def link_state(query: Mapping[str, Any], service: AnalysisService, pair: Pair) -> dict:
    """The page-local store's content: cells of a shared link (or why they don't fit), and
    a ``notice`` when the link's colour is not in this dataset (the page then shows cell
    types, and says so instead of falling back silently). A link that names another
    (dataset, model) pair switches the workspace to it (when this user may open it) and
    says so; the page shows the link's view once that pair is ready. A ``layout`` the
    dataset does not have is said in the ``notice`` too (the page shows its default)."""
    linked = query.get("pair")
    linked = linked[-1] if isinstance(linked, list) and linked else linked
    if linked and str(linked) != pair.id:
        line = open_link(str(linked)[:40])
        if line:
            return {"notice": line}
    out: dict[str, Any] = {}
    notices = []
    color = query.get("color")
    if color and not feature_catalog(service, pair).has(str(color)):
        shown = str(color) if len(str(color)) <= 60 else str(color)[:57] + "..."
        notices.append(
            f"the link colours by {shown!r}, which this dataset does not have (no such "
            "gene, protein or cell annotation); showing cell types instead"
        )
    notices.append(link_layout(service, pair, query.get("layout"))[1])
    if any(notices):
        out["notice"] = "; ".join(n for n in notices if n)
    if not (query.get("sel") or query.get("region")):
        return out
    selection = state_from_query(query, service.dataset(pair).n_cells)
    selection.pop("color", None)
    selection["dataset"] = pair.dataset.id
    return {**selection, **out}
