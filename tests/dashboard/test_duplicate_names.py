"""Duplicate gene/protein names made unique reach the user: labels show the original symbol
(``HES4 (2nd)``), the export keeps the symbols, the notice is one line in the CLI and on the
Model page, and a refused upload leaves no earlier dataset selected.

Data: 200 cells x 300 genes of the embedded ``data/pbmc10k.h5ad`` with HES4 three times,
TTLL10 twice and CD8a renamed CD4 (written under ``tmp_path``); no model is trained.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from dash import no_update

from dashboard import backend
from dashboard.backend import cli_commands
from dashboard.backend.export import _with_symbols, build_mudata
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.testing import finish_upload, post_upload, text
from dashboard.views.colours import ColorSpec, color_data
from dashboard.views.features import _ordinal, feature_catalog, search_features
from dashboard.views.state import ActiveState, set_state
from model.data import CiteSeqData, read_cite_seq

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*names are not unique:UserWarning"),
    pytest.mark.filterwarnings("ignore::anndata.OldFormatWarning"),
]

PBMC = Path(__file__).resolve().parents[2] / "data" / "pbmc10k.h5ad"
GENE_NOTE = (
    "2 duplicate gene names made unique (HES4 -> HES4, HES4-1, HES4-2; TTLL10 -> TTLL10, "
    "TTLL10-1); the original gene symbols are kept for display and export"
)
PROTEIN_NOTE = (
    "1 duplicate protein name made unique (CD4_TotalSeqB -> CD4_TotalSeqB, CD4_TotalSeqB-1); "
    "the original protein symbols are kept for display and export"
)


def dup_file(path: Path) -> Path:
    """The 200 x 300 slice with duplicated names, as ``.h5ad`` (protein names in uns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.read_h5ad(PBMC)[:200, :300].copy()
    names = list(a.var_names)
    names[5] = names[9] = "HES4"
    names[11] = "TTLL10"
    a.var_names = names
    prot = a.obsm["protein_expression"]
    cols = ["CD4_TotalSeqB" if c == "CD8a_TotalSeqB" else c for c in prot.columns]
    a.obsm["protein_expression"] = prot.to_numpy()
    a.uns["protein_names"] = np.array(cols, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def dup_path(tmp_path_factory) -> Path:
    return dup_file(tmp_path_factory.mktemp("dup") / "dup.h5ad")


@pytest.fixture(scope="module")
def dup(dup_path: Path) -> CiteSeqData:
    return read_cite_seq(dup_path)


def one_line_alert(component: Any, kind: str) -> str:
    """The text of an alert of ``kind``, checked to be one line."""
    assert f"alert-{kind}" in component.className, component
    message = text(component).strip()
    assert message and "\n" not in message and "Traceback" not in message
    return message


def fake(data: CiteSeqData) -> tuple[Any, Any]:
    """A service and pair that hand out ``data`` (and constant model results)."""
    n = data.n_cells
    prots = pd.DataFrame(
        np.ones((n, data.n_proteins), dtype=np.float32), columns=data.protein_names
    )
    service = SimpleNamespace(
        dataset=lambda _pair: data,
        denoised_protein=lambda _pair: prots,
        foreground_probability=lambda _pair: prots * 0.5,
        clusters=lambda _pair, _res=None: np.zeros(n, dtype=int),
        cell_types=lambda _pair, **_: pd.Series(pd.Categorical(["T"] * n)),
        shown_cell_types=lambda _pair, **_: pd.Series(pd.Categorical(["T"] * n)),
        latent=lambda _pair: np.zeros((n, 3)),
        umap=lambda _pair: pd.DataFrame(np.zeros((n, 2))),
        model_summary=lambda _pair: {},
        protein_scale=lambda _scale=None: "measured",
        model=lambda _pair: SimpleNamespace(protein_efficiency=lambda: None),
        has_batch_mixing=lambda _pair: False,  # no integration scorecard computed
        label_sets=SimpleNamespace(sets=lambda _pair, _n: []),  # no label sets made
    )
    pair = SimpleNamespace(
        dataset=SimpleNamespace(fingerprint=data.fingerprint(), name="dup"),
        to_dict=lambda: {"pair": "dup"},
    )
    return service, pair


# ---------------------------------------------------------------------------- display
def test_catalog_labels_show_the_symbol_and_which_copy(dup: CiteSeqData) -> None:
    service, pair = fake(dup)
    catalog = feature_catalog(service, pair)
    assert catalog.genes[:12] == list(dup.var_names[:12])  # values stay the unique names
    assert [catalog.label(f"gene:{g}") for g in ("HES4", "HES4-1", "HES4-2")] == [
        "HES4", "HES4 (2nd)", "HES4 (3rd)",
    ]  # fmt: skip
    assert catalog.label("gene:TTLL10-1") == "TTLL10 (2nd)"
    assert catalog.label("gene:ISG15") == "ISG15"
    assert catalog.label("protein:CD4_TotalSeqB-1") == "CD4 (2nd) protein"
    assert catalog.label("protein:CD4_TotalSeqB") == "CD4 protein"
    assert catalog.has("gene:HES4-2") and not catalog.has("gene:HES4-3")
    found = search_features(catalog, "hes4", include_obs=False)
    assert [o["value"] for o in found] == ["gene:HES4", "gene:HES4-1", "gene:HES4-2"]
    assert [o["label"] for o in found][1] == "HES4 (2nd)"
    cd4 = search_features(catalog, "cd4", include_obs=False)
    assert [o["value"] for o in cd4][:2] == ["protein:CD4_TotalSeqB", "protein:CD4_TotalSeqB-1"]


def test_colour_label_names_the_copy(dup: CiteSeqData) -> None:
    service, pair = fake(dup)
    color = color_data(service, pair, ColorSpec("gene:HES4-1", "raw"))
    assert color.label == "HES4 (2nd) · raw (log1p)"
    col = np.asarray(dup.rna[:, dup.var_names.get_loc("HES4-1")].todense()).ravel()
    assert (color.values > 0).sum() == (col > 0).sum()


def test_ordinals() -> None:
    got = [_ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)]
    assert got == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                   "111th"]  # fmt: skip


