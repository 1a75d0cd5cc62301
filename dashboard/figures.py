"""Pure figure builders: arrays and tables in, ``plotly.graph_objects.Figure`` out.

No Dash and no backend imports, so every figure is testable on small data. Cell-level plots
use WebGL (``Scattergl``), one trace with one point per cell in dataset order, so a point's
index *is* the cell's position and a selection in one view maps to the same cells in every
other view. Colourings are built by :func:`color_marker` as a self-contained ``marker``
dict (values as base64 typed arrays), which is exactly what a recolour sends to the browser.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#fd8d3c",
    "#74c476",
    "#9e9ac8",
    "#bdbdbd",
    "#d6616b",
    "#ce6dbd",
]
CONTINUOUS = "Viridis"
HIGHLIGHT = "#d62728"
MUTED = "#c4c9d0"
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
BASE_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "font": {"family": FONT, "size": 12, "color": "#1f2933"},
    "margin": {"l": 50, "r": 10, "t": 44, "b": 44},
    "title": {"font": {"size": 14}, "x": 0.01, "xanchor": "left"},
    "uirevision": "keep",  # keep zoom and lasso across recolours
}
MAX_TICK_LABEL = 40
#: Characters per line of a colour-bar title (it sits above a 12 px bar at the right edge).
COLORBAR_TITLE_WIDTH = 16
#: Categories beyond which a colouring cycles the palette and drops its colour bar (its
#: payload would grow with the number of categories; the hover still names each cell's)
MAX_COLORBAR_CATEGORIES = 60


# --------------------------------------------------------------------------- encodings
def typed_array(values: np.ndarray | Sequence[float], dtype: str = "f4") -> dict[str, str]:
    """plotly.js typed-array spec (``{"dtype", "bdata"}``): 4 bytes per float, 1 per code.

    Plotly decodes it in the browser; it is several times smaller than a JSON number list
    and costs no float formatting on the server.
    """
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def category_colors(categories: Sequence[str]) -> dict[str, str]:
    """Stable colour per category (same order → same colour in every view)."""
    return {str(c): PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}


def discrete_colorscale(colors: Sequence[str]) -> list[list[float | str]]:
    """Step colourscale giving codes ``0..n-1`` (with ``cmin=-0.5, cmax=n-0.5``) the flat
    colours ``colors[0..n-1]``."""
    n = max(len(colors), 1)
    scale: list[list[float | str]] = []
    for i, color in enumerate(colors):
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def _short(label: str, limit: int = MAX_TICK_LABEL) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def wrap_title(text: str, width: int = COLORBAR_TITLE_WIDTH) -> str:
    """A colour-bar title on lines of at most ``width`` characters (broken at spaces; a
    longer word keeps its own line), so it is never cut at the figure's edge."""
    lines: list[str] = []
    for word in str(text).split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _short_labels(labels: Sequence[Any], limit: int = MAX_TICK_LABEL) -> list[str]:
    """:func:`_short` of each label, kept distinct: labels that would collide (long cell
    type names often differ only at the end) keep their start and end around the "…",
    or stay whole if even that collides (a shared name would merge two groups on an axis)."""
    full = [str(label) for label in labels]
    out = [_short(label, limit) for label in full]
    counts = pd.Series(out).value_counts()
    head = (limit - 1) // 2
    tail = limit - 1 - head
    for i, label in enumerate(full):
        if counts[out[i]] > 1 and len(label) > limit:
            out[i] = label[:head] + "…" + label[-tail:]
    if len(set(out)) < len(set(full)):
        seen = pd.Series(out).value_counts()
        out = [full[i] if seen[o] > 1 else o for i, o in enumerate(out)]
    return out


