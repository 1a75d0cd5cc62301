"""Unit tests of the change-mode DE math (spec §7.7) on synthetic, hand-checkable arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from model.differential import (
    INTERVAL_COLUMNS,
    PROTEIN_SUFFIX,
    STAT_COLUMNS,
    ChangeMode,
    bayes_factor,
    change_mode_from_scales,
    change_mode_statistics,
    fdr_de_prediction,
    occurrence_index,
    raw_counts_properties,
)


def scvi_reference(s1: np.ndarray, s2: np.ndarray, *, delta: float, pc: float) -> dict:
    """scvi-tools' get_bayes_factors(mode="change", test_mode="three"), written out."""
    lfc = np.log2(s1 + pc) - np.log2(s2 + pc)
    p_plus = np.mean(lfc >= delta, 0)
    p_minus = np.mean(lfc < -delta, 0)
    proba = np.maximum(p_plus, p_minus)
    small = np.log2(s1 + 1e-3 * pc) - np.log2(s2 + 1e-3 * pc)
    return {
        "proba_de": proba,
        "bayes_factor": np.log(proba + 1e-8) - np.log(1 - proba + 1e-8),
        "scale1": s1.mean(0),
        "scale2": s2.mean(0),
        "lfc_mean": small.mean(0),
        "lfc_median": np.median(small, 0),
        "lfc_std": small.std(0),
        "lfc_min": small.min(0),
        "lfc_max": small.max(0),
    }


def test_fdr_de_prediction_hand_case() -> None:
    # sorted: 0.99, 0.97, 0.90, 0.50 -> cumFDR 0.01, 0.02, 0.0467, 0.16 -> first three
    flags = fdr_de_prediction(np.array([0.99, 0.5, 0.97, 0.9]), fdr=0.05)
    assert flags.tolist() == [True, False, True, True]
    assert fdr_de_prediction(np.array([0.99, 0.5, 0.97, 0.9]), fdr=0.015).tolist() == [
        True,
        False,
        False,
        False,
    ]
    assert not fdr_de_prediction(np.array([0.5, 0.6]), fdr=0.05).any()


def test_bayes_factor_formula() -> None:
    p = np.array([0.0, 0.5, 0.9, 1.0])
    expected = np.log(p + 1e-8) - np.log(1 - p + 1e-8)
    np.testing.assert_allclose(bayes_factor(p), expected)
    assert bayes_factor(np.array([0.5]))[0] == pytest.approx(0.0)
    assert bayes_factor(np.array([1.0]))[0] == pytest.approx(math.log(1 / 1e-8), rel=1e-6)


