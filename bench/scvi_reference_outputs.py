"""Write what scvi-tools 1.4.2 samples and computes with the test checkpoints (parity fixtures).

Run in a venv with the ``parity`` extra (``.venv-parity/bin/python
bench/scvi_reference_outputs.py``); it writes, next to each checkpoint in ``tests/data/``:

* ``scvi_tools_1.4.2_pbmc300x1000/expected_sampling.npz``: with ``torch.manual_seed(0)``
  before each call, ``posterior_predictive_sample(n_samples=2, batch_size=64)`` (``pp_rna``,
  ``pp_protein``, int32 counts), ``get_normalized_expression(n_samples=1, batch_size=64)``
  (``denoised_rna`` of the first 50 genes, ``denoised_protein``) and with
  ``transform_batch="b1", n_samples=3, include_protein_background=True``
  (``denoised_protein_b1_bg``). scvi-tools leaves the protein capture efficiency out of all
  of them (its issue #4022); ours reproduce them with ``protein_scale="efficiency-free"``.
* ``scvi_tools_1.4.2_mudata_seedlike_800/expected_card_metrics.json``: the model-card
  markdown (``cell_wise_cv``, ``gene_wise_cv``, ``diff_exp``, per modality, as
  ``create_criticism_report`` writes it) from ``PosteriorPredictiveCheck(n_samples=3)``
  seeded 0 for each modality, with the raw counts the model was trained on (RNA layer
  ``counts``, where ``create_criticism_report`` itself would read the log-normalised ``X``;
  densified, as 1.4.2's integer check fails on sparse counts), DE groups ``cell_type``; and
  ``calibration_error()`` per modality (the model named ``"model1"``, the only name it works
  with in 1.4.2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TESTS_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def pbmc_sampling() -> None:
    """Posterior predictive samples and denoised values of the PBMC 300 x 1000 model."""
    import anndata as ad
    import scvi
    import torch

    folder = TESTS_DATA / "scvi_tools_1.4.2_pbmc300x1000"
    adata = ad.read_h5ad(folder / "adata.h5ad")
    model = scvi.model.TOTALVI.load(str(folder), adata=adata)
    out: dict[str, np.ndarray] = {}
    torch.manual_seed(0)
    pp = model.posterior_predictive_sample(n_samples=2, batch_size=64)
    out["pp_rna"] = np.asarray(pp["rna"]).astype(np.int32)
    out["pp_protein"] = np.asarray(pp["protein"]).astype(np.int32)
    torch.manual_seed(0)
    rna, pro = model.get_normalized_expression(
        n_samples=1, gene_list=list(adata.var_names[:50]), return_numpy=True, batch_size=64
    )
    out["denoised_rna"], out["denoised_protein"] = rna, pro
    torch.manual_seed(0)
    _, pro_b1 = model.get_normalized_expression(
        n_samples=3,
        transform_batch="b1",
        include_protein_background=True,
        return_numpy=True,
        batch_size=64,
    )
    out["denoised_protein_b1_bg"] = pro_b1
    np.savez_compressed(folder / "expected_sampling.npz", **out)
    print({k: v.shape for k, v in out.items()})


def seedlike_card_metrics() -> None:
    """Model-card markdown and calibration error of the seed-like MuData model."""
    import mudata as md
    import scvi
    import torch
    from scvi.criticism import PosteriorPredictiveCheck
    from scvi.criticism._create_criticism_report import _cv_metrics, _dataframe_to_markdown
    from sparse import GCXS

    folder = TESTS_DATA / "scvi_tools_1.4.2_mudata_seedlike_800"
    mdata = md.read_h5mu(folder / "mdata.h5mu")
    for mod, layer in (("rna", "counts"), ("protein", None)):  # 1.4.2's PPC fails on sparse
        x = mdata[mod].layers[layer] if layer else mdata[mod].X
        dense = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        if layer:
            mdata[mod].layers[layer] = dense
        else:
            mdata[mod].X = dense
    model = scvi.model.TOTALVI.load(str(folder), adata=mdata)
    result: dict[str, dict[str, object]] = {}
    for mod, layer in (("rna", "counts"), ("protein", None)):
        torch.manual_seed(0)
        ppc = PosteriorPredictiveCheck(
            mdata, {"model": model}, count_layer_key=layer, n_samples=3, modality=mod
        )
        ppc.coefficient_of_variation("features")
        cell = _cv_metrics(ppc, model, cell_wise=True)
        ppc.coefficient_of_variation("cells")
        gene = _cv_metrics(ppc, model, cell_wise=False)
        # 1.4.2's DE metric fails on dense samples (np.log1p(out=) on an xarray): give it
        # the same samples as a sparse array, the branch it handles
        samples = ppc.samples_dataset["model"]
        ppc.samples_dataset["model"] = samples.copy(data=GCXS.from_numpy(np.asarray(samples)))
        ppc.differential_expression(de_groupby="cell_type", p_val_thresh=0.2)
        summary = ppc.metrics["diff_exp"]["summary"].set_index("group")
        summary = summary.drop(columns=["model"]).sort_values(by="n_cells", ascending=False)
        torch.manual_seed(0)
        cal = PosteriorPredictiveCheck(
            mdata, {"model1": model}, count_layer_key=layer, n_samples=3, modality=mod
        )
        cal.calibration_error()
        result[mod] = {
            "cell_wise_cv": cell,
            "gene_wise_cv": gene,
            "diff_exp": _dataframe_to_markdown(summary),
            "calibration_error": float(cal.metrics["calibration"]["model1"]["features"]),
        }
    path = folder / "expected_card_metrics.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({m: r["calibration_error"] for m, r in result.items()}))


if __name__ == "__main__":
    pbmc_sampling()
    seedlike_card_metrics()