def color_marker(
    values: np.ndarray | pd.Series | Sequence[Any],
    *,
    categorical: bool,
    categories: Sequence[str] | None = None,
    title: str = "",
    size: float = 3.0,
    colorbar: bool = True,
) -> dict[str, Any]:
    """Marker of a colouring: the whole payload of a recolour (colours, scale, colourbar).

    Categories become integer codes on a step colourscale whose colourbar names them
    (without ``colorbar`` there is none: the page shows a legend of its own instead);
    numbers keep their values (float32), coloured from their minimum to the 99.5th
    percentile so a few outliers do not wash out the rest. NaN shows in grey.
    """
    if categorical:
        labels = pd.Series(np.asarray(values, dtype=object)).astype(str)
        cats = [
            str(c) for c in (categories if categories is not None else sorted(labels.unique()))
        ]
        codes = pd.Categorical(labels, categories=cats).codes.astype(np.int32)
        n = len(cats)
        colors = [PALETTE[i % len(PALETTE)] for i in range(n)]
        if (codes < 0).any():  # labels outside ``categories``: one extra grey entry
            cats, colors = [*cats, "other"], [*colors, MUTED]
            codes = np.where(codes < 0, n, codes)
            n += 1
        if n > MAX_COLORBAR_CATEGORIES:  # e.g. per-sample ids: palette cycled, no bar
            p = len(PALETTE)
            return {
                "size": size,
                "color": typed_array((codes % p).astype(np.uint8), "u1"),
                "colorscale": discrete_colorscale(PALETTE),
                "cmin": -0.5,
                "cmax": p - 0.5,
                "showscale": False,
            }
        # the colour bar runs bottom-up: code k draws category n-1-k, so the first
        # category is listed at the top, as in a legend
        codes = (n - 1 - codes).astype(np.uint8)
        marker: dict[str, Any] = {
            "size": size,
            "color": typed_array(codes, "u1"),
            "colorscale": discrete_colorscale(colors[::-1]),
            "cmin": -0.5,
            "cmax": max(n, 1) - 0.5,
            "showscale": colorbar,
        }
        if colorbar:
            marker["colorbar"] = {
                "title": {"text": wrap_title(title), "side": "top"},
                "tickvals": list(range(n)),
                "ticktext": _short_labels(cats[::-1]),
                "thickness": 12,
                "len": 1.0,
                "outlinewidth": 0,
                "tickfont": {"size": 10},
            }
        return marker
    vals = np.asarray(values, dtype=np.float32)
    finite = vals[np.isfinite(vals)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if hi <= lo:
        hi = float(finite.max()) if finite.size and finite.max() > lo else lo + 1.0
    return {
        "size": size,
        "color": typed_array(vals, "f4"),
        "colorscale": CONTINUOUS,
        "cmin": lo,
        "cmax": hi,
        "showscale": True,
        "colorbar": {
            "title": {"text": wrap_title(title), "side": "top"},
            "thickness": 12,
            "len": 1.0,
            "outlinewidth": 0,
            "tickfont": {"size": 10},
        },
    }


#: What the hover adds to a value the model imputed (its batch did not measure it).
IMPUTED_MARK = " (imputed: not measured in this batch)"


# ----------------------------------------------------------------------- text labels
#: Nominal plot area (pixels) the volcano's label placement assumes (its card is 470 px
#: high; wider screens only spread the labels further apart).
VOLCANO_PLOT_PX = (560.0, 380.0)
#: Where a label may go relative to its point (pixel offsets, y down), nearest first: a
#: grid of 16 px rows and 20 px columns out to 200 x 160 px (stacks of labels fit).
_LABEL_OFFSETS = tuple(
    sorted(
        (
            (float(dx), float(dy))
            for dx in range(-200, 201, 20)
            for dy in range(-160, 161, 16)
            if (dx, dy) != (0, 0)
        ),
        key=lambda o: (o[0] ** 2 + o[1] ** 2, o[1] > 0, abs(o[0])),
    )
)


def label_size(text: str, font_px: float = 10.0) -> tuple[float, float]:
    """Width and height (pixels) a one-line text label takes, as :func:`label_boxes`
    reserves it (an average glyph of 0.62 em, 3 px padding each side)."""
    return 0.62 * font_px * max(len(str(text)), 1) + 6, font_px + 6


def data_to_px(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    x_range: Sequence[float],
    y_range: Sequence[float],
    plot_px: tuple[float, float],
) -> np.ndarray:
    """Pixel positions (n x 2, y down) of data points in a plot area of ``plot_px`` whose
    axes show ``x_range`` and ``y_range``."""
    (x0, x1), (y0, y1), (width, height) = x_range, y_range, plot_px
    return np.column_stack(
        [
            (np.asarray(x, dtype=float) - x0) / (x1 - x0) * width,
            (1 - (np.asarray(y, dtype=float) - y0) / (y1 - y0)) * height,
        ]
    )


def label_boxes(
    points: np.ndarray,
    texts: Sequence[str],
    *,
    plot_px: tuple[float, float] = VOLCANO_PLOT_PX,
    font_px: float = 10.0,
    offsets: Sequence[tuple[float, float]] = _LABEL_OFFSETS,
    avoid_points: bool = True,
) -> list[tuple[float, float, float, float, float, float]]:
    """Readable places for text labels of points: for each label ``(ax, ay, x0, y0, x1,
    y1)``, the arrow offset from its point and its box (pixels, y down).

    ``points`` are pixel positions (n x 2) in priority order; each label takes the first of
    ``offsets`` whose box overlaps no label placed before it, stays inside the plot and
    (``avoid_points``) covers no labelled point (greedy, as plot-labelling tools do); if
    none is free, the least crowded one.
    """
    width, height = plot_px
    placed: list[tuple[float, float, float, float]] = []
    marks = np.asarray(points, dtype=float).reshape(-1, 2)
    avoid = marks if avoid_points else marks[:0]
    out = []

    def overlap(box: tuple[float, float, float, float]) -> float:
        x0, y0, x1, y1 = box
        area = 0.0
        for a0, b0, a1, b1 in placed:
            area += max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        inside = (avoid[:, 0] > x0 - 3) & (avoid[:, 0] < x1 + 3)
        inside &= (avoid[:, 1] > y0 - 3) & (avoid[:, 1] < y1 + 3)
        area += 40.0 * int(inside.sum())
        clip = max(0.0, -x0) + max(0.0, x1 - width) + max(0.0, -y0) + max(0.0, y1 - height)
        return area + 100.0 * clip

    for (px, py), text in zip(marks, texts, strict=True):
        w, h = label_size(text, font_px)
        best, best_cost = None, np.inf
        for ax, ay in offsets:
            cx, cy = px + ax, py + ay
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            cost = overlap(box)
            if cost == 0.0:
                best = (ax, ay, *box)
                break
            if cost < best_cost:
                best, best_cost = (ax, ay, *box), cost
        assert best is not None
        placed.append(best[2:])
        out.append(best)
    return out


def _padded_range(values: np.ndarray, pad: float = 0.08) -> list[float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [-1.0, 1.0]
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else 1.0
    return [lo - pad * span, hi + pad * span]


# ------------------------------------------------------------------------- cell views
def cell_scatter_figure(
    x: np.ndarray | Sequence[float],
    y: np.ndarray | Sequence[float],
    *,
    marker: Mapping[str, Any],
    selected: Sequence[int] | None = None,
    title: str = "",
    axis_titles: tuple[str, str] = ("UMAP 1", "UMAP 2"),
    equal_axes: bool = False,
    annotations: Sequence[Mapping[str, Any]] = (),
    cells: np.ndarray | Sequence[int] | None = None,
    meta: Mapping[str, Any] | None = None,
    density: go.Heatmap | None = None,
) -> go.Figure:
    """One WebGL trace of all cells (point ``i`` = cell ``i``), lasso selection enabled.

    ``selected`` (point positions) are drawn at full opacity and the rest faded; the same
    property is what a selection ``Patch`` changes, so every view highlights the same cells.
    When only some cells are plotted, ``cells`` gives their dataset positions (the points'
    ``customdata``) and ``meta`` (``layout.meta``) tells the browser how to read a lasso;
    ``density`` (:func:`density_heatmap` of all cells) is added as the second trace, drawn
    under the WebGL points (the cell trace stays ``data[0]``, which patches address).

    The cell trace sends no string per point: its hover is ``"none"`` (plotly draws no
    label but still reports ``hoverData``, whose point names the cell) and the page shows
    a tooltip of that cell's name, type, batch and value from the server.
    ``customdata`` goes as 2-byte positions below 65,536 cells, else 4-byte.
    """
    n = len(x)
    custom = np.arange(n) if cells is None else np.asarray(cells)
    wide = bool(custom.size) and int(custom.max()) >= 2**16
    trace = go.Scattergl(
        x=np.asarray(x, dtype=np.float32),
        y=np.asarray(y, dtype=np.float32),
        mode="markers",
        marker=dict(marker),
        customdata=custom.astype(np.int32 if wide else np.uint16),
        hoverinfo="none",
        selectedpoints=list(selected) if selected is not None else None,
        selected={"marker": {"opacity": 1.0}},
        unselected={"marker": {"opacity": 0.12}},
        showlegend=False,
        name="cells",
    )
    fig = go.Figure(trace if density is None else [trace, density])
    x_range, y_range = cell_view_ranges(x, y)  # fixed, so on-data labels can be placed
    fig.update_layout(
        **BASE_LAYOUT,
        dragmode="lasso",
        hovermode="closest",
        xaxis={"title": axis_titles[0], "showgrid": False, "zeroline": False, "range": x_range},
        yaxis={"title": axis_titles[1], "showgrid": False, "zeroline": False, "range": y_range},
        annotations=list(annotations),
    )
    fig.update_layout(title={"text": title})
    if meta is not None:
        fig.update_layout(meta=dict(meta))
    if equal_axes:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def density_heatmap(
    x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float], *, bins: int = 160
) -> go.Heatmap:
    """Where all cells are: a grey 2-D histogram (log counts, 1 byte per bin, empty bins
    transparent), for views that plot only a sample of the cells."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        x, y, ok = np.zeros(1), np.zeros(1), np.ones(1, dtype=bool)
    counts, xe, ye = np.histogram2d(x[ok], y[ok], bins=bins)
    level = np.log1p(counts.T)
    # (255 * L) / L can round above 255 and wrap to 0 in uint8: scale first, then clip
    scaled = np.ceil(255 * (level / max(float(level.max()), 1e-12)))
    z = np.clip(scaled, 0, 255).astype(np.uint8)
    return go.Heatmap(
        x=((xe[:-1] + xe[1:]) / 2).astype(np.float32),
        y=((ye[:-1] + ye[1:]) / 2).astype(np.float32),
        z=z,
        zmin=0,
        zmax=255,
        colorscale=[
            [0.0, "rgba(31,41,51,0)"],
            [0.5 / 255, "rgba(31,41,51,0)"],
            [1.0 / 255, "rgba(31,41,51,0.05)"],
            [1.0, "rgba(31,41,51,0.4)"],
        ],
        showscale=False,
        hoverinfo="skip",
        name="all cells (density)",
        showlegend=False,
    )


#: Nominal plot area (pixels) of a cell view, for placing its on-data labels.
CELL_VIEW_PLOT_PX = (600.0, 450.0)
#: Offsets an on-data label may take from its group's centre: on it first, then nearby
#: with a leader line.
_ON_DATA_OFFSETS = ((0.0, 0.0), *_LABEL_OFFSETS)
MAX_ON_DATA_LABEL = 28


def cell_view_ranges(
    x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]
) -> tuple[list[float], list[float]]:
    """Axis ranges of a cell view: the cells' extent with a 4% margin."""
    return (
        _padded_range(np.asarray(x, dtype=float), 0.04),
        _padded_range(np.asarray(y, dtype=float), 0.04),
    )


def category_annotations(
    x: np.ndarray, y: np.ndarray, labels: Sequence[Any], *, max_labels: int = 30
) -> list[dict[str, Any]]:
    """On-data labels at each category's median position (scanpy's ``legend_loc="on
    data"``), larger groups first; a label that would cover another or leave the plot moves
    next to its group with a leader line (:func:`label_boxes`). Names up to
    :data:`MAX_ON_DATA_LABEL` characters are shown whole."""
    frame = pd.DataFrame({"x": np.asarray(x), "y": np.asarray(y), "g": np.asarray(labels)})
    groups = frame.groupby("g", observed=True)
    med = groups[["x", "y"]].median().assign(n=groups.size()).sort_values("n", ascending=False)
    if len(med) > max_labels or med.empty:
        return []
    px = data_to_px(med["x"], med["y"], *cell_view_ranges(x, y), CELL_VIEW_PLOT_PX)
    texts = [_short(str(g), MAX_ON_DATA_LABEL) for g in med.index]
    places = label_boxes(
        px, texts, plot_px=CELL_VIEW_PLOT_PX, offsets=_ON_DATA_OFFSETS, avoid_points=False
    )
    out = []
    for (g, r), text, (ax, ay, *_box) in zip(med.iterrows(), texts, places, strict=True):
        moved = (ax, ay) != (0.0, 0.0)
        out.append(
            {
                "x": float(r.x),
                "y": float(r.y),
                "text": text,
                # the whole name on hover only where the label is shortened: an annotation
                # with a hover text takes the pointer, and the cells under it get no tooltip
                **({"hovertext": str(g)} if text != str(g) else {}),
                "showarrow": moved,
                **({"ax": ax, "ay": ay, "arrowhead": 0, "arrowwidth": 0.8} if moved else {}),
                "arrowcolor": "#52606d",
                "font": {"size": 10, "color": "#1f2933"},
                "bgcolor": "rgba(255,255,255,0.72)",
                "borderpad": 1,
            }
        )
    return out


# ------------------------------------------------------------------- feature views
def violin_figure(
    frame: pd.DataFrame,
    *,
    group_column: str,
    value_columns: Sequence[str],
    titles: Sequence[str] | None = None,
    group_order: Sequence[str] | None = None,
    title: str = "",
) -> go.Figure:
    """Violins (with box) of each value column per group, side by side (e.g. raw | denoised).

    Groups get the same colours as the embedding so a cell type reads the same everywhere.
    """
    groups = list(group_order) if group_order is not None else sorted(frame[group_column].unique())
    colors = category_colors(groups)
    names = dict(zip(map(str, groups), _short_labels(groups, 22), strict=True))
    fig = make_subplots(
        rows=1,
        cols=len(value_columns),
        shared_yaxes=False,
        subplot_titles=list(titles or value_columns),
        horizontal_spacing=0.06,
    )
    g = frame[group_column].astype(str).to_numpy()
    for col_i, col in enumerate(value_columns, start=1):
        vals = frame[col].to_numpy()
        for group in groups:
            m = g == str(group)
            if not m.any():
                continue
            fig.add_trace(
                go.Violin(
                    y=vals[m],
                    name=names[str(group)],
                    legendgroup=str(group),
                    showlegend=False,
                    line={"color": colors[str(group)], "width": 1},
                    fillcolor=colors[str(group)],
                    opacity=0.75,
                    box_visible=True,
                    meanline_visible=False,
                    points=False,
                    spanmode="hard",
                    scalemode="width",
                    width=0.8,
                    hoveron="violins+kde",
                ),
                row=1,
                col=col_i,
            )
    fig.update_layout(**BASE_LAYOUT, violingap=0.15)
    fig.update_layout(title={"text": title}, margin={"b": 120})
    fig.update_xaxes(tickangle=-45, tickfont={"size": 10})
    return fig


def dotplot_figure(
    mean_expression: pd.DataFrame, fraction_expressing: pd.DataFrame, *, title: str = ""
) -> go.Figure:
    """Dot plot, groups x features: colour = mean scaled to 0..1 per feature, size = fraction
    of cells expressing (scanpy's ``dotplot``)."""
    if mean_expression.empty:
        return empty_figure("Choose features to compare across cell types")
    features = [str(f) for f in mean_expression.columns]
    groups = [str(g) for g in mean_expression.index]
    mean = mean_expression.to_numpy(dtype=float)
    lo, hi = np.nanmin(mean, axis=0), np.nanmax(mean, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (mean - lo) / span
    frac = fraction_expressing.reindex(
        index=mean_expression.index, columns=mean_expression.columns
    ).to_numpy(dtype=float)
    gi, fi = np.meshgrid(np.arange(len(groups)), np.arange(len(features)), indexing="ij")
    gi, fi = gi.ravel(), fi.ravel()
    texts = [
        f"<b>{groups[a]}</b><br>{features[b]}<br>mean {mean[a, b]:.3g}<br>expressing "
        + (f"{100 * frac[a, b]:.0f}%" if np.isfinite(frac[a, b]) else "unknown (no counts)")
        for a, b in zip(gi, fi, strict=True)
    ]
    fig = go.Figure(
        go.Scatter(
            x=[features[b] for b in fi],
            y=[groups[a] for a in gi],
            mode="markers",
            marker={
                "color": scaled.ravel(),
                "size": 5 + 17 * np.nan_to_num(frac.ravel()),
                "colorscale": "Reds",
                "cmin": 0,
                "cmax": 1,
                "showscale": True,
                "colorbar": {"title": {"text": "scaled mean", "side": "top"}, "thickness": 12},
                "line": {"width": 0.5, "color": "#555"},
            },
            text=texts,
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title},
        xaxis={"tickangle": -45, "showgrid": True, "automargin": True},
        yaxis={"autorange": "reversed", "showgrid": True, "automargin": True},
    )
    return fig


# ------------------------------------------------------------------------------- DE
def volcano_figure(
    de: pd.DataFrame,
    *,
    lfc_column: str = "lfc_mean",
    score_column: str = "bayes_factor",
    de_column: str = "is_de",
    key_column: str = "key",
    label_column: str = "feature",
    highlight: str | None = None,
    title: str = "",
    n_labels: int = 8,
) -> go.Figure:
    """Volcano plot: LFC vs log Bayes factor, DE features in red, proteins as diamonds.

    ``de`` is a display table (``views.de.de_display_table``: one row per feature, boolean
    ``is_de``); a table without ``de_column`` is refused rather than drawn all grey. The
    ``n_labels`` strongest up-regulated features are labelled, each label placed where it
    overlaps no other (:func:`label_boxes`). ``customdata`` carries each point's key
    (``"gene:CD3E"``) so a click can recolour the embedding; ``highlight`` (a key) is ringed.
    """
    if de.empty:
        return empty_figure("No differential expression results")
    if de_column not in de:
        msg = f"volcano: the DE table has no {de_column!r} column (columns: {list(de.columns)})"
        raise KeyError(msg)
    is_de = de[de_column].to_numpy(dtype=bool)
    modality = (
        de["modality"].astype(str).to_numpy() if "modality" in de else np.full(len(de), "rna")
    )
    keys = de[key_column].astype(str).to_numpy()
    names = de[label_column].astype(str).to_numpy()
    lfc = de[lfc_column].to_numpy(dtype=float)
    score = de[score_column].to_numpy(dtype=float)
    fig = go.Figure()
    for mod, symbol, size in (("rna", "circle", 6), ("protein", "diamond", 11)):
        for flag, color, label in ((False, MUTED, "not DE"), (True, HIGHLIGHT, "DE")):
            sel = (modality == mod) & (is_de == flag)
            if not sel.any():
                continue
            fig.add_trace(
                go.Scattergl(
                    x=lfc[sel],
                    y=score[sel],
                    mode="markers",
                    name=f"{'gene' if mod == 'rna' else 'protein'} · {label} ({int(sel.sum()):,})",
                    meta={"modality": mod, "de": flag},
                    marker={
                        "color": color,
                        "symbol": symbol,
                        "size": size,
                        "line": {"width": 0.5, "color": "#fff"},
                    },
                    customdata=keys[sel],
                    text=names[sel],
                    hovertemplate="<b>%{text}</b><br>LFC %{x:.2f}<br>log BF %{y:.2f}"
                    "<extra></extra>",
                )
            )
    x_range, y_range = _padded_range(lfc), _padded_range(score)
    up = np.flatnonzero((np.sign(lfc) * score > 0) & (lfc > 0))  # up-regulated, BF > 1
    top = up[np.argsort(-score[up], kind="stable")][: max(n_labels, 0)]
    px = data_to_px(lfc[top], score[top], x_range, y_range, VOLCANO_PLOT_PX)
    annotations = [
        {
            "x": float(lfc[i]),
            "y": float(score[i]),
            "text": str(names[i]),
            "showarrow": True,
            "arrowhead": 0,
            "arrowwidth": 0.8,
            "arrowcolor": "#8a94a3",
            "ax": ax,
            "ay": ay,
            "font": {"size": 10},
            "bgcolor": "rgba(255,255,255,0.8)",
        }
        for i, (ax, ay, *_box) in zip(top, label_boxes(px, names[top]), strict=True)
    ]
    if highlight is not None and highlight in set(keys):
        i = int(np.flatnonzero(keys == highlight)[0])
        fig.add_trace(
            go.Scatter(
                x=[float(lfc[i])],
                y=[float(score[i])],
                mode="markers",
                name="selected",
                marker={
                    "size": 18,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 2.5, "color": "#111"},
                },
                hoverinfo="skip",
            )
        )
        annotations.append(
            {
                "x": float(lfc[i]),
                "y": float(score[i]),
                "text": f"<b>{names[i]}</b>",
                "showarrow": True,
                "arrowhead": 0,
                "ax": 30,
                "ay": -30,
            }
        )
    fig.update_layout(**BASE_LAYOUT, clickmode="event", hovermode="closest")
    fig.update_layout(
        title={"text": title},
        xaxis={"title": {"text": "log fold change (mean)"}, "range": x_range},
        yaxis={"title": {"text": "log Bayes factor"}, "range": y_range},
        annotations=annotations,
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
    )
    return fig


# -------------------------------------------------------------------------- metrics
def cv_scatter_figure(
    observed: np.ndarray | Sequence[float],
    generated: np.ndarray | Sequence[float],
    *,
    feature_names: Sequence[str] | None = None,
    title: str = "",
) -> go.Figure:
    """Observed vs generated (posterior predictive) coefficient of variation per feature,
    with the identity line; points on the line mean the model reproduces the dispersion."""
    r = np.asarray(observed, dtype=float)
    m = np.asarray(generated, dtype=float)
    ok = np.isfinite(m) & np.isfinite(r)
    if not ok.any():
        return empty_figure("No finite CV values")
    hi = float(max(m[ok].max(), r[ok].max())) * 1.05
    names = None if feature_names is None else np.asarray(feature_names, dtype=object)[ok]
    fig = go.Figure(
        [
            go.Scattergl(
                x=r[ok],
                y=m[ok],
                mode="markers",
                marker={"size": 4, "opacity": 0.55, "color": PALETTE[0]},
                text=names,
                hovertemplate="%{text}<br>observed %{x:.3g}<br>generated %{y:.3g}<extra></extra>"
                if names is not None
                else None,
                name="features",
            ),
            go.Scatter(
                x=[0, hi],
                y=[0, hi],
                mode="lines",
                name="y = x",
                line={"dash": "dash", "color": "#888"},
                hoverinfo="skip",
            ),
        ]
    )
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title},
        xaxis_title="observed CV",
        yaxis_title="generated CV",
        showlegend=False,
    )
    return fig


