"""VL-MIA baselines (Li et al., NeurIPS 2024, arXiv 2411.02902) and Min-K%++ (Zhang et al., 2024), on the
same forward passes as LOGAN: every one reads the clean pass (and aug-KL its augmented passes).

Per-token values follow VL-MIA's `metric_util.py` except where a docstring below says why not; the
README's "Metric conventions" table lists ours beside the original's and VL-MIA's. At image positions the
"target" is the clean argmax of the same row (so target-based metrics become confidence metrics there),
whatever other parts run. Orientation (VL-MIA's own): low loss / entropy / high confidence = member;
aug-KL: high KL = member. Log-probabilities come from an exact log-softmax (`TokenPair.exact_logp`):
float32's log(1 + rest) would put an error of up to 6e-8 under every near-deterministic token, larger
than the values these metrics take there.

- `ppl`, `mink`: NLL of the target token (Max-K% = Min-K% Prob; K = 1: the loss, log-perplexity).
- `mink_plus_plus`: -(log p_y - mu) / sigma with mu, sigma^2 the mean and variance of log p under p.
- `max_prob_gap`: -(max log p - second-largest log p).
- `max_k_renyi_{05,1,2,inf}_entro` / `min_k_renyi_*_entro`: Renyi entropy per token, Max-K% / Min-K%
  (MaxRenyi-K%); `renyi_05`, `renyi_1`, `renyi_2` are the Max-K% ones under the original's short names.
- `mod_renyi_1_entro` (modified entropy, Song & Mittal), `mod_renyi_05_entro`, `mod_renyi_2_entro` (ModRenyi).
- `aug_kld`: KL(clean || augmented) per token, averaged over VL-MIA's four augmentations (see `augment.py`).
"""

from __future__ import annotations

import math

import torch

from logan.metrics.divergence import exact_logsumexp
from logan.metrics.pair import TokenPair
from logan.metrics.registry import TokenMetric, register_metric

CLAMP = 1e-10
LOG_CLAMP = math.log(CLAMP)
TINY = torch.finfo(torch.float32).tiny


@register_metric(
    "ppl", needs="clean", description="NLL of the target token (K = 1: the loss, log-perplexity)"
)
@register_metric(
    "mink", needs="clean", description="Min-K% Prob: NLL of the target token, mean of the K% largest"
)
def target_nll(pair: TokenPair) -> torch.Tensor:
    """-log p(target). Min-K% Prob's count is max(1, floor(K n)) tokens, the original's rule."""
    return -pair.target_logp


@register_metric(
    "mink_plus_plus",
    needs="clean",
    description="Min-K%++: -(log p_y - mu) / sigma under the clean distribution",
)
def min_k_plus_plus(pair: TokenPair) -> torch.Tensor:
    """-(log p_y - E_p[log p]) / sd_p(log p), as Min-K%++'s reference code, computed from the logits:
    log p_y - E_p[log p] = c_y - E_p[c] and sd_p(log p) = sd_p(c) (the log-partition cancels), with the
    variance as E_p[(c - E_p c)^2] (no cancellation). No floor under sigma beyond keeping a row whose
    variance is 0 in float32 finite. The count of tokens is max(1, floor(K n)) as for every metric (the
    reference code takes floor(K n), an empty mean - NaN - at K n < 1; the original has no Min-K%++)."""
    p = pair.exact_p
    shifted = pair.clean - pair.clean.max(-1, keepdim=True).values
    deviation = shifted - (p * shifted).sum(-1, keepdim=True)
    var = (p * deviation * deviation).sum(-1)
    return -deviation.gather(-1, pair.targets.unsqueeze(-1)).squeeze(-1) / var.clamp(min=TINY).sqrt()


@register_metric("max_prob_gap", needs="clean", description="-(largest log p - second-largest log p)")
def max_prob_gap(pair: TokenPair) -> torch.Tensor:
    """-(the largest log p - the second largest), from the logits (the difference is exact there).

    Two tied top tokens give a gap of 0: the model cannot choose between them. The original and VL-MIA
    take the largest value strictly below the maximum instead, i.e. the gap to the third token, which
    rates a two-way tie as confident (`compat=original` does that)."""
    top2 = pair.clean.topk(2, dim=-1).values
    return -(top2[..., 0] - top2[..., 1])


