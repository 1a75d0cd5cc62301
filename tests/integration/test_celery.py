"""A training job on a real Celery worker through a real Redis: a redis-server on a free
loopback port, a worker subprocess (``dashboard.worker``), the job queued by the web side and
followed through the shared job registry; the trained model then loads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.backend.jobs import JobStatus
from dashboard.backend.refs import Pair
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import write_small_pbmc

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*without encoding metadata")]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port."""
    pytest.importorskip("celery", reason="celery[redis] is not installed (pip install -e .[test])")
    redis = pytest.importorskip("redis", reason="the redis client is not installed")
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log = (tmp_path / "redis.log").open("w")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                log.close()
                text = (tmp_path / "redis.log").read_text()[-500:]
                pytest.skip(f"redis-server could not be started on port {port}: {text}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    stop(proc)
    log.close()


def test_training_job_on_a_celery_worker(redis_url, tmp_path) -> None:
    from dashboard.background import make_celery_app, submit_train_celery
    from model import TotalVI

    settings = Settings(
        cache_dir=tmp_path / "cache",
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        redis_url=redis_url,
        device="cpu",
    )
    settings.data_dir.mkdir()
    path = write_small_pbmc(settings.data_dir / "small.h5ad")
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TOTALVI_EXPLORER_CACHE_DIR": str(settings.cache_dir),
        "TOTALVI_EXPLORER_DATA_DIR": str(settings.data_dir),
        "TOTALVI_EXPLORER_MODEL_DIR": str(settings.model_dir),
        "TOTALVI_EXPLORER_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dashboard.worker:celery_app",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    svc = AnalysisService(settings)
    celery_app = make_celery_app(settings)
    try:
        ds = svc.open_dataset(path, batch_key="batch")
        out = settings.model_dir / "celery-model"
        job = submit_train_celery(
            svc,
            celery_app,
            ds,
            out_dir=out,
            max_epochs=30,
            n_latent=5,
            module_kwargs={"n_hidden": 32},
            early_stopping=False,
        )
        seen: list[tuple[float, str]] = []
        deadline = time.monotonic() + 50
        while True:
            info = svc.job(job)
            seen.append((info.progress, info.message))
            if info.status.finished:
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"job {info.status} ({info.message}); worker log:\n"
                    + worker_log.read_text()[-3000:]
                )
            time.sleep(0.05)
        assert info.status == JobStatus.DONE, (info.error, worker_log.read_text()[-3000:])
        assert info.progress == 1.0 and info.pid != os.getpid() and info.pid == worker.pid
        assert any(0 < p < 1 and "epoch" in m for p, m in seen), seen[-5:]
        assert celery_app.AsyncResult(job).get(timeout=10) == info.result
        pair = svc.job_result(job)
        assert isinstance(pair, Pair) and pair.model.path == str(out)
        model = TotalVI.load(out, data=svc.dataset(ds))
        assert model.is_trained and len(model.history) == 30
        assert svc.model(pair).config.n_latent == 5
        assert not list(out.glob(".model.*"))
    finally:
        stop(worker)
        celery_app.close()
        svc.close()
