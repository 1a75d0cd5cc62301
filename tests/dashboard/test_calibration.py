"""Posterior predictive calibration (scvi-tools' ``calibration_error``) and the model-card
tables on both protein scales.

Closed forms and a simulated case where the truth is known; parity with the numbers
scvi-tools 1.4.2 computes on the seed-like MuData model (``expected_card_metrics.json``,
written by ``bench/scvi_reference_outputs.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dashboard.backend import metrics as M
from model.protein_scale import EFFICIENCY_FREE, MEASURED
from model.read_options import ReadOptions
from model.totalvi import TotalVI

SEEDLIKE = "scvi_tools_1.4.2_mudata_seedlike_800"
WIDTHS = [0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.65]


def test_central_intervals_pair_scvi_tools_quantiles() -> None:
    pairs = M.central_intervals()
    assert len(pairs) == 7
    widths = [M.CALIBRATION_QUANTILES[hi] - M.CALIBRATION_QUANTILES[lo] for lo, hi in pairs]
    np.testing.assert_allclose(widths, WIDTHS)
    with pytest.raises(ValueError, match="pairs"):
        M.central_intervals((0.1, 0.5, 0.9))


def test_sample_quantiles_equal_numpy_linear_quantiles() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 3, 20):
        x = rng.poisson(4, (30, 11, n)).astype(np.float32)
        expected = np.quantile(x.astype(np.float64), M.CALIBRATION_QUANTILES, axis=-1)
        got = M.sample_quantiles(x, M.CALIBRATION_QUANTILES)
        np.testing.assert_array_equal(np.stack(got), expected)


def test_interval_hits_and_error_by_hand() -> None:
    # one entry per cell; samples 0..10 (11 draws): the 95% interval is [0.25, 9.75], the 65%
    # one [1.75, 8.25]
    samples = np.tile(np.arange(11, dtype=np.float32), (4, 1, 1))
    observed = np.array([[0.0], [1.0], [5.0], [9.0]])
    hits = M.interval_hits(samples, observed)
    # 0 is in no interval; 1 in those whose low end is <= 1 (95%: 0.25, 90%: 0.5,
    # 85%: 0.75, 80%: 1.0); 5 in all; 9 in those whose high end is >= 9 (95% 9.75, 90% 9.5,
    # 85% 9.25, 80% 9.0)
    np.testing.assert_array_equal(hits, [3, 3, 3, 3, 1, 1, 1])
    coverage = hits / 4
    expected = sum((c - w) ** 2 for c, w in zip(coverage, WIDTHS, strict=True))
    assert M.calibration_error(coverage) == pytest.approx(expected)
    row = M.calibration_row(hits, 4)
    assert list(row) == ["95%", "90%", "85%", "80%", "75%", "70%", "65%", M.CALIBRATION_ERROR]
    assert row["95%"] == 0.75 and row["65%"] == 0.25
    assert M.calibration_error(WIDTHS) == pytest.approx(0.0, abs=1e-12)  # perfect coverage
    # a mask keeps only some entries (the proteins a batch measured)
    keep = np.array([[True], [False], [True], [False]])
    np.testing.assert_array_equal(M.interval_hits(samples, observed, mask=keep), [1] * 7)
    # no entries: NaN, not a perfect or a terrible score
    assert all(np.isnan(v) for v in M.calibration_row(np.zeros(7, int), 0).values())


def test_calibration_knows_the_truth_on_simulated_counts() -> None:
    """Counts drawn from NB(mu, theta): draws from the same distribution are calibrated,
    draws at 2.5x the mean (the efficiency left out, as scvi-tools) are not."""
    rng = np.random.default_rng(0)
    cells, features, n = 400, 30, 100  # enough draws that their quantiles are near the truth
    mu = rng.uniform(50, 400, size=(cells, features))
    theta = 8.0

    def nb(mean: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        return rng.poisson(rng.gamma(theta, mean / theta, size=size)).astype(np.float32)

    observed = nb(mu, (cells, features))
    truth = nb(mu[..., None], (cells, features, n))
    scaled = nb(2.5 * mu[..., None], (cells, features, n))
    total = cells * features
    good = M.calibration_error(M.interval_hits(truth, observed) / total)
    bad = M.calibration_error(M.interval_hits(scaled, observed) / total)
    assert good < 0.01, good
    assert bad > 1.0, bad
    coverage = M.interval_hits(truth, observed) / total
    np.testing.assert_allclose(coverage, WIDTHS, atol=0.04)


@pytest.fixture(scope="module")
def seedlike(test_data):
    folder = test_data / SEEDLIKE
    model = TotalVI.load(folder)
    data = ReadOptions.from_setup_args(model.setup_args).read(folder / "mdata.h5mu")
    expected = json.loads((folder / "expected_card_metrics.json").read_text())
    return model, data, expected


def test_efficiency_free_card_metrics_are_scvi_tools_exactly(seedlike) -> None:
    """With the switch on, the model-card markdown is what scvi-tools 1.4.2 computes with
    the same model and counts, character for character, and so is its calibration error."""
    model, data, expected = seedlike
    labels = data.obs["cell_type"].astype(str).to_numpy()
    result = M.compute_metrics(
        model, data, labels, n_samples=3, seed=0, protein_scale=EFFICIENCY_FREE,
        calibration_samples=0,
    )  # fmt: skip
    assert result.protein_scale == EFFICIENCY_FREE and result.other_scale is None
    for mod in ("rna", "protein"):
        assert M.cv_table_markdown(result.cell_wise_cv[mod]) == expected[mod]["cell_wise_cv"]
        assert M.cv_table_markdown(result.gene_wise_cv[mod]) == expected[mod]["gene_wise_cv"]
        assert M.dataframe_to_markdown(result.diff_exp[mod]) == expected[mod]["diff_exp"]
    # scvi-tools' calibration_error on its own 3 draws (PosteriorPredictiveCheck: 32 cells
    # per minibatch, seed 0)
    pp = model.posterior_predictive_sample(
        data, n_samples=3, seed=0, batch_size=32, protein_scale=EFFICIENCY_FREE
    )
    for mod, raw in (("rna", data.rna), ("protein", data.protein)):
        hits = M.interval_hits(pp[mod].astype(np.float32), raw)
        error = M.calibration_error(hits / (raw.shape[0] * raw.shape[1]))
        assert error == pytest.approx(expected[mod]["calibration_error"], rel=1e-12)


def test_measured_metrics_keep_scvi_tools_tables_one_step_away(seedlike) -> None:
    model, data, expected = seedlike
    labels = data.obs["cell_type"].astype(str).to_numpy()
    result = M.compute_metrics(
        model, data, labels, n_samples=3, seed=0, calibration_samples=5, calibration_cells=100
    )
    assert result.protein_scale == MEASURED and model.has_protein_efficiency
    compat = result.for_scale(EFFICIENCY_FREE)
    assert compat is result.other_scale and result.for_scale(MEASURED) is result
    assert compat.protein_scale == EFFICIENCY_FREE
    # RNA is the same on both; the efficiency-free protein tables are scvi-tools'
    assert compat.cell_wise_cv["rna"] is result.cell_wise_cv["rna"]
    assert (
        M.cv_table_markdown(compat.gene_wise_cv["protein"]) == expected["protein"]["gene_wise_cv"]
    )
    assert not result.gene_wise_cv["protein"].equals(compat.gene_wise_cv["protein"])
    # calibration: RNA on 100 cells, both protein scales on all 800 (under the cap), shared
    table = result.calibration
    assert compat.calibration is table
    assert list(table.index) == ["RNA", M.PROTEIN_ROWS[MEASURED], M.PROTEIN_ROWS[EFFICIENCY_FREE]]
    assert list(table["cells"]) == [100, data.n_cells, data.n_cells]
    assert ((table[["95%", "65%"]] >= 0) & (table[["95%", "65%"]] <= 1)).all().all()
    means = result.protein_means
    assert list(means.index) == list(model.protein_names)
    assert {"ratio (measured)", "ratio (efficiency-free)"} <= set(means.columns)
    # proteins 80-110 were not measured in s03 and s11: their zeros are not observations
    measuring = ~np.isin(np.asarray(data.batch_categories)[data.batch], ["s03", "s11"])
    counts = np.asarray(data.protein[:, data.protein_names.get_loc("ADT_90")]).ravel()
    assert means.loc["ADT_90", "observed mean"] == pytest.approx(counts[measuring].mean())
    col = data.protein_names.get_loc("ADT_0")  # measured in every batch
    measured_everywhere = np.asarray(data.protein[:, col]).ravel()
    assert means.loc["ADT_0", "observed mean"] == pytest.approx(measured_everywhere.mean())
    # tables of a scale that was not computed are refused, not silently the other one
    scvi_only = M.compute_metrics(
        model, data, labels, n_samples=2, seed=0, protein_scale=EFFICIENCY_FREE,
        calibration_samples=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="no tables from measured protein samples"):
        scvi_only.for_scale(MEASURED)
    # the gene-wise CV points behind the plots come from the same draws as the table
    points = result.gene_cv_points["protein"]
    assert list(points.columns) == ["feature", "observed", "generated"]
    assert len(points) == len(model.protein_names)


def test_protein_calibration_draws_at_most_its_cap_of_cells(seedlike) -> None:
    """Above ``max_protein_cells`` the protein rows draw a seeded subset (after the RNA's),
    so the table's time does not grow with the data; the coverage is that subset's, over
    its measured entries only."""
    model, data, _ = seedlike
    raw = {
        "rna": M._aligned(data.rna, data.var_names, model.var_names),
        "protein": M._aligned(data.protein, data.protein_names, model.protein_names),
    }
    table = M.calibration_table(
        model, data, raw, scales=[MEASURED], n_samples=5, max_cells=40, max_protein_cells=300,
        seed=2,
    )  # fmt: skip
    assert list(table["cells"]) == [40, 300]
    rng = np.random.default_rng(2)
    rng.choice(data.n_cells, 40, replace=False)  # the RNA's cells come first
    cells = np.sort(rng.choice(data.n_cells, 300, replace=False))
    aligned = model.aligned(data)
    mask = M.measured_proteins(model, aligned)
    assert mask is not None and not mask[cells].all()  # s03 and s11 lack proteins 80-110
    hits = M.sampled_hits(
        model, aligned, raw["protein"], cells, modality="protein", n_samples=5, seed=2,
        protein_scale=MEASURED, mask=mask,
    )  # fmt: skip
    expected = M.calibration_row(hits, int(mask[cells].sum()))
    assert table.loc["Protein"].drop("cells").to_dict() == pytest.approx(expected)


def test_embedded_model_is_better_calibrated_on_the_measured_scale() -> None:
    """The embedded checkpoint on a seeded 1,500-cell slice of the embedded data: measured
    samples match the observed means and cover the counts as their intervals say; the
    efficiency-free ones (scvi-tools') do not."""
    from model.data import read_cite_seq

    root = Path(__file__).resolve().parents[2] / "data"  # the embedded pair
    model = TotalVI.load(root / "models" / "pbmc10k")
    full = read_cite_seq(root / "pbmc10k.h5ad")
    cells = np.sort(np.random.default_rng(0).choice(full.n_cells, 1500, replace=False))
    data = full.subset(cells)
    raw = {"rna": data.rna, "protein": data.protein}
    table = M.calibration_table(
        model, data, raw, scales=[MEASURED, EFFICIENCY_FREE], n_samples=10, max_cells=50
    )
    measured = table.loc[M.PROTEIN_ROWS[MEASURED], M.CALIBRATION_ERROR]
    free = table.loc[M.PROTEIN_ROWS[EFFICIENCY_FREE], M.CALIBRATION_ERROR]
    assert measured < 0.1 < 1.0 < free, table
