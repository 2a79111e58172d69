"""LOGAN's nine divergences between the clean-image and noisy-image next-token distributions.

Names are the original's (`img_metrics.metrics_to_use`, including its "norn" spelling). Each returns
one value per token; the `max_k_` prefix says that a sample's score is the mean of its top-K% tokens
(see `aggregate.py`), and every score is oriented "higher = more likely member" by negation.

- `max_k_*_kl_div`: KL(clean || noisy) on a normalisation of the probabilities: none (plain softmax),
  Renyi-alpha p^a / sum p^a for alpha 0.5, 1, 2 (probabilities clamped at 1e-10 first, as the
  original), and alpha = inf (one-hot at the argmax: ln(1e12) = 27.63 when the argmax flips, else 0).
  The original's floors (probabilities clamped below at 1e-10, eps = 1e-12 inside the logs) are kept on
  purpose, in both conventions: they are part of how the original defines these normalisations, they
  give exactly 0 at identical inputs, and they cap a token's log-ratio at ln(1e10) / ln(1e12). The
  original's clamp at 1 - 1e-10 is a no-op in its float32 and is not applied. A row's value is clamped
  at 0 (the original's floored KL can come out at -1e-10 on rows where the floors break normalisation).
- `max_k_renyi_divergence_*`: the Renyi divergence D_alpha(clean || noisy) for alpha 0.25, 0.5, 2, 4,
  exact, on the exact softmax (no floors): 0 at identical inputs and monotone in alpha. The original
  clips probabilities at 1e-12 and adds 1e-12 inside the log, which makes identical inputs nonzero and
  puts alpha = 2 / 4 1.9 % / 12 % below the divergence at large noise; `compat=original` reproduces it
  (`metrics/original.py`).
"""

from __future__ import annotations

import math

import torch

from logan.metrics.divergence import renyi_from_centred
from logan.metrics.pair import TokenPair
from logan.metrics.registry import TokenMetric, register_metric

ARGMAX_FLIP_KL = math.log1p(1e-12) - math.log(1e-12)  # the original's KL between two distinct one-hots


@register_metric(
    "max_k_no_norn_kl_div", description="KL(clean || noisy) on the plain softmax, with the original's floors"
)
def kl_plain(pair: TokenPair) -> torch.Tensor:
    return pair.kl_clamped


def _kl_normalised(alpha: float) -> TokenMetric:
    def metric(pair: TokenPair) -> torch.Tensor:
        return pair.kl_normalised(alpha)

    return metric


for _alpha, _name in ((0.5, "05"), (1.0, "1"), (2.0, "2")):
    register_metric(
        f"max_k_renyi_{_name}_kl_div",
        description=f"KL(clean || noisy) on the Renyi-{_alpha:g} "
        "normalisation p^a / sum p^a (probabilities clamped at 1e-10)",
    )(_kl_normalised(_alpha))


@register_metric(
    "max_k_renyi_inf_kl_div",
    description="KL of the one-hot argmaxes: ln(1e12) where the argmax flips, else 0",
)
def kl_argmax(pair: TokenPair) -> torch.Tensor:
    flipped = pair.clean.argmax(-1) != pair.noisy_logits.argmax(-1)
    return flipped.float() * ARGMAX_FLIP_KL


def _renyi(alpha: float) -> TokenMetric:
    def metric(pair: TokenPair) -> torch.Tensor:
        return renyi_from_centred(pair.clean_logp, pair.centred_delta, alpha, pair.kl, pair.clean_p)

    return metric


for _alpha, _name in ((0.25, "025"), (0.5, "05"), (2.0, "2"), (4.0, "4")):
    _about = f"Renyi divergence D_{_alpha:g}(clean || noisy) on the exact softmax"
    register_metric(f"max_k_renyi_divergence_{_name}", description=_about)(_renyi(_alpha))
