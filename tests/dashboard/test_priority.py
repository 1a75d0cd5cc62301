"""Job threads run at a lower CPU priority than the threads answering page requests
(Linux nice values, per thread), and what they start inherits it."""

from __future__ import annotations

import sys
import threading

import pytest

from dashboard.backend.jobs import JobRegistry, JobRunner
from dashboard.backend.priority import MAX_NICE, lower_thread_priority, thread_nice
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def in_thread(fn) -> object:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(10)
    return out[0]


@linux
def test_a_thread_lowers_its_own_priority_only() -> None:
    base = thread_nice()
    assert in_thread(lambda: lower_thread_priority(0)) == base  # 0: unchanged
    assert in_thread(lambda: lower_thread_priority(4)) == min(MAX_NICE, base + 4)
    assert in_thread(lambda: lower_thread_priority(100)) == MAX_NICE  # capped
    assert thread_nice() == base  # the calling (request) thread keeps its priority

    def lowered_then_child() -> tuple[int, object]:
        mine = lower_thread_priority(3)
        return mine, in_thread(thread_nice)  # what it starts (torch's team) inherits it

    mine, child = in_thread(lowered_then_child)
    assert child == mine == min(MAX_NICE, base + 3)


@linux
def test_jobs_run_below_the_server_threads(tmp_path) -> None:
    base = thread_nice()
    runner = JobRunner(JobRegistry(tmp_path / "jobs"), nice=6)
    try:
        job = runner.submit("probe", lambda ctx: thread_nice())
        assert runner.result(job, timeout=30) == min(MAX_NICE, base + 6)
    finally:
        runner.shutdown()
    assert thread_nice() == base
    service = AnalysisService(Settings(cache_dir=tmp_path / "cache", job_nice=2))
    try:  # the service's runner at the configured nice
        job = service.jobs.submit("probe", lambda ctx: thread_nice())
        assert service.jobs.result(job, timeout=30) == min(MAX_NICE, base + 2)
    finally:
        service.close()


@pytest.mark.parametrize("nice", [-1, 20])
def test_job_nice_outside_0_to_19_is_refused(nice: int) -> None:
    with pytest.raises(ValueError, match="job_nice must be from 0 to 19"):
        Settings(job_nice=nice)
