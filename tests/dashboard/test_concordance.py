"""Gene-protein concordance (dashboard/backend/concordance.py, protein_genes.py and its view):
the alias table, the per-type correlation and flags against direct numpy computations, the
model's correlation against the model's own query, and the job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import figures
from dashboard.backend.concordance import (
    DISCORDANCE_GAP,
    MIN_CELLS,
    MODEL_SAMPLES,
    PROTEIN_ONLY,
    RNA_ONLY,
    compute_concordance,
    discordance_flags,
)
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.protein_genes import (
    PROTEIN_GENES,
    ProteinGene,
    alias_key,
    match_proteins_to_genes,
)
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import trained_pbmc
from dashboard.views import concordance as view

#: The browser tests' slice: trains in seconds, has every PBMC cell type.
SLICE = {"n_cells": 800, "n_genes": 400, "max_epochs": 20}


# ------------------------------------------------------------------------ alias table
def test_alias_key_drops_antibody_and_de_suffixes() -> None:
    assert alias_key("CD8a_TotalSeqB") == "CD8A"
    assert alias_key("PD-1_TotalSeqB") == "PD-1"
    assert alias_key("CD4_TotalSeqB_protein") == "CD4"
    assert alias_key("cd19") == "CD19"


def test_the_pbmc_panel_matches_its_genes() -> None:
    proteins = [
        "CD3_TotalSeqB", "CD4_TotalSeqB", "CD8a_TotalSeqB", "CD14_TotalSeqB", "CD15_TotalSeqB",
        "CD16_TotalSeqB", "CD56_TotalSeqB", "CD19_TotalSeqB", "CD25_TotalSeqB",
        "CD45RA_TotalSeqB", "CD45RO_TotalSeqB", "PD-1_TotalSeqB", "TIGIT_TotalSeqB",
        "CD127_TotalSeqB",
    ]  # fmt: skip
    genes = ["CD3D", "CD3G", "CD4", "CD8A", "CD8B", "CD14", "FUT4", "FCGR3A", "NCAM1"]
    genes += ["CD19", "IL2RA", "PDCD1", "TIGIT", "IL7R", "LYZ"]
    got = {(m.protein.split("_")[0], m.gene) for m in match_proteins_to_genes(proteins, genes)}
    assert got == {
        ("CD3", "CD3D"), ("CD3", "CD3G"), ("CD4", "CD4"), ("CD8a", "CD8A"), ("CD14", "CD14"),
        ("CD15", "FUT4"), ("CD16", "FCGR3A"), ("CD56", "NCAM1"), ("CD19", "CD19"),
        ("CD25", "IL2RA"), ("PD-1", "PDCD1"), ("TIGIT", "TIGIT"), ("CD127", "IL7R"),
    }  # fmt: skip
    # PTPRC is not among the genes: CD45RA / CD45RO have no pair; CD8a is CD8A, not CD8B


def test_same_name_match_keeps_the_models_spelling_and_only_present_genes() -> None:
    got = match_proteins_to_genes(["Foo_protein", "Cd4", "CD45RA", "Bar"], ["FOO", "Cd4"])
    assert got == [
        ProteinGene("Foo_protein", "FOO", "same name"),
        ProteinGene("Cd4", "Cd4", "alias"),
    ]
    assert PROTEIN_GENES["CD45RA"] == ("PTPRC",)


# ------------------------------------------------------------ per-type computation
def _toy(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, list[str]]:
    """Three types; in "T" the protein is high but its gene is off (protein without RNA)."""
    rng = np.random.default_rng(seed)
    types = np.repeat(["Mono", "T", "B", "tiny"], [60, 50, 40, MIN_CELLS - 1])
    n = len(types)
    gene = rng.gamma(2.0, 0.5, n)
    pro = gene * 3 + rng.gamma(1.0, 0.3, n)
    t = types == "T"
    gene[t] = rng.gamma(1.0, 0.01, t.sum())
    pro[t] = 40 + rng.gamma(2.0, 2.0, t.sum())
    rna = pd.DataFrame({"G": gene, "OTHER": rng.random(n)})
    protein = pd.DataFrame({"P": pro})
    return rna, protein, types, ["Mono", "T", "B", "tiny"]


def test_per_type_pearson_means_and_flags_match_numpy() -> None:
    rna, protein, types, order = _toy()
    calls = []

    def model_correlation(genes: list[str], proteins: list[str]) -> pd.DataFrame:
        calls.append((genes, proteins))
        return pd.DataFrame([[1.0, 0.25], [0.25, 1.0]], index=["G", "P"], columns=["G", "P"])

    result = compute_concordance(
        [ProteinGene("P", "G", "alias")], rna, protein, types, order, model_correlation
    )
    assert calls == [(["G"], ["P"])]
    x, y = np.log1p(rna["G"].to_numpy()), np.log1p(protein["P"].to_numpy())
    table = result.per_type.set_index("cell_type")
    for t in ("Mono", "T", "B"):
        m = types == t
        assert table.loc[t, "correlation"] == pytest.approx(np.corrcoef(x[m], y[m])[0, 1])
        assert table.loc[t, "mean_rna"] == pytest.approx(x[m].mean())
        assert table.loc[t, "mean_protein"] == pytest.approx(y[m].mean())
        assert table.loc[t, "n_cells"] == m.sum()
    assert np.isnan(table.loc["tiny", "correlation"])  # fewer than MIN_CELLS cells
    means = table.loc[order, ["mean_rna", "mean_protein"]].to_numpy()
    z = (means - means.mean(0)) / means.std(0)
    np.testing.assert_allclose(table.loc[order, ["z_rna", "z_protein"]].to_numpy(), z)
    assert table.loc["T", "flag"] == PROTEIN_ONLY
    assert (table.drop(index="T")["flag"] == "").all()
    row = result.pairs.iloc[0]
    assert row["model_correlation"] == 0.25
    assert row["pearson_all"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert row["n_flagged"] == 1
    assert list(result.flagged("P", "G")["cell_type"]) == ["T"]


def test_flag_rule_is_symmetric_and_needs_a_clear_presence() -> None:
    _, z_pro, flags = discordance_flags(np.array([3.0, 0, 0, 0]), np.array([0.0, 0, 0, 0]))
    assert flags == [RNA_ONLY, "", "", ""]
    assert z_pro.tolist() == [0, 0, 0, 0]  # no spread: no z
    # a gap above DISCORDANCE_GAP but with the protein below average is not "present"
    _, _, flags = discordance_flags(np.array([0.0, 1, 2, 3]), np.array([0.0, 1, 2, 3]))
    assert flags == ["", "", "", ""]
    assert DISCORDANCE_GAP > 0


# ----------------------------------------------------------------- on a trained model
@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data, model = trained_pbmc(**SLICE)
    svc = AnalysisService(Settings(cache_dir=tmp_path_factory.mktemp("concordance-cache")))
    pair = svc.add_model(svc.add_dataset(data, name="pbmc slice"), model)
    yield svc, pair
    svc.close()


def test_service_concordance_against_direct_computations(service) -> None:
    svc, pair = service
    job = svc.submit("gene_protein_concordance", pair)
    info = svc.wait(job, timeout=600)
    assert str(info.status) == "done", info.error
    result = svc.job_result(job)
    assert result.pairs.equals(svc.gene_protein_concordance(pair).pairs)  # read from cache
    pairs = {
        (p.split("_")[0], g) for p, g in zip(result.pairs.protein, result.pairs.gene, strict=True)
    }
    assert {("CD14", "CD14"), ("CD19", "CD19"), ("CD8a", "CD8A"), ("CD4", "CD4")} <= pairs

    types = svc.cell_types(pair).astype(str).to_numpy()
    rna = svc.denoised_rna(pair, ["CD14"])["CD14"].to_numpy(np.float64)
    pro = svc.denoised_protein(pair)["CD14_TotalSeqB"].to_numpy(np.float64)
    x, y = np.log1p(rna), np.log1p(pro)
    rows = result.per_type[result.per_type.protein == "CD14_TotalSeqB"].set_index("cell_type")
    checked = 0
    for t in result.cell_types:
        m = types == t
        if m.sum() >= MIN_CELLS and np.ptp(x[m]) > 0:
            assert rows.loc[t, "correlation"] == pytest.approx(np.corrcoef(x[m], y[m])[0, 1])
            checked += 1
    assert checked >= 3

    model, data = svc.model(pair), svc.dataset(pair)
    genes = list(dict.fromkeys(result.pairs.gene))
    proteins = list(dict.fromkeys(result.pairs.protein))
    direct = model.get_feature_correlation_matrix(
        data,
        n_samples=MODEL_SAMPLES,
        correlation_type="spearman",
        transform_batch=list(range(data.n_batch)),
        gene_list=genes,
        protein_list=proteins,
        seed=svc.settings.seed,
    )
    got = result.pairs.set_index(["protein", "gene"])["model_correlation"]
    for (p, g), value in got.items():
        assert value == pytest.approx(direct.loc[g, p])
    # monocytes: CD14 RNA and protein go together under the model
    assert got[("CD14_TotalSeqB", "CD14")] > 0.3


def test_view_rows_heatmap_and_forged_pairs(service) -> None:
    svc, pair = service
    result = svc.gene_protein_concordance(pair)
    rows = view.grid_rows(svc, pair)
    assert [r["key"] for r in rows] == [
        view.pair_key(p, g) for p, g in zip(result.pairs.protein, result.pairs.gene, strict=True)
    ]
    cd14 = next(r for r in rows if r["key"] == "CD14_TotalSeqB|CD14")
    assert cd14["protein"] == "CD14 protein" and cd14["gene"] == "CD14"
    assert isinstance(cd14["model_correlation"], float)
    heat = view.heatmap_data(svc, pair)
    assert len(heat.z) == len(rows) and all(len(r) == len(heat.columns) for r in heat.z)
    i = heat.rows.index("CD14 protein ~ CD14")
    j = 0
    t = result.cell_types[j]
    want = result.per_type.set_index(["protein", "gene", "cell_type"]).loc[
        ("CD14_TotalSeqB", "CD14", t), "correlation"
    ]
    assert heat.z[i][j] == (None if np.isnan(want) else pytest.approx(want))
    assert view.default_pair(view.pair_options(svc, pair)) == "CD14_TotalSeqB|CD14"
    frame, order, names = view.scatter_frame(svc, pair, "CD14_TotalSeqB|CD14")
    assert set(frame.cell_type) <= set(order) and names == ("CD14", "CD14 protein")
    for forged in ("CD14_TotalSeqB|LYZ", None, 3, "x" * 500):
        with pytest.raises(InvalidSelection, match="unknown protein-gene pair"):
            view.check_pair(svc, pair, forged)


def test_figures_show_the_values_flags_and_types() -> None:
    fig = figures.concordance_heatmap_figure(
        [[0.5, None], [-0.25, 1.0]],
        rows=["A protein ~ A", "B protein ~ B"],
        columns=["T", "Mono"],
        flags=[["", PROTEIN_ONLY], ["", ""]],
        n_cells=[30, 12],
    )
    heat, ring = fig.data
    assert [list(r) for r in heat.z] == [[0.5, None], [-0.25, 1.0]]
    assert (heat.zmin, heat.zmax) == (-1, 1)
    assert list(ring.x) == ["Mono"] and list(ring.y) == ["A protein ~ A"]
    assert PROTEIN_ONLY in ring.text[0] and "12 cells" in ring.text[0]
    frame = pd.DataFrame({"cell_type": ["T", "T", "Mono"], "rna": [0, 1, 2], "protein": [1, 2, 3]})
    fig = figures.concordance_scatter_figure(
        frame, group_order=["Mono", "T"], x_title="A RNA", y_title="A protein"
    )
    assert [t.name for t in fig.data] == ["Mono", "T"]
    assert [len(t.x) for t in fig.data] == [1, 2]
    assert fig.data[0].marker.color == figures.category_colors(["Mono", "T"])["Mono"]
