"""Resources end with the server: a training child dies when the server is killed."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil

from dashboard.testing_live import Live


def test_kill_9_of_the_server_ends_its_training_child(fresh_server) -> None:
    live: Live = fresh_server()
    out = live.callback(
        "model-message.children...model-progress.children@",
        {
            "model-train.n_clicks": 1,
            "model-dataset.value": "small.h5ad",
            "model-batch-key.value": "batch",
            "model-n-latent.value": 5,
            "model-max-epochs.value": 400,
        },
        ["model-train.n_clicks"],
    )
    assert "model-progress" in out["response"], json.dumps(out)[:500]

    def training_pid() -> int | None:
        for record in live.cache_dir.glob("jobs/*.json"):
            info = json.loads(record.read_text())
            # the server writes the record; the child puts its own pid there once it runs
            if info.get("kind") == "train" and info.get("pid") not in (None, live.proc.pid):
                return int(info["pid"])
        return None

    end = time.monotonic() + 60
    while training_pid() is None and time.monotonic() < end:
        time.sleep(0.2)
    pid = training_pid()
    assert pid is not None, live.log_text()
    child = psutil.Process(pid)
    assert child.is_running() and child.ppid() == live.proc.pid
    family = psutil.Process(live.proc.pid).children(recursive=True)
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    _, alive = psutil.wait_procs(family, timeout=15)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], alive
