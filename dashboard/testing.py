"""Helpers for the dashboard's tests: a fast UMAP stand-in and Dash component-tree lookups.

Kept in the package (like ``dashboard.backend.testing``) so test modules share one copy.
Component trees are walked by duck typing (``children``, ``id``), so importing this module
does not import Dash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def fast_umap(latent: np.ndarray, **_: Any) -> np.ndarray:
    """Stand-in for umap-learn (whose JIT compile alone takes ~15 s on 2 cores): the first
    two principal components of the latent space. The pages only need 2-D coordinates."""
    x = latent - latent.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:2].T).astype(np.float32)


def callbacks_by_name(
    callback_map: dict[str, dict[str, Any]],
) -> dict[str, tuple[str, dict[str, Any]]]:
    """An app's ``callback_map`` entries by their function's name: ``(key, spec)``, or
    ``("", {})`` for a name that several callbacks share."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, cb in callback_map.items():
        name = getattr(cb.get("callback"), "__name__", None)
        if name is not None:
            out[name] = ("", {}) if name in out else (key, cb)
    return out


def callback_request(
    callbacks: dict[str, tuple[str, dict[str, Any]]],
    name: str,
    values: dict[str, Any],
    changed: list[str],
    *,
    error: type[Exception] = LookupError,
) -> bytes:
    """JSON body of a ``/_dash-update-component`` request for callback ``name`` (of
    :func:`callbacks_by_name`), as the renderer sends it; ``values`` maps ``"id.prop"`` to
    the values sent, ``changed`` lists the ``"id.prop"`` that fired it. Raises ``error``
    where the name is not there exactly once."""
    from dash._utils import split_callback_id

    key, cb = callbacks.get(name, ("", {}))
    if not key:
        msg = f"callback {name!r} not found exactly once in the app (renamed?)"
        raise error(msg)

    def fill(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**d, "value": values.get(f"{d['id']}.{d['property']}")} for d in deps]

    payload = {
        "output": key,
        "outputs": split_callback_id(key),
        "inputs": fill(cb["inputs"]),
        "state": fill(cb["state"]),
        "changedPropIds": changed,
    }
    return json.dumps(payload).encode()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail the test after ``timeout`` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def walk(component: Any) -> Iterator[Any]:
    """Every component in a Dash component tree (lists and single children)."""
    if isinstance(component, (list, tuple)):
        for c in component:
            yield from walk(c)
        return
    if component is None or isinstance(component, (str, int, float)):
        return
    yield component
    yield from walk(getattr(component, "children", None))


def text(component: Any) -> str:
    """All text of a component tree, joined."""
    if isinstance(component, str):
        return component
    if isinstance(component, (int, float)):
        return str(component)
    if isinstance(component, (list, tuple)):
        return "".join(text(c) for c in component)
    if component is None:
        return ""
    return text(getattr(component, "children", None))


def find(component: Any, component_id: Any) -> Any:
    """The component with ``component_id`` in a tree (AssertionError when absent)."""
    for c in walk(component):
        if getattr(c, "id", None) == component_id:
            return c
    raise AssertionError(f"no component {component_id!r}")


def slow_reader(path: str, **_: Any) -> None:
    """A dataset reader that never finishes in a test's time (for cancelling a check: the
    validation child imports it by name, ``dashboard.testing:slow_reader``)."""
    time.sleep(600)


def finish_upload(callbacks: Any, done: Any, *, timeout: float = 120.0) -> tuple:
    """Run a drop zone's callbacks (:class:`dashboard.pages._query_map.UploadCallbacks`)
    as the browser does after an upload: follow the check's job with the panel's poll to
    its end, then show the outcome. Returns ``(dropdown options, dropdown value, status
    line)``."""
    store, _off, ended, *_ = callbacks.arrived(done)
    deadline = time.monotonic() + timeout
    while isinstance(store, dict) and not isinstance(ended, dict):
        assert time.monotonic() < deadline, f"the upload check did not end in {timeout:g} s"
        time.sleep(0.1)
        _progress, _off, ended, *_ = callbacks.poll(1, store)
    options, value, status, _ = callbacks.checked(ended)
    return options, value, status


def post_upload(server: Any, raw: bytes, filename: str, target: str = "dataset") -> dict:
    """Send ``raw`` to the upload route of a Flask ``server`` (an app's ``.server``) as the
    browser's drop zone does; returns what the zone puts in its store."""
    from urllib.parse import quote

    response = server.test_client().post(
        f"/_upload/{target}",
        data=raw,
        headers={"X-Filename": quote(filename), "Content-Type": "application/octet-stream"},
    )
    body = response.get_json(silent=True) or {}
    return {"upload": body["upload"]} if "upload" in body else {"failed": response.status_code}
