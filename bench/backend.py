"""Benchmark the analysis backend on the full PBMC data, and our DE against scvi-tools'.

Part 1 (our default checkpoint, or one trained here): seconds for latent, UMAP, clusters and
cell types, denoised protein, all-types DE (RNA + protein) and model-card metrics, first on a
cold cache and then on a warm one (a second service on the same cache folder, as after a
restart).

Part 2 (the same scvi-tools 1.4.2 checkpoint and data in both): our all-types
``de_one_vs_rest`` versus scvi-tools' ``TOTALVI.differential_expression(groupby=...)`` with the
same cell-type labels, run in a subprocess with the parity venv. Also reports how well the two
tables agree (lfc_mean correlation, proba_de difference, overlap of the top markers).

Usage: ``python bench/backend.py [--model DIR] [--skip-scvi] [--epochs N]``; results go to
``bench/out/backend.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from _bench import DEFAULT_MODEL, DEFAULT_OUT, ROOT, write_results

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "h5ad" / "pbmc10k_6855x4000_14prot.h5ad"
SCVI_CKPT = ROOT.parent / "shared" / "reference" / "checkpoints" / "scvi_tools_1.4.2_pbmc10k"
PARITY_PYTHON = ROOT / ".venv-parity" / "bin" / "python"
#: The queries the pages need, in dependency order: (name in the results, service method).
STEPS = (
    ("latent", "latent"),
    ("umap", "umap"),
    ("clusters + cell types", "cell_types"),
    ("denoised protein", "denoised_protein"),
    ("foreground probability", "foreground_probability"),
    ("DE all types (RNA + protein)", "de_one_vs_rest"),
    ("metrics (3 PPC samples)", "metrics"),
)

SCVI_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import anndata as ad, numpy as np, pandas as pd
    import scvi, torch
    data, ckpt, labels, out_csv, out_json = sys.argv[1:6]
    torch.set_num_threads(torch.get_num_threads())
    scvi.settings.seed = 0
    a = ad.read_h5ad(data)
    a.obs["batch"] = pd.Categorical(np.where(np.arange(a.n_obs) % 2 == 0, "b0", "b1"))
    a.obs["cell_type"] = pd.Categorical(pd.read_csv(labels)["cell_type"].astype(str).to_numpy())
    scvi.model.TOTALVI.setup_anndata(
        a, batch_key="batch", protein_expression_obsm_key="protein_expression"
    )
    model = scvi.model.TOTALVI.load(ckpt, adata=a, accelerator="cpu")
    t0 = time.perf_counter()
    de = model.differential_expression(groupby="cell_type", silent=True)
    seconds = time.perf_counter() - t0
    de.to_csv(out_csv, index_label="feature")
    json.dump({"seconds": seconds, "rows": len(de), "scvi": scvi.__version__}, open(out_json, "w"))
    """
)


def timed(fn: Any) -> tuple[float, Any]:
    """Seconds and result of ``fn()``."""
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def warm_up_numba() -> float:
    """Compile umap-learn's numba kernels on a tiny input (so UMAP timings exclude JIT)."""
    from dashboard.backend.embedding import compute_umap

    rng = np.random.default_rng(0)
    return timed(lambda: compute_umap(rng.normal(size=(300, 10)), seed=0))[0]


def pipeline_timings(service: Any, pair: Any) -> dict[str, float]:
    """Seconds of each query the pages need, in dependency order."""
    from dashboard.backend.preparation import service_call

    return {name: timed(service_call(service, pair, method))[0] for name, method in STEPS}


def part1(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings

    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    svc = AnalysisService(Settings(cache_dir=cache))
    dataset = svc.open_dataset(args.data, batch_key="batch")
    if (Path(args.model) / "model.pt").is_file():
        pair = svc.load_model(dataset, args.model)
        source = str(args.model)
    else:
        print(f"no checkpoint in {args.model}: training {args.epochs} epochs", flush=True)
        pair = svc.train(dataset, out_dir=out / "model", max_epochs=args.epochs)
        source = f"trained here ({args.epochs} epochs)"
    jit = warm_up_numba()
    cold = pipeline_timings(svc, pair)
    n_types = len(svc.cell_types(pair).cat.categories)
    svc.close()
    svc2 = AnalysisService(Settings(cache_dir=cache))  # a restart: same cache folder
    pair2 = svc2.load_model(svc2.open_dataset(args.data, batch_key="batch"), args.model)
    warm = pipeline_timings(svc2, pair2)
    computed_warm = svc2.cache.stats.computed
    volume = svc2.cache.volume()
    svc2.close()
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "model": source,
        "n_cell_types": n_types,
        "numba_jit_warmup_s": jit,
        "cold_s": cold,
        "warm_s": warm,
        "warm_computed": computed_warm,
        "cache_mb": volume / 1e6,
    }


