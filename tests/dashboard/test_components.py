"""Shared page components: alerts and progress blocks."""

from __future__ import annotations

from dashboard.components import alert, one_line, progress_children


def test_alert_shows_a_multi_line_error_as_one_line() -> None:
    box = alert("model.pt: not readable (A load persistent id,\n  but no function)", kind="info")
    text = box.children[0].children
    assert text == "model.pt: not readable (A load persistent id, but no function)"
    assert box.className == "alert alert-info"
    assert box.role == "alert"


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
