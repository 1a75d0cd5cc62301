"""Names as shown: feature display names, automatic cluster names on synthetic markers and
the store of renamed cell types (fast: no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from dashboard.backend.clustering import MAX_NAME_LENGTH, name_clusters, natural_key
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.names import (
    CellTypeNames,
    check_type_name,
    display_name,
    short_protein_name,
    short_protein_names,
)
from dashboard.backend.refs import DatasetRef, ModelRef, Pair


# ------------------------------------------------------------------------ display names
def test_display_name_of_genes_and_proteins() -> None:
    assert display_name("gene:CD3E") == "CD3E"
    assert display_name("protein:CD19_TotalSeqB") == "CD19 protein"
    # a gene and a protein of the same symbol never read alike
    assert display_name("gene:CD4") == "CD4"
    assert display_name("protein:CD4_TotalSeqB") == "CD4 protein"
    assert display_name("protein:CD8a") == "CD8a protein"
    # the dataset's distinct short names win; genes may carry a shown name
    shorts = {"CD4_TotalSeqB": "CD4_TotalSeqB"}
    assert display_name("protein:CD4_TotalSeqB", proteins=shorts) == "CD4_TotalSeqB protein"
    assert display_name("gene:COG8-1", genes={"COG8-1": "COG8 (2nd)"}) == "COG8 (2nd)"
    assert display_name("obs:cell_type") == "obs:cell_type"
    assert display_name("LYZ") == "LYZ"


def test_short_protein_names_stay_distinct() -> None:
    assert short_protein_name("CD14_TotalSeqB") == "CD14"
    assert short_protein_name("CD14_ADT") == "CD14"
    names = short_protein_names(["CD4_TotalSeqB", "CD4_TotalSeqC", "CD8a_TotalSeqB", "CD3"])
    assert names == {
        "CD4_TotalSeqB": "CD4_TotalSeqB",
        "CD4_TotalSeqC": "CD4_TotalSeqC",
        "CD8a_TotalSeqB": "CD8a",
        "CD3": "CD3",
    }
    shown = {display_name(f"protein:{p}", proteins=names) for p in names}
    assert len(shown) == 4


def test_natural_order_of_marker_names() -> None:
    assert sorted(["CD127", "CD14", "CD4", "CD3", "PD-1"], key=natural_key) == [
        "CD3",
        "CD4",
        "CD14",
        "CD127",
        "PD-1",
    ]


# ------------------------------------------------------------------------ cluster names
def _synthetic(seed: int = 0) -> dict:
    """Four clusters of 100 cells: 0 (protein P0 up, gene G_A), 1 and 2 (P1 and P2 up, the
    same strongest gene G_BC, told apart by G_B / G_C), 3 (no protein specific); protein P3
    is above background in every cell and strongest in 3 (the "CD15 on NK cells" trap)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(["0", "1", "2", "3"], 100)
    genes = ["G_A", "G_BC", "G_B", "G_C", "MT-CO1", "HOUSE", "G_D1", "G_D2"]
    rna = rng.poisson(1.0, size=(400, len(genes))).astype(np.float32)
    rna[:, 5] += 20  # a housekeeping gene everywhere
    rna[labels == "0", 0] += 30
    rna[np.isin(labels, ["1", "2"]), 1] += 60
    rna[labels == "1", 2] += 12
    rna[labels == "2", 3] += 12
    rna[labels == "3", 4] += 80  # mitochondrial: never named while another gene fits
    rna[labels == "3", 6] += 8
    rna[labels == "3", 7] += 6
    protein = rng.gamma(2.0, 1.0, size=(400, 4))
    fg = np.full((400, 4), 0.1)
    protein[labels == "0", 0] += 50
    fg[labels == "0", 0] = 0.95
    both = np.isin(labels, ["1", "2"])
    protein[both, 1] += 40
    protein[both, 2] += 30
    fg[both, 1:3] = 0.9
    protein[labels == "3", 3] += 30  # many-fold up, but "foreground" in every cell
    fg[:, 3] = 0.99
    return {
        "labels": labels,
        "rna": sp.csr_matrix(rna),
        "protein": protein,
        "foreground": fg,
        "var_names": genes,
        "protein_names": ["P0_TotalSeqB", "P1_TotalSeqB", "P2_TotalSeqB", "P3_TotalSeqB"],
    }


