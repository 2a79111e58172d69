"""results.json: one versioned file per finished run, the run's results as a reviewer reads and compares them.

Written last by `tune` and `select` (the tuning curves and the selection), `classify` (the membership
metrics and the ROC curves), `demo` (trained beside control, with links to its runs' files) and `compare`,
next to the files it summarises. Every file holds `schema_version`, the command, when it was written,
the package versions, the configuration the run used and where its model and data came from
(`provenance`: provenance.json's models and dataset entries, the saved sets' counts and content
fingerprints, the run fingerprint). The JSON Schema ships in the package (`logan/schema/results.schema.json`;
`validate_results(path)` checks a file against it).

Tables are column-oriented ({column: [value per row]}, one line per column), so a default tune's 1 440 curve
points or a classify's 1 080 metric rows stay small; `pandas.DataFrame(results["metrics"])` reads one
back. ROC curves are kept only where a reader needs them: classify's std(s) at the K of its tables, as
false- and true-positive counts at each threshold that changes the curve (fpr = fp / n_nonmembers).
Non-finite numbers are written as null. Apart from `created` and `versions`, a rerun with the same
settings and seed writes the same file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logan import __version__
from logan.config import RunConfig
from logan.data.sets import SET_FILES
from logan.errors import LoganError
from logan.io import FINGERPRINT_FILE, read_json, write_json
from logan.provenance import read_provenance, saved_sets
from logan.report.scoring import FPR_TARGETS, roc_points
from logan.runs import RESULTS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_FILE = "results.schema.json"
# the packages whose versions a result depends on (besides logan and python)
PACKAGES = (
    "torch",
    "transformers",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "pyarrow",
    "safetensors",
    "huggingface_hub",
    "datasets",
    "accelerate",
    "pillow",
    "matplotlib",
    "hydra-core",
)
PER_METRIC = ("needs", "orientation")  # metrics.json columns that depend on the metric only
TABLES = ("curves", "metrics", "comparison", "tuning")  # the column-oriented tables a results.json may hold


def versions() -> dict[str, str | None]:
    """logan's, python's and each of PACKAGES' version (None: not installed)."""
    found: dict[str, str | None] = {"logan": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


# every metrics table has these columns, also an empty one (an unlabelled target set has no AUC row)
METRIC_COLUMNS = ("metric", "part", "std", "k", "n_members", "n_nonmembers", "auc", "acc") + tuple(
    f"{kind}_at_{target}_fpr{suffix}"
    for target in FPR_TARGETS
    for kind, suffix in (("tpr", ""), ("fpr", ""), ("tpr", "_estimable"))
)


def columns(rows: list[dict[str, Any]], first: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Rows as {column: values}: `first` leads, then every other key in order of first appearance; a key a row
    lacks is null there."""
    names = list(dict.fromkeys([*first, *(name for row in rows for name in row)]))
    return {name: [_plain(row.get(name)) for row in rows] for name in names}


def _plain(value: Any) -> Any:
    """A JSON-ready value: numpy scalars as Python numbers, non-finite floats as None, lists and dicts inside."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def relative(path: Path, start: Path) -> str:
    """`path` as seen from the folder `start`, with forward slashes (links inside a results file)."""
    return Path(os.path.relpath(Path(path).absolute(), Path(start).absolute())).as_posix()


def header(cfg: RunConfig, command: str, provenance: dict[str, Any] | None) -> dict[str, Any]:
    """What every results.json starts with: the version of the file, the command, when, with which packages
    and configuration, and where its inputs came from (None: nothing of its own, as for compare)."""
    config = asdict(cfg)
    config.pop("resolved", None)  # the Hub commits: provenance.models
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config,
        **({"provenance": provenance} if provenance is not None else {}),
    }


def run_provenance(out: Path) -> dict[str, Any]:
    """A run folder's models and dataset entries (provenance.json), its saved sets and its run fingerprint."""
    recorded = read_provenance(out) or {}
    fingerprint = read_json(out / FINGERPRINT_FILE) if (out / FINGERPRINT_FILE).is_file() else {}
    return {
        "models": recorded.get("models", {}),
        "datasets": recorded.get("datasets", []),
        "sets": saved_sets(out, {kind: SET_FILES[kind] for kind in ("target", "reference")}),
        "fingerprint": fingerprint.get("fingerprint", {}),
    }


def publish(cfg: RunConfig, doc: dict[str, Any], images: Sequence[Path] = ()) -> Path:
    """Write OUT/results.json, then log it (and the plots `images`) to the tracker `tracking` names."""
    from logan.report.tracking import log_results

    path, doc = cfg.output_dir / RESULTS, _plain(doc)
    write_json(path, doc, compact=True)
    log.info("wrote %s (%.0f KiB)", path, path.stat().st_size / 1024)
    log_results(cfg, doc, [p for p in images if Path(p).is_file()])
    return path


def files_of(out: Path, names: list[str]) -> dict[str, str]:
    """The run's other outputs that exist, by name (links relative to the run folder)."""
    return {name: name for name in names if (out / name).exists()}


# ---------------------------------------------------------------- tune / select


def write_tune_results(
    cfg: RunConfig,
    command: str,
    selection: dict[str, Any],
    curves: dict[tuple[str, str], list[dict[str, float]]],
) -> Path:
    """tune / select: every (part, metric)'s tuning curve at K = selection.k, and the selection."""
    parts, metrics = cfg.img_metrics.parts, cfg.img_metrics.metrics_to_use
    order = sorted(curves, key=lambda pm: (position(parts, pm[0]), position(metrics, pm[1])))
    rows = [
        {"part": part, "metric": metric, "k": float(selection["k"]), **point}
        for part, metric in order
        for point in sorted(curves[(part, metric)], key=lambda p: p["std"])
    ]
    doc = header(cfg, command, run_provenance(cfg.output_dir))
    keep = (
        "optimal_std",
        "selection_metric",
        "rule",
        "part",
        "k",
        "alternatives",
        "reference_is_target_nonmembers",
        "n_target",
        "n_reference",
        "label_informed",
        "excluded",
    )
    doc["selection"] = {name: selection[name] for name in keep if name in selection} | {
        "per_part": {part: entry["optimal_std"] for part, entry in selection.get("per_part", {}).items()},
        "split": split_summary(selection.get("split")),
    }
    doc["curves"] = columns(rows, ("part", "metric", "k", "std"))
    doc["files"] = files_of(
        cfg.output_dir, ["optimal_std.json", "tuning_curve.png", "provenance.json", "config.json", "datasets"]
    )
    return publish(cfg, doc, [cfg.output_dir / "tuning_curve.png"])


def split_summary(split: dict[str, Any] | None) -> dict[str, Any]:
    """optimal_std.json's `split` without its sample lists (their sizes instead; the lists stay there)."""
    if not split:
        return {"mode": "none"}
    out: dict[str, Any] = {}
    for name, value in split.items():
        if name in ("selection", "evaluation"):
            out[f"n_{name}"] = len(value)
        elif name == "folds":
            out["fold_sizes"] = [len(fold) for fold in value]
        else:
            out[name] = value
    return out


def position(order: Sequence[str], name: str) -> int:
    """Where `name` stands in `order` (after every listed name when it is not listed): a stable sort key."""
    return order.index(name) if name in order else len(order)


# ---------------------------------------------------------------- classify


def write_classify_results(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    plan: dict[str, Any],
    scores: pd.DataFrame,
    blind: dict[str, Any],
    images: list[Path],
    verdicts: dict[str, Any] | None = None,
) -> Path:
    """classify: the metrics rows (as metrics.json, the per-metric columns apart), the ROC curves at K =
    selection.k, the std plan (std_plan.json's `plan`, its sample lists as counts), the model-free
    baseline and the per-image verdicts' summary (verdicts.json; null without a reference set)."""
    out, k = cfg.output_dir, cfg.selection.k
    doc = header(cfg, "classify", run_provenance(out))
    source = Path(plan["source"]) if plan.get("source") else None
    doc["plan"] = {
        name: value for name, value in plan.items() if name not in ("evaluated", "folds", "source")
    } | {
        "source": relative(source, out) if source else None,
        "folds": [{"n": len(fold["samples"]), "std": fold["std"]} for fold in plan.get("folds", [])],
    }
    tuning = source.parent / RESULTS if source else None
    doc["tuning_run"] = relative(tuning, out) if tuning and tuning.is_file() else None
    doc["k"] = float(k)
    doc["fpr_targets"] = dict(FPR_TARGETS)
    doc["metric_definitions"] = {
        r["metric"]: {name: r[name] for name in PER_METRIC if name in r} for r in rows
    }
    doc["metrics"] = columns(
        [{n: v for n, v in r.items() if n not in PER_METRIC} for r in rows], METRIC_COLUMNS
    )
    doc["roc"] = roc_arrays(scores, k, cfg.img_metrics.parts, cfg.img_metrics.metrics_to_use)
    doc["blind_baseline"] = blind
    doc["verdicts"] = verdicts
    doc["files"] = files_of(
        out,
        [
            "metrics.json",
            "scores.parquet",
            "std_plan.json",
            "blind_baseline.json",
            "verdicts.csv",
            "verdicts.json",
            "report.html",
            *sorted(p.name for p in out.glob("*.png")),
            "provenance.json",
            "config.json",
        ],
    )
    return publish(cfg, doc, images)


def roc_arrays(scores: pd.DataFrame, k: float, parts: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """The ROC curve of every (std, part, metric) at K = `k` (crossfit: of every fold), as counts."""
    at = scores[np.isclose(scores.k, k) & np.isfinite(scores.score.to_numpy())]
    keys = ["std", "part", "metric", *(["fold"] if "fold" in at else [])]
    curves = []
    for key, group in at.groupby(keys, sort=False):
        labels = group.label.to_numpy().astype(int)
        n_members, n_nonmembers = int(labels.sum()), int(len(labels) - labels.sum())
        if not n_members or not n_nonmembers:
            continue
        fpr, tpr = roc_points(labels, group.score.to_numpy())
        entry = dict(zip(keys, key)) | {
            "k": float(k),
            "n_members": n_members,
            "n_nonmembers": n_nonmembers,
            "fp": np.rint(fpr * n_nonmembers).astype(int).tolist(),
            "tp": np.rint(tpr * n_members).astype(int).tolist(),
        }
        curves.append(entry)
    return sorted(
        curves,
        key=lambda c: (
            c["std"],
            position(parts, c["part"]),
            position(metrics, c["metric"]),
            c.get("fold", 0),
        ),
    )


# ---------------------------------------------------------------- demo


def write_demo_results(cfg: RunConfig, results: dict[str, tuple[dict, list[dict]]], table: str) -> Path:
    """demo: trained beside control (every metric x part at K = selection.k, each part at its own std), the
    generated data and the models, with links to each attacked model's tune and classify results.json."""
    out, k = cfg.output_dir, cfg.selection.k
    rows = [
        {"model": name, **{n: v for n, v in r.items() if n not in PER_METRIC}}
        for name, (_, metric_rows) in results.items()
        for r in metric_rows
        if np.isclose(r["k"], k)
    ]
    data = {
        path.stem: {"file": relative(path, out), "entries": len(read_json(path)), "sha256": _sha256(path)}
        for path in sorted((out / "data").glob("*.json"))
    }
    trained, built = (
        read_json(path) if path.is_file() else {}
        for path in (out / "model" / "trained.json", out / "model_untrained" / "logan_tiny.json")
    )
    models = {
        "trained": {
            "folder": "model",
            "epochs": trained.get("epochs"),
            "final_loss": (trained.get("loss_per_epoch") or [None])[-1],
        },
        "control": {"folder": "model_untrained", "epochs": 0},
        "architecture": built,
    }
    doc = header(cfg, "demo", {"data": data, "models": models})
    doc["k"] = float(k)
    doc["comparison"] = columns(rows, ("model", "part", "metric", "std", "k"))
    doc["optimal_std"] = {name: selection["optimal_std"] for name, (selection, _) in results.items()}
    doc["per_part"] = {
        name: {p: e["optimal_std"] for p, e in selection["per_part"].items()}
        for name, (selection, _) in results.items()
    }
    doc["runs"] = {
        name: {step: relative(out / name / step / RESULTS, out) for step in ("tune", "classify")}
        for name in results
    }
    blind = out / "trained" / "classify" / "blind_baseline.json"
    doc["blind_baseline"] = read_json(blind) if blind.is_file() else None
    doc["table"] = table.splitlines()
    doc["files"] = files_of(out, ["demo_table.txt", "demo_summary.json", "data", "model", "model_untrained"])
    return publish(cfg, doc)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- reading and checking


def schema() -> dict[str, Any]:
    """The JSON Schema of results.json shipped in the package."""
    import json
    from importlib.resources import files

    return json.loads(files("logan").joinpath("schema").joinpath(SCHEMA_FILE).read_text())


def validate_results(path: str | Path) -> dict[str, Any]:
    """Check a results.json (or the one in a run folder) against the package's schema; returns its content.
    Raises LoganError naming the first place that does not conform (needs the `jsonschema` package)."""
    import json

    path = Path(path).expanduser()
    path = path / RESULTS if path.is_dir() else path
    if not path.is_file():
        raise LoganError(f"{path} does not exist: give a run folder with a results.json, or the file itself.")
    try:
        import jsonschema
    except ImportError:
        raise LoganError("validate_results needs the jsonschema package: pip install jsonschema") from None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LoganError(f"{path} is not valid JSON: {exc}") from None
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise LoganError(
            f"{path} does not match results schema {doc.get('schema_version')}: at {where}: "
            f"{error.message[:300]}"
        )
    for name in TABLES:  # what JSON Schema cannot say: a table's columns are equally long
        lengths = {column: len(values) for column, values in doc.get(name, {}).items()}
        if len(set(lengths.values())) > 1:
            raise LoganError(f"{path}: the columns of '{name}' differ in length ({lengths}).")
    return doc
