"""The overview subsample and region selection against brute-force references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.sampling import (
    allocate,
    points_in_box,
    points_in_polygon,
    region_mask,
    stratified_subsample,
)


def _groups(seed: int = 0) -> np.ndarray:
    """Imbalanced labels: two large types, a mid one and two tiny ones, shuffled."""
    sizes = {"T": 6000, "mono": 3000, "B": 800, "DC": 30, "plt": 7}
    labels = np.concatenate([[k] * v for k, v in sizes.items()])
    return np.random.default_rng(seed).permutation(labels)


# ---------------------------------------------------------------------------- subsample
def test_subsample_has_exact_size_every_type_and_is_seeded() -> None:
    groups = _groups()
    idx = stratified_subsample(groups, 1000, seed=3)
    assert len(idx) == 1000
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    counts = dict(zip(*np.unique(groups[idx], return_counts=True), strict=True))
    assert set(counts) == set(groups)
    assert counts["plt"] == 7  # smaller than the minimum: every cell kept
    assert counts["DC"] == 30
    assert counts["B"] >= 50
    # the large types keep their proportion (density preserved among them)
    assert counts["T"] / counts["mono"] == pytest.approx(2.0, rel=0.05)
    np.testing.assert_array_equal(idx, stratified_subsample(groups, 1000, seed=3))
    assert not np.array_equal(idx, stratified_subsample(groups, 1000, seed=4))


@pytest.mark.parametrize(
    "categories",
    [
        ["T", "mono", "B", "DC", "plt"],  # not in sorted order
        ["plt", "mono", "DC", "T", "B", "unused"],  # a category no cell has
    ],
)
def test_subsample_of_a_categorical_is_that_of_its_strings(categories: list[str]) -> None:
    """A categorical is read through its codes (ranked by name), not a million strings:
    the same groups, in the same order, so the same cells."""
    groups = _groups(1)
    cat = pd.Series(pd.Categorical(groups, categories=categories))
    for seed in (0, 5):
        np.testing.assert_array_equal(
            stratified_subsample(cat, 1000, seed=seed),
            stratified_subsample(groups.astype(object), 1000, seed=seed),
        )
    with_missing = cat.cat.remove_categories(["plt"])  # its cells become missing
    np.testing.assert_array_equal(
        stratified_subsample(with_missing, 1000, seed=2),
        stratified_subsample(with_missing.astype(str).to_numpy(), 1000, seed=2),
    )


def test_subsample_keeps_all_cells_at_or_below_the_threshold() -> None:
    groups = _groups()
    everything = np.arange(len(groups))
    np.testing.assert_array_equal(stratified_subsample(groups, len(groups)), everything)
    np.testing.assert_array_equal(stratified_subsample(groups, 10**6), np.arange(len(groups)))
    with pytest.raises(ValueError, match="positive"):
        stratified_subsample(groups, 0)


def test_allocation_sums_to_budget_and_respects_group_sizes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 5000, size=rng.integers(1, 40))
        k = int(rng.integers(1, counts.sum() + 1))
        q = allocate(counts, k)
        assert q.sum() == min(k, counts.sum())
        assert np.all(q <= counts) and np.all(q >= 0)
        if k >= 50 * len(counts):
            assert np.all(q >= np.minimum(counts, 50))


# ------------------------------------------------------------------------------ regions
def _brute_polygon(px: float, py: float, xs: list, ys: list) -> bool:
    """Exact (rational) even-odd test, boundary inside: the reference."""
    p = (Fraction(px), Fraction(py))
    n = len(xs)
    inside = False
    for i in range(n):
        a = (Fraction(xs[i]), Fraction(ys[i]))
        b = (Fraction(xs[(i + 1) % n]), Fraction(ys[(i + 1) % n]))
        cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
        if (
            cross == 0
            and min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])
        ):
            return True
        if (a[1] > p[1]) != (b[1] > p[1]):
            x_at = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if p[0] < x_at:
                inside = not inside
    return inside


# a concave "C" with horizontal and vertical edges and a slanted one
CONCAVE_X = [0, 10, 10, 3, 3, 10, 10, 0, -2]
CONCAVE_Y = [0, 0, 2, 2, 8, 8, 10, 10, 5]


def _points(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random points plus every integer grid point (vertices and points on edges)."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-3, 12), np.arange(-1, 12))
    x = np.concatenate([rng.uniform(-3, 12, 1500), gx.ravel(), [1.0, -1.0, 6.5]])
    y = np.concatenate([rng.uniform(-1, 12, 1500), gy.ravel(), [7.5, 5.0, 2.0]])
    return x, y


def test_polygon_matches_brute_force_on_a_concave_lasso_and_its_boundary() -> None:
    x, y = _points()
    got = points_in_polygon(x, y, CONCAVE_X, CONCAVE_Y)
    want = [_brute_polygon(a, b, CONCAVE_X, CONCAVE_Y) for a, b in zip(x, y, strict=True)]
    np.testing.assert_array_equal(got, want)
    # the notch of the C is outside, its arms inside, vertices and edge points inside
    inside = dict(zip(zip(x.tolist(), y.tolist(), strict=True), got.tolist(), strict=True))
    assert inside[(6.0, 5.0)] is False  # in the notch
    assert inside[(1.0, 5.0)] is True
    assert inside[(3.0, 5.0)] is True  # on the notch's vertical edge
    assert inside[(6.0, 2.0)] is True  # on the notch's horizontal edge
    assert inside[(10.0, 10.0)] is True  # a vertex
    assert inside[(-1.0, 5.0)] is True  # on the slanted edge
    assert inside[(11.0, 5.0)] is False


def test_polygon_matches_brute_force_on_random_polygons() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 800))
    for _ in range(5):
        k = int(rng.integers(3, 25))
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(0.3, 2.0, k)  # star-shaped, usually concave
        px, py = (radius * np.cos(angle)).tolist(), (radius * np.sin(angle)).tolist()
        got = points_in_polygon(x, y, px, py)
        want = [_brute_polygon(a, b, px, py) for a, b in zip(x, y, strict=True)]
        np.testing.assert_array_equal(got, want)


def test_polygon_edge_cases() -> None:
    x = np.array([0.5, np.nan, 0.5])
    y = np.array([0.5, 0.5, np.nan])
    np.testing.assert_array_equal(points_in_polygon(x, y, [0, 1, 1, 0], [0, 0, 1, 1]), [1, 0, 0])
    assert not points_in_polygon(x, y, [0, 1], [0, 1]).any()  # fewer than 3 vertices
    assert points_in_polygon(np.array([]), np.array([]), [0, 1, 1], [0, 0, 1]).shape == (0,)


def test_box_includes_its_edges_and_accepts_reversed_bounds() -> None:
    x, y = _points()
    got = points_in_box(x, y, [4, -1], [7, 2])
    want = (x >= -1) & (x <= 4) & (y >= 2) & (y <= 7)
    np.testing.assert_array_equal(got, want)
    assert got[(x == 4) & (y == 7)].all()
    np.testing.assert_array_equal(region_mask(x, y, {"box": [[-1, 4], [2, 7]]}), want)
    lasso = region_mask(x, y, {"lasso": [CONCAVE_X, CONCAVE_Y]})
    np.testing.assert_array_equal(lasso, points_in_polygon(x, y, CONCAVE_X, CONCAVE_Y))
    with pytest.raises(ValueError, match="lasso"):
        region_mask(x, y, {})


def test_polygon_is_fast_on_many_points() -> None:
    import time

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 500_000))
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    r = 1 + 0.4 * np.sin(5 * t)  # a wavy, concave lasso of 400 vertices
    t0 = time.perf_counter()
    got = points_in_polygon(x, y, r * np.cos(t), r * np.sin(t))
    assert time.perf_counter() - t0 < 2.0
    assert 0.2 < got.mean() < 0.6
