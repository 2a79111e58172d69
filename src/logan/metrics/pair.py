"""`TokenPair`: the clean and noisy logits of the same token positions, with shared intermediates.

Every metric reads the same pair, so one forward pass per (image, std) feeds all of them and common
tensors (log-softmax, the centred log-ratio, ...) are computed once.

The original computes its KLs on probabilities clamped to [1e-10, 1 - 1e-10] and adds eps = 1e-12
inside the logs; those floors cap the log-ratio of a token at ln(1e10) or ln(1e12) and matter at large
noise. They are reproduced here as exact correction terms on top of a precise divergence, so small
divergences keep full float32 precision and large ones match the original's definition.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from logan.metrics.divergence import centred, epsilon_term, exact_log_softmax, kl_from_centred

CLAMP_LOG = math.log(1e-10)  # the original clamps probabilities to [1e-10, 1 - 1e-10]

# (log-weights, weights, centred log-ratio, their KL, noisy log-weights) of one Renyi normalisation
Normalised = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class TokenPair:
    """Clean (and, for divergences, noisy) float32 logits [N, V] over the real vocabulary, with the
    target token of each position (the next token; the clean argmax at image positions)."""

    def __init__(
        self, clean: torch.Tensor, noisy: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> None:
        self.clean = clean.float()
        self.noisy = noisy.float() if noisy is not None else None
        self.targets = targets if targets is not None else self.clean.argmax(-1)
        self._normalised: dict[float, Normalised] = {}

    @property
    def noisy_logits(self) -> torch.Tensor:
        """The noisy logits, for a metric that compares them (a needs='clean' metric gets none)."""
        if self.noisy is None:
            raise ValueError("this pair has no noisy logits: a needs='clean' metric cannot read them")
        return self.noisy

    @cached_property
    def clean_logp(self) -> torch.Tensor:
        return torch.log_softmax(self.clean, dim=-1)

    @cached_property
    def clean_p(self) -> torch.Tensor:
        return self.clean_logp.exp()

    @cached_property
    def exact_logp(self) -> torch.Tensor:
        """The clean log-softmax, exact also for near-deterministic rows (the baselines read it; the
        divergences, whose forms are exact in their own way, read `clean_logp`)."""
        return exact_log_softmax(self.clean)

    @cached_property
    def exact_p(self) -> torch.Tensor:
        return self.exact_logp.exp()

    @cached_property
    def target_logp(self) -> torch.Tensor:
        """log p(target) under the clean distribution, [N]."""
        return self.exact_logp.gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)

    @cached_property
    def centred_delta(self) -> torch.Tensor:
        """d = (clean - noisy) logits centred under the clean distribution (= log p - log q, centred)."""
        return centred(self.clean_p, self.clean - self.noisy_logits)

    @cached_property
    def kl(self) -> torch.Tensor:
        """KL(clean || noisy) on the plain softmax, exact (no clamping)."""
        return kl_from_centred(self.clean_logp, self.centred_delta, self.clean_p)

    @cached_property
    def logp_diff(self) -> torch.Tensor:
        """log p_clean - log p_noisy per vocabulary entry, without rounding of the log-partitions."""
        return self.centred_delta + self.kl.unsqueeze(-1)

    @cached_property
    def noisy_logp(self) -> torch.Tensor:
        return self.clean_logp - self.logp_diff

    @cached_property
    def kl_clamped(self) -> torch.Tensor:
        """The original's no-normalisation KL: sum p_c (log(p_c + eps) - log(q_c + eps)), p_c = max(p, 1e-10)."""
        lp, lq = self.clean_logp, self.noisy_logp
        lp_c, lq_c = lp.clamp(min=CLAMP_LOG), lq.clamp(min=CLAMP_LOG)
        p_c = lp_c.exp()
        floored = (lp < CLAMP_LOG) | (lq < CLAMP_LOG)
        extra = torch.where(
            floored, p_c * (lp_c - lq_c) - self.clean_p * self.logp_diff, torch.zeros_like(lp)
        )
        return (self.kl + extra.sum(-1) + epsilon_term(p_c, lp_c, lq_c)).clamp(min=0.0)

    def normalised(self, alpha: float) -> Normalised:
        """(log-weights, weights, centred log-ratio, their KL, noisy log-weights) of the original's
        p^a / sum p^a, computed once per alpha.

        Probabilities are clamped at 1e-10 first, as the original does (it matters for alpha < 1).
        """
        if alpha not in self._normalised:
            lp, lq = self.clean_logp, self.noisy_logp
            both = (lp >= CLAMP_LOG) & (lq >= CLAMP_LOG)
            diff = torch.where(both, self.logp_diff, lp.clamp(min=CLAMP_LOG) - lq.clamp(min=CLAMP_LOG))
            log_w = torch.log_softmax(alpha * lp.clamp(min=CLAMP_LOG), dim=-1)
            w = log_w.exp()
            d = centred(w, alpha * diff)
            kl = kl_from_centred(log_w, d, w)
            self._normalised[alpha] = (log_w, w, d, kl, log_w - (d + kl.unsqueeze(-1)))
        return self._normalised[alpha]

    def kl_normalised(self, alpha: float) -> torch.Tensor:
        """The original's KL between Renyi-alpha normalisations, eps inside the logs included."""
        log_w, w, _, kl, log_w_noisy = self.normalised(alpha)
        return (kl + epsilon_term(w, log_w, log_w_noisy)).clamp(min=0.0)
