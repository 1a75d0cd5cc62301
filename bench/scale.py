"""Benchmark how training, the analysis backend and a dashboard recolour scale with cells.

Sizes (``--sizes``, each run in its own subprocess so memory is measured per size):

- ``7k``: the real PBMC data (``data/pbmc10k.h5ad``, 6855 cells x 4000 genes x 14 proteins,
  one batch column).
- ``72k``: simulated at the lab's seed size (72,042 cells x 4000 genes x 111 proteins, 17
  batches, 21 cell types, some proteins missing in some batches) by
  :func:`model.simulate.simulate_cite_seq`.
- ``1m``: simulated, 1,000,000 cells with the same layout.
- any integer ``N``: simulated, ``N`` cells.

Sizes below ``--large-from`` (default 250,000 cells) run the full pipeline: data (read or
simulate), training (``--epochs``, seconds per epoch from the per-epoch progress callback),
latent, UMAP (umap-learn), Leiden clusters + marker-named cell types (incl. denoised values),
all-types DE (RNA + protein) and model-card metrics, all through
:class:`dashboard.backend.service.AnalysisService` with ``Settings(cache_dir=<--cache-dir>/...)``
(emptied first, so every step is computed). DE and metrics use the simulation's true cell
types at simulated sizes and the marker-named Leiden clusters on the real data.

Larger sizes run what the dashboard needs to show data it did not train on: data
(simulate), a model (trained ``--large-epochs`` on a ``--large-train-cells`` subset: the
weights do not change inference cost), inference (latent means of every cell) and one
recolour (POST ``/_dash-update-component`` through Flask's test client, as
``bench/dashboard.py`` measures it: server time and payload as JSON and gzip), the initial
Explore figures in full, and a lasso on the overview resolved against every cell (region →
cells alone, and the highlight POST that does it). Above ``--max-points`` (default
``Settings.max_points``, 200,000) the views plot a stratified subsample, so recolour and
figure payloads stop growing with the number of cells. With ``umap`` among the steps the
layout is the service's (umap-learn fitted on ``Settings.umap_max_fit_cells`` cells, the
rest placed through their latent neighbours), else the first two principal components of
the latent space (said so in the output); with ``clusters``, the service's Leiden clusters
(pynndescent's kNN graph at these sizes), else the true cell types. The preparation runs
as the app's first view does (latent, UMAP, clusters, cell types: found or computed, timed
per step).

A step whose estimate (linear in cells, from a smaller size measured in this run, else
from bench/RESULTS.md's 7k figures) exceeds ``--step-budget`` minutes is skipped and
reported with the estimate (``--force`` runs it anyway). Memory: the peak resident set
size during each step (sampled every 20 ms) and the process's peak so far
(``resource.getrusage``).

Usage: ``python bench/scale.py [--sizes 7k 72k 1m] [--steps ...] [--epochs 3]``; results go
to ``bench/out/scale.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _bench import BENCH, DEFAULT_DATA, DEFAULT_OUT, ROOT, reported, saving

DEFAULT_CACHE = ROOT / "bench" / "out" / "scale-cache"
SEED_LAYOUT = {  # the lab's data set (the seed of the issue)
    "n_genes": 4000,
    "n_proteins": 111,
    "n_batches": 17,
    "n_cell_types": 21,
    "missing_protein_fraction": 0.1,
}
NAMED_SIZES = {"72k": 72042, "1m": 1_000_000}
FULL_STEPS = ["data", "train", "latent", "umap", "clusters", "de", "metrics"]
LARGE_STEPS = ["data", "model", "latent", "umap", "clusters", "recolour"]
# seconds per cell (per epoch for training) at 7k, from bench/RESULTS.md (idle machine);
# used to estimate a step before any size of this run has measured it
#: Large sizes: the sampled UMAP (fit on Settings.umap_max_fit_cells, the rest placed) and
#: Leiden on pynndescent's graph, per cell at 72k (bench/RESULTS.md §15 part 5)
LARGE_S_PER_CELL = {"umap": 12.0 / 72042, "clusters": 4.7 / 72042}
FALLBACK_S_PER_CELL = {
    "train": 1.249 / 6855,
    "latent": 0.30 / 6855,
    "umap": 31.17 / 6855,  # umap-learn on all cells (below Settings.umap_max_fit_cells)
    "clusters": 3.97 / 6855,
    "de": 6.29 / 6855,
    "metrics": 11.76 / 6855,
}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


# ============================================================================ memory
def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


class PeakSampler:
    """Largest RSS seen while the ``with`` block runs (sampled every ``interval`` s)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


