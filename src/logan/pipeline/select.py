"""`logan select`: the optimal std of a tuning run.

For each std the curve is mean(target) - mean(reference) of the per-sample divergence (Max-K% with
K = `selection.k`, on `selection.part`); members diverge less at low noise, so the optimal std is
the curve's minimum (`rule=min_gap`, the original's rule). `max_abs_gap` and `max_tune_auc` (AUC of
target vs reference) are computed beside it, and every part's own optimum (`per_part`) too; all are
recorded in `optimal_std.json`.

    logan select path.output_dir=OUT
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import RunConfig
from logan.data.saved import read_set
from logan.data.sets import SET_FILES
from logan.errors import LoganError
from logan.io import write_json
from logan.metrics.registry import get_metric
from logan.pipeline.common import inherit_settings
from logan.provenance import read_provenance
from logan.report.plots import tuning_curve
from logan.report.scoring import roc_summary
from logan.results import done_stds, load_scores

log = logging.getLogger(__name__)

RULES = ("min_gap", "max_abs_gap", "max_tune_auc")


def curve_point(std: float, values: pd.DataFrame, target: set[str], reference: set[str]) -> dict[str, float]:
    """One std's point of a curve: target mean, reference mean, gap and the target-vs-reference AUC."""
    value = values.value.to_numpy()
    t, r = value[values.sample_id.isin(target).to_numpy()], value[values.sample_id.isin(reference).to_numpy()]
    labels = np.r_[np.ones(len(t)), np.zeros(len(r))]
    auc = roc_summary(labels, -np.r_[t, r])["auc"] if len(t) and len(r) else float("nan")
    return {"std": float(std), "target_mean": float(np.nanmean(t)), "reference_mean": float(np.nanmean(r)),
            "gap": float(np.nanmean(t) - np.nanmean(r)), "tune_auc": float(auc)}


def curves_of(out: Path, k: float, target: set[str], reference: set[str]) -> dict[tuple[str, str], list[dict]]:
    """Every (part, metric)'s curve over the finished stds, reading one std's scores at a time (memory
    grows with the number of images, not with images x std values)."""
    curves: dict[tuple[str, str], list[dict]] = {}
    for std in done_stds(out):
        scores = load_scores(out, [std], k=k)
        for (part, metric), rows in scores.groupby(["part", "metric"]).indices.items():
            curves.setdefault((part, metric), []).append(curve_point(std, scores.iloc[rows], target, reference))
    return curves


def excluded(points: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The curve's points no rule may select, each with why: std 0 (no noise, so every divergence is 0
    there) and points without a finite gap."""
    out = []
    for p in points:
        if p["std"] <= 0:
            out.append({"std": p["std"], "why": "std 0 adds no noise: every divergence is 0 there"})
        elif not np.isfinite(p["gap"]):
            out.append({"std": p["std"], "why": "no finite values at this std"})
    return out


def pick(points: list[dict[str, float]], rule: str) -> float:
    """The std `rule` selects among the curve's points that are not `excluded`."""
    skip = {e["std"] for e in excluded(points)}
    usable = [p for p in points if p["std"] not in skip]
    if not usable:
        raise LoganError("the run holds no std > 0 with finite results (std 0 adds no noise and is never "
                         "selected): run 'logan tune' with std values > 0.")
    if rule == "min_gap":
        return min(usable, key=lambda p: p["gap"])["std"]
    if rule == "max_abs_gap":
        return max(usable, key=lambda p: abs(p["gap"]))["std"]
    return max(usable, key=lambda p: p["tune_auc"] if np.isfinite(p["tune_auc"]) else -1)["std"]


def check_k(cfg: RunConfig) -> None:
    """selection.k must be one of img_metrics.ratio: the curves and classify's tables are read at it."""
    if not any(np.isclose(float(k), cfg.selection.k) for k in cfg.img_metrics.ratio):
        raise LoganError(f"selection.k={cfg.selection.k:g} is not one of img_metrics.ratio "
                         f"({', '.join(f'{float(k):g}' for k in cfg.img_metrics.ratio)}): the tuning curve and "
                         "classify's tables are read at K = selection.k; pick one of them or add it to the list.")


