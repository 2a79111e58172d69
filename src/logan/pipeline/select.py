"""`logan select`: the optimal std of a tuning run.

For each std the curve holds mean(target) - mean(reference) of the per-sample divergence (Max-K% with
K = `selection.k`, on `selection.part`) and the AUC of target vs reference (members diverge less, so a
target set that holds members ranks below the known non-members where the noise level reveals them).
The optimal std maximises that AUC (`rule=max_tune_auc`, the default: it does not depend on the scale of
the divergence, which grows with the noise) or minimises the gap (`rule=min_gap`: the rule the original's
README describes; the original's code has no selection step); `max_abs_gap` is the third. Every rule's
choice and every part's own optimum (`per_part`) are recorded in `optimal_std.json`. README, "Optimal
std", compares the rules on held-out samples (benchmarks/bench_selection.py).

With the reference set = the target's non-members (the seed's first mode) every curve compares the
target with its own non-members: the choice used membership labels, and optimal_std.json says so
(`label_informed`). `selection.split=holdout` chooses the std on a selection part of the target set
(stratified by label, seeded) and classify then reports AUCs on the rest only; `selection.split=crossfit`
chooses one std per fold of two, and classify scores each sample at the std chosen on the other fold.

    logan select path.output_dir=OUT
    logan select path.output_dir=OUT selection.split=holdout selection.fraction=0.5
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
from logan.report.results_file import write_tune_results
from logan.report.scoring import roc_summary
from logan.results import done_stds, load_scores

log = logging.getLogger(__name__)

RULES = ("max_tune_auc", "min_gap", "max_abs_gap")


def curve_point(std: float, values: pd.DataFrame, target: set[str], reference: set[str]) -> dict[str, float]:
    """One std's point of a curve: target mean, reference mean, gap and the target-vs-reference AUC."""
    value = values.value.to_numpy()
    t, r = value[values.sample_id.isin(target).to_numpy()], value[values.sample_id.isin(reference).to_numpy()]
    labels = np.r_[np.ones(len(t)), np.zeros(len(r))]
    auc = roc_summary(labels, -np.r_[t, r])["auc"] if len(t) and len(r) else float("nan")
    return {
        "std": float(std),
        "target_mean": float(np.nanmean(t)),
        "reference_mean": float(np.nanmean(r)),
        "gap": float(np.nanmean(t) - np.nanmean(r)),
        "tune_auc": float(auc),
    }


def curves_of(
    out: Path, k: float, sets: list[tuple[set[str], set[str]]]
) -> list[dict[tuple[str, str], list[dict]]]:
    """Every (part, metric)'s curve over the finished stds, for each (target, reference) pair of `sets`,
    reading one std's scores at a time (memory grows with the number of images, not images x std values)."""
    curves: list[dict[tuple[str, str], list[dict]]] = [{} for _ in sets]
    for std in done_stds(out):
        scores = load_scores(out, [std], k=k)
        for (part, metric), rows in scores.groupby(["part", "metric"]).indices.items():
            for found, (target, reference) in zip(curves, sets):
                found.setdefault((part, metric), []).append(
                    curve_point(std, scores.iloc[rows], target, reference)
                )
    return curves


def split_target(target: pd.DataFrame, fraction: float, seed: int) -> list[list[str]]:
    """Two folds of the target set's images, stratified by label and seeded: fold 0 holds round(fraction x n)
    of each label's n images (at least one, and one left for fold 1). The draw depends on the set of
    images and the seed, not on the order of the list."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5E1EC7])
    folds: list[list[str]] = [[], []]
    for label in (1, 0):
        images = sorted(target.sample_id[target.label == label])
        if len(images) < 2:
            raise LoganError(
                f"selection.split needs at least 2 {'members' if label else 'non-members'} in the "
                f"target set to put one on each side (it holds {len(images)}); use selection.split=none."
            )
        n = min(max(round(fraction * len(images)), 1), len(images) - 1)
        order = rng.permutation(len(images))
        folds[0] += [images[i] for i in order[:n]]
        folds[1] += [images[i] for i in order[n:]]
    return [sorted(fold) for fold in folds]


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
        raise LoganError(
            "the run holds no std > 0 with finite results (std 0 adds no noise and is never "
            "selected): run 'logan tune' with std values > 0."
        )
    if rule == "min_gap":
        return min(usable, key=lambda p: p["gap"])["std"]
    if rule == "max_abs_gap":
        return max(usable, key=lambda p: abs(p["gap"]))["std"]
    return max(usable, key=lambda p: p["tune_auc"] if np.isfinite(p["tune_auc"]) else -1)["std"]


def check_k(cfg: RunConfig) -> None:
    """selection.k must be one of img_metrics.ratio: the curves and classify's tables are read at it."""
    if not any(np.isclose(float(k), cfg.selection.k) for k in cfg.img_metrics.ratio):
        raise LoganError(
            f"selection.k={cfg.selection.k:g} is not one of img_metrics.ratio "
            f"({', '.join(f'{float(k):g}' for k in cfg.img_metrics.ratio)}): the tuning curve and "
            "classify's tables are read at K = selection.k; pick one of them or add it to the list."
        )


