"""Files named by the browser stay inside the configured folders; uploads are size-limited
before anything is stored; checkpoints never execute code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dash import no_update

from dashboard import backend
from dashboard.app import create_app
from dashboard.backend.errors import DatasetNotFound
from dashboard.backend.paths import resolve_in_folder
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.testing import finish_upload, post_upload, walk
from dashboard.views.model import dataset_options
from dashboard.views.state import ActiveState, set_state

LIMIT = 4096


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[SimpleNamespace]:
    from dashboard.backend.testing import pbmc_slice

    root = tmp_path_factory.mktemp("paths")
    data_dir = root / "data"
    (data_dir / "sub").mkdir(parents=True)
    outside = root / "outside"
    outside.mkdir()
    small = data_dir / "small.h5ad"
    pbmc_slice(n_cells=200, n_genes=100).to_anndata().write_h5ad(small)
    secret = outside / "secret.h5ad"
    secret.write_bytes(small.read_bytes())  # readable, but not in the data folder
    (data_dir / "link_out.h5ad").symlink_to(secret)
    (data_dir / "sub" / "link_in.h5ad").symlink_to(small)
    settings = Settings(
        cache_dir=root / "cache", data_dir=data_dir, model_dir=root / "models",
        max_upload_bytes=LIMIT,
    )  # fmt: skip
    service = AnalysisService(settings)
    state = ActiveState(service, warm=False)
    app = create_app(service, state=state)  # runs the page modules
    from dashboard.pages import model as model_page

    yield SimpleNamespace(
        root=root, data_dir=data_dir, small=small, secret=secret, service=service, app=app,
        model=model_page,
    )  # fmt: skip
    set_state(None)
    backend.set_service(None)
    service.close()


def alert_text(component) -> str:
    assert "alert-warning" in component.className
    return " ".join(str(c) for c in _strings(component))


def _strings(c) -> Iterator[str]:
    if isinstance(c, str):
        yield c
    elif isinstance(c, (list, tuple)):
        for x in c:
            yield from _strings(x)
    elif c is not None and hasattr(c, "children"):
        yield from _strings(c.children)


def refused(env) -> list[str]:
    return [
        "../outside/secret.h5ad",
        "sub/../../outside/secret.h5ad",
        "..",
        str(env.secret),  # absolute, outside
        "/etc/passwd",
        "link_out.h5ad",  # symlink resolving outside
        str(env.data_dir / "link_out.h5ad"),
        "~/secret.h5ad",
    ]


# ---------------------------------------------------------------------------- resolver
def test_resolver_refuses_traversal_absolute_and_symlinks_out(env) -> None:
    for name in refused(env):
        with pytest.raises(DatasetNotFound, match="refused") as err:
            resolve_in_folder(env.data_dir, name)
        assert "\n" not in str(err.value) and name in str(err.value)
    assert resolve_in_folder(env.data_dir, "small.h5ad") == env.small.resolve()
    assert resolve_in_folder(env.data_dir, str(env.small)) == env.small.resolve()
    assert resolve_in_folder(env.data_dir, "sub/link_in.h5ad") == env.small.resolve()
    assert resolve_in_folder(env.data_dir, "missing.h5ad") == env.data_dir / "missing.h5ad"
    # the dataset the operator opened at start-up stays usable wherever it lives
    assert resolve_in_folder(env.data_dir, str(env.secret), allowed=[str(env.secret)])


# ------------------------------------------------------------------------ Model page
def test_dataset_picker_lists_only_files_inside(env) -> None:
    values = [o["value"] for o in dataset_options(env.service)]
    assert str(env.small) in values
    assert str(env.data_dir / "sub" / "link_in.h5ad") in values
    assert not any("link_out" in v or "secret" in v for v in values)


def test_model_page_callbacks_refuse_paths_outside(env) -> None:
    n_jobs = len(env.service.jobs.registry.list())
    for name in refused(env):
        options, default, alert = env.model.on_dataset(name)
        assert (options, default) == ([], None)
        assert "refused" in alert_text(alert)
        alert, panel, _, _ = env.model.on_train(1, name, "batch", 10, 10)
        assert panel is no_update and "refused" in alert_text(alert)
        alert, panel, _, _ = env.model.on_load(1, name, "batch", None, str(env.root / "m"))
        assert panel is no_update and "refused" in alert_text(alert)
        options, default, alert = env.model.on_query_dataset(name)
        assert (options, default) == ([], None) and "refused" in alert_text(alert)
    assert len(env.service.jobs.registry.list()) == n_jobs  # nothing was started
    options, default, info = env.model.on_dataset("sub/link_in.h5ad")  # inside: fine
    assert "200 cells" in info and default == "batch"


def test_checkpoint_typed_outside_the_model_folder_is_refused(env) -> None:
    n_jobs = len(env.service.jobs.registry.list())
    alert, panel, _, _ = env.model.on_load(1, "small.h5ad", "batch", None, "../outside")
    assert panel is no_update  # refused before any job starts, in one line
    assert "refused" in alert_text(alert) and "outside" in alert_text(alert)
    assert len(env.service.jobs.registry.list()) == n_jobs


# ------------------------------------------------------------------------------ uploads
def test_oversize_upload_is_refused_and_nothing_written(env, monkeypatch) -> None:
    def must_not_read(path: Path) -> None:
        raise AssertionError(f"validated {path} although it is over the limit")

    monkeypatch.setattr("model.data.read_cite_seq", must_not_read)
    monkeypatch.setattr("dashboard.backend.mapping.load_query_file", must_not_read)
    big = b"\x89HDF\r\n" + b"x" * (2 * LIMIT)
    uploads = env.data_dir / "uploads"
    options, value, alert = finish_upload(
        env.model.dataset_upload, post_upload(env.app.server, big, "big.h5ad")
    )
    assert options is no_update and value is None  # the choice is cleared, not kept
    assert "over the upload limit" in alert_text(alert)
    done = post_upload(env.app.server, big, "big.h5ad", "query")
    options, value, alert = finish_upload(env.model.query_upload, done)
    assert "over the upload limit" in alert_text(alert)
    assert not uploads.exists() or not [p for p in uploads.iterdir() if p.is_file()]
    assert not uploads.exists() or not list((uploads / ".incoming").iterdir())
    # the drop zone tells the browser the configured limit (it refuses larger files unsent)
    page = env.model.layout()
    zones = [c for c in walk(page) if "stream-upload" in (getattr(c, "className", "") or "")]
    assert len(zones) == 2 and all(z.to_plotly_json()["props"]["data-limit"] == str(LIMIT)
                                   for z in zones)  # fmt: skip
    options, value, alert = finish_upload(
        env.model.dataset_upload, {"tooLarge": 10 * LIMIT, "name": "x.h5ad"}
    )
    assert value is None and "over the upload limit" in alert_text(alert)


def test_bad_upload_within_limit_is_not_stored(env) -> None:
    done = post_upload(env.app.server, b"not hdf5 at all", "junk.h5ad")
    _, value, alert = finish_upload(env.model.dataset_upload, done)
    assert value is None and "junk.h5ad" in alert_text(alert)
    assert "Nothing was stored" in alert_text(alert)
    _, value, _ = finish_upload(
        env.model.dataset_upload, post_upload(env.app.server, b"x", "../../evil.h5ad")
    )
    assert value is None
    uploads = env.data_dir / "uploads"
    assert not any(p.name.endswith(".h5ad") for p in uploads.rglob("*"))
    assert not (env.root / "evil.h5ad").exists()
    # a forged or foreign token, or a browser-side failure, reads as one line
    for forged in ({"upload": "not-a-token"}, {"upload": ["x"]}, {"failed": 413}, {}):
        _, value, alert = finish_upload(env.model.dataset_upload, forged)
        assert value is None and "Nothing was stored" in alert_text(alert), forged


# -------------------------------------------------------------------------- checkpoints
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_checkpoint_with_reduce_payload_is_refused_and_never_runs(tmp_path) -> None:
    from model import CheckpointError, TotalVI

    marker = tmp_path / "payload-ran"
    folder = tmp_path / "evil-model"
    folder.mkdir()
    torch.save({"model_state_dict": {}, "attr_dict": _Payload(marker)}, folder / "model.pt")
    with pytest.raises(CheckpointError) as err:
        TotalVI.load(folder)
    message = str(err.value)
    assert "refusing to load" in message and ".exec'" in message and "model.pt" in message
    assert "\n" not in message
    assert not marker.exists()
    # the same payload hidden in our own format is refused by weights_only=True, then by
    # the restricted unpickler
    torch.save({"format": "totalvi-explorer", "config": _Payload(marker)}, folder / "model.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        TotalVI.load(folder / "model.pt")
    assert not marker.exists()