class Steps:
    """Runs, times and records the steps of one size (or records why one was skipped)."""

    def __init__(self, n_cells: int, selected: list[str], args: argparse.Namespace) -> None:
        self.n = n_cells
        self.selected = selected
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.rates: dict[str, float] = args.rates  # seconds per cell, measured earlier

    def estimate(self, name: str, factor: float = 1.0) -> float | None:
        rate = self.rates.get(name, FALLBACK_S_PER_CELL.get(name))
        return None if rate is None else rate * self.n * factor

    def run(self, name: str, label: str, fn: Callable[[], Any], *, factor: float = 1.0) -> Any:
        if name not in self.selected:
            self.rows.append({"step": name, "label": label, "skipped": "not selected"})
            return None
        est = self.estimate(name, factor)
        if est is not None and est > 60 * self.args.step_budget and not self.args.force:
            why = (
                f"skipped, estimated {est / 60:.0f} min (> --step-budget "
                f"{self.args.step_budget:g} min; --force runs it)"
            )
            self.rows.append({"step": name, "label": label, "skipped": why})
            print(f"  {label}: {why}", flush=True)
            return None
        print(f"  {label}...", flush=True)
        with PeakSampler() as mem:
            seconds, value = timed(fn)
        row = {
            "step": name,
            "label": label,
            "seconds": seconds,
            "peak_rss_mb": mem.peak,
            "process_peak_mb": maxrss_mb(),
        }
        if isinstance(value, dict) and "_row" in value:
            row.update(value.pop("_row"))
        self.rows.append(row)
        print(f"  {label}: {seconds:.1f}s, peak RSS {mem.peak:,.0f} MB", flush=True)
        return value


# ============================================================================ workers
def simulate(n_cells: int, seed: int) -> Any:
    from model.simulate import simulate_cite_seq

    return simulate_cite_seq(n_cells=n_cells, seed=seed, **SEED_LAYOUT)


def fresh_service(args: argparse.Namespace, tag: str) -> Any:
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

    cache = args.cache_dir / tag
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    extra = {} if args.max_points is None else {"max_points": args.max_points}
    return AnalysisService(Settings(cache_dir=cache, **extra)), cache


