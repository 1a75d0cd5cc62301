"""Explore on a dataset above ``max_points``: the views plot a stratified subsample, a lasso
or box selects every cell inside it (shown or not), and recolours patch only the shown points.

The trained PBMC slice (1500 cells) with ``max_points=300`` stands in for a million cells.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import Patch

from dashboard import app as app_module
from dashboard import ids
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.sampling import points_in_box, points_in_polygon
from dashboard.testing import text
from dashboard.url_state import parse_search, state_from_query
from dashboard.views.cells import (
    clean_region,
    groups_from_selection_stores,
    saved_selection,
    shown_cells,
    umap_xy,
    valid_cells,
)
from dashboard.views.colours import ColorSpec, color_data
from dashboard.views.de import resolve_group
from dashboard.views.links import link_state
from dashboard.views.values import gene_raw, protein_raw

pytestmark = pytest.mark.slow

MAX_POINTS = 300
CELL_TYPE = {"feature": "obs:cell_type", "layer": "raw"}


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """The trained slice with a small ``max_points``."""
    return {"name": "overview", "settings": {"de_n_samples": 500, "max_points": MAX_POINTS}}


@pytest.fixture(scope="module")
def env(trained_app: SimpleNamespace) -> SimpleNamespace:
    """The app on the trained slice with a small ``max_points``."""
    from dashboard.pages import explore

    service, pair = trained_app.service, trained_app.pair
    x, y = umap_xy(service, pair)
    shown = shown_cells(service, pair)
    types = service.cell_types(pair).astype(str).to_numpy()
    return SimpleNamespace(
        **vars(trained_app), explore=explore, x=x, y=y, shown=shown, types=types
    )


def operations(patch: Patch) -> dict[tuple, Any]:
    ops = patch.to_plotly_json()["operations"]
    return {tuple(op["location"]): op["params"]["value"] for op in ops}


def decode(spec: dict[str, str]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


def concave_lasso(env: SimpleNamespace) -> list[list[float]]:
    """A "C"-shaped lasso over the middle of the UMAP (concave, 8 vertices)."""
    x0, x1 = np.quantile(env.x, [0.1, 0.9])
    y0, y1 = np.quantile(env.y, [0.1, 0.9])
    xm = x0 + 0.4 * (x1 - x0)
    ya, yb = y0 + 0.35 * (y1 - y0), y0 + 0.65 * (y1 - y0)
    xs = [x0, x1, x1, xm, xm, x1, x1, x0]
    ys = [y0, y0, ya, ya, yb, yb, y1, y1]
    return [[float(v) for v in xs], [float(v) for v in ys]]


def selection_of(env: SimpleNamespace, region: dict, source: str = ids.EXPLORE_UMAP) -> dict:
    return {"region": region, "source": source, "dataset": env.pair.dataset.id}


# ------------------------------------------------------------------------------ subsample
def test_the_cell_types_step_of_the_preparation_draws_the_overview_sample(env) -> None:
    """The first page request finds the sample drawn (2 s at a million cells before)."""
    from dashboard.backend.preparation import step_calls

    types, shown = step_calls(env.service, env.pair)["cell types"]()
    np.testing.assert_array_equal(shown, env.shown)
    assert len(types) == env.service.dataset(env.pair).n_cells


def test_umap_plots_a_stratified_subsample_and_says_so(env) -> None:
    assert env.shown is not None and len(env.shown) == MAX_POINTS
    assert set(env.types[env.shown]) == set(env.types)  # every cell type keeps points
    np.testing.assert_array_equal(env.shown, shown_cells(env.service, env.pair))
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, None)
    assert isinstance(fig, go.Figure)
    trace = fig.data[0]
    assert len(trace.x) == MAX_POINTS
    np.testing.assert_array_equal(trace.customdata, env.shown)
    np.testing.assert_allclose(trace.x, env.x[env.shown], rtol=1e-6)
    assert trace.text is None  # no string per point: the tooltip names the hovered cell
    box = {"x0": 1, "x1": 2, "y0": 1, "y1": 2}
    point = {"curveNumber": 0, "customdata": int(env.shown[0]), "bbox": box}
    show, _, children = env.explore.umap_tooltip({"points": [point]}, "obs:cell_type", "raw")
    assert show is True
    assert text(children).startswith(f"{env.data.obs_names[env.shown[0]]}type: ")
    density = fig.data[1]  # all cells as a density image under the sample
    assert isinstance(density, go.Heatmap)
    assert np.asarray(density.z).max() == 255
    assert fig.layout.meta["overview"] == {
        "view": {"view": "umap"},
        "shown": MAX_POINTS,
        "n_cells": env.n,
    }
    page = env.explore.layout()
    assert f"Showing {MAX_POINTS:,} of {env.n:,} cells" in text(page)
    linked = env.explore.build_linked(
        "proteins", "CD4_TotalSeqB", "CD8a_TotalSeqB", "raw", "obs:cell_type", "raw", None, None
    )
    assert len(linked.data[0].x) == MAX_POINTS
    assert linked.layout.meta["overview"]["view"] == {
        "view": "linked",
        "kind": "proteins",
        "x": "CD4_TotalSeqB",
        "y": "CD8a_TotalSeqB",
        "layer": "raw",
    }


def test_recolour_patches_only_the_shown_points(env) -> None:
    umap_patch, linked_patch, *_ = env.explore.recolor("gene:LYZ", "raw", CELL_TYPE)
    ops = operations(umap_patch)
    colors = decode(ops[("data", 0, "marker")]["color"])
    assert colors.shape == (MAX_POINTS,)
    expected = gene_raw(env.service, env.pair, "LYZ")[env.shown]
    np.testing.assert_allclose(colors, expected, rtol=1e-6)
    assert decode(operations(linked_patch)[("data", 0, "marker")]["color"]).shape == (MAX_POINTS,)
    patch, *_ = env.explore.recolor("obs:cluster", "raw", {"feature": "gene:LYZ", "layer": "raw"})
    ops = operations(patch)
    assert decode(ops[("data", 0, "marker")]["color"]).shape == (MAX_POINTS,)
    assert set(ops) == {("data", 0, "marker"), ("layout", "annotations")}  # no hover strings


def test_colour_data_of_the_shown_cells_is_the_full_colouring_subset(env) -> None:
    for spec in (
        ColorSpec("obs:cell_type"),
        ColorSpec("obs:batch"),
        ColorSpec("gene:LYZ", "denoised"),
    ):
        full = color_data(env.service, env.pair, spec)
        part = color_data(env.service, env.pair, spec, env.shown)
        np.testing.assert_array_equal(part.values, np.asarray(full.values)[env.shown])
        assert part.categories == full.categories  # same colours as on the full data


# -------------------------------------------------------------------------------- regions
def test_lasso_selects_every_cell_inside_including_unshown(env) -> None:
    lasso = concave_lasso(env)
    selection = selection_of(env, {"view": "umap", "lasso": lasso})
    cells = valid_cells(selection, env.n)
    want = np.flatnonzero(points_in_polygon(env.x, env.y, *lasso))
    assert cells == want.tolist()
    assert len(cells) > MAX_POINTS / 4
    assert set(cells) - set(env.shown.tolist())  # cells that are not plotted are selected too
    # both views highlight the plotted ones among them, as positions in the subsample
    umap_patch, linked_patch = env.explore.highlight(selection)
    points = operations(umap_patch)[("data", 0, "selectedpoints")]
    assert points == np.flatnonzero(np.isin(env.shown, want)).tolist()
    assert operations(linked_patch)[("data", 0, "selectedpoints")] == points
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", selection, None)
    assert list(fig.data[0].selectedpoints) == points
    info = text(env.explore.selection_info(selection))
    assert f"{len(cells):,} cells selected" in info


def test_box_on_the_linked_view_selects_by_its_axes(env) -> None:
    x, y = "CD4_TotalSeqB", "CD8a_TotalSeqB"
    xv = protein_raw(env.service, env.pair, x)
    yv = protein_raw(env.service, env.pair, y)
    box = [[float(np.quantile(xv, 0.5)), float(xv.max())], [float(yv.min()), float(yv.max())]]
    region = {"view": "linked", "kind": "proteins", "x": x, "y": y, "layer": "raw", "box": box}
    cells = valid_cells(selection_of(env, region, ids.EXPLORE_LINKED), env.n)
    assert cells == np.flatnonzero(points_in_box(xv, yv, *box)).tolist()


def test_malformed_regions_select_nothing(env) -> None:
    for region in (
        {"view": "umap"},
        {"view": "tsne", "box": [[0, 1], [0, 1]]},
        {"view": "umap", "lasso": [[0, 1], [0, 1]]},
        {"view": "umap", "lasso": [["a", 1, 2], [0, 1, 2]]},
        {"view": "umap", "box": [[0, float("nan")], [0, 1]]},
        {"view": "linked", "kind": "rm -rf", "box": [[0, 1], [0, 1]]},
    ):
        assert valid_cells(selection_of(env, region), env.n) is None
        with pytest.raises(InvalidSelection):
            clean_region(region)


def test_region_selection_in_the_url_saved_and_compared(env) -> None:
    region = {"view": "umap", "lasso": concave_lasso(env)}
    selection = selection_of(env, region)
    cells = valid_cells(selection, env.n)
    token = {"dataset": env.pair.dataset.id}
    search = app_module.update_url_query(CELL_TYPE, selection, token)
    query = parse_search(search)
    assert "region" in query and "sel" not in query and query["n"] == str(env.n)
    assert len(search) < 2000
    # opening the link selects the same cells
    page_state = link_state(query, env.service, env.pair)
    assert page_state["region"] == region
    seeded, _ = app_module.seed_from_link(page_state)
    assert valid_cells(seeded, env.n) == cells
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:cell_type", "raw", None, page_state)
    assert len(fig.data[0].selectedpoints) == int(np.isin(env.shown, cells).sum())
    assert "error" in state_from_query({**query, "n": "7"}, env.n)
    # saving keeps the shape (not a bitset of every cell); the saved one selects the same
    saved, _, _ = env.explore.save_selection(1, "C shape", selection, {})
    item = saved[env.pair.dataset.id]["C shape"]
    assert item == {"region": region, "n": len(cells)}
    again = saved_selection(env.service, env.pair, "C shape", saved)
    assert valid_cells(again, env.n) == cells
    groups = groups_from_selection_stores(selection, saved, env.pair.dataset.id, env.n)
    assert groups["__current__"] == cells and groups["saved:C shape"] == cells
    group, name = resolve_group(env.service, env.pair, "saved:C shape", selection, saved)
    assert group == cells and name == "C shape"
    store, _, ready, *_ = env.explore.start_compare(1, "__current__", "__rest__", selection, saved)
    env.service.wait(store["job"])
    ready = env.explore.poll_compare(1, store)[2]
    _, status, hidden = env.explore.show_compare(ready)
    assert hidden is False
    assert "selection vs Rest" in text(status)
