"""An scvi-hub model opened the way its card describes it, through the app: the seed-like
checkpoint of ``tests/data`` (17 batches in ``rna`` obs ``sample_id``, counts in layer
``counts``, proteins ADT_80..ADT_110 not measured in s03 and s11) with no flag; the same
cells under other names with flags; a minified copy (no counts); the command line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from dashboard import backend, ids
from dashboard.backend.errors import DatasetNotFound
from dashboard.backend.service import MinifiedData
from dashboard.backend.settings import Settings
from dashboard.figures import IMPUTED_MARK
from dashboard.server import bootstrap, make_app
from dashboard.testing import fast_umap
from dashboard.views.de import DE_NO_COUNTS_NOTE
from dashboard.views.state import set_state
from dashboard.views.values import NO_COUNTS_NOTE, panel_summary, unmeasured_batches
from model.hub_copies import minified_copy, renamed_copy

pytestmark = pytest.mark.slow

SEEDLIKE = Path(__file__).resolve().parents[1] / "data" / "scvi_tools_1.4.2_mudata_seedlike_800"
BATCHES = [f"s{i:02d}" for i in range(17)]
UNMEASURED = slice(80, 111)  # ADT_80..ADT_110, not measured in s03 and s11
FLAGS = {"batch_key": "donor", "layer": "raw", "protein_key": "adt"}
CELL_TYPE = {"feature": "obs:cell_type", "layer": "raw"}
#: Small enough to prepare in seconds; the CLI test reads them from the environment.
FAST = {"denoise_n_samples": 3, "de_n_samples": 500}
TITLE_90 = "ADT_90 protein · raw (log1p); imputed in s03, s11 (not measured)"
NOTE_90 = "ADT_90 protein was not measured in s03, s11: the model's prediction is shown"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The seed-like folder copied, its data renamed, and a minified copy."""
    root = tmp_path_factory.mktemp("hub")
    folder = root / "seedlike"
    shutil.copytree(SEEDLIKE, folder)
    return SimpleNamespace(
        root=root,
        folder=folder,
        renamed=renamed_copy(folder, root / "renamed"),
        minified=minified_copy(folder, root / "minified"),
    )


def _open_app(
    model: Path, root: Path, data: Path | None = None, flags: dict | None = None
) -> SimpleNamespace:
    settings = Settings(cache_dir=root / "cache", data_dir=root, model_dir=root, **FAST)
    boot = bootstrap(data, model, flags=flags, settings=settings, warm=False, out=None)
    info = boot.service.wait(boot.job, timeout=600)
    assert str(info.status) == "done", info.error
    app = make_app(boot)
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    return SimpleNamespace(
        boot=boot, service=boot.service, pair=boot.pair, state=boot.state, client=client,
        deps=deps, data=boot.service.dataset(boot.pair),
    )  # fmt: skip


@pytest.fixture(scope="module")
def _apps(copies: SimpleNamespace) -> Iterator[SimpleNamespace]:
    mp = pytest.MonkeyPatch()
    mp.setattr("dashboard.backend.embedding.compute_umap", fast_umap)
    seed = _open_app(copies.folder, copies.root)
    mini = _open_app(copies.minified, copies.root)
    renamed = _open_app(copies.folder, copies.root, data=copies.renamed, flags=FLAGS)
    yield SimpleNamespace(seed=seed, mini=mini, renamed=renamed)
    set_state(None)
    backend.set_service(None)
    for env in (seed, mini, renamed):
        env.service.close()
    mp.undo()


def _use(env: SimpleNamespace) -> SimpleNamespace:
    """Make ``env``'s service and state the process-wide ones its callbacks read."""
    backend.set_service(env.service)
    set_state(env.state)
    return env


@pytest.fixture
def hub(_apps: SimpleNamespace) -> SimpleNamespace:
    """The app on the seed-like copy, opened by ``bootstrap(None, folder)`` (no flag)."""
    return _use(_apps.seed)


@pytest.fixture
def renamed(_apps: SimpleNamespace) -> SimpleNamespace:
    """The app on the same cells under other names, opened with read flags."""
    return _use(_apps.renamed)


