"""Page callbacks called directly (they are plain functions) on a real PBMC slice and a small
trained model: recolour patches, feature search, linked selection, DE tables, metrics tables
and the Model page's train/load/cancel paths, with errors shown as one readable line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import Patch, no_update
from dash._utils import to_json

from dashboard import app as app_module
from dashboard import figures, ids
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.export import build_mudata
from dashboard.backend.metrics import CV_DISPLAY_ROWS, DE_COLUMNS, PEARSON_R2_ROW
from dashboard.backend.service import AnalysisService
from dashboard.layout import POLL_IDLE_MS
from dashboard.testing import find, text, walk
from dashboard.url_state import decode_selection
from dashboard.views.cells import saved_selection, valid_cells
from dashboard.views.colours import ColorSpec, color_label
from dashboard.views.de import de_display_table
from dashboard.views.features import default_protein_pair, feature_catalog
from dashboard.views.model import checkpoint_options, efficiency_summary
from dashboard.views.state import ActiveState, set_state
from dashboard.views.values import (
    gene_denoised,
    gene_raw,
    obs_labels,
    protein_denoised,
    protein_raw,
)

pytestmark = pytest.mark.slow

CELL_TYPE = {"feature": "obs:cell_type", "layer": "raw"}


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """The trained slice written to the data folder; results shared with test_app."""
    return {
        "name": "callbacks",
        "write_data": "pbmc_slice.h5ad",
        "settings": {"de_n_samples": 1000},
    }


@pytest.fixture(scope="module")
def env(trained_app: SimpleNamespace) -> SimpleNamespace:
    """The app on the trained slice: service, active pair, state and page modules."""
    from dashboard.pages import de, explore, lookup, metrics
    from dashboard.pages import model as model_page

    pages = {"explore": explore, "lookup": lookup, "de": de, "metrics": metrics}
    types = trained_app.service.cell_types(trained_app.pair)
    return SimpleNamespace(**{**vars(trained_app), **pages, "model": model_page, "types": types})


# ----------------------------------------------------------------------------- helpers
def assert_one_line_alert(component: Any, *, kind: str | None = None) -> str:
    """The component is an alert with one readable line; returns its text."""
    assert "alert" in component.className, component
    if kind is not None:
        assert f"alert-{kind}" in component.className
    message = text(component).replace("×", "").strip()
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    assert 'File "' not in message
    return message


def operations(patch: Patch) -> dict[tuple, Any]:
    """A Patch's assignments: location → value."""
    ops = patch.to_plotly_json()["operations"]
    assert all(op["operation"] == "Assign" for op in ops)
    return {tuple(op["location"]): op["params"]["value"] for op in ops}


def decode(spec: dict[str, str]) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


def finish(service: AnalysisService, job: str, timeout: float = 120) -> None:
    info = service.wait(job, timeout=timeout)
    assert info.status.finished, info


def cells_of(env: SimpleNamespace, cell_type: str) -> list[int]:
    return np.flatnonzero(env.types.astype(str).to_numpy() == cell_type).tolist()


def largest_type(env: SimpleNamespace) -> str:
    return str(env.types.astype(str).value_counts().index[0])


def tooltip_text(env: SimpleNamespace, cell: int, feature: str = "obs:cell_type") -> str:
    """What Explore's main view's tooltip says when the pointer is on cell ``cell``."""
    point = {"curveNumber": 0, "customdata": cell, "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2}}
    show, _bbox, children = env.explore.umap_tooltip({"points": [point]}, feature, "raw", None)
    assert show is True
    return text(children)


def b_cell_type(env: SimpleNamespace) -> str:
    """The B cells (clusters are named by their markers, e.g. "CD19+ IGHM/CD79A")."""
    return next(str(t) for t in env.types.cat.categories if str(t).startswith("CD19+ "))


# ---------------------------------------------------------------------------- explore
def test_explore_umap_has_one_point_per_cell(env) -> None:
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, None)
    assert isinstance(fig, go.Figure)
    trace = fig.data[0]
    assert isinstance(trace, go.Scattergl)
    assert len(trace.x) == env.n
    umap = env.service.umap(env.pair)
    np.testing.assert_allclose(trace.x, umap["UMAP1"].to_numpy(), rtol=1e-5)
    # hover: no string per point; the tooltip names the cell id, cell type and batch
    assert trace.text is None and trace.hoverinfo == "none"
    first = str(env.data.obs_names[0])
    batch = str(obs_labels(env.service, env.pair, "batch").iloc[0])
    assert tooltip_text(env, 0) == f"{first}type: {env.types.iloc[0]}batch: {batch}"
    # the legend names the types
    cats = [str(c) for c in env.types.cat.categories]
    legend = env.explore.render_legend("obs:cell_type", "raw", None)
    assert [e.id["value"] for e in legend_entries(legend)] == cats
    assert trace.marker.showscale is False
    assert trace.selectedpoints is None
    # cell-type labels on the data
    assert len(fig.layout.annotations) == len(env.types.cat.categories)


def test_explore_umap_opens_with_a_shared_links_selection(env) -> None:
    fig = env.explore.build_umap(
        ids.EXPLORE_UMAP, "gene:LYZ", "raw", {"cells": [1, 2]}, {"cells": [5, 6, 7]}
    )
    assert list(fig.data[0].selectedpoints) == [5, 6, 7]  # the link wins on first build
    stale = env.explore.build_umap(
        ids.EXPLORE_UMAP, "gene:LYZ", "raw", {"cells": [0, env.n + 5]}, None
    )
    assert stale.data[0].selectedpoints is None  # cells outside this dataset are ignored


@pytest.mark.parametrize("page", ["explore", "lookup", "de"])
def test_a_link_with_an_unknown_colour_says_so(env, page) -> None:
    layout = getattr(env, page).layout(color="gene:NOT_A_GENE", layer="raw")
    state = find(layout, ids.PAGE_STATE).data
    assert "'gene:NOT_A_GENE', which this dataset does not have" in state["notice"]
    assert "showing cell types instead" in state["notice"]
    _, alert = app_module.seed_from_link(state)
    assert "Shared link: the link colours by" in text(alert)
    known = getattr(env, page).layout(color="gene:LYZ", layer="raw")
    assert "notice" not in find(known, ids.PAGE_STATE).data


def clicked(component_id: dict) -> Any:
    """Make the next callback call see ``component_id`` as clicked (Dash's callback
    context); returns the token to reset it with."""
    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    prop = json.dumps(component_id, separators=(",", ":"), sort_keys=True) + ".n_clicks"
    return context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop, "value": 1}]))


def legend_entries(legend: Any) -> list[Any]:
    return [c for c in walk(legend) if isinstance(getattr(c, "id", None), dict)]


def test_explore_legend_lists_types_with_counts_and_a_click_selects_them(env) -> None:
    from dash._callback_context import context_value

    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, None)
    assert fig.data[0].marker.showscale is False  # the legend below replaces the colour bar
    shown = env.service.shown_cell_types(env.pair).astype(str)
    names = [str(c) for c in env.service.shown_cell_types(env.pair).cat.categories]
    entries = legend_entries(env.explore.render_legend("obs:cell_type", "raw", None))
    assert [e.id for e in entries] == [
        {"type": ids.LEGEND_ITEM, "feature": "obs:cell_type", "value": n} for n in names
    ]
    for entry, name in zip(entries, names, strict=True):
        assert text(entry) == f"{name}{int((shown == name).sum()):,}"  # whole name, count
    target = names[1]
    token = clicked(entries[1].id)
    try:
        selection = env.explore.select_from_legend([None, 1], None)
        assert selection["cells"] == np.flatnonzero(shown.to_numpy() == target).tolist()
        assert selection["group"] == {"feature": "obs:cell_type", "value": target}
        again = env.explore.select_from_legend([None, 2], selection)
        assert again == {"cells": [], "source": "clear"}  # a second click clears
    finally:
        context_value.reset(token)
    marked = legend_entries(env.explore.render_legend("obs:cell_type", "raw", selection))
    assert [e.className for e in marked].count("legend-item is-active") == 1
    assert "is-active" in marked[1].className
    # the views highlight exactly those cells; the info line counts them
    umap_patch, _ = env.explore.highlight(selection)
    assert operations(umap_patch)[("data", 0, "selectedpoints")] == selection["cells"]
    assert f"{len(selection['cells']):,} cells selected" in text(
        env.explore.selection_info(selection)
    )
    # on a dataset above max_points the category itself is the selection, resolved here
    n = env.n
    assert valid_cells({"group": selection["group"]}, n) == selection["cells"]
    assert valid_cells({"group": {"feature": "obs:cell_type", "value": "no such"}}, n) is None
    # numbers have no legend (their colour bar stays in the figure)
    assert env.explore.render_legend("gene:LYZ", "raw", None) == []
    lyz = env.explore.build_umap(ids.EXPLORE_UMAP, "gene:LYZ", "raw", None, None)
    assert lyz.data[0].marker.showscale is True


