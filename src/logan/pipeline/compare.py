"""`logan compare`: finished runs side by side: AUC and TPR at low FPR per part and metric, ROC curves overlaid.

    logan compare runs/classify_a runs/classify_b
    logan compare runs/tune_a runs/tune_b path.output_dir=runs/compare
    logan compare OUT                           # a demo folder: its trained and control runs

A classify run is read at the std it classified at (each part at its own with noise.per_part) and at its
K (selection.k); a run classified at several stds gives one column per std. A tuning run (tune or select)
gives, per part, the optimal std of its selection metric and the curve's AUC and gap there. The tables go to
stdout and OUT/compare.txt, the same rows to OUT/results.json (`logan.load_run(OUT)`); OUT/compare_roc.png
overlays the classify runs' ROC curves of `compare.metric` (one row of panels per part) and
OUT/compare_curves.png the tuning runs' curves. Every number is read from the runs' results.json, or from
their metrics.json / optimal_std.json / scores.parquet where a run is older than results.json.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.config import PARTS, RunConfig
from logan.errors import LoganError
from logan.io import FINGERPRINT_FILE, atomic_path, read_json
from logan.report.evaluate import format_tpr
from logan.report.html import std_text
from logan.report.plots import curve_overlay, roc_overlay
from logan.report.results_file import columns, header, position, publish, relative
from logan.runs import RESULTS, ClassifyResult, DemoResult, TuneResult, load_run

log = logging.getLogger(__name__)

RUNS_KEY = "compare.runs"
SHOWN = ("auc", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")  # the table's columns per run
ROW_COLUMNS = (
    "std",
    "k",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "acc",
    "n_members",
    "n_nonmembers",
    "fold_std",
    "fold_auc",
)


@dataclass(frozen=True)
class Run:
    """One run to compare: its column label, its folder and what load_run read from it."""

    name: str
    folder: Path
    result: TuneResult | ClassifyResult


def compare_overrides(args: list[str]) -> list[str]:
    """`compare RUN RUN ... key=value`: the bare arguments are the run folders (compare.runs)."""
    runs = [arg for arg in args if "=" not in arg]
    rest = [arg for arg in args if "=" in arg]
    if runs and any(arg.partition("=")[0].strip().lstrip("+") == RUNS_KEY for arg in rest):
        raise LoganError(f"the runs are given twice (as arguments and as {RUNS_KEY}=...); give them one way.")
    return rest + ([f"{RUNS_KEY}=[{','.join(_quoted(run) for run in runs)}]"] if runs else [])


def _quoted(text: str) -> str:
    """`text` as one single-quoted value of Hydra's grammar (a quote and the backslashes before it escaped)."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def open_runs(paths: list[str]) -> list[Run]:
    """The finished tune / select / classify runs of `paths` (a demo folder gives its attacked models' runs)."""
    if not paths:
        raise LoganError(
            "no runs to compare: logan compare RUN RUN ... (tune, select, classify or demo folders)."
        )
    found: list[TuneResult | ClassifyResult] = []
    for text in paths:
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise LoganError(
                f"{text} does not exist or is not a folder: give the folder of a finished run "
                "(tune, select, classify or demo)."
            )
        result = load_run(folder)
        if isinstance(result, DemoResult):
            found += [run for tuned, classified in result.models.values() for run in (classified, tuned)]
        elif isinstance(result, (TuneResult, ClassifyResult)):
            found.append(result)
        else:
            raise LoganError(
                f"{text} holds the output of 'logan {type(result).__name__[:-6].lower()}', not a run to "
                "compare: give tune, select, classify or demo folders."
            )
    names = _names([result.output_dir for result in found])
    runs = [Run(name, result.output_dir, result) for name, result in zip(names, found)]
    if len(runs) < 2:
        raise LoganError(f"logan compare needs two runs or more; {paths[0]} is one. Give more run folders.")
    return runs


def _names(folders: list[Path]) -> list[str]:
    """The shortest trailing parts of each folder's path that tell the folders apart."""
    parts = [Path(f).absolute().parts for f in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(f) for f in folders]


