"""Explore's "Annotations" card: label sets made from selections or from the cell types,
their categories renamed, merged or deleted, undo, CSV import and export.

The sets are kept server-side per workspace (:mod:`dashboard.backend.label_sets`); the
card's one edit callback applies an action, then colours the cells by the set it changed
(patches of both views, as the recolour callback would) and rewrites the type-names store,
which the legend and the compare choices listen to, so both show the new categories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components, ids
from dashboard.pages import _cells, _linked
from dashboard.pages import _shared as sh
from dashboard.views import label_sets as ls
from dashboard.views.cells import valid_cells
from dashboard.views.colours import DEFAULT_FEATURE, ColorSpec, layer_options
from dashboard.views.errors import BackendError, InvalidSelection, NotReady
from dashboard.views.features import feature_catalog, with_current
from dashboard.views.layouts import shown_layout
from dashboard.views.state import active
from dashboard.views.upload_payload import upload_bytes

#: Largest CSV the card takes (bytes; its base64 must fit a callback body).
MAX_UPLOAD_BYTES = 20 * 1024**2
#: The card's edit buttons, by the action they run.
ACTIONS = {
    ids.ANN_FROM_SELECTION: "from_selection",
    ids.ANN_FROM_TYPES: "from_types",
    ids.ANN_LABEL_SELECTION: "label_selection",
    ids.ANN_RENAME: "rename",
    ids.ANN_DELETE_CATEGORIES: "delete_categories",
    ids.ANN_DELETE_SET: "delete_set",
    ids.ANN_UNDO: "undo",
    ids.ANN_UPLOAD: "import",
}


def _input(component_id: str, placeholder: str, width: str = "200px") -> dcc.Input:
    return dcc.Input(
        id=component_id,
        placeholder=placeholder,
        debounce=False,
        className="input",
        maxLength=60,
        style={"width": width},
    )


def _button(label: str, component_id: str, kind: str = "secondary", title: str = "") -> Any:
    return html.Button(label, id=component_id, className=f"btn btn-{kind}", title=title)


def card(service: Any, pair: Any) -> html.Section:
    """The card, listing the workspace's sets of the pair's dataset."""
    options = ls.set_options(service, pair)
    first = options[0]["value"] if options else None
    undo = ls.next_undo(service, pair)
    return components.card(
        "Annotations",
        [
            html.Div(
                [
                    _input(ids.ANN_NEW_NAME, "New label set, e.g. Lineage"),
                    _button(
                        "New from cell types",
                        ids.ANN_FROM_TYPES,
                        title="Copy the cell types as shown, to rename, merge or delete them",
                    ),
                    _button(
                        "New from selection",
                        ids.ANN_FROM_SELECTION,
                        title="A set in which the selected cells get the label typed below",
                    ),
                    dcc.Upload(
                        html.Button("Import CSV", className="btn btn-ghost"),
                        id=ids.ANN_UPLOAD,
                        max_size=MAX_UPLOAD_BYTES,
                        multiple=False,
                        accept=".csv,.tsv,.txt,text/csv,text/plain",
                    ),
                ],
                className="row-inline",
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Label set",
                        ids.ANN_SET,
                        options=options,
                        value=first,
                        clearable=False,
                        placeholder="No label set yet",
                        class_name="field-mid",
                    ),
                    _input(ids.ANN_LABEL, "Label, e.g. T cells"),
                    _button("Label selection", ids.ANN_LABEL_SELECTION, "primary"),
                    _button(
                        "Undo",
                        ids.ANN_UNDO,
                        "ghost",
                        title=f"Undo: {undo}" if undo else "Nothing to undo",
                    ),
                ],
                className="row-inline",
            ),
            html.Div(
                [
                    components.dropdown_field(
                        "Categories",
                        ids.ANN_CATEGORIES,
                        options=ls.category_options(service, pair, first),
                        value=[],
                        multi=True,
                        placeholder="One to rename, several to merge…",
                        class_name="field-wide",
                        maxHeight=320,
                    ),
                    _input(ids.ANN_CATEGORY_NAME, "New name, e.g. CD14 monocytes", "260px"),
                    _button("Rename / merge", ids.ANN_RENAME),
                    _button("Delete categories", ids.ANN_DELETE_CATEGORIES, "ghost"),
                ],
                className="row-inline",
            ),
            html.Div(
                [
                    _button("Export CSV", ids.ANN_EXPORT, "ghost"),
                    _button("Delete label set", ids.ANN_DELETE_SET, "ghost"),
                ],
                className="row-inline",
            ),
            html.Div(id=ids.ANN_STATUS, className="de-status"),
            dcc.Download(id=ids.ANN_DOWNLOAD),
        ],
        subtitle="Name cells: select them (lasso, box or a legend entry) and label them in a "
        "set, or copy the cell types and rename or merge them. Sets are saved in your "
        "workspace; colour, compare (Selection), the DE page, the model card's DE metric and "
        "Lookup's dot plot can group cells by them. CSV: cell id, label.",
    )


# ------------------------------------------------------------------------------ actions
def _csv_upload(contents: Any, filename: Any) -> tuple[bytes, str]:
    """The bytes and name of an uploaded CSV, else one line."""
    name = str(filename or "the file")[:80]
    too_large = f"larger than {MAX_UPLOAD_BYTES // 2**20} MB"
    return upload_bytes(contents, what=name, max_bytes=MAX_UPLOAD_BYTES, too_large=too_large), name


def apply_action(
    action: str,
    *,
    set_name: str | None,
    new_name: str | None = None,
    label: str | None = None,
    categories: list | None = None,
    category_name: str | None = None,
    selection: dict | None = None,
    upload: tuple[Any, Any] | None = None,
) -> tuple[str | None, str]:
    """Run one of the card's :data:`ACTIONS`; returns the set it leaves chosen (``None``:
    none left) and the status line. Refusals raise one line
    (:class:`~dashboard.views.errors.BackendError`)."""
    service, pair = active()
    n = service.dataset(pair).n_cells

    def cells() -> list[int]:
        found = valid_cells(selection, n)
        if not found:
            msg = "select cells first (lasso, box or a legend entry)"
            raise InvalidSelection(msg)
        return found

    def chosen() -> str:
        if not set_name:
            msg = "make a label set first (New from cell types, New from selection, Import)"
            raise InvalidSelection(msg)
        return str(set_name)

    runs: dict[str, Callable[[], tuple[str | None, str]]] = {
        "from_types": lambda: _done(ls.create_from_types(service, pair, new_name), "made"),
        "from_selection": lambda: _done(
            ls.create_from_cells(service, pair, new_name, cells(), label), "made"
        ),
        "label_selection": lambda: _done(
            ls.label_cells(service, pair, chosen(), cells(), label), "labelled"
        ),
        "rename": lambda: _done(
            ls.rename_or_merge(service, pair, chosen(), categories or [], category_name),
            "renamed" if len(categories or []) < 2 else "merged",
        ),
        "delete_categories": lambda: _done(
            ls.delete_categories(service, pair, chosen(), categories or []), "deleted"
        ),
        "delete_set": lambda: _deleted(service, pair, chosen()),
        "undo": lambda: _undone(service, pair, set_name),
        "import": lambda: _done(
            ls.import_csv(service, pair, *_csv_upload(*(upload or (None, None))), new_name),
            "imported",
        ),
    }
    if action not in runs:
        msg = "that is not one of the card's buttons"
        raise InvalidSelection(msg)
    return runs[action]()


def _done(s: Any, verb: str) -> tuple[str, str]:
    return s.name, f"{verb.capitalize()}: {ls.set_summary(s)}."


def _deleted(service: Any, pair: Any, name: str) -> tuple[str | None, str]:
    ls.delete_set(service, pair, name)
    left = ls.set_options(service, pair)
    return (
        left[0]["value"] if left else None
    ), f"Deleted label set “{name}” (Undo brings it back)."


def _undone(service: Any, pair: Any, name: str | None) -> tuple[str | None, str]:
    what = ls.undo(service, pair)
    names = [o["value"] for o in ls.set_options(service, pair)]
    keep = name if name in names else (names[-1] if names else None)
    return keep, f"Undone: {what}."


# ---------------------------------------------------------------------------- callbacks
def register() -> Callable[..., Any]:
    """The card's callbacks (Explore calls it once); returns the edit callback."""

    @callback(
        Output(ids.ANN_CATEGORIES, "options"),
        Output(ids.ANN_CATEGORIES, "value"),
        Input(ids.ANN_SET, "value"),
        prevent_initial_call=True,
    )
    def show_categories(name: str | None) -> tuple:
        """The categories of the chosen set."""
        try:
            return ls.category_options(*active(), name), []
        except NotReady:
            return [], []

    @callback(
        Output(ids.ANN_STATUS, "children"),
        Output(ids.ANN_SET, "options"),
        Output(ids.ANN_SET, "value"),
        Output(ids.ANN_CATEGORIES, "options", allow_duplicate=True),
        Output(ids.ANN_CATEGORIES, "value", allow_duplicate=True),
        Output(ids.ANN_UNDO, "title"),
        *sh.shared_outputs(
            (ids.EXPLORE_COLOR, "value"),
            (ids.EXPLORE_COLOR, "options"),
            (ids.COLOR_STORE, "data"),
            (ids.EXPLORE_LAYER, "options"),
            (ids.EXPLORE_UMAP, "figure"),
            (ids.EXPLORE_LINKED, "figure"),
            (ids.EXPLORE_TYPE_NAMES, "data"),
        ),
        *(Input(button, "n_clicks") for button in ACTIONS if button != ids.ANN_UPLOAD),
        Input(ids.ANN_UPLOAD, "contents"),
        State(ids.ANN_UPLOAD, "filename"),
        State(ids.ANN_SET, "value"),
        State(ids.ANN_NEW_NAME, "value"),
        State(ids.ANN_LABEL, "value"),
        State(ids.ANN_CATEGORIES, "value"),
        State(ids.ANN_CATEGORY_NAME, "value"),
        State(ids.SELECTION_STORE, "data"),
        State(ids.EXPLORE_COLOR, "options"),
        State(ids.EXPLORE_LINKED_KIND, "value"),
        State(ids.EXPLORE_LINKED_COLOR, "value"),
        State(ids.EXPLORE_LAYOUT.ready, "data"),
        prevent_initial_call=True,
    )
    def edit(*args: Any) -> tuple:
        """Run the clicked button's action; colour the cells by the set it changed."""
        n_buttons = len(ACTIONS) - 1
        (contents, filename, set_name, new_name, label, cats, cat_name, selection, options) = args[
            n_buttons : n_buttons + 9
        ]
        linked = args[n_buttons + 9 : n_buttons + 12]  # and the main view's layout
        action = ACTIONS.get(str(sh.triggered()), "")
        try:
            name, status = apply_action(
                action,
                set_name=set_name,
                new_name=new_name,
                label=label,
                categories=cats,
                category_name=cat_name,
                selection=selection,
                upload=(contents, filename),
            )
        except (BackendError, NotReady) as err:
            return (components.alert(str(err), kind="warning"), *([no_update] * N_AFTER_EDIT))
        return (components.alert(status, kind="success"), *_after_edit(name, options, *linked))

    callback(
        Output(ids.ANN_DOWNLOAD, "data"),
        Input(ids.ANN_EXPORT, "n_clicks"),
        State(ids.ANN_SET, "value"),
        prevent_initial_call=True,
    )(export)
    return edit


