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
* ``expected_correlation_de.npz`` (PBMC 300 x 1000): the feature correlation matrix
  (own batch and both batches) and ``differential_expression`` with and without
  ``batch_correction``; ``expected_batch_corrected_de.npz`` (seed-like): the same DE over
  17 batches.
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


#: Features of the correlation block kept (the first genes, then every protein).
CORRELATION_GENES = 30


def pbmc_groups(adata) -> tuple[np.ndarray, np.ndarray]:
    """Two groups of the PBMC 300 x 1000 cells across both batches, for the DE references:
    the cells above the median CD14 protein count vs the rest."""
    cd14 = np.asarray(adata.obsm["protein_expression"]["CD14_TotalSeqB"], dtype=float)
    high = cd14 > np.median(cd14)
    return np.flatnonzero(high), np.flatnonzero(~high)


def pbmc_correlation_and_batch_corrected_de() -> None:
    """``get_feature_correlation_matrix`` (Spearman, 10 samples, each cell's own batch and
    averaged over both batches) and ``differential_expression`` with and without
    ``batch_correction`` of the PBMC 300 x 1000 model (written to
    ``expected_correlation_de.npz``)."""
    import anndata as ad
    import scvi
    import torch

    folder = TESTS_DATA / "scvi_tools_1.4.2_pbmc300x1000"
    adata = ad.read_h5ad(folder / "adata.h5ad")
    model = scvi.model.TOTALVI.load(str(folder), adata=adata)
    keep = np.r_[
        np.arange(CORRELATION_GENES), adata.n_vars + np.arange(model.summary_stats["n_proteins"])
    ]
    out: dict[str, np.ndarray] = {}
    for name, batch in (("corr_own", None), ("corr_both", ["b0", "b1"])):
        torch.manual_seed(0)
        corr = model.get_feature_correlation_matrix(
            n_samples=10, batch_size=64, transform_batch=batch, correlation_type="spearman"
        )
        out[name] = corr.to_numpy()[np.ix_(keep, keep)].astype(np.float32)
    out["corr_features"] = np.asarray(corr.index[keep], dtype=str)
    idx1, idx2 = pbmc_groups(adata)
    for name, corrected in (("de", False), ("de_corrected", True)):
        scvi.settings.seed = 0
        de = model.differential_expression(
            idx1=idx1, idx2=idx2, mode="change", delta=0.25, batch_correction=corrected
        )
        out[f"{name}_features"] = np.asarray(de.index, dtype=str)
        for col in ("lfc_mean", "lfc_std", "proba_de", "bayes_factor"):
            out[f"{name}_{col}"] = de[col].to_numpy(np.float32)
    np.savez_compressed(folder / "expected_correlation_de.npz", **out)
    print({k: v.shape for k, v in out.items()})


def seedlike_batch_corrected_de() -> None:
    """``differential_expression`` of the seed-like model's first cell type vs the rest,
    with and without ``batch_correction`` (17 batches, a real batch effect), written to
    ``expected_batch_corrected_de.npz`` beside it."""
    import mudata as md
    import scvi

    folder = TESTS_DATA / "scvi_tools_1.4.2_mudata_seedlike_800"
    mdata = md.read_h5mu(folder / "mdata.h5mu")
    model = scvi.model.TOTALVI.load(str(folder), adata=mdata)
    types = mdata["rna"].obs["cell_type"].astype(str)
    group = sorted(set(types))[0]
    idx1 = np.flatnonzero(types.to_numpy() == group)
    out: dict[str, np.ndarray] = {"group": np.asarray(group), "idx1": idx1}
    for name, corrected in (("de", False), ("de_corrected", True)):
        scvi.settings.seed = 0
        de = model.differential_expression(
            idx1=idx1, mode="change", delta=0.25, batch_correction=corrected
        )
        out[f"{name}_features"] = np.asarray(de.index, dtype=str)
        for col in ("lfc_mean", "lfc_std", "proba_de", "bayes_factor", "scale1", "scale2"):
            out[f"{name}_{col}"] = de[col].to_numpy(np.float32)
    np.savez_compressed(folder / "expected_batch_corrected_de.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    pbmc_sampling()
    seedlike_card_metrics()
    pbmc_correlation_and_batch_corrected_de()
    seedlike_batch_corrected_de()
