"""Helpers the pages share: the active pair, cell-view figures and their patches, link
state and DE groups (job panels: ``_jobs``). Plain functions (no callbacks: Dash re-runs
page modules for each app, but not this one, which it skips because of the leading
underscore)."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dash
import numpy as np
from dash import Input, Output, Patch, State, ctx, html, no_update
from dash.exceptions import MissingCallbackContextException

from dashboard import components, figures, ids, overview, queries
from dashboard.backend.errors import BackendError
from dashboard.queries import ColorSpec, FeatureCatalog
from dashboard.state import NotReady, get_state, open_link
from dashboard.url_state import state_from_query

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

UMAP_HEIGHT = 540
POINT_SIZE = 3.0


#: The pages' modules, in the order of the navigation.
NAV = ("explore", "lookup", "de", "metrics", "model")
#: What each page is for (its ``<meta name="description">``).
DESCRIPTIONS = {
    "explore": "Latent space of every cell, linked protein views and cell selections.",
    "lookup": "Search genes and proteins; raw vs denoised per cell type; dot plots.",
    "de": "Bayesian DE of genes and proteins per cell type or selection.",
    "metrics": "scvi-hub model-card metrics, parameters and training history.",
    "model": "Pick or upload data; train or load a TotalVI model.",
}


def register_page(module: str, path: str, name: str) -> None:
    """Register a page module with Dash at ``path`` (its browser title: ``<name> ·
    TotalVI Explorer``; its place in the navigation: :data:`NAV`)."""
    key = module.rsplit(".", 1)[-1]
    dash.register_page(
        module,
        path=path,
        name=name,
        title=f"{name} · TotalVI Explorer",
        description=DESCRIPTIONS[key],
        order=NAV.index(key),
    )


def active() -> tuple[AnalysisService, Pair]:
    """``(service, active pair)``; raises :class:`NotReady` (a readable message) if none."""
    return get_state().require()


def triggered() -> Any:
    """The id that triggered the running callback (``None`` on an initial call, or when
    the function is called directly, as the unit tests do)."""
    try:
        return ctx.triggered_id
    except MissingCallbackContextException:
        return None


def not_ready_page(title: str, err: Exception) -> html.Div:
    """What a page shows while no model is active (the router re-renders it when one is)."""
    return html.Div(
        [
            components.page_header(title, ""),
            components.notice(str(err), kind="info"),
        ],
        className="page-waiting",
    )


def model_page(title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate the ``layout`` of a page that needs the active model: while there is none
    (:class:`NotReady`), the page ``title`` says so (:func:`not_ready_page`)."""

    def decorate(layout: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(layout)
        def page(*args: Any, **kwargs: Any) -> Any:
            try:
                return layout(*args, **kwargs)
            except NotReady as err:
                return not_ready_page(title, err)

        return page

    return decorate


def error_figure(err: Exception) -> go.Figure:
    """An empty figure that names the problem (for views that cannot be drawn)."""
    return figures.empty_figure(str(err))


def figure_or_error(build: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a figure callback: a readable failure (:class:`BackendError`) becomes
    :func:`error_figure`, an empty figure naming the problem."""

    @functools.wraps(build)
    def figure(*args: Any, **kwargs: Any) -> Any:
        try:
            return build(*args, **kwargs)
        except BackendError as err:
            return error_figure(err)

    return figure


def clicked_item(clicks: Sequence[int | None] | None) -> dict | None:
    """The pattern-matching id of the button that was clicked, among ``clicks`` (the
    ``n_clicks`` of an ``ALL`` input); ``None`` when none was (the buttons just mounted)."""
    trigger = triggered()
    return trigger if any(clicks or []) and isinstance(trigger, dict) else None


# ---------------------------------------------------------------------- colour choice
def initial_color(
    service: AnalysisService,
    pair: Pair,
    query: Mapping[str, Any],
    color_state: Mapping[str, Any] | None,
) -> tuple[FeatureCatalog, ColorSpec]:
    """The pair's feature catalog and the colouring a page opens with: the link's, else
    the shared one, else cell type."""
    catalog = queries.feature_catalog(service, pair)
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
    says so; the page shows the link's view once that pair is ready."""
    linked = query.get("pair")
    linked = linked[-1] if isinstance(linked, list) and linked else linked
    if linked and str(linked) != pair.id:
        line = open_link(str(linked)[:40])
        if line:
            return {"notice": line}
    out: dict[str, Any] = {}
    color = query.get("color")
    if color and not queries.feature_catalog(service, pair).has(str(color)):
        shown = str(color) if len(str(color)) <= 60 else str(color)[:57] + "..."
        out["notice"] = (
            f"the link colours by {shown!r}, which this dataset does not have (no such "
            "gene, protein or cell annotation); showing cell types instead"
        )
    if not (query.get("sel") or query.get("region")):
        return out
    selection = state_from_query(query, service.dataset(pair).n_cells)
    selection.pop("color", None)
    selection["dataset"] = pair.dataset.id
    return {**selection, **out}


def feature_of(spec: ColorSpec) -> str | None:
    """The gene or protein a colouring shows (``None`` for an annotation)."""
    return spec.feature if spec.kind in {"gene", "protein"} else None


def layer_options(feature: str | None) -> list[dict[str, Any]]:
    """Value layers that apply to a feature (foreground probability: proteins only)."""
    kind = (feature or "").split(":", 1)[0]
    return [
        {"label": "Raw", "value": "raw", "disabled": kind == "obs"},
        {"label": "Denoised", "value": "denoised", "disabled": kind == "obs"},
        {"label": "Foreground prob.", "value": "foreground", "disabled": kind != "protein"},
    ]


def normalise_layer(feature: str | None, layer: str | None) -> str:
    """A layer valid for ``feature`` (``raw`` where the asked one does not apply)."""
    return ColorSpec.from_state({"feature": feature, "layer": layer}).layer


def color_choice(
    feature: str | None, layer: str | None, color_state: Mapping[str, Any] | None
) -> tuple[ColorSpec | None, list[dict[str, Any]], Any]:
    """A picked colouring with a layer valid for it: its spec (``None`` when it is the
    shared colouring already: nothing to send), the layer options, and the layer to set
    (``no_update`` when the picked one applies)."""
    fixed = normalise_layer(feature, layer)
    spec = ColorSpec.from_state({"feature": feature, "layer": fixed})
    new = None if spec == ColorSpec.from_state(color_state) else spec
    return new, layer_options(spec.feature), fixed if fixed != layer else no_update


def recolor_io(graphs: Sequence[str], color: str, layer: str) -> list[Any]:
    """The wiring of a recolour callback: a patch of each of ``graphs``, the shared colour
    choice and the ``layer`` switch's options and value, from the ``color`` and ``layer``
    controls (and the shared choice)."""
    return [
        *(Output(g, "figure", allow_duplicate=True) for g in graphs),
        Output(ids.COLOR_STORE, "data", allow_duplicate=True),
        Output(layer, "options"),
        Output(layer, "value"),
        Input(color, "value"),
        Input(layer, "value"),
        State(ids.COLOR_STORE, "data"),
    ]


def values_of(*controls: str) -> list[State]:
    """The ``value`` of each of ``controls``, as callback States."""
    return [State(c, "value") for c in controls]


def search_io(dropdown: str) -> list[Any]:
    """The wiring of a server-side autocomplete: the ``dropdown``'s options from what is
    typed in it (and its value, kept among them)."""
    return [Output(dropdown, "options"), Input(dropdown, "search_value"), State(dropdown, "value")]


def feature_search(search: str | None, value: Any, *, include_obs: bool = True) -> Any:
    """Options matching what is typed (prefix matches first), with the current ``value``
    kept; ``no_update`` before anything is typed."""
    if search is None:
        return no_update
    service, pair = active()
    catalog = queries.feature_catalog(service, pair)
    return queries.with_current(
        queries.search_features(catalog, search, include_obs=include_obs), catalog, value
    )


# ------------------------------------------------------------------- cell-view figures
_hover_cache: OrderedDict[str, list[str]] = OrderedDict()
_hover_lock = threading.Lock()


def hover_text(service: AnalysisService, pair: Pair) -> list[str]:
    """Base hover text of every plotted cell (id, type, batch), memoised per pair and
    cell-type names."""
    names = sorted(service.type_names.get(pair).items())
    key = f"{pair.id}@{service.settings.max_points}@{names}"
    with _hover_lock:
        if key in _hover_cache:
            return _hover_cache[key]
    data = service.dataset(pair)
    shown = overview.shown_cells(service, pair)
    names = data.obs_names if shown is None else data.obs_names[shown]
    columns = queries.hover_columns(service, pair)
    if shown is not None:
        columns = {k: np.asarray(v)[shown] for k, v in columns.items()}
    text = figures.cell_hover_text([str(c) for c in names], columns)
    with _hover_lock:
        _hover_cache[key] = text
        while len(_hover_cache) > 4:
            _hover_cache.popitem(last=False)
    return text


def color_parts(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    shown: np.ndarray | None = None,
    *,
    legend: bool = False,
) -> tuple[dict[str, Any], str, list[str] | None, queries.ColorData]:
    """Marker, hover template and per-cell hover labels of a colouring (of the ``shown``
    cells only when given; the returned ``ColorData`` then holds their values). With
    ``legend`` the page shows :func:`color_legend` for categories, so the figure has no
    colour bar for them."""
    cd = queries.color_data(service, pair, spec, shown)
    marker = figures.color_marker(
        cd.values,
        categorical=cd.categorical,
        categories=cd.categories,
        title=cd.label,
        size=POINT_SIZE,
        colorbar=not legend,
    )
    marked = cd.imputed is not None and not cd.categorical
    template = figures.hover_template(
        cd.hover_label or cd.label,
        categorical=cd.categorical,
        value_in_text=cd.in_hover_text,
        marked=marked,
    )
    labels = None
    if cd.categorical and not cd.in_hover_text:
        labels = [str(v) for v in cd.values]
    elif marked:  # imputed cells say so after their value
        labels = figures.value_marks(cd.imputed)
    return marker, template, labels, cd


def valid_cells(selection: Mapping[str, Any] | None, n_cells: int) -> list[int] | None:
    """The selected cell positions if they fit this dataset, else ``None``.

    A region selection (lasso or box on a subsampled view) and a category selection (a
    legend click on a large dataset) are resolved against every cell of the active dataset.
    """
    if selection and selection.get("region"):
        try:
            service, pair = active()
            if service.dataset(pair).n_cells != n_cells:
                return None
            return overview.region_cells(service, pair, selection["region"]).tolist() or None
        except BackendError:
            return None
    if selection and isinstance(selection.get("group"), Mapping) and "cells" not in selection:
        return group_cells(selection["group"], n_cells)  # a category of a large dataset
    if not selection or not selection.get("cells"):
        return None
    cells = queries.cell_positions(selection["cells"])
    if max(cells) >= n_cells:  # a selection made on other cells (another dataset)
        return None
    return cells


def cell_figure(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    x: np.ndarray,
    y: np.ndarray,
    selected: Sequence[int] | None,
    title: str,
    axis_titles: tuple[str, str] = ("UMAP 1", "UMAP 2"),
    labels_on_data: bool = False,
    view: Mapping[str, Any] | None = None,
    legend: bool = False,
) -> go.Figure:
    """A cell view (one point per cell, dataset order) coloured by ``spec`` (``legend``:
    categories get the page's :func:`color_legend`, not a colour bar).

    Above ``max_points`` cells only the overview subsample is plotted (``customdata`` =
    cell positions, ``selected`` mapped onto it) over a density image of all cells, and
    ``layout.meta`` names the ``view``
    (``{"view": "umap"}`` or the linked view's axes) so a lasso becomes a region of it.
    """
    shown = overview.shown_cells(service, pair)
    marker, template, labels, cd = color_parts(service, pair, spec, shown, legend=legend)
    density = None
    if shown is not None:  # where every cell is, under the plotted sample
        density = figures.density_heatmap(x, y)
        x, y = np.asarray(x)[shown], np.asarray(y)[shown]
        selected = overview.shown_positions(shown, selected)
    annotations = []
    if labels_on_data and cd.categorical and spec.feature == "obs:cell_type":
        annotations = figures.category_annotations(x, y, cd.values)
    return figures.cell_scatter_figure(
        x,
        y,
        marker=marker,
        hover_text=hover_text(service, pair),
        hovertemplate=template,
        hovertext=labels,
        selected=selected,
        title=title,
        axis_titles=axis_titles,
        annotations=annotations,
        cells=shown,
        meta=overview.view_meta(service, pair, view or {"view": "umap"}),
        density=density,
    )


def umap_figure(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    selected: Sequence[int] | None = None,
    title: str = "",
    legend: bool = False,
) -> go.Figure:
    """The latent UMAP of the pair coloured by ``spec``."""
    xy = service.umap(pair)
    return cell_figure(
        service,
        pair,
        spec,
        x=xy["UMAP1"].to_numpy(),
        y=xy["UMAP2"].to_numpy(),
        selected=selected,
        title=title,
        labels_on_data=True,
        view={"view": "umap"},
        legend=legend,
    )


def recolor_patch(
    service: AnalysisService,
    pair: Pair,
    spec: ColorSpec,
    *,
    umap: bool = True,
    hover: bool = False,
    legend: bool = False,
) -> Patch:
    """Only what a recolour changes: the marker (typed-array colours, scale, colour bar),
    the hover template, the hover labels of categories and the on-data labels; with
    ``hover`` also the cells' base hover text (after a cell type was renamed); ``legend``
    as for :func:`cell_figure`."""
    shown = overview.shown_cells(service, pair)
    marker, template, labels, cd = color_parts(service, pair, spec, shown, legend=legend)
    patch = Patch()
    patch["data"][0]["marker"] = marker
    patch["data"][0]["hovertemplate"] = template
    patch["data"][0]["hovertext"] = labels
    if hover:
        patch["data"][0]["text"] = hover_text(service, pair)
    if umap:
        annotations = []
        if cd.categorical and spec.feature == "obs:cell_type":
            xy = service.umap(pair)
            x, y = xy["UMAP1"].to_numpy(), xy["UMAP2"].to_numpy()
            if shown is not None:
                x, y = x[shown], y[shown]
            annotations = figures.category_annotations(x, y, cd.values)
        patch["layout"]["annotations"] = annotations
    return patch


# ------------------------------------------------------------------- category legend
#: Most categories a legend lists (the rest are counted in one line).
MAX_LEGEND_ITEMS = 200


def group_selection(service: AnalysisService, pair: Pair, spec: ColorSpec, category: str) -> Any:
    """The selection store's content for every cell of one category of a colouring (a
    legend click): the cells themselves up to ``max_points`` cells, else the category,
    resolved against every cell where it is used (as a region is)."""
    group = {"feature": spec.feature, "value": str(category)}
    data = {"dataset": pair.dataset.id, "source": "legend", "group": group}
    n = service.dataset(pair).n_cells
    if n <= service.settings.max_points:
        data["cells"] = group_cells(group, n) or []
    return data


def group_cells(group: Mapping[str, Any], n_cells: int) -> list[int] | None:
    """Positions of the cells of a ``{"feature", "value"}`` category of the active pair
    (``None`` if the colouring or the category is not there, or the dataset differs)."""
    try:
        service, pair = active()
        if service.dataset(pair).n_cells != n_cells:
            return None
        found = queries.category_codes(
            service, pair, ColorSpec.from_state({"feature": str(group.get("feature"))})
        )
    except BackendError:
        return None
    if found is None or str(group.get("value")) not in found[0]:
        return None
    cats, codes = found
    return np.flatnonzero(codes == cats.index(str(group["value"]))).tolist() or None


def color_legend(
    service: AnalysisService, pair: Pair, spec: ColorSpec, selection: Mapping[str, Any] | None
) -> Any:
    """The legend of a categorical colouring: each category's colour, whole name and number
    of cells, as buttons that select its cells (the one selected is marked); nothing for a
    colouring by numbers (its colour bar is in the figure)."""
    found = queries.category_codes(service, pair, spec)
    if found is None:
        return []
    cats, codes = found
    counts = np.bincount(codes[codes >= 0], minlength=len(cats))
    colors = figures.category_colors(cats)
    group = (selection or {}).get("group") or {}
    active_value = group.get("value") if group.get("feature") == spec.feature else None
    items = [
        {"value": c, "color": colors[c], "count": int(n), "active": c == active_value}
        for c, n in zip(cats, counts, strict=True)
    ]
    other = int((codes < 0).sum())
    return components.color_legend(
        items[:MAX_LEGEND_ITEMS],
        feature=spec.feature,
        title=queries.color_label(service, pair, spec),
        more=len(items) - MAX_LEGEND_ITEMS,
        other=other,
    )


def selection_patch(
    cells: Sequence[int] | None, *, clear_outline: bool, shown: np.ndarray | None = None
) -> Patch:
    """Highlight ``cells`` (``None``: show all cells at full opacity); on a subsampled view
    (``shown``: the plotted cells) only the plotted ones among them."""
    patch = Patch()
    points = overview.shown_positions(shown, cells) if cells is not None else None
    patch["data"][0]["selectedpoints"] = points
    if clear_outline:
        patch["layout"]["selections"] = []
    return patch


# ------------------------------------------------------------------------- DE groups
def feature_key_from_click(click: Mapping[str, Any] | None) -> str | None:
    """The feature key carried by a volcano point's ``customdata``."""
    if not click or not click.get("points"):
        return None
    value = click["points"][0].get("customdata")
    return str(value) if isinstance(value, str) and ":" in value else None


def groups_from_selection_stores(
    selection: Mapping[str, Any] | None,
    saved: Mapping[str, Any] | None,
    dataset_id: str,
    n_cells: int,
) -> dict[str, list[int]]:
    """Named cell groups the user made: the current selection and saved selections."""
    from dashboard.url_state import decode_selection

    out: dict[str, list[int]] = {}
    cells = valid_cells(selection, n_cells)
    if cells and (selection or {}).get("dataset") in (None, dataset_id):
        out["__current__"] = cells
    for name, item in ((saved or {}).get(dataset_id) or {}).items():
        try:
            if isinstance(item, Mapping) and item.get("region"):
                region_cells = valid_cells({"region": item["region"]}, n_cells)
                if region_cells:
                    out[f"saved:{name}"] = region_cells
                continue
            out[f"saved:{name}"] = decode_selection(str(item["token"]), n_cells)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def cell_type_choices(service: AnalysisService, pair: Pair) -> list[tuple[str, str, int]]:
    """``(id, shown name, cells)`` of every cell type, in the types' order: dropdowns
    choose ``type:<id>`` (the key of cached results) and show the name."""
    types = service.cell_types(pair)
    counts = types.astype(str).value_counts()
    names = service.cell_type_names(pair)
    return [(t, names.get(t, t), int(counts.get(t, 0))) for t in map(str, types.cat.categories)]


def group_name(service: AnalysisService, pair: Pair, value: str) -> str:
    """Display name of a group choice: a cell type's shown name (``type:<id>``), a saved
    selection's name (``saved:<name>``)."""
    kind, _, name = str(value).partition(":")
    if kind == "type":
        return service.cell_type_names(pair).get(name, name)
    return name or str(value)


def notice_or_error(err: Exception) -> html.Div:
    """Readable message for a failed view."""
    return components.alert(str(err), kind="warning")


__all__ = ["NotReady", "active", "cell_figure", "recolor_patch", "selection_patch", "umap_figure"]


# ------------------------------------------------------------------ files from the browser
def dataset_path(service: AnalysisService, name: str) -> str:
    """A dataset name from the browser as a path inside the data folder (or the dataset
    opened at start-up); ``..``, outside paths and symlinks out are refused."""
    from dashboard.backend.paths import resolve_in_folder

    active = get_state().dataset
    allowed = (active.path,) if active is not None and active.path else ()
    return str(resolve_in_folder(service.settings.data_dir, name, allowed=allowed))


def checkpoint_path(service: AnalysisService, name: str) -> str:
    """A model folder from the browser as a path inside the model folder."""
    from dashboard.backend.errors import ModelNotFound
    from dashboard.backend.paths import resolve_in_folder

    path = resolve_in_folder(
        service.settings.model_dir,
        name,
        what="model folder",
        where="model folder",
        error=ModelNotFound,
    )
    return str(path)
