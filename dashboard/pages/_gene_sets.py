"""Explore's "Gene sets" card: paste or upload a list of genes and/or proteins, score it per
cell, colour the cells by the score, see it by cell type, and run DE between the cells high
and low in it; the sets are kept in the workspace (:data:`dashboard.ids.GENE_SETS_STORE`).

Explore makes it with :func:`card` (the layout) and :func:`register` (the callbacks). Scoring
or clicking a saved set sets Explore's "Colour by" to the set's key
(:mod:`dashboard.views.gene_set_keys`), so the usual recolour callback paints it; "DE: high
vs low" starts Explore's compare job, whose table fills in the Selection card.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components, figures, ids
from dashboard.pages import _jobs
from dashboard.pages import _shared as sh
from dashboard.views.de import submit_compare
from dashboard.views.errors import BackendError, NotReady
from dashboard.views.features import feature_catalog, with_current
from dashboard.views.gene_set_keys import MAX_NAME, is_set_key
from dashboard.views.gene_sets import (
    MAX_TEXT_BYTES,
    SCORE_HOW,
    high_low_cells,
    parse_gene_set,
    saved_sets,
    score_line,
    score_violin_frame,
    upload_text,
    with_saved,
    without_saved,
)
from dashboard.views.state import active

#: How the compare job panel names the job ("Comparison failed: ...").
COMPARE_LABEL = "Comparison"
PLACEHOLDER = "CD3E, CD3D, CD8A, CD2, protein:CD3_TotalSeqB … (commas, spaces or one per line)"


def card(current: str | None = None) -> html.Section:
    """The card; ``current`` is the key of the set Explore opens coloured by, if any."""
    key = current if is_set_key(current) else None
    return components.card(
        "Gene sets",
        [
            html.Div(
                [
                    dcc.Input(
                        id=ids.GENE_SET_NAME,
                        placeholder="Set name, e.g. T cells",
                        debounce=False,
                        className="input",
                        maxLength=MAX_NAME,
                    ),
                    html.Button("Score", id=ids.GENE_SET_SCORE, className="btn btn-primary"),
                    dcc.Upload(
                        html.Button("Upload a list (.txt, .csv)", className="btn btn-ghost"),
                        id=ids.GENE_SET_UPLOAD,
                        max_size=MAX_TEXT_BYTES,
                        multiple=False,
                        accept=".txt,.csv,.tsv,text/plain,text/csv",
                    ),
                ],
                className="row-inline",
            ),
            dcc.Textarea(
                id=ids.GENE_SET_TEXT,
                placeholder=PLACEHOLDER,
                maxLength=MAX_TEXT_BYTES,
                className="input",
                style={"width": "100%", "height": "64px"},
            ),
            html.Div(id=ids.GENE_SET_STATUS, className="de-status"),
            html.Div(id=ids.GENE_SET_LIST, className="chips"),
            html.Div(SCORE_HOW, className="muted small"),
            components.graph(ids.GENE_SET_VIOLIN, height=360),
            html.Div(
                [
                    html.Button(
                        "DE: high vs low",
                        id=ids.GENE_SET_DE,
                        className="btn btn-secondary",
                        title="Bayesian DE of the cells in the score's top quartile against "
                        "those in its bottom quartile",
                    ),
                    html.Span(
                        "Compares the cells in the top quartile of the score (25% of cells) "
                        "with those in the bottom quartile; the table fills in under "
                        "Selection.",
                        className="muted small",
                    ),
                ],
                className="row-inline",
            ),
            dcc.Store(id=ids.GENE_SET_CURRENT, data=key),
        ],
        subtitle="Paste or upload genes and/or proteins (case-insensitive; a name that is a "
        "gene and a protein, like CD4, is the gene: write protein:CD4 for the protein). "
        "Click a saved set to colour the cells by it.",
    )


def _color_outputs() -> list[Output]:
    """Explore's colour picker (value and options) and the set shown."""
    return [
        Output(ids.EXPLORE_COLOR, "value", allow_duplicate=True),
        Output(ids.EXPLORE_COLOR, "options", allow_duplicate=True),
        Output(ids.GENE_SET_CURRENT, "data", allow_duplicate=True),
    ]


