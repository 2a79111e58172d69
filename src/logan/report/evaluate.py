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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import RunConfig
from logan.errors import LoganError, count
from logan.io import write_json, write_parquet
from logan.metrics.original import auc_in_original_orientation
from logan.metrics.registry import MetricSpec, get_metric
from logan.pipeline.common import StdPlan
from logan.report.blind import save_blind_baseline
from logan.report.html import ReportContext, std_text, write_report
from logan.report.plots import roc_curves, score_histograms
from logan.report.results_file import position, write_classify_results
from logan.report.scoring import fold_mean, rows_with_resamples
from logan.report.verdicts import per_image, write_verdicts
from logan.results import load_baselines, load_scores

log = logging.getLogger(__name__)

KEYS = ["std", "part", "metric", "k"]
BEST_NOTE = (
    "Best metric per part = the highest AUC on these same samples: that pick used their membership "
    "labels, so its AUC is optimistic (label-informed)."
)


def score_table(cfg: RunConfig, target: pd.DataFrame, stds: list[float]) -> pd.DataFrame:
    """Per-sample scores of the target set: one row per sample x std x part x metric x K.

    Std-independent baselines are repeated at every std so each std's table is complete.
    """
    ids = target.sample_id.unique()
    noise = load_scores(cfg.output_dir, stds)
    fixed = load_baselines(cfg.output_dir)
    frames = [noise[noise.sample_id.isin(ids)]]
    for std in stds:
        frames.append(fixed[fixed.sample_id.isin(ids)].assign(std=float(std)))
    scores = (
        pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else noise
    )
    if scores.empty:
        raise LoganError(
            f"{cfg.output_dir} holds no results for std {stds}; run 'logan classify' on it first."
        )
    metric, metrics = pd.factorize(scores.metric)
    scores["score"] = (
        np.array([get_metric(m).sign for m in metrics], dtype=float)[metric] * scores.value.to_numpy()
    )
    shown = {row.sample_id: row.path or row.name for row in target.itertuples(index=False)}
    sample, samples = pd.factorize(scores.sample_id)
    scores["image"] = np.array([shown.get(s) for s in samples], dtype=object)[
        sample
    ]  # the file, or the row's name
    return scores[["sample_id", "image", "label", *KEYS, "value", "score"]]


def metric_rows(scores: pd.DataFrame, ci_k: float, seed: int, compat: str = "logan") -> list[dict[str, Any]]:
    """One metrics.json row per std x part x metric x K (bootstrap interval at K = ci_k); non-finite
    scores are dropped and counted. With a `fold` column (crossfit) one row per part x metric x K, the mean
    over the folds, each at its own std (`fold_std`). `compat=original` adds the AUC in the original's
    orientation.

    Every group (a row, or a row's fold) is scored at once with all groups over the same samples
    (`roc_summaries`), its samples in the order of `scores`."""
    crossfit = "fold" in scores
    keys = KEYS[1:] if crossfit else KEYS
    columns, units = _units(scores, [*keys, "fold"] if crossfit else keys)
    by_row: dict[tuple, list[_Unit]] = {}
    for unit in units:
        by_row.setdefault(unit.key[: len(keys)], []).append(unit)
    for key, folds in by_row.items():  # each fold of a row is drawn with the seed + its place among them
        for i, unit in enumerate(folds):
            unit.seed = seed + i if same_k(key[-1], ci_k) else None
    _score(columns, units)
    rows: list[dict[str, Any]] = []
    specs: dict[str, MetricSpec] = {}
    for key, folds in by_row.items():
        metric, k = key[-2], key[-1]
        spec = specs.setdefault(metric, get_metric(metric))
        if crossfit:
            fold_std = [unit.std for unit in folds]
            summary = fold_mean(
                [u.summary for u in folds],
                [u.resampled for u in folds] if folds[0].seed is not None else None,
            )
            std, extra = (fold_std[0] if len(set(fold_std)) == 1 else float("nan")), {"fold_std": fold_std}
        else:
            summary, std, extra = folds[0].summary, float(key[0]), {}
        rows.append(
            {
                "metric": metric,
                "part": key[-3],
                "std": std,
                "k": float(k),
                **summary,
                **extra,
                "n_dropped": sum(unit.dropped for unit in folds),
                "needs": spec.needs,
                "orientation": f"higher score = member (score = {'-' if spec.member_when == 'low' else '+'}value)",
            }
        )
        if compat == "original":
            rows[-1]["auc_original_orientation"] = auc_in_original_orientation(metric, summary["auc"])
    return rows


