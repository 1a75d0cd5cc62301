"""Gene sets (dashboard/backend/gene_sets.py, dashboard/views/gene_sets.py, gene_set_keys.py):
the per-cell score against a direct numpy computation, parsing and matching of pasted and
uploaded lists, the colour key (forged keys refused), the colouring, the high/low quartiles
and the sets a workspace keeps.

A small simulated dataset and an untrained model (the score's definition holds for any
weights); the matching runs on a hand-made catalog with PBMC-like names.
"""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.gene_sets import MAX_FEATURES, GeneSetScore
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views import gene_sets as V
from dashboard.views.colours import ColorSpec, color_data, color_label, color_note, layer_options
from dashboard.views.features import FeatureCatalog, feature_catalog
from dashboard.views.gene_set_keys import MAX_KEY, decode_set, known_set, make_set
from dashboard.views.state import ActiveState
from dashboard.views.workspaces import Workspaces
from model.data import from_anndata
from model.simulate import simulate_cite_seq
from model.totalvi import TotalVI


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    adata = simulate_cite_seq(
        n_cells=240, n_genes=60, n_proteins=8, n_batches=2, n_cell_types=3, seed=3
    )
    data = from_anndata(adata, batch_key="batch")
    model = TotalVI(data, n_hidden=32, n_latent=5, seed=0)
    root = tmp_path_factory.mktemp("gene_sets")
    service = AnalysisService(
        Settings(cache_dir=root / "cache", model_dir=root / "models", denoise_n_samples=3)
    )
    pair = service.add_model(service.add_dataset(data, name="sim"), model)
    yield service, pair, data
    service.close()


def _direct_score(service, pair, genes, proteins) -> np.ndarray:
    """The definition, by hand: mean over features of (x - mean) / sd, x = log1p(denoised)."""
    cols = [np.log1p(service.denoised_rna(pair, [g])[g].to_numpy(np.float64)) for g in genes]
    table = service.denoised_protein(pair)
    cols += [np.log1p(table[p].to_numpy(np.float64)) for p in proteins]
    x = np.column_stack(cols)
    return ((x - x.mean(0)) / x.std(0)).mean(1)


def test_score_is_the_mean_z_scored_log_denoised_value(env) -> None:
    service, pair, data = env
    genes = [str(g) for g in data.var_names[[3, 10, 41]]]
    proteins = [str(p) for p in data.protein_names[[0, 5]]]
    t0 = time.perf_counter()
    score = service.gene_set_score(pair, genes, proteins)
    elapsed = time.perf_counter() - t0
    assert isinstance(score, GeneSetScore)
    assert score.values.shape == (data.n_cells,) and score.values.dtype == np.float32
    np.testing.assert_allclose(
        score.values, _direct_score(service, pair, genes, proteins), atol=1e-5
    )
    assert score.genes == tuple(sorted(genes)) and score.proteins == tuple(sorted(proteins))
    assert score.dropped == ()
    assert abs(float(score.values.mean())) < 1e-5  # z-scores average to 0 over the cells
    # content-keyed: another order is the same key, read back (the same values)
    again = service.gene_set_score(pair, genes[::-1] + genes[:1], proteins[::-1])
    np.testing.assert_array_equal(again.values, score.values)
    print(f"score of 5 features over {data.n_cells} cells: {elapsed * 1000:.0f} ms")


def test_a_constant_feature_is_dropped_with_a_note(env, monkeypatch) -> None:
    service, pair, data = env
    part = service.gene_sets
    n = data.n_cells
    rng = np.random.default_rng(0)
    varying = rng.normal(size=(n, 2))

    def fake(_pair, genes, proteins):
        yield "gene", genes, np.column_stack([varying, np.full(n, 2.5)])
        yield "protein", proteins, np.full((n, 1), 1.0)

    monkeypatch.setattr(part, "_log_values", fake)
    score = part._score(pair, ("a", "b", "c"), ("p",), None)
    assert score.dropped == ("gene:c", "protein:p")
    assert score.genes == ("a", "b") and score.proteins == ()
    z = (varying - varying.mean(0)) / varying.std(0)
    np.testing.assert_allclose(score.values, z.mean(1), atol=1e-6)

    def flat(_pair, genes, proteins):
        yield "gene", genes, np.ones((n, len(genes)))

    monkeypatch.setattr(part, "_log_values", flat)
    with pytest.raises(InvalidSelection, match="constant across cells"):
        part._score(pair, ("a",), (), None)


