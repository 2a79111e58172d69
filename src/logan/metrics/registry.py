"""Metric registry: `@register_metric("name", ...)` on a per-token function `(TokenPair) -> Tensor[N]`.

Every metric returns one value per token and says how it is used:

- `needs`: "noise" (clean vs noisy pass, per std: LOGAN), "clean" (the clean pass and the target tokens
  only: perplexity, Min-K%, entropies), or "augment" (clean vs the VL-MIA augmentations: aug-KL);
- `aggregate`: "max_k" (mean of the K % largest values; K = 0: the largest), "min_k" (the smallest) or
  "max_k_sum" (their sum: the original's aug-KL);
- `member_when`: "low" if members have lower values (score = -value) or "high" (score = +value), so every
  score is "higher = more likely member" and the orientation is written down once, here.

A metric family is one module listed in `_FAMILIES`; adding a metric is one function with the decorator.

Conventions (`img_metrics.compat`): "logan" (the default: LOGAN's documented definitions) or "original"
(the original code's, to reproduce published numbers). A metric the original defines otherwise is
registered once more with `compat="original"` (`metrics/original.py`); `get_metric(name, compat)` gives
the convention's definition, LOGAN's where the two agree. `DEFINITIONS` names each convention's set of
definitions in every run's fingerprint, so a run folder never mixes results of two.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from logan.errors import unknown
from logan.metrics.pair import TokenPair

TokenMetric = Callable[[TokenPair], torch.Tensor]

_FAMILIES = ("logan.metrics.logan", "logan.metrics.vlmia", "logan.metrics.original")
COMPAT = ("logan", "original")
# bump a convention's entry whenever one of its definitions (a formula, a floor, a slicing) changes
DEFINITIONS = {"logan": "logan-2", "original": "original-225fb67c-1"}
_METRICS: dict[str, MetricSpec] = {}                               # LOGAN's definitions
_OVERRIDES: dict[str, dict[str, MetricSpec]] = {"original": {}}    # a convention's own, where it differs


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: TokenMetric
    needs: str = "noise"
    aggregate: str = "max_k"
    member_when: str = "low"

    @property
    def sign(self) -> float:
        """score = sign * value, so that a higher score means "more likely member"."""
        return -1.0 if self.member_when == "low" else 1.0


def register_metric(name: str, *, needs: str = "noise", aggregate: str = "max_k", member_when: str = "low",
                    compat: str = "logan") -> Callable[[TokenMetric], TokenMetric]:
    def wrap(fn: TokenMetric) -> TokenMetric:
        (_METRICS if compat == "logan" else _OVERRIDES[compat])[name] = MetricSpec(name, fn, needs, aggregate,
                                                                                   member_when)
        return fn

    return wrap


def all_metrics(compat: str = "logan") -> dict[str, MetricSpec]:
    """Every metric by name, as the convention `compat` defines it."""
    for module in _FAMILIES:
        importlib.import_module(module)
    return {**_METRICS, **_OVERRIDES.get(compat, {})}


def get_metric(name: str, compat: str = "logan") -> MetricSpec:
    metrics = all_metrics(compat)
    if name not in metrics:
        raise unknown("metric", name, metrics)
    return metrics[name]
