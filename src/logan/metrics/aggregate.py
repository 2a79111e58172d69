"""Max-K% aggregation (LOGAN): a sample's divergence is the mean of its K% largest per-token values.

K = 0 means the single largest token; the count is max(1, floor(K * n)) as in the original.
"""

from __future__ import annotations

import numpy as np


def max_k_means(values: np.ndarray, ratios: list[float]) -> np.ndarray:
    """Mean of the top-K% values for each ratio K; NaN for an empty slice."""
    n = len(values)
    if n == 0:
        return np.full(len(ratios), np.nan)
    ordered = np.sort(values.astype(np.float64))[::-1]
    sums = np.cumsum(ordered)
    counts = np.array([max(1, int(float(k) * n)) for k in ratios])
    return sums[counts - 1] / counts
