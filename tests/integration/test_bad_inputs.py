"""Bad inputs, each through the command line and through the app's Model page.

Every case must end in one readable line naming the file, field, cell or gene at fault (exit
status 2 on the command line, an alert on the page), never a traceback; nothing may be left
half-written (no temp files, no new checkpoint or upload) and the active model and its cached
results must stay as they were. Data are slices of the real 200-cell PBMC fixture.
"""

from __future__ import annotations

import functools
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import torch

from dashboard.backend.errors import BackendError
from dashboard.cli import main
from dashboard.testing import finish_upload, post_upload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:.*without encoding metadata"),
]

FIXTURES = Path(__file__).resolve().parents[1] / "data"
H5AD_200 = FIXTURES / "pbmc_10k_protein_v3_200cells.h5ad"
MTX_10X = FIXTURES / "pbmc_10k_protein_v3_10x_mtx"
N_GENES = 300
MARKER = "code-ran.marker"


class Payload:
    """Unpickling this would run code that creates the marker file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


@functools.cache
def _source() -> ad.AnnData:
    return ad.read_h5ad(H5AD_200)


def base_adata() -> ad.AnnData:
    """200 real cells x 300 genes, 14 proteins, two batches; integer counts."""
    src = _source()
    a = src[:, :N_GENES].copy()
    a.X = np.asarray(a.X, dtype=np.float32)
    a.obs = pd.DataFrame(
        {"batch": pd.Categorical(["a", "b"] * (a.n_obs // 2))}, index=a.obs_names.astype(str)
    )
    a.var = pd.DataFrame(index=a.var_names.astype(str))
    prot = np.asarray(src.obsm["protein_expression"], dtype=np.float32)
    a.obsm["protein_expression"] = pd.DataFrame(
        prot, index=a.obs_names, columns=[str(p) for p in src.uns["protein_names"]]
    )
    return a


def to_mudata(a: ad.AnnData, rna: str = "rna", protein: str = "protein") -> md.MuData:
    prot = a.obsm["protein_expression"]
    rna_ad = ad.AnnData(X=a.X.copy(), obs=a.obs.copy(), var=a.var.copy())
    prot_ad = ad.AnnData(
        X=prot.to_numpy(),
        obs=pd.DataFrame(index=a.obs_names),
        var=pd.DataFrame(index=prot.columns),
    )
    return md.MuData({rna: rna_ad, protein: prot_ad})


def write_h5ad(a: ad.AnnData, path: Path) -> Path:
    a.write_h5ad(path)
    return path


def corrupt(path: Path) -> Path:
    """Keep the HDF5 signature, scramble everything after the superblock."""
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    raw[96:] = rng.integers(0, 256, len(raw) - 96, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    return path


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    """``make(folder, env) -> path``; ``mentions``: what the message must name."""

    name: str
    kind: str  # "data": a dataset file; "checkpoint": a model folder; "upload": upload only
    make: Callable[[Path, Any], Path]
    mentions: tuple[str, ...]
    cli_args: tuple[str, ...] = ()
    batch_key: str | None = None
    layer: str | None = None
    upload: bool = True  # also try it as an upload
    cli: bool = True  # the command line reads any path and has no upload
    extra: dict[str, Any] = field(default_factory=dict)


def _data(fn: Callable[[ad.AnnData], ad.AnnData], name: str) -> Callable[[Path, Any], Path]:
    def make(folder: Path, _env: Any) -> Path:
        return write_h5ad(fn(base_adata()), folder / name)

    return make


def _negative(a: ad.AnnData) -> ad.AnnData:
    a.X[3, 7] = -2
    return a


def _nan(a: ad.AnnData) -> ad.AnnData:
    a.X[5, 1] = np.nan
    return a


def _fractional(a: ad.AnnData) -> ad.AnnData:
    a.X[2, 4] = 1.5
    return a


def _negative_protein(a: ad.AnnData) -> ad.AnnData:
    a.obsm["protein_expression"].iloc[4, 2] = -1
    return a


def _duplicate_cells(a: ad.AnnData) -> ad.AnnData:
    names = list(a.obs_names)
    names[10] = names[0]
    a.obs_names = names
    a.obsm["protein_expression"].index = names
    return a


def _corrupt_h5ad(folder: Path, _env: Any) -> Path:
    return corrupt(write_h5ad(base_adata(), folder / "corrupt.h5ad"))


def _corrupt_h5mu(folder: Path, _env: Any) -> Path:
    path = folder / "corrupt.h5mu"
    to_mudata(base_adata()).write(path)
    return corrupt(path)


def _truncated(folder: Path, _env: Any) -> Path:
    path = write_h5ad(base_adata(), folder / "truncated.h5ad")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _wrong_modalities(folder: Path, _env: Any) -> Path:
    path = folder / "modalities.h5mu"
    to_mudata(base_adata(), rna="gex", protein="adt").write(path)
    return path


def _mismatched_cells(folder: Path, _env: Any) -> Path:
    a = base_adata()
    mdata = to_mudata(a)
    prot = mdata.mod["protein"]
    names = list(prot.obs_names)
    names[0] = "NOT-A-CELL-1"
    prot.obs_names = names
    mdata = md.MuData({"rna": mdata.mod["rna"], "protein": prot})
    path = folder / "mismatch.h5mu"
    mdata.write(path)
    return path


def _empty_cells(folder: Path, _env: Any) -> Path:
    a = base_adata()[:0].copy()
    return write_h5ad(a, folder / "empty.h5ad")


def _no_genes(folder: Path, _env: Any) -> Path:
    a = base_adata()
    b = ad.AnnData(X=np.zeros((a.n_obs, 0), dtype=np.float32), obs=a.obs.copy())
    b.obsm["protein_expression"] = a.obsm["protein_expression"].copy()
    return write_h5ad(b, folder / "nogenes.h5ad")


def _text_as_h5ad(folder: Path, _env: Any) -> Path:
    path = folder / "notes.h5ad"
    path.write_text("cell,gene,count\nAAAC-1,CD3E,4\n")
    return path


def _missing_mtx(folder: Path, _env: Any) -> Path:
    out = folder / "tenx_no_matrix"
    out.mkdir()
    for f in ("barcodes.tsv.gz", "features.tsv.gz"):
        shutil.copy(MTX_10X / f, out / f)
    return out


def _outside(folder: Path, env: Any) -> Path:
    path = env.outside / "elsewhere.h5ad"
    if not path.exists():
        write_h5ad(base_adata(), path)
    return path


def _huge(folder: Path, _env: Any) -> Path:
    return write_h5ad(base_adata(), folder / "huge.h5ad")


def _good_copy(folder: Path, _env: Any) -> Path:
    return write_h5ad(base_adata(), folder / "good.h5ad")


def _other_genes_checkpoint(folder: Path, env: Any) -> Path:
    out = folder / "other_genes"
    shutil.copytree(env.other_ckpt, out)
    return out


def _scvi_like(folder: Path, _env: Any) -> Path:
    out = folder / "scvi_model"
    out.mkdir()
    state = {
        "z_encoder.encoder.fc_layers.Layer 0.0.weight": torch.randn(8, N_GENES),
        "decoder.px_decoder.fc_layers.Layer 0.0.weight": torch.randn(N_GENES, 8),
    }
    torch.save(
        {
            "model_state_dict": state,
            "var_names": np.array([f"g{i}" for i in range(N_GENES)]),
            "attr_dict": {"registry_": {"model_name": "SCVI", "scvi_version": "1.1.0"}},
        },
        out / "model.pt",
    )
    return out


def _random_torch(folder: Path, _env: Any) -> Path:
    out = folder / "random_model"
    out.mkdir()
    torch.save({"weights": torch.randn(10, 10)}, out / "model.pt")
    return out


def _garbage_checkpoint(folder: Path, _env: Any) -> Path:
    out = folder / "garbage_model"
    out.mkdir()
    (out / "model.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return out


def _torch_pickle_with_code(folder: Path, env: Any) -> Path:
    out = folder / "evil_torch"
    out.mkdir()
    torch.save({"model_state_dict": Payload(env.marker), "attr_dict": {}}, out / "model.pt")
    return out


def _raw_pickle_with_code(folder: Path, env: Any) -> Path:
    out = folder / "evil_pickle"
    out.mkdir()
    (out / "model.pt").write_bytes(pickle.dumps(Payload(env.marker)))
    return out


CASES = [
    Case("corrupt_h5ad", "data", _corrupt_h5ad, ("corrupt.h5ad",)),
    Case("corrupt_h5mu", "data", _corrupt_h5mu, ("corrupt.h5mu",)),
    Case("truncated_h5ad", "data", _truncated, ("truncated.h5ad",)),
    Case("text_renamed_h5ad", "data", _text_as_h5ad, ("notes.h5ad",)),
    Case("wrong_modality_names", "data", _wrong_modalities, ("modalities.h5mu", "rna", "gex")),
    Case(
        "negative_counts", "data", _data(_negative, "negative.h5ad"), ("negative.h5ad", "negative")
    ),
    Case("nan_counts", "data", _data(_nan, "nan.h5ad"), ("nan.h5ad",)),
    Case("non_integer_counts", "data", _data(_fractional, "fraction.h5ad"), ("fraction.h5ad",)),
    Case(
        "negative_protein_counts",
        "data",
        _data(_negative_protein, "negprot.h5ad"),
        ("negprot.h5ad", "protein"),
    ),
    Case("zero_cells", "data", _empty_cells, ("empty.h5ad", "cells")),
    Case("zero_genes", "data", _no_genes, ("nogenes.h5ad", "genes")),
    Case("mismatched_cells", "data", _mismatched_cells, ("mismatch.h5mu", "NOT-A-CELL-1")),
    Case(
        "duplicate_cells",
        "data",
        _data(_duplicate_cells, "dupcells.h5ad"),
        ("dupcells.h5ad", "duplicate"),
    ),
    Case(
        "unknown_batch_key",
        "data",
        _good_copy,
        ("good.h5ad", "donor"),
        batch_key="donor",
        upload=False,
    ),
    Case(
        "unknown_layer",
        "data",
        _good_copy,
        ("good.h5ad", "raw_counts"),
        layer="raw_counts",
        upload=False,
    ),
    Case(
        "10x_missing_matrix", "data", _missing_mtx, ("tenx_no_matrix", "matrix.mtx"), upload=False
    ),
    Case(
        "path_outside_data_folder",
        "data",
        _outside,
        ("elsewhere.h5ad", "data folder"),
        upload=False,
        cli=False,
    ),
    Case("huge_upload", "upload", _huge, ("huge.h5ad", "limit"), cli=False),
    Case(
        "checkpoint_other_genes",
        "checkpoint",
        _other_genes_checkpoint,
        ("pbmc_small.h5ad", "genes are missing", "OTHER0"),
    ),
    Case("checkpoint_scvi_model", "checkpoint", _scvi_like, ("scvi_model", "SCVI")),
    Case("checkpoint_random_torch", "checkpoint", _random_torch, ("random_model",)),
    Case("checkpoint_garbage_bytes", "checkpoint", _garbage_checkpoint, ("garbage_model",)),
    Case("pickle_with_code_torch", "checkpoint", _torch_pickle_with_code, ("evil_torch",)),
    Case("pickle_with_code_raw", "checkpoint", _raw_pickle_with_code, ("evil_pickle",)),
]
IDS = [c.name for c in CASES]
CLI_CASES = [c for c in CASES if c.cli]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A small trained model on the 300-gene slice, active in an app over temp folders."""
    from dashboard import backend
    from dashboard.app import create_app
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from dashboard.views.state import ActiveState, set_state
    from model import TotalVI, read_cite_seq

    root = tmp_path_factory.mktemp("bad-inputs")
    data_dir, model_dir, outside = root / "data", root / "models", root / "outside"
    for d in (data_dir, model_dir, outside):
        d.mkdir()
    good = write_h5ad(base_adata(), data_dir / "pbmc_small.h5ad")
    data = read_cite_seq(good, batch_key="batch")
    model = TotalVI(data, n_hidden=32, n_latent=5, seed=0)
    model.train(max_epochs=2, device="cpu", early_stopping=False)
    model.save(model_dir / "active")
    # a checkpoint trained on another gene set (genes 150..299 renamed)
    other = base_adata()
    other.var_names = [f"OTHER{i}" for i in range(other.n_vars)]
    other_data = read_cite_seq(write_h5ad(other, outside / "other.h5ad"), batch_key="batch")
    other_model = TotalVI(other_data, n_hidden=32, n_latent=5, seed=0)
    other_model.train(max_epochs=1, device="cpu", early_stopping=False)
    other_model.save(outside / "other_ckpt")

    settings = Settings(cache_dir=root / "cache", data_dir=data_dir, model_dir=model_dir)
    service = AnalysisService(settings)
    ds = service.open_dataset(good, batch_key="batch")
    pair = service.load_model(ds, model_dir / "active")
    latent = service.latent(pair)
    state = ActiveState(service, warm=False)
    state.activate(pair)
    app = create_app(service, state=state)
    env = SimpleNamespace(
        app=app,
        root=root,
        data_dir=data_dir,
        model_dir=model_dir,
        outside=outside,
        good=good,
        service=service,
        state=state,
        pair=pair,
        latent=latent,
        latent_key=service.key("latent", pair, {"seed": settings.seed}),
        checkpoint_bytes=(model_dir / "active" / "model.pt").read_bytes(),
        other_ckpt=outside / "other_ckpt",
        marker=root / MARKER,
    )
    yield env
    set_state(None)
    backend.set_service(None)
    service.close()