def metric_bars_figure(
    table: pd.DataFrame, *, metrics: Sequence[str], title: str = ""
) -> go.Figure:
    """Grouped bars of DE metrics per cell type (one group of bars per row of ``table``)."""
    present = [m for m in metrics if m in table]
    if table.empty or not present:
        return empty_figure("No DE metrics")
    groups = _short_labels(table.index, 24)
    fig = go.Figure(
        [
            go.Bar(x=groups, y=table[m], name=m, marker_color=PALETTE[i % len(PALETTE)])
            for i, m in enumerate(present)
        ]
    )
    fig.update_layout(**BASE_LAYOUT, barmode="group")
    fig.update_layout(
        title={"text": title},
        xaxis={"tickangle": -45, "automargin": True},
        legend={"orientation": "h", "y": 1.12},
    )
    return fig


def scorecard_figure(
    table: pd.DataFrame, *, groups: Mapping[str, str] | None = None, title: str = ""
) -> go.Figure:
    """Grouped bars of an integration scorecard: one bar per embedding (row of ``table``)
    for every score (column), in [0, 1]; ``groups`` (column → its metric type) labels the
    columns by type under the bars."""
    if table.empty:
        return empty_figure("No scores")
    cols = [str(c) for c in table.columns]
    x: Any = cols
    if groups:
        x = [[groups.get(c, "") for c in cols], cols]
    fig = go.Figure(
        [
            go.Bar(
                x=x,
                y=table.loc[name].to_numpy(dtype=float),
                name=str(name),
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate="%{x}<br>%{y:.3f}<extra>" + str(name) + "</extra>",
            )
            for i, name in enumerate(table.index)
        ]
    )
    fig.update_layout(**BASE_LAYOUT, barmode="group")
    fig.update_layout(
        title={"text": title},
        yaxis={"range": [0, 1.05], "title": {"text": "score (higher is better)"}},
        xaxis={"tickangle": -35, "automargin": True},
        legend={"orientation": "h", "y": 1.12},
    )
    return fig


