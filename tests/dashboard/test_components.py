"""Shared page components: alerts, progress blocks and the job panel."""

from __future__ import annotations

from dash.html import Button

from dashboard.backend.jobs import JobInfo, JobStatus
from dashboard.components import (
    JobView,
    alert,
    job_panel,
    job_view,
    notice,
    one_line,
    progress_children,
    refused_view,
)
from dashboard.ids import job_ids
from dashboard.testing import walk


def test_alert_shows_a_multi_line_error_as_one_line() -> None:
    box = alert("model.pt: not readable (A load persistent id,\n  but no function)", kind="info")
    text = box.children[0].children
    assert text == "model.pt: not readable (A load persistent id, but no function)"
    assert box.className == "alert alert-info"
    assert box.role == "alert"


def test_a_notice_is_one_line_without_server_paths() -> None:
    box = notice("Preparing the model failed: /srv/private/x/model.pt:\n  not readable")
    assert box.children == "Preparing the model failed: model.pt: not readable"
    assert box.className == "notice notice-info"


def test_dismissable_alert_has_a_close_button() -> None:
    assert len(alert("x").children) == 1
    assert len(alert("x", dismissable=True).children) == 2


def test_progress_is_clamped_to_the_bar() -> None:
    for fraction, width, text in [(3.0, "100%", "100% · done"), (-1.0, "0%", "0% · done")]:
        track, label = progress_children(fraction, "done")
        assert track.children.style == {"width": width}
        assert label.children == text
    assert progress_children(0.426)[1].children == "43%"


def test_job_errors_fold_to_one_line_and_tracebacks_to_their_exception() -> None:
    assert one_line("model.pt: not readable (A load persistent id,\nbut none)\n") == (
        "model.pt: not readable (A load persistent id, but none)"
    )
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad key'
    assert one_line(tb) == "ValueError: bad key"
    assert one_line("") == ""


def _record(status: str, **kw: object) -> JobInfo:
    return JobInfo(id="j1", kind="de_groups", status=JobStatus(status), **kw)


def test_a_running_job_shows_its_name_bar_and_message() -> None:
    view = job_view(_record("running", progress=0.4, message="sampling"), "DE")
    label, track, line = view.children
    assert label.children == "DE"
    assert track.children.style == {"width": "40%"}
    assert line.children == "40% · sampling"
    assert view.running and not view.done and not view.ended_badly
    queued = job_view(_record("queued"), "DE")
    assert queued.children[-1].children == "0% · queued" and queued.running


def test_an_ended_job_shows_one_line_or_its_result() -> None:
    done = job_view(_record("done", progress=1.0), "DE")
    assert done.children == [] and done.done and not done.running  # the page shows the result
    failed = job_view(
        _record("failed", error="Traceback (most recent call last):\nValueError: x"), "DE"
    )
    (box,) = failed.children
    assert box.className == "alert alert-warning"
    assert box.children[0].children == "DE failed: ValueError: x"
    assert failed.ended_badly
    (box,) = job_view(_record("cancelled"), "Metrics").children
    assert box.className == "alert alert-info"
    assert box.children[0].children == "Metrics: cancelled."
    assert job_view(None, "DE") == JobView()  # no job yet: nothing
    refused = refused_view(ValueError("that selection is gone"))
    assert refused.children.className == "alert alert-warning" and refused.ended_badly


def test_job_panel_ids_follow_its_prefix() -> None:
    panel = job_ids("de")
    page = job_panel(panel, compact=True)
    found = {c.id: c for c in walk(page) if isinstance(getattr(c, "id", None), str)}
    assert set(found) == {"de-cancel", "de-progress", "de-message", "de-interval", "de-job-store"}
    assert found["de-cancel"].disabled is True  # nothing runs yet
    assert found["de-interval"].disabled is True
    assert "job-panel-compact" in page.className  # Cancel shows only while a job runs
    # the Model page: its own start button and retry, the bar of a running job, no timer
    running = job_panel(
        job_ids("model"),
        controls=[Button("Train", id="model-train")],
        progress=["running"],
        running=True,
        retry="Again",
        poll_ms=None,
        store=False,
    )
    found = {c.id: c for c in walk(running) if isinstance(getattr(c, "id", None), str)}
    assert set(found) == {"model-train", "model-retry", "model-cancel", "model-progress",
                          "model-message"}  # fmt: skip
    assert found["model-cancel"].disabled is False and found["model-retry"].hidden is True
    assert found["model-progress"].children == ["running"]