def _colour_by(key: str, options: list | None) -> tuple[str, list, str]:
    """Explore's colour picker set to the set ``key`` (kept among its options)."""
    service, pair = active()
    return key, with_current(list(options or []), feature_catalog(service, pair), key), key


def register() -> dict[str, Callable[..., Any]]:
    """Register the card's callbacks (from Explore's module); returns them by name, to
    call directly."""

    @callback(
        Output(ids.GENE_SETS_STORE, "data", allow_duplicate=True),
        Output(ids.GENE_SET_STATUS, "children"),
        *_color_outputs(),
        Input(ids.GENE_SET_SCORE, "n_clicks"),
        *sh.values_of(ids.GENE_SET_NAME, ids.GENE_SET_TEXT),
        State(ids.GENE_SETS_STORE, "data"),
        State(ids.EXPLORE_COLOR, "options"),
        prevent_initial_call=True,
    )
    def score_set(
        n_clicks: int | None, name: Any, text: Any, store: Any, options: list | None
    ) -> tuple:
        """Match the pasted list, score it, keep it in the workspace and colour by it;
        one line says what was matched (or why nothing was)."""
        if not n_clicks:
            return (no_update,) * 5
        try:
            service, pair = active()
            parsed = parse_gene_set(service, pair, name, text)
            key = parsed.gene_set.key
            line = f"{parsed.summary()} {score_line(service, pair, key, named=False)}"
        except BackendError as err:
            return no_update, components.alert(str(err), kind="warning"), *(no_update,) * 3
        store = with_saved(store, pair.dataset.id, parsed.gene_set)
        status = components.alert(line, kind="success")
        return store, status, *_colour_by(key, options)

    @callback(
        Output(ids.GENE_SET_TEXT, "value"),
        Output(ids.GENE_SET_NAME, "value"),
        Output(ids.GENE_SET_STATUS, "children", allow_duplicate=True),
        Input(ids.GENE_SET_UPLOAD, "contents"),
        State(ids.GENE_SET_UPLOAD, "filename"),
        State(ids.GENE_SET_NAME, "value"),
        prevent_initial_call=True,
    )
    def read_upload(contents: Any, filename: Any, name: Any) -> tuple:
        """An uploaded list goes into the text box (and names the set after the file when
        it has no name yet), to check and Score."""
        if not contents:
            return no_update, no_update, no_update
        try:
            text = upload_text(contents, filename)
        except BackendError as err:
            return no_update, no_update, components.alert(str(err), kind="warning")
        stem = PurePath(str(filename or "")).stem[:MAX_NAME] if filename else ""
        new_name = stem if stem and not (isinstance(name, str) and name.strip()) else no_update
        return text, new_name, html.Span("File read: press Score.", className="muted small")

    @callback(Output(ids.GENE_SET_LIST, "children"), Input(ids.GENE_SETS_STORE, "data"))
    def saved_list(store: Any) -> Any:
        """The workspace's sets for this dataset as chips (click: colour by; ×: delete)."""
        try:
            service, pair = active()
        except NotReady:
            return []
        sets = saved_sets(store, pair.dataset.id, feature_catalog(service, pair))
        if not sets:
            return html.Span("No gene sets yet.", className="muted small")
        return [
            html.Span(
                [
                    html.Button(
                        f"{gs.name} · {gs.size}",
                        id={"type": ids.GENE_SET_CHIP, "name": gs.name},
                        className="chip",
                        title=f"Colour the cells by “{gs.name}”",
                    ),
                    html.Button(
                        "×",
                        id={"type": ids.GENE_SET_DELETE, "name": gs.name},
                        className="chip-delete",
                        title=f"Delete “{gs.name}”",
                    ),
                ],
                className="chip-group",
            )
            for gs in sets
        ]

    @callback(
        *_color_outputs(),
        Output(ids.GENE_SET_STATUS, "children", allow_duplicate=True),
        Input({"type": ids.GENE_SET_CHIP, "name": ALL}, "n_clicks"),
        State(ids.GENE_SETS_STORE, "data"),
        State(ids.EXPLORE_COLOR, "options"),
        prevent_initial_call=True,
    )
    def pick_saved(clicks: list[int | None], store: Any, options: list | None) -> tuple:
        """Colour the cells by a saved set (it must be one of this workspace's)."""
        trigger = sh.clicked_item(clicks)
        if trigger is None:
            return (no_update,) * 4
        service, pair = active()
        sets = saved_sets(store, pair.dataset.id, feature_catalog(service, pair))
        found = next((gs for gs in sets if gs.name == trigger.get("name")), None)
        if found is None:
            msg = "that gene set is not saved in this workspace"
            return *(no_update,) * 3, components.alert(msg, kind="warning")
        try:
            line = score_line(service, pair, found.key)
        except BackendError as err:
            return *(no_update,) * 3, components.alert(str(err), kind="warning")
        return *_colour_by(found.key, options), html.Span(line)

    @callback(
        Output(ids.GENE_SETS_STORE, "data", allow_duplicate=True),
        Input({"type": ids.GENE_SET_DELETE, "name": ALL}, "n_clicks"),
        State(ids.GENE_SETS_STORE, "data"),
        prevent_initial_call=True,
    )
    def delete_saved(clicks: list[int | None], store: Any) -> Any:
        """Forget a saved set."""
        trigger = sh.clicked_item(clicks)
        if trigger is None:
            return no_update
        _, pair = active()
        return without_saved(store, pair.dataset.id, trigger.get("name"))

    @callback(Output(ids.GENE_SET_VIOLIN, "figure"), Input(ids.GENE_SET_CURRENT, "data"))
    @sh.figure_or_error
    def build_violin(key: Any) -> Any:
        """The set's score per cell type (one violin each)."""
        if not key:
            return figures.empty_figure("Score a gene set to see it by cell type.")
        service, pair = active()
        frame, order, gs = score_violin_frame(service, pair, key)
        return figures.violin_figure(
            frame,
            group_column="cell_type",
            value_columns=["score"],
            titles=[f"{gs.name}: score by cell type"],
            group_order=order,
        )

    @callback(
        Output(ids.EXPLORE_DE_JOB.store, "data", allow_duplicate=True),
        Output(ids.EXPLORE_DE_JOB.interval, "disabled", allow_duplicate=True),
        Output(ids.EXPLORE_DE_READY_STORE, "data", allow_duplicate=True),
        Output(ids.EXPLORE_DE_JOB.progress, "children", allow_duplicate=True),
        Output(ids.EXPLORE_DE_JOB.cancel, "disabled", allow_duplicate=True),
        Input(ids.GENE_SET_DE, "n_clicks"),
        State(ids.GENE_SET_CURRENT, "data"),
        prevent_initial_call=True,
    )
    def start_high_low(n_clicks: int | None, key: Any) -> tuple:
        """Start Explore's compare job: the score's top quartile vs its bottom quartile."""
        if not n_clicks:
            return (no_update,) * 5
        if not key:
            err = BackendError("Score a gene set (or click a saved one) first.")
            return _jobs.started(None, components.refused_view(err))
        try:
            service, pair = active()
            high, low, name_a, name_b = high_low_cells(service, pair, key)
        except BackendError as err:
            return _jobs.started(None, components.refused_view(err))
        store, view = _jobs.start(
            lambda: submit_compare(service, pair, high, low, name_a, name_b),
            COMPARE_LABEL,
            a=name_a,
            b=name_b,
        )
        return _jobs.started(store, view)

    return {
        "score_set": score_set,
        "read_upload": read_upload,
        "saved_list": saved_list,
        "pick_saved": pick_saved,
        "delete_saved": delete_saved,
        "build_violin": build_violin,
        "start_high_low": start_high_low,
    }