def check_selection(cfg: RunConfig, grid: bool = True) -> None:
    """What selecting a std needs from the settings, checked before tune or select does any work: a
    noise-dependent metric to draw the curve of, selection.metric / part / k among the run's metrics,
    parts and ratios, and (`grid`) a tuning grid with a std > 0."""
    check_k(cfg)
    m, s = cfg.img_metrics, cfg.selection
    noise = [name for name in m.metrics_to_use if get_metric(name).needs == "noise"]
    if not noise:
        raise LoganError(
            f"img_metrics.metrics_to_use=[{','.join(m.metrics_to_use)}] holds no metric that depends "
            "on the noise, so there is no std to tune; add one of LOGAN's divergences, e.g. "
            "max_k_no_norn_kl_div (or run 'logan classify' for the std-independent baselines)."
        )
    if s.metric is not None and s.metric not in noise:
        why = (
            "does not depend on the noise"
            if s.metric in m.metrics_to_use
            else "is not in img_metrics.metrics_to_use"
        )
        raise LoganError(f"selection.metric={s.metric} {why}; use one of {', '.join(noise)}.")
    if s.part is not None and s.part not in m.parts:
        raise LoganError(f"selection.part={s.part} is not in img_metrics.parts ({', '.join(m.parts)}).")
    if grid and not any(std > 0 for group in cfg.std_sets() for std in group):
        raise LoganError(
            "noise.std_sets holds only std 0, which adds no noise and is never selected; add std values > 0."
        )


def inherit_selection(cfg: RunConfig, explicit: set[str]) -> RunConfig:
    """`logan select path.output_dir=OUT` reads OUT's parts, metrics and ratios from the run's config."""
    saved = cfg.output_dir / "config.json"
    return inherit_settings(cfg, explicit, saved, ("img_metrics.",), "select") if saved.is_file() else cfg


def choose(cfg: RunConfig, all_curves: dict[tuple[str, str], list[dict]]) -> dict[str, Any]:
    """The optimal std of one set of curves by selection.rule / metric / part, with the other rules' choices
    and every part's own optimum."""
    s = cfg.selection
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
    per_part = {}
    for other in dict.fromkeys(p for p in cfg.img_metrics.parts if (p, metric) in all_curves):
        points = all_curves[(other, metric)]
        per_part[other] = {"optimal_std": pick(points, s.rule), "curve": points}
    return {
        "optimal_std": pick(curves[metric], s.rule),
        "selection_metric": metric,
        "rule": s.rule,
        "part": part,
        "k": s.k,
        "alternatives": {rule: pick(curves[metric], rule) for rule in RULES},
        "curves": curves,
        "per_part": per_part,
    }


def label_note(same: bool, split: str) -> str:
    """One plain sentence on whether the choice used membership labels, and on which samples."""
    if same:
        used = (
            "The reference set is the target's non-members, so every curve, and every rule on it (min_gap, "
            "max_abs_gap, max_tune_auc), used membership labels"
        )
        return (
            used
            + {
                "none": (
                    " of the very samples classify then scores: AUCs at this std are optimistic "
                    "(selection.split=holdout or crossfit chooses it on other samples)."
                ),
                "holdout": (
                    " of the selection part only; classify at this file reports AUCs on the held-out "
                    "evaluation part."
                ),
                "crossfit": (
                    " of one fold per choice; classify at this file scores each sample at the std chosen on "
                    "the other fold (the top-level optimal_std, chosen on all samples, is for reference)."
                ),
            }[split]
        )
    unlabelled = (
        "The reference set is a separate list of known non-members: no rule used membership labels (the "
        "target set enters the curves unlabelled)"
    )
    return (
        unlabelled
        + {
            "none": ", but the std was chosen on the samples classify then scores (selection.split=holdout keeps them "
            "apart).",
            "holdout": "; classify at this file reports AUCs on the held-out evaluation part only.",
            "crossfit": "; classify at this file scores each sample at the std chosen on the other fold.",
        }[split]
    )