def part2(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import anndata as ad

    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings
    from model.data import from_anndata

    adata = ad.read_h5ad(args.data)
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2 == 0, "b0", "b1"))
    data = from_anndata(adata, batch_key="batch", source="pbmc10k (pseudo-batches)")
    cache = Path(tempfile.mkdtemp(prefix="bench-de-"))
    svc = AnalysisService(Settings(cache_dir=cache))
    pair = svc.load_model(svc.add_dataset(data), SCVI_CKPT)
    types = svc.cell_types(pair)
    labels_csv = out / "labels.csv"
    pd.DataFrame({"cell_type": types.astype(str).to_numpy()}).to_csv(labels_csv, index=False)
    ours_s, ours = timed(lambda: svc.de_one_vs_rest(pair))
    svc.close()
    shutil.rmtree(cache, ignore_errors=True)
    result: dict[str, Any] = {
        "n_cell_types": len(types.cat.categories),
        "ours_s": ours_s,
        "rows": len(ours),
    }
    if args.skip_scvi or not PARITY_PYTHON.is_file():
        return result
    script = out / "scvi_de.py"
    script.write_text(SCVI_SCRIPT)
    scvi_csv, scvi_json = out / "scvi_de.csv", out / "scvi_de.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            str(PARITY_PYTHON),
            str(script),
            str(args.data),
            str(SCVI_CKPT),
            str(labels_csv),
            str(scvi_csv),
            str(scvi_json),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        result["scvi_error"] = proc.stderr[-2000:]
        return result
    scvi_meta = json.loads(scvi_json.read_text())
    result["scvi_s"] = scvi_meta["seconds"]
    result["scvi_process_s"] = time.perf_counter() - t0
    result["speedup"] = scvi_meta["seconds"] / ours_s
    theirs = pd.read_csv(scvi_csv, index_col=0)
    result.update(agreement(ours, theirs))
    return result


def agreement(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, float]:
    """How close two all-types DE tables are (joined on group and feature)."""
    a = ours.reset_index(names="feature").set_index(["group1", "feature"])
    b = theirs.reset_index().set_index(["group1", "feature"])
    b.index = b.index.set_levels(b.index.levels[0].astype(str), level=0)
    joined = a.join(b, how="inner", lsuffix="_ours", rsuffix="_scvi")
    overlaps = []
    for _, g in joined.groupby(level=0):
        top_a = set(g["lfc_mean_ours"].nlargest(50).index)
        top_b = set(g["lfc_mean_scvi"].nlargest(50).index)
        overlaps.append(len(top_a & top_b) / 50)
    return {
        "joined_rows": len(joined),
        "lfc_mean_pearson": float(
            np.corrcoef(joined["lfc_mean_ours"], joined["lfc_mean_scvi"])[0, 1]
        ),
        "proba_de_mean_abs_diff": float(
            (joined["proba_de_ours"] - joined["proba_de_scvi"]).abs().mean()
        ),
        "is_de_agreement": float(
            (joined["is_de_fdr_0.05_ours"] == joined["is_de_fdr_0.05_scvi"]).mean()
        ),
        "top50_up_overlap": float(np.mean(overlaps)),
        "raw_mean1_max_abs_diff": float(
            (joined["raw_mean1_ours"] - joined["raw_mean1_scvi"]).abs().max()
        ),
    }


def print_report(res: dict[str, Any]) -> None:
    p1 = res.get("part1")
    if p1:
        print(
            f"\nPart 1: full PBMC (6855 cells x 4000 genes x 14 proteins), model {p1['model']}, "
            f"{p1['n_cell_types']} cell types; umap-learn JIT warm-up "
            f"{p1['numba_jit_warmup_s']:.1f}s"
        )
        print("| step | cold cache (s) | warm cache (s) |\n| --- | ---: | ---: |")
        for k in p1["cold_s"]:
            print(f"| {k} | {p1['cold_s'][k]:.2f} | {p1['warm_s'][k]:.3f} |")
        print(f"| total | {sum(p1['cold_s'].values()):.2f} | {sum(p1['warm_s'].values()):.3f} |")
        print(
            f"(warm start computed {p1['warm_computed']} results; cache {p1['cache_mb']:.0f} MB;"
            " denoised protein is computed inside cell types, which name clusters with it)"
        )
    p2 = res.get("part2")
    if p2:
        print(
            f"\nPart 2: all-types DE, scvi-tools 1.4.2 checkpoint, {p2['n_cell_types']} cell types"
        )
        print("| implementation | seconds |\n| --- | ---: |")
        print(f"| ours (DifferentialEngine) | {p2['ours_s']:.1f} |")
        if "scvi_s" in p2:
            print(f"| scvi-tools differential_expression | {p2['scvi_s']:.1f} |")
            print(f"speed-up: {p2['speedup']:.1f}x")
            print(
                f"agreement: lfc_mean Pearson {p2['lfc_mean_pearson']:.3f}, mean |d proba_de| "
                f"{p2['proba_de_mean_abs_diff']:.3f}, "
                f"is_de agreement {p2['is_de_agreement']:.3f}, "
                f"top-50 overlap {p2['top50_up_overlap']:.2f}, raw_mean max |d| "
                f"{p2['raw_mean1_max_abs_diff']:.2e}"
            )
        elif "scvi_error" in p2:
            print("scvi-tools run failed:\n" + p2["scvi_error"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--skip-scvi", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    res: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if not args.skip_pipeline:
        res["part1"] = part1(args, args.out)
    res["part2"] = part2(args, args.out)
    write_results(res, args.out / "backend.json")
    print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
