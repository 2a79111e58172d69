"""Metric registry: `@register_metric("name")` on a per-token function `(TokenPair) -> Tensor[N]`.

A metric family is one module listed in `_FAMILIES`; adding a metric is one function with the decorator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from logan.errors import unknown
from logan.metrics.pair import TokenPair

TokenMetric = Callable[[TokenPair], torch.Tensor]

_FAMILIES = ("logan.metrics.logan",)
_METRICS: dict[str, TokenMetric] = {}


def register_metric(name: str) -> Callable[[TokenMetric], TokenMetric]:
    def wrap(fn: TokenMetric) -> TokenMetric:
        _METRICS[name] = fn
        return fn

    return wrap


def all_metrics() -> dict[str, TokenMetric]:
    for module in _FAMILIES:
        importlib.import_module(module)
    return dict(_METRICS)


def get_metric(name: str) -> TokenMetric:
    metrics = all_metrics()
    if name not in metrics:
        raise unknown("metric", name, metrics)
    return metrics[name]