@dataclass
class _Unit:
    """One scored group of the score table: rows start:start + size of the grouped frame."""

    key: tuple
    std: float
    start: int
    size: int
    dropped: int = 0
    seed: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    resampled: np.ndarray | None = None


def _units(scores: pd.DataFrame, keys: list[str]) -> tuple[dict[str, np.ndarray], list[_Unit]]:
    """The groups of `scores` by `keys` in sorted key order, and the columns they index: sample (codes),
    score, label and std, reordered so that each group is contiguous with its rows in their order in
    `scores` (rows with a missing key belong to no group, as in a groupby)."""
    factorized = [pd.factorize(scores[k], sort=True) for k in keys]
    codes = [c for c, _ in factorized]
    kept = np.flatnonzero(np.logical_and.reduce([c >= 0 for c in codes])) if codes else np.arange(len(scores))
    combined = np.zeros(len(kept), dtype=np.int64)
    for c, (_, uniques) in zip(codes, factorized):  # one number per key, ordered as the keys sort
        combined = combined * len(uniques) + c[kept]
    order = kept[np.argsort(combined, kind="stable")]  # stable: ties keep the order of `scores`
    codes = [c[order] for c in codes]
    changed = (
        np.logical_or.reduce([c[1:] != c[:-1] for c in codes]) if len(order) else np.zeros(0, dtype=bool)
    )
    starts = np.flatnonzero(np.r_[bool(len(order)), changed])
    sizes = np.diff(np.r_[starts, len(order)])
    columns = {
        "sample": pd.factorize(scores.sample_id)[0][order],
        "score": scores.score.to_numpy(np.float64)[order],
        "label": scores.label.to_numpy()[order],
        "std": scores["std"].to_numpy(np.float64)[order],
    }
    units = [
        _Unit(
            tuple(uniques[c[s]] for c, (_, uniques) in zip(codes, factorized)), float(columns["std"][s]), s, n
        )
        for s, n in zip(starts.tolist(), sizes.tolist())
    ]
    return columns, units


def _score(columns: dict[str, np.ndarray], units: list[_Unit]) -> None:
    """Each unit's roc_summary (interval drawn with its seed), all units over one sample list at once."""
    same: dict[bytes, list[_Unit]] = {}
    for unit in units:
        same.setdefault(columns["sample"][unit.start : unit.start + unit.size].tobytes(), []).append(unit)
    for group in same.values():
        first = group[0]
        matrix = columns["score"][np.array([u.start for u in group])[:, None] + np.arange(first.size)]
        summaries, resampled = rows_with_resamples(
            columns["label"][first.start : first.start + first.size], matrix, [u.seed for u in group]
        )
        dropped = (~np.isfinite(matrix)).sum(axis=1).tolist()
        for unit, summary, draws, n in zip(group, summaries, resampled, dropped):
            unit.summary, unit.resampled, unit.dropped = summary, draws, n


def same_k(a: float, b: float) -> bool:
    """`np.isclose(a, b)` for two numbers (a row's K and the K asked for), without an array's overhead."""
    return abs(a - b) <= 1e-8 + 1e-5 * abs(b)


