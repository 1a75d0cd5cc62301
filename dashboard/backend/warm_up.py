"""Compiling the first view's numba kernels once per process, before a model needs them.

numba compiles umap-learn's and pynndescent's kernels in every new process on first use
(about 40 s on 2 cores, more than a 7k-cell layout takes); the server and each Celery
worker run :func:`warm_up` once in a background thread when they start
(``Settings.warm_up_layout``), so a model opened later gets its layout and clusters
without the compile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from dashboard.backend import embedding
from dashboard.backend.clustering import KNN_NNDESCENT, leiden_clusters
from dashboard.backend.priority import lower_thread_priority

#: Cells of the warm-up data: above umap-learn's exact-neighbour limit (4,096), so its
#: approximate-neighbour kernels (pynndescent) are compiled too.
WARM_UP_CELLS = 4_500

log = logging.getLogger(__name__)


def warm_up(*, n_cells: int = WARM_UP_CELLS, seed: int = 0, n_epochs: int = 200) -> float:
    """Fit a UMAP and Leiden clusters (on pynndescent's graph, as large data is clustered)
    of ``n_cells`` random points and return the seconds it took.

    The kernels are kept per process; a second call takes the fits' time only. The calls
    are the ones :func:`~dashboard.backend.embedding.compute_umap` and
    :func:`~dashboard.backend.clustering.leiden_clusters` make, with the same options, so
    numba compiles the same specialisations (pynndescent's seeded, all-cores search
    compiles apart from umap-learn's).
    """
    x = np.random.default_rng(seed).normal(size=(int(n_cells), 10)).astype(np.float32)
    t0 = time.perf_counter()
    embedding.compute_umap(x, seed=seed, n_epochs=n_epochs)
    leiden_clusters(x, seed=seed, knn=KNN_NNDESCENT)
    return time.perf_counter() - t0


def start_in_background(
    on_done: Callable[[float], None] | None = None, *, nice: int = 0
) -> threading.Thread:
    """Run :func:`warm_up` in a daemon thread (its CPU priority ``nice`` lower than the
    server's, as the job threads') and pass its seconds to ``on_done``; a failure is
    logged, never raised (layouts and clusters then compile on first use, as without the
    warm-up)."""

    def run() -> None:
        lower_thread_priority(nice)
        try:
            seconds = warm_up()
        except Exception:  # the layout still works, compiled on first use
            log.exception("layout warm-up failed")
            return
        if on_done is not None:
            on_done(seconds)

    thread = threading.Thread(target=run, name="layout-warm-up", daemon=True)
    thread.start()
    return thread
