"""VL-MIA baselines (Li et al., NeurIPS 2024, arXiv 2411.02902) and Min-K%++ (Zhang et al., 2024), on the
same forward passes as LOGAN: every one reads the clean pass (and aug-KL its augmented passes).

Per-token values follow VL-MIA's `metric_util.py`: probabilities clamped to [1e-10, 1 - 1e-10] for the
entropy terms; at image positions the "target" is the clean argmax (so target-based metrics become
confidence metrics there). Orientation (VL-MIA's own): low loss / entropy / high confidence = member;
aug-KL: high KL = member.

- `ppl`, `mink`: NLL of the target token (Max-K% = Min-K% Prob; K = 1: the loss, log-perplexity).
- `mink_plus_plus`: -(log p_y - mu) / sigma with mu, sigma^2 the mean and variance of log p under p.
- `max_prob_gap`: -(max log p - second-largest log p).
- `max_k_renyi_{05,1,2,inf}_entro` / `min_k_renyi_*_entro`: Renyi entropy per token, Max-K% / Min-K%
  (MaxRenyi-K%); `renyi_05`, `renyi_1`, `renyi_2` are the Max-K% ones under the original's short names.
- `mod_renyi_1_entro` (modified entropy, Song & Mittal), `mod_renyi_05_entro`, `mod_renyi_2_entro` (ModRenyi).
- `aug_kld`: KL(clean || augmented) averaged over VL-MIA's four augmentations (see `augment.py`).
"""

from __future__ import annotations

import math

import torch

from logan.metrics.pair import TokenPair
from logan.metrics.registry import register_metric

CLAMP = 1e-10


def _clamped(pair: TokenPair) -> torch.Tensor:
    return pair.clean_p.clamp(CLAMP, 1 - CLAMP)


@register_metric("ppl", needs="clean",
                 description="NLL of the target token (K = 1: the loss, log-perplexity)")
@register_metric("mink", needs="clean",
                 description="Min-K% Prob: NLL of the target token, mean of the K% largest")
def target_nll(pair: TokenPair) -> torch.Tensor:
    return -pair.target_logp


@register_metric("mink_plus_plus", needs="clean",
                 description="Min-K%++: -(log p_y - mu) / sigma under the clean distribution")
def min_k_plus_plus(pair: TokenPair) -> torch.Tensor:
    logp, p = pair.clean_logp, pair.clean_p
    mu = (p * logp).sum(-1)
    var = (p * logp * logp).sum(-1) - mu * mu
    return -(pair.target_logp - mu) / var.clamp(min=1e-12).sqrt()


@register_metric("max_prob_gap", needs="clean", description="-(largest log p - second-largest log p)")
def max_prob_gap(pair: TokenPair) -> torch.Tensor:
    top2 = pair.clean_logp.topk(2, dim=-1).values
    return -(top2[..., 0] - top2[..., 1])


def renyi_entropy(pair: TokenPair, alpha: float) -> torch.Tensor:
    p = _clamped(pair)
    if alpha == 1.0:
        return -(p * p.log()).sum(-1)
    if alpha == float("inf"):
        return -pair.clean_logp.max(-1).values
    return torch.log((p ** alpha).sum(-1)) / (1.0 - alpha)


def _entropy(alpha: float):
    return lambda pair: renyi_entropy(pair, alpha)


for _alpha, _tag in ((0.5, "05"), (1.0, "1"), (2.0, "2"), (float("inf"), "inf")):
    _what = f"Renyi-{_alpha:g} entropy of the clean distribution"
    register_metric(f"max_k_renyi_{_tag}_entro", needs="clean",
                    description=f"MaxRenyi-K%: {_what}, mean of the K% largest")(_entropy(_alpha))
    register_metric(f"min_k_renyi_{_tag}_entro", needs="clean", aggregate="min_k",
                    description=f"{_what}, mean of the K% smallest")(_entropy(_alpha))
    if _tag != "inf":
        register_metric(f"renyi_{_tag}", needs="clean",
                        description=f"{_what} (short name of max_k_renyi_{_tag}_entro)")(_entropy(_alpha))


def modified_renyi(pair: TokenPair, alpha: float) -> torch.Tensor:
    """VL-MIA's modified entropy (alpha = 1) and ModRenyi (alpha != 1) of the target token.

    log(1 - p) is computed without forming 1 - p (float32 cannot hold 1 - 1e-10): -expm1(log p) for
    p <= 1/2 and, for the top token, the log-sum-exp of the other logits minus the log-partition.
    """
    logp = pair.clean_logp.clamp(math.log(CLAMP), math.log1p(-CLAMP))
    p, log_q = logp.exp(), torch.log(-torch.expm1(logp))
    top = pair.clean.argmax(-1, keepdim=True)
    rest_of_top = torch.logsumexp(pair.clean.scatter(-1, top, float("-inf")), -1, keepdim=True)
    exact_top = rest_of_top - torch.logsumexp(pair.clean, -1, keepdim=True)
    log_q = log_q.scatter(-1, top, exact_top.clamp(min=math.log(CLAMP)))
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


def _modified(alpha: float):
    return lambda pair: modified_renyi(pair, alpha)


for _alpha, _tag in ((0.5, "05"), (1.0, "1"), (2.0, "2")):
    _what = "modified entropy (Song & Mittal)" if _alpha == 1.0 else f"ModRenyi-{_alpha:g}"
    register_metric(f"mod_renyi_{_tag}_entro", needs="clean",
                    description=f"{_what} of the target token")(_modified(_alpha))


@register_metric("aug_kld", needs="augment", member_when="high",
                 description="KL(clean || augmented), mean over VL-MIA's four augmentations")
def augmentation_kl(pair: TokenPair) -> torch.Tensor:
    return pair.kl  # KL(clean || augmented) on the plain softmax; the engine averages it over augmentations