# ----------------------------------------------------------------------------- export
def test_export_keeps_the_original_symbols(dup: CiteSeqData, tmp_path: Path) -> None:
    service, pair = fake(dup)
    mdata = build_mudata(service, pair)
    rna, prot = mdata["rna"], mdata["protein"]
    assert rna.var_names.equals(dup.var_names)
    assert list(rna.var["gene_symbols"][["HES4", "HES4-1", "HES4-2", "ISG15"]]) == [
        "HES4", "HES4", "HES4", "ISG15",
    ]  # fmt: skip
    assert list(prot.var["protein_symbols"]) == list(dup.original_protein_names)
    path = tmp_path / "export.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata.write(path)
        back = md.read_h5mu(path)
    assert list(back["rna"].var["gene_symbols"]) == list(dup.original_var_names)
    again = read_cite_seq(path)  # re-imported: same names, same symbols, nothing to note
    assert again.original_var_names.equals(dup.original_var_names)
    assert again.original_protein_names.equals(dup.original_protein_names)
    assert again.notices == ()


def test_de_table_gets_a_symbol_column(dup: CiteSeqData) -> None:
    de = pd.DataFrame(
        {"modality": ["rna", "rna", "protein", "protein"], "lfc_mean": [1.0, 2.0, 3.0, 4.0]},
        index=["HES4-1", "ISG15", "CD4_TotalSeqB-1_protein", "CD3_TotalSeqB_protein"],
    )
    out = _with_symbols(de, dup)
    assert list(out.columns) == ["symbol", "modality", "lfc_mean"]
    assert list(out["symbol"]) == ["HES4", "ISG15", "CD4_TotalSeqB", "CD3_TotalSeqB"]
    assert out.index.equals(de.index)


# -------------------------------------------------------------------------------- CLI
def test_backend_commands_print_the_notice(dup_path: Path, tmp_path: Path, capsys) -> None:
    service = AnalysisService(Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path))
    try:
        ref = service.open_dataset(dup_path)
        cli_commands.print_notices(service.dataset(ref))  # what precompute and export do
    finally:
        service.close()
    assert ref.fingerprint == read_cite_seq(dup_path).fingerprint()
    err = capsys.readouterr().err.splitlines()
    assert err == [f"note: {GENE_NOTE}", f"note: {PROTEIN_NOTE}"]


