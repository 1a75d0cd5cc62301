"""Preparing a (dataset, model) pair: the results the first view needs, computed before a
workspace switches to it, and the ones worth having soon after; or every result the pages
show at once (:func:`precompute`, the CLI's ``precompute`` and ``export``).

Both lists run as one job each (:meth:`AnalysisService.submit_prepare`), on a server
thread or a Celery worker; every step fills the content-keyed results cache, so a second
workspace that opens the same pair finds them computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: Results the first view needs (a layout and a colouring by cell type), with their rough
#: share of the preparation time (a dataset with a layout of its own: no UMAP, see
#: :func:`step_list`). The denoised values are not among them: the cell types
#: name clusters from protein-only passes, and a gene's denoised RNA is decoded when a
#: page first asks, from the decoder state the warm steps store soon after the pair is
#: active (every gene at once only where something needs every gene: export, precompute).
ESSENTIAL_STEPS: tuple[tuple[str, float], ...] = (
    ("latent space", 0.1),
    ("UMAP", 0.6),
    ("Leiden clusters", 0.2),
    ("cell types", 0.1),
)
#: Results computed after the pair is active, so later pages open instantly.
WARM_STEPS: tuple[tuple[str, float], ...] = (
    ("denoised protein", 0.05),  # first: Explore's linked view plots it
    ("denoised RNA decoder state", 0.3),  # then any gene's denoised RNA takes a block
    ("foreground probability", 0.1),
    ("differential expression (one vs rest)", 0.55),
)
#: The step lists by name (the ``steps`` of a prepare job).
STEP_LISTS = {"essential": ESSENTIAL_STEPS, "warm": WARM_STEPS}
#: The step a dataset that carries a layout of its own (``obsm["X_umap"]``, ...) moves from
#: the essential steps to the front of the warm ones: its first view shows the file's layout.
LAYOUT_STEP = "UMAP"


def step_list(steps: str, *, has_layouts: bool = False) -> tuple[tuple[str, float], ...]:
    """The steps of list ``steps`` (a key of :data:`STEP_LISTS`) with their shares: as
    listed, or for a dataset that ``has_layouts`` without our UMAP among the essential
    steps and with it first among the warm ones (the shares of each list sum to 1)."""
    if steps not in STEP_LISTS:
        msg = f"unknown step list {steps!r}; choose one of {sorted(STEP_LISTS)}"
        raise ValueError(msg)
    listed = STEP_LISTS[steps]
    if not has_layouts:
        return listed
    moved = dict(ESSENTIAL_STEPS)[LAYOUT_STEP]
    if steps == "essential":
        rest = [(name, share) for name, share in listed if name != LAYOUT_STEP]
        return tuple((name, share / (1.0 - moved)) for name, share in rest)
    with_layout = [(LAYOUT_STEP, moved), *listed]
    return tuple((name, share / (1.0 + moved)) for name, share in with_layout)


#: What :func:`precompute` fills, in order: (result, the service method computing it).
PRECOMPUTE_STEPS: tuple[tuple[str, str], ...] = (
    ("latent", "latent"),
    ("umap", "umap"),
    ("clusters", "clusters"),
    ("denoised_rna", "denoised_rna_manifest"),
    ("denoised", "denoised_protein"),
    ("cell_types", "cell_types"),
    ("foreground", "foreground_probability"),
    ("imputed", "imputed_proteins"),
    ("de_one_vs_rest", "de_one_vs_rest"),
    ("metrics", "metrics"),
)


def service_call(
    service: AnalysisService,
    pair: Pair,
    method: str,
    should_stop: Callable[[], bool] | None = None,
) -> Callable[[], Any]:
    """``service.<method>(pair)`` as a call without arguments (the DE table's with
    ``should_stop``)."""
    if method == "de_one_vs_rest":
        return lambda: service.de_one_vs_rest(pair, should_stop=should_stop)
    return lambda: getattr(service, method)(pair)


def step_calls(
    service: AnalysisService, pair: Pair, should_stop: Callable[[], bool] | None = None
) -> dict[str, Callable[[], Any]]:
    """The service calls behind every step of :data:`STEP_LISTS`."""
    methods = {
        "latent space": "latent",
        "UMAP": "umap",
        "Leiden clusters": "clusters",
        "cell types": "cell_types",
        "denoised protein": "denoised_protein",
        "foreground probability": "foreground_probability",
        "differential expression (one vs rest)": "de_one_vs_rest",
    }
    calls = {name: service_call(service, pair, m, should_stop) for name, m in methods.items()}
    calls["denoised RNA decoder state"] = lambda: service.denoised_rna_state(pair)
    # the cell types, and the overview sample of them the cell views plot (large data)
    calls["cell types"] = lambda: (service.cell_types(pair), service.shown_cells(pair))
    return calls


def prepare_pair(
    service: AnalysisService,
    pair: Pair,
    *,
    steps: str = "essential",
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    extra: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Compute (or read from the cache) the results of step list ``steps``
    (:func:`step_list`: a dataset with a layout of its own computes our UMAP among the warm
    steps); returns seconds per step. ``extra`` steps (name: call) run after them, in this
    process (what only the web server's memory holds, e.g. column-major counts)."""
    listed = step_list(steps, has_layouts=bool(service.dataset(pair).layouts))
    calls = step_calls(service, pair, should_stop)
    plan = [(name, share, calls[name]) for name, share in listed]
    plan += [(name, 0.0, call) for name, call in (extra or {}).items()]
    done = 0.0
    seconds: dict[str, float] = {}
    for name, share, call in plan:
        if should_stop is not None and should_stop():
            msg = f"preparation cancelled before {name}"
            raise InterruptedError(msg)
        if progress is not None:
            progress(done, name)
        t0 = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - t0
        done += share
    if progress is not None:
        progress(1.0, "ready")
    return seconds


def precompute(
    service: AnalysisService,
    pair: Pair,
    *,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, str]:
    """Fill the cache with everything the pages show; returns ``{result: cache key}``
    (the model-card metrics are left out for minified data: they need the counts)."""
    minified = service.dataset(pair).minified is not None
    steps = [
        (name, service_call(service, pair, method, should_stop))
        for name, method in PRECOMPUTE_STEPS
        if not (minified and name == "metrics")
    ]
    keys: dict[str, str] = {}
    for i, (name, step) in enumerate(steps):
        if should_stop is not None and should_stop():
            msg = f"precompute cancelled before {name}"
            raise InterruptedError(msg)
        if progress is not None:
            progress(i / len(steps), name)
        step()
        keys[name] = service.results.last_key() or ""
    if progress is not None:
        progress(1.0, "done")
    return keys