def test_recolour_sends_only_a_marker_patch(env) -> None:
    out = env.explore.recolor("gene:LYZ", "raw", CELL_TYPE)
    umap_patch, linked_patch, color_store, layer_options, layer_value = out
    assert isinstance(umap_patch, Patch)
    assert isinstance(linked_patch, Patch)
    ops = operations(umap_patch)
    assert set(ops) == {("data", 0, "marker"), ("layout", "annotations")}  # no hover strings
    assert ("layout", "annotations") not in operations(linked_patch)
    marker = ops[("data", 0, "marker")]
    expected = gene_raw(env.service, env.pair, "LYZ")
    np.testing.assert_allclose(decode(marker["color"]), expected, rtol=1e-6)
    assert marker["colorbar"]["title"]["text"].startswith("LYZ")
    assert ops[("layout", "annotations")] == []  # no cell-type labels on a gene colouring
    lyz = float(expected[7])  # the hover shows the new colouring's value of the cell
    assert tooltip_text(env, 7, "gene:LYZ").endswith(f"LYZ · raw (log1p): {lyz:.3g}")
    assert color_store == {"feature": "gene:LYZ", "layer": "raw"}
    assert layer_value is no_update
    assert [o["value"] for o in layer_options if not o["disabled"]] == ["raw", "denoised"]
    # the patch is the marker and little else: no coordinates, no cell positions (the
    # whole figure has no hover strings any more, so it is only ~5x the colours' size)
    full = env.explore.build_umap(ids.EXPLORE_UMAP, "gene:LYZ", "raw", None, None)
    assert len(to_json(umap_patch)) < len(to_json(marker)) + 1000
    assert len(to_json(umap_patch)) < len(full.to_json()) / 3


def test_recolour_by_protein_foreground_and_back(env) -> None:
    protein = env.data.protein_names[0]
    patch, _, store, options, layer = env.explore.recolor(
        f"protein:{protein}", "foreground", CELL_TYPE
    )
    marker = operations(patch)[("data", 0, "marker")]
    fg = env.service.foreground_probability(env.pair)[protein].to_numpy()
    np.testing.assert_allclose(decode(marker["color"]), fg, rtol=1e-6)
    assert 0.0 <= marker["cmin"] <= marker["cmax"] <= 1.0
    assert store == {"feature": f"protein:{protein}", "layer": "foreground"}
    assert not next(o for o in options if o["value"] == "foreground")["disabled"]
    # a gene has no foreground probability: the layer falls back to raw values
    _, _, store, _, layer = env.explore.recolor("gene:LYZ", "foreground", store)
    assert store == {"feature": "gene:LYZ", "layer": "raw"}
    assert layer == "raw"
    # back to cell types: categorical codes and on-data labels
    patch, _, store, options, _ = env.explore.recolor("obs:cell_type", "raw", store)
    ops = operations(patch)
    assert ops[("data", 0, "marker")]["color"]["dtype"] == "u1"
    assert len(ops[("layout", "annotations")]) == len(env.types.cat.categories)
    assert [o["value"] for o in options if o["disabled"]] == ["raw", "denoised", "foreground"]


def test_recolour_to_the_current_colouring_sends_nothing(env) -> None:
    state = {"feature": "gene:LYZ", "layer": "denoised"}
    umap, linked, store, _, _ = env.explore.recolor("gene:LYZ", "denoised", state)
    assert umap is no_update and linked is no_update and store is no_update


def test_recolour_by_an_unknown_gene_raises_a_readable_error(env) -> None:
    with pytest.raises(InvalidSelection, match="no gene 'NOT_A_GENE'"):
        env.explore.recolor("gene:NOT_A_GENE", "raw", CELL_TYPE)


def test_colour_search_lists_annotations_genes_and_proteins(env) -> None:
    values = [o["value"] for o in env.explore.search_colors("clus", None)]
    assert values[0] == "obs:cluster"
    values = [o["value"] for o in env.explore.search_colors("CD8", "gene:LYZ")]
    assert values[0] == "gene:LYZ"  # the current value is kept
    assert "protein:CD8a_TotalSeqB" in values and "gene:CD8A" in values
    assert env.explore.search_colors(None, None) is no_update


def test_selection_highlights_the_same_cells_in_both_views(env) -> None:
    cells = [3, 10, 11, 500]
    selection = {"cells": cells, "source": ids.EXPLORE_UMAP, "dataset": env.pair.dataset.id}
    umap_patch, linked_patch = env.explore.highlight(selection)
    umap_ops, linked_ops = operations(umap_patch), operations(linked_patch)
    assert umap_ops[("data", 0, "selectedpoints")] == cells
    assert linked_ops[("data", 0, "selectedpoints")] == cells
    # the lasso was drawn on the UMAP: only the linked view drops its old outline
    assert ("layout", "selections") not in umap_ops
    assert linked_ops[("layout", "selections")] == []
    cleared = operations(env.explore.highlight({"cells": [], "source": "clear"})[0])
    assert cleared[("data", 0, "selectedpoints")] is None


def test_linked_view_plots_proteins_with_the_selection(env) -> None:
    x, y = default_protein_pair(feature_catalog(env.service, env.pair))
    assert (x, y) == ("CD4_TotalSeqB", "CD8a_TotalSeqB")
    fig = env.explore.build_linked(
        "proteins", x, y, "raw", "obs:cell_type", "raw", {"cells": [4, 8]}, None
    )
    trace = fig.data[0]
    np.testing.assert_allclose(trace.x, protein_raw(env.service, env.pair, x), rtol=1e-6)
    np.testing.assert_allclose(trace.y, protein_raw(env.service, env.pair, y), rtol=1e-6)
    assert list(trace.selectedpoints) == [4, 8]
    assert fig.layout.title.text == "CD4 protein vs CD8a protein"
    assert fig.layout.xaxis.title.text == "CD4 protein raw (log1p)"
    raw_den = env.explore.build_linked(
        "raw_denoised", x, None, "raw", "obs:cell_type", "raw", None, None
    )
    den = protein_denoised(env.service, env.pair, x)
    np.testing.assert_allclose(raw_den.data[0].y, den, rtol=1e-6)
    assert env.explore.linked_controls("raw_denoised") == (True, "segmented is-hidden")


def test_selection_info_counts_cells_and_types(env) -> None:
    cells = cells_of(env, largest_type(env))[:20]
    info = text(env.explore.selection_info({"cells": cells}))
    assert "20 cells selected" in info
    assert f"{largest_type(env)} (20)" in info
    assert "No cells selected" in text(env.explore.selection_info(None))


