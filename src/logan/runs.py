"""Typed results of LOGAN's commands, read from their run folders (`load_run`).

Every command's result is built from the files it wrote, so `logan.load_run(folder)` on a finished run
gives the same object the command returned:

- `TuneResult` (tune, select): the selected std, each part's own optimum, the tuning curves, the split it
  was chosen on and whether it used membership labels (`split`, `label_informed`);
- `ClassifyResult` (classify): `metrics` (the rows of metrics.json), `scores` (per sample), ROC arrays,
  the model-free baseline, the plots, and the samples the AUCs count (`split`, `evaluated`);
- `DemoResult` (demo): the table, and the trained and control models' tune and classify results;
- `PrepareResult` (prepare): the lists written and their summary;
- `CompareResult` (compare): the runs side by side as a DataFrame, the printed tables, the ROC overlay.

Tune, select, classify, demo and compare folders hold a versioned results.json (`results`: its content;
`{}` for a folder written before LOGAN wrote one, which still loads from its other files).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan.errors import LoganError
from logan.io import FINGERPRINT_FILE, read_json

RESULTS = "results.json"  # logan.report.results_file writes it


@dataclass(frozen=True)
class Roc:
    """One ROC curve (higher score = member): false and true positive rates at each threshold."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass
class TuneResult:
    """A tuning run (or `select` on one): the optimal std and the curves it was chosen from."""

    output_dir: Path
    selection: dict[str, Any] = field(repr=False)  # optimal_std.json as written
    results: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # results.json ({}: a folder without one)

    @property
    def optimal_std(self) -> float:
        return float(self.selection["optimal_std"])

    @property
    def per_part(self) -> dict[str, float]:
        """Each part's own optimal std (the selection metric's curve on that part)."""
        return {
            part: float(entry["optimal_std"]) for part, entry in self.selection.get("per_part", {}).items()
        }

    @property
    def curves(self) -> pd.DataFrame:
        """One row per (part, metric, std): target mean, reference mean, gap and target-vs-reference AUC (every
        part and metric from results.json; from a folder without one, the selection part's metrics and the
        selection metric's other parts, as optimal_std.json holds them)."""
        if "curves" in self.results:
            return pd.DataFrame(self.results["curves"]).astype({"std": float})
        s = self.selection
        rows = [
            {"part": s["part"], "metric": metric, **point}
            for metric, points in s["curves"].items()
            for point in points
        ]
        rows += [
            {"part": part, "metric": s["selection_metric"], **point}
            for part, entry in s.get("per_part", {}).items()
            if part != s["part"]
            for point in entry["curve"]
        ]
        return pd.DataFrame(rows)

    @property
    def split(self) -> dict[str, Any] | None:
        """How the target set was split for the choice (selection.split): mode, fraction, seed and the samples
        on each side (holdout: `selection` / `evaluation`; crossfit: `folds` and `fold_choices`); None: not split."""
        return self.selection.get("split")

    @property
    def label_informed(self) -> dict[str, Any]:
        """Whether the choice (`selection`), each rule (`alternatives`) and `per_part` used membership labels,
        whether classify's AUCs come from other samples (`auc_on_other_samples`), and a plain `note`."""
        return self.selection.get("label_informed", {})

    def summary(self) -> str:
        s = self.selection
        split = self.split["mode"] if self.split else "none"
        lines = [
            f"optimal std = {self.optimal_std:g} ({s['rule']} on part {s['part']}, {s['selection_metric']}, "
            f"K = {s['k']:g}{'' if split == 'none' else f', selection.split={split}'})"
        ]
        if self.per_part:
            lines.append(
                "each part's own optimum: " + ", ".join(f"{p} {v:g}" for p, v in self.per_part.items())
            )
        if self.label_informed.get("note"):
            lines.append("note: " + self.label_informed["note"])
        lines.append(f"files: {self.output_dir / 'optimal_std.json'}, {self.output_dir / 'tuning_curve.png'}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class ClassifyResult:
    """A classification run: one metrics row per (std, part, metric, K), per-sample scores, plots."""

    output_dir: Path
    metrics: pd.DataFrame = field(repr=False)  # metrics.json's rows
    blind: dict[str, Any] = field(repr=False)  # the model-free baseline (blind_baseline.json)
    k: float = 1.0  # the K of the tables and plots (selection.k)
    per_part: bool = False  # each part scored at its own selected std (noise.per_part)
    plan: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # std_plan.json: split, samples reported, note
    results: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # results.json ({}: a folder without one)

    @property
    def split(self) -> str:
        """The selection.split of the optimal_std.json the run scored at: none | holdout (AUCs on the held-out
        samples only) | crossfit (each sample at the std chosen on the other fold; values are fold means)."""
        return self.plan.get("split", "none")

    @property
    def evaluated(self) -> list[str]:
        """The images the AUCs count (holdout: the evaluation part)."""
        return self.plan.get("evaluated", sorted(self.scores.sample_id.unique()))

    @functools.cached_property
    def scores(self) -> pd.DataFrame:
        """Per-sample values and scores (higher = member): scores.parquet."""
        return pd.read_parquet(self.output_dir / "scores.parquet")

    @functools.cached_property
    def verdicts(self) -> pd.DataFrame:
        """Per-image verdicts (verdicts.csv): each target image's score, p-value against the reference set and
        member / non-member at verdict.fpr, with its label where known (logan.report.verdicts)."""
        path = self.output_dir / "verdicts.csv"
        if not path.is_file():
            raise LoganError(
                f"{self.output_dir} has no verdicts.csv (a classify run of an earlier LOGAN): rerun "
                "'logan classify' with a new path.output_dir for per-image verdicts."
            )
        return pd.read_csv(path, dtype={"label": "Int8"})

    @property
    def plots(self) -> list[Path]:
        return sorted(p for p in self.output_dir.glob("*.png"))

    @property
    def report(self) -> Path:
        return self.output_dir / "report.html"

    def roc(self, metric: str, part: str, std: float | None = None, k: float | None = None) -> Roc:
        """The ROC of one metric on one part (std: the run's only std, or the part's own; K: the run's K)."""
        from sklearn.metrics import roc_auc_score, roc_curve

        k = self.k if k is None else k
        rows = self.scores[
            (self.scores.metric == metric) & (self.scores.part == part) & np.isclose(self.scores.k, k)
        ]
        if std is None:
            stds = sorted(rows["std"].unique())
            if len(stds) != 1:
                raise LoganError(f"{metric} on {part} was scored at std {stds}: name one with std=.")
            std = stds[0]
        rows = rows[(rows["std"] == std) & np.isfinite(rows.score)]
        if rows.empty or rows.label.nunique() < 2:
            raise LoganError(f"no scores of both classes for metric={metric}, part={part}, std={std}, k={k}.")
        fpr, tpr, thresholds = roc_curve(rows.label.to_numpy(), rows.score.to_numpy())
        return Roc(fpr, tpr, thresholds, float(roc_auc_score(rows.label.to_numpy(), rows.score.to_numpy())))

    def table(self, std: float | None = None, k: float | None = None) -> str:
        """The AUC / TPR table at one std (None: each part at its own std, or the run's only std)."""
        from logan.report.evaluate import summary_table

        rows, k, note = self.metrics.to_dict("records"), self.k if k is None else k, self.plan.get("note", "")
        if not rows:
            return "no AUC table: the target set holds no labelled members and non-members (see the verdicts)"
        if std is None and not (self.per_part or self.split == "crossfit"):
            return "\n\n".join(summary_table(rows, k, s, note) for s in sorted(self.metrics["std"].unique()))
        return summary_table(rows, k, std, note)

    def _blind_line(self) -> str:
        auc = self.blind.get("auc")
        if auc is None or np.isnan(auc):
            return f"model-free baseline: {self.blind.get('verdict', 'not run')}"
        return f"model-free baseline: AUC {auc:.3f} - {self.blind.get('verdict', '')}"

    def summary(self) -> str:
        lines = [
            self.table(),
            self._blind_line(),
            *self._verdict_lines(),
            f"files: {self.output_dir / 'metrics.json'}, {self.output_dir / 'scores.parquet'}, {self.report}",
        ]
        return "\n".join(lines)

    def _verdict_lines(self) -> list[str]:
        from logan.report.verdicts import summary_lines

        path = self.output_dir / "verdicts.json"
        return (
            [*summary_lines(read_json(path)), f"verdicts: {self.output_dir / 'verdicts.csv'}"]
            if path.is_file()
            else []
        )

    def __str__(self) -> str:
        return self.summary()


@dataclass
class DemoResult:
    """`logan demo`: the comparison table and each attacked model's tune and classify results."""

    output_dir: Path
    table: str
    models: dict[str, tuple[TuneResult, ClassifyResult]] = field(repr=False)
    summary_data: dict[str, Any] = field(repr=False)
    results: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # results.json ({}: a folder without one)

    def summary(self) -> str:
        trained = self.models.get("trained")
        files = [self.output_dir / "demo_table.txt"]
        if trained:
            files += [trained[0].output_dir / "tuning_curve.png", *trained[1].plots[:1], trained[1].report]
        return "\n".join([self.table, "files: " + ", ".join(str(p) for p in files if p.exists())])

    def __str__(self) -> str:
        return self.summary()


@dataclass
class PrepareResult:
    """`logan prepare`: the lists written (name -> path) and prepare_summary.json."""

    output_dir: Path
    lists: dict[str, Path]
    summary_data: dict[str, Any] = field(repr=False)

    def summary(self) -> str:
        lines = [
            f"{path}: {self.summary_data['sets'][name]['count']} images" for name, path in self.lists.items()
        ]
        lines += [c["warning"] for c in self.summary_data.get("comparisons", []) if c.get("warning")]
        return "\n".join(lines + [f"files: {self.output_dir / 'prepare_summary.json'}"])

    def __str__(self) -> str:
        return self.summary()


@dataclass
class CompareResult:
    """`logan compare`: finished runs side by side (results.json of the compare folder)."""

    output_dir: Path
    results: dict[str, Any] = field(repr=False)
    text: str = ""  # the tables as printed (compare.txt)

    @property
    def table(self) -> pd.DataFrame:
        """One row per (run, part, metric) at each classify run's std and K: std, AUC with its interval, TPR at
        each FPR target (with the FPR reached and whether it is estimable), n_members, n_nonmembers."""
        return pd.DataFrame(self.results["metrics"])

    @property
    def tuning(self) -> pd.DataFrame:
        """One row per (tuning run, part): the optimal std of its selection metric and the curve there."""
        return pd.DataFrame(self.results["tuning"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Each run compared: name (the column label), folder, command and its results.json (None: older run)."""
        return self.results["runs"]

    def wide(self, value: str = "auc") -> pd.DataFrame:
        """`value` with (part, metric) as rows and one column per run."""
        return self.table.pivot_table(index=["part", "metric"], columns="run", values=value, sort=False)

    @property
    def plots(self) -> list[Path]:
        return sorted(self.output_dir.glob("compare_*.png"))

    def summary(self) -> str:
        files = [self.output_dir / "compare.txt", *self.plots, self.output_dir / "results.json"]
        return "\n".join([self.text.rstrip(), "files: " + ", ".join(str(p) for p in files if p.exists())])

    def __str__(self) -> str:
        return self.summary()


Result = TuneResult | ClassifyResult | DemoResult | PrepareResult | CompareResult


def load_run(folder: str | Path) -> Result:
    """Read a finished run folder (tune, classify, demo, prepare or compare) into its result object."""
    out = Path(folder).expanduser()
    if (out / "demo_summary.json").is_file():
        return _demo(out)
    if (out / "prepare_summary.json").is_file():
        summary = read_json(out / "prepare_summary.json")
        return PrepareResult(out, {name: out / name for name in summary["sets"]}, summary)
    if not (out / FINGERPRINT_FILE).is_file():
        results = _results(out)
        if results.get("command") == "compare":
            text = (out / "compare.txt").read_text() if (out / "compare.txt").is_file() else ""
            return CompareResult(out, results, text)
        raise LoganError(
            f"{out} is not a LOGAN run folder (no {FINGERPRINT_FILE}, demo_summary.json or "
            "prepare_summary.json)."
        )
    command = read_json(out / FINGERPRINT_FILE).get("command")
    if command == "tune":
        return _tune(out)
    if command == "classify":
        return _classify(out)
    raise LoganError(f"{out} holds the results of an unknown command '{command}'.")


def _tune(out: Path) -> TuneResult:
    if not (out / "optimal_std.json").is_file():
        raise LoganError(
            f"{out} is an unfinished tuning run (no optimal_std.json): rerun the same 'logan tune' "
            f"to finish it, or 'logan select path.output_dir={out}'."
        )
    selection, results = read_json(out / "optimal_std.json"), _results(out)
    recorded = results.get("selection", {})
    if any(recorded.get(name) != selection.get(name) for name in ("optimal_std", "rule", "part", "k")):
        results = {}  # a results.json of an earlier selection (a later one stopped before writing its own)
    return TuneResult(out, selection, results)


def _classify(out: Path) -> ClassifyResult:
    if not (out / "metrics.json").is_file():
        raise LoganError(
            f"{out} is an unfinished classify run (no metrics.json): rerun the same 'logan classify' "
            "to finish it."
        )
    config = read_json(out / "config.json") if (out / "config.json").is_file() else {}
    blind = read_json(out / "blind_baseline.json") if (out / "blind_baseline.json").is_file() else {}
    k = float(config.get("selection", {}).get("k", 1.0))
    per_part = bool(config.get("noise", {}).get("per_part", False))
    plan = read_json(out / "std_plan.json") if (out / "std_plan.json").is_file() else {}
    return ClassifyResult(
        out, pd.DataFrame(read_json(out / "metrics.json")), blind, k, per_part, plan, _results(out)
    )


def _demo(out: Path) -> DemoResult:
    summary = read_json(out / "demo_summary.json")
    models = {
        name: (_tune(out / name / "tune"), _classify(out / name / "classify"))
        for name in ("trained", "control")
        if (out / name / "classify" / "metrics.json").is_file()
    }
    return DemoResult(out, summary["table"], models, summary, _results(out))


def _results(out: Path) -> dict[str, Any]:
    """The folder's results.json, or {} where there is none (a folder written before it existed)."""
    return read_json(out / RESULTS) if (out / RESULTS).is_file() else {}
