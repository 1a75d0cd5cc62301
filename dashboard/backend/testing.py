"""Helpers for the backend's tests and benchmark: real PBMC slices and one small model.

Kept in the package (like ``scanpy.testing``) so test modules and spawned worker processes can
import them. Expensive results are memoised per process, so several test modules share one
trained model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

#: Marker genes kept in every slice (monocytes, T, B, NK cells) so biology tests can look.
MARKER_GENES = (
    "LYZ", "S100A8", "S100A9", "CD14", "FCGR3A", "MS4A1", "CD79A", "CD19", "CD3E", "CD3D",
    "CD4", "CD8A", "CD8B", "IL7R", "NKG7", "GNLY", "PPBP",
)  # fmt: skip


def pbmc_path() -> Path:
    """The real PBMC file: ``$TOTALVI_EXPLORER_PBMC`` or the embedded ``data/pbmc10k.h5ad``
    (the repository's own copy: tests never read outside the repository)."""
    env = os.environ.get("TOTALVI_EXPLORER_PBMC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "pbmc10k.h5ad"


@functools.cache
def pbmc_slice(
    path: str | None = None, *, n_cells: int = 1500, n_genes: int = 1000, seed: int = 0
) -> CiteSeqData:
    """``n_cells`` random cells x the ``n_genes`` most variable genes (log1p CP10k), plus the
    :data:`MARKER_GENES`, and all proteins of the real PBMC data."""
    import anndata as ad
    import scipy.sparse as sp

    from model.data import from_anndata

    adata = ad.read_h5ad(path or pbmc_path())
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(adata.n_obs, size=min(n_cells, adata.n_obs), replace=False))
    adata = adata[cells].copy()
    x = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(x.sum(1)).ravel()
    x = sp.diags(1e4 / np.maximum(lib, 1)) @ x
    x.data = np.log1p(x.data)
    mean = np.asarray(x.mean(0)).ravel()
    var = np.asarray(x.multiply(x).mean(0)).ravel() - mean**2
    keep = set(np.argsort(-var)[:n_genes].tolist())
    names = list(adata.var_names)
    keep |= {names.index(g) for g in MARKER_GENES if g in names}
    adata = adata[:, sorted(keep)].copy()
    return from_anndata(adata, batch_key="batch", source=f"pbmc slice ({n_cells} cells)")


@functools.cache
def small_trained_model(
    data_fingerprint: str, *, max_epochs: int = 30, n_hidden: int = 64, seed: int = 0
) -> TotalVI:
    """A small TotalVI trained on the slice with that fingerprint (see :func:`pbmc_slice`).

    Trained in float32 on every machine (``precision="auto"`` would pick bfloat16 matmuls
    on some CPUs only), so the fixtures' models are the same wherever the tests run.
    """
    from model.totalvi import TotalVI

    data = _slices[data_fingerprint]
    model = TotalVI(data, n_hidden=n_hidden, n_latent=10, seed=seed)
    model.train(
        max_epochs=max_epochs, seed=seed, device="cpu", early_stopping=False, precision="32"
    )
    return model


_slices: dict[str, CiteSeqData] = {}


def trained_pbmc(
    *, n_cells: int = 1500, n_genes: int = 1000, max_epochs: int = 50, seed: int = 0
) -> tuple[CiteSeqData, TotalVI]:
    """A PBMC slice and a small model trained on it (both memoised per process)."""
    data = pbmc_slice(n_cells=n_cells, n_genes=n_genes, seed=seed)
    _slices[data.fingerprint()] = data
    return data, small_trained_model(data.fingerprint(), max_epochs=max_epochs, seed=seed)


@functools.cache
def reference_and_query(
    *, n_cells: int = 1500, n_query: int = 300, max_epochs: int = 40, seed: int = 0
) -> tuple[CiteSeqData, CiteSeqData, TotalVI]:
    """A PBMC slice split into reference cells and ``n_query`` held-out query cells (with
    their measured proteins), and a small model trained on the reference cells only
    (memoised per process; the query-mapping tests share it)."""
    from model.totalvi import TotalVI

    data = pbmc_slice(n_cells=n_cells, n_genes=1000, seed=seed)
    perm = np.random.default_rng(seed + 1).permutation(data.n_cells)
    reference = data.subset(np.sort(perm[n_query:]))
    query = data.subset(np.sort(perm[:n_query]))
    model = TotalVI(reference, n_hidden=64, n_latent=10, seed=seed)
    model.train(
        max_epochs=max_epochs, seed=seed, device="cpu", early_stopping=False, precision="32"
    )
    return reference, query, model


def count_compute_worker(
    cache_dir: str, key: str, counter_path: str, delay: float, out_path: str
) -> None:
    """Process target for the cross-process test: ``get_or_compute`` a slow value that
    appends one line to ``counter_path`` per real computation; writes what it got."""
    from dashboard.backend.cache import ResultCache

    cache = ResultCache(Path(cache_dir) / "results", locks_dir=Path(cache_dir) / "locks")

    def compute() -> dict[str, float]:
        with Path(counter_path).open("a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(delay)
        return {"value": 42.0, "pid": float(os.getpid())}

    value = cache.get_or_compute(key, compute)
    Path(out_path).write_text(repr(value["value"]))
    cache.close()


def deaf_to_cancel(ctx: Any, seconds: float) -> str:
    """Process-job target that never checks for cancellation (it sleeps ``seconds``), for
    tests that a cancelled job's process is terminated."""
    ctx.progress(0.5, "sleeping, deaf to cancel")
    time.sleep(seconds)
    return "woke up"


def write_small_pbmc(path: Path) -> Path:
    """Write 200 real PBMC cells (every 30th of the embedded file) x its first 300 genes, two
    alternating batches, proteins in ``obsm``, to ``path``; for tests that train in other
    processes and need a file."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    src = ad.read_h5ad(pbmc_path())
    a = src[::30][:200, :300].copy()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    a.obs = pd.DataFrame({"batch": pd.Categorical(["a", "b"] * 100)}, index=a.obs_names)
    a.var = pd.DataFrame(index=a.var_names.astype(str))
    proteins = src.obsm["protein_expression"]
    a.obsm["protein_expression"] = pd.DataFrame(
        np.asarray(a.obsm["protein_expression"], dtype=np.float32),
        index=a.obs_names,
        columns=[str(p) for p in proteins.columns],
    )
    a.write_h5ad(path)
    return path


def protein_populations(protein: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """CD14 monocytes / CD3 T / CD19 B cells from measured proteins (2-means thresholds on
    log1p); cells high in none or several of the three are ``"other"``. A model-free truth
    for label-transfer tests and the query-mapping benchmark."""
    names = [str(n) for n in names]
    high = []
    for marker in ("CD14_", "CD3_", "CD19_"):
        v = np.log1p(protein[:, [n.startswith(marker) for n in names]].ravel())
        lo, hi = np.percentile(v, 10), np.percentile(v, 90)
        for _ in range(50):
            cut = (lo + hi) / 2
            lo, hi = v[v <= cut].mean(), v[v > cut].mean()
        high.append(v > (lo + hi) / 2)
    high_arr = np.stack(high, 1)
    out = np.array(["mono", "T", "B"])[high_arr.argmax(1)].astype(object)
    out[high_arr.sum(1) != 1] = "other"
    return out


@functools.cache
def trained_simulated(
    *,
    n_cells: int = 600,
    n_genes: int = 200,
    n_proteins: int = 10,
    n_batches: int = 3,
    max_epochs: int = 20,
    seed: int = 0,
) -> tuple[CiteSeqData, TotalVI]:
    """Small simulated multi-batch CITE-seq data (:func:`model.simulate.simulate_cite_seq`,
    the true cell types, named after blood types, as labels) and a TotalVI trained on it
    for a few epochs (memoised per process; the tests of batch features share it)."""
    from model.data import from_anndata
    from model.simulate import BLOOD_TYPE_NAMES, simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(
        n_cells=n_cells,
        n_genes=n_genes,
        n_proteins=n_proteins,
        n_batches=n_batches,
        n_cell_types=5,
        missing_protein_fraction=0.0,
        seed=seed,
        cell_type_names=BLOOD_TYPE_NAMES[:5],
    )
    data = from_anndata(
        adata, batch_key="batch", labels_key="cell_type", source="simulated (tests)"
    )
    model = TotalVI(data, n_hidden=32, n_latent=5, seed=seed)
    model.train(
        max_epochs=max_epochs, seed=seed, device="cpu", early_stopping=False, precision="32"
    )
    return data, model


@contextlib.contextmanager
def exact_kbet_neighbours() -> Iterator[None]:
    """Within the block, scib-metrics' kBET finds its diffusion-map neighbours exactly
    (scikit-learn) instead of with pynndescent, whose numba compile alone takes a minute or
    more on 2 cores, once per process. Only kBET's neighbour search changes (pynndescent is
    approximate, so its values can differ slightly); tests use it, the app does not."""
    from unittest import mock

    from dashboard.backend.scorecard import exact_neighbors

    def search(x: np.ndarray, n_neighbors: int, **_: Any) -> Any:
        return exact_neighbors(x, n_neighbors)

    with mock.patch("scib_metrics.nearest_neighbors.pynndescent", search):
        yield
