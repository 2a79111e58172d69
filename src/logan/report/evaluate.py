"""Classification results of a run folder: metrics.json, per-sample scores, plots, report, summary table.

Orientation: every score is "higher = more likely member". Each metric states its direction once, in
its registry entry: LOGAN's divergences and the loss / entropy baselines give score = -value (members
diverge less, are predicted with lower loss); aug-KL gives score = +value (VL-MIA's convention).
Nothing is flipped after the fact. Under `img_metrics.compat=original` every row also carries
`auc_original_orientation`: the AUC as the original's evaluate reports it (it ranks larger LOGAN
divergence as member, so 1 - ours for those nine; the baselines agree in orientation).

Which samples count: at an optimal_std.json written with `selection.split=holdout` only the samples the
std was not chosen on; with `crossfit` every sample, at the std chosen on the other fold (each value is
then the mean over the folds). The plan, its samples and whether the std was chosen with membership
labels are written to std_plan.json and stated in the report.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from logan.config import RunConfig
from logan.errors import LoganError, count
from logan.io import write_json, write_parquet
from logan.metrics.original import auc_in_original_orientation
from logan.metrics.registry import get_metric
from logan.pipeline.common import StdPlan
from logan.report.blind import save_blind_baseline
from logan.report.html import ReportContext, std_text, write_report
from logan.report.plots import roc_curves, score_histograms
from logan.report.results_file import write_classify_results
from logan.report.scoring import fold_mean_summary, roc_summary
from logan.report.verdicts import per_image, write_verdicts
from logan.results import load_baselines, load_scores

log = logging.getLogger(__name__)

KEYS = ["std", "part", "metric", "k"]
BEST_NOTE = ("Best metric per part = the highest AUC on these same samples: that pick used their membership "
             "labels, so its AUC is optimistic (label-informed).")


def score_table(cfg: RunConfig, target: pd.DataFrame, stds: list[float]) -> pd.DataFrame:
    """Per-sample scores of the target set: one row per sample x std x part x metric x K.

    Std-independent baselines are repeated at every std so each std's table is complete.
    """
    ids = set(target.sample_id)
    noise = load_scores(cfg.output_dir, stds)
    fixed = load_baselines(cfg.output_dir)
    frames = [noise[noise.sample_id.isin(ids)]]
    for std in stds:
        frames.append(fixed[fixed.sample_id.isin(ids)].assign(std=float(std)))
    scores = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else noise
    if scores.empty:
        raise LoganError(f"{cfg.output_dir} holds no results for std {stds}; run 'logan classify' on it first.")
    sign = scores.metric.map({m: get_metric(m).sign for m in scores.metric.unique()}).to_numpy(dtype=float)
    scores["score"] = sign * scores.value.to_numpy()
    shown = {row.sample_id: row.path or row.name for row in target.itertuples(index=False)}
    scores["image"] = scores.sample_id.map(shown)  # the file, or the dataset row's image name
    return scores[["sample_id", "image", "label", *KEYS, "value", "score"]]


def metric_rows(scores: pd.DataFrame, ci_k: float, seed: int, compat: str = "logan") -> list[dict[str, Any]]:
    """One metrics.json row per std x part x metric x K (bootstrap interval at K = ci_k); non-finite
    scores are dropped and counted. With a `fold` column (crossfit) one row per part x metric x K, the mean
    over the folds, each at its own std (`fold_std`). `compat=original` adds the AUC in the original's
    orientation."""
    crossfit = "fold" in scores
    rows = []
    for key, group in scores.groupby(KEYS[1:] if crossfit else KEYS, sort=True):
        ok = np.isfinite(group.score.to_numpy())
        metric, k = key[-2], key[-1]
        spec = get_metric(metric)
        seed_here = seed if np.isclose(k, ci_k) else None
        if crossfit:
            folds = [g for _, g in group.groupby("fold", sort=True)]
            fold_std = [float(g["std"].iloc[0]) for g in folds]
            kept = [g[np.isfinite(g.score.to_numpy())] for g in folds]
            summary = fold_mean_summary([(g.label.to_numpy(), g.score.to_numpy()) for g in kept], seed_here)
            std, extra = (fold_std[0] if len(set(fold_std)) == 1 else float("nan")), {"fold_std": fold_std}
        else:
            summary = roc_summary(group.label.to_numpy()[ok], group.score.to_numpy()[ok], bootstrap_seed=seed_here)
            std, extra = float(key[0]), {}
        rows.append({"metric": metric, "part": key[-3], "std": std, "k": float(k), **summary, **extra,
                     "n_dropped": int((~ok).sum()), "needs": spec.needs,
                     "orientation": f"higher score = member (score = {'-' if spec.member_when == 'low' else '+'}value)"})
        if compat == "original":
            rows[-1]["auc_original_orientation"] = auc_in_original_orientation(metric, summary["auc"])
    return rows


def estimable_only(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every TPR at an FPR this many non-members cannot resolve set to None (its value there is
    a bound reached at FPR 0, not an estimate), for summaries that show the number without the flag."""
    return {k: None if k.startswith("tpr_at_") and not k.endswith("_estimable")
            and row.get(f"{k}_estimable") is False else v for k, v in row.items()}


def format_tpr(row: dict[str, Any], key: str) -> str:
    value = row.get(f"tpr_at_{key}_fpr", float("nan"))
    return f"{value:7.3f}" if row.get(f"tpr_at_{key}_fpr_estimable", True) else "    n/e"


