"""Count likelihoods used by TotalVI: NB, ZINB and the two-component NB mixture.

Formulas match scvi-tools' ``log_nb_positive``, ``log_zinb_positive`` and ``log_mixture_nb``
(spec §2.8), including the ``eps`` placements, so log-likelihoods agree to float precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

EPS = 1e-8


def log_nb_positive(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """Log-probability of counts ``x`` under NB(mean ``mu``, inverse dispersion ``theta``)."""
    if theta.ndim == 1:
        theta = theta.view(1, theta.size(0))
    log_theta_mu_eps = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu_eps)
        + x * (torch.log(mu + eps) - log_theta_mu_eps)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


class NonZeroCounts(NamedTuple):
    """Non-zero entries of a ``(B, G)`` count minibatch (row, column, value), found once by
    the data holder from its sparse matrix instead of searched for in every step."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> NonZeroCounts:
        """The non-zeros of a dense ``x``."""
        rows, cols = x.nonzero(as_tuple=True)
        return cls(rows, cols, x[rows, cols])


class _SparseNBSum(torch.autograd.Function):
    """Per-cell NB log-likelihood (without ``Σ lgamma(x+1)``) with an analytic backward.

    Inputs: ``mu`` ``(B, G)``, ``theta`` ``(1, G)`` or ``(B, G)``, the non-zeros of ``x``.
    Autograd of the plain expression keeps about a dozen ``(B, G)`` intermediates and
    scatters the sparse gathers' gradients through zero-filled ``(B, G)`` tensors; here the
    dense part is ``Σ_g θ·log(θ+ε) − log(θ+μ+ε)·θ`` (a matrix-vector product for a shared
    ``θ``), the rest is evaluated on the non-zeros only, and the backward reuses
    ``t = θ+μ+ε`` and ``log t`` from the forward:

    - ``∂/∂μ = −θ/t``, plus ``x/(μ+ε) − x/t`` on the non-zeros;
    - ``∂/∂θ = log(θ+ε) − log t + θ/(θ+ε) − θ/t``, plus ``−x/t + ψ(x+θ) − ψ(θ)`` on the
      non-zeros. For a shared ``θ``, ``Σ_b g_b θ/t`` is minus the column sum of ``∂/∂μ``'s
      dense part, and ``ψ(θ)``, ``lgamma(θ)`` are taken per gene, then gathered.
    """

    @staticmethod
    def forward(
        ctx: Any,
        mu: torch.Tensor,
        theta: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        x_nz: torch.Tensor,
        eps: float,
    ) -> torch.Tensor:
        shared = theta.size(0) == 1
        cols = cols.long()
        t = torch.add(mu, theta).add_(eps)
        log_t = torch.log(t)
        theta_log_theta = theta * torch.log(theta + eps)
        flat = rows * mu.size(1) + cols
        if shared:
            dense = theta_log_theta.sum() - log_t @ theta[0]
            theta_nz = theta[0].index_select(0, cols)
            lgamma_theta_nz = torch.lgamma(theta[0]).index_select(0, cols)
        else:
            dense = (theta_log_theta - theta * log_t).sum(-1)
            theta_nz = theta.reshape(-1).index_select(0, flat)
            lgamma_theta_nz = torch.lgamma(theta_nz)
        mu_nz = mu.reshape(-1).index_select(0, flat)
        log_t_nz = log_t.view(-1).index_select(0, flat)
        sparse = (
            x_nz * (torch.log(mu_nz + eps) - log_t_nz)
            + torch.lgamma(x_nz + theta_nz)
            - lgamma_theta_nz
        )
        ctx.save_for_backward(theta, rows, cols, flat, x_nz, t, log_t, mu_nz, theta_nz)
        ctx.eps = eps
        return dense.index_add(0, rows, sparse)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        theta, rows, cols, flat, x_nz, t, log_t, mu_nz, theta_nz = ctx.saved_tensors
        eps = ctx.eps
        shared = theta.size(0) == 1
        inv_t_nz = torch.reciprocal(mu_nz + theta_nz + eps)
        g_nz = grad.index_select(0, rows)
        # dense part of ∂/∂μ, also needed (summed over cells) by ∂/∂θ
        dense_mu = torch.div(grad.unsqueeze(1) * -theta, t)
        grad_mu = grad_theta = None
        if ctx.needs_input_grad[1]:  # first: it reads dense_mu before it is updated in place
            const = torch.log(theta + eps) + theta / (theta + eps)
            if shared:
                digamma_theta_nz = torch.digamma(theta[0]).index_select(0, cols)
            else:
                digamma_theta_nz = torch.digamma(theta_nz)
            corr = g_nz * (torch.digamma(x_nz + theta_nz) - digamma_theta_nz - x_nz * inv_t_nz)
            if shared:
                grad_theta = (grad.sum() * const[0] - grad @ log_t + dense_mu.sum(0)).unsqueeze(0)
                grad_theta[0].index_add_(0, cols, corr)
            else:
                grad_theta = grad.unsqueeze(1) * (const - log_t) + dense_mu
                grad_theta.view(-1).index_add_(0, flat, corr)
        if ctx.needs_input_grad[0]:
            corr = g_nz * x_nz * (torch.reciprocal(mu_nz + eps) - inv_t_nz)
            grad_mu = dense_mu
            grad_mu.view(-1).index_add_(0, flat, corr)
        return grad_mu, grad_theta, None, None, None, None


