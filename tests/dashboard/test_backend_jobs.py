"""Background jobs: progress, results, cancel of a running training, failures that keep
earlier results, the registry across processes, Dash manager factory and import hygiene."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.backend.celery_jobs import make_celery_app
from dashboard.backend.errors import BackendError, JobCancelled, JobFailed, JobNotFound
from dashboard.backend.jobs import JobContext, JobInfo, JobRegistry, JobRunner, JobStatus
from dashboard.backend.owner import acting_as
from dashboard.backend.refs import Pair
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def service(tmp_path_factory, trained):
    data, model = trained
    svc = AnalysisService(Settings(cache_dir=tmp_path_factory.mktemp("jobs-cache")))
    pair = svc.add_model(svc.add_dataset(data), model)
    yield svc, pair
    svc.close()


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.05)


def test_query_job_reports_progress_and_result(service) -> None:
    svc, pair = service
    job = svc.submit("clusters", pair, resolution=0.9)
    info = svc.wait(job, timeout=120)
    assert info.status == JobStatus.DONE and info.progress == 1.0
    assert info.result_key == svc.key(
        "clusters", pair, {"resolution": 0.9, "n_neighbors": 15, "seed": 0}
    )
    pd.testing.assert_series_equal(svc.job_result(job), svc.clusters(pair, 0.9))
    assert svc.cache.get(info.result_key) is not None
    assert info.started is not None and info.finished >= info.started
    assert json.loads((svc.settings.jobs_dir / f"{job}.json").read_text())["status"] == "done"


def test_cancel_running_training_job(service, tmp_path) -> None:
    svc, pair = service
    seen: list[float] = []
    job = svc.submit_train(pair.dataset, out_dir=tmp_path / "model", max_epochs=400)
    _wait_for(lambda: svc.job(job).progress > 0)  # at least one epoch done
    seen.append(svc.job(job).progress)
    assert svc.job(job).status == JobStatus.RUNNING
    assert "epoch" in svc.job(job).message
    t0 = time.monotonic()
    svc.cancel(job)
    info = svc.wait(job, timeout=60)
    assert time.monotonic() - t0 < 30
    assert info.status == JobStatus.CANCELLED
    assert "cancel" in info.message
    assert seen[0] < 0.5  # stopped long before the 400 epochs
    assert not (tmp_path / "model" / "model.pt").exists()  # nothing half-written
    with pytest.raises(JobCancelled):
        svc.job_result(job)


def test_failed_jobs_keep_earlier_results(service, trained, tmp_path) -> None:
    svc, pair = service
    data, model = trained
    # an earlier checkpoint and an earlier DE result
    model.save(tmp_path / "model")
    before_bytes = (tmp_path / "model" / "model.pt").read_bytes()
    sel = np.arange(50, 150)
    earlier = svc.de_groups(pair, sel, name1="earlier")
    key = svc.key(
        "de_groups",
        pair,
        {
            **svc.differential.de_params(),
            "idx1": sel,
            "idx2": None,
            "name1": "earlier",
            "name2": None,
        },
    )
    assert svc.cache.get(key) is not None
    # a DE job on an empty selection fails with a readable message
    job = svc.submit("de_groups", pair, idx1=np.zeros(data.n_cells, dtype=bool))
    info = svc.wait(job, timeout=60)
    assert info.status == JobStatus.FAILED
    assert info.error.startswith("group 1 is empty")  # the one line, no class name
    with pytest.raises(JobFailed, match="empty"):
        svc.job_result(job)
    # a training job that fails does not touch the earlier checkpoint
    job = svc.submit_train(
        pair.dataset, out_dir=tmp_path / "model", max_epochs=2, module_kwargs={"n_hidden": -1}
    )
    info = svc.wait(job, timeout=60)
    assert info.status == JobStatus.FAILED and info.error
    assert (tmp_path / "model" / "model.pt").read_bytes() == before_bytes
    computed = svc.cache.stats.computed
    pd.testing.assert_frame_equal(svc.de_groups(pair, sel, name1="earlier"), earlier)
    assert svc.cache.stats.computed == computed


def test_training_job_result_is_a_loadable_pair(service, tmp_path) -> None:
    svc, pair = service
    job = svc.submit_train(pair.dataset, out_dir=tmp_path / "m2", max_epochs=2, n_latent=5)
    info = svc.wait(job, timeout=120)
    assert info.status == JobStatus.DONE, info.error
    new = svc.job_result(job)
    assert isinstance(new, Pair) and Pair.from_dict(info.result) == new
    assert (tmp_path / "m2" / "model.pt").is_file()
    fresh = AnalysisService(Settings(cache_dir=tmp_path / "other-cache"))
    try:
        ds = fresh.add_dataset(svc.dataset(pair))
        loaded = fresh.load_model(ds, tmp_path / "m2")
        assert loaded.model.fingerprint == new.model.fingerprint
        assert fresh.latent(loaded).shape[1] == 5
    finally:
        fresh.close()


def test_load_model_job(service, trained, tmp_path) -> None:
    svc, pair = service
    _, model = trained
    model.save(tmp_path / "ckpt")
    job = svc.submit_load_model(pair.dataset, tmp_path / "ckpt")
    info = svc.wait(job, timeout=60)
    assert info.status == JobStatus.DONE
    loaded = svc.job_result(job)
    assert loaded.dataset == pair.dataset
    assert loaded.model.fingerprint == pair.model.fingerprint  # same weights, same results
    assert loaded.model.path == str(tmp_path / "ckpt")
    missing = svc.submit_load_model(pair.dataset, tmp_path / "nowhere")
    info = svc.wait(missing, timeout=60)
    assert info.status == JobStatus.FAILED and "no such model folder" in info.error


def test_registry_cancel_flag_and_dead_worker_across_processes(tmp_path) -> None:
    runner = JobRunner(JobRegistry(tmp_path))
    other = JobRegistry(tmp_path)  # what another process sees

    def loop(ctx: JobContext) -> str:
        for i in range(2000):
            ctx.progress(i / 2000, f"step {i}")
            if ctx.cancelled():
                return "stopped"
            time.sleep(0.01)
        return "finished"

    job = runner.submit("loop", loop)
    _wait_for(lambda: other.read(job).status == JobStatus.RUNNING)
    other.request_cancel(job)  # e.g. from a Dash background-callback process
    info = runner.wait(job, timeout=30)
    assert info.status == JobStatus.DONE and runner.result(job) == "stopped"
    # a record left "running" by a process that died reads as failed
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    other.write(JobInfo(id="ab" * 16, kind="x", status=JobStatus.RUNNING, pid=proc.pid))
    dead = other.read("ab" * 16)
    assert dead.status == JobStatus.FAILED and "exited" in dead.error
    runner.shutdown()


def test_celery_app_factory(tmp_path) -> None:
    """The Celery app is made from ``redis_url`` alone, one job per worker at a time; no
    URL is one readable line."""
    pytest.importorskip("celery", reason="celery[redis] is not installed (pip install -e .[test])")
    redis = Settings(cache_dir=tmp_path, redis_url="redis://localhost:6379/0")
    app = make_celery_app(redis)
    assert app.conf.broker_url.startswith("redis://")
    assert app.conf.worker_prefetch_multiplier == 1 and app.conf.task_acks_late
    assert app.conf.task_ignore_result  # how a job ended is in the job registry
    with pytest.raises(BackendError, match="REDIS_URL"):
        make_celery_app(Settings(cache_dir=tmp_path))


def test_job_owner_and_visibility(tmp_path) -> None:
    """A job started inside a request is its owner's: another owner reads its id as
    unknown and cannot cancel it; the server (no owner) sees every job."""
    svc = AnalysisService(Settings(cache_dir=tmp_path))
    try:
        with acting_as("alice"):
            job = svc.jobs.submit("x", lambda ctx: 1)
            assert svc.job(job).owner == "alice"
        with acting_as("bob"), pytest.raises(JobNotFound):
            svc.job(job)
        with acting_as("bob"), pytest.raises(JobNotFound):
            svc.cancel(job)
        assert svc.job(job).owner == "alice"
        assert [i.id for i in svc.jobs_of("bob")] == []
        assert [i.id for i in svc.jobs_of("alice")] == [job]
        shared = svc.jobs.submit("y", lambda ctx: 2)  # the server's own: everyone's
        with acting_as("bob"):
            assert svc.job(shared).owner is None
    finally:
        svc.close()


def test_backend_imports_no_dash_or_plotly() -> None:
    code = (
        "import sys\n"
        "import dashboard.backend, dashboard.backend.service\n"
        "import dashboard.backend.cli_commands, dashboard.backend.export\n"
        "import dashboard.backend.metrics, dashboard.backend.clustering\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dash', 'plotly')]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


def test_settings_from_env(tmp_path) -> None:
    env = {
        "TOTALVI_EXPLORER_CACHE_DIR": str(tmp_path / "c"),
        "TOTALVI_EXPLORER_CACHE_SIZE_LIMIT": "1000000",
        "TOTALVI_EXPLORER_EVICTION_POLICY": "least-recently-stored",
        "TOTALVI_EXPLORER_DE_N_SAMPLES": "1000",
        "TOTALVI_EXPLORER_MAX_DE_CELLS": "500",
        "REDIS_URL": "redis://x:1/0",
    }
    s = Settings.from_env(env, seed=3)
    assert s.cache_dir == tmp_path / "c" and s.results_dir == tmp_path / "c" / "results"
    assert s.cache_size_limit == 1_000_000 and s.de_n_samples == 1000 and s.max_de_cells == 500
    assert s.eviction_policy == "least-recently-stored" and s.seed == 3
    assert s.redis_url == "redis://x:1/0"
    with pytest.raises(ValueError, match="eviction_policy"):
        Settings(eviction_policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an integer"):
        Settings.from_env({"TOTALVI_EXPLORER_SEED": "abc"})
    svc = AnalysisService(s)
    try:
        assert svc.cache._disk.size_limit == 1_000_000
        assert svc.cache._disk.eviction_policy == "least-recently-stored"
    finally:
        svc.close()


def test_get_service_uses_configured_settings(tmp_path) -> None:
    from dashboard import backend

    try:
        backend.configure(Settings(cache_dir=tmp_path / "a"))
        first = backend.get_service()
        assert first.settings.cache_dir == tmp_path / "a"
        assert backend.get_service() is first
        backend.configure(Settings(cache_dir=tmp_path / "b"))
        assert backend.get_service().settings.cache_dir == tmp_path / "b"
        first.close()
        backend.get_service().close()
    finally:
        backend.configure(None)
        backend.set_service(None)


# ------------------------------------------------------------------- the server log
def _ten_steps(ctx: JobContext) -> str:
    for i in range(10):
        ctx.progress(i / 10, f"step {i}")
        time.sleep(0.21)  # past the 5-per-second write throttle
    return "ok"


def test_jobs_print_their_progress_in_the_server_log(tmp_path, caplog) -> None:
    """A job started from the browser leaves lines in the server's log: queued, each tenth
    of its progress, how it ended; the server turns these loggers on."""
    import logging

    from dashboard.server import JOB_LOGGERS, configure_logging

    runner = JobRunner(JobRegistry(tmp_path))
    caplog.set_level(logging.INFO, logger="dashboard.backend.jobs")
    try:
        job = runner.submit("prepare", _ten_steps)
        assert runner.result(job, timeout=30) == "ok"
        failed = runner.submit("de", lambda ctx: 1 / 0)
        runner.wait(failed, timeout=30)
    finally:
        runner.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "dashboard.backend.jobs"]
    name = f"prepare {job[:8]}"
    assert f"job {name} queued" in lines
    steps = [line for line in lines if line.startswith(f"job {name} [")]
    assert steps[0] == f"job {name} [  0%] step 0" and len(steps) >= 9
    assert f"job {name} [ 50%] step 5" in steps
    assert any(line.startswith(f"job {name} done in ") for line in lines)
    assert any(
        f"de {failed[:8]} failed after" in line and "ZeroDivisionError" in line for line in lines
    )
    # a new step is logged at once, the same step with new numbers only per tenth
    from dashboard.backend.jobs import ProgressLog

    caplog.clear()
    plog = ProgressLog("prepare", "feedbeef" * 4)
    for message in ("latent space", "UMAP", "epoch 1/400", "epoch 2/400", "Leiden clusters"):
        plog.progress(0.01, message)
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        "job prepare feedbeef queued",
        "job prepare feedbeef [  1%] latent space",
        "job prepare feedbeef [  1%] UMAP",
        "job prepare feedbeef [  1%] epoch 1/400",
        "job prepare feedbeef [  1%] Leiden clusters",
    ]
    configure_logging()
    for logger in JOB_LOGGERS:
        assert logging.getLogger(logger).getEffectiveLevel() == logging.INFO
