"""A page's "Decode in" control: denoised values as measured (each cell's own batch), as
if every cell were measured in one batch, or averaged over all batches
(``transform_batch``). Choosing one runs the decoding as a job; when it is done the
control's ready store holds ``{"batch"}``, which the page's colourings and violins read.

A page makes one with :func:`register` (the callbacks) and :func:`control` (the layout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dash import Input, callback, dcc, html

from dashboard import components
from dashboard.ids import DecodeControl
from dashboard.pages import _jobs
from dashboard.views.colours import ALL_BATCHES, ColorSpec, batch_choices, submit_decode
from dashboard.views.state import active

#: How the job panel names the job ("Decoding failed: ...").
LABEL = "Decoding"

__all__ = ["ALL_BATCHES", "control", "decoded_batch", "decoded_spec", "register"]


def control(ids: DecodeControl, service: Any, pair: Any, batch: str) -> html.Div:
    """The dropdown (disabled for a one-batch model), its compact job panel and the ready
    store (starting at ``batch``, the shared colouring's)."""
    options = batch_choices(service, pair)
    values = {o["value"] for o in options}
    batch = batch if batch in values else ""
    return html.Div(
        [
            components.dropdown_field(
                "Decode in",
                ids.choice,
                options=options,
                value=batch,
                clearable=False,
                disabled=len(options) < 2,
                class_name="field-wide",
            ),
            components.job_panel(ids.job, compact=True),
            dcc.Store(id=ids.ready, data={"batch": batch}),
        ],
        className="decode-control",
    )


def decoded_spec(feature: str | None, layer: str | None, ready: dict | None) -> ColorSpec:
    """The colouring a page's controls say (cell type without a feature), decoded as its
    "Decode in" job finished; the colour store's checks apply (``ColorSpec.from_state``)."""
    if not feature:
        return ColorSpec()
    batch = decoded_batch(ready)
    return ColorSpec.from_state({"feature": feature, "layer": layer, "batch": batch})


def decoded_batch(ready: dict | None) -> str:
    """The decoding a page's views use (``""``: each cell's own batch); the colour checks
    and the backend check the value again."""
    batch = (ready or {}).get("batch") if isinstance(ready, dict) else None
    return batch if isinstance(batch, str) else ""


def register(ids: DecodeControl) -> tuple[Callable[..., tuple], Callable[..., tuple]]:
    """Register the control's callbacks (from the page module); returns ``start(batch)``
    and ``poll(n_intervals, store)`` to call directly."""

    @callback(
        *_jobs.start_outputs(ids.job, ids.ready),
        Input(ids.choice, "value"),
        prevent_initial_call=True,
    )
    def start_decode(batch: Any) -> tuple:
        """Decode every cell in the chosen batch as a job (a cached decoding is ready at
        once): ``(job store, poll off, ready, progress, Cancel off)``."""
        choice = batch if isinstance(batch, str) else ""
        store, view = _jobs.start(lambda: submit_decode(*active(), choice), LABEL, batch=choice)
        return _jobs.started(store, view)

    poll, _cancel = _jobs.panel_callbacks(ids.job, ready=ids.ready, label=LABEL)
    return start_decode, poll
