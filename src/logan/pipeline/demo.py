"""`logan demo`: a membership benchmark whose truth is known, attacked end to end on a CPU.

1. Render captioned scenes i.i.d. from one generator and split them into members, non-members and a
   separate reference pool of known non-members (JSON lists in the seed's format under OUT/data).
2. Build the package's tiny LLaVA and train it on the members' (image, caption) pairs (OUT/model);
   keep an untrained copy as the control (OUT/model_untrained).
3. For each model: `tune` -> `select` -> `classify`, exactly as a user would (OUT/<model>/tune, .../classify).
4. Print metric x part AUC and TPR at low FPR at the optimal std, trained beside control.

The std is chosen on a selection half of the target set and the AUCs count the other half only
(`selection.split=holdout`, the demo's default; `selection.split=none` chooses and scores on all).

    logan demo                                  # defaults: 150 members, 150 non-members, 150 epochs
    logan demo demo.n_members=60 demo.epochs=30 path.output_dir=/tmp/demo
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from logan.config import RunConfig
from logan.data.synthetic import make_split, vocabulary
from logan.io import atomic_path, read_json, write_json
from logan.models.tiny import build_tiny_llava
from logan.models.train import train_captioner
from logan.pipeline.classify import classify
from logan.pipeline.tune import tune
from logan.report.evaluate import BEST_NOTE, estimable_only, format_tpr
from logan.report.html import std_text
from logan.report.results_file import write_demo_results
from logan.threads import torch_threads

log = logging.getLogger(__name__)


def derive(cfg: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `cfg` with dotted keys replaced (`derive(cfg, **{"noise.std": 2.0})`)."""
    new = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = new
        for name in path:
            node = getattr(node, name)
        setattr(node, key, value)
    new.validate()
    return new


def make_data(cfg: RunConfig, folder: Path) -> dict[str, Path]:
    d = cfg.demo
    names = {"members": d.n_members, "nonmembers": d.n_nonmembers, "reference": d.n_nonmembers}
    lists = {name: folder / f"{name}.json" for name in names}
    if all(p.exists() for p in lists.values()):
        return lists
    return make_split(folder, names, size=2 * d.image_size, seed=cfg.seed)


def make_models(cfg: RunConfig, out: Path, lists: dict[str, Path]) -> tuple[Path, Path]:
    """The untrained tiny LLaVA and a copy trained on the members (reused when already built)."""
    d = cfg.demo
    captions = [e["caption"] for p in lists.values() for e in read_json(p)]
    untrained, trained = out / "model_untrained", out / "model"
    if not (untrained / "logan_tiny.json").exists():
        from logan.models.tiny import TinySpec

        build_tiny_llava(
            untrained,
            vocabulary() + captions,
            TinySpec(image_size=d.image_size, hidden=d.hidden, layers=d.layers, intermediate=2 * d.hidden),
            seed=cfg.seed,
            instruction=cfg.prompt.text,
        )
    if not (trained / "trained.json").exists():
        shutil.rmtree(trained, ignore_errors=True)
        shutil.copytree(untrained, trained)
        members = read_json(lists["members"])
        started = time.time()
        history = train_captioner(
            trained,
            [(e["image"], e["caption"]) for e in members],
            cfg.prompt.text,
            epochs=d.epochs,
            learning_rate=d.learning_rate,
            batch_size=d.train_batch_size,
            seed=cfg.seed,
        )
        write_json(
            trained / "trained.json",
            {"epochs": d.epochs, "loss_per_epoch": history, "seconds": round(time.time() - started, 1)},
        )
    return trained, untrained


def attack(cfg: RunConfig, model: Path, lists: dict[str, Path], folder: Path) -> tuple[dict, list[dict]]:
    """tune -> select -> classify (each part at its own selected std) on one model, as a user would."""
    d = cfg.demo
    total = d.n_members + d.n_nonmembers
    parts = list(dict.fromkeys([*cfg.img_metrics.parts, "caption"]))
    tcfg = derive(
        cfg,
        **{
            "target_model.name": "llava-hf",
            "target_model.model_path": str(model),
            "data.member_dataset": str(lists["members"]),
            "data.nonmember_dataset": str(lists["nonmembers"]),
            "data.target_set_size": total,
            "data.n_nm_ratio": d.n_nonmembers / total,
            "data.reference_datasets_list": [str(lists["reference"])],
            "data.reference_set_size": d.n_nonmembers,
            "img_metrics.parts": parts,
            "path.output_dir": str(folder / "tune"),
            "inference.batch_size": d.batch_size,
            "generation.batch_size": d.batch_size,
            **({"noise.std_sets": d.std_sets} if d.std_sets else {}),
        },
    )
    selected = tune(tcfg)
    ccfg = derive(
        tcfg,
        **{
            "data.dataset": str(folder / "tune" / "datasets" / "target_dataset.parquet"),
            "data.member_dataset": None,
            "data.nonmember_dataset": None,
            "noise.std": str(folder / "tune" / "optimal_std.json"),
            "noise.per_part": True,
            "path.output_dir": str(folder / "classify"),
        },
    )
    rows = classify(ccfg)
    assert selected is not None and rows is not None, "the demo runs unsharded: tune and classify finish here"
    return selected, rows


