"""Benchmark denoised RNA stored as gene blocks: compute time, peak memory, disk, gene reads.

Run ``python bench/denoise_blocks.py`` (50,000 cells, with the dense comparison) or call
:func:`run` (``python -c "from bench.denoise_blocks import run; run(50_000)"``); each
size runs in its own subprocess so its peak resident set size is its own. Per size it
simulates CITE-seq data (:func:`model.simulate.simulate_cite_seq`, every protein measured),
builds an untrained ``TotalVI`` (the weights do not change the cost), then through
:class:`dashboard.backend.service.AnalysisService` on an empty cache:

- computes and stores denoised RNA (gene blocks) and protein: seconds, the peak RSS during
  that step (Linux ``VmHWM`` reset just before it) and what it added to the RSS at its start;
- bytes on disk (block files + the results cache);
- median milliseconds to read one gene (``service.denoised_rna(pair, [gene])``) over 20
  random genes, the manifest being in memory as in a running server.

With ``dense=True`` it also times the previous way (one ``cells x genes`` table from
``denoise.denoised_expression``) with its peak RSS, for comparison.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    # Linux >= 4.0: "5" resets the peak RSS (VmHWM) to the current RSS
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _measure(n_cells: int, n_genes: int, block: int, dense: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from model.data import from_anndata
    from model.simulate import simulate_cite_seq
    from model.totalvi import TotalVI

    torch.set_num_threads(1)
    adata = simulate_cite_seq(n_cells=n_cells, n_genes=n_genes, missing_protein_fraction=0.0)
    data = from_anndata(adata, batch_key="batch")
    del adata
    model = TotalVI(data, seed=0)
    out: dict[str, Any] = {"cells": n_cells, "genes": n_genes, "block": block}
    with tempfile.TemporaryDirectory() as tmp:
        svc = AnalysisService(Settings(cache_dir=tmp, device="cpu", denoise_block_genes=block))
        try:
            pair = svc.add_model(svc.add_dataset(data), model)
            start = _status_mb("VmRSS")
            _reset_peak()
            t0 = time.perf_counter()
            svc.denoised_rna_manifest(pair)
            out["seconds"] = time.perf_counter() - t0
            out["peak_rss_mb"] = _status_mb("VmHWM")
            out["added_mb"] = out["peak_rss_mb"] - start
            out["disk_mb"] = (svc.blocks.volume() + svc.cache.volume()) / 1e6
            genes = np.random.default_rng(0).choice(data.var_names, 20, replace=False)
            svc.denoised_rna(pair, [str(genes[0])])  # warm the manifest as a server would
            times = []
            for g in genes:
                t0 = time.perf_counter()
                svc.denoised_rna(pair, [str(g)])
                times.append(time.perf_counter() - t0)
            out["read_gene_ms"] = 1e3 * float(np.median(times))
        finally:
            svc.close()
    if dense:
        from dashboard.backend.denoise import Sampling, denoised_expression

        start = _status_mb("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        rna, _ = denoised_expression(
            model, data, library_size=1e4, how=Sampling(n_samples=5, seed=0)
        )
        out["dense_seconds"] = time.perf_counter() - t0
        out["dense_peak_rss_mb"] = _status_mb("VmHWM")
        out["dense_added_mb"] = out["dense_peak_rss_mb"] - start
        out["dense_table_mb"] = rna.to_numpy().nbytes / 1e6
    return out


def _child(conn: Any, *args: Any) -> None:
    try:
        conn.send(json.dumps(_measure(*args)))
    except Exception as err:  # report, do not hang the parent
        conn.send(json.dumps({"error": repr(err)}))
    finally:
        conn.close()


def run(
    *sizes: int, n_genes: int = 4000, block: int = 256, dense: bool = False
) -> list[dict[str, Any]]:
    """Measure each size (cells) in a fresh subprocess; prints a table, returns the rows."""
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for n_cells in sizes or (50_000,):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(child, n_cells, n_genes, block, dense))
        proc.start()
        child.close()
        rows.append(json.loads(parent.recv()))
        proc.join()
    header = (
        f"{'cells':>9} {'genes':>6} {'block':>6} {'seconds':>8} {'peak RSS MB':>12} "
        f"{'added MB':>9} {'disk MB':>8} {'1 gene ms':>10}"
    )
    print(header)
    for r in rows:
        if "error" in r:
            print(f"error: {r['error']}")
            continue
        print(
            f"{r['cells']:>9} {r['genes']:>6} {r['block']:>6} {r['seconds']:>8.1f} "
            f"{r['peak_rss_mb']:>12.0f} {r['added_mb']:>9.0f} {r['disk_mb']:>8.0f} "
            f"{r['read_gene_ms']:>10.2f}"
        )
        if "dense_seconds" in r:
            print(
                f"{'  dense (previous): ':>22} {r['dense_seconds']:>8.1f} s, peak RSS "
                f"{r['dense_peak_rss_mb']:.0f} MB (+{r['dense_added_mb']:.0f} MB; the table "
                f"alone {r['dense_table_mb']:.0f} MB)"
            )
    return rows


if __name__ == "__main__":
    run(50_000, dense=True)