def test_score_refuses_unknown_empty_and_too_many(env) -> None:
    service, pair, _ = env
    with pytest.raises(InvalidSelection, match="no gene"):
        service.gene_set_score(pair, ["NOT_A_GENE"], [])
    with pytest.raises(InvalidSelection, match="no protein"):
        service.gene_set_score(pair, [], ["NOPE"])
    with pytest.raises(InvalidSelection, match="empty"):
        service.gene_set_score(pair, [], [])
    with pytest.raises(InvalidSelection, match="at most"):
        service.gene_set_score(pair, [f"g{i}" for i in range(MAX_FEATURES + 1)], [])
    with pytest.raises(InvalidSelection, match="lists of names"):
        service.gene_set_score(pair, "gene0001", [])


# ---------------------------------------------------------------------------- parsing
CATALOG = FeatureCatalog(
    obs=[("obs:cell_type", "Cell type")],
    genes=["CD3E", "CD8A", "CD4", "MS4A1", "LYZ", "Cd99"],
    proteins=["CD3_TotalSeqB", "CD4_TotalSeqB", "CD8a_TotalSeqB", "CD19_TotalSeqB"],
)


def test_text_is_split_on_commas_spaces_and_lines() -> None:
    text = "CD3E, cd8a;MS4A1\n\nLYZ\tCD4 (protein)  protein:CD3  CD3E"
    assert V.text_entries(text) == ["CD3E", "cd8a", "MS4A1", "LYZ", "CD4(protein)", "protein:CD3"]
    assert V.text_entries("gene\nCD3E\nLYZ") == ["CD3E", "LYZ"]  # a file's header line
    assert V.text_entries(None) == [] and V.text_entries("  \n ") == []


def test_matching_is_case_insensitive_and_says_what_it_picked() -> None:
    parsed = V.match_entries(
        "T cells",
        V.text_entries("cd3e CD8A cd4 CD19 cd8a_totalseqb protein:cd4 FOO bar cd99"),
        CATALOG,
    )
    gs = parsed.gene_set
    assert gs.genes == ("CD3E", "CD4", "CD8A", "Cd99")  # CD4 plain: the gene
    assert gs.proteins == ("CD19_TotalSeqB", "CD4_TotalSeqB", "CD8a_TotalSeqB")  # short names too
    assert parsed.unknown == ("FOO", "bar")
    line = parsed.summary()
    assert line.startswith("T cells: 4 genes, 3 proteins.")
    assert "Not found (2): FOO, bar." in line
    both = "CD8A, cd4: gene and protein; took the gene (write protein:CD8A for the protein)."
    assert both in line
    only = V.match_entries("x", ["CD4(protein)", "gene:CD19"], CATALOG)
    assert only.gene_set.proteins == ("CD4_TotalSeqB",) and only.gene_set.genes == ()
    assert only.unknown == ("gene:CD19",)  # asked for a gene CD19: there is none


def test_a_set_with_no_known_entry_is_refused_naming_them() -> None:
    with pytest.raises(InvalidSelection, match=r"none of the entries .*: FOO, BAR"):
        V.match_entries("x", ["FOO", "BAR"], CATALOG)
    with pytest.raises(InvalidSelection, match="name"):
        V.match_entries("", ["CD3E"], CATALOG)
    with pytest.raises(InvalidSelection, match="may have letters"):
        V.match_entries("a=b,c", ["CD3E"], CATALOG)