def test_cluster_names_are_short_distinct_and_name_only_proteins_that_are_up() -> None:
    names = name_clusters(**_synthetic())
    assert names["0"] == "P0+ G_A"
    # same marker set: each gets the gene that tells it from the other, proteins in order
    assert names["1"] == "P1+P2+ G_B"
    assert names["2"] == "P1+P2+ G_C"
    # P3 is up many-fold in cluster 3 but above background everywhere: not named
    assert "P3" not in names["3"]
    assert names["3"] == "G_D1/G_D2"  # genes only, and no mitochondrial gene
    assert len(set(names.values())) == 4
    assert all(len(n) <= MAX_NAME_LENGTH for n in names.values())


def test_cluster_names_read_the_same_whatever_the_protein_order() -> None:
    args = _synthetic()
    swap = [0, 2, 1, 3]
    args["protein_names"] = [args["protein_names"][j] for j in swap]
    args["protein"] = args["protein"][:, swap]
    args["foreground"] = args["foreground"][:, swap]
    assert name_clusters(**args)["1"] == "P1+P2+ G_B"


def test_cluster_names_without_proteins() -> None:
    args = _synthetic()
    args["protein"] = np.zeros((400, 0))
    args["foreground"] = np.zeros((400, 0))
    args["protein_names"] = []
    names = name_clusters(**args)
    assert len(set(names.values())) == 4
    assert names["0"].startswith("G_A")


# --------------------------------------------------------------------- renamed types
def _pair(d: str = "d" * 64, m: str = "m" * 64) -> Pair:
    return Pair(DatasetRef(fingerprint=d), ModelRef(fingerprint=m))


def test_type_name_checks_give_one_line() -> None:
    shown = {"CD14+ S100A8": "Classical monocytes", "CD19+ CD79A": "CD19+ CD79A"}
    assert check_type_name("  B cells ", "CD19+ CD79A", shown) == "B cells"
    refusals = [
        ("", "type a new name"),
        ("   ", "type a new name"),
        ("x" * 61, "at most 60 characters"),
        ("B\ncells", "control characters"),
        ("B\tcells", "control characters"),
        ("classical MONOCYTES", "already the name of another cell type"),
    ]
    for new, message in refusals:
        with pytest.raises(InvalidSelection, match=message) as err:
            check_type_name(new, "CD19+ CD79A", shown)
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidSelection, match="no cell type"):
        check_type_name("B cells", "not a type", shown)
    # a type may keep (or re-type) its own name
    assert check_type_name("CD19+ CD79A", "CD19+ CD79A", shown) == "CD19+ CD79A"


def test_renames_are_one_json_file_per_pair_written_atomically(tmp_path) -> None:
    store = CellTypeNames(tmp_path / "names")
    pair, other = _pair(), _pair(m="n" * 64)
    ids = ["A", "B"]
    assert store.get(pair) == {}
    assert store.rename(pair, "A", "Monocytes", ids) == {"A": "Monocytes"}
    files = list((tmp_path / "names").iterdir())
    assert files == [store.path(pair)]  # no temporary file left behind
    body = json.loads(files[0].read_text())
    assert body == {
        "dataset": pair.dataset.fingerprint,
        "model": pair.model.fingerprint,
        "names": {"A": "Monocytes"},
        "previous": [{}],  # the state before, for Undo
    }
    # a new store over the same folder (a restart, another process) reads the same names
    assert CellTypeNames(tmp_path / "names").get(pair) == {"A": "Monocytes"}
    assert store.get(other) == {}  # per dataset and model
    with pytest.raises(InvalidSelection, match="already the name"):
        store.rename(pair, "B", "monocytes", ids)
    assert store.get(pair) == {"A": "Monocytes"}  # a refusal changes nothing
    assert store.rename(pair, "A", "A", ids) == {}  # back to its own name: no rename left
    store.rename(pair, "B", "B cells", ids)
    store.reset(pair)
    assert store.get(pair) == {}
    # undo steps back over the reset, the renames, then says there is nothing left
    assert store.undo(pair) == {"B": "B cells"}
    assert store.undo(pair) == {}
    assert store.undo(pair) == {"A": "Monocytes"}
    assert store.undo(pair) == {}
    assert not store.path(pair).exists()  # nothing renamed, nothing to undo: no file
    with pytest.raises(InvalidSelection, match="no rename to undo"):
        store.undo(pair)
    for i in range(30):  # the history is bounded
        store.rename(pair, "A", f"Mono {i}", ids)
    assert len(json.loads(store.path(pair).read_text())["previous"]) == 20
    store.reset(pair)
    store.path(pair).write_text("{not json")
    assert store.get(pair) == {}  # a damaged file reads as no renames