def test_change_mode_hand_computed_features() -> None:
    n = 10
    s1 = np.empty((n, 4), dtype=np.float32)
    s2 = np.empty((n, 4), dtype=np.float32)
    # A: always 2x up -> lfc = log2(2.1e-4 / 1.1e-4) = 0.933 >= 0.25 in every pair
    s1[:, 0], s2[:, 0] = 2e-4, 1e-4
    # B: identical -> lfc 0 -> never outside [-delta, delta)
    s1[:, 1], s2[:, 1] = 3e-4, 3e-4
    # C: half the pairs 4x up, half 4x down -> P+ = P- = 0.5
    s1[:, 2] = np.where(np.arange(n) < 5, 4e-3, 1e-3)
    s2[:, 2] = np.where(np.arange(n) < 5, 1e-3, 4e-3)
    # D: 0 vs 1e-6: within pc=1e-5 the test sees |lfc| = 0.1375 < delta, but the reported
    # lfc uses pc = 1e-8: log2(1e-8 / 1.01e-6) = -6.658
    s1[:, 3], s2[:, 3] = 0.0, 1e-6
    table = change_mode_from_scales(s1, s2, delta=0.25, pseudocounts=1e-5)
    assert list(table.columns) == [*STAT_COLUMNS, *INTERVAL_COLUMNS, "is_de_fdr_0.05"]
    assert table["proba_de"].tolist() == [1.0, 0.0, 0.5, 0.0]
    np.testing.assert_allclose(
        table["bayes_factor"],
        [math.log(1 + 1e-8) - math.log(1e-8), -18.420680, 0.0, -18.420680],
        rtol=1e-6,
    )
    np.testing.assert_allclose(table.loc[0, "lfc_mean"], math.log2(2.0001e-4 / 1.0001e-4), 1e-5)
    np.testing.assert_allclose(table.loc[3, "lfc_mean"], math.log2(1e-8 / 1.01e-6), rtol=1e-4)
    assert table.loc[2, "lfc_median"] == pytest.approx(0.0, abs=1e-6)  # mean of two middles
    assert table["is_de_fdr_0.05"].tolist() == [True, False, False, False]
    assert table["proba_not_de"].tolist() == [0.0, 1.0, 0.5, 1.0]
    two = change_mode_from_scales(s1, s2, delta=0.25, pseudocounts=1e-5, test_mode="two")
    assert two.loc[2, "proba_de"] == 1.0  # P+ + P- in the "two" test mode
    # the 95% credible interval: a constant LFC is its own interval; C spans -2..+2
    a = math.log2(2.0001e-4 / 1.0001e-4)
    assert table.loc[0, "lfc_lower"] == pytest.approx(a, rel=1e-5)
    assert table.loc[0, "lfc_upper"] == pytest.approx(a, rel=1e-5)
    c = math.log2((4e-3 + 1e-8) / (1e-3 + 1e-8))
    assert table.loc[2, "lfc_lower"] == pytest.approx(-c, rel=1e-5)
    assert table.loc[2, "lfc_upper"] == pytest.approx(c, rel=1e-5)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_credible_interval_is_numpys_quantiles_of_the_paired_lfc(level: float) -> None:
    rng = np.random.default_rng(3)
    s1 = rng.dirichlet(np.ones(23) * 0.4, size=301).astype(np.float32)
    s2 = rng.dirichlet(np.ones(23) * 0.4, size=301).astype(np.float32)
    lfc = np.log2(s1.astype(np.float64) + 1e-8) - np.log2(s2.astype(np.float64) + 1e-8)
    stats = change_mode_statistics(
        torch.as_tensor(lfc), torch.as_tensor(lfc), credible_level=level
    )
    tail = (1 - level) / 2
    np.testing.assert_allclose(stats["lfc_lower"], np.quantile(lfc, tail, axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats["lfc_upper"], np.quantile(lfc, 1 - tail, axis=0), rtol=1e-10)
    assert (stats["lfc_lower"] <= stats["lfc_median"]).all()
    assert (stats["lfc_median"] <= stats["lfc_upper"]).all()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 40, 401, 5000])
@pytest.mark.parametrize("qs", [(0.025, 0.975), (0.05, 0.95), (0.25, 0.75), (0.0, 1.0), (0.5,)])
def test_quantiles_from_the_tails_equal_a_full_sorts(n: int, qs: tuple[float, ...]) -> None:
    """The partial sort (``topk`` from either end) finds exactly the order statistics a full
    sort does, ties included, so the interval is bit for bit that of sorting every row."""
    from model.differential import _quantiles_last

    rng = np.random.default_rng(n)
    x = torch.as_tensor(rng.normal(size=(7, n)).astype(np.float32))
    x[:3] = torch.as_tensor(rng.integers(0, 3, size=(3, n)).astype(np.float32))  # ties
    ordered = torch.sort(x, dim=-1).values
    for q, got in zip(qs, _quantiles_last(x, qs), strict=True):
        pos = q * (n - 1)
        lo = int(np.floor(pos))
        hi, w = min(lo + 1, n - 1), pos - lo
        want = ordered[:, lo] * (1 - w) + ordered[:, hi] * w
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        np.testing.assert_allclose(got.numpy(), np.quantile(x.numpy(), q, axis=-1), rtol=1e-6)


