"""The Metrics page with an scvi-hub model card beside the checkpoint: the card's parameters
and summary statistics beside this data, each card metric table beside ours with the
difference, one line when the card gives no metrics, nothing when there is no card, and for
minified data the card's tables alone with no metrics job. A small model on a PBMC slice."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dash import no_update

from dashboard import ids
from dashboard.backend import card as hub
from dashboard.backend.metrics import CV_ROWS, MetricsResult, model_card_markdown
from dashboard.testing import find, text, walk
from model.data import MinifiedPosterior
from model.hub_card import HubCard, parse_model_card

SEEDLIKE_CARD = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "scvi_tools_1.4.2_mudata_seedlike_800"
    / "README.md"
)
CARD_ONLY_TYPE = "Card-only type"


# ------------------------------------------------------------------- pure comparisons
def test_compare_tables_aligns_rows_and_columns_by_name() -> None:
    card = pd.DataFrame(
        {"Training Value": [0.5, 0.9], "Validation Value": [0.25, 0.8]},
        index=pd.Index(["Mean Absolute Error", "pearson  correlation"], name="Metric"),
    )
    ours = pd.DataFrame(
        {"Training Value": [0.6, 0.85, 0.7]},
        index=pd.Index(["Mean Absolute Error", "Pearson Correlation", "Extra"], name="Metric"),
    )
    out = hub.compare_tables(card, ours)
    assert list(out.index) == ["Mean Absolute Error", "pearson  correlation", "Extra"]
    assert list(out.columns) == [
        "Training Value: card",
        "Training Value: ours",
        "Training Value: ours − card",
        "Validation Value: card",
        "Validation Value: ours",
        "Validation Value: ours − card",
    ]
    assert out.loc["Mean Absolute Error", "Training Value: ours − card"] == pytest.approx(0.1)
    assert out.loc["pearson  correlation", "Training Value: ours"] == 0.85  # case, spaces
    assert np.isnan(out.loc["Mean Absolute Error", "Validation Value: ours"])
    assert np.isnan(out.loc["Extra", "Training Value: card"])
    assert out.index.name == "Metric"
    assert hub.compare_tables(None, ours)["Training Value: ours"].tolist() == [0.6, 0.85, 0.7]


def test_compare_summary_marks_what_differs() -> None:
    card = HubCard(
        summary_statistics={"n_cells": 800, "n_vars": 500, "n_batch": 17, "n_extra": 2},
        model_parameters={"n_latent": 20},
    )
    ours = {"n_cells": 800, "n_vars": 480, "n_batch": 17, "n_proteins": 14, "n_latent": 10}
    out = hub.compare_summary(card, ours)
    assert out.loc["n_cells"].tolist() == [800, 800, 0, "same"]
    assert out.loc["n_vars"].tolist() == [500, 480, -20, "differs"]
    assert out.loc["n_latent"].tolist() == [20, 10, -10, "differs"]  # from the parameters
    assert out.loc["n_proteins", "same"] == "–" and out.loc["n_proteins", "card"] is None
    assert out.loc["n_extra", "this data"] is None
    assert "n_labels" not in out.index  # on neither side


def test_hub_card_for_reads_the_folders_card_once_per_version(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not read here")
    assert hub.hub_card_for(str(tmp_path)) is None
    shutil.copy(SEEDLIKE_CARD, tmp_path / "README.md")
    first = hub.hub_card_for(str(tmp_path / "model.pt"))
    assert first is not None and first.summary_statistics["n_batch"] == 17
    assert hub.hub_card_for(str(tmp_path)) is first  # cached
    (tmp_path / "README.md").write_text("**Summary Statistics**:\n| n_batch | 3 |\n")
    assert hub.hub_card_for(str(tmp_path)).summary_statistics == {"n_batch": 3}
    (tmp_path / "README.md").write_bytes(b"\xff\xfe")
    assert hub.hub_card_for(str(tmp_path)) is None  # not UTF-8: no card
    assert hub.hub_card_for(str(tmp_path / "missing")) is None
    assert hub.hub_card_for(None) is None


# ------------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """A small model saved in a model folder, registered with that folder as its path."""
    return {
        "name": "metrics-card",
        "trained": {"n_cells": 300, "n_genes": 200, "max_epochs": 10},
        "saved": "hub",
        "own_cache": True,
        "prepare": False,
        "settings": {"de_n_samples": 200},
    }


@pytest.fixture(scope="module")
def env(trained_app: SimpleNamespace) -> SimpleNamespace:
    """The Metrics page on the model in its folder, with our metrics."""
    from dashboard.pages import metrics

    ours = trained_app.service.shown_metrics(trained_app.pair)
    types = list(ours.diff_exp["rna"].index)
    return SimpleNamespace(**vars(trained_app), metrics=metrics, ours=ours, types=types)


def _cv(train: float, validation: float | None) -> pd.DataFrame:
    cols = {"Training Value": [train, 0.9, 0.85, 0.7]}
    if validation is not None:
        cols["Validation Value"] = [validation, 0.8, 0.75, 0.6]
    return pd.DataFrame(cols, index=pd.Index(list(CV_ROWS), name="Metric"))


def _card_text(env: SimpleNamespace) -> str:
    """A card whose metrics are known: MAE 0.5 / 0.25, a DE row for our largest type and
    one for a type we do not have; summary statistics of a bigger dataset."""
    card = MetricsResult()
    rows = [env.types[0], CARD_ONLY_TYPE]
    for mod in ("rna", "protein"):
        card.cell_wise_cv[mod] = _cv(0.5, 0.25)
        card.gene_wise_cv[mod] = _cv(0.4, None)
        de = pd.DataFrame(
            {"gene_f1": [0.75, 0.5], "lfc_mae": [1.0, 2.0], "n_cells": np.array([40, 3])},
            index=rows,
        )
        card.diff_exp[mod] = de
    properties = {
        "model_parameters": {"n_latent": 10, "n_hidden": 64, "gene_likelihood": "nb"},
        "setup_arguments": {"batch_key": "batch", "layer": None},
        "data_registry": {"X": "adata.X"},
        "summary_statistics": {"n_cells": 12345, "n_vars": 200, "n_batch": 2},
    }
    return (
        "---\nlicense: cc-by-4.0\ntags:\n- model_cls_name:TOTALVI\n- scvi_version:1.4.2\n---\n"
        "# Model Description\n\nTrained on /srv/lab/private/pbmc.h5ad by the lab.\n\n"
        + model_card_markdown(properties, card.markdown())
        + "\n**Training data url**: https://example.org/pbmc.h5ad\n"
    )


@pytest.fixture
def with_card(env) -> Iterator[HubCard]:
    readme = env.folder / "README.md"
    readme.write_text(_card_text(env), encoding="utf-8")
    yield parse_model_card(readme.read_text(encoding="utf-8"))
    readme.unlink()


def _listed(children: Any) -> list[Any]:
    return children if isinstance(children, list) else [children]


def _table(tree: Any, cls: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (first cell -> the other cells' text) of the table of class ``cls``."""
    table = next(c for c in walk(tree) if cls in str(getattr(c, "className", "")).split())
    head: list[str] = []
    rows: dict[str, list[str]] = {}
    for part in _listed(table.children):
        trs = _listed(part.children)
        if type(part).__name__ == "Thead":
            head = [text(th) for th in trs[0].children]
            continue
        for tr in trs:
            rows[text(tr.children[0])] = [text(td) for td in tr.children[1:]]
    return head, rows


