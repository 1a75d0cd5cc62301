"""Crafted requests against a live server: share-link bombs, deep JSON, forged callback
inputs, headers, and messages without server paths."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import requests

from dashboard.testing_live import SECRET, Live

MB = 1024**2


def page(live: Live, path: str, search: str = "") -> dict:
    return live.callback(
        "_pages_content.children",
        {"_pages_location.pathname": path, "_pages_location.search": search},
        ["_pages_location.pathname"],
    )


def bomb(n_bytes: int, prefix: bytes = b"") -> str:
    packed = zlib.compress(prefix + b"\xff" * n_bytes, 9)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


@pytest.mark.parametrize("key", ["sel", "region"])
def test_share_link_bombs_cost_no_memory(live: Live, key: str) -> None:
    """1.4 MB tokens that inflate to ~1.4 GB: the page opens, the link is called damaged,
    and the server's memory hardly moves (it inflates at most what the dataset allows)."""
    token = bomb(1_400_000_000, b'{"view":"umap","box":' if key == "region" else b"")
    assert len(token) > 1_000_000
    rss0 = live.rss()
    out = page(live, "/", f"?{key}={token}&n=200")
    grown = live.rss() - rss0
    assert grown < 100 * MB, f"RSS grew by {grown / MB:.0f} MB"
    assert "app-page-state" in json.dumps(out) or out  # the page was built
    state = json.dumps(out)
    assert "damaged" in state or "larger than this dataset" in state, state[:500]
    assert live.alive()


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_gets_400(live: Live, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    for path in ("/_dash-update-component", "/_dash-layout", "/model"):
        r = requests.post(
            live.url + path, data=body, headers={**live.auth, "Content-Type": "application/json"},
            timeout=60,
        )  # fmt: skip
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "Traceback" not in r.text and len(r.text.splitlines()) <= 1
    assert live.alive()
    assert "RecursionError" not in live.log_text()


@pytest.mark.parametrize(
    "cells", [[-1, 2, 3], [0, -200], [1.5, 2], ["3"], [[1]], [10**30]], ids=str
)
def test_forged_selection_positions_are_refused(live: Live, cells: list) -> None:
    sel = {"cells": cells, "source": "explore-umap", "dataset": None}
    out = live.callback(
        "explore-selection-info.children",
        {"app-selection-store.data": sel, "explore-type-names.data": {}},
        ["app-selection-store.data"],
    )
    text = json.dumps(out)
    assert "cell position" in text or "selection" in text, text[:300]
    assert "Traceback" not in text and str(live.root) not in text
    # nothing was selected from the wrapped-around end of the dataset
    assert "199" not in json.dumps(out.get("response", {}).get("explore-selection-info", {}))
    assert live.alive()


@pytest.mark.parametrize(
    ("n_latent", "epochs", "field"),
    [(20, 2.5, "Max epochs"), (10.5, 5, "Latent dimensions"), ("1e400", 5, "Latent dimensions"),
     (20, -3, "Max epochs"), (20, True, "Max epochs"), (20, "ten", "Max epochs")],
)  # fmt: skip
def test_training_numbers_are_checked_not_truncated(live: Live, n_latent, epochs, field) -> None:
    out = live.callback(
        "model-message.children...model-progress.children@",
        {
            "model-train.n_clicks": 1,
            "model-dataset.value": "small.h5ad",
            "model-batch-key.value": "batch",
            "model-n-latent.value": n_latent,
            "model-max-epochs.value": epochs,
        },
        ["model-train.n_clicks"],
    )
    text = json.dumps(out["response"]["model-message"])
    assert f"{field} must be a whole number" in text, text
    assert not list(live.cache_dir.glob("jobs/*train*"))  # no training started


SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


@pytest.mark.parametrize(
    ("path", "auth", "status"),
    [("/", True, 200), ("/", False, 401), ("/_dash-layout", True, 200), ("/nope.js", True, 200),
     ("/assets/style.css", True, 200), ("/assets/missing.css", True, 404)],
)  # fmt: skip
def test_every_response_has_the_security_headers(live: Live, path, auth, status) -> None:
    r = requests.get(live.url + path, headers=live.auth if auth else {}, timeout=30)
    assert r.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (path, name, r.headers.get(name))
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src  # an injected <script> never runs
    assert r.headers.get("Referrer-Policy")


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../../outside/credentials.txt", "uploads/../../../etc/shadow",
     "missing.h5ad", "%2e%2e/x.h5ad", "a\x00b.h5ad"],
)  # fmt: skip
def test_dataset_errors_show_no_server_paths(live: Live, name: str) -> None:
    out = live.callback(
        "model-dataset-info.children", {"model-dataset.value": name}, ["model-dataset.value"]
    )
    text = json.dumps(out)
    assert str(live.root) not in text and "/tmp/" not in text.replace(name, ""), text
    assert SECRET not in text
    assert live.alive()
