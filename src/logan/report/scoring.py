"""Membership scoring of one score vector (higher score = more likely member).

- AUC: area under the ROC curve (scikit-learn).
- acc: best balanced accuracy over thresholds, max(1 - (FPR + FNR) / 2), as LiRA / the original.
- TPR at FPR t: the largest TPR among ROC points with FPR <= t (no interpolation), reported with the
  FPR actually reached; with fewer than 1/t non-members, FPR <= t only holds at FPR = 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = {"5pct": 0.05, "1pct": 0.01}


def roc_summary(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | int]:
    """AUC, best balanced accuracy and TPR at 5 % / 1 % FPR of `scores` against 0/1 `labels`."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    n_members, n_nonmembers = int(labels.sum()), int((1 - labels).sum())
    out: dict[str, float | int] = {"n_members": n_members, "n_nonmembers": n_nonmembers}
    if n_members == 0 or n_nonmembers == 0:
        return out | {"auc": float("nan"), "acc": float("nan")} | {
            f"tpr_at_{k}_fpr": float("nan") for k in FPR_TARGETS}
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out["auc"] = float(roc_auc_score(labels, scores))
    out["acc"] = float(np.max(1 - (fpr + (1 - tpr)) / 2))
    for key, target in FPR_TARGETS.items():
        ok = fpr <= target
        best = int(np.argmax(np.where(ok, tpr, -1.0)))
        out[f"tpr_at_{key}_fpr"] = float(tpr[best])
        out[f"fpr_at_{key}_fpr"] = float(fpr[best])
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64))
    return fpr, tpr