def nb_log_likelihood_sum(
    x: torch.Tensor | None,
    mu: torch.Tensor,
    theta: torch.Tensor,
    lgamma_x_plus_1_sum: torch.Tensor | None = None,
    eps: float = EPS,
    *,
    nonzero: NonZeroCounts | None = None,
) -> torch.Tensor:
    """``log_nb_positive(x, mu, theta).sum(-1)`` computed faster for sparse counts.

    The terms ``x·(log μ − log(θ+μ))`` and ``lgamma(x + θ) − lgamma(θ)`` vanish where
    ``x = 0``, so they are evaluated only on the non-zero entries (about a tenth of a
    scRNA matrix), given as ``nonzero`` or found in ``x``; the gradient is analytic
    (:class:`_SparseNBSum`). ``Σ_g lgamma(x_g + 1)`` does not depend on the parameters and
    can be passed in precomputed per cell; with both ``nonzero`` and that sum given, ``x``
    is not read (``None`` is fine).
    """
    if theta.ndim == 1:
        theta = theta.view(1, theta.size(0))
    if x is None and (nonzero is None or lgamma_x_plus_1_sum is None):
        msg = "without x, pass both nonzero and lgamma_x_plus_1_sum"
        raise ValueError(msg)
    if x is not None and x.dim() != 2:
        log_theta_mu_eps = torch.log(theta + mu + eps)
        ll = (
            theta * (torch.log(theta + eps) - log_theta_mu_eps)
            + x * (torch.log(mu + eps) - log_theta_mu_eps)
            + torch.lgamma(x + theta)
            - torch.lgamma(theta)
        ).sum(-1)
    else:
        rows, cols, x_nz = nonzero if nonzero is not None else NonZeroCounts.of(x)
        if theta.size(0) != 1 and theta.shape != mu.shape:
            theta = theta.expand_as(mu)
        ll = _SparseNBSum.apply(mu, theta, rows, cols, x_nz.to(mu.dtype), eps)
    if lgamma_x_plus_1_sum is None:
        lgamma_x_plus_1_sum = torch.lgamma(x + 1).sum(-1)
    return ll - lgamma_x_plus_1_sum


def log_zinb_positive(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, pi: torch.Tensor, eps: float = EPS
) -> torch.Tensor:
    """Log-probability under a zero-inflated NB; ``pi`` is the logit of the dropout."""
    if theta.ndim == 1:
        theta = theta.view(1, theta.size(0))
    softplus_pi = F.softplus(-pi)
    log_theta_eps = torch.log(theta + eps)
    log_theta_mu_eps = torch.log(theta + mu + eps)
    pi_theta_log = -pi + theta * (log_theta_eps - log_theta_mu_eps)
    case_zero = F.softplus(pi_theta_log) - softplus_pi
    case_non_zero = (
        -softplus_pi
        + pi_theta_log
        + x * (torch.log(mu + eps) - log_theta_mu_eps)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )
    return torch.where(x < eps, case_zero, case_non_zero)


def log_mixture_nb(
    x: torch.Tensor,
    mu_1: torch.Tensor,
    mu_2: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor,
    eps: float = EPS,
) -> torch.Tensor:
    """Log-probability under ``sigmoid(pi)·NB(mu_1) + (1 - sigmoid(pi))·NB(mu_2)``.

    Component 1 is the protein background; both share ``theta``. The shared lgamma terms are
    computed once, which is where most of the cost lies.
    """
    if theta.ndim == 1:
        theta = theta.view(1, theta.size(0))
    log_theta_eps = torch.log(theta + eps)
    log_theta_mu_1_eps = torch.log(theta + mu_1 + eps)
    log_theta_mu_2_eps = torch.log(theta + mu_2 + eps)
    lgamma_terms = torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
    log_nb_1 = (
        theta * (log_theta_eps - log_theta_mu_1_eps)
        + x * (torch.log(mu_1 + eps) - log_theta_mu_1_eps)
        + lgamma_terms
    )
    log_nb_2 = (
        theta * (log_theta_eps - log_theta_mu_2_eps)
        + x * (torch.log(mu_2 + eps) - log_theta_mu_2_eps)
        + lgamma_terms
    )
    logsumexp = torch.logsumexp(torch.stack((log_nb_1, log_nb_2 - pi_logits)), dim=0)
    return logsumexp - F.softplus(-pi_logits)


def sample_nb(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Draw NB counts as a Gamma–Poisson mixture (rate clamped at 1e8 as in scvi-tools)."""
    theta = theta.expand_as(mu) if theta.ndim < mu.ndim else theta
    gamma = torch.distributions.Gamma(concentration=theta, rate=theta / mu.clamp_min(EPS)).sample()
    return torch.poisson(torch.clamp(gamma, max=1e8))


def sample_zinb(mu: torch.Tensor, theta: torch.Tensor, pi_logits: torch.Tensor) -> torch.Tensor:
    """Draw zero-inflated NB counts."""
    counts = sample_nb(mu, theta)
    dropout = torch.bernoulli(torch.sigmoid(pi_logits)).bool()
    return counts.masked_fill(dropout, 0.0)


def sample_mixture_nb(
    mu_1: torch.Tensor, mu_2: torch.Tensor, theta: torch.Tensor, pi_logits: torch.Tensor
) -> torch.Tensor:
    """Draw from the NB mixture: pick the component once, then Gamma–Poisson."""
    is_background = torch.bernoulli(torch.sigmoid(pi_logits))
    mu = is_background * mu_1 + (1 - is_background) * mu_2
    return sample_nb(mu, theta)
