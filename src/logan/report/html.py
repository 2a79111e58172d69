"""A self-contained HTML report per classify run: a one-line verdict, the model-free baseline, how the std
was chosen, the per-image verdicts, the AUC tables (best rows marked), plots embedded, and the settings
the run used (the sets as scored and the std plan, not the config's unused defaults)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import RunConfig
from logan.errors import count
from logan.io import atomic_path
from logan.pipeline.common import StdPlan
from logan.report.verdicts import describe, fpr_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}.warn{background:#fff3cd;padding:8px;border-left:4px solid #e0a800}
.ok{background:#e8f5e9;padding:8px;border-left:4px solid #2e7d32}img{max-width:100%}code{font-size:12px}
tr.best td{font-weight:bold;background:#eef4fb}.verdict{font-size:15px;background:#eef4fb;padding:8px;
border-left:4px solid #1565c0}table.settings td{text-align:left;vertical-align:top}"""
K_NOTE = (
    "K is the Max-K% ratio: each image's per-token values on a part are reduced to the mean of its K x 100 % "
    "most extreme tokens (K = 1: every token; K = 0: the single most extreme one)."
)
BEST_MARK = "&#9733;"  # a star before the metric of each part's best row


@dataclass(frozen=True)
class ReportContext:
    """What the run scored beyond its config: the sets' sizes and the per-image verdicts' summary."""

    n_members: int = 0
    n_nonmembers: int = 0
    n_unlabelled: int = 0
    n_reference: int = 0
    reference_in_target: int = 0  # reference images that are also target images (its non-members)
    verdicts: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, target: pd.DataFrame, reference: pd.DataFrame | None, verdicts: dict[str, Any] | None
    ) -> ReportContext:
        ref = reference if reference is not None else target.iloc[:0]
        return cls(
            int((target.label == 1).sum()),
            int((target.label == 0).sum()),
            int((target.label < 0).sum()),
            len(ref),
            int(ref.sample_id.isin(set(target.sample_id)).sum()),
            verdicts,
        )


ORIGINAL_NOTE = (
    "<p>Metrics by the original code's definitions (<code>img_metrics.compat=original"
    "</code>). \"AUC (original's orientation)\" is the AUC the original's evaluate reports: it ranks "
    "larger LOGAN divergence as member, so it is 1 - AUC for LOGAN's nine divergences.</p>"
)


def _image(path: Path) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _cell(value: Any, estimable: bool = True) -> str:
    if isinstance(value, float):
        return "n/e" if not estimable else ("" if np.isnan(value) else f"{value:.3f}")
    return html.escape(str(value))


def std_text(row: dict[str, Any]) -> str:
    """A row's std; a cross-fitted row whose folds were scored at two stds shows both (`fold 0|fold 1`)."""
    if np.isnan(row["std"]) and row.get("fold_std"):
        return "|".join(f"{s:g}" for s in row["fold_std"])
    return f"{row['std']:g}"


