"""The first look at a new model: seconds until Explore can show it, until everything is
prepared, and how good its layout is, at the seed's layout simulated at ``--cells`` cells.

The pair goes through the app's real path on an empty cache: the switch job's
``prepare_pair(steps="essential")`` (latent, UMAP, clusters, cell types: what the first
Explore view needs), then :func:`precompute` (every result the pages
show: foreground, imputed proteins, DE one vs rest, the model-card metrics; ``--no-all``
skips it, e.g. at a million cells). The layout's quality is the 15-nearest-neighbour
preservation of the latent in 2-D (``knn_preservation``, 5,000 sampled cells), beside that
of umap-learn fitted on every cell of the same latent (``--no-reference`` skips that fit).

The model is a TotalVI trained ``--epochs`` epochs on a 10,000-cell subset (the weights do
not change these costs); the simulation's cell types are the dataset's labels.

By default the process first runs what ``serve`` runs once when it starts
(:func:`~dashboard.backend.warm_up.warm_up`, numba compiling umap-learn and pynndescent;
reported as ``seconds_server_warm_up``, not counted in the first view); ``--cold`` leaves it
out, so the first layout pays the compile, as in a fresh process without the server's
warm-up.

Usage: ``python bench/first_look.py --cells 72042 --json bench/out/first_look_72k.json``
(prints a table; the JSON has ``seconds_to_first_view``, ``seconds_to_all_prepared``,
``seconds_one_gene_on_demand_median`` / ``_max`` (a gene's denoised RNA on first request,
after the warm steps; with ``--no-all --gene-on-demand`` after the decoder state alone),
``knn_preservation``, ``knn_preservation_umap_learn``, ``peak_rss_mb`` and the steps).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _bench  # noqa: F401  (puts the repository first on sys.path)

from dashboard.backend.embedding import compute_umap, knn_preservation
from dashboard.backend.preparation import precompute, prepare_pair
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.warm_up import warm_up


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulated_pair(service: AnalysisService, n_cells: int, epochs: int) -> Any:
    from model.data import from_anndata
    from model.simulate import BLOOD_TYPE_NAMES, simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(n_cells=n_cells, seed=0, cell_type_names=BLOOD_TYPE_NAMES)
    data = from_anndata(adata, batch_key="batch", labels_key="cell_type", source="simulated")
    rng = np.random.default_rng(0)
    subset = data.subset(np.sort(rng.choice(data.n_cells, min(10_000, n_cells), replace=False)))
    model = TotalVI(subset, seed=0)
    model.train(max_epochs=epochs, seed=0, early_stopping=False)
    dataset = service.add_dataset(data, name=f"simulated {n_cells}")
    return service.add_model(dataset, model, name="brief")


def one_gene_seconds(service: AnalysisService, pair: Any, n: int = 5) -> list[float]:
    """Seconds to a gene's denoised RNA on its first request, after the warm steps (the
    decoder state stored): ``n`` genes in different blocks, each timed alone."""
    genes = [str(g) for g in service.model(pair).var_names]
    picks = [genes[int(i)] for i in np.linspace(0, len(genes) - 1, n)]
    seconds = []
    for gene in picks:
        t0 = time.perf_counter()
        service.denoised_rna(pair, [gene])
        seconds.append(time.perf_counter() - t0)
    return seconds


def one_gene_summary(service: AnalysisService, pair: Any) -> dict[str, float]:
    """Median and max of :func:`one_gene_seconds`, as the JSON reports them."""
    seconds = one_gene_seconds(service, pair)
    return {
        "seconds_one_gene_on_demand_median": float(np.median(seconds)),
        "seconds_one_gene_on_demand_max": float(np.max(seconds)),
    }


def timed_precompute(service: AnalysisService, pair: Any) -> dict[str, float]:
    """:func:`precompute` with the seconds of each of its steps (from its progress calls,
    made as each step starts; a step found in the cache takes about nothing)."""
    marks: list[tuple[str, float]] = []
    precompute(service, pair, progress=lambda _, name: marks.append((name, time.perf_counter())))
    return {name: t1 - t0 for (name, t0), (_, t1) in itertools.pairwise(marks)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    python = sys.version.split()[0]
    out: dict[str, Any] = {
        "cells": args.cells,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}",
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        service = AnalysisService(Settings(cache_dir=Path(tmp) / "cache"))
        try:
            t0 = time.perf_counter()
            pair = simulated_pair(service, args.cells, args.epochs)
            out["seconds_simulate_and_train"] = time.perf_counter() - t0
            if args.warm:
                out["seconds_server_warm_up"] = warm_up()
            t0 = time.perf_counter()
            out["first_view_steps"] = prepare_pair(service, pair, steps="essential")
            out["seconds_to_first_view"] = time.perf_counter() - t0
            if args.all:
                t1 = time.perf_counter()
                out["warm_steps"] = prepare_pair(service, pair, steps="warm")
                out.update(one_gene_summary(service, pair))
                out["precompute_steps"] = timed_precompute(service, pair)
                out["seconds_to_all_prepared"] = out["seconds_to_first_view"] + (
                    time.perf_counter() - t1
                )
            elif args.gene_on_demand:  # only the step a gene's denoised RNA needs
                t1 = time.perf_counter()
                service.denoised_rna_state(pair)
                out["seconds_denoised_rna_decoder_state"] = time.perf_counter() - t1
                out.update(one_gene_summary(service, pair))
            latent = service.latent(pair)
            xy = service.umap(pair).to_numpy()
            out["umap_max_fit_cells"] = service.settings.umap_max_fit_cells
            out["knn_preservation"] = knn_preservation(latent, xy)
            if args.reference:
                t1 = time.perf_counter()
                full = compute_umap(latent, seed=service.settings.seed)
                out["seconds_umap_learn_all_cells"] = time.perf_counter() - t1
                out["knn_preservation_umap_learn"] = knn_preservation(latent, full)
            out["peak_rss_mb"] = peak_mb()
        finally:
            service.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=72042)
    p.add_argument("--epochs", type=int, default=2, help="epochs on the 10,000-cell subset")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--no-all", dest="all", action="store_false", help="skip precompute")
    p.add_argument(
        "--gene-on-demand",
        action="store_true",
        help="with --no-all: time a gene's denoised RNA on first request (decoder state first)",
    )
    p.add_argument(
        "--cold", dest="warm", action="store_false", help="no server warm-up before the view"
    )
    p.add_argument(
        "--no-reference", dest="reference", action="store_false", help="skip umap-learn on all"
    )
    args = p.parse_args(argv)
    res = run(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    print(f"machine: {res['machine']}, load before {res['load_before']}")
    print("| quantity | value |\n|---|---|")
    for key, value in res.items():
        if key in {"machine", "load_before"}:
            continue
        if isinstance(value, dict):
            what = {"first_view_steps": "first view", "warm_steps": "warm"}.get(key, "precompute")
            for step, sec in value.items():
                print(f"| {what}: {step} (s) | {sec:.1f} |")
        elif isinstance(value, float):
            print(f"| {key} | {value:.3f} |")
        else:
            print(f"| {key} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
