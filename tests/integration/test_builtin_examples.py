"""The built-in examples in ``data/``: the measured PBMC default and the simulated
17-batch example, each listed on the Model page and opened from its folder without
training (the simulated one with its data, its batches, panels and named cell types)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views.model import checkpoint_options
from model.simulate import BLOOD_TYPE_NAMES

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "data" / "models"
EXAMPLE = MODELS / "simulated-17batch"

pytestmark = pytest.mark.slow


def test_both_examples_are_listed_on_the_model_page() -> None:
    labels = {o["label"] for o in checkpoint_options(MODELS)}
    assert "pbmc10k" in labels
    assert "simulated-17batch · with its data (adata.h5ad)" in labels, labels


def test_the_simulated_example_opens_with_its_data(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache", device="cpu")
    service = AnalysisService(settings)
    try:
        pair = service.open_model(EXAMPLE)
        data, model = service.dataset(pair), service.model(pair)
        assert (data.n_cells, data.n_genes, data.n_proteins, data.n_batch) == (
            10_000,
            4000,
            111,
            17,
        )
        assert data.simulated.startswith("simulated data (model.simulate.simulate_cite_seq")
        assert len(model.batch_categories) == 17
        # antibody panels: some proteins are missing in some batches, and the model knows
        mask = np.asarray(model.protein_batch_mask)
        assert mask.shape == (17, 111) and 0 < (~mask).sum() < mask.size // 4
        # the registered labels are the simulation's named cell types
        types = service.cell_types(pair)
        assert set(types.cat.categories) == set(BLOOD_TYPE_NAMES)
        latent = service.latent(pair)
        assert latent.shape == (10_000, 20) and np.isfinite(latent).all()
    finally:
        service.close()
