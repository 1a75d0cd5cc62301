"""scArches query mapping on the full PBMC data: protein prediction and label transfer.

A reference TotalVI is trained on 80% of the cells (all 4000 genes, 14 proteins); the other
20% are the query, mapped (:meth:`TotalVI.map_query`) with all proteins, with every second
protein hidden, and with none (RNA only). Per scenario the table gives:

- ``median_r``: median over the hidden proteins (all 14 for ``all``, where they are also the
  input) of the Pearson r between log1p(predicted) and log1p(measured) protein counts;
  prediction = ``get_normalized_expression(transform_batch=<reference batch>,
  include_protein_background=True)``.
- ``map_s``: seconds of ``map_query`` (alignment, surgery and query training).
- ``agree_prot``: kNN-transferred labels (k=15, mapped latent) vs protein-defined populations
  of the query cells (CD14 monocytes / CD3 T / CD19 B from their measured proteins).
- ``agree_ref``: the same labels vs a reference-only proxy: labels transferred by kNN in the
  reference model's latent with the query cells embedded as reference cells (all proteins).

Two baselines without mapping: the reference model on the query cells with their proteins
(``reference model``), and with the proteins zeroed (``no mapping, RNA only``).

Usage: ``python bench/query_mapping.py [--epochs 80] [--query-epochs 100] [--n-hidden 128]``;
results also go to ``bench/out/query_mapping.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/dashboard.py would shadow the ``dashboard`` package: import from the repository root
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "h5ad" / "pbmc10k_6855x4000_14prot.h5ad"


def main() -> None:
    """Train the reference, map the three query scenarios and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=80, help="reference training epochs")
    p.add_argument("--query-epochs", type=int, default=100)
    p.add_argument("--n-hidden", type=int, default=128)
    p.add_argument("--n-latent", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args()

    import anndata as ad
    import torch

    from dashboard.backend.testing import protein_populations
    from model import TotalVI, transfer_labels
    from model.data import from_anndata
    from model.mapping import median_protein_r, protein_scenarios

    torch.manual_seed(args.seed)
    data = from_anndata(ad.read_h5ad(args.data), batch_key="batch", source=str(args.data))
    perm = np.random.default_rng(args.seed).permutation(data.n_cells)
    n_ref = int(0.8 * data.n_cells)
    ref, query = data.subset(np.sort(perm[:n_ref])), data.subset(np.sort(perm[n_ref:]))
    print(
        f"data: {data.n_cells} cells x {data.n_genes} genes x {data.n_proteins} proteins; "
        f"reference {ref.n_cells}, query {query.n_cells}; torch threads "
        f"{torch.get_num_threads()}"
    )

    t0 = time.perf_counter()
    model = TotalVI(ref, n_hidden=args.n_hidden, n_latent=args.n_latent, seed=args.seed)
    model.train(max_epochs=args.epochs, seed=args.seed, device="cpu", early_stopping=False)
    t_ref = time.perf_counter() - t0
    print(f"reference: {args.epochs} epochs in {t_ref:.0f} s")
    ref_batch = ref.batch_categories[0]
    ref_latent = model.get_latent_representation(ref)
    ref_labels = protein_populations(ref.protein, ref.protein_names)
    truth = protein_populations(query.protein, query.protein_names)
    core = np.isin(truth, ["mono", "T", "B"])
    proxy, _ = transfer_labels(ref_latent, ref_labels, model.get_latent_representation(query))

    rows = []
    _, base = model.get_normalized_expression(
        query, include_protein_background=True, return_numpy=True
    )
    zeroed = dataclasses.replace(query, protein=np.zeros_like(query.protein))  # same batch
    _, base0 = model.get_normalized_expression(
        zeroed, include_protein_background=True, return_numpy=True
    )
    rows.append({"scenario": "reference model", "median_r": median_protein_r(base, query.protein)})
    rows.append(
        {"scenario": "no mapping, RNA only", "median_r": median_protein_r(base0, query.protein)}
    )
    for name, (q, hidden) in protein_scenarios(query).items():
        t0 = time.perf_counter()
        mq = model.map_query(q, max_epochs=args.query_epochs, device="cpu", seed=args.seed)
        t_map = time.perf_counter() - t0
        _, pro = mq.get_normalized_expression(
            transform_batch=ref_batch, include_protein_background=True, return_numpy=True
        )
        labels, conf = transfer_labels(ref_latent, ref_labels, mq.get_latent_representation())
        rows.append(
            {
                "scenario": name,
                "median_r": median_protein_r(pro[:, hidden], query.protein[:, hidden]),
                "n_hidden_prot": len(hidden) if name != "all" else 0,
                "map_s": t_map,
                "epochs": mq.query_info.epochs,
                "agree_prot": float(np.mean(labels[core] == truth[core])),
                "agree_ref": float(np.mean(labels == proxy)),
                "mean_conf": float(conf.mean()),
            }
        )
        print(f"  {name}: done in {t_map:.0f} s")
    table = pd.DataFrame(rows).set_index("scenario")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(table.to_string(na_rep=""))
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "reference_s": t_ref}
    payload["rows"] = json.loads(table.reset_index().to_json(orient="records"))
    (args.out / "query_mapping.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