def test_change_mode_options_are_checked() -> None:
    for bad in ({"credible_level": 1.0}, {"fdr_target": 1.5}, {"delta": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ChangeMode(**bad)


def test_change_mode_matches_scvi_formula_on_random_scales() -> None:
    rng = np.random.default_rng(0)
    g = 37
    s1 = rng.dirichlet(np.ones(g) * 0.3, size=500).astype(np.float32)  # even n: median of 2
    s2 = rng.dirichlet(np.ones(g) * 0.3, size=500).astype(np.float32)
    s1[:, :5] *= 3
    got = change_mode_from_scales(s1, s2, delta=0.25, pseudocounts=1e-5)
    ref = scvi_reference(s1, s2, delta=0.25, pc=1e-5)
    np.testing.assert_array_equal(got["proba_de"].to_numpy(), ref["proba_de"])
    np.testing.assert_allclose(got["bayes_factor"], ref["bayes_factor"], rtol=1e-12)
    for key in ("scale1", "scale2", "lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max"):
        np.testing.assert_allclose(got[key], ref[key], rtol=2e-5, atol=2e-5, err_msg=key)
    flags = fdr_de_prediction(ref["proba_de"], 0.05)
    np.testing.assert_array_equal(got["is_de_fdr_0.05"].to_numpy(), flags)


def test_change_mode_odd_number_of_pairs_median() -> None:
    rng = np.random.default_rng(1)
    s1 = rng.random((7, 3)).astype(np.float32)
    s2 = rng.random((7, 3)).astype(np.float32)
    got = change_mode_from_scales(s1, s2)
    ref = scvi_reference(s1, s2, delta=0.25, pc=1e-5)
    np.testing.assert_allclose(got["lfc_median"], ref["lfc_median"], rtol=1e-6)


def test_occurrence_index_counts_repeats() -> None:
    draws = np.array([5, 3, 5, 5, 3, 9])
    assert occurrence_index(draws).tolist() == [0, 0, 1, 2, 1, 0]
    assert occurrence_index(np.array([], dtype=np.int64)).tolist() == []


def test_raw_counts_properties_hand_computed() -> None:
    rna = sp.csr_matrix(np.array([[1, 0, 3], [0, 0, 4], [2, 2, 0], [0, 5, 5]], dtype=np.float32))
    protein = np.array([[1, 0], [3, 0], [0, 2], [4, 4]], dtype=np.float32)
    props = raw_counts_properties(rna, protein, np.array([0, 1]), np.array([2, 3]))
    np.testing.assert_allclose(props["raw_mean1"], [0.5, 0.0, 3.5, 2.0, 0.0])
    np.testing.assert_allclose(props["raw_mean2"], [1.0, 3.5, 2.5, 2.0, 3.0])
    np.testing.assert_allclose(props["non_zeros_proportion1"], [0.5, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(props["non_zeros_proportion2"], [0.5, 1.0, 0.5, 0.5, 1.0])
    # counts * 1e4 / cell total: cell totals 4, 4, 4, 10
    np.testing.assert_allclose(
        props["raw_normalized_mean1"][:3], [1250.0, 0.0, (7500 + 10000) / 2]
    )
    np.testing.assert_allclose(props["raw_normalized_mean2"][:3], [2500.0, 5000.0, 2500.0])
    assert np.isnan(props["raw_normalized_mean1"][3:]).all()  # NaN for proteins
    only_rna = raw_counts_properties(rna, protein, np.array([0]), np.array([1]), use_field=["rna"])
    assert only_rna["raw_mean1"].shape == (3,)


def test_change_mode_accepts_tensors_and_protein_suffix_constant() -> None:
    s = torch.full((4, 2), 1e-3)
    table = change_mode_from_scales(s, s * 4)
    assert (table["lfc_mean"] < -1.9).all()
    assert PROTEIN_SUFFIX == "_protein"
