"""Metrics: per-token divergences (one file per family, registered by name) and their aggregation."""

from logan.metrics.registry import all_metrics, get_metric, register_metric

__all__ = ["all_metrics", "get_metric", "register_metric"]
