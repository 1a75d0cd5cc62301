"""scib-metrics on arrays: the integration scorecard of embeddings, and per-cell iLISI.

:func:`scib_table` runs scib-metrics' own :class:`~scib_metrics.benchmark.Benchmarker` (its
default metrics, its aggregation: bio conservation = mean of the bio metrics, batch
correction = mean of the batch metrics, total = 0.6 bio + 0.4 batch, unscaled), one
embedding at a time so a job can report progress and stop between embeddings; the rows are
then what one Benchmarker over all of them gives (every metric and aggregate is per
embedding). Neighbours are exact (scikit-learn), handed to the Benchmarker as its
``neighbor_computer``: its default, pynndescent, compiles for a minute on a small machine and
is approximate. The Benchmarker's ``gc.collect()`` before every metric runs on a frozen
heap (:func:`_frozen_heap`), else it costs seconds per metric in a large process.
:func:`per_cell_ilisi` is scib-metrics' per-cell LISI of the batch labels
(:func:`scib_metrics.lisi_knn`) scaled as its ``ilisi_knn`` scales the median, so the median
of the per-cell values is the table's iLISI.

scib-metrics (and jax under it) is imported only inside these functions: heavy, and kept out
of the app's start-up.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dashboard.backend.errors import BackendError

if TYPE_CHECKING:
    from scib_metrics.nearest_neighbors import NeighborsResults

ProgressFn = Callable[[float, str], None]

#: The Benchmarker's neighbour counts (graph connectivity, kBET, LISI); the largest is
#: computed and subset.
NEIGHBOR_COUNTS = (15, 50, 90)
MAX_NEIGHBORS = max(NEIGHBOR_COUNTS)
BIO = "Bio conservation"
BATCH = "Batch correction"
TOTAL = "Total"
AGGREGATE = "Aggregate score"
#: scib's weights of the total (Luecken et al. 2022), as the Benchmarker applies them.
TOTAL_WEIGHTS = {BIO: 0.6, BATCH: 0.4}


class ScibMissing(BackendError):
    """scib-metrics is not installed in this environment."""


@dataclass(frozen=True)
class ScibTable:
    """The Benchmarker's results: ``table`` (one row per embedding; the metric columns
    under scib-metrics' names, then ``Bio conservation``, ``Batch correction``, ``Total``),
    ``metric_types`` (column → ``Bio conservation``, ``Batch correction`` or ``Aggregate
    score``) and the seconds each embedding took."""

    table: pd.DataFrame
    metric_types: dict[str, str]
    seconds: dict[str, float]


def scib_version() -> str:
    """The installed scib-metrics version (cheap: no import); :class:`ScibMissing` without
    it."""
    try:
        return metadata.version("scib-metrics")
    except metadata.PackageNotFoundError as err:
        msg = "the integration scorecard needs scib-metrics: pip install 'scib-metrics>=0.5'"
        raise ScibMissing(msg) from err


def exact_neighbors(x: np.ndarray, n_neighbors: int) -> NeighborsResults:
    """Exact Euclidean k nearest neighbours (each cell first, at distance 0), as
    scib-metrics' :class:`~scib_metrics.nearest_neighbors.NeighborsResults`."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float32)
    k = min(int(n_neighbors), x.shape[0])
    distances, indices = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    return NeighborsResults(indices=indices, distances=distances.astype(np.float32))


