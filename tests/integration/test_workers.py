"""Two users, one server, two Celery workers: a real redis-server on a free loopback port,
two ``celery worker`` processes (``dashboard.worker``) and ``totalvi-explorer serve`` with two
basic-auth users, all talking only as in production (HTTP callbacks, Redis, the shared job
registry in the cache folder).

Alice loads a second model while Bob trains one, at the same moment, through the Model
page's callbacks; both preparations and the training run on the workers (the job records
say which worker ran what, and both did work), each user ends on their own model, and
neither sees the other's; a file Alice uploads is checked by a job on a worker too. Then a
worker process is killed in the middle of Bob's next training: the job reads as failed with
one line, no model folder is left half-written, and Train works again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard import ids
from dashboard.testing_live import (
    OTHER_PASSWORD,
    OTHER_USER,
    PASSWORD,
    USER,
    Live,
    response_text,
    start_server,
    stop_server,
)

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
            proc.wait(timeout=15)
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
                pytest.fail(f"redis-server did not start: {(tmp_path / 'redis.log').read_text()}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    stop(proc)
    log.close()


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as fh:
        return subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "dashboard.worker:celery_app", "worker",
                "--pool=prefork", "--concurrency=1", "--loglevel=INFO", "--without-gossip",
                "--without-mingle", "-n", f"{name}@%h",
            ],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip


def records(live: Live) -> list[dict]:
    out = []
    for p in (live.cache_dir / "jobs").glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r["created"])


def train(live: Live, epochs: int) -> str:
    values = {
        f"{ids.MODEL_TRAIN}.n_clicks": 1,
        f"{ids.MODEL_DATASET}.value": "small.h5ad",
        f"{ids.MODEL_BATCH_KEY}.value": "batch",
        f"{ids.MODEL_N_LATENT}.value": 5,
        f"{ids.MODEL_MAX_EPOCHS}.value": epochs,
    }
    return response_text(live.fire(f"{ids.MODEL_TRAIN}.n_clicks", values))


def load(live: Live, folder: Path) -> str:
    values = {
        f"{ids.MODEL_LOAD}.n_clicks": 1,
        f"{ids.MODEL_DATASET}.value": "small.h5ad",
        f"{ids.MODEL_BATCH_KEY}.value": "batch",
        f"{ids.MODEL_CHECKPOINT}.value": str(folder),
        f"{ids.MODEL_OWN_DATA}.value": [],
    }
    return response_text(live.fire(f"{ids.MODEL_LOAD}.n_clicks", values))


def wait_for(what: str, check, timeout: float = 180.0, live: Live | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            log = live.log_text()[-3000:] if live is not None else ""
            pytest.fail(f"timed out waiting for {what}\n{log}")
        time.sleep(0.3)


def test_two_users_on_two_celery_workers(redis_url, tmp_path) -> None:
    from model import TotalVI, read_cite_seq

    root = tmp_path / "site"
    env = {
        **os.environ,
        "TOTALVI_EXPLORER_REDIS_URL": redis_url,
        "TOTALVI_EXPLORER_CACHE_DIR": str(root / "cache"),
        "TOTALVI_EXPLORER_DATA_DIR": str(root / "data"),
        "TOTALVI_EXPLORER_MODEL_DIR": str(root / "models"),
        "TOTALVI_EXPLORER_DEVICE": "cpu",
        "TOTALVI_EXPLORER_UMAP_N_NEIGHBORS": "10",
        "TOTALVI_EXPLORER_WARM_UP_LAYOUT": "0",  # small data: no 40 s compile per worker
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for sub in ("cache", "data", "models"):
        (root / sub).mkdir(parents=True)
    workers = [start_worker(n, env, tmp_path / f"{n}.log") for n in ("w1", "w2")]
    live = None
    try:
        users = {USER: PASSWORD, OTHER_USER: OTHER_PASSWORD}
        live = start_server(root, extra_env=env, users=users, timeout=240)
        # a second model of the same data, in the shared (admin's) model area
        data = read_cite_seq(live.data_dir / "small.h5ad", batch_key="batch")
        second = TotalVI(data, n_hidden=32, n_latent=4, seed=1)
        second.train(max_epochs=2, device="cpu", early_stopping=False, precision="32")
        second_dir = live.model_dir / "second"
        second.save(second_dir)
        alice, bob = live.as_user(USER), live.as_user(OTHER_USER)
        default = alice.status()[0]
        assert default and bob.status()[0] == default

        said: dict[str, str] = {}
        starts = [
            threading.Thread(target=lambda: said.update(alice=load(alice, second_dir))),
            threading.Thread(target=lambda: said.update(bob=train(bob, 2))),
        ]
        for t in starts:
            t.start()
        for t in starts:
            t.join(60)
        assert "Loading" in said["alice"] and "Training" in said["bob"], said

        def own_pair(user: Live):
            return lambda: (p := user.status()[0]) != default and p

        a_pair = wait_for("Alice's model", own_pair(alice), live=live)
        b_pair = wait_for("Bob's model", own_pair(bob), live=live)
        assert a_pair != b_pair
        assert "second" in alice.status()[1] and "small-" in bob.status()[1]
        assert alice.status()[0] == a_pair  # Bob's switch did not move Alice

        jobs = records(live)
        remote = [r for r in jobs if r["executor"] == "celery"]
        by_owner = {(r["owner"], r["kind"]) for r in remote if r["status"] == "done"}
        assert {(USER, "prepare"), (OTHER_USER, "train"), (OTHER_USER, "prepare")} <= by_owner
        assert {r["worker"].split("@")[0] for r in remote if r["worker"]} == {"w1", "w2"}, [
            (r["kind"], r["worker"]) for r in remote
        ]
        assert all(r["pid"] not in (live.proc.pid,) for r in remote if r["status"] == "done")
        assert "Training" not in alice.poll(ids.MODEL_INTERVAL)  # Bob's job is not on Alice's page

        # an upload is checked by a job on a worker too, and it is its owner's
        line = alice.upload_message((live.data_dir / "small.h5ad").read_bytes(), "a cells.h5ad")
        assert line.startswith("Uploaded and checked a_cells.h5ad"), line
        checks = [r for r in records(live) if r["kind"] == "upload"]
        assert [(r["owner"], r["executor"], r["status"]) for r in checks] == [
            (USER, "celery", "done")
        ]
        assert checks[0]["worker"].split("@")[0] in {"w1", "w2"}
        assert (live.data_dir / "uploads" / f"u-{USER}" / "a_cells.h5ad").is_file()

        # a worker process killed in the middle of Bob's next training
        said_again = train(bob, 400)
        assert "Training" in said_again

        def training() -> dict | None:
            for r in records(live)[::-1]:
                if r["kind"] == "train" and r["status"] == "running" and r["progress"] > 0.05:
                    return r
            return None

        running = wait_for("the training to run", training, live=live)
        os.kill(running["pid"], signal.SIGKILL)

        def failure() -> str | None:
            line = bob.poll(ids.MODEL_INTERVAL)
            return line if "failed" in line else None

        line = wait_for("the failure line", failure)
        assert "Training failed" in line and f"{running['pid']}" in line, line
        assert "Traceback" not in line and str(root) not in line
        area = live.model_dir / "users" / f"u-{OTHER_USER}"
        shown = sorted(p.name for p in area.iterdir() if not p.name.startswith("."))
        assert len(shown) == 1, shown  # the first model only; nothing half-written shows
        assert bob.status()[0] == b_pair  # his model stays active

        assert "Training" in train(bob, 3)  # and Train works again (another model)
        wait_for(
            "the new training",
            lambda: (p := bob.status()[0]) not in (b_pair, default) and p,
            live=live,
        )
        assert alice.status()[0] == a_pair
    finally:
        if live is not None:
            stop_server(live)
        for w in workers:
            stop(w)
