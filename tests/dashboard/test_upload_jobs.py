"""Upload checks are jobs: an arrived file is read by a job (owner, progress, cancel, one
line on refusal), a file refused on arrival gets a failed job record, and a job's payload
cannot point it at a file outside the upload areas."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from dashboard.backend import uploads
from dashboard.backend.errors import DatasetNotFound, JobNotFound
from dashboard.backend.jobs import JobStatus
from dashboard.backend.owner import acting_as, upload_area
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.uploads import INCOMING, Incoming, receive_upload
from dashboard.pages import _query_map
from dashboard.views.state import ActiveState, set_state

SLOW = "dashboard.testing:slow_reader"


@pytest.fixture
def service(tmp_path: Path):
    svc = AnalysisService(Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data"))
    set_state(ActiveState(svc))
    yield svc
    set_state(None)
    svc.close()


def arrive(svc: AnalysisService, raw: bytes, name: str, owner: str = "u-alice") -> Incoming:
    folder = upload_area(svc.settings.data_dir, owner)
    return receive_upload(io.BytesIO(raw), name, folder, max_bytes=64 << 20)


def wait_reading(svc: AnalysisService, job: str) -> None:
    deadline = time.monotonic() + 30
    while "reading" not in svc.job(job).message:
        assert time.monotonic() < deadline, "the check never started reading"
        time.sleep(0.05)


def test_a_check_is_a_job_of_its_owner_and_can_be_cancelled(service, monkeypatch) -> None:
    monkeypatch.setitem(uploads.UPLOAD_TARGETS, "dataset", SLOW)
    with acting_as("u-alice"):
        arrived = arrive(service, b"x" * 64, "slow cells.h5ad")
        assert arrived.tmp.parent.name == INCOMING and arrived.tmp.is_file()
        job = service.submit_upload("dataset", arrived)
        info = service.job(job)
    assert (info.kind, info.owner, info.params) == (
        "upload",
        "u-alice",
        {"target": "dataset", "file": "slow cells.h5ad"},
    )
    with acting_as("u-bob"), pytest.raises(JobNotFound):
        service.job(job)  # another user's check reads as unknown
    wait_reading(service, job)
    assert "reading slow cells.h5ad" in service.job(job).message
    assert service.job(job).status == JobStatus.RUNNING
    t0 = time.monotonic()
    with acting_as("u-alice"):
        service.cancel(job)
    ended = service.wait(job, timeout=30)
    assert ended.status == JobStatus.CANCELLED and time.monotonic() - t0 < 10
    assert "checking it was cancelled" in ended.message
    assert not arrived.tmp.exists()  # the temporary file goes, nothing is stored
    folder = arrived.folder
    assert not [p for p in folder.iterdir() if p.is_file()]
    # the drop zone's outcome line says so, and clears the choice
    with acting_as("u-alice"):
        _, value, status, progress = _query_map.upload_checked(
            {"job": job, "t": 1}, "dataset", lambda svc: []
        )
    line = status.children[0].children
    assert value is None and progress == []
    assert line == (
        "Checking slow cells.h5ad was cancelled. Nothing was stored; choose a dataset or "
        "upload another."
    )


def test_a_refused_check_fails_in_one_line_and_stores_nothing(service) -> None:
    with acting_as("u-alice"):
        arrived = arrive(service, b"not hdf5 at all", "junk.h5ad")
        info = service.wait(service.submit_upload("dataset", arrived), timeout=60)
    assert info.status == JobStatus.FAILED and info.error.startswith("junk.h5ad: ")
    assert "\n" not in info.error and str(arrived.tmp) not in info.error
    assert not any(p.is_file() for p in arrived.folder.rglob("*"))


def test_an_accepted_check_names_the_file_and_keeps_what_it_read(service, test_data) -> None:
    tiny_h5ad = (test_data / "pbmc_10k_protein_v3_200cells.h5ad").read_bytes()
    with acting_as("u-alice"):
        first = service.wait(
            service.submit_upload("dataset", arrive(service, tiny_h5ad, "mine.h5ad")), 60
        )
        second = service.wait(
            service.submit_upload("dataset", arrive(service, tiny_h5ad, "mine.h5ad")), 60
        )
    assert first.status == second.status == JobStatus.DONE, (first.error, second.error)
    names = [Path(info.result["path"]).name for info in (first, second)]
    assert names == ["mine.h5ad", "mine-2.h5ad"]  # never overwritten
    summary = first.result["summary"]
    assert summary["n_cells"] > 0 and summary["source"] == "mine.h5ad"


def test_a_file_refused_on_arrival_gets_a_failed_record(service) -> None:
    with acting_as("u-alice"):
        with pytest.raises(DatasetNotFound) as err:
            arrive(service, b"x", "notes.txt")
        job = service.refuse("upload", str(err.value), target="dataset", file="notes.txt")
        info = service.wait(job, timeout=1)
    assert info.status == JobStatus.FAILED and info.error.startswith("notes.txt: upload an")
    assert info.owner == "u-alice" and info.params["target"] == "dataset"
    with acting_as("u-alice"):
        found = _query_map.mv.upload_check(job, "dataset")
        assert found is not None and found.status == "failed"
        assert _query_map.mv.upload_check(job, "query") is None  # not the other zone's


@pytest.mark.parametrize(
    "where", ["outside", "not incoming", "missing", "linked elsewhere", "unsafe name"]
)
def test_a_payload_cannot_point_the_check_elsewhere(service, tmp_path, where) -> None:
    """A worker takes the job's payload from Redis: it checks, names and deletes only a
    file in an upload area's hidden incoming folder, stored beside that folder."""
    victim = tmp_path / "victim.h5ad"
    victim.write_bytes(b"precious")
    area = upload_area(service.settings.data_dir, "u-alice")
    (area / INCOMING).mkdir(parents=True)
    kept = area / "kept.h5ad"
    kept.write_bytes(b"precious too")
    waiting = area / INCOMING / "0123.h5ad"
    waiting.write_bytes(b"arrived")
    tmp, folder, name = {
        "outside": (victim, area, "x.h5ad"),
        "not incoming": (kept, area, "x.h5ad"),
        "missing": (area / INCOMING / "gone.h5ad", area, "x.h5ad"),
        "linked elsewhere": (waiting, tmp_path, "x.h5ad"),
        "unsafe name": (waiting, area, "../x.h5ad"),
    }[where]
    payload = {"target": "dataset", **Incoming(tmp, name, "x.h5ad", folder).to_dict()}
    with pytest.raises(DatasetNotFound, match="upload it again"):
        service.job_body("upload", payload)
    assert victim.read_bytes() == b"precious" and kept.read_bytes() == b"precious too"


