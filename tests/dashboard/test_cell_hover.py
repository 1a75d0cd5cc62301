"""The cell views send no string per point: numbers go as typed arrays and the hover is a
tooltip the server fills from ``hoverData`` (the point's ``customdata``: its cell).

Read from the JSON Dash itself writes for a figure (``dash._utils.to_json``), so a change in
plotly.py's or Dash's serialisation that drops the binary encoding fails here. The app tests
run on the trained PBMC slice (1500 cells) with ``max_points=300``: the views plot a
subsample, so a point's customdata (its cell) differs from its index.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from dash import no_update
from dash._utils import to_json

from dashboard import figures, ids
from dashboard.testing import text
from dashboard.views.cells import shown_cells
from dashboard.views.features import feature_catalog
from dashboard.views.values import gene_raw, obs_labels, protein_denoised

N = 40
TYPES = np.array(["B", "Mono", "T"])[np.arange(N) % 3]
MAX_POINTS = 300
BBOX = {"x0": 10.0, "x1": 14.0, "y0": 20.0, "y1": 24.0}


def decode(spec: Any) -> np.ndarray:
    """A plotly typed-array spec as numpy (fails on anything else, e.g. a JSON list)."""
    assert isinstance(spec, dict) and set(spec) >= {"dtype", "bdata"}, spec
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


def assert_no_strings_per_point(trace: dict[str, Any]) -> None:
    """No per-point hover strings, and plotly draws no hover label of its own."""
    for key in ("text", "hovertext", "hovertemplate"):
        assert key not in trace, key
    assert trace["hoverinfo"] == "none"


# ------------------------------------------------------------------------ figure (pure)
def test_coordinates_colours_and_cells_go_as_typed_arrays_and_no_text() -> None:
    rng = np.random.default_rng(0)
    x, y, values = rng.normal(size=N), rng.normal(size=N), rng.random(N)
    marker = figures.color_marker(values, categorical=False, title="CD4")
    fig = figures.cell_scatter_figure(x, y, marker=marker, selected=[3, 7, 11])
    trace = json.loads(to_json(fig))["data"][0]
    assert_no_strings_per_point(trace)
    assert trace["x"]["dtype"] == trace["y"]["dtype"] == "f4"
    np.testing.assert_allclose(decode(trace["x"]), x, rtol=1e-6)
    np.testing.assert_allclose(decode(trace["y"]), y, rtol=1e-6)
    np.testing.assert_allclose(decode(trace["marker"]["color"]), values, rtol=1e-6)
    # customdata: point i is cell i (what a lasso maps back to cells); 2 bytes below 65,536
    assert trace["customdata"]["dtype"] == "u2"
    assert decode(trace["customdata"]).tolist() == list(range(N))
    assert trace["selectedpoints"] == [3, 7, 11]


def test_cell_positions_beyond_two_bytes_go_as_int32() -> None:
    big = np.arange(N) + 70_000  # a subsample of a large dataset: its cells' positions
    fig = figures.cell_scatter_figure(np.zeros(N), np.zeros(N), marker={"size": 3}, cells=big)
    trace = json.loads(to_json(fig))["data"][0]
    assert trace["customdata"]["dtype"] == "i4"
    assert decode(trace["customdata"]).tolist() == big.tolist()


def test_categorical_colours_go_as_one_byte_codes() -> None:
    marker = figures.color_marker(TYPES, categorical=True, title="Cell type")
    fig = figures.cell_scatter_figure(np.zeros(N), np.zeros(N), marker=marker)
    trace = json.loads(to_json(fig))["data"][0]
    assert_no_strings_per_point(trace)
    codes = decode(trace["marker"]["color"])
    assert codes.dtype == np.uint8
    # the colour bar lists the first category at the top: code n-1-k is category k
    assert codes[1] == 3 - 1 - 1  # cell 1 is "Mono", category 1 of B, Mono, T


# ------------------------------------------------------------------------------ the app
@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """The trained slice with a small ``max_points`` (the views plot a subsample)."""
    return {"name": "cell-hover", "settings": {"de_n_samples": 200, "max_points": MAX_POINTS}}


@pytest.fixture(scope="module")
def env(trained_app: SimpleNamespace) -> SimpleNamespace:
    from dashboard.pages import de, explore, lookup

    service, pair = trained_app.service, trained_app.pair
    return SimpleNamespace(
        **vars(trained_app),
        explore=explore,
        lookup=lookup,
        de=de,
        shown=shown_cells(service, pair),
        names=service.dataset(pair).obs_names,
        types=service.shown_cell_types(pair).astype(str).to_numpy(),
        batches=obs_labels(service, pair, "batch").astype(str).to_numpy(),
    )


def hover_of(cell: Any, **point: Any) -> dict[str, Any]:
    """A ``hoverData`` payload as dcc.Graph sends it for a point of the cell trace."""
    return {
        "points": [{"curveNumber": 0, "pointNumber": 5, "customdata": cell, "bbox": BBOX, **point}]
    }


def shown_text(out: tuple) -> str:
    show, bbox, children = out
    assert show is True and bbox == BBOX
    return text(children)


@pytest.mark.slow
def test_explore_figure_sends_no_string_per_point(env) -> None:
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "gene:LYZ", "raw", None, None)
    trace = json.loads(to_json(fig))["data"][0]
    assert_no_strings_per_point(trace)
    np.testing.assert_array_equal(decode(trace["customdata"]), env.shown)  # their cells
    expected = gene_raw(env.service, env.pair, "LYZ")[env.shown]
    np.testing.assert_allclose(decode(trace["marker"]["color"]), expected, rtol=1e-6)
    # nothing in the whole figure grows with the cells but the typed arrays
    payload = to_json(fig)
    assert str(env.names[env.shown[3]]) not in payload
    # the recolour patch carries no hover strings either
    patch, *_ = env.explore.recolor("obs:cluster", "raw", {"feature": "gene:LYZ", "layer": "raw"})
    locations = {tuple(op["location"]) for op in patch.to_plotly_json()["operations"]}
    assert locations == {("data", 0, "marker"), ("layout", "annotations")}


@pytest.mark.slow
def test_tooltip_names_the_hovered_cell_its_type_batch_and_value(env) -> None:
    cell = int(env.shown[17])  # a plotted cell that is not the 17th of the dataset
    assert cell != 17
    lyz = float(gene_raw(env.service, env.pair, "LYZ")[cell])
    out = env.explore.umap_tooltip(hover_of(cell), "gene:LYZ", "raw", None)
    shown = shown_text(out)
    name, *rows = out[2].children
    assert name.children == str(env.names[cell]) and type(name).__name__ == "B"  # bold
    assert [text(r) for r in rows] == [
        f"type: {env.types[cell]}",
        f"batch: {env.batches[cell]}",
        f"LYZ · raw (log1p): {lyz:.3g}",
    ]
    assert type(rows[2].children[0]).__name__ == "B"  # the value's name in bold, as before
    assert "imputed" not in shown
    # a category colouring names the cell's category; the type colouring adds no line
    cluster = str(obs_labels(env.service, env.pair, "cluster").iloc[cell])
    shown = shown_text(env.explore.umap_tooltip(hover_of(cell), "obs:cluster", "raw", None))
    assert shown.endswith(f": {cluster}")
    shown = shown_text(env.explore.umap_tooltip(hover_of(cell), "obs:cell_type", "raw", None))
    assert shown == f"{env.names[cell]}type: {env.types[cell]}batch: {env.batches[cell]}"


@pytest.mark.slow
def test_tooltip_marks_an_imputed_value(env, monkeypatch) -> None:
    import dashboard.views.colours as colours

    protein = feature_catalog(env.service, env.pair).proteins[0]
    n = env.n
    monkeypatch.setattr(colours, "imputed_cells", lambda *_: np.arange(n) % 2 == 1)
    value = float(protein_denoised(env.service, env.pair, protein)[1])
    shown = shown_text(env.explore.umap_tooltip(hover_of(1), f"protein:{protein}", "denoised"))
    assert shown.endswith(f": {value:.3g}{figures.IMPUTED_MARK}")
    shown = shown_text(env.explore.umap_tooltip(hover_of(2), f"protein:{protein}", "denoised"))
    assert "imputed" not in shown


@pytest.mark.slow
def test_linked_lookup_and_de_tooltips(env) -> None:
    cell = int(env.shown[4])
    catalog = feature_catalog(env.service, env.pair)
    a, b = "protein:" + catalog.proteins[0], "gene:LYZ"
    # a blend: both values (denoised)
    va = float(protein_denoised(env.service, env.pair, catalog.proteins[0])[cell])
    shown = shown_text(
        env.explore.linked_tooltip(hover_of(cell), "obs:cell_type", "raw", None, "blend",
                                   None, "denoised", a, b)
    )  # fmt: skip
    assert f"{catalog.shown_name(a)}: {va:.3g}" in shown and catalog.shown_name(b) in shown
    # an embedding with a colouring of its own; the protein view: the page's colouring
    lyz = float(gene_raw(env.service, env.pair, "LYZ")[cell])
    own = env.explore.linked_tooltip(
        hover_of(cell), "obs:cell_type", "raw", None, "embedding", "gene:LYZ", "raw"
    )
    assert shown_text(own).endswith(f"{lyz:.3g}")
    page = env.explore.linked_tooltip(hover_of(cell), "gene:LYZ", "raw", None, "proteins")
    assert shown_text(page).endswith(f"{lyz:.3g}")
    shown = shown_text(env.lookup.lookup_tooltip(hover_of(cell), "gene:LYZ", "raw", None))
    assert shown.startswith(str(env.names[cell])) and shown.endswith(f"{lyz:.3g}")
    shown = shown_text(env.de.de_umap_tooltip(hover_of(cell), None))
    assert f"type: {env.types[cell]}" in shown


@pytest.mark.slow
def test_the_browsers_payload_names_the_cell_by_its_point(env) -> None:
    """dcc.Graph sends no customdata for a typed array: the point number, read through
    the plotted cells, names the cell."""
    cell = int(env.shown[17])
    payload = {"points": [{"curveNumber": 0, "pointNumber": 17, "pointIndex": 17, "bbox": BBOX}]}
    shown = shown_text(env.explore.umap_tooltip(payload, "obs:cell_type", "raw", None))
    assert shown.startswith(f"{env.names[cell]}type: {env.types[cell]}")
    last = {"points": [{"curveNumber": 0, "pointNumber": MAX_POINTS - 1, "bbox": BBOX}]}
    assert shown_text(env.explore.umap_tooltip(last, "obs:cell_type", "raw", None))


FORGED: list[Any] = [
    None,
    {},
    "points",
    {"points": "x"},
    {"points": []},
    {"points": [None]},
    {"points": [{"curveNumber": 0}]},  # no customdata
    {"points": [{"curveNumber": 1, "customdata": 3, "bbox": BBOX}]},  # the density image
    hover_of(-1),
    hover_of(10**12),
    hover_of(1500),  # one past the last cell
    hover_of("3"),
    hover_of(3.5),
    hover_of(True),
    hover_of([]),
    hover_of({"a": 1}),
    hover_of(3, bbox=None),
    {"points": [{"curveNumber": 0, "pointNumber": MAX_POINTS, "bbox": BBOX}]},  # past the last
    {"points": [{"curveNumber": 0, "pointNumber": -1, "bbox": BBOX}]},
    {"points": [{"curveNumber": 0, "pointNumber": "7", "bbox": BBOX}]},
    {"points": [{"curveNumber": 0, "pointNumber": 7.0, "bbox": BBOX}]},
    hover_of(3, bbox={"x0": "left", "x1": 1, "y0": 1, "y1": 1}),
    hover_of(3, bbox={"x0": float("nan"), "x1": 1, "y0": 1, "y1": 1}),
    {"points": [hover_of(3)["points"][0]] * 100_000},  # a huge list
    {"points": [{"curveNumber": 0, "customdata": [-5, *range(100_000)], "bbox": BBOX}]},
]


@pytest.mark.slow
@pytest.mark.parametrize("hover", FORGED, ids=range(len(FORGED)))
def test_forged_hover_shows_nothing(env, hover: Any) -> None:
    """Nothing, no error: ``show`` False and the rest unchanged (no traceback anywhere)."""
    assert env.explore.umap_tooltip(hover, "gene:LYZ", "raw", None) == (
        False,
        no_update,
        no_update,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "colour", [("gene:NOPE", "raw"), ("protein:" + "x" * 5000, "raw"), (["gene:LYZ"], {})]
)
def test_forged_colouring_shows_no_tooltip(env, colour: tuple) -> None:
    out = env.explore.umap_tooltip(hover_of(int(env.shown[0])), *colour, None)
    assert out[0] is False or "type:" in text(out[2])  # a forged feature: no error line
    blend = env.explore.linked_tooltip(
        hover_of(int(env.shown[0])), "gene:LYZ", "raw", None, "blend", None, "raw", "x", "y"
    )
    assert blend == (False, no_update, no_update)
