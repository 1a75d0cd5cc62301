"""CLI subcommands (train, precompute, export) on files, and the content-keyed cache: a
pair loaded from disk hits results computed for the same content in memory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.cli_commands import add_subcommands
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import trained_pbmc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    data, model = trained_pbmc()
    root = tmp_path_factory.mktemp("cli")
    data.to_anndata().write_h5ad(root / "pbmc.h5ad")
    model.save(root / "model")
    return {"root": root, "data": root / "pbmc.h5ad", "model": root / "model"}


def run(argv: list[str]) -> int:
    """The installed ``totalvi-explorer`` entry point."""
    from dashboard.cli import main

    return main(argv)


def test_add_subcommands_registers_four() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    assert set(add_subcommands(sub)) == {"train", "precompute", "export", "simulate"}
    assert set(
        add_subcommands(argparse.ArgumentParser().add_subparsers(), include=["export"])
    ) == {"export"}


def test_simulate_writes_new_data_and_never_overwrites(tmp_path, capsys) -> None:
    import anndata as ad

    out = tmp_path / "sim" / "small.h5ad"
    argv = ["simulate", "--cells", "300", "--genes", "50", "--proteins", "6", "--batches", "3"]
    argv += ["--cell-types", "4", "--seed", "1", "--out", str(out)]
    assert run(argv) == 0
    assert "300 cells, 50 genes, 6 proteins, 3 batches" in capsys.readouterr().out
    adata = ad.read_h5ad(out)
    assert adata.shape == (300, 50) and adata.obsm["protein_expression"].shape == (300, 6)
    assert list(adata.obs["cell_type"].cat.categories) == [
        "CD4 naive T", "CD4 memory T", "Treg", "CD8 naive T"
    ]  # fmt: skip
    assert adata.uns["simulation"]["seed"] == 1
    before = out.read_bytes()
    assert run(argv) == 2  # an existing file is refused in one line, and kept
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and "\n" not in err
    assert out.read_bytes() == before
    assert run([*argv[:-1], str(tmp_path / "x.csv")]) == 2
    assert "must be a .h5ad file" in capsys.readouterr().err
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_precompute_fills_cache_then_computes_nothing(files, capsys) -> None:
    cache = files["root"] / "cache"
    argv = ["precompute", str(files["data"]), "--model", str(files["model"])]
    argv += ["--batch-key", "batch", "--cache-dir", str(cache)]
    assert run(argv) == 0
    out = capsys.readouterr()
    assert "10 results ready" in out.out
    assert "precompute" in out.err  # the tqdm bar
    assert run(argv) == 0
    assert "(0 computed" in capsys.readouterr().out
    # the same content held in memory (no path) hits the same entries
    data, model = trained_pbmc()
    svc = AnalysisService(Settings(cache_dir=cache))
    try:
        pair = svc.add_model(svc.add_dataset(data), model)
        umap = svc.umap(pair)
        assert svc.cache.stats.computed == 0
        assert list(umap.columns) == ["UMAP1", "UMAP2"] and np.isfinite(umap.to_numpy()).all()
        assert umap.index.equals(data.obs_names)
    finally:
        svc.close()


def test_export_writes_h5mu_and_tables(files, capsys) -> None:
    import mudata as md

    out = files["root"] / "export" / "pbmc.h5mu"
    tables = files["root"] / "tables"
    data, model = trained_pbmc()
    # a cell type renamed in the app (same cache folder) is exported under its new name
    svc = AnalysisService(Settings(cache_dir=files["root"] / "cache"))
    try:
        pair = svc.add_model(svc.add_dataset(data), model)
        renamed = str(svc.cell_types(pair).cat.categories[0])
        svc.rename_cell_type(pair, renamed, "My first type")
    finally:
        svc.close()
    argv = ["export", str(files["data"]), "--model", str(files["model"]), "--out", str(out)]
    argv += ["--tables", str(tables), "--batch-key", "batch", "--denoised-rna"]
    argv += ["--cache-dir", str(files["root"] / "cache")]
    assert run(argv) == 0
    capsys.readouterr()
    mdata = md.read_h5mu(out)
    shown = mdata.obs["cell_type"].astype(str)
    auto = mdata.obs["cell_type_auto"].astype(str)
    assert "My first type" in set(shown) and renamed not in set(shown)
    assert ((shown == "My first type") == (auto == renamed)).all()
    assert (shown[auto != renamed] == auto[auto != renamed]).all()
    assert set(mdata.mod) == {"rna", "protein"}
    assert mdata.obsm["X_totalvi"].shape == (data.n_cells, model.config.n_latent)
    assert mdata.obsm["X_umap"].shape == (data.n_cells, 2)
    assert mdata["protein"].layers["denoised"].shape == (data.n_cells, 14)
    den = mdata["rna"].layers["denoised"]  # streamed from the gene blocks
    assert den.shape == (data.n_cells, data.n_genes) and den.dtype == np.float32
    np.testing.assert_allclose(den.sum(1), 1e4, rtol=1e-3)  # per 10k counts
    fg = mdata["protein"].layers["foreground_probability"]
    assert fg.min() >= 0 and fg.max() <= 1
    assert mdata.obs["cell_type"].nunique() == mdata.obs["leiden"].nunique() > 3
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), data.rna.toarray())
    de = pd.read_csv(tables / "de_one_vs_rest.csv", index_col=0)
    n_types = mdata.obs["cell_type"].nunique()
    assert len(de) == n_types * (data.n_genes + data.n_proteins)
    assert set(de.loc[de["group1_auto"] == renamed, "group1"]) == {"My first type"}
    assert set(de["group1"]) == set(shown)
    assert (de["lfc_lower"] <= de["lfc_upper"]).all()  # each LFC's 95% credible interval
    pairs = pd.read_csv(tables / "gene_protein_concordance.csv")
    per_type = pd.read_csv(tables / "gene_protein_concordance_per_type.csv")
    assert {"CD14_TotalSeqB", "CD19_TotalSeqB"} <= set(pairs["protein"])
    assert set(per_type["protein"]) == set(pairs["protein"])
    assert not (tables / "integration_scorecard.csv").exists()  # one batch: no scorecard
    for name in ("cell_wise_cv", "gene_wise_cv", "diff_exp"):
        for mod in ("rna", "protein"):
            assert (tables / f"metrics_{name}_{mod}.csv").is_file()
    de_metric = pd.read_csv(tables / "metrics_diff_exp_rna.csv", index_col=0)
    assert "My first type" in de_metric.index and renamed not in de_metric.index
    card = (tables / "model_card.md").read_text()
    assert "# Metrics" in card and "# Model Properties" in card
    # the scale of the denoised proteins and of the protein metrics is written down
    protein = mdata["protein"]
    assert protein.uns["denoised_scale"] == "measured"
    assert "capture efficiency" in protein.uns["denoised_scale_description"]
    eff = protein.varm["capture_efficiency"]
    assert eff.shape == (14, model.config.n_batch) and (np.asarray(eff) > 0).all()
    assert "measured scale" in card.split("**Cell-wise")[0]
    for name in ("cell_wise_cv", "gene_wise_cv", "diff_exp"):  # scvi-tools 1.4.2's, beside
        assert (tables / f"metrics_scvi_tools_{name}_protein.csv").is_file()
    calibration = pd.read_csv(tables / "metrics_calibration.csv", index_col=0)
    assert "calibration error" in calibration.columns and "RNA" in calibration.index
    scales = json.loads((tables / "scales.json").read_text())
    assert scales["denoised_protein"].startswith("measured scale")
    assert "efficiency-free rates" in scales["de_one_vs_rest.csv"]
    assert "measured scale" in scales["metrics_*"]
    means = pd.read_csv(tables / "metrics_protein_means.csv", index_col=0)
    assert len(means) == 14 and "ratio (measured)" in means.columns
    # the switch: scvi-tools' scale everywhere, its card as it writes it
    scvi_out = files["root"] / "export" / "pbmc_scvi.h5mu"
    scvi_tables = files["root"] / "tables_scvi"
    argv = ["export", str(files["data"]), "--model", str(files["model"]), "--out", str(scvi_out)]
    argv += ["--tables", str(scvi_tables), "--batch-key", "batch", "--protein-scale"]
    argv += ["efficiency-free", "--cache-dir", str(files["root"] / "cache")]
    assert run(argv) == 0
    capsys.readouterr()
    scvi = md.read_h5mu(scvi_out)["protein"]
    assert scvi.uns["denoised_scale"] == "efficiency-free"
    per_cell = np.asarray(eff)[:, data.batch].T  # proteins x batches -> cells x proteins
    np.testing.assert_allclose(
        protein.layers["denoised"], scvi.layers["denoised"] * per_cell, rtol=1e-4
    )
    scvi_card = (scvi_tables / "model_card.md").read_text()
    assert scvi_card.startswith("# Metrics\n\n**Cell-wise Coefficient of Variation**")
    assert (scvi_tables / "metrics_measured_gene_wise_cv_protein.csv").is_file()


def test_train_command_and_errors(files, tmp_path, capsys) -> None:
    argv = ["train", str(files["data"]), "--batch-key", "batch", "--max-epochs", "2"]
    argv += ["--out", str(tmp_path / "m"), "--quiet"]
    assert run(argv) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.pt").is_file()
    missing = ["precompute", str(tmp_path / "nope.h5ad"), "--model", str(tmp_path / "m")]
    assert run([*missing, "--cache-dir", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    bad_model = ["precompute", str(files["data"]), "--model", str(tmp_path / "no-model")]
    assert run([*bad_model, "--batch-key", "batch", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "no-model" in capsys.readouterr().err
