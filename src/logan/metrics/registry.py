"""Metric registry: `@register_metric("name", ...)` on a per-token function `(TokenPair) -> Tensor[N]`.

Every metric returns one value per token and says how it is used:

- `needs`: "noise" (clean vs noisy pass, per std: LOGAN), "clean" (the clean pass and the target tokens
  only: perplexity, Min-K%, entropies), or "augment" (clean vs the VL-MIA augmentations: aug-KL);
- `aggregate`: "max_k" (mean of the K % largest values; K = 0: the largest) or "min_k" (the smallest);
- `member_when`: "low" if members have lower values (score = -value) or "high" (score = +value), so every
  score is "higher = more likely member" and the orientation is written down once, here.

A metric family is one module listed in `_FAMILIES`; adding a metric is one function with the decorator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from logan.errors import unknown
from logan.metrics.pair import TokenPair

TokenMetric = Callable[[TokenPair], torch.Tensor]

_FAMILIES = ("logan.metrics.logan", "logan.metrics.vlmia")
_METRICS: dict[str, MetricSpec] = {}


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


def register_metric(name: str, *, needs: str = "noise", aggregate: str = "max_k",
                    member_when: str = "low") -> Callable[[TokenMetric], TokenMetric]:
    def wrap(fn: TokenMetric) -> TokenMetric:
        _METRICS[name] = MetricSpec(name, fn, needs, aggregate, member_when)
        return fn

    return wrap


def all_metrics() -> dict[str, MetricSpec]:
    for module in _FAMILIES:
        importlib.import_module(module)
    return dict(_METRICS)


def get_metric(name: str) -> MetricSpec:
    metrics = all_metrics()
    if name not in metrics:
        raise unknown("metric", name, metrics)
    return metrics[name]
