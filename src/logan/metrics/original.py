"""The original code's definitions (Damien-Lo/LOGAN-VLM-MIA at 225fb67c), for `img_metrics.compat=original`.

Published LOGAN numbers were computed with these. LOGAN's own definitions (the default, `compat=logan`)
differ where the README's "Metric conventions" table says why; here are the original's, registered under
the same names for its convention:

- `max_k_renyi_divergence_*`: probabilities clipped to [1e-12, 1], then
  1/(a - 1) log(sum_v p^a q^(1-a) + 1e-12): nonzero at identical inputs (negative for a < 1), and at
  large noise a = 2 / 4 come out 1.9 % / 12 % below the exact divergence;
- `max_prob_gap`: the gap from the largest log-probability to the next *distinct* value (a row whose
  two top tokens tie gets the gap to the third);
- `aug_kld`: sum_v p (log p - q) per token, the augmented *probabilities* q standing where its formula
  reads log-probabilities, averaged over the four augmentations and summed over the part's tokens.

Its slicing: text parts are the part's own rows, row t predicting token t + 1 (`Encoded.part_positions`),
and because its per-token loop pairs row t with token t + 1, every metric but the Renyi divergences and
aug-KL drops each part's last row (`loop_rows`; for `img`, 575 of LLaVA's 576 rows). Everything else
(the KLs and their floors, the entropies, Min-K%, Min-K%++, the modified entropies) is defined as in
LOGAN's convention. AUC orientation stays LOGAN's; `auc_in_original_orientation` gives the AUC as the
original's `evaluate` reports it (it ranks larger LOGAN divergence as member).

Not reproduced: float32 rounding (the original computes in float32: at tiny divergences it returns
noise up to 9e-7 and negative means; where a probability rounds to 1.0 its modified entropy is NaN,
dropped by nanmean, or +inf) and its batch padding (it slices parts from the end of right-padded
sequences, so a shorter sequence's parts run into padding and neighbouring rows). The values are the
original's definitions computed exactly: the original run one image at a time without float32 rounding.
"""

from __future__ import annotations

import math

import torch

from logan.metrics.divergence import renyi_from_centred
from logan.metrics.pair import TokenPair
from logan.metrics.registry import TokenMetric, register_metric

CLIP = 1e-12  # the original's clip of both distributions, and its epsilon inside the log
LOG_CLIP = math.log(CLIP)
RENYI_ALPHAS = {"025": 0.25, "05": 0.5, "2": 2.0, "4": 4.0}
FAR = 20.0  # |log sum p^a q^(1-a)| above which the clipped sum is taken directly
# the metrics whose original reads every row of a part (its other metrics loop over rows 1..n-1)
EVERY_ROW = frozenset({*(f"max_k_renyi_divergence_{tag}" for tag in RENYI_ALPHAS), "aug_kld"})
# the metrics whose AUC the original's evaluate reports as 1 - LOGAN's: it ranks by -score with
# score = -divergence, i.e. larger divergence = member
RANKED_HIGH = frozenset(
    {
        "max_k_no_norn_kl_div",
        "max_k_renyi_05_kl_div",
        "max_k_renyi_1_kl_div",
        "max_k_renyi_2_kl_div",
        "max_k_renyi_inf_kl_div",
        *(f"max_k_renyi_divergence_{tag}" for tag in RENYI_ALPHAS),
    }
)


def loop_rows(metric: str, rows: slice) -> slice:
    """The rows of a part the original scores `metric` on: all of them, or all but the last."""
    return rows if metric in EVERY_ROW else slice(rows.start, max(rows.start, rows.stop - 1))


def auc_in_original_orientation(metric: str, auc: float) -> float:
    """The AUC the original's evaluate reports for a metric LOGAN scores at `auc`."""
    return 1.0 - auc if metric in RANKED_HIGH else auc


def clipped_renyi(pair: TokenPair, alpha: float) -> torch.Tensor:
    """1/(a - 1) log(sum_v p_c^a q_c^(1-a) + 1e-12), p_c, q_c = max(p, 1e-12), max(q, 1e-12).

    Near identical inputs the exact divergence D carries the precision: log(S_c + eps) = (a - 1) D +
    log1p((corr + eps) / S), S = exp((a - 1) D), corr the change the clip makes to the floored entries
    (each computed as a difference, without cancellation). Far from them (|(a - 1) D| > 20, or the clip
    removes more than half of S) the clipped sum is taken directly: its float32 error is then relative."""
    exact = renyi_from_centred(pair.clean_logp, pair.centred_delta, alpha, pair.kl, pair.clean_p)
    lp, lq = pair.clean_logp, pair.noisy_logp
    weighted = alpha * lp + (1 - alpha) * lq
    clipped = alpha * lp.clamp(min=LOG_CLIP) + (1 - alpha) * lq.clamp(min=LOG_CLIP)
    floored = (lp < LOG_CLIP) | (lq < LOG_CLIP)
    change = torch.where(floored, -clipped.exp() * torch.expm1(weighted - clipped), torch.zeros_like(lp))
    change = change.sum(-1)
    log_s = (alpha - 1) * exact
    ratio = (change + CLIP) * torch.exp(-log_s.clamp(-FAR, FAR))
    near = exact + torch.log1p(ratio) / (alpha - 1)
    total = torch.logsumexp(clipped, -1)
    far = torch.logaddexp(total, torch.full_like(total, LOG_CLIP)) / (alpha - 1)
    return torch.where((log_s.abs() <= FAR) & (ratio > -0.5), near, far)


def _renyi(alpha: float) -> TokenMetric:
    return lambda pair: clipped_renyi(pair, alpha)


for _tag, _alpha in RENYI_ALPHAS.items():
    register_metric(
        f"max_k_renyi_divergence_{_tag}",
        compat="original",
        description=f"the original's Renyi divergence D_{_alpha:g}: p, q clipped at 1e-12, "
        "+1e-12 inside the log",
    )(_renyi(_alpha))


@register_metric(
    "max_prob_gap",
    needs="clean",
    compat="original",
    description="the original's gap: -(largest log p - the next distinct value)",
)
def next_distinct_gap(pair: TokenPair) -> torch.Tensor:
    """-(max log p - the largest log p strictly below it); 0 where every entry ties."""
    top = pair.clean.max(-1, keepdim=True).values
    below = torch.where(pair.clean < top, pair.clean, float("-inf")).max(-1).values
    gap = top.squeeze(-1) - below
    return -torch.where(torch.isfinite(gap), gap, torch.zeros_like(gap))


@register_metric(
    "aug_kld",
    needs="augment",
    member_when="high",
    aggregate="max_k_sum",
    compat="original",
    description="the original's aug-KL: sum over tokens of sum p (log p - q), mean over the augmentations",
)
def probability_kl(pair: TokenPair) -> torch.Tensor:
    """sum_v p (log p - q), q = the augmented pass's probabilities (its formula), per token; summed over
    the part's tokens by `max_k_sum` (K = 1: all of them)."""
    return (pair.clean_p * (pair.clean_logp - torch.softmax(pair.noisy_logits, -1))).sum(-1)
