"""Numerically careful divergences between two next-token distributions given as logits (float32).

Everything is written in terms of log-weights log w (the clean distribution, or a normalisation of it)
and a centred log-ratio d (E_w[d] = 0), so identical inputs give exactly 0 and small perturbations are
not swamped by float32 rounding:

    KL(P||Q)   = L_w(-d)
    D_a(P||Q)  = L_w(-d) + L_w((a - 1) d) / (a - 1)
    L_w(x)     = log E_w[exp(x)] = log1p(E_w[exp(x) - 1 - x])   for centred x (no first-order term),
                 with exp(x) - 1 - x from its Taylor series near 0; logsumexp(log w + x) for large x.
"""

from __future__ import annotations

import math

import torch

_LARGE = 20.0  # above this max(x), use the log-space form (no overflow, no underflow of w * e^x)
_TAYLOR = 0.1  # below this |x|, exp(x) - 1 - x from its series (no cancellation)
LOG_EPS = math.log(1e-12)  # the original's epsilon inside log(p + eps)


def expm1_minus_x(x: torch.Tensor) -> torch.Tensor:
    """exp(x) - 1 - x, accurate for small |x| (it is x^2/2 + x^3/6 + ...)."""
    series = x * x * (0.5 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x / 720))))
    direct = torch.expm1(x.clamp(max=_LARGE)) - x
    return torch.where(x.abs() < _TAYLOR, series, direct)


def log_mean_exp_centred(
    log_weights: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """log sum_v w_v exp(x_v) over the last axis, for x centred under w (sum_v w_v x_v = 0); `weights`
    = exp(log_weights) when the caller already has it."""
    weights = log_weights.exp() if weights is None else weights
    near = torch.log1p((weights * expm1_minus_x(x)).sum(-1))
    far = torch.logsumexp(log_weights + x, dim=-1)
    return torch.where(x.max(dim=-1).values <= _LARGE, near, far)


def centred(weights: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """delta minus its mean under `weights` (the shift that cancels in every divergence below)."""
    return delta - (weights * delta).sum(-1, keepdim=True)


def kl_from_centred(
    log_weights: torch.Tensor, d: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(P||Q) per row; log P = log_weights, d = log P - log Q centred under P."""
    return log_mean_exp_centred(log_weights, -d, weights).clamp(min=0.0)


def renyi_from_centred(
    log_weights: torch.Tensor,
    d: torch.Tensor,
    alpha: float,
    kl: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Renyi divergence D_alpha(P||Q) per row, alpha != 1 (`kl`: KL(P||Q) when already computed)."""
    kl = kl_from_centred(log_weights, d, weights) if kl is None else kl
    value = kl + log_mean_exp_centred(log_weights, (alpha - 1.0) * d, weights) / (alpha - 1.0)
    return value.clamp(min=0.0)


def _split_top(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, x - max, log1p of the sum of exp(x - max) over all but one maximal entry), last axis kept."""
    top, at = x.max(-1, keepdim=True)
    shifted = x - top
    return top, shifted, torch.log1p(shifted.exp().scatter(-1, at, 0.0).sum(-1, keepdim=True))


def exact_log_softmax(x: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last axis, exact also where one entry takes nearly all the mass: its value is
    -log1p(rest), where float32's log(1 + rest) is 0 for rest below 6e-8."""
    _, shifted, log1p_rest = _split_top(x)
    return shifted - log1p_rest


def exact_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last axis as max + log1p(rest): relative precision also near 0 (one dominant entry)."""
    top, _, log1p_rest = _split_top(x)
    return (top + log1p_rest).squeeze(-1)


def epsilon_term(weights: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum_v w_v [log(p_v + eps) - log p_v - log(q_v + eps) + log q_v]: the original's epsilon, exactly."""
    soft = torch.nn.functional.softplus
    return (weights * (soft(LOG_EPS - log_p) - soft(LOG_EPS - log_q))).sum(-1)
