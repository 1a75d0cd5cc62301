"""Explore's main cell view in the dataset's own layouts (``obsm["X_umap"]``, ``X_tsne``,
...): the layout dropdown, its default, a switch that keeps the colouring and the
selection, lassos resolved in the layout they were drawn in, forged keys refused in one
line, our UMAP computed after the first view (and shown once its job is done), and the
layout kept in a shared link.

The trained PBMC slice with three layouts of its own and ``max_points=300`` (the views plot
a subsample, so a lasso is sent as a region).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import no_update

from dashboard import app as app_module
from dashboard import ids
from dashboard.backend import embedding
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.preparation import ESSENTIAL_STEPS, WARM_STEPS, prepare_pair, step_list
from dashboard.backend.sampling import points_in_polygon
from dashboard.testing import text
from dashboard.testing_app import fast_umap
from dashboard.url_state import parse_search
from dashboard.views.cells import clean_region, region_cells, shown_cells, umap_xy, valid_cells
from dashboard.views.layouts import OURS, default_layout, layout_choices
from dashboard.views.links import link_state

pytestmark = pytest.mark.slow

MAX_POINTS = 300
CELL_TYPE = {"feature": "obs:cell_type", "layer": "raw"}


@pytest.fixture(scope="module")
def env(trained, tmp_path_factory) -> Any:
    """The app on the trained slice carrying X_tsne, X_umap and X_pca (in that order, so
    X_umap is not the first), prepared as the server does (the essential steps only)."""
    from dashboard.backend.settings import Settings
    from dashboard.testing_app import app_on

    data, model = trained
    rng = np.random.default_rng(7)
    layouts = {
        "X_tsne": rng.normal(size=(data.n_cells, 2)) * 5 + 40,
        "X_umap": rng.normal(size=(data.n_cells, 2)) * 3 - 10,
        "X_pca": rng.normal(size=(data.n_cells, 2)),
    }
    with_layouts = dataclasses.replace(data, layouts=layouts)
    root = tmp_path_factory.mktemp("explore-layouts")
    settings = Settings(
        data_dir=root,
        model_dir=root / "models",
        cache_dir=root / "cache",
        denoise_n_samples=3,
        max_points=MAX_POINTS,
    )
    with app_on(settings, with_layouts, model) as app_env:
        from dashboard.pages import explore

        yield SimpleNamespace(
            **vars(app_env),
            explore=explore,
            layouts={k: v.astype(np.float32) for k, v in layouts.items()},
            n=data.n_cells,
        )


def decode(spec: Any) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


def build(env: Any, layout: Any, selection: dict | None = None, feature: str = "obs:cell_type"):
    """The main view as the page builds it after the layout store changed to ``layout``."""
    ready = None if layout is None else {"layout": layout}
    return env.explore.build_umap(ids.EXPLORE_UMAP, feature, "raw", selection, None, None, ready)


def lasso_over(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """A triangle over the middle of a layout's cells."""
    x0, x1 = np.quantile(x, [0.1, 0.9])
    y0, y1 = np.quantile(y, [0.1, 0.9])
    return [[float(x0), float(x1), float(x0)], [float(y0), float(y0), float(y1)]]