def training_curve_figure(history: pd.DataFrame, *, title: str = "Training history") -> go.Figure:
    """Train and validation ELBO per epoch (negative ELBO per cell: lower is better)."""
    cols = [c for c in ("elbo_train", "elbo_validation") if c in history]
    if history.empty or not cols:
        return empty_figure("No training history stored with this model")
    x = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
    fig = go.Figure()
    for col, name, color in (
        ("elbo_train", "train", PALETTE[0]),
        ("elbo_validation", "validation", PALETTE[1]),
    ):
        if col in history:
            fig.add_trace(
                go.Scatter(x=x, y=history[col], mode="lines", name=name, line={"color": color})
            )
    values = history[cols].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    yaxis: dict[str, Any] = {"title": "negative ELBO per cell"}
    if finite.size > 10:  # the first epochs dwarf the rest: zoom on the converged part
        yaxis["range"] = [float(finite.min()) * 0.98, float(np.percentile(finite, 90)) * 1.02]
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title}, xaxis_title="epoch", yaxis=yaxis, legend={"orientation": "h"}
    )
    return fig


# ----------------------------------------------------------- gene-protein concordance
def concordance_heatmap_figure(
    z: Sequence[Sequence[float | None]],
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    flags: Sequence[Sequence[str]],
    n_cells: Sequence[int] | None = None,
    title: str = "",
) -> go.Figure:
    """Correlation per (protein-gene pair x cell type), red positive and blue negative on
    −1…1, and a black ring on each flagged (discordant) cell, its flag in the hover."""
    if not rows or not columns:
        return empty_figure("No protein has a gene in this model")
    xs = _short_labels(columns, 24)
    values = np.array([[np.nan if v is None else float(v) for v in row] for row in z])
    sizes = list(n_cells) if n_cells is not None else [None] * len(columns)
    text = [
        [
            f"<b>{rows[i]}</b><br>{columns[j]}"
            + (f" ({sizes[j]:,} cells)" if sizes[j] is not None else "")
            + "<br>r = "
            + ("–" if not np.isfinite(values[i, j]) else f"{values[i, j]:.2f}")
            + (f"<br><b>{flags[i][j]}</b>" if flags[i][j] else "")
            for j in range(len(columns))
        ]
        for i in range(len(rows))
    ]
    heat = go.Heatmap(
        z=[[None if not np.isfinite(v) else float(v) for v in row] for row in values],  # JSON
        x=xs,
        y=list(rows),
        zmin=-1,
        zmax=1,
        colorscale="RdBu",
        reversescale=True,
        text=text,
        hovertemplate="%{text}<extra></extra>",
        colorbar={"title": {"text": "Pearson r", "side": "top"}, "thickness": 12},
        xgap=1,
        ygap=1,
        name="correlation",
    )
    marked = [(i, j) for i in range(len(rows)) for j in range(len(columns)) if flags[i][j]]
    ring = go.Scatter(
        x=[xs[j] for _, j in marked],
        y=[rows[i] for i, _ in marked],
        mode="markers",
        marker={"symbol": "circle-open", "size": 14, "color": "#111", "line": {"width": 2}},
        text=[text[i][j] for i, j in marked],
        hovertemplate="%{text}<extra></extra>",
        name="discordant",
        showlegend=bool(marked),
    )
    fig = go.Figure([heat, ring])
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title},
        xaxis={"tickangle": -45, "automargin": True, "type": "category"},
        yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
    )
    return fig


