"""Protein values on the measured scale (capture efficiency applied) vs scvi-tools' scale.

The embedded checkpoint learned capture efficiencies of about 0.38: its efficiency-free
samples are ~2.5x the observed counts, the measured ones match them. ``protein_scale=
"efficiency-free"`` reproduces what scvi-tools 1.4.2 samples bit for bit (stored outputs in
``tests/data/scvi_tools_1.4.2_pbmc300x1000/expected_sampling.npz``, written by
``bench/scvi_reference_outputs.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data import from_anndata, read_cite_seq
from model.protein_scale import EFFICIENCY_FREE, MEASURED, check_protein_scale
from model.totalvi import TotalVI

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = ROOT / "data" / "models" / "pbmc10k"
EMBEDDED_DATA = ROOT / "data" / "pbmc10k.h5ad"


@pytest.fixture(scope="module")
def embedded() -> tuple[TotalVI, object]:
    """The embedded checkpoint (357 epochs) and the full embedded PBMC data."""
    return TotalVI.load(EMBEDDED_MODEL), read_cite_seq(EMBEDDED_DATA)


@pytest.fixture(scope="module")
def pbmc300(test_data):
    import anndata as ad

    folder = test_data / "scvi_tools_1.4.2_pbmc300x1000"
    data = from_anndata(ad.read_h5ad(folder / "adata.h5ad"), batch_key="batch")
    return TotalVI.load(folder, data=data), data, np.load(folder / "expected_sampling.npz")


def _observed_mean(model: TotalVI, data) -> np.ndarray:
    pos = data.protein_names.get_indexer(model.protein_names)
    return np.asarray(data.protein[:, pos]).mean(axis=0)


def test_measured_samples_have_the_observed_mean_of_every_protein(embedded) -> None:
    model, data = embedded
    eff = model.protein_efficiency()
    assert eff is not None and model.has_protein_efficiency
    assert ((eff.to_numpy() > 0.3) & (eff.to_numpy() < 0.45)).all()  # learned, about 0.38
    observed = _observed_mean(model, data)
    ratio = {}
    for scale in (MEASURED, EFFICIENCY_FREE):
        pp = model.posterior_predictive_sample(
            data, gene_list=[], n_samples=3, seed=0, protein_scale=scale
        )
        assert pp["rna"].shape == (data.n_cells, 0, 3)  # protein-only draw
        ratio[scale] = pp["protein"].mean(axis=(0, 2)) / observed
    assert ((ratio[MEASURED] > 0.85) & (ratio[MEASURED] < 1.15)).all(), ratio[MEASURED]
    assert (ratio[EFFICIENCY_FREE] > 2.0).all(), ratio[EFFICIENCY_FREE]  # scvi-tools' scale
    # the default is the measured scale
    default = model.posterior_predictive_sample(data, gene_list=[], n_samples=3, seed=0)
    np.testing.assert_allclose(default["protein"].mean(axis=(0, 2)) / observed, ratio[MEASURED])


def test_efficiency_free_samples_are_scvi_tools_bit_for_bit(pbmc300) -> None:
    model, data, expected = pbmc300
    pp = model.posterior_predictive_sample(
        data, n_samples=2, batch_size=64, seed=0, protein_scale=EFFICIENCY_FREE
    )
    np.testing.assert_array_equal(pp["rna"], expected["pp_rna"])
    np.testing.assert_array_equal(pp["protein"], expected["pp_protein"])
    measured = model.posterior_predictive_sample(data, n_samples=2, batch_size=64, seed=0)
    assert not np.array_equal(measured["protein"], expected["pp_protein"])


def test_efficiency_free_denoised_values_are_scvi_tools(pbmc300) -> None:
    model, data, expected = pbmc300
    rna, pro = model.get_normalized_expression(
        data,
        n_samples=1,
        gene_list=list(model.var_names[:50]),
        return_numpy=True,
        batch_size=64,
        seed=0,
        protein_scale=EFFICIENCY_FREE,
    )
    # same draws; float32 rounding of a differently ordered matmul is all that differs
    np.testing.assert_allclose(rna, expected["denoised_rna"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(pro, expected["denoised_protein"], rtol=1e-5, atol=1e-5)
    _, b1 = model.get_normalized_expression(
        data,
        n_samples=3,
        transform_batch="b1",
        include_protein_background=True,
        return_numpy=True,
        batch_size=64,
        seed=0,
        protein_scale=EFFICIENCY_FREE,
    )
    np.testing.assert_allclose(b1, expected["denoised_protein_b1_bg"], rtol=1e-5, atol=1e-5)


def test_measured_denoised_protein_is_the_rate_times_the_batch_efficiency(pbmc300) -> None:
    model, data, _ = pbmc300
    eff = model.protein_efficiency()
    assert list(eff.index) == ["b0", "b1"] and not np.allclose(eff.loc["b0"], eff.loc["b1"])
    kwargs = {"n_samples": 2, "return_numpy": True, "seed": 3, "gene_list": []}
    _, free = model.get_normalized_expression(data, protein_scale=EFFICIENCY_FREE, **kwargs)
    _, measured = model.get_normalized_expression(data, **kwargs)  # default: measured
    per_cell = eff.to_numpy()[data.batch]  # each cell's own batch
    np.testing.assert_allclose(measured, free * per_cell, rtol=1e-5)
    # decoded as if in b1: b1's efficiency for every cell
    _, free_b1 = model.get_normalized_expression(
        data, transform_batch="b1", protein_scale=EFFICIENCY_FREE, **kwargs
    )
    _, measured_b1 = model.get_normalized_expression(data, transform_batch="b1", **kwargs)
    np.testing.assert_allclose(measured_b1, free_b1 * eff.loc["b1"].to_numpy(), rtol=1e-5)


def test_checkpoint_without_efficiency_behaves_as_before(test_data) -> None:
    import anndata as ad

    folder = test_data / "scvi_tools_1.1.5_synthetic"
    data = from_anndata(
        ad.read_h5ad(folder / "adata.h5ad"),
        batch_key="batch",
        protein_names_uns_key="protein_names",
    )
    model = TotalVI.load(folder, data=data)
    assert model.protein_efficiency() is None and not model.has_protein_efficiency
    for call in (model.posterior_predictive_sample, model.get_normalized_expression):
        a = call(data, n_samples=2, seed=1, protein_scale=MEASURED)
        b = call(data, n_samples=2, seed=1, protein_scale=EFFICIENCY_FREE)
        for x, y in zip(
            a.values() if isinstance(a, dict) else a,
            b.values() if isinstance(b, dict) else b,
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_unknown_scale_is_refused_in_one_line(pbmc300) -> None:
    model, data, _ = pbmc300
    with pytest.raises(ValueError, match="protein_scale must be one of measured") as err:
        model.posterior_predictive_sample(data, protein_scale="counts")
    assert "\n" not in str(err.value)
    assert check_protein_scale("efficiency-free") == EFFICIENCY_FREE
