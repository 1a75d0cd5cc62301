"""Training started from the Model page runs in its own process, followed on the server:
every tab's poll shows the same progress, Train is off meanwhile, and the app switches to the
new model when the jobs end, whether or not any tab polls; a SIGKILL of that process (out of
memory, kill -9) is one readable failure line that leaves the active model, its cache
entries and the model folder as they were, and Train works again; Cancel stops the process.
Page callbacks are called directly on 200 real PBMC cells."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil
import pytest

from dashboard.backend.jobs import JobRegistry, JobRunner, JobStatus
from dashboard.backend.testing import deaf_to_cancel, write_small_pbmc
from dashboard.testing import fast_umap, text, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*without encoding metadata")]

N_LATENT = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A small model on the 200-cell slice, active in an app over temp folders."""
    from dashboard import backend
    from dashboard.app import create_app
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from dashboard.views.state import ActiveState, set_state
    from model import TotalVI, read_cite_seq

    root = tmp_path_factory.mktemp("model-page-training")
    data_dir, model_dir = root / "data", root / "models"
    data_dir.mkdir()
    path = write_small_pbmc(data_dir / "small.h5ad")
    model = TotalVI(read_cite_seq(path, batch_key="batch"), n_hidden=32, n_latent=N_LATENT)
    model.train(max_epochs=2, device="cpu", early_stopping=False)
    model.save(model_dir / "active")

    mp = pytest.MonkeyPatch()
    mp.setattr("dashboard.backend.embedding.compute_umap", fast_umap)
    settings = Settings(
        cache_dir=root / "cache",
        data_dir=data_dir,
        model_dir=model_dir,
        device="cpu",
        denoise_n_samples=2,
    )
    assert settings.train_in_process  # the default
    service = AnalysisService(settings)
    pair = service.load_model(service.open_dataset(path, batch_key="batch"), model_dir / "active")
    latent = service.latent(pair)
    state = ActiveState(service, warm=False)
    state.activate(pair)
    create_app(service, state=state)
    from dashboard.pages import model as page

    yield SimpleNamespace(
        service=service,
        state=state,
        page=page,
        path=str(path),
        model_dir=model_dir,
        registry=JobRegistry(settings.jobs_dir),  # what another process sees
        latent=latent,
        latent_key=service.key("latent", pair, {"seed": settings.seed}),
    )
    set_state(None)
    backend.set_service(None)
    service.close()
    mp.undo()


# ----------------------------------------------------------------------------- helpers


def wait_switch(world: SimpleNamespace, timeout: float = 120) -> Any:
    """Wait, with no tab polling, until the server's model switch has ended; its view."""
    wait_for(lambda: not world.state.switch.view().running, timeout, "the model switch")
    return world.state.switch.view()


def poll(world: SimpleNamespace) -> dict[str, Any]:
    """What one poll of the Model page (any tab) shows."""
    names = ("progress", "query_progress", "cancel_off", "query_cancel_off", "train_off")
    return dict(zip(names, world.page.poll_switch(1), strict=False))


def alert_line(component: Any, kind: str) -> str:
    """The text of a one-line alert of ``kind``."""
    assert f"alert-{kind}" in component.className, component
    line = text(component).replace("×", "").strip()
    assert line and "\n" not in line and "Traceback" not in line and 'File "' not in line
    return line


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def cache_values(world: SimpleNamespace) -> dict[str, str]:
    """Digest of every value file of the results cache (not its SQLite index)."""
    root = world.service.settings.results_dir
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and ".db" not in p.name
    }


def child_pid(world: SimpleNamespace, job: str, *, message: str = "") -> int:
    """Wait until the job runs in a child of this process (``message`` in its progress)."""
    wait_for(
        lambda: (
            world.registry.read(job).pid != os.getpid()
            and message in world.registry.read(job).message
        ),
        timeout=60,
        what=f"the training process ({message or 'its pid'})",
    )
    pid = world.registry.read(job).pid
    assert psutil.Process(pid).ppid() == os.getpid()  # a process of its own, not a thread
    return pid


def start_training(world: SimpleNamespace, max_epochs: int) -> str:
    """Press Train; returns the training job (the panel shows it at once, Train goes off)."""
    message, progress, train_off, cancel_off = world.page.on_train(
        1, world.path, "batch", N_LATENT, max_epochs
    )
    assert (train_off, cancel_off) == (True, False), text(message)
    assert text(progress).startswith("Training small-"), text(progress)
    return world.state.switch.view().job


def train_and_switch(world: SimpleNamespace, max_epochs: int) -> Any:
    """Train from the page; the server prepares the new model and switches to it with no
    tab polling; returns the new active pair."""
    page, version = world.page, world.state.version
    job = start_training(world, max_epochs)
    shown = poll(world)  # another tab, or this one reloaded: the same job, Train off
    assert text(shown["progress"]).startswith("Training small-"), text(shown["progress"])
    assert (shown["cancel_off"], shown["train_off"]) == (False, True)
    assert "Training" in text(page.layout())  # a reload shows it too
    message, *_ = page.on_train(1, world.path, "batch", N_LATENT, max_epochs)  # a 2nd Train
    assert "is running; wait for it to finish or cancel it first" in alert_line(message, "warning")
    child_pid(world, job)
    view = wait_switch(world)
    assert view.outcome == "done", view
    assert view.line.startswith("Trained small-") and "active on every page" in view.line
    assert world.state.version == version + 1
    after = poll(world)
    assert "active on every page" in alert_line(after["progress"][0], "success")
    assert (after["cancel_off"], after["train_off"]) == (True, False)
    # only one preparation ran, and it is the one that switched (no "cancelled" stray)
    prepares = [
        i for i in world.registry.list() if i.kind == "prepare" and i.created > view.started
    ]
    assert [str(i.status) for i in prepares] == ["done"], prepares
    return world.state.pair