def scib_table(
    embeddings: Mapping[str, np.ndarray],
    *,
    pre_integrated: np.ndarray,
    batches: np.ndarray,
    labels: np.ndarray,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScibTable:
    """scib-metrics' Benchmarker (default bio-conservation and batch-correction metrics,
    unscaled) on each of ``embeddings`` (name → ``(n_cells, d)``), with ``pre_integrated``
    the unintegrated embedding that PCR comparison measures against.

    ``batches`` and ``labels`` are per cell. ``should_stop()`` is polled between embeddings
    (:class:`InterruptedError` when true). Fewer than 2 batches, or fewer cells than the
    largest neighbour count, raise :class:`ValueError`.
    """
    scib_version()
    batches = np.asarray(batches).astype(str)
    labels = np.asarray(labels).astype(str)
    n = len(batches)
    if len(np.unique(batches)) < 2:
        msg = "scib-metrics' batch correction needs at least 2 batches"
        raise ValueError(msg)
    if n <= MAX_NEIGHBORS:
        msg = f"scib-metrics needs more than {MAX_NEIGHBORS} cells, got {n}"
        raise ValueError(msg)
    from anndata import AnnData
    from scib_metrics.benchmark import Benchmarker

    rows, types, seconds = [], {}, {}
    obs = pd.DataFrame({"batch": batches, "labels": labels}, index=[str(i) for i in range(n)])
    for i, (name, x) in enumerate(embeddings.items()):
        if should_stop is not None and should_stop():
            msg = f"integration scorecard cancelled before {name}"
            raise InterruptedError(msg)
        if progress is not None:
            progress(i / len(embeddings), f"scib-metrics on {name}")
        t0 = time.perf_counter()
        adata = AnnData(obs=obs.copy())
        # writable copies: scib-metrics' k-means centres its input in place
        adata.obsm["embedding"] = np.array(x, dtype=np.float32)
        adata.obsm["pre"] = np.array(pre_integrated, dtype=np.float32)
        bench = Benchmarker(
            adata,
            batch_key="batch",
            label_key="labels",
            embedding_obsm_keys=["embedding"],
            pre_integrated_embedding_obsm_key="pre",
            progress_bar=False,
        )
        with _frozen_heap():
            bench.prepare(neighbor_computer=exact_neighbors)
            bench.benchmark()
        result = bench.get_results(min_max_scale=False)
        types = {str(c): str(t) for c, t in result.loc["Metric Type"].items()}
        rows.append(result.loc["embedding"].astype(np.float64).rename(name))
        seconds[name] = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    metrics = [c for c in table.columns if types.get(c) != AGGREGATE]
    aggregates = [c for c in (BIO, BATCH, TOTAL) if c in table.columns]
    table = table[metrics + aggregates]  # the Benchmarker's metric order; bio, batch, total
    table.index.name = "Embedding"
    if progress is not None:
        progress(1.0, "scib-metrics done")
    return ScibTable(table, types, seconds)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Within the block, the objects alive at its start are left out of garbage collection
    (:func:`gc.freeze`; moved back by :func:`gc.unfreeze` when the last such block ends).

    The Benchmarker calls ``gc.collect()`` before every metric; in a process holding torch,
    jax and the app each full collection walks millions of objects (~1 s on 2 cores, half
    of a small scorecard's time). Frozen, those collections see only what the run
    allocates. Nothing is lost: frozen objects are collected as usual once unfrozen.
    """
    global _freezers
    with _freeze_lock:
        if _freezers == 0:
            gc.freeze()
        _freezers += 1
    try:
        yield
    finally:
        with _freeze_lock:
            _freezers -= 1
            if _freezers == 0:
                gc.unfreeze()


_freeze_lock = threading.Lock()
_freezers = 0


def per_cell_ilisi(neighbors: NeighborsResults, batches: np.ndarray) -> np.ndarray:
    """Per-cell batch mixing: scib-metrics' per-cell LISI of the batch labels
    (:func:`scib_metrics.lisi_knn`, perplexity = neighbours // 3 as ``ilisi_knn``), scaled
    to [0, 1] as ``ilisi_knn`` scales its median: ``(LISI - 1) / (n_batches - 1)``; 0 = the
    neighbourhood holds one batch, 1 = all batches evenly. Cells whose neighbourhood weights
    vanish (scib-metrics marks them with LISI -1) are NaN."""
    import scib_metrics

    codes = np.asarray(pd.Categorical(np.asarray(batches).astype(str)).codes)
    n_batches = len(np.unique(codes))
    if n_batches < 2:
        msg = "batch mixing needs at least 2 batches"
        raise ValueError(msg)
    lisi = np.asarray(scib_metrics.lisi_knn(neighbors, codes), dtype=np.float64)
    lisi[lisi < 0] = np.nan
    return ((lisi - 1.0) / (n_batches - 1)).astype(np.float32)
