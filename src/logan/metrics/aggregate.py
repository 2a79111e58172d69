"""Max-K% / Min-K% aggregation of per-token values into one value per sample.

Max-K% (LOGAN, MaxRenyi-K%, Min-K% Prob on the NLL): the mean of the K% largest values; Min-K% (the
VL-MIA Min-K% Renyi entropies): the mean of the K% smallest; Max-K% sum (the original's aug-KL, a sum
over tokens): their sum. K = 0 means the single extreme token; the count is max(1, floor(K * n)), the
original's rule for every metric it has (Min-K%++'s reference code takes floor(K * n) tokens, an empty
mean at K * n < 1; we keep the original's rule there too: a NaN score cannot be ranked).
"""

from __future__ import annotations

import numpy as np


def k_means(values: np.ndarray, ratios: list[float], largest: bool = True, total: bool = False) -> np.ndarray:
    """Mean (`total`: sum) of the top-K% (or bottom-K%) values for each ratio K; NaN for an empty slice."""
    n = len(values)
    if n == 0:
        return np.full(len(ratios), np.nan)
    ordered = np.sort(values.astype(np.float64))
    if largest:
        ordered = ordered[::-1]
    sums = np.cumsum(ordered)
    counts = np.array([max(1, int(float(k) * n)) for k in ratios])
    return sums[counts - 1] if total else sums[counts - 1] / counts


def aggregate(values: np.ndarray, ratios: list[float], how: str) -> np.ndarray:
    """A metric's per-sample values at each K, by its registry's `aggregate` (max_k, min_k, max_k_sum)."""
    return k_means(values, ratios, largest=how != "min_k", total=how == "max_k_sum")


def max_k_means(values: np.ndarray, ratios: list[float]) -> np.ndarray:
    return k_means(values, ratios, largest=True)


def min_k_means(values: np.ndarray, ratios: list[float]) -> np.ndarray:
    return k_means(values, ratios, largest=False)
