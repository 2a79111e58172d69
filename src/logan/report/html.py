"""A self-contained HTML report per classify run: settings, verdicts, best metrics, plots embedded."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from logan.config import RunConfig
from logan.io import atomic_path
from logan.pipeline.common import StdPlan

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}.warn{background:#fff3cd;padding:8px;border-left:4px solid #e0a800}
.ok{background:#e8f5e9;padding:8px;border-left:4px solid #2e7d32}img{max-width:100%}code{font-size:12px}"""


ORIGINAL_NOTE = ("<p>Metrics by the original code's definitions (<code>img_metrics.compat=original"
                 "</code>). \"AUC (original's orientation)\" is the AUC the original's evaluate reports: it ranks "
                 "larger LOGAN divergence as member, so it is 1 - AUC for LOGAN's nine divergences.</p>")


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


def _table(rows: list[dict[str, Any]]) -> str:
    original = any("auc_original_orientation" in r for r in rows)  # img_metrics.compat=original
    head = ["part", "metric", "std", "AUC", *(["AUC (original's orientation)"] if original else []), "95% CI", "acc",
            "TPR@5%FPR", "TPR@1%FPR", "TPR@0.1%FPR", "members", "non-members"]
    body = []
    for r in rows:
        ci = f"{r.get('auc_ci_low', float('nan')):.2f} – {r.get('auc_ci_high', float('nan')):.2f}"
        cells = [r["part"], r["metric"], std_text(r), _cell(r["auc"])]
        cells += [_cell(r.get("auc_original_orientation", float("nan")))] if original else []
        cells += [ci, _cell(r["acc"])]
        cells += [_cell(r[f"tpr_at_{key}_fpr"], r.get(f"tpr_at_{key}_fpr_estimable", True))
                  + (f" <small>(FPR {r[f'fpr_at_{key}_fpr']:.3f})</small>" if f"fpr_at_{key}_fpr" in r else "")
                  for key in ("5pct", "1pct", "0.1pct")]
        cells += [str(r["n_members"]), str(r["n_nonmembers"])]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"


def write_report(cfg: RunConfig, rows: list[dict[str, Any]], blind: dict[str, Any],
                 plots: dict[float | None, list[Path]], path: Path, plan: StdPlan | None = None,
                 plot_note: str = "") -> None:
    """Render report.html next to metrics.json: how the std was chosen (the plan's note, in warning colours
    when it was chosen with the membership labels of the samples scored), and `plot_note`: how the plotted
    metrics were picked."""
    k = cfg.selection.k
    verdict_class = "warn" if str(blind.get("verdict", "")).startswith("WARNING") else "ok"
    parts = [f"<html><head><meta charset='utf-8'><title>LOGAN report</title><style>{STYLE}</style></head><body>",
             "<h1>LOGAN membership-inference report</h1>",
             f"<p>Model <code>{html.escape(str(cfg.target_model.name))}</code> at "
             f"<code>{html.escape(str(cfg.target_model.model_path))}</code>; every score is oriented "
             "<b>higher = more likely member</b>.</p>",
             *([ORIGINAL_NOTE] if cfg.img_metrics.compat == "original" else []),
             "<h2>Model-free baseline</h2>",
             f"<p class='{verdict_class}'>{html.escape(str(blind.get('verdict', '')))} "
             f"<small>({html.escape(str(blind.get('classifier', '')))})</small></p>",
             *([f"<h2>How the std was chosen</h2><p class='{'warn' if plan.label_informed else 'ok'}'>"
                f"{html.escape(plan.note)}</p>"] if plan and plan.note else [])]
    for std, images in plots.items():
        at = [r for r in rows if (std is None or r["std"] == std) and np.isclose(r["k"], k)]
        title = f"Noise std {std:g}" if std is not None else "Each part at its own selected std"
        parts += [f"<h2>{title} (K = {k:g})</h2>", _table(at), *[_image(p) for p in images],
                  *([f"<p><small>{html.escape(plot_note)}</small></p>"] if plot_note else [])]
    tuning = _tuning_curve(cfg)
    if tuning:
        parts += ["<h2>Noise-level tuning</h2>", tuning]
    parts += ["<h2>Settings</h2>",
              f"<pre>{html.escape(json.dumps(asdict(cfg), indent=1, default=str))}</pre></body></html>"]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def _tuning_curve(cfg: RunConfig) -> str:
    """The tuning run's curve, when noise.std points at its optimal_std.json."""
    if isinstance(cfg.noise.std, str) and cfg.noise.std.endswith(".json"):
        return _image(Path(cfg.noise.std).parent / "tuning_curve.png")
    return ""