def check_selection(cfg: RunConfig, grid: bool = True) -> None:
    """What selecting a std needs from the settings, checked before tune or select does any work: a
    noise-dependent metric to draw the curve of, selection.metric / part / k among the run's metrics,
    parts and ratios, and (`grid`) a tuning grid with a std > 0."""
    check_k(cfg)
    m, s = cfg.img_metrics, cfg.selection
    noise = [name for name in m.metrics_to_use if get_metric(name).needs == "noise"]
    if not noise:
        raise LoganError(f"img_metrics.metrics_to_use=[{','.join(m.metrics_to_use)}] holds no metric that depends "
                         "on the noise, so there is no std to tune; add one of LOGAN's divergences, e.g. "
                         "max_k_no_norn_kl_div (or run 'logan classify' for the std-independent baselines).")
    if s.metric is not None and s.metric not in noise:
        why = "does not depend on the noise" if s.metric in m.metrics_to_use else "is not in img_metrics.metrics_to_use"
        raise LoganError(f"selection.metric={s.metric} {why}; use one of {', '.join(noise)}.")
    if s.part is not None and s.part not in m.parts:
        raise LoganError(f"selection.part={s.part} is not in img_metrics.parts ({', '.join(m.parts)}).")
    if grid and not any(std > 0 for group in cfg.std_sets() for std in group):
        raise LoganError("noise.std_sets holds only std 0, which adds no noise and is never selected; add std "
                         "values > 0.")


def inherit_selection(cfg: RunConfig, explicit: set[str]) -> RunConfig:
    """`logan select path.output_dir=OUT` reads OUT's parts, metrics and ratios from the run's config."""
    saved = cfg.output_dir / "config.json"
    return inherit_settings(cfg, explicit, saved, ("img_metrics.",), "select") if saved.is_file() else cfg


def select(cfg: RunConfig) -> dict[str, Any]:
    """Compute the curves of a tuning folder, write optimal_std.json and the curve plot."""
    out = cfg.output_dir
    s = cfg.selection
    if s.rule not in RULES:
        raise LoganError(f"selection.rule={s.rule} is unknown; use one of {', '.join(RULES)}.")
    check_selection(cfg, grid=False)
    folder = out / "datasets"
    if not (folder / SET_FILES["target"]).exists():
        raise LoganError(f"{out} is not a tuning folder (no datasets/{SET_FILES['target']}); run 'logan tune' first.")
    target = set(read_set(folder / SET_FILES["target"], "target set").sample_id)
    reference = set(read_set(folder / SET_FILES["reference"], "reference set").sample_id)
    if not done_stds(out):
        raise LoganError(f"{out} holds no finished std yet; run 'logan tune' with path.output_dir={out}.")
    all_curves = curves_of(out, s.k, target, reference)
    if not all_curves:
        raise LoganError(f"selection.k={s.k} is not one of the run's img_metrics.ratio values.")
    parts, found = {p for p, _ in all_curves}, {m for _, m in all_curves}
    part = s.part or cfg.img_metrics.parts[0]
    metrics = [m for m in cfg.img_metrics.metrics_to_use if m in found]
    metric = s.metric or (metrics[0] if metrics else None)
    if metric not in metrics or (part, metric) not in all_curves:
        raise LoganError(
            f"selection.metric={metric} / selection.part={part} are not in this run's results "
            f"(metrics: {', '.join(sorted(found))}; parts: {', '.join(sorted(parts))})."
        )
    curves = {m: all_curves[(part, m)] for m in metrics if (part, m) in all_curves}
    optimal = pick(curves[metric], s.rule)
    per_part = {}
    for other in dict.fromkeys(p for p in cfg.img_metrics.parts if (p, metric) in all_curves):
        points = all_curves[(other, metric)]
        per_part[other] = {"optimal_std": pick(points, s.rule), "curve": points}
    result = {
        "optimal_std": optimal, "selection_metric": metric, "rule": s.rule, "part": part, "k": s.k,
        "alternatives": {rule: pick(curves[metric], rule) for rule in RULES},
        "excluded": excluded(curves[metric]),
        "reference_is_target_nonmembers": reference <= target,
        "n_target": len(target), "n_reference": len(reference),
        "curves": curves,
        "per_part": per_part,
        "provenance": read_provenance(out),
    }
    for point in result["excluded"]:
        log.info("std %g is not a candidate for the optimal std: %s", point["std"], point["why"])
    write_json(out / "optimal_std.json", result)
    tuning_curve(curves, metric, optimal, out / "tuning_curve.png")
    best_gap = next(p for p in curves[metric] if p["std"] == optimal)["gap"]
    if best_gap >= 0:
        log.warning("no std gives mean(target) < mean(reference) for %s: the low-noise regime where members "
                    "diverge less was not found on this grid", metric)
    log.info("optimal std = %g (%s on %s, K=%g, rule %s); curve plot: %s", optimal, metric, part, s.k, s.rule,
             out / "tuning_curve.png")
    return result