def test_size_limits_and_binary_uploads() -> None:
    with pytest.raises(InvalidSelection, match="at most 500"):
        V.text_entries(" ".join(f"G{i}" for i in range(501)))
    with pytest.raises(InvalidSelection, match="too long"):
        V.text_entries("A" * (V.MAX_TEXT_BYTES + 1))
    with pytest.raises(InvalidSelection, match="over 64 characters"):
        V.text_entries("CD3E " + "X" * 65)
    with pytest.raises(InvalidSelection, match="control characters"):
        V.text_entries("CD3E\x00LYZ")
    with pytest.raises(InvalidSelection, match="must be text"):
        V.text_entries(["CD3E"])

    def upload(raw: bytes) -> str:
        return "data:text/csv;base64," + base64.b64encode(raw).decode()

    assert V.upload_text(upload(b"\xef\xbb\xbfgene\nCD3E\nLYZ\n"), "t.csv") == "gene\nCD3E\nLYZ\n"
    with pytest.raises(InvalidSelection, match="not a text file"):
        V.upload_text(upload(b"PK\x03\x04\x00\x00binary"), "x.zip")
    with pytest.raises(InvalidSelection, match="not UTF-8"):
        V.upload_text(upload(b"\xff\xfe\xfa"), "x.txt")
    with pytest.raises(InvalidSelection, match="too large"):
        V.upload_text(upload(b"A\n" * V.MAX_TEXT_BYTES), "big.txt")
    with pytest.raises(InvalidSelection, match="damaged"):
        V.upload_text("data:text/plain;base64,@@@@", "x.txt")
    for forged in (None, 42, "no comma", "text/plain,QUJD"):
        with pytest.raises(InvalidSelection, match="could not be read"):
            V.upload_text(forged, "x.txt")


# ------------------------------------------------------------------------------ keys
def test_keys_round_trip_and_forged_keys_are_refused_in_one_line() -> None:
    gs = make_set("T cells", ["CD8A", "CD3E", "CD3E"], ["CD3_TotalSeqB"])
    assert gs.key == "set:T cells=gene:CD3E,gene:CD8A,protein:CD3_TotalSeqB"
    assert decode_set(gs.key) == gs and known_set(gs.key, CATALOG) == gs
    assert CATALOG.has(gs.key) and CATALOG.label(gs.key) == "Gene set: T cells"
    forged = {
        "set:T cells": "no members",
        "set:T cells=": "no members",
        "set:T cells=obs:cell_type": "member",
        "set:T cells=gene:CD3E,,gene:LYZ": "member",
        "set:=gene:CD3E": "name",
        "set:<script>=gene:CD3E": "may have letters",
        "set:T=gene:" + "A" * MAX_KEY: "too long",
        "set:T=" + ",".join(f"gene:G{i}" for i in range(501)): "at most 500",
        "gene:CD3E": "not a gene set",
    }
    for key, problem in forged.items():
        with pytest.raises(InvalidSelection, match=problem) as err:
            decode_set(key)
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidSelection, match="lacks: NOPE"):
        known_set("set:T=gene:CD3E,gene:NOPE", CATALOG)
    assert not CATALOG.has("set:T=gene:CD3E,gene:NOPE") and not CATALOG.has("set:T=oops")
    # the colour store keeps a set's kind; no value layer applies to it
    spec = ColorSpec.from_state({"feature": gs.key, "layer": "denoised"})
    assert spec.kind == "set" and spec.feature == gs.key
    assert all(o["disabled"] for o in layer_options(gs.key))


# ------------------------------------------------------------------------- colouring
def test_a_set_colours_the_cells_by_its_score(env) -> None:
    service, pair, data = env
    catalog = feature_catalog(service, pair)
    genes, proteins = catalog.genes[:4], catalog.proteins[:2]
    key = make_set("Mine", genes, proteins).key
    spec = ColorSpec.from_state({"feature": key})
    shown = color_data(service, pair, spec)
    expected = service.gene_set_score(pair, genes, proteins).values
    assert not shown.categorical
    np.testing.assert_array_equal(shown.values, expected)
    np.testing.assert_array_equal(
        color_data(service, pair, spec, np.arange(5)).values, expected[:5]
    )
    assert color_label(service, pair, spec).startswith("Gene set: Mine · score")
    note = color_note(service, pair, spec)
    assert f"Mine: score of 4 genes and 2 proteins over {data.n_cells:,} cells." in note
    assert "z-scored (across all cells) log1p denoised" in note
    forged = ColorSpec.from_state({"feature": "set:Mine=gene:NOPE"})
    with pytest.raises(InvalidSelection, match="lacks: NOPE"):
        color_data(service, pair, forged)


