"""Mixed-precision training: bfloat16 matmuls on float32 master weights, float32 elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import TotalVI
from model.data import from_anndata
from model.nn import Linear, set_compute_dtype
from model.train import resolve_precision


def _layer(n_in: int = 300, n_out: int = 400, seed: int = 0) -> Linear:
    torch.manual_seed(seed)
    return Linear(n_in, n_out)


def test_bf16_linear_is_close_in_training_and_exact_in_eval() -> None:
    layer = _layer()
    x = torch.randn(64, 300)
    exact = torch.nn.functional.linear(x, layer.weight, layer.bias)
    layer.compute_dtype = torch.bfloat16
    layer.train()
    out = layer(x)
    assert out.dtype == torch.float32
    rel = (out - exact).abs().max() / exact.abs().max()
    assert 0 < rel < 2e-2  # bfloat16 rounding, not a different function
    layer.eval()
    assert torch.equal(layer(x), exact)


def test_bf16_linear_gradients_reach_float32_master_weights() -> None:
    layer, ref = _layer(), _layer()
    layer.compute_dtype = torch.bfloat16
    x = torch.randn(64, 300)
    layer(x).pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(
        layer.weight.grad.flatten(), ref.weight.grad.flatten(), dim=0
    )
    assert cos > 0.999


def test_only_large_layers_switch_and_state_dict_keys_are_unchanged() -> None:
    from model.config import TotalVIConfig
    from model.module import TotalVAE

    module = TotalVAE(TotalVIConfig(n_genes=500, n_proteins=10, n_batch=2))
    keys = list(module.state_dict())
    names = set_compute_dtype(module, torch.bfloat16, min_weights=65_536)
    assert "decoder.px_scale_decoder.fc_layers.Layer 0.0" in names
    assert "encoder.encoder.fc_layers.Layer 1.0" in names  # 256 x 256 hidden layer
    assert not any("py_" in n or "sigmoid" in n for n in names)  # protein heads stay fp32
    switched = [m for m in module.modules() if getattr(m, "compute_dtype", None) is not None]
    assert len(switched) == len(names)
    set_compute_dtype(module, None)
    assert not any(getattr(m, "compute_dtype", None) for m in module.modules())
    assert list(module.state_dict()) == keys


def test_auto_precision_follows_the_hardware(monkeypatch) -> None:
    import model.train as train

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16-mixed"
    monkeypatch.setattr(train, "cuda_has_bf16", lambda device: True)
    assert resolve_precision("auto", cuda) == "bf16-mixed"  # A100/H100/H200
    monkeypatch.setattr(train, "cuda_has_bf16", lambda device: False)
    assert resolve_precision("auto", cuda) == "tf32"  # older GPUs: TF32 tensor cores
    assert resolve_precision("tf32", cpu) == "32"  # no TF32 on a CPU
    assert resolve_precision("32", cuda) == "32"
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "32"
    assert resolve_precision("bf16-mixed", cpu) == "bf16-mixed"
    assert resolve_precision("32", cpu) == "32"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp16", cpu)


def test_tf32_flags_hold_only_inside_the_block() -> None:
    from model.train import matmul_precision

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with matmul_precision("tf32"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 is False
        with matmul_precision("bf16-mixed"):
            assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(scope="module")
def small_pbmc(pbmc_adata_cached):
    # 1,000 genes keep the gene decoder (256 x 1,000 weights) among the bfloat16 layers
    return from_anndata(pbmc_adata_cached[:500, :1000].copy(), source="pbmc slice")


def test_training_in_each_precision_learns_and_leaves_float32_inference(small_pbmc) -> None:
    results = {}
    for precision in ("32", "bf16-mixed"):
        model = TotalVI(small_pbmc, seed=0)
        out = model.train(max_epochs=25, seed=0, precision=precision)
        elbo = out.history["elbo_validation"].to_numpy()
        assert out.precision == precision
        assert model.train_config.precision == precision  # what ran, not "auto"
        assert elbo[-1] < elbo[0]
        assert not any(getattr(m, "compute_dtype", None) for m in model.module.modules())
        z = model.get_latent_representation()
        assert z.dtype == np.float32 and np.isfinite(z).all()
        # the 50 validation cells of a 500-cell slice swing by 3-5% from epoch to epoch
        # (the model overfits them); the training ELBO over 450 cells is steady
        results[precision] = out.history["elbo_train"].to_numpy()[-10:].mean()
    # same model, same seed: the two precisions fit the training cells equally well
    assert abs(results["bf16-mixed"] - results["32"]) / results["32"] < 0.01


def test_float32_training_is_unchanged_by_the_option(small_pbmc) -> None:
    a, b = TotalVI(small_pbmc, seed=0), TotalVI(small_pbmc, seed=0)
    a.train(max_epochs=2, seed=0, precision="32")
    b.train(max_epochs=2, seed=0, precision="32")
    for (k, va), vb in zip(
        a.module.state_dict().items(), b.module.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k
