"""Dash wiring the pages share: page registration, the callback context, the waiting page,
figure errors, and the inputs and outputs of recolour and search callbacks. Plain functions
(no module-level callbacks: Dash re-runs page modules for each app, but not this one, which
it skips because of the leading underscore; a page registers the CSV export with
:func:`csv_export`). What the pages show comes from :mod:`dashboard.views`;
the cell views' figures: ``_cells``; job panels: ``_jobs``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dash
from dash import Input, Output, State, callback, ctx, html, no_update
from dash.exceptions import MissingCallbackContextException

from dashboard import components, figures, ids
from dashboard.views.colours import ColorSpec, layer_options, normalise_layer
from dashboard.views.errors import BackendError, NotReady
from dashboard.views.features import feature_catalog, search_features, with_current
from dashboard.views.state import active, simulated_note

#: The pages' modules, in the order of the navigation.
NAV = ("explore", "lookup", "de", "concordance", "metrics", "model")


#: What each page is for (its ``<meta name="description">``).
DESCRIPTIONS = {
    "explore": "Latent space of every cell, linked protein views and cell selections.",
    "lookup": "Search genes and proteins; raw vs denoised per cell type; dot plots.",
    "de": "Bayesian DE of genes and proteins per cell type or selection.",
    "metrics": "scvi-hub model-card metrics, parameters and training history.",
    "concordance": "Each protein against its gene's RNA, per cell type, and in the model.",
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
            if _rerendered_for_a_switch():  # the link's pair was honoured when it opened
                kwargs.pop("pair", None)
            try:
                content = layout(*args, **kwargs)
            except NotReady as err:
                return not_ready_page(title, err)
            return with_simulated_banner(content)

        return page

    return decorate


def with_simulated_banner(content: Any) -> Any:
    """``content`` under a banner saying the active data is simulated (how it was made),
    or ``content`` itself for measured data."""
    note = simulated_note()
    if not note:
        return content
    return html.Div(
        [html.Div(note, className="simulated-banner", id=ids.SIMULATED_BANNER), content]
    )


def _rerendered_for_a_switch() -> bool:
    """True when the router renders the page again because the workspace's model changed
    (not because the user navigated): the URL the router reads then is the one the page
    opened with, and its ``pair=`` must not switch the workspace back."""
    try:
        return ctx.triggered_id == ids.MODEL_VERSION_STORE
    except MissingCallbackContextException:  # called directly (tests, validation layout)
        return False


def figure_or_error(build: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a figure callback: a readable failure (:class:`BackendError`) becomes an
    empty figure naming the problem."""

    @functools.wraps(build)
    def figure(*args: Any, **kwargs: Any) -> Any:
        try:
            return build(*args, **kwargs)
        except BackendError as err:
            return figures.empty_figure(str(err))

    return figure


def empty_until(message: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a figure callback: while its first argument is empty (nothing chosen or
    ready yet), an empty figure saying ``message``."""

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(build)
        def figure(first: Any, *args: Any, **kwargs: Any) -> Any:
            if not first:
                return figures.empty_figure(message)
            return build(first, *args, **kwargs)

        return figure

    return decorate


def clicked_item(clicks: Sequence[int | None] | None) -> dict | None:
    """The pattern-matching id of the button that was clicked, among ``clicks`` (the
    ``n_clicks`` of an ``ALL`` input); ``None`` when none was (the buttons just mounted)."""
    trigger = triggered()
    return trigger if any(clicks or []) and isinstance(trigger, dict) else None


def color_choice(
    feature: str | None,
    layer: str | None,
    color_state: Mapping[str, Any] | None,
    batch: str = "",
) -> tuple[ColorSpec | None, list[dict[str, Any]], Any]:
    """A picked colouring with a layer valid for it (decoded in ``batch``, a page's
    "Decode in" choice): its spec (``None`` when it is the shared colouring already:
    nothing to send), the layer options, and the layer to set (``no_update`` when the
    picked one applies)."""
    fixed = normalise_layer(feature, layer)
    spec = ColorSpec.from_state({"feature": feature, "layer": fixed, "batch": batch})
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


def shared_outputs(*targets: tuple[Any, str]) -> list[Output]:
    """An Output of each ``(id, property)`` of ``targets`` that other callbacks set too
    (``allow_duplicate``)."""
    return [Output(target, prop, allow_duplicate=True) for target, prop in targets]


def props_of(dep: type[Output] | type[Input] | type[State], prop: str, *targets: str) -> list[Any]:
    """A ``dep`` (callback Output, Input or State) of ``prop`` of each of ``targets``."""
    return [dep(target, prop) for target in targets]


def data_of(*stores: str, dep: type[Input] | type[State] = Input) -> list[Any]:
    """The ``data`` of each of ``stores``, as callback Inputs (or ``dep``)."""
    return [dep(store, "data") for store in stores]


def csv_export(grid: str, button: str) -> Callable[[int | None], bool]:
    """Register the callback by which ``button`` downloads ``grid`` as CSV (what the grid
    shows, its filters applied); returns it."""

    @callback(
        Output(grid, "exportDataAsCsv"), Input(button, "n_clicks"), prevent_initial_call=True
    )
    def export(n_clicks: int | None) -> bool:
        return bool(n_clicks)

    return export


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
    catalog = feature_catalog(service, pair)
    return with_current(search_features(catalog, search, include_obs=include_obs), catalog, value)
