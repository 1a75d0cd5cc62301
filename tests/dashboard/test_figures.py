"""Figure builders on small synthetic data: arrays and tables in, plotly figures out.

Every test decodes what the browser would receive (typed arrays, colour scales, hover
templates, trace order) and checks the values, not only the figure's type.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import figures
from dashboard.figures import HIGHLIGHT, MUTED, PALETTE


def decode(spec: dict[str, str]) -> np.ndarray:
    """A plotly typed-array spec back to numbers."""
    dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype)


def colour_of_code(marker: dict, code: int) -> str:
    """The flat colour a step colourscale gives integer ``code``."""
    scale = marker["colorscale"]
    n = round(marker["cmax"] + 0.5)
    pos = (code - marker["cmin"]) / (marker["cmax"] - marker["cmin"])
    assert 0 <= pos <= 1
    # entries come in pairs [i/n, c], [(i+1)/n, c]: the colour of step floor(pos * n)
    step = min(int(pos * n), n - 1)
    return scale[2 * step][1]


def categorical_colours(marker: dict, labels: list[str]) -> dict[str, str]:
    """Label → colour, as a viewer reads it off the colour bar."""
    ticks = dict(zip(marker["colorbar"]["ticktext"], marker["colorbar"]["tickvals"], strict=True))
    return {label: colour_of_code(marker, ticks[label]) for label in labels}


# ------------------------------------------------------------------------ encodings
def test_typed_array_round_trips_floats_and_codes() -> None:
    values = np.array([0.5, -1.25, 3e6, np.nan], dtype=np.float64)
    spec = figures.typed_array(values, "f4")
    assert spec["dtype"] == "f4"
    np.testing.assert_array_equal(decode(spec), values.astype(np.float32))
    codes = figures.typed_array([0, 3, 255], "u1")
    assert decode(codes).tolist() == [0, 3, 255]
    assert len(base64.b64decode(codes["bdata"])) == 3  # one byte per code


def test_category_colors_are_stable_and_cycle() -> None:
    cats = [f"type {i}" for i in range(len(PALETTE) + 2)]
    colors = figures.category_colors(cats)
    assert colors["type 0"] == PALETTE[0]
    assert colors["type 1"] == PALETTE[1]
    assert colors[f"type {len(PALETTE)}"] == PALETTE[0]  # cycles
    assert figures.category_colors(cats[:3]) == {c: colors[c] for c in cats[:3]}


def test_discrete_colorscale_is_flat_per_step() -> None:
    scale = figures.discrete_colorscale(["#111111", "#222222", "#333333"])
    assert scale == [
        [0.0, "#111111"],
        [1 / 3, "#111111"],
        [1 / 3, "#222222"],
        [2 / 3, "#222222"],
        [2 / 3, "#333333"],
        [1.0, "#333333"],
    ]


# --------------------------------------------------------------------- colour marker
def test_categorical_marker_maps_each_label_to_its_palette_colour() -> None:
    labels = ["B", "T", "NK", "T", "B", "T"]
    marker = figures.color_marker(
        labels, categorical=True, categories=["T", "B", "NK"], title="Cell type"
    )
    assert marker["color"]["dtype"] == "u1"
    codes = decode(marker["color"])
    assert len(codes) == len(labels)
    # the colour bar lists the categories top-down in the order given
    assert marker["colorbar"]["ticktext"] == ["NK", "B", "T"]
    assert marker["colorbar"]["title"]["text"] == "Cell type"
    assert (marker["cmin"], marker["cmax"]) == (-0.5, 2.5)
    # each cell's code draws its own category's colour (same as category_colors)
    expected = figures.category_colors(["T", "B", "NK"])
    for label, code in zip(labels, codes, strict=True):
        assert colour_of_code(marker, int(code)) == expected[label]
    # ... and the colour bar says so
    assert categorical_colours(marker, ["T", "B", "NK"]) == expected


def test_categorical_marker_sorts_labels_without_categories() -> None:
    marker = figures.color_marker(["b", "a", "c", "a"], categorical=True)
    assert marker["colorbar"]["ticktext"] == ["c", "b", "a"]
    assert categorical_colours(marker, ["a", "b", "c"]) == {
        "a": PALETTE[0],
        "b": PALETTE[1],
        "c": PALETTE[2],
    }


def test_categorical_marker_greys_labels_outside_the_categories() -> None:
    marker = figures.color_marker(["x", "y", "zzz"], categorical=True, categories=["x", "y"])
    assert marker["colorbar"]["ticktext"][0] == "other"  # listed last, i.e. at the top
    codes = decode(marker["color"])
    assert colour_of_code(marker, int(codes[2])) == MUTED
    assert colour_of_code(marker, int(codes[0])) == PALETTE[0]


def test_categorical_marker_with_many_categories_stays_small() -> None:
    # e.g. a per-sample id column: the palette is cycled and the colour bar dropped, so the
    # payload does not grow with the number of categories
    labels = [f"c{i:04d}" for i in range(3000)]
    cells = labels * 3
    marker = figures.color_marker(cells, categorical=True, categories=labels)
    assert marker["color"]["dtype"] == "u1" and marker["showscale"] is False
    codes = decode(marker["color"])
    n_pal = len(PALETTE)
    np.testing.assert_array_equal(codes[:3000], np.arange(3000) % n_pal)
    np.testing.assert_array_equal(codes[3000:6000], codes[:3000])  # same label, same colour
    assert marker["cmax"] == pytest.approx(n_pal - 0.5)
    assert len(json.dumps(marker, default=str)) < 20_000
    few = figures.color_marker(labels[:60], categorical=True, categories=labels[:60])
    assert few["showscale"] is True and len(few["colorbar"]["ticktext"]) == 60


def test_colour_bar_names_stay_distinct_when_shortened() -> None:
    # real PBMC cell-type names that differ only after the first 26 characters
    cats = ["CD14+CD15+ S100A9/S100A8 (CD127+)", "CD14+CD15+ S100A9/S100A8 (CD19+)", "B"]
    marker = figures.color_marker(cats, categorical=True, categories=cats)
    ticks = marker["colorbar"]["ticktext"]
    assert len(set(ticks)) == 3, ticks
    assert all(len(t) <= figures.MAX_TICK_LABEL for t in ticks)
    assert "B" in ticks


def test_numeric_marker_keeps_values_and_clips_the_scale_at_995th_percentile() -> None:
    values = np.concatenate([np.linspace(0.0, 10.0, 999), [1000.0]]).astype(np.float32)
    marker = figures.color_marker(values, categorical=False, title="CD3E · raw")
    assert marker["color"]["dtype"] == "f4"
    np.testing.assert_array_equal(decode(marker["color"]), values)
    assert marker["colorscale"] == figures.CONTINUOUS
    assert marker["cmin"] == 0.0
    assert marker["cmax"] == pytest.approx(np.percentile(values, 99.5))
    assert marker["cmax"] < 1000  # the outlier does not wash out the rest
    assert "ticktext" not in marker["colorbar"]


def test_numeric_marker_ignores_nan_and_handles_constant_values() -> None:
    marker = figures.color_marker([np.nan, 2.0, 4.0], categorical=False)
    assert marker["cmin"] == 2.0
    assert marker["cmax"] <= 4.0
    assert np.isnan(decode(marker["color"])[0])
    flat = figures.color_marker([3.0, 3.0, 3.0], categorical=False)
    assert flat["cmax"] > flat["cmin"] == 3.0
    empty = figures.color_marker([np.nan, np.nan], categorical=False)
    assert (empty["cmin"], empty["cmax"]) == (0.0, 1.0)


def test_long_colour_titles_wrap_and_are_never_cut() -> None:
    title = "CD3 protein · foreground probability"
    for categorical in (False, True):
        marker = figures.color_marker([1.0, 2.0], categorical=categorical, title=title)
        text = marker["colorbar"]["title"]["text"]
        lines = text.split("<br>")
        assert " ".join(lines) == title  # every word, in order: nothing cut
        assert all(len(line) <= figures.COLORBAR_TITLE_WIDTH for line in lines), lines
    assert figures.wrap_title("x" * 30) == "x" * 30  # one long word keeps its line


# ------------------------------------------------------------------------ cell views
@pytest.fixture
def cells() -> dict:
    rng = np.random.default_rng(0)
    n = 40
    types = np.array(["T", "B", "NK", "Mono"])[np.arange(n) % 4]
    return {
        "x": rng.normal(size=n),
        "y": rng.normal(size=n),
        "types": types,
        "ids": [f"cell-{i}" for i in range(n)],
        "value": rng.gamma(2.0, size=n),
    }


def test_cell_scatter_is_one_webgl_trace_in_dataset_order(cells) -> None:
    marker = figures.color_marker(cells["value"], categorical=False, title="CD4")
    fig = figures.cell_scatter_figure(cells["x"], cells["y"], marker=marker, title="UMAP")
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 1
    trace = fig.data[0]
    assert isinstance(trace, go.Scattergl)
    assert trace.mode == "markers"
    np.testing.assert_allclose(trace.x, cells["x"], rtol=1e-6)
    assert list(trace.customdata) == list(range(40))  # point i is cell i
    # no string per point: plotly draws no hover label, the page's tooltip names the cell
    # from the point's customdata (tests/dashboard/test_cell_hover.py)
    assert trace.text is None and trace.hovertext is None and trace.hovertemplate is None
    assert trace.hoverinfo == "none"
    np.testing.assert_allclose(decode(trace.marker.color), cells["value"], rtol=1e-6)
    assert trace.selectedpoints is None  # nothing selected: every cell at full opacity
    layout = fig.layout
    assert layout.dragmode == "lasso"
    assert layout.uirevision == "keep"  # zoom and lasso survive a recolour
    assert layout.title.text == "UMAP"
    assert layout.xaxis.title.text == "UMAP 1"
    assert layout.yaxis.scaleanchor is None
    assert layout.meta is None  # all cells plotted: no overview


def test_cell_scatter_of_a_subsample_carries_cell_positions_and_meta(cells) -> None:
    marker = figures.color_marker(cells["value"][::4], categorical=False, title="CD4")
    shown = np.arange(0, 40, 4)
    meta = {"overview": {"view": {"view": "umap"}, "shown": 10, "n_cells": 40}}
    fig = figures.cell_scatter_figure(
        cells["x"][shown], cells["y"][shown], marker=marker, cells=shown, meta=meta, selected=[1]
    )
    trace = fig.data[0]
    assert len(trace.x) == 10
    assert list(trace.customdata) == shown.tolist()  # point i is cell shown[i]
    assert list(trace.selectedpoints) == [1]
    assert fig.layout.meta == meta


def test_cell_scatter_highlights_the_selection(cells) -> None:
    marker = figures.color_marker(cells["types"], categorical=True)
    fig = figures.cell_scatter_figure(
        cells["x"],
        cells["y"],
        marker=marker,
        selected=[3, 5, 8],
        axis_titles=("CD4 raw", "CD8 raw"),
        equal_axes=True,
    )
    trace = fig.data[0]
    assert list(trace.selectedpoints) == [3, 5, 8]
    assert trace.selected.marker.opacity == 1.0
    assert trace.unselected.marker.opacity < 0.5
    assert fig.layout.xaxis.title.text == "CD4 raw"
    assert fig.layout.yaxis.scaleanchor == "x"


def test_category_annotations_sit_at_group_medians(cells) -> None:
    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    y = np.array([5.0, 6.0, 7.0, -1.0, -2.0, -3.0])
    notes = figures.category_annotations(x, y, ["a", "a", "a", "b", "b", "b"])
    by_text = {n["text"]: (n["x"], n["y"]) for n in notes}
    assert by_text == {"a": (1.0, 6.0), "b": (11.0, -2.0)}
    assert all(n["showarrow"] is False for n in notes)
    many = figures.category_annotations(x, y, list("abcdef"), max_labels=5)
    assert many == []
    # a whole name has no hover text (an annotation with one takes the pointer from the
    # cells under it); a shortened one shows the whole name on hover
    assert not any("hovertext" in n for n in notes)
    long = "CD4+ T cells, central memory, IL7R high"
    (cut,) = figures.category_annotations(x[:3], y[:3], [long] * 3)
    assert cut["text"] != long and cut["hovertext"] == long


def _boxes(notes, ranges, plot_px) -> list[tuple[float, float, float, float]]:
    """Pixel boxes of placed labels (annotation dicts), with the label size the figures
    reserve: 0.62 em per character plus 3 px padding, 10 px font."""
    (x0, x1), (y0, y1), (width, height) = *ranges, plot_px
    out = []
    for n in notes:
        cx = (n["x"] - x0) / (x1 - x0) * width + n.get("ax", 0.0)
        cy = (1 - (n["y"] - y0) / (y1 - y0)) * height + n.get("ay", 0.0)
        w, h = 0.62 * 10 * len(n["text"]) + 6, 16
        out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return out


def test_crowded_cluster_labels_are_whole_apart_and_inside() -> None:
    """Eight neighbouring clusters (as T-cell subsets sit on a UMAP) and one at the edge:
    every name shows whole, no two labels overlap, none leaves the plot."""
    rng = np.random.default_rng(0)
    names = [f"CD4+ T subset {i} (IL7R)" for i in range(8)] + ["CD14+ S100A8 edge"]
    centres = [(i * 0.3, (i % 2) * 0.3) for i in range(8)] + [(10.0, 10.0)]
    x = np.concatenate([rng.normal(cx, 0.05, 50) for cx, _ in centres])
    y = np.concatenate([rng.normal(cy, 0.05, 50) for _, cy in centres])
    labels = np.repeat(names, 50)
    notes = figures.category_annotations(x, y, labels)
    assert sorted(n["text"] for n in notes) == sorted(names)  # whole, not cut
    boxes = _boxes(notes, figures.cell_view_ranges(x, y), figures.CELL_VIEW_PLOT_PX)
    width, height = figures.CELL_VIEW_PLOT_PX
    for i, b in enumerate(boxes):
        assert b[0] >= 0 and b[2] <= width and b[1] >= 0 and b[3] <= height, notes[i]["text"]
        for c in boxes[:i]:
            assert b[2] <= c[0] or c[2] <= b[0] or b[3] <= c[1] or c[3] <= b[1]
    assert any(n["showarrow"] for n in notes)  # the crowded ones moved, with a leader line
    fig = figures.cell_scatter_figure(x, y, marker={"size": 3})
    assert list(fig.layout.xaxis.range) == figures.cell_view_ranges(x, y)[0]


# --------------------------------------------------------------------- feature views
def violin_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    groups = np.repeat(["T", "B", "NK"], 30)
    raw = rng.poisson(3.0, size=90).astype(float)
    return pd.DataFrame({"cell_type": groups, "raw": np.log1p(raw), "denoised": raw / 2 + 1})


def test_violin_shows_raw_and_denoised_side_by_side_per_group() -> None:
    frame = violin_frame()
    order = ["T", "B", "NK", "absent"]
    fig = figures.violin_figure(
        frame,
        group_column="cell_type",
        value_columns=["raw", "denoised"],
        titles=["raw (log1p)", "denoised (log1p)"],
        group_order=order,
        title="CD3E · gene",
    )
    assert all(isinstance(t, go.Violin) for t in fig.data)
    assert len(fig.data) == 6  # 3 groups with cells x 2 panels ("absent" has none)
    left = [t for t in fig.data if t.xaxis == "x"]
    right = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.name for t in left] == ["T", "B", "NK"]
    assert [t.name for t in right] == ["T", "B", "NK"]
    b_raw = next(t for t in left if t.name == "B")
    b_den = next(t for t in right if t.name == "B")
    np.testing.assert_allclose(b_raw.y, frame.loc[frame.cell_type == "B", "raw"])
    np.testing.assert_allclose(b_den.y, frame.loc[frame.cell_type == "B", "denoised"])
    # a group has the same colour in both panels, and the embedding's colour
    colours = figures.category_colors(order)
    assert b_raw.fillcolor == b_den.fillcolor == colours["B"]
    assert b_raw.box.visible is True
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["raw (log1p)", "denoised (log1p)"]
    assert fig.layout.title.text == "CD3E · gene"


def test_violin_groups_with_similar_long_names_stay_apart() -> None:
    names = ["CD56+CD16+ GNLY/NKG7 (GZMH)", "CD56+CD16+ GNLY/NKG7 (CD3+)"]
    frame = pd.DataFrame(
        {"cell_type": np.repeat(names, 5), "raw": np.arange(10.0), "denoised": np.arange(10.0)}
    )
    fig = figures.violin_figure(
        frame, group_column="cell_type", value_columns=["raw"], group_order=names
    )
    # violins sharing a name would be drawn on top of each other at one x position
    assert len({t.name for t in fig.data}) == 2, [t.name for t in fig.data]


def test_dotplot_scales_mean_per_feature_and_sizes_by_fraction() -> None:
    mean = pd.DataFrame(
        {"CD3E": [2.0, 0.0, 1.0], "CD14 (protein)": [5.0, 10.0, 5.0]}, index=["T", "B", "Mono"]
    )
    frac = pd.DataFrame(
        {"CD14 (protein)": [0.1, 0.9, 0.5], "CD3E": [1.0, 0.0, 0.5]}, index=["Mono", "B", "T"]
    )
    fig = figures.dotplot_figure(mean, frac, title="dots")
    assert len(fig.data) == 1
    trace = fig.data[0]
    cell = {
        (y, x): (c, s, t)
        for x, y, c, s, t in zip(
            trace.x, trace.y, trace.marker.color, trace.marker.size, trace.text, strict=True
        )
    }
    assert len(cell) == 6
    assert cell[("T", "CD3E")][0] == pytest.approx(1.0)
    assert cell[("B", "CD3E")][0] == pytest.approx(0.0)
    assert cell[("Mono", "CD3E")][0] == pytest.approx(0.5)
    assert cell[("B", "CD14 (protein)")][0] == pytest.approx(1.0)
    assert cell[("T", "CD14 (protein)")][0] == pytest.approx(0.0)  # 5 is this feature's min
    # fractions are aligned by name, not position
    assert cell[("T", "CD3E")][1] == pytest.approx(5 + 17 * 0.5)
    assert cell[("Mono", "CD14 (protein)")][1] == pytest.approx(5 + 17 * 0.1)
    assert "mean 2" in cell[("T", "CD3E")][2]
    assert "expressing 50%" in cell[("T", "CD3E")][2]
    assert fig.layout.yaxis.autorange == "reversed"  # first group at the top


def test_dotplot_without_features_says_so() -> None:
    fig = figures.dotplot_figure(pd.DataFrame(), pd.DataFrame())
    assert len(fig.data) == 0
    assert "Choose features" in fig.layout.annotations[0].text


# ------------------------------------------------------------------------------ DE
def de_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": ["gene:CD3E", "gene:LYZ", "gene:ACTB", "protein:CD4", "protein:CD19"],
            "feature": ["CD3E", "LYZ", "ACTB", "CD4", "CD19"],
            "modality": ["rna", "rna", "rna", "protein", "protein"],
            "lfc_mean": [3.0, -2.5, 0.1, 1.5, -0.2],
            "bayes_factor": [6.0, 5.0, 0.2, 4.0, -1.0],
            "is_de": [True, True, False, True, False],
        }
    )


def test_volcano_splits_genes_proteins_and_de() -> None:
    fig = figures.volcano_figure(de_table(), title="T vs rest", n_labels=2)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {
        "gene · DE (2)",
        "gene · not DE (1)",
        "protein · DE (1)",
        "protein · not DE (1)",
    }
    by_name = {t.name.rsplit(" (", 1)[0]: t for t in fig.data}
    de_genes = by_name["gene · DE"]
    assert isinstance(de_genes, go.Scattergl)
    assert list(de_genes.customdata) == ["gene:CD3E", "gene:LYZ"]
    assert list(de_genes.x) == [3.0, -2.5]
    assert list(de_genes.y) == [6.0, 5.0]
    assert de_genes.marker.color == HIGHLIGHT
    assert by_name["gene · not DE"].marker.color == MUTED
    assert by_name["protein · DE"].marker.symbol == "diamond"
    assert list(by_name["protein · not DE"].customdata) == ["protein:CD19"]
    assert "LFC %{x:.2f}" in de_genes.hovertemplate
    # the strongest up-regulated features are labelled
    labels = [a.text for a in fig.layout.annotations]
    assert labels == ["CD3E", "CD4"]
    assert fig.layout.clickmode == "event"
    assert fig.layout.title.text == "T vs rest"


def test_volcano_rings_the_highlighted_feature() -> None:
    fig = figures.volcano_figure(de_table(), highlight="protein:CD4", n_labels=0)
    ring = fig.data[-1]
    assert ring.name == "selected"
    assert (ring.x[0], ring.y[0]) == (1.5, 4.0)
    assert ring.hoverinfo == "skip"
    assert fig.layout.annotations[-1].text == "<b>CD4</b>"
    unknown = figures.volcano_figure(de_table(), highlight="gene:NOPE")
    assert "selected" not in {t.name for t in unknown.data}


def test_volcano_without_modality_is_all_genes_and_without_is_de_is_refused() -> None:
    fig = figures.volcano_figure(de_table().drop(columns=["modality"]))
    assert [t.name for t in fig.data] == ["gene · not DE (2)", "gene · DE (3)"]
    with pytest.raises(KeyError, match="no 'is_de' column"):
        figures.volcano_figure(de_table().drop(columns=["is_de"]))


def test_volcano_of_the_pages_display_table_marks_its_de_features() -> None:
    """The DE page passes ``de_display_table`` output (``is_de``, not the model's
    ``is_de_fdr_0.05``): its DE features must be red, as many as the status line counts."""
    from dashboard.views.de import de_display_table

    rng = np.random.default_rng(0)
    n = 60
    raw = pd.DataFrame(
        {
            "lfc_mean": rng.normal(0, 2, n),
            "bayes_factor": rng.normal(1, 3, n),
            "proba_de": rng.uniform(0, 1, n),
            "is_de_fdr_0.05": rng.uniform(0, 1, n) < 0.3,
            "modality": ["rna"] * 50 + ["protein"] * 10,
            "group1": "T",
            "group2": "rest",
        },
        index=[f"G{i}" for i in range(50)] + [f"P{i}_protein" for i in range(10)],
    )
    table = de_display_table(raw)
    fig = figures.volcano_figure(table)
    red = [t for t in fig.data if t.marker.color == HIGHLIGHT]
    n_red = sum(len(t.x) for t in red)
    assert n_red == int(raw["is_de_fdr_0.05"].sum()) == int(table["is_de"].sum()) > 0
    shown = {k for t in red for k in t.customdata}
    assert shown == set(table.loc[table["is_de"], "key"])


def test_volcano_labels_do_not_overlap() -> None:
    """Top features crowded near one corner (as marker genes are) get separate labels."""
    n = 40
    de = pd.DataFrame(
        {
            "key": [f"gene:GENE{i}" for i in range(n)],
            "feature": [f"GENE{i}" for i in range(n)],
            "modality": "rna",
            "lfc_mean": np.r_[np.linspace(3.0, 3.3, 10), np.linspace(-2, 2, n - 10)],
            "bayes_factor": np.r_[np.linspace(9.0, 9.6, 10), np.linspace(-3, 3, n - 10)],
            "is_de": [True] * 10 + [False] * (n - 10),
        }
    )
    fig = figures.volcano_figure(de, n_labels=8)
    notes = fig.layout.annotations
    assert len(notes) == 8 and all(a.showarrow for a in notes)
    width, height = figures.VOLCANO_PLOT_PX
    ranges = (fig.layout.xaxis.range, fig.layout.yaxis.range)
    boxes = _boxes([a.to_plotly_json() for a in notes], ranges, figures.VOLCANO_PLOT_PX)
    for i, b in enumerate(boxes):
        assert b[0] >= 0 and b[2] <= width and b[1] >= 0 and b[3] <= height
        for c in boxes[:i]:
            assert b[2] <= c[0] or c[2] <= b[0] or b[3] <= c[1] or c[3] <= b[1]


def test_volcano_of_nothing_says_so() -> None:
    fig = figures.volcano_figure(de_table().iloc[:0])
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "No differential expression results"


# -------------------------------------------------------------------------- metrics
def test_cv_scatter_has_points_and_identity_line() -> None:
    observed = [0.5, 1.0, np.nan, 2.0]
    generated = [0.6, 0.9, 1.0, np.inf]
    fig = figures.cv_scatter_figure(observed, generated, feature_names=["a", "b", "c", "d"])
    points, line = fig.data
    assert isinstance(points, go.Scattergl)
    assert list(points.x) == [0.5, 1.0]  # non-finite pairs dropped
    assert list(points.y) == [0.6, 0.9]
    assert list(points.text) == ["a", "b"]
    assert "observed %{x:.3g}" in points.hovertemplate
    assert list(line.x) == [0, pytest.approx(1.05)]
    assert list(line.y) == list(line.x)
    assert line.line.dash == "dash"
    assert fig.layout.xaxis.title.text == "observed CV"
    assert fig.layout.yaxis.title.text == "generated CV"
    unnamed = figures.cv_scatter_figure([1.0], [2.0])
    assert unnamed.data[0].hovertemplate is None
    assert "No finite CV" in figures.cv_scatter_figure([np.nan], [1.0]).layout.annotations[0].text


def test_metric_bars_one_group_per_cell_type() -> None:
    table = pd.DataFrame(
        {"gene_f1": [0.8, 0.6], "lfc_pearson": [0.9, 0.7], "n_cells": [100, 50]},
        index=["T cells", "B cells"],
    )
    fig = figures.metric_bars_figure(table, metrics=["gene_f1", "lfc_pearson", "roc_auc"])
    assert [t.name for t in fig.data] == ["gene_f1", "lfc_pearson"]  # absent metric skipped
    assert all(isinstance(t, go.Bar) for t in fig.data)
    assert list(fig.data[0].x) == ["T cells", "B cells"]
    assert list(fig.data[1].y) == [0.9, 0.7]
    assert fig.data[0].marker.color != fig.data[1].marker.color
    assert fig.layout.barmode == "group"
    assert "No DE metrics" in (
        figures.metric_bars_figure(table, metrics=["roc_auc"]).layout.annotations[0].text
    )


def test_metric_bars_keep_similar_long_cell_types_apart() -> None:
    names = ["CD14+CD15+ S100A9/S100A8 (CD127+)", "CD14+CD15+ S100A9/S100A8 (CD19+)"]
    table = pd.DataFrame({"gene_f1": [0.8, 0.6]}, index=names)
    fig = figures.metric_bars_figure(table, metrics=["gene_f1"])
    assert len(set(fig.data[0].x)) == 2, list(fig.data[0].x)


def test_training_curve_zooms_on_the_converged_part() -> None:
    epochs = np.arange(1, 31)
    history = pd.DataFrame(
        {
            "epoch": epochs,
            "elbo_train": 1000 + 5000 / epochs,
            "elbo_validation": 1010 + 5000 / epochs,
        }
    )
    fig = figures.training_curve_figure(history)
    assert [t.name for t in fig.data] == ["train", "validation"]
    assert list(fig.data[0].x) == list(epochs)
    np.testing.assert_allclose(fig.data[1].y, history["elbo_validation"])
    lo, hi = fig.layout.yaxis.range
    values = history[["elbo_train", "elbo_validation"]].to_numpy()
    assert lo == pytest.approx(values.min() * 0.98)
    assert hi < values.max()  # the first epochs are cut off
    assert fig.layout.title.text == "Training history"
    assert fig.layout.xaxis.title.text == "epoch"


def test_training_curve_short_or_missing_history() -> None:
    short = pd.DataFrame({"elbo_train": [3.0, 2.0]})
    fig = figures.training_curve_figure(short, title="")
    assert [t.name for t in fig.data] == ["train"]
    assert list(fig.data[0].x) == [1, 2]
    assert fig.layout.yaxis.range is None
    empty = figures.training_curve_figure(pd.DataFrame())
    assert "No training history" in empty.layout.annotations[0].text


# ----------------------------------------------------------------------------- misc
def test_empty_figure_shows_the_message_without_axes() -> None:
    fig = figures.empty_figure("no model loaded")
    assert len(fig.data) == 0
    assert fig.layout.annotations[0].text == "no model loaded"
    assert fig.layout.xaxis.visible is False
    assert fig.layout.yaxis.visible is False


def test_graph_config_downloads_vector_images() -> None:
    config = figures.graph_config("explore-umap")
    assert config["toImageButtonOptions"]["format"] == "svg"
    assert config["toImageButtonOptions"]["filename"] == "explore-umap"
    assert config["displaylogo"] is False


def test_volcano_labels_only_up_regulated_features() -> None:
    # more labels than up-regulated features: down-regulated ones (LYZ, CD19) get none
    fig = figures.volcano_figure(de_table(), n_labels=8)
    assert [a.text for a in fig.layout.annotations] == ["CD3E", "CD4", "ACTB"]
    down = de_table().assign(lfc_mean=lambda d: -d["lfc_mean"].abs())
    assert figures.volcano_figure(down, n_labels=8).layout.annotations == ()


def test_density_heatmap_marks_bins_with_cells_and_ignores_nan() -> None:
    x = np.array([0.0, 0.0, 0.0, 10.0, np.nan])
    y = np.array([0.0, 0.0, 0.0, 10.0, 5.0])
    trace = figures.density_heatmap(x, y, bins=4)
    assert isinstance(trace, go.Heatmap)
    z = np.asarray(trace.z)
    assert z.shape == (4, 4) and z.dtype == np.uint8
    assert z[0, 0] == 255 and 0 < z[3, 3] < 255  # log counts: 3 cells vs 1 cell
    assert (z > 0).sum() == 2  # empty bins stay 0 (transparent)
    assert trace.hoverinfo == "skip" and trace.showscale is False
    empty = figures.density_heatmap([np.nan], [np.nan], bins=4)
    assert np.asarray(empty.z).shape == (4, 4)


def test_density_image_keeps_its_densest_bin() -> None:
    # densest bin of 7 cells: 255 * log1p(7) / log1p(7) rounds above 255 and used to wrap
    # to 0 in uint8, drawing the densest spot transparent
    x = np.array([0.0] * 7 + [1.0, 2.0, 3.0])
    y = np.array([0.0] * 7 + [1.0, 2.0, 3.0])
    z = np.asarray(figures.density_heatmap(x, y, bins=4).z)
    assert z.max() == 255 and z[0, 0] == 255
    assert sorted(set(z.ravel().tolist())) == [0, 86, 255]  # ceil(255 · log 2 / log 8)
