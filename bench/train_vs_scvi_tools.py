"""Train our TotalVI and scvi-tools' TOTALVI with the same settings on the PBMC data.

Needs the ``parity`` extra (``pip install -e .[parity]``). Ours trains with its default
precision (``"auto"``: bfloat16 matmuls on float32 weights on CPUs with native bfloat16, see
``model.config.TrainConfig.precision``) and, for reference, once more forced to float32
(``--no-fp32`` skips that run); scvi-tools trains in float32, its default. Prints seconds per
epoch of each (the whole ``train`` call over the epochs, which includes one-off setup such as
imports and moving the data, and the median epoch, training plus its validation pass, timed
the same way on both sides: the steady state, less sensitive to a noisy neighbour), final
validation ELBO of each, latent agreement (kNN overlap), peak memory, and the max abs
difference of latent means when the scvi-tools model is loaded into ours. Each side trains
in its own process, so peak memory is per side.

``--simulate N`` trains both on the seed's layout simulated at ``N`` cells instead
(:func:`model.simulate.simulate_cite_seq`: 17 batches, 4,000 genes, 111 proteins, panels
with missing proteins), with its own batches.

Usage: ``python bench/train_vs_scvi_tools.py [--epochs 30] [--data PATH | --simulate 72042]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "h5ad" / "pbmc10k_6855x4000_14prot.h5ad"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def knn_overlap(a: np.ndarray, b: np.ndarray, k: int = 15) -> float:
    """Mean fraction of each cell's k nearest neighbours shared between two embeddings."""
    from sklearn.neighbors import NearestNeighbors

    na = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=k + 1).fit(b).kneighbors(b, return_distance=False)[:, 1:]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)]))


def pseudo_batched(path: Path, *, own_batches: bool = False):
    """The file's cells in two pseudo-batches (alternate cells), or as given when
    ``own_batches`` (its ``obs["batch"]``)."""
    import anndata as ad

    adata = ad.read_h5ad(path)
    if own_batches:
        return adata
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "b0", "b1")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    return adata


