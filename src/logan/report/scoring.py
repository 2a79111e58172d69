"""Membership scoring of one score vector (higher score = more likely member).

- AUC: area under the ROC curve; `auc_ci_low/high`: a stratified bootstrap 95 % interval (members and
  non-members resampled separately, 1000 resamples, seeded), as reviewers of MIA papers ask.
- acc: best balanced accuracy over thresholds, max(1 - (FPR + FNR) / 2), as LiRA / the original.
- TPR at FPR t (5 %, 1 %, 0.1 %): the largest TPR among ROC points with FPR <= t (no interpolation),
  reported with the FPR actually reached and the number of non-members above the threshold. With
  fewer than 1/t non-members an FPR of t cannot be resolved: `tpr_at_*_estimable` is false and the
  value (reached at FPR 0) is a conservative bound, not an estimate.
- Cross-fitted runs (`selection.split=crossfit`): every value is the mean over the two folds, each fold
  scored at the std chosen on the other (`fold_mean_summary`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = {"5pct": 0.05, "1pct": 0.01, "0.1pct": 0.001}
N_BOOTSTRAP = 1000


def roc_summary(labels: np.ndarray, scores: np.ndarray, bootstrap_seed: int | None = None) -> dict:
    """AUC (with a bootstrap interval if a seed is given), best balanced accuracy, TPR at low FPR."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    n_members, n_nonmembers = int(labels.sum()), int((1 - labels).sum())
    out: dict = {"n_members": n_members, "n_nonmembers": n_nonmembers}
    if n_members == 0 or n_nonmembers == 0:
        return out | {"auc": float("nan"), "acc": float("nan")} | {
            f"tpr_at_{k}_fpr": float("nan") for k in FPR_TARGETS}
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out["auc"] = float(roc_auc_score(labels, scores))
    if bootstrap_seed is not None:
        out["auc_ci_low"], out["auc_ci_high"] = bootstrap_auc_interval(labels, scores, bootstrap_seed)
    out["acc"] = float(np.max(1 - (fpr + (1 - tpr)) / 2))
    for key, target in FPR_TARGETS.items():
        best = int(np.argmax(np.where(fpr <= target, tpr, -1.0)))
        out[f"tpr_at_{key}_fpr"] = float(tpr[best])
        out[f"fpr_at_{key}_fpr"] = float(fpr[best])
        out[f"fp_at_{key}_fpr"] = int(round(fpr[best] * n_nonmembers))
        out[f"tpr_at_{key}_fpr_estimable"] = bool(n_nonmembers * target >= 1)
    return out


def bootstrap_auc_interval(labels: np.ndarray, scores: np.ndarray, seed: int,
                           resamples: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Stratified bootstrap 95 % interval of the AUC (rank formula, all resamples at once)."""
    return _interval(bootstrap_aucs(labels, scores, seed, resamples))


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, seed: int, resamples: int = N_BOOTSTRAP) -> np.ndarray:
    """The AUCs of `resamples` stratified bootstrap resamples (members and non-members drawn separately)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xB007])
    pos, neg = scores[labels == 1], scores[labels == 0]
    draws_pos = pos[rng.integers(0, len(pos), (resamples, len(pos)))]
    draws_neg = neg[rng.integers(0, len(neg), (resamples, len(neg)))]
    ranks = rankdata(np.concatenate([draws_pos, draws_neg], axis=1), axis=1)
    n_pos, n_neg = len(pos), len(neg)
    return (ranks[:, :n_pos].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _interval(aucs: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def fold_mean_summary(folds: list[tuple[np.ndarray, np.ndarray]], bootstrap_seed: int | None = None) -> dict:
    """Cross-fitted scoring: `roc_summary` of each fold (labels, scores), averaged over the folds (counts
    summed). Scores of two folds come from two noise levels and are not on one scale, so the folds are not
    pooled: the AUC is the mean of the fold AUCs, its interval a stratified bootstrap within every fold."""
    each = [roc_summary(labels, scores) for labels, scores in folds]
    out: dict = {}
    for name in dict.fromkeys(name for summary in each for name in summary):
        if name.startswith(("n_", "fp_at_")):
            out[name] = int(sum(summary.get(name, 0) for summary in each))
        elif name.endswith("_estimable"):
            out[name] = all(summary.get(name, False) for summary in each)
        else:
            out[name] = float(np.mean([summary.get(name, np.nan) for summary in each]))
    out["fold_auc"] = [summary["auc"] for summary in each]
    if bootstrap_seed is not None and all(np.isfinite(out["fold_auc"])):
        resampled = [bootstrap_aucs(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64),
                                    bootstrap_seed + i) for i, (labels, scores) in enumerate(folds)]
        out["auc_ci_low"], out["auc_ci_high"] = _interval(np.mean(resampled, axis=0))
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64))
    return fpr, tpr