def estimable_only(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every TPR at an FPR this many non-members cannot resolve set to None (its value there is
    a bound reached at FPR 0, not an estimate), for summaries that show the number without the flag."""
    return {
        k: None
        if k.startswith("tpr_at_") and not k.endswith("_estimable") and row.get(f"{k}_estimable") is False
        else v
        for k, v in row.items()
    }


def format_tpr(row: dict[str, Any], key: str) -> str:
    value = row.get(f"tpr_at_{key}_fpr", float("nan"))
    return f"{value:7.3f}" if row.get(f"tpr_at_{key}_fpr_estimable", True) else "    n/e"


def summary_table(rows: list[dict[str, Any]], k: float, std: float | None = None, note: str = "") -> str:
    """Text table (part x metric) at one std (None: each part at the std of its rows) and K: AUC [95 % CI],
    TPR at 5 / 1 / 0.1 % FPR; `note` (how the std was chosen) below it."""
    at = [r for r in rows if (std is None or r["std"] == std) and same_k(r["k"], k)]
    title = f"std = {std:g}" if std is not None else "each part at its own selected std"
    lines = [
        f"{title}; K = {k:g}; higher score = member; n/e = not estimable with this many non-members",
        f"{'part':<10} {'metric':<28} {'std':>8} {'AUC':>6} {'95% CI':>13} {'TPR@5%':>7} {'TPR@1%':>7} "
        f"{'TPR@.1%':>7}",
    ]
    for r in at:
        ci = f"[{r.get('auc_ci_low', np.nan):.2f}, {r.get('auc_ci_high', np.nan):.2f}]"
        lines.append(
            f"{r['part']:<10} {r['metric']:<28} {std_text(r):>8} {r['auc']:6.3f} {ci:>13} "
            f"{format_tpr(r, '5pct')} {format_tpr(r, '1pct')} {format_tpr(r, '0.1pct')}"
        )
    return "\n".join(lines + ([f"note: {note}"] if note else []))


def best_per_part(
    rows: list[dict[str, Any]], std: float | None, k: float, needs: str | None = "noise"
) -> dict[str, dict]:
    """The highest-AUC row per part at one std (None: any std) and K (LOGAN's metrics only by default)."""
    best: dict[str, dict] = {}
    for r in rows:
        if (
            (std is None or r["std"] == std)
            and same_k(r["k"], k)
            and (needs is None or r["needs"] == needs)
            and np.isfinite(r["auc"])
            and r["auc"] > best.get(r["part"], {"auc": -1})["auc"]
        ):
            best[r["part"]] = r
    return best


def _order(rows: list[dict[str, Any]], parts: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple:
        return (
            np.nan_to_num(r["std"], nan=-1.0),
            position(parts, r["part"]),
            position(metrics, r["metric"]),
            r["k"],
        )

    return sorted(rows, key=key)


def plotted_stds(
    mode: str, sections: list[float | None], rows: list[dict[str, Any]], k: float
) -> list[float | None]:
    """The report sections that get plots under `report.plots`: all (`every_std`), none, or (`selected`)
    the one section there is, or among several std values the one whose best LOGAN row has the highest AUC."""
    if mode == "none" or not sections:
        return []
    if mode == "every_std" or len(sections) == 1:
        return list(sections)
    best = best_per_part(rows, None, k)
    return [max(best.values(), key=lambda r: r["auc"])["std"]] if best else sections[:1]


def plot_best(
    scores: pd.DataFrame,
    rows: list[dict[str, Any]],
    std: float | None,
    k: float,
    folds: bool,
    out: Path,
    suffix: str,
) -> list[Path]:
    """ROC curves and score histograms of the best LOGAN metric per part at `std` (None: each part at its
    own); with folds, one curve per fold. Returns the two files."""
    at = scores[np.isclose(scores.k, k) & np.isfinite(scores.score)]
    at = at if std is None else at[at["std"] == std]
    chosen = {}
    for part, row in best_per_part(rows, std, k).items():
        picked = at[(at.part == part) & (at.metric == row["metric"])]
        for fold, group in picked.groupby("fold") if folds else [(None, picked)]:
            name = (
                f"{part}: {row['metric']} (AUC {row['auc']:.3f})"
                if fold is None
                else f"{part} fold {fold}: {row['metric']} at std {row['fold_std'][fold]:g} "
                f"(AUC {row['fold_auc'][fold]:.3f})"
            )
            chosen[name] = (group.label.to_numpy(), group.score.to_numpy())
    where = f"std = {std:g}" if std is not None else "each part at its own std"
    roc_curves(chosen, out / f"roc{suffix}.png", f"LOGAN membership ROC, {where}, K = {k:g}")
    score_histograms(chosen, out / f"histograms{suffix}.png")
    return [out / f"roc{suffix}.png", out / f"histograms{suffix}.png"]


def evaluate(
    cfg: RunConfig, target: pd.DataFrame, plan: StdPlan, reference: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """Write metrics.json, scores.parquet, std_plan.json, the per-image verdicts against `reference` (known
    non-members, scored in the same run), plots, the blind baseline and report.html. Images without a label
    are left out of the AUC tables (an unlabelled target set has none) and get their verdicts."""
    out, k = cfg.output_dir, cfg.selection.k
    every = score_table(cfg, target if reference is None else pd.concat([target, reference]), plan.stds)
    asked = every[every.sample_id.isin(set(target.sample_id))]  # every target image: its verdicts
    scores = asked[plan.mask(asked)]  # the rows the AUCs count
    if plan.folds:
        scores = scores.assign(fold=plan.fold_of(scores.sample_id))
    record = plan.record(plan.reported(target))
    write_json(out / "std_plan.json", record)
    labelled = scores[scores.label >= 0]
    rows = (
        _order(
            metric_rows(labelled, k, cfg.seed, cfg.img_metrics.compat),
            cfg.img_metrics.parts,
            cfg.img_metrics.metrics_to_use,
        )
        if labelled.label.nunique() == 2
        else []
    )
    if len(labelled) < len(scores):
        log.info(
            "%s: %s",
            "no AUC table" if not rows else "AUC tables on the labelled images only",
            count(scores.sample_id[scores.label < 0].nunique(), "target image has", "target images have")
            + " no membership label (their verdicts are in verdicts.csv)",
        )
    write_json(out / "metrics.json", rows)
    write_parquet(out / "scores.parquet", scores)
    verdicts = None
    if reference is not None:
        asked = asked[plan.mask(asked, every_sample=True)]  # every image gets its verdict, holdout or not
        asked = asked.assign(std_chosen_on_it=asked.sample_id.isin(plan.chosen_on).to_numpy())
        table, verdicts = per_image(
            cfg, plan.source, asked, every[every.sample_id.isin(set(reference.sample_id))]
        )
        write_verdicts(table, verdicts, out)
    blind = save_blind_baseline(target[target.label >= 0], out / "blind_baseline.json", cfg.seed)
    sections: list[float | None] = ([None] if plan.own_std else list(plan.stds)) if rows else []
    drawn = plotted_stds(cfg.report.plots, sections, rows, k)
    plots: dict[float | None, list[Path]] = {}
    for std in sections:
        suffix = "" if std is None or len(plan.stds) == 1 else f"_std_{std:g}"
        plots[std] = plot_best(labelled, rows, std, k, bool(plan.folds), out, suffix) if std in drawn else []
        for part, row in best_per_part(rows, std, k).items():
            log.info(
                "best LOGAN metric on %s at std %s: %s, AUC %.3f",
                part,
                std_text(row),
                row["metric"],
                row["auc"],
            )
    if cfg.report.plots != "every_std" and len(drawn) < len(sections):
        log.info(
            "plots drawn at std %s only (report.plots=%s; report.plots=every_std draws one pair per std)",
            ", ".join(f"{s:g}" for s in drawn if s is not None) or "none",
            cfg.report.plots,
        )
    if rows:
        log.info("%s", BEST_NOTE)
    if plan.note:
        log.info("std: %s", plan.note)
    write_report(
        cfg,
        rows,
        blind,
        plots,
        out / "report.html",
        plan,
        BEST_NOTE,
        ReportContext.of(target, reference, verdicts),
    )
    log.info(
        "wrote %s, %s, %s, %s and %s",
        out / "metrics.json",
        out / "scores.parquet",
        out / "verdicts.csv",
        out / "blind_baseline.json",
        out / "report.html",
    )
    write_classify_results(
        cfg, rows, record, labelled, blind, [p for paths in plots.values() for p in paths], verdicts
    )
    return rows
