"""Untrusted files are read in a limited child process: a crash, a balloon or a hang there
ends the child with one line for the user; the server process is untouched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import dashboard.backend.untrusted as untrusted
from dashboard.backend.errors import DatasetNotFound, LimitExceeded
from dashboard.backend.settings import Settings
from dashboard.backend.untrusted import ValidationSummary, validate_file, validate_in_child

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
TARGETS = "untrusted_targets"


@pytest.fixture(autouse=True)
def targets_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), old) if p))
    monkeypatch.setattr(untrusted, "_verdicts", untrusted.OrderedDict())


def run(path: Path, reader: str, **kw: object) -> ValidationSummary:
    args = {"memory_limit_bytes": 256 * 1024**2, "timeout_s": 30.0, "source_name": "mine.h5ad"}
    args.update(kw)
    return validate_in_child(path, reader=f"{TARGETS}:{reader}", **args)  # type: ignore[arg-type]


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / ".upload-x1y2.h5ad"
    path.write_bytes(b"anything")
    return path


def test_good_file_gives_its_summary():
    s = validate_in_child(
        DATA / "pbmc_10k_protein_v3_200cells.h5ad",
        memory_limit_bytes=2 * 1024**3,
        timeout_s=120,
        source_name="pbmc.h5ad",
    )
    assert (s.source, s.n_cells, s.n_genes, s.n_proteins) == ("pbmc.h5ad", 200, 16727, 14)
    assert "n_counts" in s.obs_columns
    assert len(s.fingerprint) == 64
    assert s.notices == ()


def test_crash_in_the_child_is_one_line(upload: Path):
    with pytest.raises(DatasetNotFound) as info:
        run(upload, "crash")
    assert str(info.value) == (
        "mine.h5ad: the reader crashed (signal 11, SIGSEGV); the file is malformed; refused"
    )
    assert os.getpid() > 0  # still here


def test_reading_beyond_the_memory_limit_is_refused(upload: Path):
    with pytest.raises(DatasetNotFound) as info:
        run(upload, "balloon", memory_limit_bytes=128 * 1024**2)
    assert str(info.value) == "mine.h5ad: reading it used more than 128 MB of memory; refused"


def test_a_hanging_reader_is_stopped(upload: Path):
    t0 = time.monotonic()
    with pytest.raises(DatasetNotFound, match=r"^mine.h5ad: reading it took longer than 1 s"):
        run(upload, "hang", timeout_s=1.0)
    assert time.monotonic() - t0 < 10


def test_the_readers_message_names_the_users_file(upload: Path):
    with pytest.raises(DatasetNotFound) as info:
        run(upload, "refuse")
    msg = str(info.value)
    assert msg == "mine.h5ad: X: CSR indptr decreases at row 17 second line"
    assert ".upload-" not in msg and str(upload.parent) not in msg


def test_a_malformed_file_is_refused_by_the_real_reader_naming_the_users_file(tmp_path: Path):
    import anndata as ad
    import h5py
    import numpy as np
    import scipy.sparse as sp

    path = tmp_path / ".upload-1234.h5ad"
    adata = ad.AnnData(X=sp.random(30, 20, density=0.3, format="csr", random_state=0))
    adata.obsm["protein_expression"] = np.ones((30, 2))
    adata.write_h5ad(path)
    with h5py.File(path, "r+") as f:
        indptr = f["X/indptr"][()]
        indptr[18] = indptr[17] - 1
        f["X/indptr"][...] = indptr
    with pytest.raises(DatasetNotFound) as info:
        validate_in_child(
            path, memory_limit_bytes=2 * 1024**3, timeout_s=120, source_name="mine.h5ad"
        )
    assert str(info.value) == "mine.h5ad: X: CSR indptr decreases at row 17"


def test_verdict_is_remembered_per_file_and_survives_a_rename(upload: Path, monkeypatch):
    settings = Settings(validate_memory_limit=256 * 1024**2, validate_timeout=30.0)
    calls = []
    real = untrusted.validate_in_child

    def counting(*args: object, **kwargs: object) -> ValidationSummary:
        calls.append(kwargs["read_kwargs"])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(untrusted, "validate_in_child", counting)
    reader = f"{TARGETS}:stub"
    first = validate_file(upload, settings=settings, source_name="mine.h5ad", reader=reader)
    assert (first.n_cells, first.notices, first.obs_columns) == (3, ("a note",), ())
    final = upload.with_name("mine.h5ad")
    upload.rename(final)
    kwargs = {"batch_key": None, "layer": None}
    assert validate_file(final, settings=settings, read_kwargs=kwargs, reader=reader) == first
    assert len(calls) == 1
    other = validate_file(final, settings=settings, read_kwargs={"batch_key": "b"}, reader=reader)
    assert other.obs_columns == ("batch_key",)
    assert calls == [{}, {"batch_key": "b"}]
    os.utime(final, ns=(1, 1))  # modified: read again
    validate_file(final, settings=settings, reader=reader)
    assert len(calls) == 3


def test_open_dataset_untrusted_validates_first(tmp_path: Path, monkeypatch):
    from dashboard.backend.service import AnalysisService

    seen = []

    def refuse(path: Path, **kwargs: object) -> None:
        seen.append((Path(path).name, kwargs["read_kwargs"]))
        raise DatasetNotFound("pbmc.h5ad: refused")

    monkeypatch.setattr(untrusted, "validate_file", refuse)
    svc = AnalysisService(Settings(data_dir=DATA, cache_dir=tmp_path / "cache"))
    try:
        with pytest.raises(DatasetNotFound, match="refused"):
            svc.open_dataset("pbmc_10k_protein_v3_200cells.h5ad", untrusted=True, layer=None)
        from model.read_options import ReadOptions

        assert seen == [("pbmc_10k_protein_v3_200cells.h5ad", ReadOptions().read_kwargs())]
    finally:
        svc.close()


def test_uploads_are_validated_in_the_child(tmp_path: Path, monkeypatch):
    import io

    from dashboard.backend.uploads import INCOMING, store_upload, upload_validators
    from dashboard.views.model import upload_notices

    seen = []

    def fake(path: Path, *, settings: Settings, source_name: str, reader: str, should_stop=None):
        seen.append((path.parent.name, source_name, reader))
        return ValidationSummary(source_name, 1, 1, 1, (), ("note",), "0" * 64)

    monkeypatch.setattr(untrusted, "validate_file", fake)
    checks = upload_validators(Settings(cache_dir=tmp_path / "cache"))
    for target, reader in (
        ("dataset", untrusted.DATASET_READER),
        ("query", untrusted.QUERY_READER),
    ):
        _, data = store_upload(
            io.BytesIO(b"x" * 10), "mine.h5ad", tmp_path, max_bytes=100, validate=checks[target]
        )
        assert seen[-1] == (INCOMING, "mine.h5ad", reader)
        assert upload_notices(data) == ("note",)


def test_a_full_queue_is_refused_at_once_not_waited_for(upload: Path, monkeypatch):
    """With every child slot busy (other users' files), a file is refused after a short
    wait instead of holding a server thread for as long as the others take."""
    monkeypatch.setattr(untrusted, "SLOT_WAIT", 0.2)
    held = [untrusted._slots.acquire(timeout=1) for _ in range(untrusted.MAX_CHILDREN)]
    try:
        assert all(held)
        t0 = time.monotonic()
        with pytest.raises(LimitExceeded, match="other files are being checked"):
            run(upload, "stub")
        assert time.monotonic() - t0 < 5
    finally:
        for _ in held:
            untrusted._slots.release()
    assert run(upload, "stub").n_cells >= 0  # and works again once a slot is free
