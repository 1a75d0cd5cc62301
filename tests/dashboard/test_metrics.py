"""Model-card metrics read correctly: the DE metric with fewer than 10 features (top-n at
least 1, no sklearn warnings), Pearson r² beside r with the card's 0.4 advice, the notes
the page shows. Synthetic counts, no model (fast)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.metrics import (
    CV_DISPLAY_ROWS,
    CV_ROWS,
    DE_COLUMNS,
    PEARSON_R2_ROW,
    cv_advice,
    cv_display_table,
    de_metric_table,
    de_top_note,
    n_top_features,
    top_overlap_f1,
)


def _eight_protein_counts(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 groups x 60 cells, 8 proteins; group g is high in protein g. Raw and a sample
    drawn from the same rates."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["A", "B", "C"], 60)
    rates = np.full((180, 8), 20.0)
    for g, name in enumerate("ABC"):
        rates[labels == name, g] = 60.0  # 3-fold: p-values stay far from underflow
    return rng.poisson(rates).astype(np.float32), rng.poisson(rates).astype(np.float32), labels


def test_top_n_is_at_least_one() -> None:
    assert n_top_features(8, clamp=False) == 0  # scvi-tools' int(0.1 * 8)
    assert n_top_features(8) == 1
    assert n_top_features(14) == 1
    assert n_top_features(111) == 11
    assert n_top_features(4000) == 100


def test_de_metric_with_eight_proteins_is_defined_and_silent() -> None:
    raw, sample, labels = _eight_protein_counts()
    names = [f"P{i}" for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old code warned twice per group (sklearn)
        table = de_metric_table(raw, sample, labels, feature_names=names)
    assert list(table.columns) == list(DE_COLUMNS)
    assert list(table.index) == ["A", "B", "C"]
    # each group's top protein is its own in raw and sample: F1 1 (it was 0 with n_top 0)
    assert table["gene_f1"].tolist() == [1.0, 1.0, 1.0]
    # ROC/PR AUC are defined for every group (the old code had NaN and 0: n_top 0, one class)
    assert table[["roc_auc", "pr_auc"]].stack().between(0, 1).all()
    # In A, raw adjusted p < 0.2 marks P0 (up) and P1, P2 (down, the other groups' markers);
    # the sample's signed t-scores rank P0 first and P1, P2 last (scvi-tools' definition),
    # so ROC AUC = 5 / 15 and average precision = (1 + 2/7 + 3/8) / 3.
    assert table.loc["A", "roc_auc"] == pytest.approx(1 / 3)
    assert table.loc["A", "pr_auc"] == pytest.approx((1 + 2 / 7 + 3 / 8) / 3)
    assert (table["lfc_pearson"] > 0.99).all()
    assert table["n_cells"].tolist() == [60, 60, 60]


def test_de_metric_when_most_proteins_differ() -> None:
    """Real 8-protein panels: nearly every protein differs between groups, so the ROC labels
    fall back to the top-n by p-value, which scvi's n_top 0 left all negative (ROC AUC
    undefined, an sklearn warning per group); with n_top 1 it is the most significant."""
    rng = np.random.default_rng(2)
    labels = np.repeat(["A", "B", "C", "D"], 50)
    level = {g: rng.choice([10.0, 30.0, 90.0], size=8) for g in "ABCD"}
    rates = np.stack([level[g] for g in labels])
    raw, sample = (rng.poisson(rates).astype(np.float32) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = de_metric_table(raw, sample, labels, feature_names=[f"P{i}" for i in range(8)])
    assert table[["gene_f1", "roc_auc", "pr_auc"]].notna().all().all()
    assert table[["roc_auc", "pr_auc"]].stack().between(0, 1).all()
    assert set(table["gene_f1"]) <= {0.0, 1.0}  # one top protein: it agrees or not


def test_de_metric_undefined_auc_is_nan_without_warning() -> None:
    raw, sample, labels = _eight_protein_counts()
    one = raw[:, :1]  # one feature: every label the same class, ROC undefined
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = de_metric_table(one, sample[:, :1], labels, feature_names=["P0"])
    assert table["roc_auc"].isna().all() and table["pr_auc"].isna().all()
    assert table["lfc_pearson"].isna().all()  # one value: no correlation
    assert table["gene_f1"].tolist() == [1.0, 1.0, 1.0]


def test_top_overlap_f1_is_sklearns_binary_f1() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    names = np.array([f"g{i}" for i in range(50)])
    for _ in range(20):
        t, p = rng.choice(names, 7, replace=False), rng.choice(names, 7, replace=False)
        expected = f1_score(np.isin(names, t), np.isin(names, p))
        assert top_overlap_f1(t, p) == pytest.approx(expected)


def _cv(pearson: list[float]) -> pd.DataFrame:
    cols = ["Training Value", "Validation Value"][: len(pearson)]
    frame = pd.DataFrame(
        {c: [0.5, r, 0.7, 0.3] for c, r in zip(cols, pearson, strict=True)}, index=list(CV_ROWS)
    )
    frame.index.name = "Metric"
    return frame


def test_cv_display_table_shows_pearson_r_squared() -> None:
    shown = cv_display_table(_cv([0.8, 0.6]))
    assert list(shown.index) == list(CV_DISPLAY_ROWS)
    assert list(shown.index[1:3]) == ["Pearson Correlation", PEARSON_R2_ROW]
    assert shown.loc[PEARSON_R2_ROW].tolist() == pytest.approx([0.64, 0.36])
    assert shown.loc["R² (R-Squared)"].tolist() == [0.3, 0.3]  # the card's rows unchanged


def test_cv_advice_is_on_r_squared() -> None:
    # r = 0.6 looks fine against 0.4, but r² = 0.36 is below the card's threshold
    low = cv_advice(_cv([0.8, 0.6]))
    assert "below 0.4" in low and "Validation Value 0.36" in low
    assert "Training Value" not in low
    assert cv_advice(_cv([0.7])) == "Pearson r² ≥ 0.4 in every column: within the card's advice."
    assert "undefined" in cv_advice(_cv([float("nan")]))


def test_de_top_note_says_what_top_n_is() -> None:
    eight = de_top_note(8, n_top_features(8), "proteins")
    assert eight.startswith("Top 1 of 8 proteins per group")
    assert "int(0.1 × 8) = 0" in eight and "F1 is 0 or 1" in eight
    assert de_top_note(14, 1, "proteins").startswith(
        "Top 1 of 14 proteins per group (10% of 14, rounded down, as scvi-tools)"
    )
    assert de_top_note(4000, 100, "genes") == "Top 100 of 4,000 genes per group (scvi-tools' 100)."