def _ready_sections(env: SimpleNamespace) -> Any:
    return env.metrics.metrics_sections(env.service, env.pair)


@pytest.mark.slow
def test_page_shows_the_card_beside_this_data(env, with_card) -> None:
    page = env.metrics.layout()
    section = find(page, ids.METRICS_HUB_CARD)
    words = text(section)
    assert "Model card (README.md)" in words and "TOTALVI model, scvi-tools 1.4.2" in words
    assert "/srv/lab" not in words and "pbmc.h5ad" in words  # no server path
    assert "Training data: https://example.org/pbmc.h5ad" in words
    head, rows = _table(section, "hub-summary")
    assert head == ["Statistic", "card", "this data", "difference", "same"]
    n = env.data.n_cells
    assert rows["n_cells"] == ["12,345", f"{n:,}", f"{n - 12345:,}", "differs"]
    assert rows["n_vars"][0] == "200" and rows["n_latent"] == ["10", "10", "0", "same"]
    _, params = _table(section, "hub-params")
    assert params["n_hidden"] == ["64"]
    _, setup = _table(section, "hub-setup")
    assert setup["batch_key"] == ["batch"] and setup["layer"] == ["–"]


@pytest.mark.slow
def test_each_card_metric_table_beside_ours_with_the_difference(env, with_card) -> None:
    sections = _ready_sections(env)
    assert "ours − card" in text(sections)
    assert env.service.model(env.pair).has_protein_efficiency  # trained: an efficiency
    assert "choose scvi-tools 1.4.2 above to compare like with like" in text(sections)
    for mod in ("rna", "protein"):
        head, rows = _table(sections, f"hub-cell_wise_cv-{mod}")
        assert head[:4] == [
            "Metric",
            "Training Value: card",
            "Training Value: ours",
            "Training Value: ours − card",
        ]
        ours = env.ours.cell_wise_cv[mod].loc["Mean Absolute Error"]
        mae = rows["Mean Absolute Error"]
        assert mae[:3] == [
            "0.500",
            f"{ours['Training Value']:.3f}",
            f"{ours['Training Value'] - 0.5:.3f}",
        ]
        if "Validation Value" in ours:
            val = ours["Validation Value"]
            assert mae[3:] == ["0.250", f"{val:.3f}", f"{val - 0.25:.3f}"]
        _, gene = _table(sections, f"hub-gene_wise_cv-{mod}")
        g = env.ours.gene_wise_cv[mod].loc["Mean Absolute Error", "Training Value"]
        assert gene["Mean Absolute Error"] == ["0.400", f"{g:.3f}", f"{g - 0.4:.3f}"]
        head, de = _table(sections, f"hub-diff_exp-{mod}")
        assert head[:4] == ["Cell type", "gene_f1: card", "gene_f1: ours", "gene_f1: ours − card"]
        f1 = env.ours.diff_exp[mod].loc[env.types[0], "gene_f1"]
        assert de[env.types[0]][:3] == ["0.750", f"{f1:.3f}", f"{f1 - 0.75:.3f}"]
        assert de[CARD_ONLY_TYPE][:3] == ["0.500", "–", "–"]  # we have no such type
        assert set(env.types) <= set(de)  # our types the card lacks: card "–"
        if len(env.types) > 1:
            assert de[env.types[1]][0] == "–"
        # our own tables are still there
        _table(sections, f"cell-cv-{mod}")
        _table(sections, f"de-metric-{mod}")