def snapshot(*folders: Path) -> set[str]:
    """Every file below ``folders`` (relative names, hidden temp files included)."""
    out: set[str] = set()
    for folder in folders:
        if folder.is_dir():
            out |= {str(p) for p in folder.rglob("*") if p.is_file()}
    return out


def stray(files: set[str]) -> list[str]:
    """Temp files of uploads, checkpoints and job records."""
    return [f for f in files if Path(f).name.startswith((".upload-", ".model.", ".job."))]


def assert_intact(env: SimpleNamespace, before: set[str], cases_dir: Path) -> None:
    after = snapshot(env.data_dir, env.model_dir, env.root / "cache" / "jobs")
    new = {f for f in after - before if not f.startswith(str(cases_dir))}
    new = {f for f in new if not (Path(f).suffix == ".json" and "/jobs/" in f)}
    assert not new, f"files written by a failed input: {sorted(new)}"
    assert not stray(after), stray(after)
    assert env.state.pair == env.pair
    assert (env.model_dir / "active" / "model.pt").read_bytes() == env.checkpoint_bytes
    assert env.service.cache.get(env.latent_key) is not None
    np.testing.assert_array_equal(env.service.latent(env.pair), env.latent)
    assert not env.marker.exists(), "unpickling ran code from a checkpoint"