def concordance_scatter_figure(
    frame: pd.DataFrame,
    *,
    group_order: Sequence[str],
    x_title: str,
    y_title: str,
    title: str = "",
) -> go.Figure:
    """Denoised RNA (x, column ``rna``) against denoised protein (y, column ``protein``) of
    one pair's cells, one trace per cell type (``cell_type``) in the embedding's colours."""
    if frame.empty:
        return empty_figure("No cells")
    colors = category_colors(group_order)
    names = dict(zip(map(str, group_order), _short_labels(group_order, 24), strict=True))
    groups = frame["cell_type"].astype(str).to_numpy()
    traces = []
    for group in group_order:
        m = groups == str(group)
        if not m.any():
            continue
        traces.append(
            go.Scattergl(
                x=frame["rna"].to_numpy()[m],
                y=frame["protein"].to_numpy()[m],
                mode="markers",
                name=names[str(group)],
                marker={"size": 4, "opacity": 0.6, "color": colors[str(group)]},
                hovertemplate=f"{names[str(group)]}<br>RNA %{{x:.2f}}<br>protein %{{y:.2f}}"
                "<extra></extra>",
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend={"itemsizing": "constant", "font": {"size": 11}},
    )
    return fig


def predictive_check_figure(
    centres: Sequence[float] | np.ndarray,
    widths: Sequence[float] | np.ndarray,
    observed: Sequence[float] | np.ndarray,
    predicted: Sequence[float] | np.ndarray,
    *,
    tickvals: Sequence[float],
    ticktext: Sequence[str],
    log_bins: bool = False,
    title: str = "",
) -> go.Figure:
    """Observed counts (bars) vs posterior predictive counts (line) on the same bins:
    cells per bin, bins at ``centres`` with ``widths`` (on ``log1p(count)`` with
    ``log_bins``; the count axis labelled by ``tickvals`` / ``ticktext``)."""
    fig = go.Figure(
        [
            go.Bar(
                x=np.asarray(centres, dtype=float),
                y=np.asarray(observed, dtype=float),
                width=np.asarray(widths, dtype=float),
                name="observed",
                marker_color=PALETTE[0],
                opacity=0.7,
                hovertemplate="observed: %{y:,.0f} cells<extra></extra>",
            ),
            go.Scatter(
                x=np.asarray(centres, dtype=float),
                y=np.asarray(predicted, dtype=float),
                mode="lines+markers",
                name="model (posterior predictive)",
                line={"color": PALETTE[1], "width": 2},
                marker={"size": 5},
                hovertemplate="model: %{y:,.1f} cells<extra></extra>",
            ),
        ]
    )
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        title={"text": title},
        bargap=0.05,
        xaxis={
            "title": {"text": "count (log scale)" if log_bins else "count"},
            "tickvals": list(tickvals),
            "ticktext": list(ticktext),
        },
        yaxis={"title": {"text": "cells"}},
        legend={"x": 0.99, "y": 0.98, "xanchor": "right", "yanchor": "top"},
    )
    return fig


