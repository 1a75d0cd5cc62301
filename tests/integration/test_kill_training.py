"""A training job in its own process can be killed (SIGKILL) mid-epoch: the job reads as
failed, nothing is half-written, the earlier model and its cached results stay, and the next
training job runs to the end."""

from __future__ import annotations

import os
import signal

import numpy as np
import psutil
import pytest

from dashboard.backend.jobs import JobRegistry, JobStatus
from dashboard.backend.refs import Pair
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import write_small_pbmc
from dashboard.testing import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*without encoding metadata")]

SMALL = {"n_latent": 5, "module_kwargs": {"n_hidden": 32}, "early_stopping": False}


def test_sigkill_of_a_training_process(tmp_path) -> None:
    data_dir, models = tmp_path / "data", tmp_path / "models"
    data_dir.mkdir()
    path = write_small_pbmc(data_dir / "small.h5ad")
    svc = AnalysisService(
        Settings(cache_dir=tmp_path / "cache", data_dir=data_dir, model_dir=models, device="cpu")
    )
    try:
        ds = svc.open_dataset(path, batch_key="batch")
        active = svc.train(ds, out_dir=models / "active", max_epochs=2, **SMALL)
        latent = svc.latent(active)
        latent_key = svc.key("latent", active, {"seed": svc.settings.seed})
        active_bytes = (models / "active" / "model.pt").read_bytes()

        job = svc.submit_train(ds, process=True, out_dir=models / "new", max_epochs=5000, **SMALL)
        other = JobRegistry(svc.settings.jobs_dir)  # what another process sees
        wait_for(
            lambda: other.read(job).pid != os.getpid() and "epoch" in other.read(job).message,
            timeout=60,
            what="the child to record its pid and finish an epoch",
        )
        info = other.read(job)
        assert info.status == JobStatus.RUNNING and info.progress < 0.5
        child = psutil.Process(info.pid)
        assert child.ppid() == os.getpid()  # a child process of ours, not a thread
        os.kill(info.pid, signal.SIGKILL)
        wait_for(lambda: other.read(job).status.finished, timeout=10, what="the job to fail")
        dead = svc.wait(job, timeout=10)
        assert dead.status == JobStatus.FAILED
        assert str(info.pid) in dead.error and ("killed" in dead.error or "exited" in dead.error)
        assert other.read(job).status == JobStatus.FAILED
        # nothing half-written; the earlier model and its cached results are intact
        leftovers = list((models / "new").glob("*")) if (models / "new").exists() else []
        assert not leftovers, leftovers
        assert not list(models.rglob(".model.*"))
        assert (models / "active" / "model.pt").read_bytes() == active_bytes
        assert svc.cache.get(latent_key) is not None
        np.testing.assert_array_equal(svc.latent(active), latent)

        # a new training job starts and completes, in a process again
        job2 = svc.submit_train(ds, process=True, out_dir=models / "new", max_epochs=3, **SMALL)
        done = svc.wait(job2, timeout=60)
        assert done.status == JobStatus.DONE, done.error
        assert done.progress == 1.0 and done.pid != os.getpid()
        pair = svc.job_result(job2)
        assert isinstance(pair, Pair) and pair.model.path == str(models / "new")
        model = svc.model(pair)  # reloaded from the saved checkpoint
        assert model.is_trained and len(model.history) == 3
        assert svc.latent(pair).shape == (200, 5)
    finally:
        svc.close()


def test_registry_reads_a_killed_unreaped_worker_as_failed(tmp_path) -> None:
    """A just-killed process is a zombie until its parent reaps it; the registry must not
    take it for alive (``os.kill(pid, 0)`` still succeeds on a zombie)."""
    import subprocess
    import sys

    from dashboard.backend.jobs import JobInfo

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    registry = JobRegistry(tmp_path)
    registry.write(JobInfo(id="cd" * 16, kind="train", status=JobStatus.RUNNING, pid=proc.pid))
    assert registry.read("cd" * 16).status == JobStatus.RUNNING
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, 10, "the zombie")
    info = registry.read("cd" * 16)
    assert info.status == JobStatus.FAILED and str(proc.pid) in info.error
    proc.wait()
