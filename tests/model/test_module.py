"""TotalVAE: shapes, masks, gradients, key names and version variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import ModelVariant, TotalVIConfig
from model.module import TotalVAE, kl_normal

G, P, B = 30, 12, 2


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((n, G), 3.0), generator=g)
    y = torch.poisson(torch.full((n, P), 20.0), generator=g)
    b = torch.randint(0, B, (n, 1), generator=g)
    return x, y, b


def _module(**kw) -> TotalVAE:
    torch.manual_seed(0)
    cfg = TotalVIConfig(n_genes=G, n_proteins=P, n_batch=B, n_hidden=32, n_latent=5, **kw)
    return TotalVAE(cfg)


def test_inference_and_generative_shapes() -> None:
    m = _module()
    x, y, b = _batch()
    inf = m.inference(x, y, b)
    assert inf.qz_m.shape == (16, 5) and inf.z.shape == (16, 5)
    assert inf.library_gene.shape == (16, 1)
    torch.testing.assert_close(inf.library_gene, x.sum(1, keepdim=True))
    gen = m.generative(inf.z, inf.library_gene, b)
    assert gen.px["scale"].shape == (16, G)
    torch.testing.assert_close(gen.px["scale"].sum(-1), torch.ones(16))
    for key in ("rate_back", "rate_fore", "mixing", "back_alpha", "back_beta"):
        assert gen.py[key].shape == (16, P)
    assert (gen.py["rate_fore"] >= gen.py["rate_back"]).all()  # foreground scale >= 1


def test_multiple_samples_add_a_leading_dim() -> None:
    m = _module().eval()
    x, y, b = _batch()
    inf = m.inference(x, y, b, n_samples=3)
    assert inf.z.shape == (3, 16, 5)
    assert inf.library_gene.shape == (3, 16, 1)
    gen = m.generative(inf.z, inf.library_gene, b)
    assert gen.px["rate"].shape == (3, 16, G)
    rna, pro = m.sample(x, y, b, n_samples=3)
    assert rna.shape == (3, 16, G) and pro.shape == (3, 16, P)


def test_loss_is_finite_and_backprops_to_all_used_parameters() -> None:
    m = _module()
    x, y, b = _batch()
    _, _, out = m(x, y, b, kl_weight=0.5)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    # unused by an NB model with observed library size, and skipped for speed
    unused = ("px_dropout_decoder_gene", "l_gene_")
    assert no_grad and all(any(u in n for u in unused) for n in no_grad), no_grad


def test_zinb_uses_dropout_head() -> None:
    m = _module(gene_likelihood="zinb")
    x, y, b = _batch()
    _, _, out = m(x, y, b)
    out.loss.backward()
    assert m.decoder.px_dropout_decoder_gene.fc_layers[0][0].weight.grad is not None


def test_protein_mask_removes_unmeasured_proteins_from_loss() -> None:
    mask = np.ones((B, P), dtype=bool)
    mask[1, :4] = False  # batch 1 did not measure proteins 0..3
    torch.manual_seed(0)
    cfg = TotalVIConfig(n_genes=G, n_proteins=P, n_batch=B, n_hidden=32, n_latent=5)
    m = TotalVAE(cfg, protein_batch_mask=mask).eval()
    x, y, _ = _batch()
    b = torch.ones(16, 1, dtype=torch.long)
    torch.manual_seed(1)
    inf = m.inference(x, y, b)
    gen = m.generative(inf.z, inf.library_gene, b)
    base = m.loss(x, y, b, inf, gen)
    y2 = y.clone()
    y2[:, :4] = 1000.0  # garbage in the unmeasured columns
    other = m.loss(x, y2, b, inf, gen)
    torch.testing.assert_close(base.rec_protein, other.rec_protein)
    y3 = y.clone()
    y3[:, 5] = 1000.0  # a measured column does change the loss
    assert not torch.allclose(base.rec_protein, m.loss(x, y3, b, inf, gen).rec_protein)


def test_kl_normal_matches_torch() -> None:
    mu_q, sd_q = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    mu_p, sd_p = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_q, sd_q), torch.distributions.Normal(mu_p, sd_p)
    )
    torch.testing.assert_close(kl_normal(mu_q, sd_q, mu_p, sd_p), ref)


def test_state_dict_keys_follow_scvi_tools_names() -> None:
    new = _module()
    old = _module(variant=ModelVariant.from_scvi_version("1.1.5"))
    assert len(old.state_dict()) == 73
    assert len(new.state_dict()) == 74
    keys = list(old.state_dict())
    assert keys[:4] == ["background_pro_alpha", "background_pro_log_beta", "px_r", "py_r"]
    assert "encoder.encoder.fc_layers.Layer 1.0.weight" in keys
    assert "decoder.py_fore_scale_decoder.fc_layers.Layer 0.0.weight" in keys
    # first-layer weight sees genes + proteins + batch one-hot
    assert new.state_dict()["encoder.encoder.fc_layers.Layer 0.0.weight"].shape == (32, G + P + B)


@pytest.mark.parametrize(
    ("version", "act", "norm", "eff"),
    [
        ("1.1.5", "exp", False, False),
        ("1.2.0", "softplus", False, False),
        ("1.4.2", "softplus", True, True),
    ],
)
def test_variant_from_version(version: str, act: str, norm: bool, eff: bool) -> None:
    v = ModelVariant.from_scvi_version(version)
    assert (v.bg_activation, v.encoder_input_mean_norm, v.use_efficiency) == (act, norm, eff)


def test_logistic_normal_latent_sums_to_one() -> None:
    m = _module(latent_distribution="ln").eval()
    x, y, b = _batch()
    inf = m.inference(x, y, b)
    torch.testing.assert_close(inf.z.sum(-1), torch.ones(16))


def test_latent_library_when_not_observed() -> None:
    torch.manual_seed(0)
    cfg = TotalVIConfig(
        n_genes=G, n_proteins=P, n_batch=B, n_hidden=32, n_latent=5, use_observed_lib_size=False
    )
    m = TotalVAE(
        cfg, library_log_means=np.full((1, B), 4.0), library_log_vars=np.full((1, B), 0.5)
    )
    x, y, b = _batch()
    _, _, out = m(x, y, b)
    assert (out.kl_l > 0).all()
    assert len(m.state_dict()) == 76  # 74 + library_log_means/vars buffers


@pytest.mark.parametrize("dispersion", ["gene-batch", "gene-label", "gene-cell"])
def test_gene_dispersion_variants(dispersion: str) -> None:
    m = _module(gene_dispersion=dispersion, protein_dispersion="protein-batch")
    x, y, b = _batch()
    inf = m.inference(x, y, b)
    gen = m.generative(inf.z, inf.library_gene, b)
    theta = gen.px["r"]
    if dispersion == "gene-label":
        assert theta.shape == (16, G) and torch.allclose(theta[0], theta[1])
    else:
        assert theta.shape == (16, G)
    if dispersion == "gene-cell":
        assert "decoder.px_r_decoder.fc_layers.Layer 0.0.weight" in m.state_dict()
        assert not torch.allclose(theta[0], theta[1])
    assert gen.py["r"].shape == (16, P)
    _, _, out = m(x, y, b)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_dropout_drops_p_and_keeps_the_expectation() -> None:
    import torch

    from model.nn import Dropout

    torch.manual_seed(0)
    x = torch.full((400, 500), 2.0)
    for p in (0.1, 0.2):
        layer = Dropout(p).train()
        out = layer(x)
        dropped = (out == 0).float().mean().item()
        assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5  # binomial, 4 sd
        assert abs(out.mean().item() - 2.0) < 0.01
        assert torch.equal(layer.eval()(x), x)
    odd = Dropout(0.5).train()(torch.ones(3, 5, 7))  # not a multiple of 4 elements
    assert odd.shape == (3, 5, 7) and set(odd.unique().tolist()) <= {0.0, 2.0}