@pytest.mark.slow
def test_a_card_without_metrics_says_so_in_one_line(env) -> None:
    shutil.copy(SEEDLIKE_CARD, env.folder / "README.md")
    try:
        sections = _ready_sections(env)
        lines = [c for c in walk(sections) if "hub-no-metrics" in str(getattr(c, "className", ""))]
        assert len(lines) == 1 and "gives no metrics" in text(lines[0])
        assert not [c for c in walk(sections) if "hub-compare" in str(getattr(c, "className", ""))]
        _table(sections, "cell-cv-rna")  # ours shown
        _, rows = _table(find(env.metrics.layout(), ids.METRICS_HUB_CARD), "hub-summary")
        assert rows["n_batch"][0] == "17" and rows["n_cells"][0] == "800"
    finally:
        (env.folder / "README.md").unlink()


@pytest.mark.slow
@pytest.mark.parametrize("readme", [None, "# Our notes\n\nTrained on Tuesday.\n"])
def test_no_card_nothing_extra(env, readme: str | None) -> None:
    if readme is not None:  # a README.md that is no model card
        (env.folder / "README.md").write_text(readme, encoding="utf-8")
    try:
        page = env.metrics.layout()
        assert ids.METRICS_HUB_CARD not in [getattr(c, "id", None) for c in walk(page)]
        words = text(_ready_sections(env))
        assert "model card vs ours" not in words and "gives no metrics" not in words
    finally:
        (env.folder / "README.md").unlink(missing_ok=True)


@pytest.mark.slow
def test_minified_data_shows_the_card_alone_and_computes_nothing(env, with_card) -> None:
    n, k = env.data.n_cells, env.model.config.n_latent
    minified = dataclasses.replace(
        env.data,
        minified=MinifiedPosterior(
            np.zeros((n, k), np.float32), np.ones((n, k), np.float32), np.ones(n, np.float32)
        ),
    )
    dataset = env.service.add_dataset(minified, name="minified slice")
    pair = env.service.add_model(dataset, env.model, path=str(env.folder), name="hub")
    mp = pytest.MonkeyPatch()

    def no_metrics(*_: Any, **__: Any) -> None:
        raise AssertionError("metrics computed on minified data")

    mp.setattr(env.service, "metrics", no_metrics)
    mp.setattr(env.service.jobs, "submit", no_metrics)
    env.state.activate(pair)
    try:
        page = env.metrics.layout()
        content = find(page, ids.METRICS_CONTENT)
        words = text(content)
        assert env.metrics.MINIFIED_LINE in words
        _, rows = _table(content, "hub-cell_wise_cv-rna")
        assert rows["Mean Absolute Error"] == ["0.500", "0.250"]
        _, de = _table(content, "hub-diff_exp-protein")
        assert de[CARD_ONLY_TYPE][0] == "0.500"
        assert "ours" not in text(content)
        find(page, ids.METRICS_HUB_CARD)  # parameters and summary still shown
        started = env.metrics.start_metrics(None)
        assert started == (None, True, no_update, [], True, True)
        assert env.metrics.MINIFIED_LINE in text(env.metrics.metrics_sections(env.service, pair))
    finally:
        mp.undo()
        env.state.activate(env.pair)
