"""Explore's "Two-feature blend": the cells coloured by two genes or proteins at once.

Each feature is scaled to [0, 1] between its 1st and 99th percentile (clipped, so a few
extreme cells do not wash the rest out) and cut into :data:`LEVELS` equal steps, as
Seurat's ``FeaturePlot(blend = TRUE)`` does (it uses 10). A cell's colour is the step pair's
entry of a bivariate map, the bilinear mix of four corners:

* neither high: light grey (:data:`LOW`),
* feature A high only: red (:data:`HIGH_A`),
* feature B high only: blue (:data:`HIGH_B`),
* both high: dark purple (:data:`HIGH_BOTH`).

Red and blue stay apart for the common red-green colour-vision deficiencies (Seurat's
default red/green corners do not), and both-high is the darkest corner, so "both" reads as
"more".
The key (:func:`blend_key`) is the same ``LEVELS x LEVELS`` grid of colours, feature A along
x and B along y, with ticks at each feature's 1st and 99th percentile values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dashboard.backend.errors import InvalidSelection
from dashboard.views.colours import FEATURE_KINDS, ColorSpec, feature_values
from dashboard.views.features import feature_catalog

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: Steps per feature (Seurat's blend: 10).
LEVELS = 10
#: Percentiles between which each feature is scaled to [0, 1].
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0
#: The four corners of the bivariate map (RGB).
LOW = (217, 217, 217)
HIGH_A = (215, 25, 28)
HIGH_B = (33, 102, 208)
HIGH_BOTH = (63, 0, 95)


@dataclass(frozen=True)
class Scaled:
    """One feature scaled for the blend: ``unit`` in [0, 1] per cell, between ``low`` and
    ``high`` (its 1st and 99th percentile values)."""

    unit: np.ndarray
    low: float
    high: float


def scale_unit(
    values: np.ndarray, *, low_q: float = LOW_PERCENTILE, high_q: float = HIGH_PERCENTILE
) -> Scaled:
    """``values`` mapped to [0, 1] between their ``low_q`` and ``high_q`` percentiles
    (clipped; non-finite values count as low; a constant feature is low everywhere)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return Scaled(np.zeros(v.shape, dtype=np.float32), 0.0, 0.0)
    low, high = (float(q) for q in np.percentile(v[finite], [low_q, high_q]))
    if high <= low:
        return Scaled(np.zeros(v.shape, dtype=np.float32), low, high)
    unit = np.clip((np.where(finite, v, low) - low) / (high - low), 0.0, 1.0)
    return Scaled(unit.astype(np.float32), low, high)