@pytest.fixture
def mini(_apps: SimpleNamespace) -> SimpleNamespace:
    """The app on the minified copy."""
    return _use(_apps.mini)


# ------------------------------------------------------------------------------ helpers
def call(env: SimpleNamespace, output: str, first_input: str, inputs: list, state=()) -> dict:
    """POST the callback writing ``output`` from ``first_input``; its JSON response."""
    (dep,) = [
        d
        for d in env.deps
        if output in d["output"]
        and d["inputs"]
        and f"{d['inputs'][0]['id']}.{d['inputs'][0]['property']}" == first_input
    ]
    out = dep["output"]
    split = out.strip(".").split("...") if out.startswith("..") else [out]
    specs = [dict(zip(("id", "property"), s.split(".", 1), strict=True)) for s in split]
    body = {
        "output": out,
        "outputs": specs if out.startswith("..") else specs[0],
        "inputs": [{**s, "value": v} for s, v in zip(dep["inputs"], inputs, strict=True)],
        "state": [{**s, "value": v} for s, v in zip(dep["state"], state, strict=True)],
        "changedPropIds": [first_input],
    }
    response = env.client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return response.get_json()


def route(env: SimpleNamespace, path: str, search: str = "") -> Any:
    """The page layout the router sends for ``path``."""
    token = {"version": env.state.version, "pair": env.pair.id, "dataset": env.pair.dataset.id}
    got = call(
        env, "_pages_content.children", "_pages_location.pathname", [path, search, token],
        [CELL_TYPE],
    )  # fmt: skip
    return got["response"]["_pages_content"]["children"]


def texts(tree: Any) -> list[str]:
    """Every text of a component tree (JSON), in order."""
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, list):
        return [t for item in tree for t in texts(item)]
    if isinstance(tree, dict):
        return texts(tree.get("props", {}).get("children"))
    return []