def one_line(text: str, mentions: tuple[str, ...]) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text and 'File "' not in text
    for m in mentions:
        assert m.lower() in text.lower(), (m, text)


def alert_text(component: Any) -> str:
    """Text of an alert component (and its class, to tell warning from success)."""
    d = component.to_plotly_json() if hasattr(component, "to_plotly_json") else component
    parts: list[str] = []

    def visit(node: Any) -> None:
        if hasattr(node, "to_plotly_json"):
            node = node.to_plotly_json()
        if isinstance(node, dict):
            for v in node.values():
                visit(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v)
        elif isinstance(node, str):
            parts.append(node)

    visit(d)
    return " ".join(parts)


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_names_the_fault_in_one_line(case: Case, world, tmp_path, capsys) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    target = case.make(folder, world)
    out = tmp_path / "out"
    if case.kind == "checkpoint":
        argv = ["info", str(target), "--data", str(world.good), "--batch-key", "batch"]
    else:
        argv = ["train", str(target), "--out", str(out), "--max-epochs", "1", "--quiet"]
        if case.batch_key:
            argv += ["--batch-key", case.batch_key]
        if case.layer:
            argv += ["--layer", case.layer]
    before = snapshot(world.data_dir, world.model_dir, world.root / "cache" / "jobs")
    code = main(argv)
    printed = capsys.readouterr()
    assert code == 2, printed
    assert printed.err.startswith("error: ")
    one_line(printed.err, case.mentions)
    assert "Traceback" not in printed.out
    assert not out.exists() or not any(out.iterdir())
    assert not stray(snapshot(folder, tmp_path))
    assert_intact(world, before, folder)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app_shows_a_readable_alert(case: Case, world, monkeypatch) -> None:
    from dashboard.pages import model as page

    home = world.model_dir if case.kind == "checkpoint" else world.data_dir
    cases_dir = home / "cases" / case.name
    cases_dir.mkdir(parents=True)
    target = case.make(cases_dir, world)
    before = snapshot(world.data_dir, world.model_dir, world.root / "cache" / "jobs")
    alerts: list[str] = []

    if case.kind == "checkpoint":
        message, panel, _, _ = page.on_load(1, str(world.good), "batch", None, str(target))
        assert panel is not page.no_update, alert_text(message)  # the load job started
        view = world.state.switch.join(60)
        assert view.outcome == "failed", view
        panel, *_ = page.poll_switch(1)
        alerts.append(alert_text(panel[0]))
    elif case.kind == "upload" or case.upload:
        if case.kind == "upload":
            monkeypatch.setenv("TOTALVI_EXPLORER_MAX_UPLOAD_MB", "0.01")
            if hasattr(world.service.settings, "max_upload_bytes"):
                small = world.service.settings.with_overrides(max_upload_bytes=10_000)
                monkeypatch.setattr(world.service, "settings", small)
        done = post_upload(world.app.server, target.read_bytes(), target.name)
        options, value, status = finish_upload(page.dataset_upload, done)
        assert options is page.no_update and value is None  # no earlier dataset stays chosen
        alerts.append(alert_text(status))
    if case.kind == "data":
        if case.layer is not None:  # the page offers no layer; the service it calls does
            with pytest.raises(BackendError) as err:
                world.service.open_dataset(target, batch_key=case.batch_key, layer=case.layer)
            alerts.append(str(err.value))
        elif case.batch_key is not None:  # the page reads the data with it before training
            message, panel, _, _ = page.on_train(1, str(target), case.batch_key, 5, 1)
            assert panel is page.no_update  # refused at once: no training job starts
            assert not world.state.switch.view().running
            alerts.append(alert_text(message))
        else:
            options, value, info = page.on_dataset(str(target))
            assert options == [] and value is None
            alerts.append(alert_text(info))
    assert alerts
    for text in alerts:
        one_line(text, tuple(m for m in case.mentions if m != str(target)))
        assert "alert" in text or case.layer is not None
    time.sleep(0.05)
    assert_intact(world, before, cases_dir)
