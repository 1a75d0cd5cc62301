"""A gene's denoised RNA is decoded on first request, in a small block of genes, from the
stored decoder state: no pass over every gene, the same values as the all-genes table (to
float32 rounding), one block computed once; every gene, many genes and counterfactual
batches still come from the all-genes blocks."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.backend.denoise import Sampling, denoised_expression
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.expression import DEMAND_BLOCK_GENES
from dashboard.backend.jobs import JobStatus
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dense(trained):
    data, model = trained
    rna, _ = denoised_expression(model, data, library_size=1e4, how=Sampling(n_samples=5, seed=0))
    return rna


@pytest.fixture
def service(tmp_path, trained):
    data, model = trained
    svc = AnalysisService(Settings(cache_dir=tmp_path / "cache"))
    pair = svc.add_model(svc.add_dataset(data), model)
    yield svc, pair
    svc.close()


def _all_genes_stored(svc, pair) -> bool:
    return svc.results.has("denoised_rna", pair, svc.expression._denoise_params())


def test_one_gene_decodes_one_block_not_every_gene(service, trained, dense, monkeypatch):
    svc, pair = service
    _, model = trained
    calls = []
    columns = type(model).rna_columns

    def counted(self, state, genes, **kw):
        calls.append(list(genes))
        return columns(self, state, genes, **kw)

    monkeypatch.setattr(type(model), "rna_columns", counted)
    genes = ["LYZ", "MS4A1"]
    got = svc.denoised_rna(pair, genes)
    assert list(got.columns) == genes and got.index.equals(dense.index)
    np.testing.assert_allclose(got.to_numpy(), dense[genes].to_numpy(), rtol=2e-5, atol=1e-5)
    assert not _all_genes_stored(svc, pair)  # nothing decoded every gene
    names = list(model.var_names)
    blocks = {names.index(g) // DEMAND_BLOCK_GENES for g in genes}
    assert len(calls) == len(blocks)
    assert all(len(c) <= DEMAND_BLOCK_GENES for c in calls)
    # a second gene of the same block, and the same genes again: no new decoding
    neighbour = names[(names.index("LYZ") // DEMAND_BLOCK_GENES) * DEMAND_BLOCK_GENES]
    again = svc.denoised_rna(pair, [neighbour, "LYZ"])
    np.testing.assert_allclose(again[neighbour], dense[neighbour], rtol=2e-5, atol=1e-5)
    assert len(calls) == len(blocks)


def test_the_state_job_leaves_the_table_undecoded(service, trained) -> None:
    svc, pair = service
    state = svc.denoised_rna_state(pair)
    data, model = trained
    assert state.z.shape == (data.n_cells, 5, model.config.n_latent)
    assert state.log_norm.shape == (data.n_cells, 5)
    assert not _all_genes_stored(svc, pair)


def test_a_stored_table_is_read_not_decoded_again(service, dense, monkeypatch) -> None:
    svc, pair = service
    svc.denoised_rna_manifest(pair)

    def refuse(*_a, **_k):
        raise AssertionError("decoded on demand although every gene is stored")

    monkeypatch.setattr(svc.expression, "denoised_rna_block", refuse)
    got = svc.denoised_rna(pair, ["LYZ"])
    np.testing.assert_array_equal(got["LYZ"], dense["LYZ"])  # bit for bit: the table


def test_many_genes_and_counterfactuals_use_the_all_genes_table(service, trained, dense):
    svc, pair = service
    _, model = trained
    many = [str(g) for g in model.var_names[:: DEMAND_BLOCK_GENES // 2]]  # every block
    got = svc.denoised_rna(pair, many)
    np.testing.assert_array_equal(got.to_numpy(), dense[many].to_numpy())
    assert _all_genes_stored(svc, pair)


def test_a_counterfactual_batch_is_not_decoded_on_demand(service, trained, monkeypatch):
    svc, pair = service
    batch = str(svc.model(pair).batch_categories[0])

    def refuse(*_a, **_k):
        raise AssertionError("a counterfactual went through the own-batch state")

    monkeypatch.setattr(svc.expression, "denoised_rna_block", refuse)
    got = svc.denoised_rna(pair, ["LYZ"], batch=batch)
    assert got.shape == (trained[0].n_cells, 1) and np.isfinite(got.to_numpy()).all()


def test_unknown_genes_and_blocks_are_refused_in_one_line(service, trained) -> None:
    svc, pair = service
    with pytest.raises(InvalidSelection, match="unknown gene"):
        svc.denoised_rna(pair, ["NOT-A-GENE"])
    n_genes = len(trained[1].var_names)
    with pytest.raises(InvalidSelection, match="outside the model's"):
        svc.denoised_rna_block(pair, n_genes // DEMAND_BLOCK_GENES + 1)
    with pytest.raises(InvalidSelection, match="outside the model's"):
        svc.denoised_rna_block(pair, -1)


def test_the_decode_control_submits_the_state_for_own_batches(service) -> None:
    from dashboard.views.colours import submit_decode

    svc, pair = service
    info = svc.wait(submit_decode(svc, pair, ""), timeout=120)
    assert info.status == JobStatus.DONE, info.error
    assert svc.results.has("denoised_rna_state", pair, svc.expression._denoise_params())
    assert not _all_genes_stored(svc, pair)
