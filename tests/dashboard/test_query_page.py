"""The Model page's "Map new data onto this model" card, its callbacks called directly: the
query file (data folder or upload, RNA only), validation as one readable line, the mapping
job with progress and cancel, and the switch to the combined pair that Explore colours by
dataset, batch, transferred label and label confidence.

Reference: a small model on 1200 PBMC cells; the new data: the 300 held-out cells as an
RNA-only ``.h5ad`` (``dashboard.backend.testing.reference_and_query``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dash import no_update

from dashboard import app as app_module
from dashboard import backend, ids
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import reference_and_query
from dashboard.testing import fast_umap, find, finish_upload, post_upload, text, walk
from dashboard.views.colours import ColorSpec, color_data
from dashboard.views.features import feature_catalog
from dashboard.views.state import ActiveState, prepare_pair, set_state

pytestmark = pytest.mark.slow

#: Epochs of the mapping that switches the app (the cancelled one asks for 2000).
EPOCHS = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("query-page")
    reference, query, model = reference_and_query()
    data_dir = root / "data"
    data_dir.mkdir()
    adata = query.to_anndata()
    del adata.obsm["protein_expression"]  # the new data has no proteins
    query_path = data_dir / "new_cells.h5ad"
    adata.write_h5ad(query_path)
    settings = Settings(
        cache_dir=root / "cache",
        data_dir=data_dir,
        model_dir=root / "models",
        denoise_n_samples=3,
    )
    mp = pytest.MonkeyPatch()
    mp.setattr("dashboard.backend.embedding.compute_umap", fast_umap)
    service = AnalysisService(settings)
    pair = service.add_model(service.add_dataset(reference, name="PBMC ref"), model, name="ref")
    state = ActiveState(service, warm=False)
    prepare_pair(service, pair)
    state.activate(pair)
    app = app_module.create_app(service, state=state)  # runs the page modules
    from dashboard.pages import explore
    from dashboard.pages import model as model_page

    yield SimpleNamespace(
        service=service,
        pair=pair,
        state=state,
        app=app,
        query=query,
        adata=adata,
        query_path=query_path,
        root=root,
        model=model_page,
        explore=explore,
    )
    set_state(None)
    backend.set_service(None)
    service.close()
    mp.undo()


# ----------------------------------------------------------------------------- helpers
def one_line_alert(component: Any, kind: str) -> str:
    assert f"alert-{kind}" in component.className, component
    message = text(component).strip()
    assert message and "\n" not in message and "Traceback" not in message
    return message


def switch_ended(env: SimpleNamespace, timeout: float = 120) -> Any:
    """The server's model switch once it has ended (no tab polls meanwhile)."""
    view = env.state.switch.join(timeout)
    assert not view.running, view
    return view


def map_panel(env: SimpleNamespace) -> tuple[Any, bool]:
    """What a poll of the Model page shows in the map card: panel, Cancel disabled."""
    _, panel, _, cancel_off, *_ = env.model.poll_switch(1)
    return panel, cancel_off


# ------------------------------------------------------------------------------- tests
def test_model_page_has_the_query_card(env) -> None:
    page = env.model.layout()
    assert "Map new data onto this model" in text(page)
    dropdown = find(page, ids.MODEL_QUERY_DATASET)
    assert {"label": "new_cells.h5ad", "value": str(env.query_path)} in dropdown.options
    assert find(page, ids.MODEL_QUERY_CANCEL).disabled is True
    assert find(page, ids.MODEL_QUERY_START).disabled is False
    assert find(page, ids.MODEL_QUERY_MAX_EPOCHS).value == 100


def test_choosing_the_new_data_reads_it(env) -> None:
    options, default, info = env.model.on_query_dataset(str(env.query_path))
    assert {"label": "batch", "value": "batch"} in options and default == "batch"
    assert f"{env.query.n_cells:,} cells" in info and "no proteins" in info
    n_genes = len(env.service.model(env.pair).var_names)
    assert f"{n_genes:,} of the model's {n_genes:,} genes" in info
    options, default, alert = env.model.on_query_dataset(str(env.root / "missing.h5ad"))
    assert (options, default) == ([], None)
    assert "missing.h5ad" in one_line_alert(alert, "warning")
    assert env.model.on_query_dataset(None) == ([], None, "")


def test_uploading_rna_only_new_data(env) -> None:
    options, value, note = finish_upload(
        env.model.query_upload,
        post_upload(env.app.server, env.query_path.read_bytes(), "more cells.h5ad", "query"),
    )
    # stored in the uploading browser's own area: uploads/<its workspace>/
    assert value.endswith("more_cells.h5ad") and Path(value).parent.parent.name == "uploads"
    area = Path(value).parent.name
    assert {"label": f"uploads/{area}/more_cells.h5ad", "value": value} in options
    assert "Uploaded and checked more_cells.h5ad" in one_line_alert(note, "success")
    bad = post_upload(env.app.server, b"not hdf5", "junk.h5ad", "query")
    options, value, alert = finish_upload(env.model.query_upload, bad)
    assert options is no_update and value is None  # Map must not map an earlier file
    assert "junk.h5ad" in one_line_alert(alert, "warning")
    assert not list((env.root / "data" / "uploads").rglob("*junk*"))