# ------------------------------------------------------------------------------- tests
def test_train_runs_in_a_process_and_the_app_switches_to_it(world) -> None:
    before = world.state.pair
    pair = train_and_switch(world, max_epochs=2)
    assert pair != before
    folder = Path(pair.model.path)
    # under the model folder (in the area of whoever trained it)
    assert world.model_dir in folder.parents and folder.name.startswith("small-")
    assert (folder / "model.pt").is_file()
    model = world.service.model(pair)
    assert model.config.n_latent == N_LATENT and len(model.history) == 2
    assert pair.dataset.batch_key == "batch"
    assert [str(b) for b in model.batch_categories] == ["a", "b"]
    assert not [p for p in files_under(world.model_dir) if Path(p).name.startswith(".")]


def test_a_killed_training_process_is_a_readable_failure(world) -> None:
    before = world.state.pair
    models, cached = files_under(world.model_dir), cache_values(world)
    job = start_training(world, 2000)
    pid = child_pid(world, job, message="epoch")
    shown = text(poll(world)["progress"])
    assert shown.startswith("Training") and "epoch" in shown and "ELBO" in shown, shown

    os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert wait_switch(world, timeout=20).outcome == "failed"
    after = poll(world)
    assert (after["cancel_off"], after["train_off"]) == (True, False)
    line = alert_line(after["progress"][0], "warning")
    assert line.startswith("Training failed: the training process"), line
    assert "ended unexpectedly" in line and "signal 9" in line and str(pid) in line, line
    info = world.service.job(job)
    assert info.status == JobStatus.FAILED and str(pid) in info.error
    # the active model, the model folder and the cache are as they were
    assert world.state.pair == before
    assert files_under(world.model_dir) == models
    assert cache_values(world) == cached
    assert world.service.cache.get(world.latent_key) is not None
    first = world.service.model(before)  # still loadable and answering
    assert first.config.n_latent == N_LATENT

    pair = train_and_switch(world, max_epochs=1)  # Train works again
    assert pair != before and len(world.service.model(pair).history) == 1


def test_cancel_stops_the_training_process(world, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="dashboard.backend.jobs")
    page, before = world.page, world.state.pair
    models, latent = files_under(world.model_dir), world.service.latent(before)
    job = start_training(world, 2000)
    pid = child_pid(world, job, message="epoch")
    started = time.monotonic()
    assert "Cancelling" in text(page.on_cancel(1))
    assert wait_switch(world, timeout=20).outcome == "cancelled"
    assert time.monotonic() - started < world.service.jobs.cancel_grace  # stopped by itself
    line = alert_line(poll(world)["progress"][0], "info")
    assert line == "Training: cancelled; the previous model stays active."
    assert "Nothing is running" in text(page.on_cancel(1))
    # the child's progress reached this server's log, and how the job ended
    logged = [r.getMessage() for r in caplog.records if job[:8] in r.getMessage()]
    assert any(line.startswith(f"job train {job[:8]} [") for line in logged), logged
    assert any(line.startswith(f"job train {job[:8]} cancelled after") for line in logged)
    info = world.service.wait(job, timeout=10)
    assert info.status == JobStatus.CANCELLED
    assert "process was stopped" not in info.message  # not terminated: it stopped at a step
    wait_for(lambda: not psutil.pid_exists(pid), timeout=10, what="the process to end")
    assert world.state.pair == before
    assert files_under(world.model_dir) == models
    np.testing.assert_array_equal(world.service.latent(before), latent)


def test_a_process_deaf_to_cancel_is_terminated(tmp_path) -> None:
    runner = JobRunner(JobRegistry(tmp_path), cancel_grace=0.5)
    cleaned: list[bool] = []
    try:
        job = runner.submit_process(
            "sleep", deaf_to_cancel, (60.0,), cleanup=lambda: cleaned.append(True)
        )
        wait_for(
            lambda: (
                runner.status(job).status == JobStatus.RUNNING
                and runner.status(job).pid != os.getpid()
            ),
            timeout=30,
            what="the job's process",
        )
        pid = runner.status(job).pid
        runner.cancel(job)
        info = runner.wait(job, timeout=15)
        assert info.status == JobStatus.CANCELLED, info
        assert info.message == "cancelled (its process was stopped)" and info.error is None
        assert not psutil.pid_exists(pid)
        assert cleaned == [True]  # what it was writing is removed
    finally:
        runner.shutdown()


def test_what_a_save_cut_short_leaves_is_removed(tmp_path) -> None:
    from dashboard.backend.training import discard_partial_checkpoint, staging_folder

    out = tmp_path / "models" / "small-20260101-000000"
    staging = staging_folder(out)
    staging.mkdir(parents=True)
    (staging / ".model.abc.tmp").write_bytes(b"half")
    discard_partial_checkpoint(out)
    assert not list((tmp_path / "models").iterdir())
    out.mkdir()  # an existing model folder keeps its checkpoint, loses the temp file
    (out / "model.pt").write_bytes(b"whole")
    (out / ".model.def.tmp").write_bytes(b"half")
    discard_partial_checkpoint(out)
    assert [p.name for p in out.iterdir()] == ["model.pt"]
