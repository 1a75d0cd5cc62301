"""Job processes end with the server, and job records do not pile up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import psutil

from dashboard.backend.jobs import KEEP_RECENT, JobInfo, JobRegistry, JobRunner, JobStatus
from dashboard.backend.lifetime import die_with_parent
from dashboard.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: A job target importable by name in the spawned child (its folder is put on sys.path).
LOOPER = """
import os, time

def loop(ctx, pid_file):
    with open(pid_file + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    while True:  # never looks at ctx: only its parent's death may end it
        time.sleep(0.05)
"""

#: The "server": a JobRunner with one process job, then it waits to be killed.
PARENT = """
import sys, time
sys.path.insert(0, {here!r})
sys.path.insert(0, {root!r})
from dashboard.backend.jobs import JobRegistry, JobRunner
import looper
runner = JobRunner(JobRegistry({jobs!r}))
runner.submit_process("train", looper.loop, ({pid_file!r},))
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Dead or a zombie (nobody reaps an orphan at once in a container)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_9_of_the_server_ends_its_job_process(tmp_path) -> None:
    (tmp_path / "looper.py").write_text(LOOPER)
    pid_file = tmp_path / "child.pid"
    script = PARENT.format(
        here=str(tmp_path), root=str(ROOT), jobs=str(tmp_path / "jobs"), pid_file=str(pid_file)
    )
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        wait_for(pid_file.exists, 60, "the job process to start")
        child = int(pid_file.read_text())
        assert psutil.Process(child).ppid() == parent.pid
        family = psutil.Process(parent.pid).children(recursive=True)  # + resource tracker
        assert child in {p.pid for p in family}
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: _gone(child), 5, f"the job process {child} to end with its parent")
        # nothing else multiprocessing started keeps running (its resource tracker)
        wait_for(lambda: all(_gone(p.pid) for p in family), 5, "every child to end")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid_file.exists():
            child = int(pid_file.read_text())
            if not _gone(child):
                os.kill(child, signal.SIGKILL)


def test_die_with_parent_exits_when_the_parent_is_already_gone() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from dashboard.backend.lifetime import die_with_parent\n"
        "die_with_parent(1)\n"  # not our parent: as if it died before the call
        "print('still here')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "still here" not in out.stdout
    die_with_parent(os.getppid())  # our real parent: returns, nothing happens


def test_watchdog_thread_where_prctl_is_unavailable(monkeypatch) -> None:
    from dashboard.backend import lifetime

    monkeypatch.setattr(lifetime, "_set_pdeathsig", lambda: False)
    exits = []
    monkeypatch.setattr(lifetime.os, "_exit", exits.append)
    parent = [os.getppid()]
    monkeypatch.setattr(lifetime.os, "getppid", lambda: parent[0])
    lifetime.die_with_parent(parent[0], poll=0.01)
    time.sleep(0.05)
    assert not exits
    parent[0] = 1  # the parent died: we were re-parented
    wait_for(lambda: bool(exits), 2, "the watchdog to exit")
    assert exits == [1]


# ----------------------------------------------------------------- job records
def _record(registry: JobRegistry, n: int, status: JobStatus, age: float) -> str:
    job_id = f"{n:032x}"
    now = time.time()
    registry.write(
        JobInfo(
            id=job_id,
            kind="test",
            status=status,
            created=now - age,
            finished=now - age if status.finished else None,
        )
    )
    if status.finished:
        registry.request_cancel(job_id)  # a leftover flag goes with its record
    return job_id


def test_old_and_surplus_finished_records_are_pruned(tmp_path) -> None:
    registry = JobRegistry(tmp_path, max_age=3600, max_count=3)
    day = 86400.0
    for i in range(4):
        _record(registry, i, JobStatus.DONE, day + i)
    old_running = _record(registry, 10, JobStatus.RUNNING, 30 * day)  # our pid: alive
    # ended in the last KEEP_RECENT seconds: kept even beyond the count (waiters read them)
    recent = [_record(registry, 20 + i, JobStatus.FAILED, 60.0 * i) for i in range(5)]
    older = [_record(registry, 30 + i, JobStatus.DONE, KEEP_RECENT + 60 * (i + 1))
             for i in range(2)]  # fmt: skip
    dropped = registry.prune()
    assert len(dropped) == 4 + 2 and set(older) <= set(dropped)
    left = {p.stem for p in tmp_path.glob("*.json")}
    assert left == {old_running, *recent}  # the recent finished ones and the running one
    assert {p.stem for p in tmp_path.glob("*.cancel")} <= left
    assert registry.prune() == []


def test_runner_prunes_at_start_and_on_submit(tmp_path) -> None:
    registry = JobRegistry(tmp_path, max_age=3600, max_count=2)
    stale = _record(registry, 1, JobStatus.DONE, 2 * 86400)
    runner = JobRunner(registry)
    try:
        assert not (tmp_path / f"{stale}.json").exists()  # pruned at start
        ids = [runner.submit("test", lambda ctx: None) for _ in range(5)]
        for job_id in ids:
            runner.wait(job_id, timeout=10)  # just ended: kept whatever the count
        assert all((tmp_path / f"{i}.json").exists() for i in ids)
        for job_id in ids:  # as if they had ended 20 minutes ago
            info = registry.read(job_id)
            registry.write(replace(info, finished=time.time() - 1200))
        runner.submit("test", lambda ctx: None)  # prunes: too many records
        assert len(list(tmp_path.glob("*.json"))) <= 2 + 1
        kept = {p.stem for p in tmp_path.glob("*.json")}
        assert set(ids) & set(runner._results) <= kept  # pruned ones are forgotten here too
        assert len(set(ids) & set(runner._results)) <= 2
    finally:
        runner.shutdown()


def test_registry_without_limits_keeps_everything(tmp_path) -> None:
    registry = JobRegistry(tmp_path)
    _record(registry, 1, JobStatus.DONE, 365 * 86400)
    assert registry.prune() == [] and len(list(tmp_path.glob("*.json"))) == 1