def test_save_and_reuse_a_selection(env) -> None:
    cells = [1, 2, 3, 40, 41]
    saved, name, note = env.explore.save_selection(1, " my cells ", {"cells": cells}, None)
    mine = saved[env.pair.dataset.id]
    assert set(mine) == {"my cells"}
    assert decode_selection(mine["my cells"]["token"], env.n) == cells
    assert name == ""
    assert "Saved" in assert_one_line_alert(note, kind="success")
    chips = env.explore.saved_list(saved)
    assert "my cells · 5" in text(chips)
    restored = saved_selection(env.service, env.pair, "my cells", saved)
    assert restored == {"cells": cells, "source": "saved", "dataset": env.pair.dataset.id}
    _, _, warning = env.explore.save_selection(1, "x", {"cells": []}, saved)
    assert "Select some cells first" in assert_one_line_alert(warning, kind="warning")


def test_compare_choices_follow_the_selection(env) -> None:
    first, a, second, b = env.explore.update_compare_options({"cells": [1, 2]}, None, None, None)
    assert first[0] == {"label": "Current selection (2)", "value": "__current__"}
    assert a == "__current__"
    assert second[0]["value"] == "__rest__"
    assert b == "__rest__"
    type_values = {o["value"] for o in first if o["value"].startswith("type:")}
    assert type_values == {f"type:{t}" for t in env.types.cat.categories}


def de_rows_of(grid: Any) -> list[dict]:
    rows = grid.rowData
    assert rows, "empty DE table"
    return rows


def compare(
    env: SimpleNamespace, a: str, b: str, selection: dict | None = None, saved: dict | None = None
) -> tuple:
    """Press Compare (DE), let its job finish as the panel's poll sees it; what the result
    callback then shows: ``(table, status line, export hidden)``."""
    store, interval_off, ready, progress, cancel_off = env.explore.start_compare(
        1, a, b, selection, saved
    )
    assert store is not None, text(progress)
    if ready is no_update:  # still running: the panel polls until it is done
        assert (interval_off, cancel_off) == (False, False)
        finish(env.service, store["job"])
        progress, interval_off, ready, cancel_off, message = env.explore.poll_compare(1, store)
        assert message == ""
    assert (progress, interval_off, cancel_off) == ([], True, True)  # the bar goes
    return env.explore.show_compare(ready)