def select(cfg: RunConfig, command: str = "select") -> dict[str, Any]:
    """Compute the curves of a tuning folder, write optimal_std.json, the curve plot and results.json (for
    `command`: tune ends with this step)."""
    out = cfg.output_dir
    s = cfg.selection
    if s.rule not in RULES:
        raise LoganError(f"selection.rule={s.rule} is unknown; use one of {', '.join(RULES)}.")
    check_selection(cfg, grid=False)
    folder = out / "datasets"
    if not (folder / SET_FILES["target"]).exists():
        raise LoganError(
            f"{out} is not a tuning folder (no datasets/{SET_FILES['target']}); run 'logan tune' first."
        )
    target_set = read_set(folder / SET_FILES["target"], "target set")
    target = set(target_set.sample_id)
    reference = set(read_set(folder / SET_FILES["reference"], "reference set").sample_id)
    same = reference <= target  # the seed's first mode: the reference set is the target's non-members
    if not done_stds(out):
        raise LoganError(f"{out} holds no finished std yet; run 'logan tune' with path.output_dir={out}.")
    folds = split_target(target_set, s.fraction, cfg.seed) if s.split != "none" else []

    def on(samples: set[str]) -> tuple[set[str], set[str]]:
        return samples, (reference & samples if same else reference)

    sets = {
        "none": [on(target)],
        "holdout": [on(set(folds[0]) if folds else target)],
        "crossfit": [on(target), *(on(set(f)) for f in folds)],
    }[s.split]
    found = curves_of(out, s.k, sets)
    chosen = [choose(cfg, curves) for curves in found]
    result = chosen[0]
    curves, metric, optimal = result.pop("curves"), result["selection_metric"], result["optimal_std"]
    result |= {
        "reference_is_target_nonmembers": same,
        "n_target": len(sets[0][0]),
        "n_reference": len(sets[0][1]),
        "label_informed": {
            "selection": same,
            "alternatives": {rule: same for rule in RULES},
            "per_part": same,
            "auc_on_other_samples": s.split != "none",
            "note": label_note(same, s.split),
        },
        "split": _split_record(cfg, folds, chosen[1:]) if folds else None,
        "excluded": excluded(curves[metric]),
        "provenance": read_provenance(out),
        "curves": curves,
    }
    for point in result["excluded"]:
        log.info("std %g is not a candidate for the optimal std: %s", point["std"], point["why"])
    result["per_part"] = result.pop("per_part")  # the long entries last
    write_json(out / "optimal_std.json", result)
    tuning_curve(
        curves, metric, optimal, out / "tuning_curve.png", "tune_auc" if s.rule == "max_tune_auc" else "gap"
    )
    best = next(p for p in curves[metric] if p["std"] == optimal)
    if best["gap"] >= 0 or not best["tune_auc"] > 0.5:
        log.warning(
            "at the optimal std the target set does not diverge less than the reference set for %s (gap "
            "%.3g, AUC %.3f): the low-noise regime where members diverge less was not found on this grid",
            metric,
            best["gap"],
            best["tune_auc"],
        )
    log.info(
        "optimal std = %g (%s on %s, K=%g, rule %s%s); curve plot: %s",
        optimal,
        metric,
        result["part"],
        s.k,
        s.rule,
        "" if s.split == "none" else f", split {s.split}",
        out / "tuning_curve.png",
    )
    log.info("%s", result["label_informed"]["note"])
    write_tune_results(cfg, command, result, found[0])
    return result


def _split_record(
    cfg: RunConfig, folds: list[list[str]], fold_choices: list[dict[str, Any]]
) -> dict[str, Any]:
    """optimal_std.json's `split`: the mode, how it was drawn and which samples are on which side."""
    s = cfg.selection
    record: dict[str, Any] = {
        "mode": s.split,
        "fraction": s.fraction,
        "seed": cfg.seed,
        "stratified_by": "label",
    }
    if s.split == "holdout":
        return record | {"selection": folds[0], "evaluation": folds[1]}
    return record | {
        "folds": folds,
        "fold_choices": [
            {
                "optimal_std": c["optimal_std"],
                "alternatives": c["alternatives"],
                "per_part": {p: e["optimal_std"] for p, e in c["per_part"].items()},
            }
            for c in fold_choices
        ],
    }