def find_control(component: Any, component_id: str) -> Any:
    """The component of a layout tree with ``component_id``."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str):
            found = find_control(child, component_id)
            if found is not None:
                return found
    return None


# ------------------------------------------------------------------------ the control
def test_the_dropdown_lists_ours_and_the_files_layouts_and_opens_on_x_umap(env) -> None:
    page = env.explore.layout()
    dropdown = find_control(page, ids.EXPLORE_LAYOUT.choice)
    assert [o["label"] for o in dropdown.options] == [
        "Latent UMAP (ours)",
        "X_tsne (from the file)",
        "X_umap (from the file)",
        "X_pca, components 1-2 (from the file)",
    ]
    assert [o["value"] for o in dropdown.options] == [
        OURS,
        "obsm:X_tsne",
        "obsm:X_umap",
        "obsm:X_pca",
    ]
    assert dropdown.value == "obsm:X_umap"  # the file's own UMAP, though not its first
    assert find_control(page, ids.EXPLORE_LAYOUT.ready).data == {"layout": "obsm:X_umap"}
    fig = build(env, None)  # the first view: the file's X_umap
    np.testing.assert_array_equal(
        fig.data[0].x, env.layouts["X_umap"][:, 0][fig.data[0].customdata]
    )
    assert fig.layout.xaxis.title.text == "X_umap 1"


def test_the_default_layout_rule() -> None:
    def service_with(layouts: dict) -> Any:
        data = SimpleNamespace(layouts=layouts)
        return SimpleNamespace(dataset=lambda pair: data)

    xy = np.zeros((3, 2), np.float32)
    assert default_layout(service_with({}), None) == OURS
    assert default_layout(service_with({"X_tsne": xy, "X_pca": xy}), None) == "obsm:X_tsne"
    assert default_layout(service_with({"X_pca": xy, "X_umap": xy}), None) == "obsm:X_umap"
    assert [o["value"] for o in layout_choices(service_with({}), None)] == [OURS]


# ------------------------------------------------------------------------ switching
@pytest.mark.parametrize("name", ["X_tsne", "X_pca", "X_umap"])
def test_switching_plots_the_files_coordinates_in_the_same_colouring(env, name: str) -> None:
    store, interval_off, ready, *_ = env.explore.start_layout(f"obsm:{name}", {"layout": OURS})
    assert ready == {"layout": f"obsm:{name}"} and store is None and interval_off
    fig = build(env, ready["layout"])
    assert isinstance(fig, go.Figure)
    shown = shown_cells(env.service, env.pair)
    assert len(fig.data[0].x) == MAX_POINTS
    np.testing.assert_array_equal(fig.data[0].customdata, shown)
    np.testing.assert_array_equal(fig.data[0].x, env.layouts[name][shown, 0])
    np.testing.assert_array_equal(fig.data[0].y, env.layouts[name][shown, 1])
    assert fig.layout.xaxis.title.text == f"{name} 1"
    assert fig.layout.yaxis.title.text == f"{name} 2"
    # a lasso on it is sent as a region of this layout
    assert fig.layout.meta["overview"]["view"] == {"view": "umap", "layout": f"obsm:{name}"}
    # the colouring is kept: the same marker colours as in the first view
    first = build(env, "obsm:X_umap", feature="gene:LYZ")
    switched = build(env, f"obsm:{name}", feature="gene:LYZ")
    np.testing.assert_array_equal(
        decode(switched.data[0].marker.color), decode(first.data[0].marker.color)
    )
    # the cell-type labels sit on the cells of this layout
    labels = build(env, f"obsm:{name}").layout.annotations
    assert labels and all(
        env.layouts[name][:, 0].min() <= a.x <= env.layouts[name][:, 0].max() for a in labels
    )


def test_the_same_choice_again_redraws_nothing(env) -> None:
    out = env.explore.start_layout("obsm:X_tsne", {"layout": "obsm:X_tsne"})
    assert out[2] is no_update


def test_a_selection_survives_a_switch_of_layout(env) -> None:
    shown = shown_cells(env.service, env.pair)
    cells = [int(shown[3]), int(shown[10]), int(shown[42])]
    for layout in ("obsm:X_umap", "obsm:X_tsne", "obsm:X_pca"):
        fig = build(env, layout, {"cells": cells})
        assert list(fig.data[0].selectedpoints) == [3, 10, 42], layout
    # a lasso drawn in X_tsne still means its cells once X_pca is shown
    x, y = env.layouts["X_tsne"][:, 0], env.layouts["X_tsne"][:, 1]
    region = {"view": "umap", "layout": "obsm:X_tsne", "lasso": lasso_over(x, y)}
    inside = region_cells(env.service, env.pair, region)
    fig = build(env, "obsm:X_pca", {"region": region, "source": ids.EXPLORE_UMAP})
    expected = np.flatnonzero(np.isin(shown, inside)).tolist()
    assert expected and list(fig.data[0].selectedpoints) == expected


def test_a_lasso_in_a_files_layout_selects_the_cells_inside_it_there(env) -> None:
    x, y = env.layouts["X_tsne"][:, 0], env.layouts["X_tsne"][:, 1]
    lasso = lasso_over(x, y)
    region = {"view": "umap", "layout": "obsm:X_tsne", "lasso": lasso}
    cells = region_cells(env.service, env.pair, region)
    expected = np.flatnonzero(points_in_polygon(x, y, *lasso))
    assert 0 < len(cells) < env.n
    np.testing.assert_array_equal(cells, expected)
    assert clean_region(region)["layout"] == "obsm:X_tsne"
    selection = {"region": region, "source": ids.EXPLORE_UMAP, "dataset": env.pair.dataset.id}
    assert valid_cells(selection, env.n) == expected.tolist()
    # the same shape on our UMAP (an old region names no layout) is other cells
    ours = {"view": "umap", "lasso": lasso}
    ux, uy = umap_xy(env.service, env.pair)
    np.testing.assert_array_equal(
        region_cells(env.service, env.pair, ours),
        np.flatnonzero(points_in_polygon(ux, uy, *lasso)),
    )
    assert "layout" not in clean_region({**ours, "layout": OURS})  # ours: as before


@pytest.mark.parametrize(
    "forged", ["obsm:X_nope", "X_tsne", "obsm:protein_expression", None, 7, "a" * 10_000]
)
def test_an_unknown_layout_is_refused_in_one_line(env, forged: Any) -> None:
    store, _, ready, progress, _, shared = env.explore.start_layout(
        forged, {"layout": "obsm:X_umap"}
    )
    message = text(progress)
    assert "is not one of this dataset's" in message
    assert "\n" not in message and len(message) < 200
    assert store is None and ready is no_update and shared is no_update  # the view stays
    if forged is not None:  # (None in a store: the default layout)
        fig = build(env, forged)
        assert fig.layout.annotations[0].text == message  # the view says it, no traceback
        region = {"view": "umap", "layout": forged, "lasso": [[0, 1, 0], [0, 0, 1]]}
        with pytest.raises(InvalidSelection, match="is not one of this dataset's"):
            region_cells(env.service, env.pair, region)


# ------------------------------------------------------------------------ our UMAP
def test_a_pair_with_layouts_prepares_without_our_umap_first(env) -> None:
    names = [name for name, _ in step_list("essential", has_layouts=True)]
    assert names == ["latent space", "Leiden clusters", "cell types"]
    warm = [name for name, _ in step_list("warm", has_layouts=True)]
    assert warm[0] == "UMAP" and warm[1:] == [name for name, _ in WARM_STEPS]
    for steps in ("essential", "warm"):
        shares = [share for _, share in step_list(steps, has_layouts=True)]
        assert sum(shares) == pytest.approx(1.0)
    assert step_list("essential") == ESSENTIAL_STEPS  # no layouts: as before
    seconds = prepare_pair(env.service, env.pair)
    assert list(seconds) == ["latent space", "Leiden clusters", "cell types"]


def test_picking_ours_while_it_is_computed_keeps_the_view_until_it_is_ready(
    env, monkeypatch
) -> None:
    env.service.umap(env.pair)  # forget our UMAP, as after the first view
    env.service.results.cache.delete(env.service.results.last_key())
    release = threading.Event()

    def slow_umap(latent: np.ndarray, **params: Any) -> np.ndarray:
        release.wait(30)
        return fast_umap(latent, **params)

    monkeypatch.setattr(embedding, "compute_umap", slow_umap)
    try:
        store, interval_off, ready, progress, cancel_off, _ = env.explore.start_layout(
            OURS, {"layout": "obsm:X_umap"}
        )
        assert store["layout"] == OURS and store["job"]
        assert ready is no_update and not interval_off and not cancel_off  # polling
        assert "Latent UMAP" in text(progress)
        # meanwhile the view keeps the file's layout
        kept = build(env, "obsm:X_umap")
        shown = shown_cells(env.service, env.pair)
        np.testing.assert_array_equal(kept.data[0].x, env.layouts["X_umap"][shown, 0])
        polled = env.explore.poll_layout(1, store)
        assert polled[2] is no_update and polled[1] is False  # still running, still polling
    finally:
        release.set()
    env.service.wait(store["job"], timeout=30)
    progress, interval_off, ready, *_ = env.explore.poll_layout(2, store)
    assert interval_off and ready["layout"] == OURS
    fig = build(env, ready["layout"])
    ux, uy = umap_xy(env.service, env.pair)
    np.testing.assert_array_equal(fig.data[0].x, ux[shown])
    np.testing.assert_array_equal(fig.data[0].y, uy[shown])
    assert fig.layout.xaxis.title.text == "UMAP 1"
    assert fig.layout.meta["overview"]["view"] == {"view": "umap"}
    # computed now: choosing ours again shows it at once, without a job
    back = env.explore.start_layout(OURS, {"layout": "obsm:X_tsne"})
    assert back[2]["layout"] == OURS


def test_another_layout_chosen_while_ours_computes_stops_the_wait(env) -> None:
    store, interval_off, ready, *_ = env.explore.start_layout("obsm:X_pca", {"layout": OURS})
    assert store is None and interval_off  # no job store: a poll of ours shows nothing
    assert ready == {"layout": "obsm:X_pca"}


def test_a_recolour_puts_the_labels_on_the_shown_layout(env) -> None:
    state = {"feature": "gene:LYZ", "layer": "raw"}
    ready = {"layout": "obsm:X_pca"}
    umap, *_ = env.explore.recolor("obs:cell_type", "raw", state, None, None, None, ready)
    ops = {
        tuple(op["location"]): op["params"]["value"] for op in umap.to_plotly_json()["operations"]
    }
    labels = ops[("layout", "annotations")]
    pca = env.layouts["X_pca"]
    assert labels and all(pca[:, 0].min() <= a["x"] <= pca[:, 0].max() for a in labels)


def _id(value: Any) -> str:
    """A component id as text (a pattern-matching id as its JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _targets(output: str) -> set[tuple[str, str]]:
    """``(id, property)`` of each output of a ``/_dash-dependencies`` entry."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return {tuple(part.split("@")[0].rsplit(".", 1)) for part in parts}


def test_the_main_views_first_figure_waits_for_no_other_callback(env) -> None:
    """The renderer holds a callback back while a callback that fired with it can lead to
    one of its inputs (through any chain of callbacks). When the page opens, a callback
    fires unless ``prevent_initial_call``, and even then when an input is in the page and
    an output outside it. The main view's figure (whose inputs include the layout
    control's ready store) must wait for none: at a million cells that round cost
    0.3-1.7 s."""
    deps = env.app.server.test_client().get("/_dash-dependencies").get_json()
    page = {c.id for c in env.explore.layout()._traverse() if isinstance(getattr(c, "id", 0), str)}
    page_props = lambda targets: {t for t in targets if t[0] in page}  # noqa: E731

    def inputs(d: dict) -> set[tuple[str, str]]:  # (a pattern's id as its JSON)
        return {(_id(i["id"]), i["property"]) for i in d["inputs"]}

    def fires_on_open(d: dict) -> bool:
        outs = _targets(d["output"])
        return not d["prevent_initial_call"] or bool(
            page_props(inputs(d)) and page_props(outs) != outs
        )

    main = [d for d in deps if _targets(d["output"]) == {(ids.EXPLORE_UMAP, "figure")}]
    assert len(main) == 1
    wanted = inputs(main[0])
    assert (ids.EXPLORE_LAYOUT.ready, "data") in wanted
    opened = [d for d in deps if fires_on_open(d) and d is not main[0]]
    assert any((ids.EXPLORE_LAYOUT.job.store, "data") in _targets(d["output"]) for d in opened)
    blocking = []
    for d in opened:  # everything this callback's answer can set, through other callbacks
        reach, frontier = set(), _targets(d["output"])
        while frontier - reach:
            reach |= frontier
            frontier = set().union(
                *(_targets(e["output"]) for e in deps if e is not main[0] and inputs(e) & reach)
            )
        if reach & wanted:
            blocking.append(d["output"])
    assert blocking == []


def test_opening_a_link_to_ours_starts_its_job_and_the_poll_shows_it(env) -> None:
    """The page-open call of the layout control sets no ready store; a link naming ours on
    a dataset whose view starts in the file's layout starts our UMAP's job and keeps the
    poll on (even when the job is done already), and the poll then shows ours."""
    store, interval_off, _progress, _cancel_off, shared = env.explore.opened_layout(
        ids.EXPLORE_LAYOUT.choice, OURS, {"layout": "obsm:X_umap"}
    )
    assert store["layout"] == OURS and interval_off is False
    assert shared == {"layout": OURS, "dataset": env.pair.dataset.id}
    env.service.wait(store["job"], timeout=60)
    _, interval_off, ready, *_ = env.explore.poll_layout(1, store)
    assert interval_off and ready["layout"] == OURS
    # the file's layout, as the control started it: nothing to start, nothing to poll
    store, interval_off, *_ = env.explore.opened_layout(
        ids.EXPLORE_LAYOUT.choice, "obsm:X_tsne", {"layout": "obsm:X_tsne"}
    )
    assert store is None and interval_off is True


# ------------------------------------------------------------------------ shared links
def test_a_shared_link_opens_the_same_layout(env) -> None:
    token = {"dataset": env.pair.dataset.id, "pair": env.pair.id}
    shared = env.explore.start_layout("obsm:X_tsne", {"layout": "obsm:X_umap"})[5]
    assert shared == {"layout": "obsm:X_tsne", "dataset": env.pair.dataset.id}
    query = parse_search(app_module.update_url_query(None, None, token, shared))
    assert query["layout"] == "obsm:X_tsne"
    # the default layout is left out of the link; another dataset's layout too
    default = env.explore.start_layout("obsm:X_umap", {"layout": "obsm:X_tsne"})[5]
    assert default["layout"] is None
    assert "layout" not in parse_search(app_module.update_url_query(None, None, token, default))
    other = {**shared, "dataset": "another"}
    assert "layout" not in parse_search(app_module.update_url_query(None, None, token, other))
    # opening the link: the dropdown and the view in X_tsne, nothing to say
    page = env.explore.layout(**query)
    assert find_control(page, ids.EXPLORE_LAYOUT.choice).value == "obsm:X_tsne"
    assert find_control(page, ids.EXPLORE_LAYOUT.ready).data == {"layout": "obsm:X_tsne"}
    assert "notice" not in link_state(query, env.service, env.pair)
    # a link to ours starts in the file's default; the control's first call shows ours
    page = env.explore.layout(layout=OURS)
    assert find_control(page, ids.EXPLORE_LAYOUT.choice).value == OURS
    assert find_control(page, ids.EXPLORE_LAYOUT.ready).data == {"layout": "obsm:X_umap"}


@pytest.mark.parametrize("forged", ["obsm:X_nope", "X_tsne", "x" * 5000, ["obsm:?", "obsm:!"]])
def test_a_link_to_a_layout_the_dataset_lacks_says_so_and_shows_the_default(
    env, forged: Any
) -> None:
    page = env.explore.layout(layout=forged)
    assert find_control(page, ids.EXPLORE_LAYOUT.choice).value == "obsm:X_umap"
    notice = link_state({"layout": forged}, env.service, env.pair)["notice"]
    assert "which this dataset does not have" in notice and "X_umap (from the file)" in notice
    assert "\n" not in notice and len(notice) < 200
