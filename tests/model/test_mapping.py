"""scArches query mapping (model/mapping.py) on the real PBMC data and real scvi-tools checkpoints.

One small reference (2000 cells x ~1000 genes, n_hidden 64, 40 epochs) is trained per module on
a PBMC slice; the other 500 cells of the slice are the query, mapped with all, half or none of
their proteins. Measured on 2 CPU cores: median per-protein Pearson r (log1p) of the predicted
vs the hidden measured proteins ~0.71 (all), ~0.81 (half: the hidden half), ~0.67 (none); the
reference model itself, given the query's proteins, reaches ~0.70. kNN labels transferred to
the RNA-only query agree with protein-defined populations (CD14 mono / CD3 T / CD19 B) for ~99%
of those cells.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from dashboard.backend.testing import pbmc_slice, protein_populations
from model import CheckpointError, CiteSeqDataError, TotalVI, TrainingCancelled
from model.data import CiteSeqData, from_anndata
from model.errors import QueryDataError, QueryGeneMismatchError
from model.mapping import (
    QUERY_SUFFIX,
    align_query,
    median_protein_r,
    protein_scenarios,
    transfer_labels,
)

pytestmark = pytest.mark.slow

EPOCHS_REF, EPOCHS_QUERY = 40, 40


@pytest.fixture(scope="module")
def setup() -> dict:
    torch.manual_seed(0)
    data = pbmc_slice(n_cells=2500, n_genes=1000, seed=0)
    perm = np.random.default_rng(1).permutation(data.n_cells)
    ref = data.subset(np.sort(perm[:2000]))
    query = data.subset(np.sort(perm[2000:]))
    model = TotalVI(ref, n_hidden=64, n_latent=10, seed=0)
    model.train(max_epochs=EPOCHS_REF, seed=0, device="cpu", early_stopping=False)
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    latent = model.get_latent_representation(ref)
    mapped = {
        name: (model.map_query(q, max_epochs=EPOCHS_QUERY, device="cpu"), hidden)
        for name, (q, hidden) in protein_scenarios(query).items()
    }
    return {
        "ref": ref,
        "query": query,
        "model": model,
        "state": state,
        "latent": latent,
        "mapped": mapped,
    }


# ----------------------------------------------------------------- mapping mechanics
@pytest.mark.parametrize("scenario", ["all", "half", "none"])
def test_query_batches_and_mask(setup, scenario) -> None:
    mq, hidden = setup["mapped"][scenario]
    assert mq.batch_categories == ["pbmc10k", "pbmc10k" + QUERY_SUFFIX]
    assert mq.query_info.renamed_batches == {"pbmc10k": "pbmc10k" + QUERY_SUFFIX}
    assert mq.config.n_batch == 2 and mq.data.n_cells == setup["query"].n_cells
    assert set(mq.data.batch.tolist()) == {1}
    mask = mq.protein_batch_mask
    if scenario == "all":
        assert mask is None
    else:
        assert mask[0].all() and not mask[1, hidden].any()
        assert mask[1].sum() == mq.config.n_proteins - len(hidden)
        assert mq.query_info.n_proteins_missing == len(hidden)
    assert mq.query_info.n_genes_missing == 0
    assert mq.use_adversarial_classifier == (scenario != "all")


@pytest.mark.parametrize("scenario", ["all", "none"])
def test_reference_latent_unchanged(setup, scenario) -> None:
    mq, _ = setup["mapped"][scenario]
    latent = mq.get_latent_representation(setup["ref"])  # reference batch, by name
    assert np.abs(latent - setup["latent"]).max() < 1e-6


def test_frozen_weights_bit_identical(setup) -> None:
    model, state = setup["model"], setup["state"]
    ref_state = model.module.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in state)  # reference untouched
    n_changed_new = 0
    for mq, _ in setup["mapped"].values():
        new_state = mq.module.state_dict()
        for key, old in state.items():
            new = new_state[key]
            if new.shape == old.shape:
                assert torch.equal(new, old), key
                continue
            w = old.shape[-1]
            assert torch.equal(new[..., :w], old), key
            if new.shape[-1] - w == 2:  # 1-batch reference: its batch column stays zero
                assert torch.equal(new[..., w], torch.zeros_like(new[..., w])), key
            n_changed_new += 1
        assert mq.query_info.n_trainable > 0
    assert n_changed_new > 0


def test_new_columns_are_trained(setup) -> None:
    mq, _ = setup["mapped"]["none"]
    w = mq.module.encoder.encoder.fc_layers[0][0].weight
    other, _ = setup["mapped"]["all"]
    # the query batch's encoder column learned different offsets with and without proteins
    w_all = other.module.encoder.encoder.fc_layers[0][0].weight
    assert not torch.allclose(w[:, -1], w_all[:, -1])
    assert mq.history["elbo_train"].iloc[-1] < mq.history["elbo_train"].iloc[0]
    assert mq.query_info.epochs == EPOCHS_QUERY


# ---------------------------------------------------------------- biology / accuracy
@pytest.mark.parametrize(("scenario", "threshold"), [("all", 0.6), ("half", 0.6), ("none", 0.6)])
def test_predicted_proteins_correlate_with_hidden_measurements(setup, scenario, threshold) -> None:
    mq, hidden = setup["mapped"][scenario]
    _, pro = mq.get_normalized_expression(
        transform_batch="pbmc10k", include_protein_background=True, return_numpy=True
    )
    r = median_protein_r(pro[:, hidden], setup["query"].protein[:, hidden])
    assert r > threshold, f"{scenario}: median per-protein r = {r:.3f}"


def test_impute_missing_proteins_for_rna_only_query(setup) -> None:
    mq, _ = setup["mapped"]["none"]
    values, imputed = mq.impute_missing_proteins()
    assert imputed.to_numpy().all()
    r = median_protein_r(values.to_numpy(), setup["query"].protein)
    assert r > 0.5, r


def test_transferred_labels_match_protein_populations(setup) -> None:
    ref, query = setup["ref"], setup["query"]
    mq, _ = setup["mapped"]["none"]  # the query's proteins were never seen
    ref_labels = protein_populations(ref.protein, ref.protein_names)
    truth = protein_populations(query.protein, query.protein_names)
    labels, conf = transfer_labels(
        mq.get_latent_representation(ref), ref_labels, mq.get_latent_representation(), k=15
    )
    assert conf.shape == (query.n_cells,) and ((conf > 0) & (conf <= 1)).all()
    core = np.isin(truth, ["mono", "T", "B"])
    agreement = float(np.mean(labels[core] == truth[core]))
    assert core.sum() > 200 and agreement > 0.9, agreement


# ------------------------------------------------------------ genes, batches, errors
def _drop_genes(data: CiteSeqData, keep_fraction: float, extra: int = 0) -> CiteSeqData:
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(data.n_genes, int(keep_fraction * data.n_genes), replace=False))
    keep = rng.permutation(keep)  # another gene order too
    rna = data.rna[:, keep]
    names = list(data.var_names[keep])
    if extra:
        import scipy.sparse as sp

        rna = sp.hstack([rna, sp.csr_matrix((data.n_cells, extra), dtype=np.float32)]).tocsr()
        names += [f"NOT_IN_REF_{i}" for i in range(extra)]
    return CiteSeqData(
        rna=rna,
        protein=data.protein,
        obs=data.obs,
        var_names=pd.Index(names),
        protein_names=data.protein_names,
        batch=data.batch,
        batch_categories=["site-B"],
        source="query",
    )


def test_missing_genes_are_filled_and_reported(setup) -> None:
    model, query = setup["model"], setup["query"].subset(np.arange(200))
    q = _drop_genes(query, 0.7, extra=5)
    n_missing = model.config.n_genes - int(0.7 * query.n_genes)
    with pytest.warns(UserWarning, match=f"lacks {n_missing} of the reference"):
        mq = model.map_query(q, max_epochs=2, device="cpu")
    info = mq.query_info
    assert info.n_genes_missing == n_missing == len(info.missing_genes)
    assert info.n_genes_extra == 5
    assert mq.batch_categories == ["pbmc10k", "site-B"] and not info.renamed_batches
    aligned = mq.data
    assert aligned.var_names.equals(model.var_names)
    missing = aligned.var_names.get_indexer(info.missing_genes)
    assert aligned.rna[:, missing].nnz == 0
    present = np.setdiff1d(np.arange(model.config.n_genes), missing)
    expected = query.rna[:, present].toarray()
    assert np.array_equal(aligned.rna[:, present].toarray(), expected)


def test_too_few_genes_are_refused(setup) -> None:
    model, query = setup["model"], setup["query"].subset(np.arange(50))
    q = _drop_genes(query, 0.4)
    with pytest.raises(QueryGeneMismatchError, match=r"only 400 of the reference's 1002 genes"):
        model.map_query(q, max_epochs=1, device="cpu")
    assert issubclass(QueryGeneMismatchError, CiteSeqDataError)
    align_query(q, var_names=model.var_names, protein_names=model.protein_names,
                min_gene_fraction=0.3)  # fmt: skip


def test_batch_collision_can_be_refused(setup) -> None:
    model, query = setup["model"], setup["query"].subset(np.arange(50))
    with pytest.raises(QueryDataError, match="'pbmc10k' has the name of a reference batch"):
        model.map_query(query, max_epochs=1, batch_collision="error", device="cpu")


def test_two_query_batches_and_save_load_roundtrip(setup, tmp_path) -> None:
    model, query = setup["model"], setup["query"]
    q = query.with_batches(np.arange(query.n_cells) % 2, ["site-A", "site-B"])
    mq = model.map_query(q.select_proteins([1, 6, 4]), max_epochs=2, device="cpu")
    assert mq.batch_categories == ["pbmc10k", "site-A", "site-B"]
    assert mq.module.background_pro_alpha.shape == (mq.config.n_proteins, 3)
    mq.save(tmp_path / "mapped")
    back = TotalVI.load(tmp_path / "mapped")
    assert back.batch_categories == mq.batch_categories
    assert np.array_equal(back.protein_batch_mask, mq.protein_batch_mask)
    a = back.get_latent_representation(mq.data)
    assert np.abs(a - mq.get_latent_representation()).max() < 1e-5


def test_cancel_and_unfrozen_normalization(setup) -> None:
    model, query = setup["model"], setup["query"].subset(np.arange(300))
    with pytest.raises(TrainingCancelled):
        model.map_query(query, max_epochs=5, cancel=lambda: True, device="cpu")
    mq = model.map_query(query, max_epochs=2, freeze_normalization=False, device="cpu")
    bn_old = model.module.encoder.encoder.fc_layers[0][1]
    bn_new = mq.module.encoder.encoder.fc_layers[0][1]
    assert type(bn_new) is torch.nn.BatchNorm1d  # the freezing class is gone again
    assert not torch.equal(bn_new.running_mean, bn_old.running_mean)
    assert all(p.requires_grad for p in mq.module.parameters())


# ------------------------------------------------------------- scvi-tools checkpoints
def test_scvi_tools_checkpoint_maps_rna_only_anndata_query(test_data, pbmc_adata_cached) -> None:
    import anndata as ad

    path = test_data / "scvi_tools_1.4.2_pbmc300x1000"
    expected = np.load(path / "expected_outputs.npz")
    reference = from_anndata(ad.read_h5ad(path / "adata.h5ad"), batch_key="batch")
    # new cells of the same sample (the last 300 of the file; the model saw the first 300)
    query = pbmc_adata_cached[-300:, reference.var_names].copy()
    measured = np.asarray(query.obsm.pop("protein_expression"))  # RNA only from here on
    query.obs["batch"] = "b1"  # collides with a reference batch: mapped as new
    mq = TotalVI.load_query_data(query, path, batch_key="batch", max_epochs=3, device="cpu")
    assert mq.source == "scvi-tools 1.4.2 + query"
    assert mq.batch_categories == ["b0", "b1", "b1-query"]
    assert not mq.protein_batch_mask[2].any() and mq.protein_batch_mask[:2].all()
    ref = TotalVI.load(path)
    latent = mq.get_latent_representation(reference)
    assert np.abs(latent - ref.get_latent_representation(reference)).max() < 1e-6
    assert np.abs(latent - expected["latent_mean"]).max() < 1e-4
    new_state, old_state = mq.module.state_dict(), ref.module.state_dict()
    for key, old in old_state.items():
        new = new_state[key]
        assert torch.equal(new if old.dim() == 0 else new[..., : old.shape[-1]], old), key
    _, pro = mq.get_normalized_expression(
        transform_batch=["b0", "b1"], include_protein_background=True, return_numpy=True
    )
    # a 20-epoch model of 300 cells x 1000 genes: 0.53 (the full model below: > 0.6)
    assert median_protein_r(pro, measured) > 0.45


@pytest.mark.shared
def test_full_scvi_tools_pbmc_model_imputes_proteins_of_rna_only_cells(
    shared, pbmc_adata_cached
) -> None:
    """The 6855-cell scvi-tools 1.4.2 model of ../shared maps RNA-only cells and predicts
    their proteins well (the fixture-sized model above is too small to show it)."""
    path = shared / "reference" / "checkpoints" / "scvi_tools_1.4.2_pbmc10k"
    adata = pbmc_adata_cached.copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2 == 0, "b0", "b1")
    query = adata[adata.n_obs - 300 :].copy()
    measured = np.asarray(query.obsm.pop("protein_expression"))
    query.obs["batch"] = "b1"
    mq = TotalVI.load_query_data(query, path, batch_key="batch", max_epochs=3, device="cpu")
    _, pro = mq.get_normalized_expression(
        transform_batch=["b0", "b1"], include_protein_background=True, return_numpy=True
    )
    assert median_protein_r(pro, measured) > 0.6


def test_scvi_115_checkpoint_maps_protein_subset(test_data) -> None:
    import anndata as ad

    path = test_data / "scvi_tools_1.1.5_synthetic"
    adata = ad.read_h5ad(path / "adata.h5ad")
    adata.obs["batch"] = adata.obs["batch"].astype(str) + "-new"
    data = from_anndata(adata, batch_key="batch", protein_names_uns_key="protein_names")
    keep = list(range(0, data.n_proteins, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same genes: no warning
        mq = TotalVI.load(path).map_query(data.select_proteins(keep), max_epochs=2, device="cpu")
    assert mq.config.n_batch == 4 and mq.config.variant.bg_activation == "exp"
    assert mq.protein_batch_mask[2:, keep].all()
    assert mq.query_info.n_proteins_missing == data.n_proteins - len(keep)


def test_load_query_data_refuses_a_bad_path(tmp_path, setup) -> None:
    with pytest.raises(CheckpointError):
        TotalVI.load_query_data(setup["query"], tmp_path / "nothing")


# ------------------------------------------------------------------ label transfer
def test_transfer_labels_votes_and_confidence() -> None:
    ref = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
    labels = np.array(["a", "a", "b", "c", "c", "d"])
    out, conf = transfer_labels(ref, labels, np.array([[0.05], [5.05], [8.0]]), k=3)
    assert out.tolist() == ["a", "c", "c"]
    assert np.allclose(conf, [2 / 3, 2 / 3, 2 / 3])
    # tie (1 vote each): the nearest neighbour's label wins
    out, conf = transfer_labels(ref, labels, np.array([[0.19]]), k=2)
    assert out.tolist() == ["b"] and conf.tolist() == [0.5]
    out, _ = transfer_labels(torch.zeros(2, 3), [1, 1], torch.zeros(4, 3), k=50)
    assert out.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="reference labels"):
        transfer_labels(ref, labels[:3], ref)


def test_per_batch_dispersions_and_latent_library_are_extended(setup) -> None:
    ref = setup["ref"].subset(np.arange(300))
    ref = ref.with_batches(np.arange(ref.n_cells) % 2, ["r0", "r1"])
    model = TotalVI(
        ref,
        n_hidden=16,
        n_latent=5,
        gene_dispersion="gene-batch",
        protein_dispersion="protein-batch",
        use_observed_lib_size=False,
    )
    model.train(max_epochs=1, device="cpu")
    before = model.get_latent_representation(ref)
    mq = model.map_query(setup["query"].select_proteins([0, 1]), max_epochs=2, device="cpu")
    m = mq.module
    assert m.px_r.shape == (mq.config.n_genes, 3) and m.py_r.shape == (mq.config.n_proteins, 3)
    assert m.library_log_means.shape == (1, 3)
    assert torch.equal(m.px_r[:, :2], model.module.px_r)
    assert torch.equal(m.library_log_vars[:, :2], model.module.library_log_vars)
    assert not torch.equal(m.px_r[:, 2], model.module.px_r[:, 0])
    assert np.abs(mq.get_latent_representation(ref) - before).max() < 1e-6


def test_load_query_data_from_our_checkpoint(setup, tmp_path) -> None:
    setup["model"].save(tmp_path / "ref")
    q = setup["query"].subset(np.arange(100)).select_proteins([])
    mq = TotalVI.load_query_data(q, tmp_path / "ref", max_epochs=1, device="cpu")
    assert mq.batch_categories == ["pbmc10k", "pbmc10k-query"]
    assert mq.source == "totalvi-explorer + query"
    assert np.abs(mq.get_latent_representation(setup["ref"]) - setup["latent"]).max() < 1e-6
