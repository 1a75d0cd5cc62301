"""Protein samples with and without the learned capture efficiency: means and calibration.

For the embedded checkpoint on the embedded PBMC data (and, with ``../shared``, the 30-epoch
scvi-tools 1.4.2 PBMC checkpoint on its data, pseudo-batches ``b0``/``b1`` by row parity as it
was trained), prints:

* per protein: the observed mean count, the mean of 3 posterior predictive samples per cell
  efficiency-free (what scvi-tools 1.4.2 draws, "before") and on the measured scale
  (``protein_scale="measured"``, "after"), and their ratios to the observed mean;
* the posterior predictive calibration (``dashboard.backend.metrics.calibration_table``: 20
  draws per cell, RNA over 500 random cells, proteins over all cells; scvi-tools'
  ``calibration_error``) of RNA and of proteins on both scales;
* seconds of the model-card metrics job before (scvi-tools' tables only) and after (both
  scales and the calibration).

    python bench/protein_scale.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from dashboard.backend import metrics as M  # noqa: E402
from model.data import CiteSeqData, from_anndata, read_cite_seq  # noqa: E402
from model.protein_scale import EFFICIENCY_FREE, MEASURED  # noqa: E402
from model.totalvi import TotalVI  # noqa: E402

ROOT = BENCH.parent
SHARED = ROOT.parent / "shared"


def embedded() -> tuple[str, TotalVI, CiteSeqData]:
    model = TotalVI.load(ROOT / "data" / "models" / "pbmc10k")
    return "embedded (ours, 357 epochs)", model, read_cite_seq(ROOT / "data" / "pbmc10k.h5ad")


def scvi_30_epochs() -> tuple[str, TotalVI, CiteSeqData] | None:
    folder = SHARED / "reference" / "checkpoints" / "scvi_tools_1.4.2_pbmc10k"
    path = SHARED / "data" / "h5ad" / "pbmc10k_6855x4000_14prot.h5ad"
    if not folder.is_dir() or not path.is_file():
        return None
    import anndata as ad

    adata = ad.read_h5ad(path)
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "b0", "b1")
    data = from_anndata(adata, batch_key="batch", protein_obsm_key="protein_expression")
    model = TotalVI.load(folder / "model.pt", data=data)
    return "scvi-tools 1.4.2, 30 epochs", model, data


def measure(name: str, model: TotalVI, data: CiteSeqData) -> dict:
    eff = model.protein_efficiency()
    pos = data.protein_names.get_indexer(model.protein_names)
    protein = data.protein[:, pos]
    samples = {
        scale: M._with_sample_axis(
            model.posterior_predictive_sample(
                data, gene_list=[], n_samples=3, seed=0, protein_scale=scale
            )["protein"]
        )
        for scale in (EFFICIENCY_FREE, MEASURED)
    }
    means = M.protein_means_table(protein, samples, list(model.protein_names))
    gpos = data.var_names.get_indexer(model.var_names)
    raw = {"rna": data.rna[:, gpos], "protein": protein}
    t = time.perf_counter()
    calibration = M.calibration_table(model, data, raw, scales=[MEASURED, EFFICIENCY_FREE])
    t_cal = time.perf_counter() - t
    labels = np.asarray(pd.Series(np.arange(data.n_cells) % 5).astype(str))
    t = time.perf_counter()
    M.compute_metrics(model, data, labels, protein_scale=EFFICIENCY_FREE, calibration_samples=0)
    t_before = time.perf_counter() - t
    t = time.perf_counter()
    M.compute_metrics(model, data, labels)
    t_after = time.perf_counter() - t
    return {
        "name": name,
        "cells": data.n_cells,
        "efficiency_range": [float(eff.to_numpy().min()), float(eff.to_numpy().max())],
        "protein_means": means.round(4).reset_index().to_dict(orient="records"),
        "calibration": calibration.round(4).reset_index().to_dict(orient="records"),
        "seconds_calibration": round(t_cal, 2),
        "seconds_metrics_before": round(t_before, 2),
        "seconds_metrics_after": round(t_after, 2),
    }


def print_result(r: dict) -> None:
    lo, hi = r["efficiency_range"]
    print(f"\n### {r['name']}: {r['cells']:,} cells, learned efficiency {lo:.2f}-{hi:.2f}\n")
    print("| protein | observed mean | sampled, efficiency-free (before) | ratio | "
          "sampled, measured (after) | ratio |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in r["protein_means"]:
        print(
            f"| {row['protein']} | {row['observed mean']:.1f} | "
            f"{row['sampled mean (efficiency-free)']:.1f} | "
            f"{row['ratio (efficiency-free)']:.2f} | "
            f"{row['sampled mean (measured)']:.1f} | {row['ratio (measured)']:.2f} |"
        )
    print("\n| calibration | cells | 95% | 85% | 75% | 65% | calibration error |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in r["calibration"]:
        print(
            f"| {row['modality']} | {row['cells']:,} | {row['95%']:.3f} | {row['85%']:.3f} | "
            f"{row['75%']:.3f} | {row['65%']:.3f} | {row['calibration error']:.3f} |"
        )
    print(
        f"\ncalibration {r['seconds_calibration']:.1f} s; model-card metrics "
        f"{r['seconds_metrics_before']:.1f} s before (scvi-tools' tables), "
        f"{r['seconds_metrics_after']:.1f} s after (both scales + calibration)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    results = []
    for make in (embedded, scvi_30_epochs):
        made = make()
        if made is None:
            print(f"\n(skipped {make.__name__}: ../shared is absent)")
            continue
        results.append(measure(*made))
        print_result(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