def metric_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (run column, part, metric): each classify run at its std(s) and its K."""
    rows = []
    for run in runs:
        if not isinstance(run.result, ClassifyResult):
            continue
        result = run.result
        table = pd.DataFrame(result.results["metrics"]) if "metrics" in result.results else result.metrics
        table = table.astype({"std": float, "k": float})  # null (a cross-fitted row's two stds) -> NaN
        table = table[np.isclose(table.k, result.k)]
        stds = sorted(table["std"].dropna().unique())
        several = len(stds) > 1 and not (result.per_part or result.split == "crossfit")
        for row in table.to_dict("records"):
            label = f"{run.name} @ std {row['std']:g}" if several else run.name
            rows.append(
                {
                    "run": label,
                    "part": row["part"],
                    "metric": row["metric"],
                    **{
                        name: value
                        for name, value in row.items()
                        if name in ROW_COLUMNS or name.startswith(("tpr_at_", "fpr_at_"))
                    },
                }
            )
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    return sorted(
        rows, key=lambda r: (position(PARTS, r["part"]), metrics.index(r["metric"]))
    )  # stable: by run


def tuning_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (tuning run, part): its selection metric's optimal std on that part and the curve there."""
    rows = []
    for run in runs:
        if not isinstance(run.result, TuneResult):
            continue
        selection, curves = run.result.selection, run.result.curves
        metric = selection["selection_metric"]
        for part, std in run.result.per_part.items():
            point = curves[(curves.part == part) & (curves.metric == metric) & (curves["std"] == std)]
            first = point.iloc[0] if len(point) else {}
            rows.append(
                {
                    "run": run.name,
                    "part": part,
                    "metric": metric,
                    "k": float(selection["k"]),
                    "std": std,
                    "tune_auc": float(first.get("tune_auc", np.nan)),
                    "gap": float(first.get("gap", np.nan)),
                    "rule": selection["rule"],
                    "selected": part == selection["part"],
                }
            )
    return rows


def metric_table(rows: list[dict[str, Any]]) -> str:
    """Part x metric, one column group per run: std, AUC and TPR at 5 / 1 / 0.1 % FPR."""
    labels = list(dict.fromkeys(r["run"] for r in rows))
    cell = {(r["run"], r["part"], r["metric"]): r for r in rows}
    width = 6 + 7 + 8 * 3
    lines = [
        (
            "classify runs, each at its own std (each part at its own with noise.per_part) and K; higher score = "
            "member; n/e = not estimable with this many non-members"
        ),
        f"{'':<10} {'':<28}" + "".join(f" | {_fit(label, width)}" for label in labels),
        f"{'part':<10} {'metric':<28}"
        + " | {:>6} {:>6} {:>7} {:>7} {:>7}".format("std", "AUC", "TPR@5%", "TPR@1%", "TPR@.1%")
        * len(labels),
    ]
    for part, metric in dict.fromkeys((r["part"], r["metric"]) for r in rows):
        cells = []
        for label in labels:
            r = cell.get((label, part, metric))
            cells.append(
                f" | {std_text(r):>6} {r['auc']:6.3f} {format_tpr(r, '5pct')} {format_tpr(r, '1pct')} "
                f"{format_tpr(r, '0.1pct')}"
                if r
                else f" | {'-':>{width}}"
            )
        lines.append(f"{part:<10} {metric:<28}" + "".join(cells))
    counts = {
        r["run"]: f"{r['run']}: K = {r['k']:g}, {r['n_members']} members + {r['n_nonmembers']} non-members"
        for r in rows
    }
    return "\n".join(lines + ["", *counts.values()])


def tuning_table(rows: list[dict[str, Any]]) -> str:
    """Per part, each tuning run's optimal std for its selection metric, with the curve's AUC and gap there."""
    labels = list(dict.fromkeys(r["run"] for r in rows))
    cell = {(r["run"], r["part"]): r for r in rows}
    lines = [
        (
            "tuning runs: each part's optimal std for the run's selection metric, the curve's target-vs-reference "
            "AUC and gap there (* = the part the run's optimal std was chosen on)"
        ),
        f"{'':<10}" + "".join(f" | {_fit(label, 26)}" for label in labels),
        f"{'part':<10}" + " | {:>8} {:>7} {:>9}".format("std", "AUC", "gap") * len(labels),
    ]
    for part in dict.fromkeys(r["part"] for r in rows):
        cells = []
        for label in labels:
            r = cell.get((label, part))
            mark = "*" if r and r["selected"] else " "
            cells.append(
                f" | {r['std']:>7g}{mark} {r['tune_auc']:7.3f} {r['gap']:9.2g}" if r else f" | {'-':>26}"
            )
        lines.append(f"{part:<10}" + "".join(cells))
    rules = {r["run"]: f"{r['run']}: {r['metric']}, rule {r['rule']}, K = {r['k']:g}" for r in rows}
    return "\n".join(lines + ["", *rules.values()])


def _fit(text: str, width: int) -> str:
    return f"{text:<{width}}" if len(text) <= width else "..." + text[-(width - 3) :]


def roc_metric(cfg: RunConfig, runs: list[Run]) -> str | None:
    """The metric whose ROC curves are overlaid: compare.metric, else the first classify run's selection metric."""
    classified = [(run, run.result) for run in runs if isinstance(run.result, ClassifyResult)]
    if not classified:
        return None
    known = {m for _, result in classified for m in result.metrics.metric}
    if cfg.compare.metric is not None:
        if cfg.compare.metric not in known:
            raise LoganError(
                f"compare.metric={cfg.compare.metric} is not a metric of these runs; use one of "
                f"{', '.join(sorted(known))}."
            )
        return cfg.compare.metric
    first, result = classified[0]
    config = result.results.get("config") or (
        read_json(first.folder / "config.json") if (first.folder / "config.json").is_file() else {}
    )
    chosen = (config.get("selection") or {}).get("metric") or next(
        iter(config.get("img_metrics", {}).get("metrics_to_use", [])), None
    )
    return chosen if chosen in known else str(result.metrics.metric.iloc[0])


