"""Counterfactual decoding (issue 12): denoised genes and proteins "as if every cell were
measured in batch X", or averaged over all batches, equal the model's ``transform_batch``
semantics; the colourings say which; forged batches are refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from dashboard.backend.denoise import ALL_BATCHES
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views.colours import (
    ColorSpec,
    batch_choices,
    color_data,
    color_note,
    submit_decode,
)

GENE = "gene0003"


@pytest.fixture(scope="module")
def env(simulated_fit, tmp_path_factory) -> Iterator[SimpleNamespace]:
    data, model = simulated_fit(
        n_cells=240, n_genes=40, n_proteins=5, n_batches=3, seed=21, max_epochs=3
    )
    root = tmp_path_factory.mktemp("counterfactual")
    settings = Settings(data_dir=root, model_dir=root, cache_dir=root / "cache", device="cpu")
    service = AnalysisService(settings)
    pair = service.add_model(service.add_dataset(data, name="sim"), model, name="sim")
    yield SimpleNamespace(service=service, pair=pair, data=data, model=model, s=settings)
    service.close()


def _expected(env, batches: list[str]):
    s = env.s
    return env.model.get_normalized_expression(
        env.data,
        transform_batch=batches,
        n_samples=s.denoise_n_samples,
        seed=s.seed,
        library_size=1e4,
        return_mean=True,
    )


@pytest.mark.parametrize("batch", ["batch01", ALL_BATCHES])
def test_decoded_values_are_the_models_transform_batch(env, batch: str) -> None:
    names = list(env.model.batch_categories)
    batches = names if batch == ALL_BATCHES else [batch]
    rna, protein = _expected(env, batches)
    got = env.service.denoised_rna(env.pair, [GENE], batch=batch)
    np.testing.assert_allclose(got[GENE].to_numpy(), rna[GENE].to_numpy(), rtol=1e-5)
    got_p = env.service.denoised_protein(env.pair, batch=batch)
    np.testing.assert_allclose(got_p.to_numpy(), protein.to_numpy(), rtol=1e-5)
    # not the values as measured: cells of the other batches move
    own = env.service.denoised_rna(env.pair, [GENE])[GENE].to_numpy()
    elsewhere = env.data.batch != names.index("batch01")
    assert not np.allclose(own[elsewhere], got[GENE].to_numpy()[elsewhere])
    if batch != ALL_BATCHES:  # cells measured in batch01 are decoded there either way
        inside = ~elsewhere
        np.testing.assert_allclose(own[inside], got[GENE].to_numpy()[inside], rtol=0.2)


def test_colourings_use_and_name_the_decoding(env) -> None:
    spec = ColorSpec.from_state(
        {"feature": f"gene:{GENE}", "layer": "denoised", "batch": "batch02"}
    )
    assert spec.batch == "batch02" and spec.to_state()["batch"] == "batch02"
    shown = color_data(env.service, env.pair, spec)
    rna, _ = _expected(env, ["batch02"])
    np.testing.assert_allclose(shown.values, np.log1p(rna[GENE].to_numpy()), rtol=1e-5)
    assert "as if measured in batch02" in shown.label
    assert "Counterfactual" in color_note(env.service, env.pair, spec)
    averaged = ColorSpec(f"gene:{GENE}", "denoised", ALL_BATCHES)
    assert "averaged over 3 batches" in color_data(env.service, env.pair, averaged).label
    # raw counts have no decoding: the batch is dropped, and old states read as before
    raw = ColorSpec.from_state({"feature": f"gene:{GENE}", "layer": "raw", "batch": "batch02"})
    assert raw.batch == "" and "batch" not in raw.to_state()
    forged = ColorSpec.from_state({"feature": f"gene:{GENE}", "layer": "denoised", "batch": 7})
    assert forged.batch == ""
    values = [o["value"] for o in batch_choices(env.service, env.pair)]
    assert values == ["", ALL_BATCHES, "batch00", "batch01", "batch02"]


def test_forged_batches_are_refused_in_one_line(env) -> None:
    for bad in ("batch99", "../x", "x" * 500):
        with pytest.raises(InvalidSelection, match="unknown batch") as err:
            env.service.denoised_rna(env.pair, [GENE], batch=bad)
        assert "\n" not in str(err.value)
        with pytest.raises(InvalidSelection, match="unknown batch"):
            submit_decode(env.service, env.pair, bad)
    spec = ColorSpec(f"gene:{GENE}", "denoised", "batch99")
    with pytest.raises(InvalidSelection, match="unknown batch"):
        color_data(env.service, env.pair, spec)


def test_decoding_runs_as_a_job_and_is_cached(env) -> None:
    job = submit_decode(env.service, env.pair, "batch00")
    info = env.service.wait(job, timeout=120)
    assert info.status == "done", info.error
    key = env.service.expression.denoised_rna_key(env.pair, batch="batch00")
    assert env.service.cache.get(key) is not None
    assert key != env.service.expression.denoised_rna_key(env.pair)