def empty_figure(message: str) -> go.Figure:
    """A blank figure that shows a message (no data yet, or an error)."""
    fig = go.Figure()
    fig.update_layout(**BASE_LAYOUT)
    fig.update_layout(
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "showarrow": False,
                "font": {"size": 14, "color": "#52606d"},
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
            }
        ],
    )
    return fig


def graph_config(filename: str, *, image_format: str = "svg", scale: float = 2.0) -> dict:
    """plotly config for every graph: modebar download as SVG (vector; PNG via the page's
    buttons), no plotly logo, scroll zoom on."""
    return {
        "displaylogo": False,
        "scrollZoom": True,
        "toImageButtonOptions": {"format": image_format, "filename": filename, "scale": scale},
        "modeBarButtonsToRemove": ["autoScale2d"],
    }


# ----------------------------------------------------------------- two-feature blend
#: Where a blend's key sits (paper fractions): a corner right of the cells, which keep
#: :data:`BLEND_CELLS_DOMAIN` of the width.
BLEND_CELLS_DOMAIN = (0.0, 0.74)
BLEND_KEY_DOMAIN = ((0.79, 0.9), (0.62, 1.0))  # B's ticks and title on its right


def blend_marker(codes: np.ndarray | Sequence[int], colors: Sequence[str], *, size: float) -> dict:
    """Marker of a two-feature blend: each cell's code (uint8 typed array) on a step
    colourscale of the blend's ``colors``, so every point gets exactly its colour; no bar
    (the blend's key replaces it)."""
    n = max(len(colors), 1)
    return {
        "size": size,
        "color": typed_array(np.asarray(codes), "u1" if n <= 256 else "i4"),
        "colorscale": discrete_colorscale(colors),
        "cmin": -0.5,
        "cmax": n - 0.5,
        "showscale": False,
    }


