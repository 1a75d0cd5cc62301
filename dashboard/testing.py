"""Helpers for the dashboard's tests: a fast UMAP stand-in and Dash component-tree lookups.

Kept in the package (like ``dashboard.backend.testing``) so test modules share one copy.
Component trees are walked by duck typing (``children``, ``id``), so importing this module
does not import Dash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def fast_umap(latent: np.ndarray, **_: Any) -> np.ndarray:
    """Stand-in for umap-learn (whose JIT compile alone takes ~15 s on 2 cores): the first
    two principal components of the latent space. The pages only need 2-D coordinates."""
    x = latent - latent.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:2].T).astype(np.float32)


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