def roc_panels(runs: list[Run], rows: list[dict[str, Any]], metric: str) -> dict[str, dict[str, tuple]]:
    """part -> {run column: (fpr, tpr)} of `metric` at each row's std and K (results.json's ROC, else scores)."""
    panels: dict[str, dict[str, tuple]] = {}
    by_name = {run.name: run for run in runs}
    for row in rows:
        if row["metric"] != metric:
            continue
        run = by_name[row["run"].split(" @ std ")[0]]
        assert isinstance(run.result, ClassifyResult), "ROC rows come from classify runs"
        shown = f"{row['run']} (std {std_text(row)}, AUC {row['auc']:.3f})"
        for label, curve in _curves(run.result, row, label=shown).items():
            panels.setdefault(row["part"], {})[label] = curve
    return panels


def _curves(result: ClassifyResult, row: dict[str, Any], label: str) -> dict[str, tuple]:
    """The ROC curve(s) of one metrics row (one per fold of a cross-fitted run)."""
    stored = [
        c
        for c in result.results.get("roc", [])
        if c["metric"] == row["metric"]
        and c["part"] == row["part"]
        and np.isclose(c["k"], row["k"])
        and (row["std"] is None or np.isnan(row["std"]) or np.isclose(c["std"], row["std"]))
    ]
    if stored:
        return {
            label + (f" fold {c['fold']}" if "fold" in c else ""): (
                np.array(c["fp"]) / c["n_nonmembers"],
                np.array(c["tp"]) / c["n_members"],
            )
            for c in stored
        }
    if row["std"] is None or np.isnan(row["std"]):
        return {}  # a cross-fitted run without results.json: its folds' curves are not in one std's scores
    roc = result.roc(row["metric"], row["part"], float(row["std"]), float(row["k"]))
    return {label: (roc.fpr, roc.tpr)}


def curve_panels(runs: list[Run]) -> dict[str, dict[str, tuple]]:
    """part -> {tuning run: (std, tune_auc)} of each run's selection metric."""
    panels: dict[str, dict[str, tuple]] = {}
    for run in runs:
        if not isinstance(run.result, TuneResult):
            continue
        curves, metric = run.result.curves, run.result.selection["selection_metric"]
        for part, group in curves[curves.metric == metric].groupby("part", sort=False):
            group = group.sort_values("std")
            panels.setdefault(part, {})[run.name] = (
                group["std"].to_numpy(float),
                group.tune_auc.to_numpy(float),
            )
    return panels


def check_output(cfg: RunConfig) -> None:
    """compare writes into a folder of its own, never into one of the runs or another run folder (checked before
    its log opens there)."""
    out = cfg.output_dir
    taken = [
        name
        for name in (FINGERPRINT_FILE, "demo_summary.json", "prepare_summary.json")
        if (out / name).exists()
    ]
    if taken or any(out.absolute() == Path(run).expanduser().absolute() for run in cfg.compare.runs):
        raise LoganError(
            f"path.output_dir={out} is a run folder; give logan compare a folder of its own, e.g. "
            "path.output_dir=runs/compare."
        )


def compare(cfg: RunConfig) -> dict[str, Any]:
    """Read the runs, print and write the tables, the ROC overlay and results.json."""
    out = cfg.output_dir
    check_output(cfg)
    runs = open_runs(cfg.compare.runs)
    rows, tuned = metric_rows(runs), tuning_rows(runs)
    text = "\n\n".join([*([metric_table(rows)] if rows else []), *([tuning_table(tuned)] if tuned else [])])
    metric = roc_metric(cfg, runs) if rows else None
    images = []
    if metric:
        images.append(out / "compare_roc.png")
        roc_overlay(
            roc_panels(runs, rows, metric), images[-1], f"ROC of {metric}, each run at its own std and K"
        )
    if tuned:
        images.append(out / "compare_curves.png")
        curve_overlay(
            curve_panels(runs),
            images[-1],
            "tuning curves of each run's selection metric",
            "AUC of target vs reference",
        )
    with atomic_path(out / "compare.txt") as tmp:
        tmp.write_text(text + "\n")
    doc = header(cfg, "compare", None)
    doc["runs"] = [
        {
            "name": run.name,
            "folder": relative(run.folder, out),
            "command": run.result.results.get("command")
            or ("classify" if isinstance(run.result, ClassifyResult) else "tune"),
            "results": relative(run.folder / RESULTS, out) if run.result.results else None,
        }
        for run in runs
    ]
    doc["metrics"] = columns(rows, ("run", "part", "metric", "std", "k"))
    doc["tuning"] = columns(tuned, ("run", "part", "metric", "k", "std", "tune_auc", "gap"))
    doc["roc_metric"] = metric
    doc["files"] = {path.name: path.name for path in [out / "compare.txt", *images]}
    publish(cfg, doc, images)
    return doc