def train_step(service: Any, dataset: Any, out_dir: Path, epochs: int) -> dict[str, Any]:
    """Train ``epochs`` epochs; per-epoch seconds from the progress callback."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    pair = service.train(
        dataset,
        out_dir=out_dir,
        max_epochs=epochs,
        progress=lambda _f, _m: stamps.append(time.perf_counter()),
    )
    ends = [s - t0 for s in stamps if s > t0][-epochs:] if stamps else []
    per_epoch = float(np.median(np.diff(ends))) if len(ends) >= 2 else None
    note = (
        f"{epochs} epochs; first epoch incl. setup {ends[0]:.1f}s" if ends else f"{epochs} epochs"
    )
    return {
        "pair": pair,
        "_row": {
            "seconds_per_epoch": per_epoch,
            "first_epoch_s": ends[0] if ends else None,
            "note": note,
        },
    }


def full_worker(args: argparse.Namespace, size: str, n_cells: int) -> dict[str, Any]:
    """Data, training, latent, UMAP, clusters, DE and metrics through the service."""
    import warnings

    from model.data import from_anndata

    warnings.filterwarnings("ignore", category=FutureWarning)
    service, cache = fresh_service(args, f"size-{size}")
    steps = Steps(n_cells, args.steps, args)
    real = size == "7k"
    labels_key = None if real else "cell_type"
    info: dict[str, Any] = {}
    try:

        def load() -> Any:
            if real:
                return service.open_dataset(args.data, batch_key="batch")
            adata = simulate(n_cells, args.seed)
            data = from_anndata(adata, batch_key="batch", source=f"simulated {n_cells} cells")
            return service.add_dataset(data, name=f"simulated-{n_cells}")

        steps.selected = [*steps.selected, "data"]
        dataset = steps.run("data", "data (read)" if real else "data (simulate)", load)
        d = service.dataset(dataset)
        info.update(n_cells=d.n_cells, n_genes=d.n_genes, n_proteins=d.n_proteins)
        info["n_batches"] = d.n_batch
        info["missing_protein_pairs"] = (
            0 if d.protein_batch_mask is None else int((~d.protein_batch_mask).sum())
        )
        res = steps.run(
            "train",
            f"train ({args.epochs} epochs)",
            lambda: train_step(service, dataset, cache / "model", args.epochs),
            factor=args.epochs,
        )
        if res is None:
            return {**info, "steps": steps.rows}
        pair = res["pair"]
        steps.run("latent", "latent", lambda: service.latent(pair))
        if "umap" in args.steps:
            from dashboard.backend.embedding import compute_umap

            rng = np.random.default_rng(0)
            jit, _ = timed(lambda: compute_umap(rng.normal(size=(300, 10)), seed=0))
            info["numba_jit_s"] = jit
        steps.run("umap", "UMAP (umap-learn)", lambda: service.umap(pair))
        steps.run(
            "clusters",
            "Leiden + marker-named cell types (incl. denoised)",
            lambda: service.cell_types(pair),
        )
        types = "true cell types" if labels_key else "marker-named Leiden clusters"
        de = steps.run(
            "de",
            f"DE all types vs rest, RNA + protein ({types})",
            lambda: service.de_one_vs_rest(pair, labels_key=labels_key),
        )
        if de is not None:
            info["de_rows"] = len(de)
        steps.run(
            "metrics",
            f"metrics, {service.settings.n_posterior_samples} PPC samples ({types})",
            lambda: service.metrics(pair, labels_key=labels_key),
        )
    finally:
        service.close()
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return {**info, "steps": steps.rows}


def load_bench_dashboard() -> Any:
    """bench/dashboard.py as a module (its name clashes with the ``dashboard`` package)."""
    spec = importlib.util.spec_from_file_location("bench_dashboard", BENCH / "dashboard.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def large_worker(args: argparse.Namespace, size: str, n_cells: int) -> dict[str, Any]:
    """Data, a model, inference and one recolour (see the module docstring)."""
    from model.data import from_anndata
    from model.totalvi import TotalVI

    service, cache = fresh_service(args, f"size-{size}")
    steps = Steps(n_cells, [*args.steps, "data"], args)
    info: dict[str, Any] = {}
    try:

        def load() -> Any:
            adata = simulate(n_cells, args.seed)
            data = from_anndata(
                adata,
                batch_key="batch",
                labels_key="cell_type",
                source=f"simulated {n_cells} cells",
            )
            del adata
            return service.add_dataset(data, name=f"simulated-{n_cells}")

        dataset = steps.run("data", "data (simulate)", load)
        data = service.dataset(dataset)
        info.update(n_cells=data.n_cells, n_genes=data.n_genes, n_proteins=data.n_proteins)
        info["n_batches"] = data.n_batch
        info["rna_csr_mb"] = (data.rna.data.nbytes + data.rna.indices.nbytes) / 1e6

        def fit() -> Any:
            rng = np.random.default_rng(args.seed)
            k = min(args.large_train_cells, data.n_cells)
            sub = data.subset(np.sort(rng.choice(data.n_cells, size=k, replace=False)))
            model = TotalVI(sub, seed=args.seed)
            model.train(max_epochs=args.large_epochs)
            return service.add_model(dataset, model, name="subset-model")

        pair = steps.run(
            "model",
            f"model ({args.large_epochs} epoch(s) on {args.large_train_cells:,} cells)",
            fit,
        )
        if pair is None:
            return {**info, "steps": steps.rows}
        latent = steps.run(
            "latent", "inference (latent means, all cells)", lambda: service.latent(pair)
        )
        if latent is None:
            return {**info, "steps": steps.rows}
        for name, rate in LARGE_S_PER_CELL.items():
            steps.rates.setdefault(name, rate)
        fit = service.settings.umap_max_fit_cells
        umap = steps.run(
            "umap",
            f"UMAP (umap-learn fitted on {fit:,} cells, the rest placed)",
            lambda: service.umap(pair),
        )
        if umap is None:
            est_umap = steps.estimate("umap")
            info["umap"] = (
                f"UMAP not run (estimated {est_umap / 60:.0f} min); layout = first two "
                "principal components of the latent space"
            )
        else:
            info["umap"] = f"the service's UMAP (seeded; fitted on {fit:,} cells, rest placed)"
        clusters = steps.run(
            "clusters",
            "Leiden clusters (pynndescent kNN graph, all cells)",
            lambda: service.clusters(pair),
        )
        if clusters is None:
            est_leiden = steps.estimate("clusters")
            info["clusters"] = (
                f"Leiden not run (estimated {est_leiden / 60:.0f} min); clusters = true cell types"
            )
        else:
            info["clusters"] = f"the service's Leiden clusters: {clusters.nunique()} clusters"
        if "recolour" not in args.steps:
            return {**info, "steps": steps.rows}
        recolour = steps.run(
            "recolour",
            "dashboard: prepare (first view) + recolours",
            lambda: recolour_step(args, service, pair, latent, data, umap, clusters),
        )
        if recolour is not None:
            info["recolour"] = recolour
    finally:
        service.close()
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    return {**info, "steps": steps.rows}


def recolour_step(
    args: argparse.Namespace,
    service: Any,
    pair: Any,
    latent: np.ndarray,
    data: Any,
    umap: Any = None,
    clusters: Any = None,
) -> dict[str, Any]:
    """Seed the layout and the clusters where their steps did not run (PCA of the latent,
    the true cell types), prepare the pair as the app does (the first view's steps:
    computed or found, timed per step), then POST recolours and a lasso."""
    import pandas as pd

    from dashboard import ids
    from dashboard.views.state import ActiveState

    bd = load_bench_dashboard()
    names = data.obs_names
    if umap is None:
        centred = latent - latent.mean(axis=0)
        _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 50000)], full_matrices=False)
        xy = (centred @ vt[:2].T).astype(np.float32)
        service.cache.set(
            service.key("umap", pair, service.embeddings.umap_params(pair)),
            pd.DataFrame(xy, index=names, columns=["UMAP1", "UMAP2"]),
        )
    else:
        xy = umap[["UMAP1", "UMAP2"]].to_numpy(np.float32)
    if clusters is None:
        codes = np.asarray(data.labels).astype(str)
        cats = sorted(set(codes), key=int)
        service.cache.set(
            service.key("clusters", pair, service.embeddings.clusters_params(pair)),
            pd.Series(pd.Categorical(codes, categories=cats), index=names, name="leiden"),
        )
    state = ActiveState(service, warm=False)
    t_prep, job = timed(lambda: state.prepare(pair))
    rec = service.wait(job)
    if str(rec.status) != "done":
        msg = f"preparing failed: {rec.error or rec.message}"
        raise RuntimeError(msg)
    prepare_steps = service.job_result(job) or {}
    prepare_s = t_prep + sum(prepare_steps.values())
    print(
        "    prepare: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in prepare_steps.items())
        + f" (denoised RNA blocks on disk: {service.blocks.volume() / 1e9:.1f} GB)",
        flush=True,
    )
    client = bd.DashClient(service, state)
    out: dict[str, Any] = {
        "prepare_s": prepare_s,
        "prepare_steps": prepare_steps,
        "blocks_gb": service.blocks.volume() / 1e9,
        "updates": [],
    }
    gene = str(data.var_names[0])
    for label, feature, layer, before in (
        ("gene raw", f"gene:{gene}", "raw", "obs:cell_type"),
        ("gene denoised (one block row)", f"gene:{gene}", "denoised", "obs:cell_type"),
        ("cell type", "obs:cell_type", "raw", f"gene:{gene}"),
    ):
        body = client.body(
            "recolor",
            {
                f"{ids.EXPLORE_COLOR}.value": feature,
                f"{ids.EXPLORE_LAYER}.value": layer,
                f"{ids.COLOR_STORE}.data": {"feature": before, "layer": "raw"},
            },
            [f"{ids.EXPLORE_COLOR}.value"],
        )
        times = []
        for _ in range(args.recolour_repeats):
            sec, raw, wire, decoded = client.post(body)
            bd.is_patch(decoded)
            times.append(sec)
        out["updates"].append(
            {
                "update": f"recolour: {label}",
                "first_ms": times[0] * 1e3,
                "median_ms": float(np.median(times[1:] or times)) * 1e3,
                "n": len(times),
                "response_bytes": raw,
                "response_gzip_bytes": wire,
                "request_bytes": len(body),
            }
        )
        print(
            f"    {label}: first {times[0] * 1e3:.0f} ms, median "
            f"{out['updates'][-1]['median_ms']:.0f} ms, {raw / 1e6:.1f} MB JSON, "
            f"{wire / 1e6:.1f} MB gzip",
            flush=True,
        )
    out.update(overview_step(args, bd, client, service, pair, xy, data))
    return out


def concave_lasso(xy: np.ndarray, scale: float = 1.0) -> list[list[float]]:
    """A "C"-shaped lasso over the middle of the layout (8 vertices; ``scale`` stretches it
    about its centre so each repeat is a new region, not a memoised one)."""
    (x0, y0), (x1, y1) = np.quantile(xy, [0.1, 0.9], axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xm = x0 + 0.4 * (x1 - x0)
    ya, yb = y0 + 0.35 * (y1 - y0), y0 + 0.65 * (y1 - y0)
    xs = np.array([x0, x1, x1, xm, xm, x1, x1, x0])
    ys = np.array([y0, y0, ya, ya, yb, yb, y1, y1])
    return [(cx + scale * (xs - cx)).tolist(), (cy + scale * (ys - cy)).tolist()]


def overview_step(
    args: argparse.Namespace,
    bd: Any,
    client: Any,
    service: Any,
    pair: Any,
    xy: np.ndarray,
    data: Any,
) -> dict[str, Any]:
    """The initial Explore figures in full, and a lasso on the overview resolved against
    every cell (the region → cells step alone, and the highlight POST that does it)."""
    from dashboard import ids
    from dashboard.views.cells import region_cells, shown_cells

    shown = shown_cells(service, pair)
    out: dict[str, Any] = {
        "n_cells": int(data.n_cells),
        "shown": int(data.n_cells if shown is None else len(shown)),
        "max_points": int(service.settings.max_points),
    }
    proteins = list(data.protein_names)
    sec, raw, wire = bd.full_figures(
        client, "obs:cell_type", "raw", None, proteins[0], proteins[min(1, len(proteins) - 1)]
    )
    out["initial"] = {"ms": sec * 1e3, "response_bytes": raw, "response_gzip_bytes": wire}
    print(
        f"    initial UMAP + linked figures: {sec * 1e3:.0f} ms, {raw / 1e6:.1f} MB JSON, "
        f"{wire / 1e6:.2f} MB gzip ({out['shown']:,} of {out['n_cells']:,} cells plotted)",
        flush=True,
    )
    resolve, posts, raws, wires, counts = [], [], [], [], []
    for i in range(max(args.recolour_repeats, 1)):
        region = {"view": "umap", "lasso": concave_lasso(xy, 1.0 - 0.01 * i)}
        t, cells = timed(lambda region=region: region_cells(service, pair, region))
        resolve.append(t)
        counts.append(len(cells))
        region = {"view": "umap", "lasso": concave_lasso(xy, 0.995 - 0.01 * i)}  # not memoised
        selection = {"region": region, "source": ids.EXPLORE_UMAP, "dataset": pair.dataset.id}
        key = f"{ids.SELECTION_STORE}.data"
        body = client.body("highlight", {key: selection}, [key])
        sec, raw, wire, decoded = client.post(body)
        bd.is_patch(decoded)
        posts.append(sec)
        raws.append(raw)
        wires.append(wire)
    out["lasso"] = {
        "resolve_ms": float(np.median(resolve)) * 1e3,
        "highlight_ms": float(np.median(posts)) * 1e3,
        "response_bytes": int(np.median(raws)),
        "response_gzip_bytes": int(np.median(wires)),
        "cells_selected": int(np.median(counts)),
        "n": len(posts),
    }
    la = out["lasso"]
    print(
        f"    lasso over all {out['n_cells']:,} cells: resolve {la['resolve_ms']:.0f} ms, "
        f"highlight POST {la['highlight_ms']:.0f} ms ({la['cells_selected']:,} cells, "
        f"{la['response_bytes'] / 1e6:.2f} MB JSON, {la['response_gzip_bytes'] / 1e6:.2f} MB "
        "gzip)",
        flush=True,
    )
    return out


def worker(args: argparse.Namespace) -> int:
    size = args.worker
    n_cells = size_cells(size)
    t0 = time.perf_counter()
    if n_cells >= args.large_from:
        res = large_worker(args, size, n_cells)
        res["mode"] = "large"
    else:
        res = full_worker(args, size, n_cells)
        res["mode"] = "full"
    res["wall_s"] = time.perf_counter() - t0
    res["process_peak_mb"] = maxrss_mb()
    print(f"RESULT {json.dumps(res, default=str)}", flush=True)
    return 0


# ============================================================================ parent
def size_cells(size: str) -> int:
    if size == "7k":
        return 6855
    if size.lower() in NAMED_SIZES:
        return NAMED_SIZES[size.lower()]
    return int(size)


def run_size(args: argparse.Namespace, size: str, rates: dict[str, float]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        size,
        "--rates",
        json.dumps(rates),
        "--steps",
        *args.steps,
        "--epochs",
        str(args.epochs),
        "--cache-dir",
        str(args.cache_dir),
        "--data",
        str(args.data),
        "--seed",
        str(args.seed),
        "--step-budget",
        str(args.step_budget),
        "--large-from",
        str(args.large_from),
        "--large-train-cells",
        str(args.large_train_cells),
        "--large-epochs",
        str(args.large_epochs),
        "--recolour-repeats",
        str(args.recolour_repeats),
    ]
    if args.force:
        cmd.append("--force")
    if args.max_points is not None:
        cmd += ["--max-points", str(args.max_points)]
    if args.keep_cache:
        cmd.append("--keep-cache")
    with tempfile.TemporaryFile(mode="w+") as err_file:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err_file, text=True, start_new_session=True
        )
        lines: list[str] = []

        def pump() -> None:  # echo the worker's progress lines as they come
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if not line.startswith("RESULT "):
                    print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
            proc.wait()
            return {"size": size, "error": f"killed after --timeout {args.timeout:g}s"}
        finally:
            reader.join(timeout=10)
        err_file.seek(0)
        err = err_file.read()
    found = [ln for ln in lines if ln.startswith("RESULT ")]
    if not found:
        return {"size": size, "error": f"worker exited {proc.returncode}: {err.strip()[-800:]}"}
    res = json.loads(found[-1][len("RESULT ") :])
    res["size"] = size
    return res


def print_report(res: dict[str, Any]) -> None:
    print(
        f"\nScale benchmark: {res['cpu_count']} CPUs, OMP_NUM_THREADS="
        f"{res['omp_num_threads']}, load average {res['load_before'][0]:.1f} before / "
        f"{res['load_after'][0]:.1f} after; epochs {res['epochs']}"
    )
    print(
        "\n| size | cells | genes | proteins | batches | step | seconds | s / epoch "
        "| peak RSS in step (MB) | process peak (MB) | note |\n"
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"
    )
    for r in res["sizes"]:
        if r.get("error"):
            print(f"| {r['size']} | | | | | error: {r['error'][:300]} | | | | | |")
            continue
        head = (
            f"| {r['size']} | {r['n_cells']:,} | {r['n_genes']:,} | {r['n_proteins']} "
            f"| {r['n_batches']} "
        )
        for st in r["steps"]:
            if "skipped" in st:
                if st["skipped"] != "not selected":
                    print(f"{head}| {st['label']} | {st['skipped']} | | | | |")
                continue
            spe = st.get("seconds_per_epoch")
            print(
                f"{head}| {st['label']} | {st['seconds']:.1f} | "
                f"{'' if spe is None else f'{spe:.2f}'} | {st['peak_rss_mb']:,.0f} | "
                f"{st['process_peak_mb']:,.0f} | {st.get('note', '')} |"
            )
    for r in res["sizes"]:
        for k in ("umap", "clusters"):
            if r.get(k):
                print(f"({r['size']}: {r[k]})")
        rc = r.get("recolour")
        if rc:
            print(
                f"\nRecolour at {r['n_cells']:,} cells (POST /_dash-update-component via "
                f"Flask's test client; preparing the seeded results took {rc['prepare_s']:.1f}s)"
            )
            print(
                "| update | first ms | median ms | n | request KB | response MB | gzip MB |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
            )
            for u in rc["updates"]:
                print(
                    f"| {u['update']} | {u['first_ms']:.0f} | {u['median_ms']:.0f} | {u['n']} "
                    f"| {u['request_bytes'] / 1024:.1f} | {u['response_bytes'] / 1e6:.2f} | "
                    f"{u['response_gzip_bytes'] / 1e6:.2f} |"
                )
            if rc.get("initial"):
                ini, la = rc["initial"], rc["lasso"]
                print(
                    f"\nOverview: {rc['shown']:,} of {rc['n_cells']:,} cells plotted "
                    f"(max_points {rc['max_points']:,})\n"
                    "| request | ms | response MB | gzip MB | note |\n"
                    "| --- | ---: | ---: | ---: | --- |\n"
                    f"| initial UMAP + linked figures (full) | {ini['ms']:.0f} "
                    f"| {ini['response_bytes'] / 1e6:.2f} "
                    f"| {ini['response_gzip_bytes'] / 1e6:.2f} | |\n"
                    f"| lasso: region → cells (all {rc['n_cells']:,}) | {la['resolve_ms']:.0f} | "
                    f"| | {la['cells_selected']:,} cells, median of {la['n']} |\n"
                    f"| lasso: highlight POST (resolve + patch) | {la['highlight_ms']:.0f} "
                    f"| {la['response_bytes'] / 1e6:.2f} | {la['response_gzip_bytes'] / 1e6:.2f} "
                    f"| median of {la['n']} |"
                )


def update_rates(rates: dict[str, float], res: dict[str, Any]) -> None:
    """Seconds per cell of each measured step (per epoch for training)."""
    n = res.get("n_cells")
    if not n or res.get("mode") != "full":
        return
    for st in res.get("steps", []):
        if "seconds" not in st:
            continue
        if st["step"] == "train":
            spe = st.get("seconds_per_epoch") or st["seconds"] / max(res.get("epochs", 1), 1)
            rates["train"] = spe / n
        elif st["step"] in FALLBACK_S_PER_CELL:
            rates[st["step"]] = st["seconds"] / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["7k", "72k", "1m"], help="7k (real), 72k, 1m or N cells"
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        default=list(dict.fromkeys(FULL_STEPS + LARGE_STEPS)),
        choices=sorted(set(FULL_STEPS + LARGE_STEPS)),
        help="steps to run (the full pipeline needs train; large sizes need model for latent "
        "and latent for recolour)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (full sizes)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real 7k data")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument(
        "--step-budget", type=float, default=10.0, help="minutes; longer steps are skipped"
    )
    parser.add_argument("--force", action="store_true", help="run steps over --step-budget")
    parser.add_argument("--large-from", type=int, default=250_000, help="cells")
    parser.add_argument("--large-train-cells", type=int, default=20_000)
    parser.add_argument("--large-epochs", type=int, default=1)
    parser.add_argument("--recolour-repeats", type=int, default=3)
    parser.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="cells the views plot (Settings.max_points; default: its default, 200,000)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per size")
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rates", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rates = json.loads(args.rates)
    args.cache_dir = args.cache_dir.resolve()
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    for s in args.sizes:
        try:
            size_cells(s)
        except ValueError:
            parser.error(f"--sizes: {s!r} is not 7k, 72k, 1m or a number of cells")
    if args.worker:
        return worker(args)
    if "7k" in args.sizes and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "load_before": list(os.getloadavg()),
        "epochs": args.epochs,
        "steps": args.steps,
        "sizes": [],
    }
    rates: dict[str, float] = {}
    out = args.out / "scale.json"
    with saving(res, out):
        for size in sorted(args.sizes, key=size_cells):
            print(f"size {size} ({size_cells(size):,} cells)", flush=True)
            r = run_size(args, size, rates)
            r["epochs"] = args.epochs
            res["sizes"].append(r)
            update_rates(rates, r)
    return reported(res, out, print_report)


if __name__ == "__main__":
    sys.exit(main())
