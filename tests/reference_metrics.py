"""Float64 references of LOGAN's per-token metrics in both conventions (`img_metrics.compat`), written from
the definitions in the README's "Metric conventions" table. They never call LOGAN code: they take float64
copies of the float32 logits the metrics receive."""

from __future__ import annotations

import math

import numpy as np

FLIP = math.log1p(1e-12) - math.log(1e-12)  # the KL between two distinct one-hots, eps = 1e-12 in the logs
RTOL, ATOL = 1e-5, 1e-9


def close(got: np.ndarray, want: np.ndarray) -> bool:
    """Within 1e-5 relative or 1e-9 absolute, elementwise."""
    diff = np.abs(got - want)
    return bool(np.all((diff <= ATOL) | (diff <= RTOL * np.abs(want))))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def renormalised(logits: np.ndarray, alpha: float) -> np.ndarray:
    """The original's Renyi-alpha normalisation: p clamped below at 1e-10, p^a / sum p^a."""
    p = np.maximum(np.exp(log_softmax(logits)), 1e-10) ** alpha
    return p / p.sum(-1, keepdims=True)


def floored_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(-1)


def renyi_divergence(clean: np.ndarray, noisy: np.ndarray, alpha: float, compat: str) -> np.ndarray:
    lp, lq = log_softmax(clean), log_softmax(noisy)
    if compat == "logan":  # exact: 1/(a-1) log sum p^a q^(1-a)
        x = alpha * lp + (1 - alpha) * lq
        top = x.max(-1)
        return (top + np.log(np.exp(x - top[:, None]).sum(-1))) / (alpha - 1)
    p, q = np.clip(np.exp(lp), 1e-12, 1.0), np.clip(np.exp(lq), 1e-12, 1.0)
    return np.log((p ** alpha * q ** (1 - alpha)).sum(-1) + 1e-12) / (alpha - 1)


def modified_entropy(logp: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Song & Mittal's modified entropy (alpha = 1) / VL-MIA's ModRenyi on p clamped to [1e-10, 1 - 1e-10]."""
    p = np.clip(np.exp(logp), 1e-10, 1 - 1e-10)
    rows = np.arange(len(targets))
    py = p[rows, targets]
    others = np.ones_like(p, dtype=bool)
    others[rows, targets] = False
    if alpha == 1.0:
        return -(1 - py) * np.log(py) - np.where(others, p * np.log(1 - p), 0).sum(-1)
    a = abs(1 - alpha)
    rest = np.where(others, p * (1 - p) ** a - p, 0).sum(-1)
    return -((1 - py) * py ** a - (1 - py) + rest) / a


def per_token(metric: str, compat: str, clean: np.ndarray, noisy: np.ndarray, targets: np.ndarray,
              augmented: list[np.ndarray]) -> np.ndarray:
    """A metric's value at each row: clean / noisy logits [n, V], targets [n]."""
    lp = log_softmax(clean)
    p = np.exp(lp)
    rows = np.arange(len(targets))
    if metric == "max_k_no_norn_kl_div":
        value = floored_kl(np.maximum(p, 1e-10), np.maximum(np.exp(log_softmax(noisy)), 1e-10))
        return np.maximum(value, 0.0) if compat == "logan" else value
    if metric.startswith("max_k_renyi_") and metric.endswith("_kl_div"):
        tag = metric.split("_")[3]
        if tag == "inf":
            return np.where(clean.argmax(-1) != noisy.argmax(-1), FLIP, 0.0)
        alpha = {"05": 0.5, "1": 1.0, "2": 2.0}[tag]
        value = floored_kl(renormalised(clean, alpha), renormalised(noisy, alpha))
        return np.maximum(value, 0.0) if compat == "logan" else value
    if metric.startswith("max_k_renyi_divergence_"):
        alpha = {"025": 0.25, "05": 0.5, "2": 2.0, "4": 4.0}[metric.rsplit("_", 1)[1]]
        return renyi_divergence(clean, noisy, alpha, compat)
    if metric in ("ppl", "mink"):
        return -lp[rows, targets]
    if metric == "mink_plus_plus":
        mu = (p * lp).sum(-1)
        sigma = np.sqrt((p * (lp - mu[:, None]) ** 2).sum(-1))
        return -(lp[rows, targets] - mu) / sigma
    if metric == "max_prob_gap":
        top = lp.max(-1)
        if compat == "logan":  # the two largest: a tie is a gap of 0
            second = np.sort(lp, -1)[:, -2]
        else:  # the largest value strictly below the maximum
            second = np.where(lp < top[:, None], lp, -np.inf).max(-1)
        return -(top - second)
    if metric.startswith("mod_renyi_"):
        return modified_entropy(lp, targets, {"05": 0.5, "1": 1.0, "2": 2.0}[metric.split("_")[2]])
    if metric.endswith("_entro") or metric.startswith("renyi_"):
        tag = metric.split("_")[-2] if metric.endswith("_entro") else metric.split("_")[1]
        if tag == "1":
            return -(p * lp).sum(-1)  # Shannon, no floor
        if tag == "inf":
            return -lp.max(-1)
        alpha = {"05": 0.5, "2": 2.0}[tag]
        return np.log((np.maximum(p, 1e-10) ** alpha).sum(-1)) / (1 - alpha)
    if metric == "aug_kld":
        values = []
        for aug in augmented:
            lq = log_softmax(aug)
            values.append((p * (lp - lq)).sum(-1) if compat == "logan" else (p * (lp - np.exp(lq))).sum(-1))
        return np.mean(values, axis=0)
    raise KeyError(metric)
