"""Likelihoods and samplers against closed forms (scipy) and moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from model.distributions import (
    NonZeroCounts,
    log_mixture_nb,
    log_nb_positive,
    log_zinb_positive,
    nb_log_likelihood_sum,
    sample_mixture_nb,
    sample_nb,
)


@pytest.fixture
def nb_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.poisson(5.0, size=(6, 7)), dtype=torch.float64)
    mu = torch.tensor(rng.uniform(0.5, 20, size=(6, 7)))
    theta = torch.tensor(rng.uniform(0.3, 8, size=7))
    return x, mu, theta


def _scipy_nb(x, mu, theta):
    n = theta.numpy()[None, :]
    p = n / (n + mu.numpy())
    return stats.nbinom.logpmf(x.numpy(), n, p)


def test_log_nb_positive_matches_scipy(nb_case) -> None:
    x, mu, theta = nb_case
    ours = log_nb_positive(x, mu, theta, eps=0.0).numpy()
    np.testing.assert_allclose(ours, _scipy_nb(x, mu, theta), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("theta_per_cell", [False, True])
def test_nb_sum_with_precomputed_constant_equals_full_sum(nb_case, theta_per_cell) -> None:
    x, mu, theta = nb_case
    x = x * (torch.arange(7) % 3 == 0)  # sparse counts: the fast path skips zeros
    if theta_per_cell:
        theta = theta.expand(6, 7) * torch.linspace(0.5, 2, 6, dtype=theta.dtype)[:, None]
    full = log_nb_positive(x, mu, theta).sum(-1)
    const = torch.lgamma(x + 1).sum(-1)
    np.testing.assert_allclose(nb_log_likelihood_sum(x, mu, theta, const), full, rtol=1e-12)
    np.testing.assert_allclose(nb_log_likelihood_sum(x, mu, theta), full, rtol=1e-12)
    # non-zeros given by the caller, in another order than a row-major search finds them
    rows, cols, vals = NonZeroCounts.of(x)
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    given = NonZeroCounts(rows[perm], cols[perm].to(torch.int32), vals[perm])
    np.testing.assert_allclose(
        nb_log_likelihood_sum(x, mu, theta, const, nonzero=given), full, rtol=1e-12
    )
    x3, mu3 = x.expand(2, 6, 7), mu.expand(2, 6, 7)  # sample dim: dense path
    np.testing.assert_allclose(
        nb_log_likelihood_sum(x3, mu3, theta), log_nb_positive(x3, mu3, theta).sum(-1)
    )


def test_log_zinb_matches_mixture_with_point_mass(nb_case) -> None:
    x, mu, theta = nb_case
    x = x.clone()
    x[:, :3] = 0
    logits = torch.linspace(-2, 2, 7, dtype=torch.float64).expand(6, 7)
    pi = torch.sigmoid(logits).numpy()
    nb = np.exp(_scipy_nb(x, mu, theta))
    expected = np.where(x.numpy() == 0, np.log(pi + (1 - pi) * nb), np.log((1 - pi) * nb))
    ours = log_zinb_positive(x, mu, theta, logits).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_log_mixture_nb_matches_weighted_sum(nb_case) -> None:
    x, mu, theta = nb_case
    mu2 = mu * 7.0
    logits = torch.linspace(-3, 3, 7, dtype=torch.float64).expand(6, 7)
    w = torch.sigmoid(logits).numpy()
    expected = np.log(
        w * np.exp(_scipy_nb(x, mu, theta)) + (1 - w) * np.exp(_scipy_nb(x, mu2, theta))
    )
    ours = log_mixture_nb(x, mu, mu2, theta, logits, eps=0.0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_log_nb_is_finite_at_zero_mean_with_eps() -> None:
    x = torch.tensor([[0.0, 3.0]])
    mu = torch.tensor([[0.0, 0.0]])
    theta = torch.tensor([1.0, 1.0])
    out = log_nb_positive(x, mu, theta)
    assert torch.isfinite(out).all()
    assert out[0, 0].abs() < 1e-6  # P(0 | mu = 0) = 1


def test_sample_nb_moments() -> None:
    torch.manual_seed(0)
    mu = torch.full((200_000,), 4.0)
    theta = torch.full((200_000,), 2.0)
    s = sample_nb(mu, theta)
    assert abs(s.mean().item() - 4.0) < 0.05
    assert abs(s.var().item() - (4.0 + 16.0 / 2.0)) < 0.3


def test_sample_mixture_nb_mean() -> None:
    torch.manual_seed(0)
    n = 200_000
    mu1, mu2 = torch.full((n,), 2.0), torch.full((n,), 30.0)
    logits = torch.full((n,), 0.0)  # 50 % background
    s = sample_mixture_nb(mu1, mu2, torch.full((n,), 5.0), logits)
    assert abs(s.mean().item() - 16.0) < 0.2


@pytest.mark.parametrize("shared_theta", [True, False])
def test_nb_sum_gradient_is_the_analytic_one(shared_theta) -> None:
    from model.distributions import _SparseNBSum

    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((5, 7), 1.5), generator=gen).double()
    x[0] = 0.0  # a cell with no counts
    mu = (torch.rand(5, 7, generator=gen, dtype=torch.float64) * 5 + 0.1).requires_grad_()
    shape = (1, 7) if shared_theta else (5, 7)
    theta = (torch.rand(*shape, generator=gen, dtype=torch.float64) * 3 + 0.2).requires_grad_()
    nz = NonZeroCounts.of(x)

    def f(m, t):
        return _SparseNBSum.apply(m, t, nz.rows, nz.cols, nz.values, 1e-8)

    assert torch.autograd.gradcheck(f, (mu, theta))
    # and the same gradient as autograd through the plain formula
    ll = nb_log_likelihood_sum(x, mu, theta)
    ref = log_nb_positive(x, mu, theta[0] if shared_theta else theta).sum(-1)
    w = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)
    got = torch.autograd.grad((ll * w).sum(), (mu, theta))
    want = torch.autograd.grad((ref * w).sum(), (mu, theta))
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)