def test_violin_and_high_low_quartiles(env) -> None:
    service, pair, data = env
    catalog = feature_catalog(service, pair)
    key = make_set("Mine", catalog.genes[:5], []).key
    frame, order, gs = V.score_violin_frame(service, pair, key)
    types = service.shown_cell_types(pair).astype(str)
    assert sorted(order) == sorted(set(types)) and len(frame) == data.n_cells
    values = service.gene_set_score(pair, gs.genes, ()).values
    np.testing.assert_array_equal(np.sort(frame["score"].to_numpy()), np.sort(values))
    high, low, name_a, name_b = V.high_low_cells(service, pair, key)
    assert name_a == "Mine high (top 25%)" and name_b == "Mine low (bottom 25%)"
    assert abs(len(high) - data.n_cells / 4) <= 2 and abs(len(low) - data.n_cells / 4) <= 2
    assert values[high].min() > values[low].max()
    assert not np.intersect1d(high, low).size


# ---------------------------------------------------------------------------- saving
def test_saved_sets_are_bounded_and_checked_on_every_read(tmp_path) -> None:
    store: dict = {}
    for i in range(V.MAX_SAVED + 3):
        store = V.with_saved(store, "ds1", make_set(f"s{i}", ["CD3E"], []))
    names = [gs.name for gs in V.saved_sets(store, "ds1", CATALOG)]
    assert len(names) == V.MAX_SAVED and names[0] == "s3" and names[-1] == f"s{V.MAX_SAVED + 2}"
    store = V.with_saved(store, "ds1", make_set("s3", ["LYZ"], []))  # same name: replaced
    mine = V.saved_sets(store, "ds1", CATALOG)
    assert [gs.name for gs in mine].count("s3") == 1 and mine[-1].genes == ("LYZ",)
    store = V.without_saved(store, "ds1", "s3")
    assert "s3" not in [gs.name for gs in V.saved_sets(store, "ds1", CATALOG)]
    forged = {
        "ds1": {"a": "set:a=gene:NOPE", "b": "set:x=gene:CD3E", "c": 3, "d": "set:d=gene:LYZ"}
    }
    assert [gs.name for gs in V.saved_sets(forged, "ds1", CATALOG)] == ["d"]
    assert V.saved_sets("junk", "ds1", CATALOG) == [] and V.saved_sets({}, "ds1", CATALOG) == []
    for i in range(V.MAX_DATASETS + 2):
        store = V.with_saved(store, f"other{i}", make_set("t", ["CD3E"], []))
    assert len(store) == V.MAX_DATASETS and f"other{V.MAX_DATASETS + 1}" in store


def test_workspace_keeps_the_gene_sets(env, tmp_path) -> None:
    service, _, _ = env
    workspaces = Workspaces(ActiveState(service, warm=False), tmp_path / "ws")
    store = V.with_saved({}, "ds1", make_set("T cells", ["CD3E", "CD8A"], ["CD3_TotalSeqB"]))
    workspaces.save_view("u-alice", gene_sets=store)
    assert workspaces.view("u-alice")["gene_sets"] == store
    assert "gene_sets" not in workspaces.view("u-bob")
    # another store saved later leaves the sets as they were
    workspaces.save_view("u-alice", color={"feature": "gene:CD3E"})
    again = Workspaces(ActiveState(service, warm=False), tmp_path / "ws")  # after a restart
    assert again.view("u-alice")["gene_sets"] == store