def run_scvi(adata, epochs: int, seed: int, out: Path) -> dict:
    import scvi
    import torch

    torch.set_num_threads(torch.get_num_threads())
    scvi.settings.seed = seed
    scvi.settings.dl_num_workers = 0
    a = adata.copy()
    scvi.model.TOTALVI.setup_anndata(
        a, batch_key="batch", protein_expression_obsm_key="protein_expression"
    )
    model = scvi.model.TOTALVI(a)
    from lightning.pytorch.callbacks import Callback

    starts: list[float] = []

    class EpochClock(Callback):
        """Wall time at each epoch start and at the end: epoch k (training and its
        validation) is ``starts[k+1] - starts[k]``, as our history's ``seconds``."""

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            starts.append(time.perf_counter())

    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs, accelerator="cpu", early_stopping=False, callbacks=[EpochClock()]
    )
    seconds = time.perf_counter() - t0
    model.save(out, overwrite=True)
    latent = model.get_latent_representation()
    hist = model.history["elbo_validation"].iloc[:, 0].to_numpy()
    return {
        "seconds": seconds,
        "sec_per_epoch": seconds / epochs,
        "epoch_seconds": np.diff(starts).tolist(),
        "n_validations": len(hist),
        "elbo_validation": float(hist[-1]),
        "latent": latent,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_ours(adata, epochs: int, seed: int, precision: str = "auto") -> dict:
    from model import TotalVI
    from model.data import from_anndata

    data = from_anndata(adata, batch_key="batch", source="pbmc10k (pseudo-batches)")
    model = TotalVI(data, seed=seed)
    t0 = time.perf_counter()
    result = model.train(max_epochs=epochs, seed=seed, early_stopping=False, precision=precision)
    seconds = time.perf_counter() - t0
    return {
        "precision": result.precision,
        "seconds": seconds,
        "sec_per_epoch": seconds / epochs,
        "epoch_seconds": [float(v) for v in result.history["seconds"]],
        "elbo_validation": float(result.history["elbo_validation"].iloc[-1]),
        "latent": model.get_latent_representation(),
        "peak_rss_mb": _peak_rss_mb(),
        "data": data,
    }


def simulated_file(n_cells: int, folder: Path) -> Path:
    """The seed's layout simulated at ``n_cells`` cells, written as an h5ad both sides read."""
    from model.simulate import simulate_cite_seq

    adata = simulate_cite_seq(n_cells=n_cells, seed=0)
    del adata.uns["simulation"]  # parameters and masks: not data either side reads
    path = folder / f"simulated_{n_cells}.h5ad"
    adata.write_h5ad(path)
    return path


def _side(
    side: str, data: Path, epochs: int, seed: int, workdir: Path, *, own_batches: bool
) -> int:
    """One side in its own process, so its peak RSS is its own; results go to ``workdir``."""
    adata = pseudo_batched(data, own_batches=own_batches)
    if side in ("ours", "ours32"):
        res = run_ours(adata, epochs, seed, "auto" if side == "ours" else "32")
        res.pop("data")
    else:
        res = run_scvi(adata, epochs, seed, workdir / "scvi_model")
    np.save(workdir / f"{side}_latent.npy", res.pop("latent"))
    (workdir / f"{side}.json").write_text(json.dumps(res))
    return 0


def _run_side(side: str, args: argparse.Namespace, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--workdir", str(workdir)]
    cmd += ["--epochs", str(args.epochs), "--seed", str(args.seed), "--data", str(args.data)]
    cmd += ["--own-batches"] if args.own_batches else []
    subprocess.run(cmd, check=True)
    res = json.loads((workdir / f"{side}.json").read_text())
    res["latent"] = np.load(workdir / f"{side}_latent.npy")
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--no-fp32",
        action="store_true",
        help="skip the extra run of ours forced to float32 (shown for reference)",
    )
    parser.add_argument(
        "--simulate", type=int, default=None, help="simulate the seed's layout at N cells"
    )
    parser.add_argument("--own-batches", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("ours", "ours32", "scvi"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return _side(
            args.side, args.data, args.epochs, args.seed, args.workdir,
            own_batches=args.own_batches,
        )  # fmt: skip

    from model import TotalVI
    from model.data import from_anndata

    with tempfile.TemporaryDirectory() as tmp:
        if args.simulate:
            args.data, args.own_batches = simulated_file(args.simulate, Path(tmp)), True
        adata = pseudo_batched(args.data, own_batches=args.own_batches)
        ours = _run_side("ours", args, Path(tmp))
        ours32 = None if args.no_fp32 else _run_side("ours32", args, Path(tmp))
        theirs = _run_side("scvi", args, Path(tmp))
        data = from_anndata(adata, batch_key="batch", source=args.data.name)
        loaded = TotalVI.load(Path(tmp) / "scvi_model", data=data)
    # scvi-tools' own latent means of its trained model vs ours computed from its weights
    max_diff = float(np.abs(loaded.get_latent_representation() - theirs["latent"]).max())
    overlap = knn_overlap(ours["latent"], theirs["latent"])
    sides = [(f"ours ({ours['precision']})", ours)]
    if ours32 is not None:
        sides.append(("ours (32)", ours32))
    sides.append(("scvi-tools (32)", theirs))
    for _, side in sides:
        side["median_epoch"] = float(np.median(side["epoch_seconds"]))
    rows = [
        ("seconds / epoch (whole call)", "sec_per_epoch", ".3f"),
        ("median epoch (train + val)", "median_epoch", ".3f"),
        ("final validation ELBO", "elbo_validation", ".3f"),
        ("peak RSS (MB)", "peak_rss_mb", ".1f"),
    ]
    batches = adata.obs["batch"].nunique()
    print(f"data: {args.data.name}, {adata.n_obs} cells, {batches} batches, {args.epochs} epochs")
    print(f"{'metric':<32}" + "".join(f"{name:>18}" for name, _ in sides))
    for label, key, fmt in rows:
        print(f"{label:<32}" + "".join(f"{side[key]:>18{fmt}}" for _, side in sides))
    ratio = ours["sec_per_epoch"] / theirs["sec_per_epoch"]
    ratio_median = ours["median_epoch"] / theirs["median_epoch"]
    print(f"{'ratio ours/scvi (whole call)':<32}{ratio:>18.3f}")
    print(f"{'ratio ours/scvi (median epoch)':<32}{ratio_median:>18.3f}")
    if ours32 is not None:
        ratio32 = ours32["median_epoch"] / theirs["median_epoch"]
        print(f"{'  ours (32) / scvi (median)':<32}{ratio32:>18.3f}")
    print(f"{'latent kNN overlap (k=15)':<32}{overlap:>18.3f}")
    if ours32 is not None:
        o32 = knn_overlap(ours32["latent"], theirs["latent"])
        self32 = knn_overlap(ours["latent"], ours32["latent"])
        print(f"{'  ours (32) vs scvi':<32}{o32:>18.3f}")
        print(f"{'  ours vs ours (32)':<32}{self32:>18.3f}")
    print(f"{'max |latent diff| loaded':<32}{max_diff:>18.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "ours": {k: v for k, v in ours.items() if k != "latent"},
            "scvi": {k: v for k, v in theirs.items() if k != "latent"},
            "ratio": ratio,
            "ratio_median_epoch": ratio_median,
            "knn_overlap": overlap,
            "max_latent_diff": max_diff,
        }
        if ours32 is not None:
            payload["ours_fp32"] = {k: v for k, v in ours32.items() if k != "latent"}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