def summary_table(rows: list[dict[str, Any]], k: float, std: float | None = None, note: str = "") -> str:
    """Text table (part x metric) at one std (None: each part at the std of its rows) and K: AUC [95 % CI],
    TPR at 5 / 1 / 0.1 % FPR; `note` (how the std was chosen) below it."""
    at = [r for r in rows if (std is None or r["std"] == std) and np.isclose(r["k"], k)]
    title = f"std = {std:g}" if std is not None else "each part at its own selected std"
    lines = [f"{title}; K = {k:g}; higher score = member; n/e = not estimable with this many non-members",
             f"{'part':<10} {'metric':<28} {'std':>8} {'AUC':>6} {'95% CI':>13} {'TPR@5%':>7} {'TPR@1%':>7} "
             f"{'TPR@.1%':>7}"]
    for r in at:
        ci = f"[{r.get('auc_ci_low', np.nan):.2f}, {r.get('auc_ci_high', np.nan):.2f}]"
        lines.append(f"{r['part']:<10} {r['metric']:<28} {std_text(r):>8} {r['auc']:6.3f} {ci:>13} "
                     f"{format_tpr(r, '5pct')} {format_tpr(r, '1pct')} {format_tpr(r, '0.1pct')}")
    return "\n".join(lines + ([f"note: {note}"] if note else []))


def best_per_part(rows: list[dict[str, Any]], std: float | None, k: float,
                  needs: str | None = "noise") -> dict[str, dict]:
    """The highest-AUC row per part at one std (None: any std) and K (LOGAN's metrics only by default)."""
    best: dict[str, dict] = {}
    for r in rows:
        if (std is None or r["std"] == std) and np.isclose(r["k"], k) and (needs is None or r["needs"] == needs) \
                and np.isfinite(r["auc"]) and r["auc"] > best.get(r["part"], {"auc": -1})["auc"]:
            best[r["part"]] = r
    return best


def _order(rows: list[dict[str, Any]], parts: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple:
        return (np.nan_to_num(r["std"], nan=-1.0), parts.index(r["part"]) if r["part"] in parts else len(parts),
                metrics.index(r["metric"]) if r["metric"] in metrics else len(metrics), r["k"])

    return sorted(rows, key=key)


def evaluate(cfg: RunConfig, target: pd.DataFrame, plan: StdPlan,
             reference: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Write metrics.json, scores.parquet, std_plan.json, the per-image verdicts against `reference` (known
    non-members, scored in the same run), plots, the blind baseline and report.html. Images without a label
    are left out of the AUC tables (an unlabelled target set has none) and get their verdicts."""
    out, k = cfg.output_dir, cfg.selection.k
    every = score_table(cfg, target if reference is None else pd.concat([target, reference]), plan.stds)
    scores = every[every.sample_id.isin(set(target.sample_id))]
    scores = scores[plan.mask(scores)]
    if plan.folds:
        scores = scores.assign(fold=plan.fold_of(scores.sample_id))
    record = plan.record(plan.reported(target))
    write_json(out / "std_plan.json", record)
    labelled = scores[scores.label >= 0]
    rows = _order(metric_rows(labelled, k, cfg.seed, cfg.img_metrics.compat), cfg.img_metrics.parts,
                  cfg.img_metrics.metrics_to_use) if labelled.label.nunique() == 2 else []
    if len(labelled) < len(scores):
        log.info("%s: %s", "no AUC table" if not rows else "AUC tables on the labelled images only",
                 count(scores.sample_id[scores.label < 0].nunique(), "target image has", "target images have")
                 + " no membership label (their verdicts are in verdicts.csv)")
    write_json(out / "metrics.json", rows)
    write_parquet(out / "scores.parquet", scores)
    verdicts = None
    if reference is not None:
        table, verdicts = per_image(cfg, plan.source, scores, every[every.sample_id.isin(set(reference.sample_id))])
        write_verdicts(table, verdicts, out)
    blind = save_blind_baseline(target[target.label >= 0], out / "blind_baseline.json", cfg.seed)
    plots = {}
    for std in ([None] if plan.own_std else plan.stds) if rows else []:
        suffix = "" if std is None or len(plan.stds) == 1 else f"_std_{std:g}"
        chosen = {}
        for part, row in best_per_part(rows, std, k).items():
            picked = labelled[(labelled.part == part) & (labelled.metric == row["metric"])
                              & np.isclose(labelled.k, k) & np.isfinite(labelled.score)]
            picked = picked if std is None else picked[picked["std"] == std]
            for fold, group in picked.groupby("fold") if plan.folds else [(None, picked)]:
                name = (f"{part}: {row['metric']} (AUC {row['auc']:.3f})" if fold is None else
                        f"{part} fold {fold}: {row['metric']} at std {row['fold_std'][fold]:g} "
                        f"(AUC {row['fold_auc'][fold]:.3f})")
                chosen[name] = (group.label.to_numpy(), group.score.to_numpy())
        where = f"std = {std:g}" if std is not None else "each part at its own std"
        roc_curves(chosen, out / f"roc{suffix}.png", f"LOGAN membership ROC, {where}, K = {k:g}")
        score_histograms(chosen, out / f"histograms{suffix}.png")
        plots[std] = [out / f"roc{suffix}.png", out / f"histograms{suffix}.png"]
        for part, row in best_per_part(rows, std, k).items():
            log.info("best LOGAN metric on %s at std %s: %s, AUC %.3f", part, std_text(row), row["metric"],
                     row["auc"])
    if rows:
        log.info("%s", BEST_NOTE)
    if plan.note:
        log.info("std: %s", plan.note)
    write_report(cfg, rows, blind, plots, out / "report.html", plan, BEST_NOTE,
                 ReportContext.of(target, reference, verdicts))
    log.info("wrote %s, %s, %s, %s and %s", out / "metrics.json", out / "scores.parquet", out / "verdicts.csv",
             out / "blind_baseline.json", out / "report.html")
    write_classify_results(cfg, rows, record, labelled, blind, [p for paths in plots.values() for p in paths],
                           verdicts)
    return rows