#: How many outputs besides the status line the edit callback sets (:func:`_after_edit`).
N_AFTER_EDIT = 12


def _after_edit(
    name: str | None,
    options: list | None,
    linked_kind: str | None = None,
    linked_color: str | None = None,
    layout: dict | None = None,
) -> tuple:
    """What an edit changes besides its status line: the set and category pickers, the
    undo button's title, and Explore coloured by the set (``name``; the cell types when
    none is left); the linked view too unless it shows colours of its own (a blend, an
    embedding coloured apart; the main view's on-data labels where its ``layout`` store
    puts the cells)."""
    service, pair = active()
    feature = ls.set_feature(name) if name else DEFAULT_FEATURE
    spec = ColorSpec(feature)
    key = shown_layout(service, pair, layout)  # where the main view's labels go
    umap, linked = _cells.recolor_patches(service, pair, spec, layout=key)
    if not _linked.follows_page(linked_kind, linked_color):
        linked = no_update
    undo = ls.next_undo(service, pair)
    catalog = feature_catalog(service, pair)
    return (
        ls.set_options(service, pair),
        name,
        ls.category_options(service, pair, name),
        [],
        f"Undo: {undo}" if undo else "Nothing to undo",
        feature,
        with_current(list(options or []), catalog, feature),
        spec.to_state(),
        layer_options(feature),
        umap,
        linked,
        service.cell_type_names(pair),
    )


def export(_n: int | None, name: str | None) -> Any:
    """The chosen set as a CSV download (``cell,<set name>``)."""
    if not name:
        return no_update
    try:
        filename, text = ls.export_csv(*active(), name)
    except (BackendError, NotReady):
        return no_update
    return {"content": text, "filename": filename, "type": "text/csv"}