def test_train_command_prints_the_notice(dup_path: Path, tmp_path: Path, capsys) -> None:
    from dashboard.cli import main

    argv = ["train", str(dup_path), "--max-epochs", "1", "--device", "cpu", "--quiet"]
    assert main([*argv, "--precision", "32", "--out", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    assert [ln for ln in captured.err.splitlines() if ln.startswith("note: ")] == [
        f"note: {GENE_NOTE}", f"note: {PROTEIN_NOTE}",
    ]  # fmt: skip
    assert "200 cells, 300 genes, 14 proteins" in captured.out


# --------------------------------------------------------------------------- the page
@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from dashboard.app import create_app

    root = tmp_path_factory.mktemp("dup-page")
    data_dir = root / "data"
    data_dir.mkdir()
    good = dup_file(data_dir / "first.h5ad")
    settings = Settings(cache_dir=root / "cache", data_dir=data_dir, model_dir=root / "models")
    service = AnalysisService(settings)
    state = ActiveState(service, warm=False)
    server = create_app(service, state=state).server  # runs the page modules
    from dashboard.pages import model as model_page

    yield SimpleNamespace(root=root, data_dir=data_dir, good=good, model=model_page, server=server)
    set_state(None)
    backend.set_service(None)
    service.close()


def test_upload_and_dataset_info_show_the_notice(page) -> None:
    options, value, status = finish_upload(
        page.model.dataset_upload, post_upload(page.server, page.good.read_bytes(), "dup.h5ad")
    )
    assert value.endswith("dup.h5ad") and Path(value).parent.parent.name == "uploads"
    area = Path(value).parent.name  # the uploading browser's own folder
    assert {"label": f"uploads/{area}/dup.h5ad", "value": value} in options
    message = one_line_alert(status, "success")
    assert message == f"Uploaded and checked dup.h5ad. Note: {GENE_NOTE}. Note: {PROTEIN_NOTE}."
    _, _, info = page.model.on_dataset(value)
    assert "200 cells × 300 genes × 14 proteins" in text(info[0])
    assert [one_line_alert(a, "info") for a in info[1:]] == [
        f"Note: {GENE_NOTE}.", f"Note: {PROTEIN_NOTE}.",
    ]  # fmt: skip


def test_refused_upload_clears_the_dataset_choice(page) -> None:
    options, value, status = finish_upload(
        page.model.dataset_upload, post_upload(page.server, b"not hdf5 at all", "junk.h5ad")
    )
    assert options is no_update and value is None  # not the dataset chosen before
    message = one_line_alert(status, "warning")
    assert message.startswith("junk.h5ad: ") and message.endswith(
        "Nothing was stored; choose a dataset or upload another."
    )
    assert page.model.on_dataset(value) == ([], None, "")
    alert, panel, _, _ = page.model.on_train(1, value, "__none__", 8, 5)
    assert one_line_alert(alert, "warning") == "Choose or upload a dataset first."
    assert panel is no_update  # nothing started
    assert not any("junk" in p.name for p in (page.data_dir / "uploads").iterdir())


def test_query_upload_notice_and_refusal(page) -> None:
    options, value, status = finish_upload(
        page.model.query_upload,
        post_upload(page.server, page.good.read_bytes(), "more.h5ad", "query"),
    )
    assert value.endswith("more.h5ad")
    assert f"Note: {GENE_NOTE}." in one_line_alert(status, "success")
    _, _, info = page.model.on_query_dataset(value)
    assert "200 cells × 300 genes × 14 proteins" in text(info[0])
    assert one_line_alert(info[1], "info") == f"Note: {GENE_NOTE}."
    options, value, status = finish_upload(
        page.model.query_upload, post_upload(page.server, b"junk", "junk.h5ad", "query")
    )
    assert options is no_update and value is None
    assert "Nothing was stored" in one_line_alert(status, "warning")
    assert page.model.on_query_dataset(value) == ([], None, "")
