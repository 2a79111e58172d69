"""Classification results of a run folder: metrics.json, per-sample scores, ROC plot, summary table.

Orientation: every score is "higher = more likely member"; for LOGAN's divergences the score is
minus the Max-K% divergence (members diverge less under low noise). Nothing is flipped after the fact.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from logan.config import RunConfig
from logan.errors import LoganError
from logan.io import write_json, write_parquet
from logan.report.blind import save_blind_baseline
from logan.report.plots import roc_curves
from logan.report.scoring import roc_summary
from logan.results import load_scores, std_folder

log = logging.getLogger(__name__)

ORIENTATION = "higher score = more likely member (score = -divergence)"
LOSS_BASELINE = "loss_baseline"
KEYS = ["std", "part", "metric", "k"]


def score_table(cfg: RunConfig, target: pd.DataFrame, stds: list[float]) -> pd.DataFrame:
    """Per-sample scores of the target set at the given stds (one row per sample x std x part x metric x K)."""
    scores = load_scores(cfg.output_dir, stds)
    scores = scores[scores.sample_id.isin(set(target.image))].copy()
    if scores.empty:
        raise LoganError(f"{cfg.output_dir} holds no results for std {stds}; run 'logan classify' on it first.")
    scores["score"] = -scores["divergence"]
    return scores.rename(columns={"sample_id": "image"})[["image", "label", *KEYS, "divergence", "score"]]


def loss_scores(cfg: RunConfig, target: pd.DataFrame, stds: list[float]) -> pd.DataFrame:
    """The LOSS baseline beside LOGAN: minus the clean pass's mean NLL per part (same forward passes)."""
    frames = []
    for std in stds:
        path = std_folder(cfg.output_dir, std) / "losses.parquet"
        if not path.exists():
            continue
        losses = pd.read_parquet(path)
        losses = losses[losses.sample_id.isin(set(target.image))]
        if losses.sample_id.nunique() < len(target):
            continue  # raw losses were saved for a subset only (img_metrics.get_raw_meta_examples)
        frames.append(pd.DataFrame({"image": losses.sample_id, "label": losses.label, "std": float(std),
                                    "part": losses.part, "metric": LOSS_BASELINE, "k": 1.0,
                                    "divergence": losses.clean_loss, "score": -losses.clean_loss}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def metric_rows(scores: pd.DataFrame) -> list[dict[str, Any]]:
    """One metrics.json row per std x part x metric x K; non-finite scores are dropped and counted."""
    rows = []
    for (std, part, metric, k), group in scores.groupby(KEYS, sort=True):
        ok = np.isfinite(group.score.to_numpy())
        summary = roc_summary(group.label.to_numpy()[ok], group.score.to_numpy()[ok])
        orientation = ORIENTATION if metric != LOSS_BASELINE else "higher score = more likely member (score = -clean NLL)"
        rows.append({"metric": metric, "part": part, "std": float(std), "k": float(k), **summary,
                     "n_dropped": int((~ok).sum()), "orientation": orientation})
    return rows


def summary_table(rows: list[dict[str, Any]], k: float, std: float) -> str:
    """Text table (part x metric) at one std: AUC and TPR at low FPR at K = k, and the best AUC over K."""
    at_std = [r for r in rows if r["std"] == std]
    lines = [f"std = {std:g}; K = {k:g} (best over K shown for reference: it is chosen on the same data)",
             f"{'part':<10} {'metric':<28} {'AUC':>6} {'TPR@5%':>7} {'TPR@1%':>7} {'bestK AUC':>10}"]
    for part in dict.fromkeys(r["part"] for r in at_std):
        for metric in dict.fromkeys(r["metric"] for r in at_std if r["part"] == part):
            group = [r for r in at_std if r["part"] == part and r["metric"] == metric]
            fixed = [r for r in group if np.isclose(r["k"], k)]
            best = max(group, key=lambda r: r["auc"] if np.isfinite(r["auc"]) else -1)
            if not fixed:
                continue
            r = fixed[0]
            lines.append(f"{part:<10} {metric:<28} {r['auc']:6.3f} {r['tpr_at_5pct_fpr']:7.3f} "
                         f"{r['tpr_at_1pct_fpr']:7.3f} {best['auc']:6.3f}@{best['k']:<3g}")
    return "\n".join(lines)


def evaluate(cfg: RunConfig, target: pd.DataFrame, stds: list[float]) -> list[dict[str, Any]]:
    """Write metrics.json, scores.parquet and roc.png for the target set at `stds`; log the table."""
    out = cfg.output_dir
    scores = score_table(cfg, target, stds)
    scores = pd.concat([scores, loss_scores(cfg, target, stds)], ignore_index=True)
    parts, metrics = cfg.img_metrics.parts, [*cfg.img_metrics.metrics_to_use, LOSS_BASELINE]
    rows = sorted(metric_rows(scores), key=lambda r: (r["std"], parts.index(r["part"]) if r["part"] in parts
                                                      else len(parts), metrics.index(r["metric"]), r["k"]))
    write_json(out / "metrics.json", rows)
    write_parquet(out / "scores.parquet", scores)
    k = cfg.selection.k
    for std in stds:
        curves = {}
        for part in cfg.img_metrics.parts:
            candidates = [r for r in rows if r["std"] == std and r["part"] == part and np.isclose(r["k"], k)
                          and r["metric"] != LOSS_BASELINE]
            if not candidates:
                continue
            best = max(candidates, key=lambda r: r["auc"] if np.isfinite(r["auc"]) else -1)
            chosen = scores[(scores["std"] == std) & (scores.part == part) & (scores.metric == best["metric"])
                            & np.isclose(scores.k, k)]
            chosen = chosen[np.isfinite(chosen.score)]
            curves[f"{part}: {best['metric']} (AUC {best['auc']:.3f})"] = (chosen.label.to_numpy(),
                                                                          chosen.score.to_numpy())
        suffix = "" if len(stds) == 1 else f"_std_{std:g}"
        roc_curves(curves, out / f"roc{suffix}.png", f"LOGAN membership ROC, std = {std:g}, K = {k:g}")
        log.info("classification results (%s):\n%s", ORIENTATION, summary_table(rows, k, std))
    save_blind_baseline(target, out / "blind_baseline.json", cfg.seed)
    log.info("wrote %s, %s, %s and ROC plots", out / "metrics.json", out / "scores.parquet",
             out / "blind_baseline.json")
    return rows