def test_compare_runs_as_a_job_and_the_table_fills_in_when_done(env) -> None:
    b_cells = cells_of(env, b_cell_type(env))
    other = largest_type(env)
    selection = {"cells": b_cells[: len(b_cells) // 2]}  # a new pair of groups: not cached
    store, interval_off, ready, progress, cancel_off = env.explore.start_compare(
        1, "__current__", f"type:{other}", selection, None
    )
    info = env.service.job(store["job"])
    assert info.kind == "de_groups"  # a backend job, not the web request
    assert (store["a"], store["b"]) == ("selection", other)
    if ready is no_update:  # the panel shows the job: its name, a bar, Cancel on
        assert text(progress).startswith("Comparison") and "%" in text(progress)
        assert (interval_off, cancel_off) == (False, False)
        assert env.explore.show_compare(None) == (no_update,) * 3  # nothing to show yet
        finish(env.service, store["job"])
        progress, interval_off, ready, cancel_off, _ = env.explore.poll_compare(1, store)
    assert (progress, interval_off, cancel_off) == ([], True, True)
    assert ready["job"] == store["job"]
    wrap, status, export_hidden = env.explore.show_compare(ready)
    rows = de_rows_of(wrap)
    assert len(rows) == env.data.n_genes + env.data.n_proteins
    assert f"selection vs {other}" in text(status)
    up = {r["feature"] for r in rows if r["is_de"] and r["lfc_mean"] > 0}
    assert {"MS4A1", "CD79A"} & up  # the selected B cells' genes against the other type
    assert export_hidden is False


def test_a_compare_job_can_be_cancelled(env) -> None:
    cells = cells_of(env, largest_type(env))[:25]
    store, *_ = env.explore.start_compare(1, "__current__", "__rest__", {"cells": cells}, None)
    assert "Cancelling" in text(env.explore.cancel_compare(1, store))
    info = env.service.wait(store["job"], timeout=120)
    progress, interval_off, ready, cancel_off, message = env.explore.poll_compare(2, store)
    assert (interval_off, cancel_off, message) == (True, True, "")  # the notice goes too
    if str(info.status) == "cancelled":  # else it had finished before the click
        assert assert_one_line_alert(progress[0], kind="info") == "Comparison: cancelled."
        assert ready is no_update
    assert env.explore.cancel_compare(None, store) is no_update
    assert env.explore.cancel_compare(1, None) is no_update


def test_selection_vs_rest_de_table(env) -> None:
    cells = cells_of(env, b_cell_type(env))
    wrap, status, export_hidden = compare(env, "__current__", "__rest__", {"cells": cells})
    rows = de_rows_of(wrap)
    assert len(rows) == env.data.n_genes + env.data.n_proteins
    for col in ("key", "feature", "modality", "lfc_mean", "bayes_factor", "proba_de", "is_de"):
        assert col in rows[0]
    assert {r["modality"] for r in rows} == {"rna", "protein"}
    bf = [r["bayes_factor"] for r in rows if r["bayes_factor"] is not None]
    assert bf == sorted(bf, reverse=True)  # strongest evidence first
    assert all(0.0 <= r["proba_de"] <= 1.0 for r in rows)
    n_de = sum(bool(r["is_de"]) for r in rows)
    assert n_de > 10  # B cells differ from the rest
    up = {r["feature"] for r in rows if r["is_de"] and r["lfc_mean"] > 0}
    assert {"MS4A1", "CD79A", "CD19 protein"} <= up  # display names
    assert f"{n_de:,} of {len(rows):,} features" in text(status)
    assert "selection vs Rest" in text(status)
    assert export_hidden is False
    assert wrap.id == ids.EXPLORE_DE_TABLE


def test_group_a_vs_group_b_de_table(env) -> None:
    counts = env.types.astype(str).value_counts()
    a, b = str(counts.index[0]), str(counts.index[1])
    wrap, status, _ = compare(env, f"type:{a}", f"type:{b}")
    rows = de_rows_of(wrap)
    assert f"{a} vs {b}" in text(status)
    top = rows[0]
    assert top["bayes_factor"] > 0
    assert isinstance(top["is_de"], bool)
    kind = "protein" if top["modality"] == "protein" else "gene"
    assert top["key"] == f"{kind}:{top['feature_id']}"


def test_compare_without_cells_is_a_warning(env) -> None:
    store, interval_off, ready, status, cancel_off = env.explore.start_compare(
        1, "__current__", "__rest__", None, None
    )
    assert store is None and ready is no_update  # no job, the table stays as it was
    assert (interval_off, cancel_off) == (True, True)
    assert "that selection is gone" in assert_one_line_alert(status, kind="warning")
    same = env.explore.start_compare(1, "type:X", "type:X", None, None)[3]
    assert_one_line_alert(same, kind="warning")
    t = f"type:{largest_type(env)}"
    inside = env.explore.start_compare(1, t, t, None, None)[3]
    assert "pick groups that differ" in assert_one_line_alert(inside, kind="warning")
    assert env.explore.start_compare(None, t, "__rest__", None, None) == (no_update,) * 5


def test_every_de_row_key_is_a_colourable_feature(env) -> None:
    wrap, _, _ = compare(env, f"type:{b_cell_type(env)}", "__rest__")
    keys = [r["key"] for r in de_rows_of(wrap)]
    catalog = feature_catalog(env.service, env.pair)
    assert all(catalog.has(k) for k in keys), [k for k in keys if not catalog.has(k)][:3]
    protein = next(r for r in wrap.rowData if r["modality"] == "protein")
    assert protein["feature_id"] in set(env.data.protein_names)
    # clicking it colours the cells by the protein's denoised values
    value, _, layer = env.explore.color_by_de_row({"rowId": protein["key"]}, [])
    patch = env.explore.recolor(value, layer, CELL_TYPE)[0]
    assert ("data", 0, "marker") in operations(patch)


def test_de_row_click_colours_by_the_feature(env) -> None:
    value, options, layer = env.explore.color_by_de_row({"rowId": "gene:LYZ"}, [])
    assert value == "gene:LYZ"
    assert options[0] == {"label": "LYZ", "value": "gene:LYZ"}
    assert layer == "denoised"
    assert env.explore.color_by_de_row({"rowId": None}, []) == (no_update,) * 3


# ----------------------------------------------------------------------------- lookup
def test_lookup_autocomplete_is_case_insensitive_prefix_then_substring(env) -> None:
    values = [o["value"] for o in env.lookup.search_feature("cd8", None)]
    assert values[0] == "protein:CD8a_TotalSeqB"  # proteins first within a rank
    assert set(values[1:4]) == {"gene:CD84", "gene:CD8A", "gene:CD8B"}
    assert values == [o["value"] for o in env.lookup.search_feature("CD8", None)]
    assert not any(v.startswith("obs:") for v in values)  # genes and proteins only
    # substring matches anywhere in the name, after every prefix match
    assert "gene:S100A8" in [o["value"] for o in env.lookup.search_feature("100a8", None)]
    values = [o["value"] for o in env.lookup.search_feature("Ly", None)]
    assert values[0] in {"gene:LYN", "gene:LYZ"}  # shortest prefix matches first
    assert values[-1] == "gene:GNLY"  # the only substring match comes last
    assert "gene:LYZ" in values
    # an exact name is first; proteins match by their short name too
    assert [o["value"] for o in env.lookup.search_feature("cd4", None)][:2] == [
        "protein:CD4_TotalSeqB",
        "gene:CD4",
    ]
    labels = {o["value"]: o["label"] for o in env.lookup.search_feature("cd4", None)}
    assert labels["protein:CD4_TotalSeqB"] == "CD4 protein"
    assert labels["gene:CD4"] == "CD4"
    assert env.lookup.search_feature("zzzzqqq", None) == []
    assert env.lookup.search_dot_features("lyz", ["gene:CD4"])[0]["value"] == "gene:CD4"


def test_lookup_recolours_and_shares_the_colour(env) -> None:
    patch, store, options, layer = env.lookup.recolor_lookup("gene:MS4A1", "denoised", None)
    assert next(o for o in options if o["value"] == "foreground")["disabled"]
    marker = operations(patch)[("data", 0, "marker")]
    expected = gene_denoised(env.service, env.pair, "MS4A1")
    np.testing.assert_allclose(decode(marker["color"]), expected, rtol=1e-6)
    assert store == {"feature": "gene:MS4A1", "layer": "denoised"}
    assert layer is no_update
    assert env.lookup.recolor_lookup(None, "raw", None)[0] is no_update


def test_lookup_violin_raw_vs_denoised_per_cell_type(env) -> None:
    fig = env.lookup.update_violin("gene:LYZ")
    assert all(isinstance(t, go.Violin) for t in fig.data)
    left = [t for t in fig.data if t.xaxis == "x"]
    right = [t for t in fig.data if t.xaxis == "x2"]
    assert len(left) == len(right) == len(env.types.cat.categories)
    assert len({t.name for t in left}) == len(left)  # every cell type at its own position
    assert sum(len(t.y) for t in left) == env.n
    assert fig.layout.title.text == "LYZ"
    # monocytes express LYZ most: the highest denoised median is a CD14+ type
    medians = {t.name: float(np.median(t.y)) for t in right}
    assert max(medians, key=medians.get).startswith("CD14")
    assert "Search for a gene" in env.lookup.update_violin(None).layout.annotations[0].text


def test_lookup_dotplot_and_adding_a_feature(env) -> None:
    fig = env.lookup.update_dotplot(["gene:LYZ", "protein:CD19_TotalSeqB"])
    trace = fig.data[0]
    assert set(trace.x) == {"LYZ", "CD19 protein"}
    assert set(trace.y) == {str(t) for t in env.types.cat.categories}
    assert min(trace.marker.color) == 0.0
    assert max(trace.marker.color) == 1.0  # scaled per feature
    value, options = env.lookup.add_to_dotplot("gene:CD8A", ["gene:LYZ"], [])
    assert value == ["gene:CD8A", "gene:LYZ"]
    assert {o["value"] for o in options} == {"gene:CD8A", "gene:LYZ"}
    assert env.lookup.add_to_dotplot("gene:LYZ", ["gene:LYZ"], []) == (no_update, no_update)


# --------------------------------------------------------------------------------- DE
@pytest.fixture(scope="module")
def de_ready(env) -> dict:
    """The one-vs-rest DE job of the largest cell type, run through the page's callbacks."""
    group = f"type:{largest_type(env)}"
    store, interval_off, ready, progress, cancel_off = env.de.start_de(group, None)
    assert store["group"] == group
    if ready is no_update:  # still running: the page polls until it is done
        assert interval_off is False and cancel_off is False
        finish(env.service, store["job"])
        progress, interval_off, ready, cancel_off, _ = env.de.poll_de(1, store)
        assert progress == []  # the bar goes once the results are in
    assert interval_off is True and cancel_off is True
    assert ready["group"] == group
    return ready


def test_de_page_groups_are_the_cell_types_and_saved_selections(env) -> None:
    saved = {env.pair.dataset.id: {"mine": {"token": "x", "n": 3}}}
    options = env.de.group_options(saved, None)
    values = [o["value"] for o in options]
    assert values[:-1] == [f"type:{t}" for t in env.types.cat.categories]
    assert values[-1] == "saved:mine"
    assert "(3 cells, saved selection)" in options[-1]["label"]
    assert "efficiency-free rates" in text(env.de.layout())  # the protein rows' scale
    assert "efficiency-free rates" in text(env.explore.layout())  # and Explore's comparison


def test_de_page_table_per_cell_type(env, de_ready) -> None:
    rows, status, _ = env.de.render_table(de_ready, "all", None)
    assert len(rows) == env.data.n_genes + env.data.n_proteins
    assert {"lfc_mean", "bayes_factor", "proba_de", "is_de"} <= set(rows[0])
    name = largest_type(env)
    assert f"{name} vs all other cells" in text(status)
    assert all(r["group1"] == name for r in rows)
    proteins, _, _ = env.de.render_table(de_ready, "protein", None)
    assert len(proteins) == env.data.n_proteins
    assert {r["modality"] for r in proteins} == {"protein"}


def test_de_page_volcano_and_click_colours_the_cells(env, de_ready) -> None:
    fig = env.de.render_volcano(de_ready, "all", None, None)
    keys = {k for t in fig.data for k in (t.customdata if t.customdata is not None else [])}
    assert len(keys) == env.data.n_genes + env.data.n_proteins
    assert fig.layout.title.text == f"{largest_type(env)} vs rest"
    # the features the status line counts as DE are the red ones (the type with most DE)
    table = de_display_table(env.service.de_one_vs_rest(env.pair))
    top = str(table.groupby("group1")["is_de"].sum().idxmax())
    ready = {**de_ready, "group": f"type:{top}"}
    rows, status, _ = env.de.render_table(ready, "all", None)
    de_keys = {r["key"] for r in rows if r["is_de"]}
    assert f"{len(de_keys):,} of" in text(status) and len(de_keys) > 0
    shown = env.de.render_volcano(ready, "all", None, None)
    red = {k for t in shown.data if t.marker.color == figures.HIGHLIGHT for k in t.customdata}
    assert red == de_keys
    key = next(iter(sorted(k for k in keys if k.startswith("protein:"))))
    feature, color = env.de.on_volcano_click({"points": [{"customdata": key, "x": 1.0}]})
    assert feature == key
    assert color == {"feature": key, "layer": "denoised"}
    ringed = env.de.render_volcano(de_ready, "all", feature, None)
    assert ringed.data[-1].name == "selected"
    patch = env.de.recolor_de_umap(feature)
    ops = operations(patch)
    assert ("data", 0, "marker") in ops
    assert ops[("layout", "title", "text")].endswith("(denoised)")
    assert env.de.on_volcano_click({"points": [{"x": 1.0}]}) == (no_update, no_update)
    assert env.de.on_volcano_click(None) == (no_update, no_update)
    assert env.de.on_row_click({"rowId": "gene:LYZ"}) == (
        "gene:LYZ",
        {"feature": "gene:LYZ", "layer": "denoised"},
    )


def test_de_page_saved_selection_group(env) -> None:
    cells = cells_of(env, largest_type(env))[:40]
    saved, _, _ = env.explore.save_selection(1, "forty", {"cells": cells}, None)
    store, _, ready, *_ = env.de.start_de("saved:forty", saved)
    if ready is no_update:
        finish(env.service, store["job"])
        _, _, ready, *_ = env.de.poll_de(1, store)
    rows, status, _ = env.de.render_table(ready, "rna", saved)
    assert len(rows) == env.data.n_genes
    assert "forty vs all other cells" in text(status)
    # the saved selection was deleted in another tab: a warning, not a crash
    rows, status, _ = env.de.render_table(ready, "all", {})
    assert rows == []
    assert "no longer exists" in assert_one_line_alert(status, kind="warning")
    _, _, _, alert, _ = env.de.start_de("saved:gone", {})
    assert "no longer exists" in assert_one_line_alert(alert, kind="warning")


def _run_de(env, group: str, *controls: Any) -> dict:
    store, _, ready, alert, _ = env.de.start_de(group, None, *controls)
    assert store is not None, text(alert)
    if ready is no_update:
        finish(env.service, store["job"])
        _, _, ready, *_ = env.de.poll_de(1, store)
    return ready


def test_de_controls_change_the_test_and_the_table_says_so(env, de_ready) -> None:
    table = de_display_table(env.service.de_one_vs_rest(env.pair))
    group = f"type:{table.groupby('group1')['is_de'].sum().idxmax()}"  # the most DE
    ready = {**de_ready, "group": group}
    assert "batch_correction" not in env.service.differential.de_params()  # old keys kept
    rows, status, _ = env.de.render_table(ready, "all", None)
    loose = sum(r["is_de"] for r in rows)
    assert "|LFC| > 0.25, FDR target 0.05, 1,000 posterior samples" in text(status)
    assert "each cell decoded in its own batch" in text(status)
    ready = _run_de(env, group, 1.0, 0.05, 1000, "observed")
    assert ready["controls"]["delta"] == 1.0
    rows, status, _ = env.de.render_table(ready, "all", None)
    assert "|LFC| > 1, FDR target 0.05" in text(status)
    strict = sum(r["is_de"] for r in rows)
    assert strict < loose  # a larger threshold: fewer features pass
    table = env.service.de_one_vs_rest(env.pair, controls={"delta": 1.0})
    assert set(table["delta"]) == {1.0}
    type_id = group.split(":", 1)[1]  # the results keep the automatic names
    assert strict == int(table[table["group1"] == type_id]["is_de_fdr_0.05"].sum())
    # every row carries its 95% credible interval around the mean LFC
    for r in rows:
        assert r["lfc_lower"] <= r["lfc_mean"] + 1e-3 and r["lfc_mean"] <= r["lfc_upper"] + 1e-3
    assert any(r["lfc_upper"] - r["lfc_lower"] > 0.1 for r in rows)


def test_de_controls_refuse_forged_values_in_one_line(env, de_ready) -> None:
    group = de_ready["group"]
    forged = [
        (("abc", 0.05, 1000, "observed"), "delta"),
        ((0.25, 0.9, 1000, "observed"), "FDR target"),
        ((0.25, 0.05, 10**9, "observed"), "posterior samples"),
        ((0.25, 0.05, 12.5, "observed"), "posterior samples"),
        ((0.25, 0.05, 1000, "sideways"), "batch correction"),
        ((float("nan"), 0.05, 1000, "observed"), "delta"),
    ]
    for controls, word in forged:
        store, _, _, alert, _ = env.de.start_de(group, None, *controls)
        assert store is None
        assert word in assert_one_line_alert(alert, kind="warning"), controls
    forged_ready = {**de_ready, "controls": {"delta": -3}}
    rows, status, _ = env.de.render_table(forged_ready, "all", None)
    assert rows == [] and "delta" in assert_one_line_alert(status, kind="warning")


def test_de_presets_set_the_controls(env) -> None:
    assert env.de.apply_preset("strict (|LFC| > 1, FDR 1%)") == (1.0, 0.01, 5000, "observed")
    assert env.de.apply_preset("batch-corrected (scvi-tools)")[3] == "corrected"
    assert env.de.apply_preset("forged") == (no_update,) * 4
    assert env.de.show_preset(0.25, 0.05, 5000, "observed") == "scvi-tools defaults"
    assert env.de.show_preset(0.3, 0.05, 5000, "observed") is None  # custom
    assert env.de.show_preset("x", 0.05, 5000, "observed") is None
    layout = text(env.de.layout())
    assert "Preset" in layout and "FDR target" in layout


def test_de_trust_badge_reads_the_model_card_metric(env, de_ready) -> None:
    group = de_ready["group"]
    name = env.de.group_name(env.service, env.pair, group)
    result = env.service.shown_metrics(env.pair, computed_only=True)
    if result is None:
        _, _, trust = env.de.render_table(de_ready, "all", None)
        assert "compute the model card on the Metrics page" in text(trust)
        env.service.metrics(env.pair)
        result = env.service.shown_metrics(env.pair, computed_only=True)
    _, _, trust = env.de.render_table(de_ready, "all", None)
    r = float(result.diff_exp["rna"].loc[name, "lfc_pearson"])
    assert f"Model trust for {name}" in text(trust)
    assert f"LFC Pearson r {r:.2f}" in text(trust)
    level = "high" if r >= 0.8 else "fair" if r >= 0.5 else "low"
    assert f"trust-{level}" in trust.className


# ---------------------------------------------------------------------- display names
def test_de_table_shows_display_names_with_the_id_in_tooltip_and_csv(env) -> None:
    cells = cells_of(env, b_cell_type(env))
    wrap, _, _ = compare(env, "__current__", "__rest__", {"cells": cells})
    rows = de_rows_of(wrap)
    cd19 = next(r for r in rows if r["key"] == "protein:CD19_TotalSeqB")
    assert cd19["feature"] == "CD19 protein"
    assert cd19["feature_id"] == "CD19_TotalSeqB"
    lyz = next(r for r in rows if r["key"] == "gene:LYZ")
    assert lyz["feature"] == lyz["feature_id"] == "LYZ"
    up = {r["feature"] for r in rows if r["is_de"] and r["lfc_mean"] > 0}
    assert {"MS4A1", "CD79A", "CD19 protein"} <= up
    columns = {c["field"]: c for c in wrap.columnDefs}
    assert columns["feature"]["tooltipField"] == "feature_id"  # the raw id on hover
    assert columns["feature_id"]["hide"] is True
    assert wrap.csvExportParams["allColumns"] is True  # ... and in the CSV


def test_one_display_name_per_feature_on_every_view(env, de_ready) -> None:
    label = {o["value"]: o["label"] for o in env.lookup.search_feature("cd4", None)}
    assert label["protein:CD4_TotalSeqB"] == "CD4 protein"
    assert label["gene:CD4"] == "CD4"
    # colour bar, violins, dot plot, linked view and DE views name the protein alike
    patch = env.explore.recolor("protein:CD19_TotalSeqB", "denoised", CELL_TYPE)[0]
    marker = operations(patch)[("data", 0, "marker")]
    title = marker["colorbar"]["title"]["text"].replace("<br>", " ")  # wrapped to fit
    assert title.startswith("CD19 protein · denoised")
    violin = env.lookup.update_violin("protein:CD19_TotalSeqB")
    assert violin.layout.title.text == "CD19 protein"
    assert env.lookup.update_violin("gene:LYZ").layout.title.text == "LYZ"
    dots = env.lookup.update_dotplot(["gene:CD4", "protein:CD4_TotalSeqB"])
    assert set(dots.data[0].x) == {"CD4", "CD4 protein"}
    x, y = "CD4_TotalSeqB", "CD8a_TotalSeqB"
    linked = env.explore.build_linked("proteins", x, y, "raw", "obs:cell_type", "raw", None, None)
    assert linked.layout.title.text == "CD4 protein vs CD8a protein"
    assert linked.layout.xaxis.title.text == "CD4 protein raw (log1p)"
    fig = env.de.render_volcano(de_ready, "protein", None, None)
    shown = {t for trace in fig.data if trace.text is not None for t in trace.text}
    assert "CD19 protein" in shown and "CD19_TotalSeqB" not in shown
    title = operations(env.de.recolor_de_umap("protein:CD19_TotalSeqB"))
    assert title[("layout", "title", "text")] == "CD19 protein (denoised)"


# ------------------------------------------------------------------- renamed cell types
def test_rename_a_cell_type_everywhere_then_reset(env, de_ready) -> None:
    type_id = largest_type(env)  # its one-vs-rest DE is cached (de_ready)
    other = next(str(t) for t in env.types.cat.categories if str(t) != type_id)
    one = int(np.flatnonzero(env.types.astype(str).to_numpy() == type_id)[0])  # of that type
    try:
        out = env.explore.rename_type(1, type_id, "  Main type ", "obs:cell_type", "raw")
        umap_patch, linked_patch, options, name_box, status, names = out
        assert "is now “Main type”" in assert_one_line_alert(status, kind="success")
        assert name_box == ""
        assert names[type_id] == "Main type" and names[other] == other
        assert {"label": f"Main type (auto: {type_id})", "value": type_id} in options
        # the Explore views: legend, on-data labels and the hover, without a reload
        ops = operations(umap_patch)
        legend = env.explore.render_legend("obs:cell_type", "raw", None, names)
        shown = [e.id["value"] for e in legend_entries(legend)]
        assert "Main type" in shown and type_id not in shown
        assert "Main type" in {a["text"] for a in ops[("layout", "annotations")]}
        assert "type: Main type" in tooltip_text(env, one)
        assert ("data", 0, "marker") in operations(linked_patch)
        fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, None)
        assert "Main type" in {a.text for a in fig.layout.annotations}
        cells = np.flatnonzero(env.types.astype(str).to_numpy() == type_id)[:10].tolist()
        assert "Main type (10)" in text(env.explore.selection_info({"cells": cells}))
        # compare and DE choices show the name and keep the id (cached results stay)
        first, _, _, _ = env.explore.update_compare_options(None, None, None, None, names)
        assert {
            "label": f"Main type ({len(np.flatnonzero(env.types == type_id)):,})",
            "value": f"type:{type_id}",
        } in first
        group = {o["value"]: o["label"] for o in env.de.group_options(None, None)}
        assert group[f"type:{type_id}"].startswith("Main type (")
        rows, line, _ = env.de.render_table(de_ready, "all", None)
        assert text(line).startswith("Main type vs all other cells")
        assert rows and all(r["group1"] == type_id for r in rows)  # the cached table
        volcano = env.de.render_volcano(de_ready, "all", None, None)
        assert volcano.layout.title.text == "Main type vs rest"
        _, line, _ = compare(env, f"type:{type_id}", "__rest__")
        assert "Main type vs Rest" in text(line)
        # lookup: violins and dot plot
        violin = env.lookup.update_violin("gene:LYZ")
        assert "Main type" in {t.name for t in violin.data}
        dots = env.lookup.update_dotplot(["gene:LYZ"])
        assert "Main type" in set(dots.data[0].y)
        # export
        mdata = build_mudata(env.service, env.pair)
        assert (mdata.obs["cell_type"].astype(str) == "Main type").sum() == len(
            np.flatnonzero(env.types == type_id)
        )
        assert type_id in set(mdata.obs["cell_type_auto"].astype(str))
        # kept server-side: a new service over the same cache folder shows it
        again = AnalysisService(env.service.settings)
        try:
            assert again.type_names.get(env.pair) == {type_id: "Main type"}
        finally:
            again.close()
        # a second type may not take that name: one line, nothing changes
        refused = env.explore.rename_type(1, other, "main TYPE", "obs:cell_type", "raw")
        assert refused[0] is no_update and refused[5] is no_update
        assert "already the name of another cell type" in assert_one_line_alert(
            refused[4], kind="warning"
        )
        empty = env.explore.rename_type(1, other, "  ", "obs:cell_type", "raw")
        assert "type a new name" in assert_one_line_alert(empty[4], kind="warning")
        unpicked = env.explore.rename_type(1, None, "x", "obs:cell_type", "raw")
        assert "Pick the cell type" in assert_one_line_alert(unpicked[4], kind="warning")
        assert (
            env.explore.rename_type(None, other, "x", "obs:cell_type", "raw") == (no_update,) * 6
        )
        # reset: the automatic names everywhere again
        out = env.explore.reset_type_names(1, "gene:LYZ", "raw")
        assert f"type: {type_id}batch" in tooltip_text(env, one)
        assert out[5][type_id] == type_id
        assert "automatic names" in assert_one_line_alert(out[4], kind="success")
        group = {o["value"]: o["label"] for o in env.de.group_options(None, None)}
        assert group[f"type:{type_id}"].startswith(f"{type_id} (")
        # undo the reset: the user's name is back, in the hover and in the store
        back = env.explore.undo_type_name(1, "gene:LYZ", "raw")
        assert back[5][type_id] == "Main type"
        assert "type: Main type" in tooltip_text(env, one, "gene:LYZ")
        assert "Undone" in assert_one_line_alert(back[4], kind="success")
        for _ in range(25):  # undo every step kept (at most 20), then a one-line refusal
            nothing = env.explore.undo_type_name(1, "gene:LYZ", "raw")
            if "alert-warning" in nothing[4].className:
                break
        assert "no rename to undo" in assert_one_line_alert(nothing[4], kind="warning")
        assert env.service.type_names.get(env.pair) == {}
    finally:
        env.service.reset_cell_type_names(env.pair)


def test_metrics_tables_name_renamed_types(env) -> None:
    type_id = largest_type(env)
    try:
        env.service.rename_cell_type(env.pair, type_id, "Main type")
        tables = env.service.shown_metrics(env.pair).diff_exp
        assert all("Main type" in t.index and type_id not in t.index for t in tables.values())
        assert type_id in env.service.metrics(env.pair).diff_exp["rna"].index  # cached as is
        sections = env.metrics.metrics_sections(env.service, env.pair)
        assert "Main type" in text(sections)
    finally:
        env.service.reset_cell_type_names(env.pair)
    assert obs_labels(env.service, env.pair, "cell_type").cat.categories.equals(
        env.types.cat.categories
    )


# ---------------------------------------------------------------------------- metrics
def test_metrics_page_has_the_model_card_tables(env) -> None:
    page = env.metrics.layout()
    summary = find(page, ids.METRICS_SUMMARY)
    words = text(summary)
    for heading in ("Summary statistics", "Setup arguments", "Model parameters"):
        assert heading in words
    assert "n_cells" in words and f"{env.n:,}" in words
    history = find(page, ids.METRICS_HISTORY).figure
    assert [t.name for t in history.data] == ["train", "validation"]

    store, interval_off, ready, _, cancel_off, retry_hidden = env.metrics.start_metrics(None)
    if ready is no_update:
        assert interval_off is False and cancel_off is False
        finish(env.service, store["job"])
        _, interval_off, ready, cancel_off, _, retry_hidden = env.metrics.poll_metrics(1, store)
    assert (interval_off, cancel_off, retry_hidden) == (True, True, True)
    sections = env.metrics.render_metrics(ready)
    tables = [c for c in walk(sections) if getattr(c, "className", "").startswith("table")]

    def table(name: str) -> tuple[list[str], list[str]]:
        t = next(t for t in tables if name in t.className.split())
        head = [text(th) for th in t.children[0].children.children]
        rows = [text(tr.children[0]) for tr in t.children[1].children]
        return head, rows

    def by_class(name: str) -> Any:
        return next(c for c in walk(sections) if name in getattr(c, "className", "").split())

    result = env.service.metrics(env.pair)
    for mod in ("rna", "protein"):
        head, rows = table(f"cell-cv-{mod}")
        assert head[0] == "Metric" and "Training Value" in head
        assert rows == list(CV_DISPLAY_ROWS)
        # the card's 0.4 advice is on r²: the page shows r² = r * r beside r
        body = next(t for t in tables if f"cell-cv-{mod}" in t.className.split()).children[1]
        shown = {
            text(tr.children[0]): [text(td) for td in tr.children[1:]] for tr in body.children
        }
        r = result.cell_wise_cv[mod].loc["Pearson Correlation"]
        assert shown[PEARSON_R2_ROW] == [f"{v * v:.3f}" for v in r]
        assert "0.4" in text(by_class(f"cell-cv-advice-{mod}"))
        head, rows = table(f"gene-cv-{mod}")
        assert rows == list(CV_DISPLAY_ROWS)
        head, rows = table(f"de-metric-{mod}")
        assert head == ["Cell type", *DE_COLUMNS]
        assert set(rows) <= {str(t) for t in env.types.cat.categories}
        assert len(rows) > 0
    assert text(by_class("de-top-protein")).startswith(
        f"Top 1 of {env.data.n_proteins} proteins per group"
    )
    assert text(by_class("de-top-rna")).startswith(f"Top 100 of {env.data.n_genes:,} genes")
    groups = text(by_class("metrics-de-groups"))
    assert groups.startswith("Groups: our Leiden clusters") and "no registered labels" in groups
    assert "noisy" in text(by_class("metrics-cv-note"))
    graphs = {c.id: c.figure for c in walk(sections) if getattr(c, "figure", None) is not None}
    cv = graphs[f"{ids.METRICS_CV_PLOT}-rna"]
    assert cv.layout.xaxis.title.text == "observed CV"
    assert len(cv.data[0].x) > 100
    bars = graphs[f"{ids.METRICS_DE_PLOT}-protein"]
    assert {t.name for t in bars.data} <= set(env.metrics.DE_PLOT_METRICS)
    assert len(set(bars.data[0].x)) == len(bars.data[0].x)  # one bar group per cell type


def test_metrics_page_switches_protein_scale_and_shows_calibration(env) -> None:
    """One click between the tables from measured-scale protein samples (default) and
    scvi-tools 1.4.2's; the calibration of both, and why they differ, on the page."""
    model = env.service.model(env.pair)
    assert model.has_protein_efficiency  # the slice model learned an efficiency
    page = env.metrics.layout()
    radio = find(page, ids.METRICS_SCALE)
    assert radio.value == "measured"
    assert [o["value"] for o in radio.options] == ["measured", "efficiency-free"]
    assert "issue #4022" in text(page)
    store, _, ready, *_ = env.metrics.start_metrics(None)
    if ready is no_update:
        finish(env.service, store["job"])
        ready = {"job": store["job"]}

    def shown(scale: str) -> tuple[list[Any], dict[str, list[str]]]:
        sections = env.metrics.render_metrics(ready, scale)
        body = next(
            t for t in walk(sections) if "gene-cv-protein" in getattr(t, "className", "").split()
        ).children[1]
        rows = {text(tr.children[0]): [text(td) for td in tr.children[1:]] for tr in body.children}
        return sections, rows

    for crafted in ("counts", ["measured"], {"x": 1}):  # one readable line, no traceback
        alert = env.metrics.render_metrics(ready, crafted)
        assert "Unknown protein scale" in assert_one_line_alert(alert, kind="warning")
    measured, m_rows = shown("measured")
    free, f_rows = shown("efficiency-free")
    assert "measured scale" in text(measured) and "scvi-tools 1.4.2" in text(free)
    result = env.service.metrics(env.pair)
    for scale, rows in (("measured", m_rows), ("efficiency-free", f_rows)):
        mae = result.for_scale(scale).gene_wise_cv["protein"].loc["Mean Absolute Error"]
        assert rows["Mean Absolute Error"] == [f"{v:.3f}" for v in mae]
    assert m_rows != f_rows  # the protein tables differ; RNA is the same
    calibration = find(measured, ids.METRICS_CALIBRATION)
    rows = [text(tr.children[0]) for tr in calibration.children.children[1].children]
    assert rows == [
        "RNA",
        "Protein (measured scale)",
        "Protein (efficiency-free, as scvi-tools samples)",
    ]
    assert "calibration error" in text(calibration)
    means = find(measured, ids.METRICS_PROTEIN_MEANS)
    assert "ratio (measured)" in text(means) and "ratio (efficiency-free)" in text(means)
    # the exported card says which samples its metrics come from
    card = env.service.model_card(env.pair)
    assert "measured scale" in card.split("**Cell-wise")[0]
    scvi_card = env.service.model_card(env.pair, protein_scale="efficiency-free")
    assert scvi_card.startswith("# Metrics\n\n**Cell-wise Coefficient of Variation**")


def test_protein_views_say_their_scale(env) -> None:
    model = env.service.model(env.pair)
    protein = str(model.protein_names[0])
    spec = ColorSpec(f"protein:{protein}", "denoised")
    assert color_label(env.service, env.pair, spec).endswith("denoised (log1p, measured scale)")
    raw = ColorSpec(f"protein:{protein}", "raw")
    assert color_label(env.service, env.pair, raw).endswith("raw (log1p)")
    violin = env.lookup.update_violin(f"protein:{protein}")
    assert [a.text for a in violin.layout.annotations][:2] == [
        "raw (log1p)",
        "denoised (log1p, measured scale)",
    ]
    eff = model.protein_efficiency().to_numpy()
    line = efficiency_summary(env.service, env.pair)
    assert line.startswith(f"{eff.min():.2f}-{eff.max():.2f} ({eff.shape[1]} proteins x 1 batch)")
    assert line.endswith("denoised proteins: measured scale")
    assert line in text(env.model._active_view())  # on the Model page
    dot = env.lookup.update_dotplot([f"protein:{protein}"])
    assert "denoised proteins: measured scale" in dot.layout.title.text
    # measured = efficiency-free rate x the cell's batch efficiency (same draws)
    measured = env.service.denoised_protein(env.pair)
    free = env.service.denoised_protein(env.pair, protein_scale="efficiency-free")
    np.testing.assert_allclose(
        measured.to_numpy(), free.to_numpy() * eff[env.data.batch], rtol=1e-4
    )


# ------------------------------------------------------------------------------ model
def test_model_page_reads_the_dataset(env) -> None:
    page = env.model.layout()
    dropdown = find(page, ids.MODEL_DATASET)
    assert dropdown.options == [{"label": "pbmc_slice.h5ad", "value": str(env.data_path)}]
    options, default, info = env.model.on_dataset(str(env.data_path))
    assert {"label": "batch", "value": "batch"} in options
    assert default == "batch"
    assert f"{env.n:,} cells" in info
    options, default, alert = env.model.on_dataset(str(env.root / "missing.h5ad"))
    assert options == [] and default is None
    assert "missing.h5ad" in assert_one_line_alert(alert, kind="warning")


def switch_ended(env: SimpleNamespace, timeout: float = 120) -> Any:
    """The server's model switch once it has ended (no tab polls meanwhile)."""
    view = env.state.switch.join(timeout)
    assert not view.running, view
    return view


def test_train_start_and_cancel(env) -> None:
    path = str(env.data_path)
    message, progress, train_off, cancel_off = env.model.on_train(1, path, "batch", 8, 500)
    assert "Training started" in text(message)
    assert text(progress).startswith("Training pbmc_slice-")
    assert (train_off, cancel_off) == (True, False)
    job = env.state.switch.view().job
    assert "Cancelling" in text(env.model.on_cancel(1))
    assert switch_ended(env).outcome == "cancelled"
    assert env.service.job(job).status == "cancelled"
    panel, _, cancel_off, _, train_off, load_off, map_off, _ = env.model.poll_switch(3)
    assert (cancel_off, train_off, load_off, map_off) == (True, False, False, False)
    line = assert_one_line_alert(panel[0], kind="info")
    assert line == "Training: cancelled; the previous model stays active."
    assert env.state.pair == env.pair  # the active model is untouched
    assert not list((env.root / "models").glob("*/model.pt"))  # nothing half-saved


def test_train_with_bad_settings_is_a_warning(env) -> None:
    path = str(env.data_path)
    alert, panel, *_ = env.model.on_train(1, path, "batch", 0, 10)
    assert panel is no_update
    message = assert_one_line_alert(alert, kind="warning")
    assert message == "Latent dimensions must be a whole number from 2 to 64"
    alert, *_ = env.model.on_train(1, None, "batch", 10, 10)
    assert assert_one_line_alert(alert) == "Choose or upload a dataset first."
    assert env.model.on_train(None, path, "batch", 10, 10) == (no_update,) * 4
    assert not env.state.switch.view().running  # nothing started


def test_loading_a_folder_outside_the_model_folder_is_refused_at_once(env) -> None:
    message, progress, *_ = env.model.on_load(
        1, str(env.data_path), "batch", None, str(env.root / "no-such-model")
    )
    line = assert_one_line_alert(message, kind="warning")
    assert (
        line
        == "model folder 'no-such-model' refused: only files in the model folder can be opened"
    )
    assert progress is no_update and not env.state.switch.view().running


def test_loading_a_bad_checkpoint_is_a_readable_alert(env) -> None:
    folder = env.root / "models" / "garbage-model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(b"this is not a torch checkpoint")
    checkpoint = str(folder)
    message, progress, load_off, _ = env.model.on_load(
        1, str(env.data_path), "batch", None, checkpoint
    )
    assert "Loading" in text(message) and "Loading" in text(progress) and load_off is True
    assert switch_ended(env).outcome == "failed"
    panel, *_ = env.model.poll_switch(1)
    message = assert_one_line_alert(panel[0], kind="warning")
    assert message.startswith("Loading failed: ")
    assert "garbage-model" in message and "not a readable checkpoint" in message
    assert env.state.pair == env.pair
    import shutil

    shutil.rmtree(folder)  # not listed by later tests


def test_loading_a_checkpoint_switches_the_app_once_prepared(env) -> None:
    checkpoint = env.root / "models" / "small-saved"
    env.service.model(env.pair).save(checkpoint, overwrite=True)
    version = env.state.version
    env.model.on_load(1, str(env.data_path), "batch", str(checkpoint), None)
    try:
        view = switch_ended(env)  # the server prepares and switches; no tab polls
        assert view.outcome == "done" and view.stage == "prepare"
        panel, *_ = env.model.poll_switch(2)
        line = assert_one_line_alert(panel[0], kind="success")
        assert line == "Loaded small-saved: it is active on every page."
        assert env.state.version == version + 1
        active = env.state.pair
        assert active.model.path == str(checkpoint)
        assert active.model.fingerprint == env.pair.model.fingerprint  # the same weights
        assert "small-saved" in text(app_module.update_status(1, None)[0])
    finally:
        env.state.activate(env.pair)


def seedlike_model(env: SimpleNamespace, test_data: Path) -> Path:
    """The seed-like scvi-tools folder (model.pt, mdata.h5mu, card) in the model folder."""
    import shutil

    folder = env.root / "models" / "seedlike"
    if not folder.exists():
        shutil.copytree(test_data / "scvi_tools_1.4.2_mudata_seedlike_800", folder)
    return folder


def test_model_page_opens_a_hub_folder_with_its_data_and_registry(env, test_data) -> None:
    folder = seedlike_model(env, test_data)
    labels = {o["value"]: o["label"] for o in checkpoint_options(env.root / "models")}
    assert (
        labels[str(folder)] == "seedlike · scvi-hub folder, with its data (mdata.h5mu), model card"
    )
    # the dataset chosen in 1 is the PBMC slice: "use the data saved with the model" wins
    env.model.on_load(1, str(env.data_path), "batch", str(folder), None, ["own"])
    try:
        view = switch_ended(env)
        assert view.outcome == "done", view
        active = env.state.pair
        assert active.model.path == str(folder)
        assert active.dataset.path == str(folder / "mdata.h5mu")
        assert (active.dataset.layer, active.dataset.batch_key) == ("counts", "sample_id")
        assert env.service.dataset(active).n_batch == 17
        words = text(env.model.layout())
        assert "17 (sample_id): s00, s01, s02" in words
        assert "layer 'counts', batch key 'sample_id'" in words
    finally:
        env.state.activate(env.pair)


def test_model_page_applies_a_folder_to_the_chosen_dataset_when_asked(env, test_data) -> None:
    folder = seedlike_model(env, test_data)
    env.model.on_load(1, str(env.data_path), "batch", str(folder), None, [])
    view = switch_ended(env)
    assert view.outcome == "failed"  # the chosen PBMC slice is read as the registry says
    panel, *_ = env.model.poll_switch(1)
    line = assert_one_line_alert(panel[0], kind="warning")
    assert "pbmc_slice.h5ad: RNA has no layer 'counts'" in line
    assert "read with the checkpoint's setup (layer 'counts'" in line
    assert env.state.pair == env.pair


def test_load_without_a_checkpoint_is_a_warning(env) -> None:
    alert, *_ = env.model.on_load(1, str(env.data_path), "batch", None, "  ")
    assert "Choose a saved model" in assert_one_line_alert(alert, kind="warning")


def test_model_page_shows_the_active_model(env) -> None:
    page = env.model.layout()
    words = text(page)
    assert "Latent dimensions" in words
    assert f"{env.n:,} × {env.data.n_genes:,} × {env.data.n_proteins:,}" in words


# ------------------------------------------------------------------------------ shell
def test_status_reports_the_active_model(env) -> None:
    children, token, interval = app_module.update_status(1, None)
    assert interval == POLL_IDLE_MS  # nothing is being prepared
    assert "small on PBMC slice" in text(children)
    assert token["pair"] == env.pair.id
    assert token["dataset"] == env.pair.dataset.id
    assert app_module.update_status(2, token)[1] is no_update  # nothing changed


def test_url_query_of_the_current_view(env) -> None:
    token = {"dataset": env.pair.dataset.id}
    search = app_module.update_url_query(
        {"feature": "gene:LYZ", "layer": "denoised"}, {"cells": [1, 2]}, token
    )
    assert search.startswith("?color=gene%3ALYZ&layer=denoised&sel=")
    assert search.endswith(f"&n={env.n}")


def test_callback_errors_become_one_line_alerts(env, monkeypatch) -> None:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(app_module, "set_props", lambda cid, props: sent.append((cid, props)))
    app_module.on_callback_error(InvalidSelection("no gene 'XYZ' in PBMC slice"))
    try:
        raise KeyError("boom")
    except KeyError as err:
        app_module.on_callback_error(err)
    (id1, props1), (id2, props2) = sent
    assert id1 == id2 == ids.ALERT
    assert assert_one_line_alert(props1["children"]) == "no gene 'XYZ' in PBMC slice"
    message = assert_one_line_alert(props2["children"])
    assert message.startswith("Something went wrong (KeyError: 'boom')")
    assert "server log" in message
    assert json.loads(to_json(props2["children"]))  # serialisable for the browser


def test_pages_without_a_model_explain_what_to_do(env) -> None:
    empty = ActiveState(env.service, warm=False)
    set_state(empty)
    try:
        page = env.explore.layout()
        assert "notice" in " ".join(getattr(c, "className", "") or "" for c in walk(page))
        assert "no model is loaded" in text(page).lower()
        fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, None)
        assert "no model" in fig.layout.annotations[0].text.lower()
        assert env.explore.selection_info(None) == ""
    finally:
        set_state(env.state)
