"""Time the jobs issue 12 added, at the embedded 6,855-cell PBMC data and at the seed's
72k-cell layout (simulated), each on an empty cache, one after another.

Jobs: DE one-vs-rest at scvi-tools' defaults (the reference) and batch-corrected; the
counterfactual decoding of every cell's denoised RNA and protein in one batch (and, at 7k,
averaged over all batches: one batch there); gene-protein concordance; the per-cell model
QC (reconstruction error, latent uncertainty, background) and the cell-wise CV ratio; one
gene's posterior predictive check; the scib-metrics integration scorecard (>= 2 batches);
a gene-set score. Prerequisites (latent, cell types) are timed apart. Each step reports
seconds and the process's peak resident memory so far.

At 72k the model is a TotalVI trained ``--epochs`` epochs on a stratified 10,000-cell
subset (the weights do not change the cost of these jobs); cell types are the simulation's
labels. Steps in ``--skip`` are not run (they are listed with the reason).

Usage: ``python bench/new_jobs.py [--sizes 7k 72k] [--skip cell_cv@72k ...] [--only cell_cv
...]``; results
in ``bench/out/new_jobs.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _bench import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_OUT, reported, saving

from dashboard.backend.denoise import ALL_BATCHES
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings

#: A T-cell gene set for the PBMC data (genes the model lacks are left out) and its protein.
GENE_SET_7K = (["CD3D", "CD3G", "CD2", "IL7R", "CD247", "LCK"], ["CD3_TotalSeqB"])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(rows: list[dict[str, Any]], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    rows.append({"step": name, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb()})
    print(f"  {name:<34} {rows[-1]['seconds']:8.1f} s  peak {rows[-1]['peak_rss_mb']:7.0f} MB")
    return out


def open_7k(service: AnalysisService) -> Any:
    dataset = service.open_dataset(str(DEFAULT_DATA))
    return service.load_model(dataset, str(DEFAULT_MODEL))


def open_72k(service: AnalysisService, epochs: int) -> Any:
    from model.data import from_anndata
    from model.simulate import BLOOD_TYPE_NAMES, simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(n_cells=72042, seed=0, cell_type_names=BLOOD_TYPE_NAMES)
    data = from_anndata(adata, batch_key="batch", labels_key="cell_type", source="sim 72k")
    rng = np.random.default_rng(0)
    subset = data.subset(np.sort(rng.choice(data.n_cells, 10_000, replace=False)))
    model = TotalVI(subset, seed=0)
    model.train(max_epochs=epochs, seed=0, early_stopping=False)
    dataset = service.add_dataset(data, name="simulated 72k")
    return service.add_model(dataset, model, name="brief")


def steps(service: AnalysisService, pair: Any, size: str) -> list[tuple[str, Callable[[], Any]]]:
    data = service.dataset(pair)
    first = str(service.model(pair).batch_categories[0])
    gene = "LYZ" if "LYZ" in data.var_names else str(data.var_names[0])
    out: list[tuple[str, Callable[[], Any]]] = [
        ("de_one_vs_rest (defaults)", lambda: service.de_one_vs_rest(pair)),
        (
            "de_one_vs_rest (batch-corrected)",
            lambda: service.de_one_vs_rest(pair, controls={"batch_correction": True}),
        ),
        (f"decode in {first}", lambda: service.denoised_rna_manifest(pair, batch=first)),
        (
            "decode averaged over batches",
            lambda: service.denoised_rna_manifest(pair, batch=ALL_BATCHES),
        ),
        ("gene_protein_concordance", lambda: service.gene_protein_concordance(pair)),
        ("cell_diagnostics", lambda: service.cell_diagnostics(pair)),
        ("cell_cv", lambda: service.cell_cv(pair)),
        (f"feature_check gene:{gene}", lambda: service.feature_check(pair, f"gene:{gene}")),
    ]
    if data.n_batch >= 2:
        out.append(("integration_scores", lambda: service.integration_scores(pair)))
    genes, proteins = GENE_SET_7K if size == "7k" else ([str(g) for g in data.var_names[:20]], [])
    genes = [g for g in genes if g in data.var_names]
    out.append(
        (
            f"gene_set_score ({len(genes)} genes, {len(proteins)} proteins)",
            lambda: service.gene_set_score(pair, genes, proteins),
        )
    )
    return out


def run_size(size: str, args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        service = AnalysisService(Settings(cache_dir=Path(tmp) / "cache"))
        try:
            print(f"{size}:")
            pair = timed(
                rows,
                "open (read/simulate + model)",
                (lambda: open_7k(service))
                if size == "7k"
                else lambda: open_72k(service, args.epochs),
            )
            timed(rows, "prerequisite: latent", lambda: service.latent(pair))
            timed(rows, "prerequisite: cell types", lambda: service.cell_types(pair))
            timed(rows, "prerequisite: denoised RNA", lambda: service.denoised_rna_manifest(pair))
            for name, fn in steps(service, pair, size):
                only = args.only and not any(name.startswith(o) for o in args.only)
                if only or name in args.skip or f"{name}@{size}" in args.skip:
                    rows.append({"step": name, "skipped": True})
                    print(f"  {name:<34} skipped (--skip / --only)")
                    continue
                timed(rows, name, fn)
            data = service.dataset(pair)
            shape = (data.n_cells, data.n_genes, data.n_proteins, data.n_batch)
        finally:
            service.close()
    return {"cells": shape[0], "genes": shape[1], "proteins": shape[2], "batches": shape[3],
            "rows": rows}  # fmt: skip


def print_report(res: dict[str, Any]) -> None:
    print(f"\nmachine: {res['machine']}, load before {res['load_before']}")
    for size, out in res["sizes"].items():
        print(f"\n{size}: {out['cells']:,} cells x {out['genes']} genes x {out['proteins']} "
              f"proteins, {out['batches']} batches")  # fmt: skip
        print("| step | seconds | peak RSS (MB) |\n|---|---|---|")
        for r in out["rows"]:
            if r.get("skipped"):
                print(f"| {r['step']} | skipped | |")
            else:
                print(f"| {r['step']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["7k", "72k"], choices=["7k", "72k"])
    p.add_argument("--epochs", type=int, default=2, help="72k: epochs on the subset")
    p.add_argument(
        "--skip", nargs="*", default=[], help="steps to skip: a step's name, or name@size"
    )
    p.add_argument("--only", nargs="*", default=[], help="run only the steps whose names start so")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "new_jobs.json")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    python = sys.version.split()[0]
    res: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "sizes": {},
    }
    with saving(res, args.out):
        for size in args.sizes:
            res["sizes"][size] = run_size(size, args)
    return reported(res, args.out, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
