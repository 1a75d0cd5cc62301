"""TotalVI end to end on a slice of the real PBMC data: training, queries, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model import TotalVI, TrainingCancelled
from model.config import TrainConfig
from model.data import from_anndata
from model.train import kl_weight_at, max_epochs_heuristic, split_indices

HIDDEN = ["CD4_TotalSeqB", "CD8a_TotalSeqB", "CD19_TotalSeqB"]  # not measured in batch b1
N_CELLS, EPOCHS = 2000, 40


def _clr(y: np.ndarray) -> np.ndarray:
    logy = np.log1p(y)
    return logy - logy.mean(1, keepdims=True)


@pytest.fixture(scope="module")
def pbmc_two_batches(pbmc_adata_cached):
    """2000 real cells, two pseudo-batches, three proteins zeroed (unmeasured) in b1."""
    adata = pbmc_adata_cached[:N_CELLS].copy()
    adata.obs["batch"] = pd.Categorical(np.where(np.arange(N_CELLS) % 2 == 0, "b0", "b1"))
    truth = adata.obsm["protein_expression"].copy()
    pro = adata.obsm["protein_expression"].copy()
    pro.loc[adata.obs["batch"].to_numpy() == "b1", HIDDEN] = 0.0
    adata.obsm["protein_expression"] = pro
    return from_anndata(adata, batch_key="batch", source="pbmc slice"), truth


@pytest.fixture(scope="module")
def trained(pbmc_two_batches):
    data, _ = pbmc_two_batches
    model = TotalVI(data, seed=0)
    epochs = []
    result = model.train(max_epochs=EPOCHS, seed=0, progress=epochs.append)
    return model, result, epochs


def test_protein_mask_and_adversarial_are_switched_on(trained) -> None:
    model, _, _ = trained
    mask = model.protein_batch_mask
    assert mask is not None and mask.shape == (2, 14)
    hidden_pos = model.protein_names.get_indexer(HIDDEN)
    assert mask[0].all() and not mask[1, hidden_pos].any() and mask[1].sum() == 11
    assert model.use_adversarial_classifier


def test_training_lowers_validation_elbo_and_reports_progress(trained) -> None:
    model, result, epochs = trained
    h = result.history
    assert len(h) == EPOCHS and [p.epoch for p in epochs] == list(range(1, EPOCHS + 1))
    assert h["elbo_validation"].iloc[-1] < 0.8 * h["elbo_validation"].iloc[0]
    assert np.isfinite(h[["elbo_train", "elbo_validation"]].to_numpy()).all()
    assert set(model.train_indices).isdisjoint(model.validation_indices)
    assert len(model.train_indices) + len(model.validation_indices) == N_CELLS
    assert 0 < epochs[-1].fraction <= 1


def test_latent_space_separates_monocytes_from_t_cells(trained, pbmc_two_batches) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    model, _, _ = trained
    data, truth = pbmc_two_batches
    clr = pd.DataFrame(_clr(truth.to_numpy()), columns=truth.columns)
    cd14, cd3 = clr["CD14_TotalSeqB"], clr["CD3_TotalSeqB"]
    mono = ((cd14 > cd14.quantile(0.8)) & (cd3 < cd3.median())).to_numpy()
    tcell = ((cd3 > cd3.quantile(0.6)) & (cd14 < cd14.median())).to_numpy()
    assert mono.sum() > 100 and tcell.sum() > 300
    latent = model.get_latent_representation()
    assert latent.shape == (N_CELLS, 20)
    cells = np.flatnonzero(mono | tcell)
    labels = mono[cells]
    knn = KNeighborsClassifier(n_neighbors=10).fit(latent[cells[::2]], labels[::2])
    accuracy = (knn.predict(latent[cells[1::2]]) == labels[1::2]).mean()
    assert accuracy > 0.95
    # batches are mixed: a kNN batch classifier on the latent is near chance
    batch_acc = (
        KNeighborsClassifier(n_neighbors=15)
        .fit(latent[::2], data.batch[::2])
        .score(latent[1::2], data.batch[1::2])
    )
    assert batch_acc < 0.65


def test_imputed_proteins_track_the_hidden_truth(trained, pbmc_two_batches) -> None:
    model, _, _ = trained
    data, truth = pbmc_two_batches
    values, imputed = model.impute_missing_proteins()
    b1 = data.batch == 1
    assert imputed.loc[b1, HIDDEN].all().all() and not imputed.loc[~b1].any().any()
    for protein in HIDDEN:
        r = np.corrcoef(np.log1p(values.loc[b1, protein]), np.log1p(truth.loc[b1, protein]))[0, 1]
        assert r > 0.5, (protein, r)


def test_protein_only_queries_skip_the_gene_heads_with_the_same_values(trained) -> None:
    model, _, _ = trained
    data = None  # the training data
    idx = np.arange(300)
    full = model.get_normalized_expression(
        data, indices=idx, n_samples=2, transform_batch=[0, 1], return_numpy=True, seed=3
    )
    rna, pro = model.get_normalized_expression(
        data,
        indices=idx,
        gene_list=[],
        n_samples=2,
        transform_batch=[0, 1],
        return_numpy=True,
        seed=3,
    )
    assert rna.shape == (300, 0)
    np.testing.assert_array_equal(pro, full[1])


def test_normalized_expression_shapes_and_scaling(trained) -> None:
    model, _, _ = trained
    idx = np.arange(50)
    rna, pro = model.get_normalized_expression(indices=idx)
    assert isinstance(rna, pd.DataFrame) and rna.shape == (50, 4000) and pro.shape == (50, 14)
    np.testing.assert_allclose(rna.sum(1), 1.0, rtol=1e-4)
    rna_l, _ = model.get_normalized_expression(indices=idx, library_size=1e4)
    np.testing.assert_allclose(rna_l.sum(1), 1e4, rtol=1e-4)
    rna3, pro3 = model.get_normalized_expression(indices=idx, n_samples=3, return_mean=False)
    assert rna3.shape == (50, 4000, 3) and pro3.shape == (50, 14, 3)
    sub_rna, sub_pro = model.get_normalized_expression(
        indices=idx, gene_list=["LYZ", "CD3D"], protein_list=["CD14_TotalSeqB"]
    )
    assert list(sub_rna.columns) == ["LYZ", "CD3D"] and sub_pro.shape == (50, 1)
    _, with_bg = model.get_normalized_expression(indices=idx, include_protein_background=True)
    assert (with_bg.to_numpy() >= pro.to_numpy() - 1e-4).all()
    _, pro_b0 = model.get_normalized_expression(indices=idx, transform_batch="b0")
    assert not np.allclose(pro_b0.to_numpy(), pro.to_numpy())
    with pytest.raises(ValueError, match="unknown batch"):
        model.get_normalized_expression(indices=idx, transform_batch="nope")
    with pytest.raises(KeyError, match="NOTAGENE"):
        model.get_normalized_expression(indices=idx, gene_list=["NOTAGENE"])


def test_queries_are_seeded(trained) -> None:
    model, _, _ = trained
    a = model.get_normalized_expression(indices=np.arange(20), seed=3)[1]
    b = model.get_normalized_expression(indices=np.arange(20), seed=3)[1]
    pd.testing.assert_frame_equal(a, b)


def test_foreground_probability_and_posterior_predictive(trained) -> None:
    model, _, _ = trained
    fg = model.get_protein_foreground_probability(indices=np.arange(100))
    assert fg.shape == (100, 14) and ((fg >= 0) & (fg <= 1)).all().all()
    # CD3 is foreground in T cells and background in monocytes: its probability varies a lot
    assert fg["CD3_TotalSeqB"].max() - fg["CD3_TotalSeqB"].min() > 0.5
    samples = model.posterior_predictive_sample(indices=np.arange(30), n_samples=4)
    assert samples["rna"].shape == (30, 4000, 4) and samples["protein"].shape == (30, 14, 4)
    assert np.array_equal(samples["rna"], np.round(samples["rna"])) and samples["rna"].min() >= 0


def test_elbo_and_reconstruction_error(trained) -> None:
    model, result, _ = trained
    val = model.get_elbo(indices=model.validation_indices)
    logged = result.history["elbo_validation"].iloc[-1]  # the per-cell loss: -ELBO
    assert val < 0 < logged  # get_elbo is the ELBO itself (scvi-tools' sign), not the loss
    assert abs(-val - logged) / logged < 0.02
    rec = model.get_reconstruction_error(indices=np.arange(100))
    assert set(rec) == {"reconstruction_loss_gene", "reconstruction_loss_protein"}
    assert rec["reconstruction_loss_gene"] > 0 and rec["reconstruction_loss_protein"] > 0
    # -ELBO = reconstruction + KL >= reconstruction on the same cells
    elbo_100 = model.get_elbo(indices=np.arange(100))
    assert -elbo_100 > rec["reconstruction_loss_gene"] + rec["reconstruction_loss_protein"]
    mll = model.get_marginal_ll(indices=np.arange(20), n_mc_samples=5)
    assert np.isfinite(mll) and mll < 0


def test_save_load_round_trip(trained, pbmc_two_batches, tmp_path) -> None:
    model, _, _ = trained
    data, _ = pbmc_two_batches
    path = model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.pt"]
    loaded = TotalVI.load(tmp_path / "m", data=data)
    assert loaded.is_trained and loaded.source == "totalvi-explorer"
    np.testing.assert_array_equal(loaded.train_indices, model.train_indices)
    pd.testing.assert_frame_equal(loaded.history, model.history)
    np.testing.assert_array_equal(loaded.protein_batch_mask, model.protein_batch_mask)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    import torch

    torch.load(path, weights_only=True)  # our format needs no unpickling of code


def test_load_aligns_reordered_genes(trained, pbmc_two_batches, tmp_path) -> None:
    model, _, _ = trained
    data, _ = pbmc_two_batches
    from model.data import align_features

    rev = align_features(
        data, var_names=data.var_names[::-1], protein_names=data.protein_names[::-1]
    )
    np.testing.assert_allclose(
        model.get_latent_representation(rev, indices=np.arange(30)),
        model.get_latent_representation(data, indices=np.arange(30)),
        atol=1e-5,
    )


def test_training_is_reproducible_and_cancellable(pbmc_two_batches) -> None:
    data, _ = pbmc_two_batches
    small = data.subset(np.arange(600))
    h1 = TotalVI(small, seed=1).train(max_epochs=2, seed=1).history
    h2 = TotalVI(small, seed=1).train(max_epochs=2, seed=1).history
    np.testing.assert_allclose(h1["elbo_validation"], h2["elbo_validation"], rtol=1e-6)
    calls = iter(range(1000))
    model = TotalVI(small, seed=1)
    with pytest.raises(TrainingCancelled):
        model.train(max_epochs=5, should_stop=lambda: next(calls) >= 3)
    assert not model.is_trained


def test_schedules_and_split_follow_scvi_tools() -> None:
    assert max_epochs_heuristic(6855) == 400
    assert max_epochs_heuristic(72042) == 111
    assert max_epochs_heuristic(10**7) == 1
    assert (
        kl_weight_at(0, 100) == 0 and kl_weight_at(50, 100) == 0.5 and kl_weight_at(500, 100) == 1
    )
    train, val = split_indices(6855, seed=0)
    assert len(train) == 6170 and len(val) == 685  # the scvi-tools checkpoint's sizes
    train, val = split_indices(287, seed=0)  # ceil(0.9*287)=259 = 256+3: fine
    assert len(train) == 259
    train, val = split_indices(286, seed=0)  # 258 = 256 + 2: two cells move to validation
    assert len(train) == 256 and len(val) == 30
    with pytest.raises(ValueError, match="train_size"):
        split_indices(10, train_size=0.0)
    assert TrainConfig().lr == 4e-3 and TrainConfig().eps == 0.01


@pytest.mark.parametrize("dense", [True, False])
def test_minibatches_carry_the_non_zeros_of_their_rows(pbmc_two_batches, dense) -> None:
    import torch

    from model.distributions import NonZeroCounts
    from model.train import DeviceData

    data, _ = pbmc_two_batches
    dev = DeviceData(
        data.rna, data.protein, data.batch, torch.device("cpu"), 2**40 if dense else 0
    )
    idx = torch.tensor([5, 0, 1999, 17, 5])  # unsorted, repeated
    mb = dev.get(idx)
    expected = data.rna[idx.numpy()].toarray()
    np.testing.assert_array_equal(mb.x.numpy(), expected)
    rebuilt = np.zeros_like(expected)
    rebuilt[mb.nonzero.rows.numpy(), mb.nonzero.cols.numpy()] = mb.nonzero.values.numpy()
    np.testing.assert_array_equal(rebuilt, expected)
    assert len(mb.nonzero.rows) == len(NonZeroCounts.of(mb.x).rows)
    assert mb.batch.shape == (5, 1) and mb.lgamma_x_plus_1_sum.shape == (5,)


def test_stored_encoder_input_gives_the_same_loss_without_dense_counts(pbmc_two_batches) -> None:
    import torch

    from model.config import TotalVIConfig
    from model.module import TotalVAE
    from model.train import DeviceData

    data, _ = pbmc_two_batches
    module = TotalVAE(
        TotalVIConfig(n_genes=data.n_genes, n_proteins=data.n_proteins, n_batch=2)
    ).eval()
    cpu = torch.device("cpu")
    plain = DeviceData(data.rna, data.protein, data.batch, cpu)
    stored = DeviceData(
        data.rna, data.protein, data.batch, cpu, encoder_input=module.encoder_input, keep_x=False
    )
    idx = torch.tensor([3, 11, 400, 2])
    a, b = plain.get(idx), stored.get(idx)
    assert b.x is None and a.encoder_input is None
    torch.testing.assert_close(b.encoder_input, module.encoder_input(a.x, a.y))
    torch.testing.assert_close(b.library, a.x.sum(1, keepdim=True))
    torch.manual_seed(0)
    out_a = module(a.x, a.y, a.batch, 1.0, a.lgamma_x_plus_1_sum, **a.model_inputs())[2]
    torch.manual_seed(0)
    out_b = module(b.x, b.y, b.batch, 1.0, b.lgamma_x_plus_1_sum, **b.model_inputs())[2]
    torch.testing.assert_close(out_a.loss, out_b.loss)
    torch.testing.assert_close(out_a.rec_gene, out_b.rec_gene)