def renyi_entropy(pair: TokenPair, alpha: float) -> torch.Tensor:
    """Renyi entropy of the clean next-token distribution.

    alpha = 1: the Shannon entropy -sum p log p, exact, with no floor: the references compute it so, and
    a 1e-10 clamp inside the log (LOGAN's earlier rule) floored it at about V * 1e-10 * ln(1e10) = 7.4e-5
    (V = 32000), which decided which near-deterministic tokens Min-K% picked. alpha = 0.5, 2: 1/(1 - a)
    log sum p^a on probabilities clamped below at 1e-10, the floor of VL-MIA's and the original's
    MaxRenyi-K% (kept on purpose so values compare with theirs; at alpha = 0.5 it lifts the entropy of a
    near-deterministic row to about 2 log(1 + V 1e-5) = 0.55 for V = 32000; the upper clamp at 1 - 1e-10
    of their code is a no-op in the original's float32 and moves values by at most 2e-10). alpha = inf:
    -max log p."""
    logp = pair.exact_logp
    if alpha == 1.0:
        return -(pair.exact_p * logp).sum(-1)
    if alpha == float("inf"):
        return -logp.max(-1).values
    return exact_logsumexp(alpha * logp.clamp(min=LOG_CLAMP)) / (1.0 - alpha)


def _entropy(alpha: float) -> TokenMetric:
    return lambda pair: renyi_entropy(pair, alpha)


for _alpha, _tag in ((0.5, "05"), (1.0, "1"), (2.0, "2"), (float("inf"), "inf")):
    _what = f"Renyi-{_alpha:g} entropy of the clean distribution"
    register_metric(
        f"max_k_renyi_{_tag}_entro",
        needs="clean",
        description=f"MaxRenyi-K%: {_what}, mean of the K% largest",
    )(_entropy(_alpha))
    register_metric(
        f"min_k_renyi_{_tag}_entro",
        needs="clean",
        aggregate="min_k",
        description=f"{_what}, mean of the K% smallest",
    )(_entropy(_alpha))
    if _tag != "inf":
        register_metric(
            f"renyi_{_tag}", needs="clean", description=f"{_what} (short name of max_k_renyi_{_tag}_entro)"
        )(_entropy(_alpha))


def modified_renyi(pair: TokenPair, alpha: float) -> torch.Tensor:
    """VL-MIA's modified entropy (alpha = 1) and ModRenyi (alpha != 1) of the target token, on probabilities
    clamped to [1e-10, 1 - 1e-10] (their floors, kept: log(1 - p) needs p < 1).

    log(1 - p) is computed without forming 1 - p (float32 cannot hold 1 - 1e-10): -expm1(log p) for
    p <= 1/2 and, for the top token, the log-sum-exp of the other logits minus the log-partition. Their
    code subtracts p~_y log(1 - p~_y) from a sum weighted by the unclamped p where we leave y out of the
    sum: the two differ by (p_y - p~_y) ln(1e10) <= 2.3e-9. In float32 their clamp at 1 - 1e-10 rounds to
    1, so the original's own run gives NaN (dropped by its nanmean) or +inf on tokens whose p rounds to 1."""
    logp = pair.exact_logp.clamp(LOG_CLAMP, math.log1p(-CLAMP))
    p, log_q = logp.exp(), torch.log(-torch.expm1(logp))
    top = pair.clean.argmax(-1, keepdim=True)
    rest_of_top = torch.logsumexp(pair.clean.scatter(-1, top, float("-inf")), -1, keepdim=True)
    exact_top = rest_of_top - exact_logsumexp(pair.clean).unsqueeze(-1)
    log_q = log_q.scatter(-1, top, exact_top.clamp(min=LOG_CLAMP))
    index = pair.targets.unsqueeze(-1)
    logp_y, log_q_y = logp.gather(-1, index), log_q.gather(-1, index)
    others = torch.ones_like(p, dtype=torch.bool).scatter_(-1, index, False)
    if alpha == 1.0:
        rest = torch.where(others, p * log_q, torch.zeros_like(p)).sum(-1)
        return (-(log_q_y.exp() * logp_y)).squeeze(-1) - rest
    a = abs(1.0 - alpha)
    rest = torch.where(others, p * torch.exp(a * log_q) - p, torch.zeros_like(p)).sum(-1)
    head = (log_q_y.exp() * torch.exp(a * logp_y) - log_q_y.exp()).squeeze(-1)
    return -(head + rest) / a


def _modified(alpha: float) -> TokenMetric:
    return lambda pair: modified_renyi(pair, alpha)


for _alpha, _tag in ((0.5, "05"), (1.0, "1"), (2.0, "2")):
    _what = "modified entropy (Song & Mittal)" if _alpha == 1.0 else f"ModRenyi-{_alpha:g}"
    register_metric(f"mod_renyi_{_tag}_entro", needs="clean", description=f"{_what} of the target token")(
        _modified(_alpha)
    )


@register_metric(
    "aug_kld",
    needs="augment",
    member_when="high",
    description="KL(clean || augmented), mean over VL-MIA's four augmentations",
)
def augmentation_kl(pair: TokenPair) -> torch.Tensor:
    """KL(clean || augmented) per token on the plain softmax; the engine averages it over the four
    augmentations and a sample's value at K = 1 is its mean over tokens. VL-MIA sums over tokens instead:
    a sum grows with the number of tokens (descriptions differ in length), so it ranks length as much as
    membership; the mean does not. `compat=original` gives the original's sum and formula."""
    return pair.kl