def test_a_check_cancelled_before_it_starts_leaves_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(uploads.UPLOAD_TARGETS, "dataset", SLOW)
    svc = AnalysisService(
        Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data"), max_jobs=1
    )
    try:
        with acting_as("u-alice"):
            first = svc.submit_upload("dataset", arrive(svc, b"x" * 64, "first.h5ad"))
            waiting = arrive(svc, b"y" * 64, "second.h5ad")
            second = svc.submit_upload("dataset", waiting)  # queued behind the first
            assert svc.job(second).status == JobStatus.QUEUED
            svc.cancel(second)
            svc.cancel(first)
        assert svc.wait(second, timeout=30).message == "cancelled before start"
        assert svc.wait(first, timeout=30).status == JobStatus.CANCELLED
        assert not waiting.tmp.exists()  # its clean-up ran although its body never did
        assert not list(waiting.tmp.parent.iterdir())
    finally:
        svc.close()


def test_a_check_the_queue_cannot_take_leaves_no_file(service) -> None:
    """With Celery configured but Redis unreachable the job fails at once: the arrived
    file goes with it (no worker will ever read it)."""

    class Unreachable:
        def submit(self, kind: str, payload: dict, *, params: dict) -> str:
            job = service.jobs.refuse(kind, "the job queue (Redis) cannot be reached")
            return job

    service.background.remote = Unreachable()
    with acting_as("u-alice"):
        arrived = arrive(service, b"x" * 64, "mine.h5ad")
        job = service.submit_upload("dataset", arrived)
        info = service.job(job)
    assert info.status == JobStatus.FAILED and "cannot be reached" in info.error
    assert not arrived.tmp.exists()


def test_waiting_on_another_users_job_reads_as_unknown(service) -> None:
    with acting_as("u-alice"):
        job = service.refuse("upload", "x.h5ad: refused", target="dataset", file="x.h5ad")
    with acting_as("u-bob"):
        with pytest.raises(JobNotFound):
            service.wait(job, timeout=1)
        with pytest.raises(JobNotFound):
            service.discard_partial_checkpoint(job)
    assert service.wait(job, timeout=1).status == JobStatus.FAILED  # the server sees all
