"""Label sets where cells are grouped, on a trained PBMC slice: the Annotations card's edits
(copy the types, rename "CD14+ ..." to "CD14 monocytes", merge, label a selection, undo),
the colouring and legend counts they give, Explore's compare groups, the DE page's
one-vs-rest of a category, the model card's DE metric groups, Lookup's dot plot rows and
the ``.h5mu`` export; each workspace sees its own sets."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from dash import no_update

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.export import build_mudata
from dashboard.backend.owner import acting_as
from dashboard.testing import text
from dashboard.views import label_sets as ls
from dashboard.views.colours import ColorSpec, category_counts, color_data, color_label
from dashboard.views.de import compare_choices, compare_groups, group_labels_key, group_table
from dashboard.views.expression import dotplot_tables, dotplot_title
from dashboard.views.features import feature_catalog
from dashboard.views.metrics import checked_labels_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    return {"name": "label_sets", "settings": {"de_n_samples": 200}}


@pytest.fixture(scope="module")
def env(trained_app: SimpleNamespace) -> SimpleNamespace:
    from dashboard.pages import _annotations, de, lookup

    service, pair = trained_app.service, trained_app.pair
    types = service.shown_cell_types(pair).astype(str).to_numpy()
    return SimpleNamespace(
        **vars(trained_app), card=_annotations, de=de, lookup=lookup, types=types
    )


def monocyte_type(env: SimpleNamespace) -> str:
    return next(t for t in dict.fromkeys(env.types) if t.startswith("CD14+"))


def act(env: SimpleNamespace, action: str, **kw: Any) -> tuple[str | None, str]:
    return env.card.apply_action(action, **kw)


def test_card_edits_show_in_the_colouring_and_legend(env) -> None:
    service, pair = env.service, env.pair
    mono = monocyte_type(env)
    with acting_as("alice"):
        name, status = act(env, "from_types", set_name=None, new_name="Lineage")
        assert name == "Lineage" and status.startswith("Made: “Lineage”")
        act(env, "rename", set_name="Lineage", categories=[mono], category_name="CD14 monocytes")
        spec = ColorSpec(ls.set_feature("Lineage"))
        shown = color_data(service, pair, spec)
        assert shown.categorical and "CD14 monocytes" in shown.categories
        assert mono not in shown.categories
        is_mono = env.types == mono
        assert (shown.values[is_mono] == "CD14 monocytes").all()
        assert color_label(service, pair, spec) == "Lineage (label set)"
        # the card's own patches paint the set at once, with its legend
        umap, _linked, *_ = env.card._after_edit("Lineage", [])[-3:]
        assert umap is not None
        # merge the two largest other types
        others = [t for t in dict.fromkeys(env.types) if t != mono][:2]
        act(env, "rename", set_name="Lineage", categories=others, category_name="Lymphoid")
        cats, counts, none = category_counts(service, pair, spec)
        merged = int(np.isin(env.types, others).sum())
        assert counts[cats.index("Lymphoid")] == merged and none == 0
        # label a selection: those cells move to a new category
        picked = np.flatnonzero(is_mono)[:7].tolist()
        act(
            env,
            "label_selection",
            set_name="Lineage",
            label="odd monocytes",
            selection={"cells": picked},
        )
        cats, counts, _ = category_counts(service, pair, spec)
        assert counts[cats.index("odd monocytes")] == 7
        assert counts[cats.index("CD14 monocytes")] == int(is_mono.sum()) - 7
        # undo twice: back to the rename only
        _, line = act(env, "undo", set_name="Lineage")
        assert line.startswith("Undone: label 7 cells “odd monocytes”")
        act(env, "undo", set_name="Lineage")
        assert "Lymphoid" not in category_counts(service, pair, spec)[0]
        assert "CD14 monocytes" in category_counts(service, pair, spec)[0]
    with acting_as("bob"):  # another workspace: none of it
        assert ls.label_sets(service, pair) == []
        catalog = feature_catalog(service, pair)
        assert not catalog.has(ls.set_feature("Lineage"))
        with pytest.raises(InvalidSelection, match="no label set “Lineage”"):
            color_data(service, pair, ColorSpec(ls.set_feature("Lineage")))
    with acting_as("alice"):
        assert feature_catalog(service, pair).has(ls.set_feature("Lineage"))


def test_card_refusals_are_one_line_and_change_nothing(env) -> None:
    with acting_as("carol"):
        with pytest.raises(InvalidSelection, match="select cells first"):
            act(env, "from_selection", set_name=None, new_name="Mine", label="x", selection={})
        with pytest.raises(InvalidSelection, match="make a label set first"):
            act(env, "label_selection", set_name=None, label="x", selection={"cells": [0]})
        bad = "data:text/csv;base64," + base64.b64encode(b"cell,label\nnope,T\n").decode()
        with pytest.raises(InvalidSelection, match=r"x\.csv, row 2: no cell “nope”"):
            act(env, "import", set_name=None, upload=(bad, "x.csv"))
        with pytest.raises(InvalidSelection, match="not an upload"):
            act(env, "import", set_name=None, upload=("garbage", "x.csv"))
        with pytest.raises(InvalidSelection, match="not one of the card's buttons"):
            act(env, "drop_tables", set_name=None)
        assert ls.label_sets(env.service, env.pair) == []


def test_csv_import_and_export_round_trip(env) -> None:
    service, pair = env.service, env.pair
    obs = service.dataset(pair).obs_names
    rows = "cell,label\n" + "".join(f"{obs[i]},{'A' if i % 2 else 'B'}\n" for i in range(40))
    upload = "data:text/csv;base64," + base64.b64encode(rows.encode()).decode()
    with acting_as("dave"):
        name, status = act(env, "import", set_name=None, upload=(upload, "first40.csv"))
        assert name == "first40" and "40 of" in status
        filename, csv = ls.export_csv(service, pair, "first40")
        assert filename == "labels_first40.csv"
        lines = csv.splitlines()
        assert lines[0] == "cell,first40"
        assert lines[1] == f"{obs[0]},B" and lines[2] == f"{obs[1]},A"
        assert lines[41] == f"{obs[40]},"  # not in the file: unlabelled
        assert env.card.export(1, "first40")["filename"] == "labels_first40.csv"


def test_compare_groups_and_de_of_a_category(env) -> None:
    service, pair = env.service, env.pair
    mono = monocyte_type(env)
    with acting_as("erin"):
        ls.create_from_types(service, pair, "Mine")
        ls.rename_or_merge(service, pair, "Mine", [mono], "CD14 monocytes")
        first, second = compare_choices(service, pair, None, None)
        entry = next(o for o in first if o["label"].startswith("Mine: CD14 monocytes ("))
        assert entry in second
        cells_a, _, name_a, name_b = compare_groups(
            service, pair, entry["value"], None, None, None
        )
        assert name_a == "CD14 monocytes" and name_b == "Rest"
        assert np.array_equal(cells_a, np.flatnonzero(env.types == mono))
        # the DE page: one category vs the rest, run as a job on a snapshot of the set
        key = group_labels_key(service, pair, entry["value"])
        assert key.startswith("labels@")
        job = env.de.dv.submit_group(service, pair, entry["value"], None, None, key)
        info = service.wait(job, timeout=300)
        assert info.status.finished and info.error is None, info
        table = group_table(service, pair, entry["value"], "protein", None, None, key)
        assert len(table) and (table["group1"] == "CD14 monocytes").all()
        cd14 = table[table["feature_id"].str.startswith("CD14")].iloc[0]
        assert cd14["lfc_mean"] > 1 and cd14["scale1"] > 2 * cd14["scale2"]  # up in monocytes
        with pytest.raises(InvalidSelection, match="not one of the listed"):
            group_table(service, pair, entry["value"], "protein", None, None, "../etc")


def test_metric_groups_dot_plot_and_export_follow_a_set(env) -> None:
    service, pair = env.service, env.pair
    with acting_as("frank"):
        cells = np.flatnonzero(env.types == monocyte_type(env))
        ls.create_from_cells(service, pair, "Picked", cells.tolist(), "monocytes")
        choices = ls.grouping_choices(service, pair)
        assert {"label": "Picked (label set)", "value": "labels:Picked"} in choices
        key = ls.grouping_key(service, pair, "labels:Picked")
        assert checked_labels_key(service, pair, key) == key
        with pytest.raises(InvalidSelection):
            checked_labels_key(service, pair, "labels:Picked")  # a live key is not a job's
        groups, what = service.metric_groups(pair, labels_key=key)
        assert what == "the label set “Picked” (chosen)"
        assert set(groups.astype(str)) == {"monocytes", "unlabelled"}
        mean, _frac = dotplot_tables(service, pair, ["gene:LYZ"], grouping="labels:Picked")
        assert list(mean.index) == ["monocytes", "unlabelled"]
        assert mean.loc["monocytes"].iloc[0] > mean.loc["unlabelled"].iloc[0]  # LYZ
        assert "per group of label set “Picked”" in dotplot_title(service, pair, "labels:Picked")
        with pytest.raises(InvalidSelection, match="not one of the listed"):
            ls.grouping_key(service, pair, "obs:../../x")
        mdata = build_mudata(service, pair)
        col = mdata.obs["labels_Picked"]
        assert int((col == "monocytes").sum()) == len(cells)
    with acting_as("gina"):
        assert "labels_Picked" not in build_mudata(service, pair).obs


def test_the_page_lists_sets_and_the_legend_updates(env) -> None:
    from dashboard.pages import explore

    with acting_as("hana"):
        ls.create_from_types(env.service, env.pair, "Shown")
        page = explore.layout()
        assert "Annotations" in text(page)


def test_the_edit_callback_sets_every_output_it_declares(env) -> None:
    edit = env.card.register.__globals__["_after_edit"]
    with acting_as("iris"):
        ls.create_from_types(env.service, env.pair, "Types")
        out = edit("Types", [])
        assert len(out) == env.card.N_AFTER_EDIT
        assert out[5] == ls.set_feature("Types")  # Explore's "Colour by" now shows the set
        assert out[10] is not no_update  # the linked view follows the page's colouring
        # a blend (or an embedding coloured apart) keeps its own colours
        assert edit("Types", [], "blend", None)[10] is no_update
        assert edit("Types", [], "embedding", "gene:LYZ")[10] is no_update
