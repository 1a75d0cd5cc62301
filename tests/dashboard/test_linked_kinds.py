"""Explore's linked view of kinds "Embedding" (our UMAP or a layout of the file's own
``obsm``) and "Two-feature blend" (the UMAP coloured by two features at once, with a
two-axis key): the blend's colours and key, the layouts, what the figures show, and
selections drawn on them (regions resolved against the chosen layout; forged keys refused in
one line)."""

from __future__ import annotations

import base64
import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import Patch, no_update

from dashboard import figures
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.sampling import points_in_box
from dashboard.testing import text
from dashboard.views import blend as bl
from dashboard.views.cells import (
    LINKED_KINDS,
    clean_region,
    linked_view,
    region_cells,
    umap_xy,
    view_xy,
)
from dashboard.views.colours import ColorSpec, feature_values
from dashboard.views.features import feature_catalog
from dashboard.views.layouts import (
    NO_LAYOUTS_NOTE,
    OURS,
    layout_choices,
    layout_xy,
    layouts_note,
)


def rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def decode(spec: dict[str, str]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


# ------------------------------------------------------------------------ blend (pure)
def test_scaling_runs_from_the_1st_to_the_99th_percentile_clipped() -> None:
    values = np.arange(101, dtype=float)  # percentiles 1 and 99 are 1 and 99
    s = bl.scale_unit(values)
    assert (s.low, s.high) == pytest.approx((1.0, 99.0))
    assert s.unit[50] == pytest.approx(49 / 98)
    assert s.unit[0] == 0.0 and s.unit[1] == 0.0  # below the 1st: clipped to 0
    assert s.unit[100] == 1.0 and s.unit[99] == 1.0  # above the 99th: clipped to 1
    with_nan = bl.scale_unit(np.array([np.nan, 0.0, 1.0, 2.0]))
    assert with_nan.unit[0] == 0.0  # no value: low
    flat = bl.scale_unit(np.full(5, 3.0))
    assert np.all(flat.unit == 0.0) and flat.low == flat.high == 3.0


def known_cells() -> tuple[np.ndarray, np.ndarray]:
    """Cells 0-3: A only high, B only high, both high, neither; then 96 cells of low
    spread values (so the percentiles are those of a typical feature)."""
    rng = np.random.default_rng(0)
    a = np.r_[10.0, 0.0, 10.0, 0.0, rng.uniform(0, 1, 96)]
    b = np.r_[0.0, 10.0, 10.0, 0.0, rng.uniform(0, 1, 96)]
    return a, b


def test_blend_colours_of_known_cells() -> None:
    blend = bl.blend_values(*known_cells(), ("A", "B"))
    colors = [rgb(blend.colors[c]) for c in blend.codes[:4]]
    a_only, b_only, both, neither = colors
    assert a_only == bl.HIGH_A and a_only[0] > 180 and max(a_only[1:]) < 60  # red
    assert b_only == bl.HIGH_B and b_only[2] > b_only[0] + 100  # blue
    assert both == bl.HIGH_BOTH and sum(both) < 200  # dark purple
    assert both[0] > both[1] and both[2] > both[1]
    assert neither == bl.LOW  # light grey
    # a cell half way along A only: between grey and red, redder than grey
    half = rgb(bl.grid_colors()[bl.steps(np.array([0.5]))[0]])
    assert bl.LOW[1] > half[1] > bl.HIGH_A[1] and half[0] > half[2]
    assert blend.codes.dtype == np.uint8 and len(blend.colors) == bl.LEVELS**2


def test_steps_cut_into_levels_like_seurat() -> None:
    assert bl.steps(np.array([0.0, 0.099, 0.1, 0.55, 0.999, 1.0])).tolist() == [0, 0, 1, 5, 9, 9]


def test_the_key_has_feature_a_along_x_and_b_along_y() -> None:
    a, b = known_cells()
    blend = bl.blend_values(a, b, ("CD4 protein", "LYZ gene"))
    key = bl.blend_key(blend)
    n = bl.LEVELS
    assert key.titles == ("CD4 protein", "LYZ gene")
    lo_a, hi_a = np.percentile(a, [1, 99])
    lo_b, hi_b = np.percentile(b, [1, 99])
    assert key.x_ticks[0] == pytest.approx([lo_a, hi_a])
    assert key.y_ticks[0] == pytest.approx([lo_b, hi_b])
    assert key.x_ticks[1] == [f"{lo_a:.3g}", f"{hi_a:.3g}"]
    assert key.x[0] > lo_a and key.x[-1] < hi_a and len(key.x) == len(key.y) == n
    # key[j][i]: B step j (y), A step i (x): the bottom-right corner is "A high only"
    assert rgb(key.colors[key.codes[0][n - 1]]) == bl.HIGH_A
    assert rgb(key.colors[key.codes[n - 1][0]]) == bl.HIGH_B
    assert rgb(key.colors[key.codes[n - 1][n - 1]]) == bl.HIGH_BOTH


def test_blend_figure_shows_cells_coloured_and_the_key() -> None:
    a, b = known_cells()
    blend = bl.blend_values(a, b, ("CD4 protein", "LYZ gene"))
    fig = figures.cell_scatter_figure(
        np.arange(100.0),
        np.arange(100.0),
        marker=figures.blend_marker(blend.codes, blend.colors, size=3),
    )
    key = bl.blend_key(blend)
    fig = figures.add_blend_key(fig, **dataclasses.asdict(key))
    cells, grid = fig.data
    assert isinstance(cells, go.Scattergl) and isinstance(grid, go.Heatmap)
    # each point's colour: its code on a step scale of exactly the blend's colours
    assert decode(cells.marker.color).tolist() == blend.codes.tolist()
    scale = cells.marker.colorscale  # stops i/n and (i+1)/n of colour i
    assert [c for _, c in scale[::2]] == [c for _, c in scale[1::2]] == blend.colors
    assert (cells.marker.cmin, cells.marker.cmax) == (-0.5, len(blend.colors) - 0.5)
    assert (grid.xaxis, grid.yaxis) == ("x2", "y2")
    assert fig.layout.xaxis2.title.text == "CD4 protein"
    assert fig.layout.yaxis2.title.text == "LYZ gene"
    assert list(fig.layout.xaxis2.tickvals) == pytest.approx(key.x_ticks[0])
    assert list(fig.layout.yaxis2.ticktext) == key.y_ticks[1]
    assert fig.layout.xaxis2.anchor == "y2" and fig.layout.yaxis2.anchor == "x2"
    assert fig.layout.xaxis.domain[1] <= fig.layout.xaxis2.domain[0]  # beside the cells


# ---------------------------------------------------------------- layouts (no model)
def test_a_dataset_without_layouts_offers_only_ours() -> None:
    data = SimpleNamespace(layouts={})
    service = SimpleNamespace(dataset=lambda pair: data)
    assert layout_choices(service, None) == [{"label": "Latent UMAP (ours)", "value": OURS}]
    assert layouts_note(service, None) == NO_LAYOUTS_NOTE
    data.layouts = {"X_tsne": np.zeros((3, 2), np.float32)}
    assert [o["value"] for o in layout_choices(service, None)] == [OURS, "obsm:X_tsne"]
    assert layouts_note(service, None) == ""


def test_linked_kinds_are_one_list(env) -> None:
    assert [k["value"] for k in env.explore.LINKED_KINDS] == list(LINKED_KINDS)


# ------------------------------------------------------------------- on a trained pair
@pytest.fixture(scope="module")
def env(trained, tmp_path_factory) -> Any:
    """The app on the trained slice, its dataset carrying a t-SNE-like layout (a seeded
    rotation of the UMAP plus noise, so it differs from it) and PCA's first components."""
    from dashboard.backend.settings import Settings
    from dashboard.testing_app import app_on

    data, model = trained
    rng = np.random.default_rng(1)
    tsne = rng.normal(size=(data.n_cells, 2)) * 5 + 40
    pca = rng.normal(size=(data.n_cells, 2))
    with_layouts = dataclasses.replace(data, layouts={"X_tsne": tsne, "X_pca": pca})
    root = tmp_path_factory.mktemp("linked")
    settings = Settings(
        data_dir=root, model_dir=root / "models", cache_dir=root / "cache", denoise_n_samples=3
    )
    with app_on(settings, with_layouts, model) as app_env:
        from dashboard.pages import explore

        yield SimpleNamespace(
            **vars(app_env), explore=explore, tsne=tsne.astype(np.float32), n=data.n_cells
        )


def embedding_region(layout: Any, box: list[list[float]]) -> dict[str, Any]:
    return {"view": "linked", "kind": "embedding", "layout": layout, "box": box}


def test_view_xy_and_regions_use_the_chosen_layout(env) -> None:
    view = {"view": "linked", "kind": "embedding", "layout": "obsm:X_tsne"}
    x, y = view_xy(env.service, env.pair, view)
    np.testing.assert_array_equal(x, env.tsne[:, 0])
    np.testing.assert_array_equal(y, env.tsne[:, 1])
    ours = view_xy(env.service, env.pair, {**view, "layout": OURS})
    np.testing.assert_array_equal(ours[0], umap_xy(env.service, env.pair)[0])
    box = [[float(np.quantile(x, 0.2)), float(np.quantile(x, 0.7))], [-1e9, 1e9]]
    cells = region_cells(env.service, env.pair, embedding_region("obsm:X_tsne", box))
    expected = np.flatnonzero(points_in_box(x, y, *box))
    assert 0 < len(cells) < env.n
    np.testing.assert_array_equal(cells, expected)
    # the same box on our UMAP is other cells: the region kept its layout
    on_umap = region_cells(env.service, env.pair, embedding_region(OURS, box))
    assert not np.array_equal(on_umap, cells)
    # a blend's cells sit on the UMAP
    blend_view = {"view": "linked", "kind": "blend", "x": "protein:CD4"}
    np.testing.assert_array_equal(view_xy(env.service, env.pair, blend_view)[1], ours[1])
    assert clean_region(embedding_region("obsm:X_tsne", box))["layout"] == "obsm:X_tsne"
    # what the browser sends for a lasso on a subsampled view: the view's spec + its shape
    sent = {**linked_view("embedding", None, None, None, layout="obsm:X_tsne"), "box": box}
    np.testing.assert_array_equal(region_cells(env.service, env.pair, sent), expected)


@pytest.mark.parametrize(
    "layout", ["obsm:X_nope", "X_tsne", "obsm:protein_expression", None, 7, "a" * 10_000]
)
def test_forged_layout_keys_are_refused_in_one_line(env, layout: Any) -> None:
    region = embedding_region(layout, [[0, 1], [0, 1]])
    with pytest.raises(InvalidSelection) as err:
        region_cells(env.service, env.pair, region)
    message = str(err.value)
    assert "\n" not in message and len(message) < 200
    assert "is not one of this dataset's" in message
    fig = env.explore.build_linked(
        "embedding", None, None, "denoised", "obs:cell_type", "raw", None, None, None, layout
    )
    assert fig.layout.annotations[0].text == message  # the view says it, no traceback
    with pytest.raises(InvalidSelection):
        layout_xy(env.service, env.pair, layout)


def test_embedding_view_plots_the_layout_in_the_page_colouring_or_its_own(env) -> None:
    args = ("embedding", None, None, "raw", "obs:cell_type", "raw", None, None, None)
    fig = env.explore.build_linked(*args, "obsm:X_tsne", "same")
    np.testing.assert_array_equal(np.asarray(fig.data[0].x), env.tsne[:, 0])
    assert fig.layout.xaxis.title.text == "X_tsne 1"
    assert "X_tsne (from the file)" in fig.layout.title.text
    page = env.explore.build_umap("id", "obs:cell_type", "raw", None, None)
    assert decode(fig.data[0].marker.color).tolist() == decode(page.data[0].marker.color).tolist()
    own = env.explore.build_linked(*args, "obsm:X_tsne", "gene:LYZ")
    lyz = feature_values(env.service, env.pair, ColorSpec("gene:LYZ", "raw"))
    np.testing.assert_allclose(decode(own.data[0].marker.color), lyz, rtol=1e-6)
    assert "LYZ" in own.layout.title.text
    forged = env.explore.build_linked(*args, "obsm:X_tsne", "gene:NOT_A_GENE")
    assert "\n" not in forged.layout.annotations[0].text  # one readable line
    assert "NOT_A_GENE" in forged.layout.annotations[0].text
    selected = env.explore.build_linked(
        "embedding", None, None, "raw", "obs:cell_type", "raw", {"cells": [1, 4]}, None, None,
        "obsm:X_pca", "same",
    )  # fmt: skip
    assert list(selected.data[0].selectedpoints) == [1, 4]


def test_recolour_patches_the_linked_view_only_when_it_follows_the_page(env) -> None:
    state = {"feature": "obs:cell_type", "layer": "raw"}
    for kind, color, follows in [
        ("proteins", None, True),
        ("embedding", "same", True),
        ("embedding", "gene:LYZ", False),
        ("blend", None, False),
    ]:
        umap, linked, *_ = env.explore.recolor("gene:LYZ", "raw", state, None, kind, color)
        assert isinstance(umap, Patch)
        assert isinstance(linked, Patch) if follows else linked is no_update, kind


def test_blend_view_colours_the_umap_by_both_features_with_a_key(env) -> None:
    catalog = feature_catalog(env.service, env.pair)
    a, b = "protein:" + catalog.proteins[0], "gene:LYZ"
    fig = env.explore.build_linked(
        "blend", None, None, "denoised", "obs:cell_type", "raw", None, None, None,
        None, None, a, b,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(fig.data[0].x), umap_xy(env.service, env.pair)[0])
    va = feature_values(env.service, env.pair, ColorSpec(a, "denoised"))
    vb = feature_values(env.service, env.pair, ColorSpec(b, "denoised"))
    expected = bl.blend_values(va, vb, ("", ""))
    codes = decode(fig.data[0].marker.color)
    np.testing.assert_array_equal(codes, expected.codes)
    assert len(set(codes.tolist())) > 5  # the cells differ in colour
    name_a, name_b = catalog.shown_name(a), catalog.shown_name(b)
    assert fig.layout.xaxis2.title.text == name_a and fig.layout.yaxis2.title.text == name_b
    assert fig.layout.xaxis2.tickvals[1] == pytest.approx(np.percentile(va, 99), rel=1e-5)
    # no string per point: the linked view's tooltip gives both values of the hovered cell
    assert fig.data[0].hovertext is None and fig.data[0].hoverinfo == "none"
    point = {"curveNumber": 0, "customdata": 3, "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2}}
    show, _, children = env.explore.linked_tooltip(
        {"points": [point]}, "obs:cell_type", "raw", None, "blend", None, "denoised", a, b
    )
    assert show is True
    assert f"{name_a}: {va[3]:.3g}" in text(children)
    assert text(children).endswith(f"{name_b}: {vb[3]:.3g}")
    assert fig.data[-1].name == "blend key"
    assert fig.layout.meta is None  # all cells plotted: selections are cell positions


@pytest.mark.parametrize("forged", ["gene:NOPE", "obs:cell_type", "protein", None, "x" * 5000])
def test_blend_refuses_what_is_not_a_gene_or_protein_in_one_line(env, forged: Any) -> None:
    fig = env.explore.build_linked(
        "blend", None, None, "denoised", "obs:cell_type", "raw", None, None, None,
        None, None, forged, "gene:LYZ",
    )  # fmt: skip
    message = fig.layout.annotations[0].text
    assert "is not a gene or protein of this dataset" in message
    assert "\n" not in message and len(message) < 200


def test_kind_controls_show_what_the_kind_uses(env) -> None:
    hidden = {"display": "none"}
    x, y, embedding, blend = env.explore.linked_callbacks[0]("embedding")
    assert x == y == hidden and embedding != hidden and blend == hidden
    x, y, embedding, blend = env.explore.linked_callbacks[0]("blend")
    assert x == hidden and embedding == hidden and blend != hidden
    x, y, embedding, blend = env.explore.linked_callbacks[0]("proteins")
    assert x == {} and embedding == blend == hidden


def operations(patch: Patch) -> dict[tuple, Any]:
    ops = patch.to_plotly_json()["operations"]
    return {tuple(op["location"]): op["params"]["value"] for op in ops}


def test_a_rename_keeps_a_blends_colours_and_renames_in_its_hover(env) -> None:
    type_id = str(env.service.cell_types(env.pair).cat.categories[0])
    cell = int(np.flatnonzero(env.service.cell_types(env.pair).astype(str) == type_id)[0])
    point = {"curveNumber": 0, "customdata": cell, "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2}}
    a, b = "protein:" + feature_catalog(env.service, env.pair).proteins[0], "gene:LYZ"
    try:
        out = env.explore.rename_type(
            1, type_id, "Renamed type", "obs:cell_type", "raw", "blend", None
        )
        assert out[1] is no_update  # the blend's colours stay, and it has no hover strings
        _, _, children = env.explore.linked_tooltip(
            {"points": [point]}, "obs:cell_type", "raw", None, "blend", None, "denoised", a, b
        )
        assert "type: Renamed type" in text(children)
        same = env.explore.reset_type_names(1, "obs:cell_type", "raw", "embedding", "same")
        assert ("data", 0, "marker") in operations(same[1])  # it follows the page
    finally:
        env.service.reset_cell_type_names(env.pair)