def add_blend_key(
    fig: go.Figure,
    *,
    codes: Sequence[Sequence[int]],
    colors: Sequence[str],
    x: Sequence[float],
    y: Sequence[float],
    titles: tuple[str, str],
    x_ticks: tuple[Sequence[float], Sequence[str]],
    y_ticks: tuple[Sequence[float], Sequence[str]],
) -> go.Figure:
    """``fig`` (a cell view) with a blend's two-axis key inset in its top-right corner: the
    grid of ``colors`` (``codes[j][i]``: B step ``j``, A step ``i``, at A values ``x`` and
    B values ``y``) on its own ``xaxis2`` / ``yaxis2``, titled with the two features and
    ticked at their low and high values. The cells' axes shrink to
    :data:`BLEND_CELLS_DOMAIN`; the key is the last trace (patches address ``data[0]``)."""
    n = max(len(colors), 1)
    fig.add_trace(
        go.Heatmap(
            x=list(x),
            y=list(y),
            z=[list(row) for row in codes],
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=discrete_colorscale(colors),
            showscale=False,
            xaxis="x2",
            yaxis="y2",
            name="blend key",
            hovertemplate=f"{titles[0]}: %{{x:.3g}}<br>{titles[1]}: %{{y:.3g}}<extra>key</extra>",
        )
    )
    small = {"size": 10}

    def axis(domain: tuple[float, float], anchor: str, title: str, ticks: Any) -> dict:
        low, high = float(ticks[0][0]), float(ticks[0][-1])
        pad = 0.04 * (high - low)  # so the ticks at the edges are drawn
        return {
            "domain": list(domain),
            "anchor": anchor,
            "title": {"text": title, "font": small, "standoff": 2},
            "tickvals": list(ticks[0]),
            "ticktext": list(ticks[1]),
            "tickfont": small,
            "range": [low - pad, high + pad],
            "fixedrange": True,
            "showgrid": False,
            "zeroline": False,
        }

    (kx, ky) = BLEND_KEY_DOMAIN
    fig.update_layout(
        xaxis={"domain": list(BLEND_CELLS_DOMAIN)},
        xaxis2=axis(kx, "y2", titles[0], x_ticks),
        yaxis2={**axis(ky, "x2", titles[1], y_ticks), "side": "right"},
    )
    return fig
