"""Explore's linked view while the warm steps still compute the denoised protein (at a
million cells that takes minutes): protein vs protein is drawn on raw counts at once (the
title says so, a lasso selects by the values shown), raw vs denoised says it fills in when
ready, the page polls, and once the table is cached the view redraws on denoised values.

The warm job's denoised protein is held back by a gate (the test releases it), so what the
page shows meanwhile is checked deterministically on a real trained slice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from dash import no_update

from dashboard import ids
from dashboard.backend import denoise
from dashboard.testing import find, text
from dashboard.views import pending, values
from dashboard.views.cells import linked_view, region_cells
from dashboard.views.features import default_protein_pair, feature_catalog
from dashboard.views.pending import MEASURED_NOTE, RAW_NOTE, WAIT_MESSAGE, shown_view
from dashboard.views.state import ActiveState, get_state, get_workspaces, set_state
from dashboard.views.values import protein_denoised, protein_raw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """A cache of its own: the denoised protein must not be there already."""
    return {"name": "pending", "own_cache": True, "prepare": False}


@pytest.fixture(scope="module")
def warming(trained_app: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """A workspace that prepared the pair (essential steps) and whose warm job is held at
    its first step, the denoised protein (measured scale), until ``gate`` is set."""
    from dashboard.pages import explore

    gate, entered = threading.Event(), threading.Event()
    original = denoise.denoised_protein

    def held(model: Any, data: Any, how: Any) -> Any:
        if how.protein_scale == trained_app.service.expression.protein_scale():
            entered.set()
            assert gate.wait(120), "the test never released the denoised protein"
        return original(model, data, how)

    mp = pytest.MonkeyPatch()
    mp.setattr(denoise, "denoised_protein", held)
    before, workspaces = get_state(), get_workspaces()
    state = ActiveState(trained_app.service, warm=True)
    set_state(state)
    try:
        state.prepare(trained_app.pair)
        deadline = time.monotonic() + 120
        while state.status().state != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.status().state == "ready", state.status()
        assert entered.wait(60), "the warm job did not start on the denoised protein"
        x, y = default_protein_pair(feature_catalog(trained_app.service, trained_app.pair))
        yield SimpleNamespace(
            **{**vars(trained_app), "state": state}, explore=explore, gate=gate, x=x, y=y
        )
    finally:
        gate.set()
        mp.undo()
        warm = state.status().warming and state.warm_job
        if warm:  # the rest of the warm steps (decoder state, DE) are not this test's
            trained_app.service.jobs.cancel(warm)
            trained_app.service.wait(warm, timeout=120)
        set_state(before, workspaces)


def linked(env: SimpleNamespace, kind: str, layer: str = "denoised", wait: Any = None) -> Any:
    return env.explore.build_linked(
        kind,
        env.x,
        env.y,
        layer,
        "obs:cell_type",
        "raw",
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        wait,
    )


def test_linked_view_waits_on_raw_counts_then_redraws_denoised(warming) -> None:
    env = warming
    assert env.state.status().warming
    assert not env.service.expression.denoised_protein_ready(env.pair)
    # the page opens polling, with the wait flag set
    page = env.explore.layout()
    assert find(page, ids.EXPLORE_LINKED_WAIT).data == {"waiting": True}
    assert find(page, ids.EXPLORE_LINKED_POLL).disabled is False
    # the linked view waits for the main view's figure (the browser draws that first)
    assert find(page, ids.EXPLORE_LINKED_GATE).data is False
    gated = env.explore.build_linked(
        "proteins", env.x, env.y, "raw", "obs:cell_type", "raw", None, None, *[None] * 6, False
    )
    assert gated is no_update

    # protein vs protein in the denoised layer: drawn at once on raw counts, and says so
    started = time.monotonic()
    fig = linked(env, "proteins")
    assert time.monotonic() - started < 30  # it did not wait for the held table
    trace = fig.data[0]
    np.testing.assert_allclose(trace.x, protein_raw(env.service, env.pair, env.x), rtol=1e-6)
    np.testing.assert_allclose(trace.y, protein_raw(env.service, env.pair, env.y), rtol=1e-6)
    assert RAW_NOTE in fig.layout.title.text
    assert fig.layout.xaxis.title.text.endswith("raw (log1p)")
    shown, note = shown_view(env.service, env.pair, linked_view("proteins", env.x, env.y, None))
    assert shown["layer"] == "raw" and note == RAW_NOTE  # what a region drawn on it reads
    xv = protein_raw(env.service, env.pair, env.x)
    yv = protein_raw(env.service, env.pair, env.y)
    raw = linked(env, "proteins", layer="raw")  # raw counts asked for: as asked, no note
    assert RAW_NOTE not in raw.layout.title.text
    # a protein some batches did not measure: their cells are left out (their raw values
    # would be the model's predictions), and a box around everything selects the rest
    unmeasured = np.zeros(env.n, dtype=bool)
    unmeasured[:10] = True

    def fake(_service: Any, _pair: Any, protein: str) -> np.ndarray | None:
        return unmeasured if protein == env.x else None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(values, "imputed_cells", fake)
        mp.setattr(pending, "imputed_cells", fake)
        fig = linked(env, "proteins")
        assert MEASURED_NOTE in fig.layout.title.text
        shown_x = np.asarray(fig.data[0].x, dtype=float)
        assert np.isnan(shown_x[:10]).all()
        np.testing.assert_allclose(shown_x[10:], xv[10:], rtol=1e-6)
        shown, _ = shown_view(env.service, env.pair, linked_view("proteins", env.x, env.y, None))
        everything = [[-1.0, float(xv.max()) + 1], [-1.0, float(yv.max()) + 1]]
        inside = region_cells(env.service, env.pair, {**shown, "box": everything})
        np.testing.assert_array_equal(inside, np.arange(10, env.n))
    # raw vs denoised cannot be drawn without it: one line saying it fills in
    waiting_fig = linked(env, "raw_denoised")
    assert WAIT_MESSAGE in text(waiting_fig.layout.annotations[0].text)
    assert env.explore.linked_wait(1) == (no_update, no_update)  # still polling

    env.gate.set()  # the warm job's denoised protein may finish now
    deadline = time.monotonic() + 120
    while not env.service.expression.denoised_protein_ready(env.pair):
        assert time.monotonic() < deadline, "the denoised protein was never cached"
        time.sleep(0.05)
    ready, stop = env.explore.linked_wait(2)
    assert ready == {"waiting": False} and stop is True  # the view redraws, polling ends
    fig = linked(env, "proteins", wait=ready)
    den = protein_denoised(env.service, env.pair, env.x)
    np.testing.assert_allclose(fig.data[0].x, den, rtol=1e-6)
    assert RAW_NOTE not in fig.layout.title.text
    assert (
        shown_view(env.service, env.pair, linked_view("proteins", env.x, env.y, None))[1] is None
    )
    assert linked(env, "raw_denoised").data[0].y is not None
    page = env.explore.layout()  # a page opened now does not poll at all
    assert find(page, ids.EXPLORE_LINKED_WAIT).data == {"waiting": False}
    assert find(page, ids.EXPLORE_LINKED_POLL).disabled is True
