"""CUDA checks: device placement and a training step on the GPU (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import TotalVI
from model.data import from_anndata

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_trains_and_queries_on_cuda(pbmc_adata_cached) -> None:
    data = from_anndata(pbmc_adata_cached[:1500].copy(), batch_key="batch")
    model = TotalVI(data, seed=0)
    result = model.train(max_epochs=3, device="cuda")
    assert result.device.startswith("cuda")
    assert next(model.module.parameters()).is_cuda
    latent = model.get_latent_representation()
    assert latent.shape == (1500, 20) and np.isfinite(latent).all()
    cpu_latent = model.to("cpu").get_latent_representation()
    np.testing.assert_allclose(latent, cpu_latent, atol=1e-3)
