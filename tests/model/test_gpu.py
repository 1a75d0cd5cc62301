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


@pytest.mark.parametrize("precision", ["auto", "bf16-mixed", "tf32"])
def test_mixed_precision_trains_on_cuda(pbmc_adata_cached, precision) -> None:
    """bf16 matmuls on float32 master weights (or TF32 where bf16 is absent) on CUDA: the
    ELBO falls, the weights and the inference stay float32, the TF32 flags are restored."""
    from model.train import cuda_has_bf16

    data = from_anndata(pbmc_adata_cached[:1500].copy(), batch_key="batch")
    model = TotalVI(data, seed=0)
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    result = model.train(max_epochs=20, device="cuda", precision=precision, seed=0)
    native = cuda_has_bf16(torch.device("cuda"))
    expected = {"auto": "bf16-mixed" if native else "tf32"}.get(precision, precision)
    assert result.precision == expected
    elbo = result.history["elbo_train"].to_numpy()
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    assert not any(getattr(m, "compute_dtype", None) for m in model.module.modules())
    assert torch.backends.cuda.matmul.allow_tf32 == tf32_before
    latent = model.get_latent_representation()
    assert latent.dtype == np.float32 and np.isfinite(latent).all()