def comparison(results: dict[str, tuple[dict, list[dict]]], k: float) -> str:
    """Metric x part table, each part at its own optimal std: AUC and TPR at 5 % / 1 % FPR per model."""
    names = list(results)
    header = f"{'part':<10} {'metric':<28}" + "".join(
        f" {name + ' std':>12} {'AUC':>6} {'TPR@5%':>7} {'TPR@1%':>7}" for name in names
    )
    selection, first = results[names[0]][0], results[names[0]][1][0]
    title = (
        f"K = {k:g}; each part at the std its own tuning curve selects (selection metric "
        f"{selection['selection_metric']}); {_where(selection, first)}; n/e = not estimable with this many "
        "non-members"
    )
    lines = [title, header]
    parts = results[names[0]][0]["per_part"]
    metrics = list(dict.fromkeys(r["metric"] for r in results[names[0]][1]))
    for part in parts:
        for metric in metrics:
            cells = []
            for name in names:
                row = next(
                    r
                    for r in results[name][1]
                    if r["part"] == part and r["metric"] == metric and abs(r["k"] - k) < 1e-9
                )
                cells.append(
                    f" {std_text(row):>12} {row['auc']:6.3f} {format_tpr(row, '5pct')} {format_tpr(row, '1pct')}"
                )
            lines.append(f"{part:<10} {metric:<28}" + "".join(cells))
    return "\n".join(lines)


def _where(selection: dict[str, Any], row: dict[str, Any]) -> str:
    """Which samples the table's AUCs count, by the selection's split."""
    split = (selection.get("split") or {}).get("mode", "none")
    counted = f"{row['n_members']} members + {row['n_nonmembers']} non-members"
    return {
        "none": f"AUCs on all {counted}, the samples the std was chosen on",
        "holdout": f"std chosen on a selection half, AUCs on the held-out {counted}",
        "crossfit": f"each half at the std chosen on the other, AUCs the mean of the halves' ({counted})",
    }[split]


def blind_line(folder: Path) -> str:
    blind = read_json(folder / "trained" / "classify" / "blind_baseline.json")
    return f"model-free baseline (no model at all): AUC {blind['auc']:.3f} - {blind['verdict']}"


def demo(cfg: RunConfig) -> dict[str, Any]:
    """The whole demo at `demo.threads` torch threads (the caller's count is restored after)."""
    with torch_threads(cfg.demo.threads):
        return _demo(cfg)


def _demo(cfg: RunConfig) -> dict[str, Any]:
    out = cfg.output_dir
    started = time.time()
    stages: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        stages[name] = round(time.time() - since, 1)
        return time.time()

    lists = make_data(cfg, out / "data")
    mark = stage("data", started)
    trained, untrained = make_models(cfg, out, lists)
    mark = stage("build + train model", mark)
    models = {"trained": trained, **({"control": untrained} if cfg.demo.control else {})}
    results = {}
    for name, path in models.items():
        results[name] = attack(cfg, path, lists, out / name)
        mark = stage(f"attack {name} (tune + select + classify)", mark)
    table = comparison(results, cfg.selection.k) + "\n" + blind_line(out)
    summary = {
        "seconds": round(time.time() - started, 1),
        "stages": stages,
        "optimal_std": {name: sel["optimal_std"] for name, (sel, _) in results.items()},
        "best": {
            name: estimable_only(max(rows, key=lambda r: r["auc"])) for name, (_, rows) in results.items()
        },
        "best_note": BEST_NOTE,
        "table": table,
    }
    write_json(out / "demo_summary.json", summary)
    with atomic_path(out / "demo_table.txt") as tmp:
        tmp.write_text(table + "\n")
    write_demo_results(cfg, results, table)
    log.info("demo finished in %.0f s", summary["seconds"])
    return summary
