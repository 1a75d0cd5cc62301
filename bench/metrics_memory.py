"""Peak memory of the model-card metrics job (:func:`~dashboard.backend.metrics.compute_metrics`)
on the seed's layout simulated at ``--cells`` cells (4,000 genes, 111 proteins).

The model is an untrained TotalVI (the weights do not change the memory). Reported: peak RSS
of the process before the job (data and model) and after it, so the job's own peak is the
difference. ``--whole`` measures instead what the job did before it accumulated the CV
moments a minibatch at a time: every posterior predictive sample as one cells x genes x
samples array, CVs on the whole arrays (no DE metric or calibration).

Usage: ``python bench/metrics_memory.py --cells 20000 [--whole] [--json out.json]``; run
each variant in a fresh process (peak RSS only grows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import _bench  # puts the repository first on sys.path

from dashboard.backend import metrics as M
from model.protein_scale import EFFICIENCY_FREE


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def whole_array_cv(model: Any, data: Any) -> None:
    """The CVs as computed before chunking: whole arrays of samples."""
    pp = model.posterior_predictive_sample(
        data, n_samples=3, seed=0, batch_size=M.PPC_BATCH_SIZE, protein_scale=EFFICIENCY_FREE
    )
    samples = np.asarray(pp["rna"], dtype=np.float32)
    for axis in (1, 0):
        np.stack([M.coefficient_of_variation(samples[..., s], axis) for s in range(3)])
    M.coefficient_of_variation(data.rna, 1)
    M.coefficient_of_variation(data.rna, 0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model.data import from_anndata
    from model.simulate import BLOOD_TYPE_NAMES, simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(n_cells=args.cells, seed=0, cell_type_names=BLOOD_TYPE_NAMES)
    data = from_anndata(adata, batch_key="batch", labels_key="cell_type", source="simulated")
    del adata
    model = TotalVI(data, seed=0)
    labels = data.obs["cell_type"].astype(str).to_numpy()
    before = peak_mb()
    start = time.perf_counter()
    if args.whole:
        whole_array_cv(model, data)
    else:
        M.compute_metrics(model, data, labels, calibration_samples=args.calibration_samples)
    python = sys.version.split()[0]
    return {
        "cells": args.cells,
        "variant": "whole arrays (before)" if args.whole else "compute_metrics (chunked)",
        "rna_sparse": sp.issparse(data.rna),
        "peak_rss_mb_before_job": round(before),
        "peak_rss_mb": round(peak_mb()),
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {python}",
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--whole", action="store_true", help="the whole-array CVs (before)")
    parser.add_argument("--calibration-samples", type=int, default=M.CALIBRATION_SAMPLES)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    res = run(args)
    print(json.dumps(res, indent=2))
    if args.json:
        _bench.write_results(res, args.json)


if __name__ == "__main__":
    main()