def _table(rows: list[dict[str, Any]], best: Sequence[dict[str, Any]] = ()) -> str:
    """The AUC / TPR table of `rows`; the rows in `best` are marked."""
    original = any("auc_original_orientation" in r for r in rows)  # img_metrics.compat=original
    head = [
        "part",
        "metric",
        "std",
        "AUC",
        *(["AUC (original's orientation)"] if original else []),
        "95% CI",
        "acc",
        "TPR@5%FPR",
        "TPR@1%FPR",
        "TPR@0.1%FPR",
        "members",
        "non-members",
    ]
    body = []
    for r in rows:
        ci = f"{r.get('auc_ci_low', float('nan')):.2f} – {r.get('auc_ci_high', float('nan')):.2f}"
        marked = any(r is b for b in best)
        cells = [
            r["part"],
            f"{BEST_MARK} {r['metric']}" if marked else r["metric"],
            std_text(r),
            _cell(r["auc"]),
        ]
        cells += [_cell(r.get("auc_original_orientation", float("nan")))] if original else []
        cells += [ci, _cell(r["acc"])]
        cells += [
            _cell(r[f"tpr_at_{key}_fpr"], r.get(f"tpr_at_{key}_fpr_estimable", True))
            + (f" <small>(FPR {r[f'fpr_at_{key}_fpr']:.3f})</small>" if f"fpr_at_{key}_fpr" in r else "")
            for key in ("5pct", "1pct", "0.1pct")
        ]
        cells += [str(r["n_members"]), str(r["n_nonmembers"])]
        body.append(
            ("<tr class='best'>" if marked else "<tr>") + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"


def write_report(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    blind: dict[str, Any],
    plots: dict[float | None, list[Path]],
    path: Path,
    plan: StdPlan | None = None,
    plot_note: str = "",
    context: ReportContext = ReportContext(),
) -> None:
    """Render report.html next to metrics.json: how the std was chosen (the plan's note, in warning colours
    when it was chosen with the membership labels of the samples scored), and `plot_note`: how the plotted
    metrics were picked."""
    from logan.report.evaluate import best_per_part

    k = cfg.selection.k
    verdict_class = "warn" if str(blind.get("verdict", "")).startswith("WARNING") else "ok"
    parts = [
        f"<html><head><meta charset='utf-8'><title>LOGAN report</title><style>{STYLE}</style></head><body>",
        "<h1>LOGAN membership-inference report</h1>",
        f"<p class='verdict'>{one_line(rows, blind, k, context.verdicts)}</p>",
        f"<p>Model <code>{html.escape(str(cfg.target_model.name))}</code> at "
        f"<code>{html.escape(str(cfg.target_model.model_path))}</code>; every score is oriented "
        "<b>higher = more likely member</b>.</p>",
        *([ORIGINAL_NOTE] if cfg.img_metrics.compat == "original" else []),
        "<h2>Model-free baseline</h2>",
        f"<p class='{verdict_class}'>{html.escape(str(blind.get('verdict', '')))} "
        f"<small>({html.escape(str(blind.get('classifier', '')))})</small></p>",
        *(
            [
                f"<h2>How the std was chosen</h2><p class='{'warn' if plan.label_informed else 'ok'}'>"
                f"{html.escape(plan.note)}</p>"
            ]
            if plan and plan.note
            else []
        ),
        *_verdict_section(context.verdicts),
    ]
    if not rows:
        parts.append(
            "<h2>AUC tables</h2><p>None: the target set holds no members and non-members with labels to "
            "rank (images of unknown membership get their per-image verdicts above).</p>"
        )
    for std, images in plots.items():
        at = [r for r in rows if (std is None or r["std"] == std) and np.isclose(r["k"], k)]
        title = f"Noise std {std:g}" if std is not None else "Each part at its own selected std"
        best = list(best_per_part(at, None, k).values())
        legend = f"<p><small>{K_NOTE} {BEST_MARK} marks each part's highest AUC among LOGAN's divergences.</small></p>"
        parts += [
            f"<h2>{title} (K = {k:g})</h2>",
            legend,
            _table(at, best),
            *[_image(p) for p in images],
            *([f"<p><small>{html.escape(plot_note)}</small></p>"] if plot_note else []),
        ]
    tuning = _tuning_curve(cfg)
    if tuning:
        parts += ["<h2>Noise-level tuning</h2>", tuning]
    parts += ["<h2>Settings</h2>", settings_table(cfg, plan, context), "</body></html>"]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def one_line(
    rows: list[dict[str, Any]], blind: dict[str, Any], k: float, verdicts: dict[str, Any] | None
) -> str:
    """The report in one line: the best LOGAN row's AUC with its interval against the model-free baseline's,
    and how many images the per-image verdicts call member."""
    from logan.report.evaluate import best_per_part

    best = max(best_per_part(rows, None, k).values(), key=lambda r: r["auc"], default=None)
    if best is None:
        text = "No AUC: the target set holds no labelled members and non-members."
    else:
        text = (
            f"Best: <b>{html.escape(best['metric'])}</b> on {html.escape(best['part'])} at std {std_text(best)}, "
            f"K = {k:g}: AUC <b>{best['auc']:.3f}</b>{_interval(best)} (best of the table, picked with the labels) "
            f"vs {_cell(blind.get('auc', float('nan')))}{_interval(blind)} for the model-free baseline."
        )
    per_std = verdicts.get("per_std", []) if verdicts else []
    for s in per_std:
        assert verdicts is not None
        where = f" at std {s['std']:g}" if len(per_std) > 1 else ""
        text += (
            f" Per-image verdicts{where}: <b>{s['n_flagged']} of {s['n_target']}</b> images called member at "
            f"FPR {fpr_text(verdicts['fpr'])} (realised {fpr_text(s['realised_fpr'])} on {s['n_ref']} reference "
            "images)."
        )
    return text


def _interval(row: dict[str, Any]) -> str:
    low, high = row.get("auc_ci_low"), row.get("auc_ci_high")
    return f" [95 % CI {low:.2f}&ndash;{high:.2f}]" if low is not None and high is not None else ""


def _verdict_section(verdicts: dict[str, Any] | None) -> list[str]:
    """Per-image verdicts: each std's headline, the support message highlighted, and where the table is."""
    if not verdicts:
        return []
    lines = ["<h2>Per-image verdicts</h2>"]
    for entry in verdicts["per_std"]:
        headline, notes = describe(verdicts, entry)
        lines.append(f"<p>{html.escape(headline)}</p>")
        lines += [
            f"<p class='{'warn' if note == entry['message'] else ''}'>{html.escape(note)}</p>"
            for note in notes
        ]
    rule = f"<p><small>{html.escape(verdicts['rule'])}. One row per image: <code>verdicts.csv</code>.</small></p>"
    return [*lines, rule]


def settings_table(cfg: RunConfig, plan: StdPlan | None, context: ReportContext) -> str:
    """The settings the run used, one line each: the sets as scored, the std plan, parts, metrics, K, the
    verdicts' choice (config.json holds every key)."""
    d, m, n = cfg.data, cfg.img_metrics, cfg.noise
    counts = [
        f"{context.n_members} members",
        f"{context.n_nonmembers} non-members",
        *([f"{context.n_unlabelled} unlabelled"] if context.n_unlabelled else []),
    ]
    total = context.n_members + context.n_nonmembers + context.n_unlabelled
    source = d.dataset or f"{d.member_dataset} + {d.nonmember_dataset}"
    reference = f"{context.n_reference} known non-members" + (
        " (the target's non-members)"
        if context.n_reference and context.reference_in_target == context.n_reference
        else f" ({context.reference_in_target} of them in the target set)"
        if context.reference_in_target
        else ""
    )
    model = f"{cfg.target_model.name} at {cfg.target_model.model_path}"
    commit = (cfg.resolved.get("target_model.model_path") or {}).get("commit")
    verdicts = context.verdicts
    rows = [
        ("model", model + (f" (commit {commit})" if commit else "") + f"; {_device_text(cfg)}"),
        ("target set", f"{total} images: {', '.join(counts)}; from {source}"),
        (
            "reference set",
            reference + (f"; from {', '.join(d.reference_paths)}" if d.reference_paths else ""),
        ),
        ("noise std", _std_plan_text(plan)),
        ("noise", f"quantize {n.quantize}, space {n.space}, {count(n.draws, 'draw')} per image and std"),
        ("parts", ", ".join(m.parts)),
        ("metrics", f"{len(m.metrics_to_use)}: {', '.join(m.metrics_to_use)}"),
        (
            "K",
            f"tables at K = {cfg.selection.k:g} (selection.k); scored at "
            + ", ".join(f"{float(r):g}" for r in m.ratio),
        ),
        (
            "prompt",
            cfg.prompt.text
            + (
                f" (descriptions of {cfg.generation.num_gen_tokens} tokens)"
                if {"desp", "inst_desp"} & set(m.parts)
                else ""
            ),
        ),
        *(
            [
                (
                    "verdicts",
                    f"FPR {fpr_text(verdicts['fpr'])} on {verdicts['part']}, {verdicts['metric']}, "
                    + f"K = {verdicts['k']:g}",
                )
            ]
            if verdicts
            else []
        ),
        ("metric definitions", m.compat),
        ("seed", str(cfg.seed)),
        ("every key", "config.json in this folder"),
    ]
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>" for name, value in rows
    )
    return f"<table class='settings'>{body}</table>"


def _device_text(cfg: RunConfig) -> str:
    """The dtype and device as run (`auto` resolved the way the run resolved it)."""
    from logan.models.base import resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    return f"{str(resolve_dtype(cfg.dtype, device)).removeprefix('torch.')} on {device}"


def _std_plan_text(plan: StdPlan | None) -> str:
    """The std values scored and where they came from."""
    if plan is None:
        return ""
    if plan.folds:
        chosen = "; ".join(
            f"fold {i}: " + ", ".join(f"{p} {s:g}" for p, s in stds.items())
            for i, (_, stds) in enumerate(plan.folds)
        )
    elif plan.per_part is not None:
        chosen = "each part at its own: " + ", ".join(f"{p} {s:g}" for p, s in plan.per_part.items())
    else:
        chosen = ", ".join(f"{s:g}" for s in plan.stds)
    where = f" (from {plan.source}, selection.split={plan.split})" if plan.source else ""
    return chosen + where


def _tuning_curve(cfg: RunConfig) -> str:
    """The tuning run's curve, when noise.std points at its optimal_std.json."""
    if isinstance(cfg.noise.std, str) and cfg.noise.std.endswith(".json"):
        return _image(Path(cfg.noise.std).parent / "tuning_curve.png")
    return ""