def nodes(tree: Any) -> Iterator[dict]:
    """Every component of a JSON tree."""
    if isinstance(tree, dict) and isinstance(tree.get("props"), dict):
        yield tree
        for v in tree["props"].values():
            yield from nodes(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from nodes(v)


def operations(patch: dict) -> dict[tuple, Any]:
    """``{location: value}`` of a ``Patch`` sent over HTTP."""
    return {tuple(op["location"]): op["params"].get("value") for op in patch["operations"]}


def recolour(env: SimpleNamespace, feature: str, layer: str = "raw") -> dict:
    """The Explore recolour's outputs for ``feature``."""
    return call(
        env,
        "app-color-store.data",
        "explore-color.value",
        [feature, layer, None],
        [CELL_TYPE, "proteins", None, None],  # the linked view's kind and colouring, layout
    )["response"]


def tooltip(env: SimpleNamespace, cell: int, feature: str, layer: str = "raw") -> str:
    """What Explore's main view's tooltip says with the pointer on cell ``cell``."""
    point = {"curveNumber": 0, "customdata": cell, "bbox": {"x0": 1, "x1": 2, "y0": 1, "y1": 2}}
    got = call(
        env,
        "explore-umap-tooltip.children",
        "explore-umap.hoverData",
        [{"points": [point]}],
        [feature, layer, None],
    )["response"]["explore-umap-tooltip"]
    assert got["show"] is True
    return "".join(texts(got["children"]))


def legend(env: SimpleNamespace, feature: str, layer: str = "raw") -> Any:
    """What Explore shows under the UMAP for a colouring (note line and legend)."""
    got = call(
        env, "explore-legend.children", "explore-color.value", [feature, layer, None, {}, None]
    )
    return got["response"][ids.EXPLORE_LEGEND]["children"]


def model_card_rows(env: SimpleNamespace) -> dict[str, str]:
    """The Model page's "Active model" rows, as shown (``{key: value}``)."""
    rows = {}
    for node in nodes(route(env, "/model")):
        if node.get("type") == "Tr":
            cells = [texts(c) for c in node["props"]["children"]]
            rows["".join(cells[0])] = "".join(cells[1])
    return rows


def in_batches(env: SimpleNamespace, names: list[str]) -> int:
    codes = [env.data.batch_categories.index(b) for b in names]
    return int(np.isin(env.data.batch, codes).sum())


# ------------------------------------------------------------------------- seed-like
def test_bootstrap_opens_the_folder_as_set_up(hub) -> None:
    assert hub.pair.dataset.batch_key == "sample_id"
    assert hub.data.batch_categories == BATCHES
    assert hub.state.status().state == "ready"
    rows = model_card_rows(hub)
    assert rows["Batches"].startswith("17 (sample_id): s00, s01"), rows


def test_colour_by_batch_has_17_categories(hub) -> None:
    shown = legend(hub, "obs:batch")
    items = [n for n in nodes(shown) if isinstance(n["props"].get("id"), dict)]
    assert [n["props"]["id"]["value"] for n in items] == BATCHES
    counts = np.bincount(hub.data.batch, minlength=17)
    assert [int(texts(n)[-1].replace(",", "")) for n in items] == counts.tolist()


def test_the_missing_panel_is_detected(hub) -> None:
    mask = hub.data.protein_batch_mask
    assert mask.shape == (17, 111)
    missing = np.zeros_like(mask)
    missing[[3, 11], UNMEASURED] = True
    np.testing.assert_array_equal(~mask, missing)
    assert unmeasured_batches(hub.service, hub.pair, "ADT_90") == ["s03", "s11"]
    assert unmeasured_batches(hub.service, hub.pair, "ADT_79") == []
    assert panel_summary(hub.service, hub.pair) == (
        "31 of 111 proteins not measured in 2 batches (s03, s11); the model imputes them there"
    )


def test_explore_says_where_a_protein_is_imputed(hub) -> None:
    response = recolour(hub, "protein:ADT_90")
    ops = operations(response[ids.EXPLORE_UMAP]["figure"])
    marker = ops[("data", 0, "marker")]
    assert marker["colorbar"]["title"]["text"].replace("<br>", " ") == TITLE_90
    # hover: an imputed cell says so after its value, a measured one adds nothing
    assert set(ops) == {("data", 0, "marker"), ("layout", "annotations")}  # no hover strings
    codes = [hub.data.batch_categories.index(b) for b in ("s03", "s00")]
    imputed, measured = (int(np.flatnonzero(hub.data.batch == c)[0]) for c in codes)
    assert tooltip(hub, imputed, "protein:ADT_90").endswith(IMPUTED_MARK)
    assert "s03" in tooltip(hub, imputed, "protein:ADT_90")
    assert "imputed" not in tooltip(hub, measured, "protein:ADT_90")
    assert NOTE_90 in " ".join(texts(legend(hub, "protein:ADT_90")))
    # a protein every batch measured: no note, no marks
    ops = operations(recolour(hub, "protein:ADT_79")[ids.EXPLORE_UMAP]["figure"])
    assert "imputed" not in ops[("data", 0, "marker")]["colorbar"]["title"]["text"]
    assert "imputed" not in tooltip(hub, imputed, "protein:ADT_79")
    assert "imputed" not in json.dumps(legend(hub, "protein:ADT_79"))


def test_lookup_says_where_a_protein_is_imputed(hub) -> None:
    got = call(
        hub, "lookup-color-note.children", "lookup-search.value", ["protein:ADT_90", "raw", None]
    )
    assert got["response"]["lookup-color-note"]["children"].startswith(NOTE_90)
    layout = json.dumps(route(hub, "/lookup", "?color=protein%3AADT_90&layer=denoised"))
    assert NOTE_90 in layout
    got = call(
        hub, "lookup-color-note.children", "lookup-search.value", ["gene:Gene1", "raw", None]
    )
    assert got["response"]["lookup-color-note"]["children"] == ""


def test_the_latent_space_is_scvi_tools(hub) -> None:
    expected = np.load(SEEDLIKE / "expected_latent.npy")
    np.testing.assert_allclose(hub.service.latent(hub.pair), expected, atol=1e-5)


# --------------------------------------------------------------------------- renamed
def test_renamed_data_opens_with_flags(hub, copies) -> None:
    pair = hub.service.open_model(copies.folder, data=copies.renamed, flags=FLAGS)
    data = hub.service.dataset(pair)
    assert (data.batch_key, data.batch_categories) == ("donor", BATCHES)
    np.testing.assert_array_equal(data.protein_batch_mask, hub.data.protein_batch_mask)
    expected = np.load(SEEDLIKE / "expected_latent.npy")
    np.testing.assert_allclose(hub.service.latent(pair), expected, atol=1e-5)


def test_renamed_data_through_the_app_shows_the_same(renamed) -> None:
    rows = model_card_rows(renamed)
    assert rows["Batches"].startswith("17 (donor): s00, s01"), rows
    assert rows["Read with"].startswith("layer 'raw', batch key 'donor', protein key 'adt'")
    assert rows["Protein panel"].startswith("31 of 111 proteins not measured in 2 batches")
    marker = operations(recolour(renamed, "protein:ADT_90")[ids.EXPLORE_UMAP]["figure"])[
        ("data", 0, "marker")
    ]
    assert marker["colorbar"]["title"]["text"].replace("<br>", " ") == TITLE_90


@pytest.mark.parametrize(
    ("flags", "missing", "flag"),
    [
        (None, "no modality 'protein'", "--protein-key"),
        ({"protein_key": "adt"}, "no layer 'counts'", "--layer"),
        ({"protein_key": "adt", "layer": "raw"}, "no obs column 'sample_id'", "--batch-key"),
    ],
)
def test_renamed_data_without_flags_is_one_line(copies, flags, missing, flag) -> None:
    settings = Settings(cache_dir=copies.root / "cache-errors")
    with pytest.raises(DatasetNotFound) as err:
        bootstrap(copies.renamed, copies.folder, flags=flags, settings=settings, out=None)
    message = str(err.value)
    assert "\n" not in message and missing in message and flag in message, message
    assert "override it" in message


# -------------------------------------------------------------------------- minified
def test_minified_copy_opens_and_prepares(mini) -> None:
    assert mini.data.minified is not None
    assert mini.data.rna.nnz == 0 and not mini.data.protein.any()
    assert mini.state.status().state == "ready"
    expected = np.load(SEEDLIKE / "expected_latent.npy")
    np.testing.assert_allclose(mini.service.latent(mini.pair), expected, atol=1e-5)
    # the panel comes from the model (all-zero counts cannot tell it)
    assert panel_summary(mini.service, mini.pair).startswith("31 of 111 proteins")
    keys = mini.service.precompute(mini.pair)
    assert "metrics" not in keys and "de_one_vs_rest" in keys
    de = mini.service.de_one_vs_rest(mini.pair)
    assert de["non_zeros_proportion1"].isna().all() and de["bayes_factor"].notna().all()


def test_minified_metrics_are_refused_in_one_line(mini) -> None:
    with pytest.raises(MinifiedData) as err:
        mini.service.metrics(mini.pair)
    message = str(err.value)
    assert "\n" not in message and "minified" in message and "counts" in message
    with pytest.raises(MinifiedData):
        mini.service.shown_metrics(mini.pair, protein_scale="efficiency-free")


def test_minified_pages_say_the_counts_are_missing(mini) -> None:
    gene = "gene:Gene1"
    ops = operations(recolour(mini, gene)[ids.EXPLORE_UMAP]["figure"])
    title = ops[("data", 0, "marker")]["colorbar"]["title"]["text"].replace("<br>", " ")
    assert title == "Gene1 · denoised (log1p)"  # what is shown, not zeros
    assert NO_COUNTS_NOTE in texts(legend(mini, gene))[0]
    # the linked raw-vs-denoised view says why it is not drawn
    got = call(
        mini, "explore-linked.figure", "explore-linked-kind.value",
        ["raw_denoised", "ADT_1", "ADT_2", "denoised", "umap", "same", None, None, None, True],
        [gene, "raw", None, None, None],
    )  # fmt: skip
    assert "Raw counts are not in this file" in json.dumps(got)
    violin = call(mini, "lookup-violin.figure", "lookup-search.value", [gene, None])
    fig = violin["response"][ids.LOOKUP_VIOLIN]["figure"]
    assert "raw counts not in this file" in fig["layout"]["title"]["text"]
    assert {t.get("xaxis", "x") for t in fig["data"]} == {"x"}  # one violin per type
    assert DE_NO_COUNTS_NOTE in texts(route(mini, "/de"))


# ------------------------------------------------------------------------------- CLI
def test_cli_info_and_precompute(copies, monkeypatch, capsys) -> None:
    from dashboard.cli import main

    assert main(["info", str(copies.folder)]) == 0
    printed = capsys.readouterr().out
    assert "17 batches" in printed
    assert "data setup (the checkpoint's registry): layer 'counts', batch key 'sample_id'" in (
        printed
    )
    monkeypatch.setattr("dashboard.backend.embedding.compute_umap", fast_umap)
    for name, value in FAST.items():
        monkeypatch.setenv(f"TOTALVI_EXPLORER_{name.upper()}", str(value))
    args = ["precompute", str(copies.folder / "mdata.h5mu"), "--model", str(copies.folder)]
    assert main([*args, "--cache-dir", str(copies.root / "cache")]) == 0, capsys.readouterr()


def test_minified_cluster_naming_sample_is_bounded_and_keeps_every_cluster() -> None:
    from dashboard.backend.sampling import stratified_subsample  # what the naming draws

    labels = np.repeat(["a", "b", "c"], [900, 90, 10])
    assert stratified_subsample(labels, 1000, seed=0).tolist() == list(range(1000))
    cells = stratified_subsample(labels, 200, seed=0)
    assert np.all(np.diff(cells) > 0) and len(cells) == 200
    counts = dict(zip(*np.unique(labels[cells], return_counts=True), strict=True))
    assert counts == {"a": 140, "b": 50, "c": 10}


# ---------------------------------------------------------------------------- the card
def test_metrics_page_shows_the_cards_parameters_beside_this_data(hub) -> None:
    words = texts(route(hub, "/metrics"))
    joined = " ".join(words)
    assert "Model card (README.md)" in joined
    for shown in ("n_latent", "gene_likelihood", "nb", "rna_layer", "counts", "sample_id"):
        assert shown in words, shown
    card_at = words.index("Model card (README.md)")
    i = words.index("n_batch", card_at)  # the card's summary beside this data's
    assert words[i + 1 : i + 3] == ["17", "17"]


def test_a_minified_copy_shows_the_numbers_of_its_card(hub, mini, copies, tmp_path) -> None:
    from dashboard.backend.export import write_tables
    from dashboard.backend.metrics import model_card_markdown
    from dashboard.pages.metrics import MINIFIED_LINE

    computed = hub.service.metrics(hub.pair)  # what the uploader's card would report
    card = model_card_markdown(hub.service.model_summary(hub.pair), computed.markdown())
    (copies.minified / "README.md").write_text(
        "---\nlibrary_name: scvi-tools\ntags:\n- model_cls_name:TOTALVI\n---\n\n" + card
    )
    _use(mini)
    words = texts(route(mini, "/metrics"))
    assert MINIFIED_LINE in words

    def as_carded(x: float) -> str:  # a card keeps 2 decimals; the page shows 3
        return f"{float(f'{x:.2f}'):.3f}"

    mae = computed.cell_wise_cv["rna"].iloc[0]  # Mean Absolute Error, training cells
    assert as_carded(mae.iloc[0]) in words  # the card's number, nothing recomputed
    de = computed.diff_exp["protein"]
    assert as_carded(de["gene_f1"].iloc[0]) in words
    written = {p.name for p in write_tables(mini.service, mini.pair, tmp_path / "tables")}
    assert "card_cell_wise_cv_rna.csv" in written and "metrics.json" not in written
    import pandas as pd

    back = pd.read_csv(tmp_path / "tables" / "card_cell_wise_cv_rna.csv", index_col=0)
    np.testing.assert_allclose(back.iloc[0, 0], mae.iloc[0], atol=0.005)