def test_start_validates_the_form(env) -> None:
    path = str(env.query_path)
    assert env.model.on_map_start(None, path, "batch", 10) == (no_update,) * 4
    alert, panel, _, _ = env.model.on_map_start(1, None, "batch", 10)
    assert panel is no_update
    assert one_line_alert(alert, "warning") == "Choose or upload the new data first."
    for bad in (0, 2.5, "ten", None):
        alert, *_ = env.model.on_map_start(1, path, "batch", bad)
        message = one_line_alert(alert, "warning")
        assert message == "Max epochs must be a whole number from 1 to 2000"
    # new data with other gene identifiers is refused at once, before any job
    adata = env.adata[:30].copy()
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    ensembl = env.root / "data" / "ensembl.h5ad"
    adata.write_h5ad(ensembl)
    env.model.on_query_dataset(str(ensembl))
    n_jobs = len(env.service.jobs.registry.list())
    alert, panel, _, _ = env.model.on_map_start(1, str(ensembl), "batch", 10)
    assert panel is no_update
    assert "shares only 0 of the model's" in one_line_alert(alert, "warning")
    assert len(env.service.jobs.registry.list()) == n_jobs
    # without an active model there is nothing to map onto
    set_state(ActiveState(env.service, warm=False))
    try:
        alert, *_ = env.model.on_map_start(1, path, "batch", 10)
        assert "Train or load a model first" in one_line_alert(alert, "warning")
    finally:
        set_state(env.state)


def test_cancel_keeps_the_active_model(env) -> None:
    message, panel, start_off, cancel_off = env.model.on_map_start(
        1, str(env.query_path), "batch", 2000
    )
    assert (start_off, cancel_off) == (True, False)
    assert "Mapping new_cells.h5ad" in text(message) and "Mapping" in text(panel)
    panel, cancel_off = map_panel(env)  # any tab shows it
    assert "Mapping" in text(panel) and cancel_off is False
    assert "Cancelling" in text(env.model.on_map_cancel(1))
    assert switch_ended(env).outcome == "cancelled"
    panel, cancel_off = map_panel(env)
    assert cancel_off is True
    line = one_line_alert(panel[0], "info")
    assert line == "Mapping: cancelled; the previous model stays active."
    assert env.state.pair == env.pair
    assert env.model.on_map_cancel(None) is no_update


def test_mapping_switches_the_app_to_the_combined_data(env) -> None:
    version = env.state.version
    env.model.on_map_start(1, str(env.query_path), "batch", EPOCHS)
    view = switch_ended(env)  # mapped, prepared and switched on the server
    assert view.outcome == "done", view
    panel, cancel_off = map_panel(env)
    assert cancel_off is True
    words = one_line_alert(panel[0], "success")
    assert f"Mapped {env.query.n_cells:,} new cells onto" in words
    assert "14 proteins predicted" in words and "batches renamed: pbmc10k → pbmc10k-query" in words
    assert "transferred_label" in words and "active on every page" in words
    service, pair = env.state.require()
    assert pair != env.pair and env.state.version == version + 1
    n = service.dataset(pair).n_cells
    assert n == service.dataset(env.pair).n_cells + env.query.n_cells
    # Explore colours by the new annotations
    catalog = feature_catalog(service, pair)
    for column in ("dataset", "transferred_label", "label_confidence"):
        assert catalog.has(f"obs:{column}"), column
    fig = env.explore.build_umap(ids.EXPLORE_UMAP, "obs:dataset", "raw", None, None)
    assert len(fig.data[0].x) == n
    legend = env.explore.render_legend("obs:dataset", "raw", None)
    entries = [c.id["value"] for c in walk(legend) if isinstance(getattr(c, "id", None), dict)]
    assert sorted(entries) == ["query", "reference"]
    by_batch = color_data(service, pair, ColorSpec("obs:batch"))
    assert by_batch.categories == ["pbmc10k", "pbmc10k-query"]
    labels = color_data(service, pair, ColorSpec("obs:transferred_label"))
    assert labels.categorical and len(labels.values) == n
    confidence = color_data(service, pair, ColorSpec("obs:label_confidence"))
    assert not confidence.categorical
    assert confidence.values.min() > 0 and confidence.values.max() == 1
    # proteins of the new cells are predictions, not the zeros of their (absent) counts
    cd4 = next(p for p in catalog.proteins if p.startswith("CD4_"))
    raw = color_data(service, pair, ColorSpec(f"protein:{cd4}", "raw")).values
    is_new = service.dataset(pair).obs["dataset"].to_numpy() == "query"
    assert (raw[is_new] > 0).all()
    measured = np.log1p(env.query.protein[:, list(env.query.protein_names).index(cd4)])
    assert pd.Series(raw[is_new]).corr(pd.Series(measured)) > 0.5
    env.state.activate(env.pair)  # back to the reference for any later test
