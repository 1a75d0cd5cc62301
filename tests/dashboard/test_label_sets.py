"""The label-set store (no model): sets from labels and from cells, rename, merge and
delete of categories, undo, per-workspace files written atomically, CSV import/export
with one-line refusals, snapshots for jobs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.label_sets import (
    MAX_NAME,
    UNDO_DEPTH,
    UNLABELLED,
    LabelSets,
    labels_csv,
    parse_labels_csv,
)
from dashboard.backend.owner import acting_as
from dashboard.backend.refs import DatasetRef, ModelRef, Pair

N = 12
OBS = pd.Index([f"cell{i:02d}" for i in range(N)])
TYPES = pd.Series(
    pd.Categorical(
        ["CD14+ S100A9/LYZ"] * 4 + ["CD3+ IL7R"] * 5 + ["CD19+ MS4A1"] * 3,
        categories=["CD3+ IL7R", "CD14+ S100A9/LYZ", "CD19+ MS4A1"],
    ),
    index=OBS,
)


@pytest.fixture
def store(tmp_path) -> LabelSets:
    return LabelSets(tmp_path)


@pytest.fixture
def pair() -> Pair:
    return Pair(DatasetRef(fingerprint="d" * 40), ModelRef(fingerprint="m" * 40))


def labels_of(s) -> list[str]:
    return s.series(OBS).astype(str).tolist()


def test_copy_of_types_keeps_their_order_and_every_cell(store, pair) -> None:
    with acting_as("alice"):
        s = store.create(pair, N, "Lineage", labels=TYPES)
    assert s.categories == ("CD3+ IL7R", "CD14+ S100A9/LYZ", "CD19+ MS4A1")
    assert labels_of(s) == TYPES.astype(str).tolist()
    assert s.counts() == {"CD3+ IL7R": 5, "CD14+ S100A9/LYZ": 4, "CD19+ MS4A1": 3}


def test_rename_merge_delete_and_undo_step_back_exactly(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        s = store.rename_category(pair, N, "Lineage", "CD14+ S100A9/LYZ", " CD14 monocytes ")
        assert "CD14 monocytes" in s.categories
        assert labels_of(s)[:4] == ["CD14 monocytes"] * 4
        # renaming onto another category's name says to merge (case ignored)
        with pytest.raises(InvalidSelection, match="merge"):
            store.rename_category(pair, N, "Lineage", "CD3+ IL7R", "cd19+ ms4a1")
        s = store.merge(pair, N, "Lineage", ["CD3+ IL7R", "CD19+ MS4A1"], "Lymphocytes")
        assert s.categories == ("Lymphocytes", "CD14 monocytes")
        assert labels_of(s) == ["CD14 monocytes"] * 4 + ["Lymphocytes"] * 8
        s = store.delete_category(pair, N, "Lineage", "CD14 monocytes")
        assert s.categories == ("Lymphocytes",)
        assert labels_of(s) == [UNLABELLED] * 4 + ["Lymphocytes"] * 8
        steps = store.undo_steps(pair, N)
        assert steps[0].startswith("delete category “CD14 monocytes”")
        assert store.undo(pair, N).startswith("delete category")
        assert labels_of(store.get(pair, N, "lineage"))[:4] == ["CD14 monocytes"] * 4
        store.undo(pair, N)  # the merge
        assert store.get(pair, N, "Lineage").categories == (
            "CD3+ IL7R",
            "CD14 monocytes",
            "CD19+ MS4A1",
        )
        store.undo(pair, N)  # the rename
        assert labels_of(store.get(pair, N, "Lineage")) == TYPES.astype(str).tolist()
        store.undo(pair, N)  # the set itself
        assert store.sets(pair, N) == []
        with pytest.raises(InvalidSelection, match="nothing to undo"):
            store.undo(pair, N)


def test_merge_into_one_of_the_merged_keeps_its_place(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        s = store.merge(pair, N, "Lineage", ["CD19+ MS4A1", "CD3+ IL7R"], "CD3+ IL7R")
    assert s.categories == ("CD3+ IL7R", "CD14+ S100A9/LYZ")
    assert s.counts() == {"CD3+ IL7R": 8, "CD14+ S100A9/LYZ": 4}


def test_a_set_from_the_selection_and_labelling_more_cells(store, pair) -> None:
    with acting_as("alice"):
        s = store.create(pair, N, "Mine", cells=[0, 1, 2], label="odd ones")
        assert labels_of(s) == ["odd ones"] * 3 + [UNLABELLED] * 9
        s = store.label_cells(pair, N, "Mine", [2, 3], "others")
        assert s.counts() == {"odd ones": 2, "others": 2}
        s = store.label_cells(pair, N, "Mine", [0, 1], "Others")  # the same category
        assert s.counts() == {"others": 4}  # "odd ones" has no cell left: dropped
        with pytest.raises(InvalidSelection, match="no cells selected"):
            store.label_cells(pair, N, "Mine", [], "x")
        with pytest.raises(InvalidSelection, match="outside"):
            store.label_cells(pair, N, "Mine", [N], "x")
        with pytest.raises(InvalidSelection, match="not a list of cell positions"):
            store.label_cells(pair, N, "Mine", ["a"], "x")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "type a name"),
        ("x" * (MAX_NAME + 1), "at most"),
        ("tab\there", "control characters"),
        ("Unlabelled", "cells without a label"),
        (None, "type a name"),
    ],
)
def test_bad_names_are_refused_in_one_line(store, pair, name, match) -> None:
    with acting_as("alice"), pytest.raises(InvalidSelection, match=match):
        store.create(pair, N, "Set", cells=[0], label=name)
    with acting_as("alice"), pytest.raises(InvalidSelection, match=match):
        store.create(pair, N, name, cells=[0], label="fine")


def test_set_names_are_distinct_and_unknown_sets_are_named(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        with pytest.raises(InvalidSelection, match="already a label set"):
            store.create(pair, N, "LINEAGE", labels=TYPES)
        with pytest.raises(InvalidSelection, match=r"no label set “Other”.*“Lineage”"):
            store.get(pair, N, "Other")


def test_workspaces_do_not_see_each_others_sets(store, pair, tmp_path) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
    with acting_as("bob"):
        assert store.sets(pair, N) == []
        store.create(pair, N, "Lineage", cells=[1], label="mine")
        assert store.get(pair, N, "Lineage").counts() == {"mine": 1}
    with acting_as("alice"):
        assert store.get(pair, N, "Lineage").counts()["CD3+ IL7R"] == 5
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    assert files == [
        f"workspaces/u-alice/labels-{'d' * 32}.json",
        f"workspaces/u-bob/labels-{'d' * 32}.json",
    ]
    assert not list(tmp_path.rglob("*.tmp"))  # written to a temp file, then renamed


def test_a_fresh_store_reads_what_another_wrote(store, pair, tmp_path) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        again = LabelSets(tmp_path)  # another process, a restarted server
        assert labels_of(again.get(pair, N, "Lineage")) == TYPES.astype(str).tolist()
        assert again.undo_steps(pair, N) == ["new label set “Lineage”"]
        # another dataset (or another size) has no sets
        assert again.sets(pair, N + 1) == []


def test_a_damaged_file_loses_its_sets_not_the_page(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        path = store.path(pair)
        body = json.loads(path.read_text())
        body["sets"][0]["codes"] = "bm90IHpsaWI="  # base64, not zlib
        path.write_text(json.dumps(body))
        assert store.sets(pair, N) == []
        path.write_text("{not json")
        assert store.sets(pair, N) == []
        store.create(pair, N, "New", cells=[0], label="a")  # and it can be written again
        assert [s.name for s in store.sets(pair, N)] == ["New"]


def test_undo_keeps_a_bounded_history(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Mine", cells=[0], label="a")
        for i in range(UNDO_DEPTH + 5):
            store.label_cells(pair, N, "Mine", [i % N], f"l{i}")
        assert len(store.undo_steps(pair, N)) == UNDO_DEPTH


def test_csv_round_trip_and_partial_files(pair) -> None:
    s_types = pd.Series(TYPES.astype(str).to_numpy(), index=OBS)
    s_types.iloc[[0, 5]] = ""
    text = "cell,label\n" + "\n".join(f"{c},{v}" for c, v in s_types.items() if v) + "\n"
    parsed = parse_labels_csv(text.encode(), OBS)
    assert parsed.tolist() == s_types.tolist()  # cells not in the file: unlabelled
    # a label column found by name, a tab-separated file, a BOM
    tsv = "\ufeffbarcode\tscore\tlabel\ncell03\t1\tB\n".encode()
    assert parse_labels_csv(tsv, OBS).iloc[3] == "B"


def test_export_then_import_gives_the_same_set(store, pair) -> None:
    with acting_as("alice"):
        s = store.create(pair, N, "Mine", cells=[2, 4], label="picked")
        csv = labels_csv(s, OBS)
        assert csv.splitlines()[:4] == ["cell,Mine", "cell00,", "cell01,", "cell02,picked"]
        back = store.import_csv(pair, OBS, "Again", csv.encode(), filename="mine.csv")
        assert np.array_equal(back.codes, s.codes) and back.categories == s.categories


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"cell,label\ncell01,T\nnope,B\n", r"labels\.csv, row 3: no cell “nope”"),
        (b"cell,label\ncell01,T\ncell01,B\n", "cell “cell01” is listed more than once"),
        (b"cell\ncell01\n", "needs two columns"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"cell,label\ncell01,unlabelled\n", r"row 2, column “label”: .*without a label"),
    ],
)
def test_bad_csv_files_are_refused_naming_the_row_or_cell(store, pair, content, match) -> None:
    with acting_as("alice"), pytest.raises(InvalidSelection, match=match):
        store.import_csv(pair, OBS, "X", content, filename="labels.csv")
    with acting_as("alice"):
        assert store.sets(pair, N) == []  # nothing half-made


def test_snapshots_name_the_content_and_refuse_forgeries(store, pair) -> None:
    with acting_as("alice"):
        store.create(pair, N, "Lineage", labels=TYPES)
        key = store.snapshot_key(pair, N, "Lineage")
        assert key.startswith("labels@") and len(key) == len("labels@") + 32
        assert store.snapshot_key(pair, N, "lineage") == key  # the same labels, the same key
    with acting_as("bob"):  # a job reads it with no workspace at all
        snap = store.snapshot(pair, N, key)
        store.create(pair, N, "Copy", labels=TYPES)
        assert store.snapshot_key(pair, N, "Copy") == key  # content, not name or owner
    with acting_as(None):
        assert labels_of(store.snapshot(pair, N, key)) == TYPES.astype(str).tolist()
    assert snap.categories[0] == "CD3+ IL7R"
    for forged in ("labels@../../etc/passwd", "labels@" + "0" * 32, "labels@", key + "x"):
        with pytest.raises(InvalidSelection, match="gone"):
            store.snapshot(pair, N, forged)
    other = Pair(DatasetRef(fingerprint="e" * 40), pair.model)
    with pytest.raises(InvalidSelection, match="gone"):
        store.snapshot(other, N, key)
