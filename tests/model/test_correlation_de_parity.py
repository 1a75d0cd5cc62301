"""Parity with scvi-tools 1.4.2 of the feature correlation and of batch-corrected DE, from
outputs it wrote with the test checkpoints (``bench/scvi_reference_outputs.py``: the PBMC
300 x 1000 model's ``expected_correlation_de.npz``, the seed-like model's
``expected_batch_corrected_de.npz``); scvi-tools is not needed to run them.

- ``get_feature_correlation_matrix`` (Spearman, 10 samples, each cell's own batch and
  averaged over both batches) is scvi-tools' to float precision: the same draws, in the
  same order (one seed for all the batches, as one scvi-tools call).
- ``differential_expression`` with and without ``batch_correction``: scvi-tools draws the
  cells with numpy's global generator, ours with a seeded ``default_rng``, so the tables
  agree to Monte-Carlo error, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.data import from_anndata
from model.differential import differential_expression
from model.protein_scale import EFFICIENCY_FREE
from model.read_options import ReadOptions
from model.totalvi import TotalVI

PBMC = "scvi_tools_1.4.2_pbmc300x1000"
SEEDLIKE = "scvi_tools_1.4.2_mudata_seedlike_800"


@pytest.fixture(scope="module")
def pbmc(test_data):
    import anndata as ad

    folder = test_data / PBMC
    adata = ad.read_h5ad(folder / "adata.h5ad")
    data = from_anndata(adata, batch_key="batch")
    expected = np.load(folder / "expected_correlation_de.npz")
    return TotalVI.load(folder, data=data), data, adata, expected


@pytest.mark.parametrize(("name", "batches"), [("corr_own", None), ("corr_both", ["b0", "b1"])])
def test_feature_correlation_is_scvi_tools(pbmc, name, batches) -> None:
    model, data, _, expected = pbmc
    ours = model.get_feature_correlation_matrix(
        data, n_samples=10, batch_size=64, transform_batch=batches, protein_scale=EFFICIENCY_FREE
    )
    features = [str(f) for f in expected["corr_features"]]
    # float32 sums round differently on other CPUs / BLAS builds (1.2e-6 seen on one CI machine)
    np.testing.assert_allclose(ours.loc[features, features], expected[name], atol=5e-6)
    if batches is not None:  # decoded in one batch at a time, the measured scale multiplies
        measured = model.get_feature_correlation_matrix(  # each protein by one constant
            data, n_samples=10, batch_size=64, transform_batch=batches
        )
        # (float32 rounding of the scaled draws moves a few ranks: 1e-4)
        np.testing.assert_allclose(measured.loc[features, features], expected[name], atol=1e-4)


def _agree(ours: pd.DataFrame, expected, name: str) -> None:
    """Ours against scvi-tools' table ``name``: the same features; LFC and its spread
    to Monte-Carlo error; the same features called DE but for the borderline."""
    features = [str(f) for f in expected[f"{name}_features"]]
    table = ours.reindex(features)
    assert table["lfc_mean"].notna().all()
    for col, r_min, mean_max in (
        ("lfc_mean", 0.999, 0.04),
        ("lfc_std", 0.995, 0.03),
        ("proba_de", 0.995, 0.015),
    ):
        a = table[col].to_numpy(float)
        b = expected[f"{name}_{col}"].astype(float)
        assert np.corrcoef(a, b)[0, 1] > r_min, col
        assert np.abs(a - b).mean() < mean_max, col
    ours_de = table["proba_de"].to_numpy() > 0.9
    theirs_de = expected[f"{name}_proba_de"] > 0.9
    assert (ours_de != theirs_de).mean() < 0.03


@pytest.mark.parametrize("corrected", [False, True])
def test_pbmc_de_with_and_without_batch_correction_is_scvi_tools(pbmc, corrected) -> None:
    model, data, adata, expected = pbmc
    cd14 = np.asarray(adata.obsm["protein_expression"]["CD14_TotalSeqB"], dtype=float)
    high = cd14 > np.median(cd14)  # the groups bench/scvi_reference_outputs.py used
    de = differential_expression(
        model, data, np.flatnonzero(high), np.flatnonzero(~high), batch_correction=corrected
    )
    _agree(de, expected, "de_corrected" if corrected else "de")


@pytest.mark.parametrize("corrected", [False, True])
def test_seedlike_de_over_17_batches_is_scvi_tools(test_data, corrected) -> None:
    folder = test_data / SEEDLIKE
    model = TotalVI.load(folder)
    data = ReadOptions.from_setup_args(model.setup_args).read(folder / "mdata.h5mu")
    expected = np.load(folder / "expected_batch_corrected_de.npz")
    de = differential_expression(model, data, expected["idx1"], None, batch_correction=corrected)
    _agree(de, expected, "de_corrected" if corrected else "de")