def steps(unit: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """The step ``0..levels-1`` of each value in [0, 1] (1 falls in the top step)."""
    return np.minimum(np.floor(np.asarray(unit) * levels), levels - 1).astype(np.int64)


def mix(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """RGB (uint8, last axis 3) of the map at A = ``a``, B = ``b`` in [0, 1]: the bilinear
    mix of :data:`LOW`, :data:`HIGH_A`, :data:`HIGH_B` and :data:`HIGH_BOTH`."""
    a = np.asarray(a, dtype=np.float64)[..., None]
    b = np.asarray(b, dtype=np.float64)[..., None]
    corners = [np.asarray(c, dtype=np.float64) for c in (LOW, HIGH_A, HIGH_B, HIGH_BOTH)]
    rgb = (
        (1 - a) * (1 - b) * corners[0]
        + a * (1 - b) * corners[1]
        + (1 - a) * b * corners[2]
        + a * b * corners[3]
    )
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def grid_colors(levels: int = LEVELS) -> list[str]:
    """The colour of every step pair as ``#rrggbb``: code ``i + levels * j`` is A step ``i``,
    B step ``j`` (steps drawn at ``k / (levels - 1)``, so the top steps are the corners)."""
    at = np.arange(levels) / max(levels - 1, 1)
    a, b = np.meshgrid(at, at)  # [j, i]: B step j, A step i
    rgb = mix(a, b).reshape(-1, 3)
    return [f"#{r:02x}{g:02x}{bl:02x}" for r, g, bl in rgb.tolist()]


def blend_codes(a: Scaled, b: Scaled, levels: int = LEVELS) -> np.ndarray:
    """Each cell's code into :func:`grid_colors` (uint8 for ``levels`` up to 16)."""
    code = steps(a.unit, levels) + levels * steps(b.unit, levels)
    return code.astype(np.uint8 if levels <= 16 else np.int32)


@dataclass(frozen=True)
class BlendData:
    """A two-feature blend: per cell its ``codes`` into ``colors`` and both features'
    values (``values_a``, ``values_b``); each feature's scaling and display ``names`` (for
    the key's axis titles and the hover)."""

    codes: np.ndarray
    colors: list[str]
    values_a: np.ndarray
    values_b: np.ndarray
    scaled_a: Scaled
    scaled_b: Scaled
    names: tuple[str, str]
    levels: int = LEVELS


def blend_values(
    values_a: np.ndarray, values_b: np.ndarray, names: tuple[str, str], levels: int = LEVELS
) -> BlendData:
    """The blend of two features' per-cell values (scaled over every cell given)."""
    sa, sb = scale_unit(values_a), scale_unit(values_b)
    return BlendData(
        codes=blend_codes(sa, sb, levels),
        colors=grid_colors(levels),
        values_a=np.asarray(values_a, dtype=np.float32),
        values_b=np.asarray(values_b, dtype=np.float32),
        scaled_a=sa,
        scaled_b=sb,
        names=names,
        levels=levels,
    )


def check_feature(service: AnalysisService, pair: Pair, feature: object) -> str:
    """``feature`` if it is a gene or protein of the pair (``"gene:CD3E"``), else
    :class:`InvalidSelection` in one line (dropdown values can be forged)."""
    value = str(feature or "")[:200]
    kind = value.split(":", 1)[0]
    if kind in FEATURE_KINDS and ":" in value and feature_catalog(service, pair).has(value):
        return value
    msg = f"the blend's feature {value[:40]!r} is not a gene or protein of this dataset"
    raise InvalidSelection(msg)


def blend_data(
    service: AnalysisService, pair: Pair, a: object, b: object, layer: str | None
) -> BlendData:
    """The blend of features ``a`` and ``b`` (genes or proteins) in ``layer`` (raw or
    denoised; the default layer where that one does not apply) over every cell; the
    percentiles are those of all cells, so a subsampled view shows the same scale."""
    fa, fb = check_feature(service, pair, a), check_feature(service, pair, b)
    catalog = feature_catalog(service, pair)
    spec_a = ColorSpec.from_state({"feature": fa, "layer": layer or "denoised"})
    spec_b = ColorSpec.from_state({"feature": fb, "layer": layer or "denoised"})
    return blend_values(
        feature_values(service, pair, spec_a),
        feature_values(service, pair, spec_b),
        (catalog.shown_name(fa), catalog.shown_name(fb)),
    )


@dataclass(frozen=True)
class BlendKey:
    """The two-axis key of a blend: a ``levels x levels`` grid of ``codes`` (``[j][i]``: B
    step ``j``, A step ``i``) at step centres ``x`` (A's values) and ``y`` (B's), axis
    ``titles`` and ticks at each feature's low and high values."""

    codes: list[list[int]]
    colors: list[str]
    x: list[float]
    y: list[float]
    titles: tuple[str, str]
    x_ticks: tuple[list[float], list[str]]
    y_ticks: tuple[list[float], list[str]]


def _centres(s: Scaled, levels: int) -> list[float]:
    span = s.high - s.low if s.high > s.low else 1.0
    return [s.low + span * (k + 0.5) / levels for k in range(levels)]


def _ticks(s: Scaled) -> tuple[list[float], list[str]]:
    high = s.high if s.high > s.low else s.low + 1.0
    return [s.low, high], [f"{s.low:.3g}", f"{s.high:.3g}"]


def blend_key(blend: BlendData) -> BlendKey:
    """The key of ``blend``: x = feature A, y = feature B, ticks at their 1st and 99th
    percentile values (the grid's edges)."""
    n = blend.levels
    return BlendKey(
        codes=[[i + n * j for i in range(n)] for j in range(n)],
        colors=list(blend.colors),
        x=_centres(blend.scaled_a, n),
        y=_centres(blend.scaled_b, n),
        titles=blend.names,
        x_ticks=_ticks(blend.scaled_a),
        y_ticks=_ticks(blend.scaled_b),
    )
