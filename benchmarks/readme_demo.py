"""The README's demo block from a run of `logan demo`: its table and every number its sentences quote.

    python benchmarks/readme_demo.py                 # runs `logan demo` (default settings), then rewrites
    python benchmarks/readme_demo.py --from OUT      # from a finished default demo folder OUT

Rewrites the block between `<!-- demo:begin` and `<!-- demo:end -->` in README.md: the demo's table
(an excerpt of OUT/demo_table.txt: the metrics of EXCERPT) and the sentences under it, whose numbers and
qualitative claims ("a signal" = the AUC's 95 % interval lies above 0.5) are filled in from the run; and
writes the numbers with the package versions they came from to benchmarks/readme_demo.json.
tests/test_demo.py runs a fresh default demo and compares it with the README (tolerances stated there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NUMBERS = ROOT / "benchmarks" / "readme_demo.json"
BEGIN, END = "<!-- demo:begin", "<!-- demo:end -->"
EXCERPT = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_4", "ppl", "mink_plus_plus", "aug_kld"]
DIVERGENCES = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_4"]  # "the two divergences" of the sentences
PART_NAMES = {"img": "the image tokens", "inst": "the instruction", "desp": "the generated description",
              "inst_desp": "instruction + description", "caption": "the caption"}
ROW_KEYS = ["std", "auc", "auc_ci_low", "auc_ci_high", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr"]


# ----------------------------------------------------------------------------------- the numbers

def demo_numbers(out: Path) -> dict[str, Any]:
    """Everything the README block shows, read from the finished demo folder `out`."""
    import numpy as np
    import pandas as pd
    import torch
    import transformers

    import logan
    from logan.metrics.registry import get_metric
    from logan.pipeline.select import pick
    from logan.report.scoring import roc_summary
    from logan.results import load_scores

    config = json.loads((out / "trained" / "tune" / "config.json").read_text())
    summary = json.loads((out / "demo_summary.json").read_text())
    k, parts = float(config["selection"]["k"]), config["img_metrics"]["parts"]
    table: dict[str, dict] = {}
    for model in ("trained", "control"):
        rows = json.loads((out / model / "classify" / "metrics.json").read_text())
        table[model] = {part: {} for part in parts}  # in the run's order of parts
        for r in rows:
            if abs(r["k"] - k) < 1e-9:
                table[model][r["part"]][r["metric"]] = {key: r.get(key) for key in ROW_KEYS} | {
                    "estimable_1pct": r.get("tpr_at_1pct_fpr_estimable")}
    selection = json.loads((out / "trained" / "tune" / "optimal_std.json").read_text())
    evaluation = set(selection["split"]["evaluation"])
    min_gap = {}
    for part, entry in selection["per_part"].items():
        std = pick(entry["curve"], "min_gap")
        values = load_scores(out / "trained" / "tune", [std], k)
        values = values[values.sample_id.isin(evaluation) & (values.part == part)]
        aucs = {}
        for metric in DIVERGENCES:
            rows = values[values.metric == metric]
            aucs[metric] = roc_summary(rows.label.to_numpy(), get_metric(metric).sign * rows.value.to_numpy())["auc"]
        min_gap[part] = {"std": std, "auc": aucs}
    blind = json.loads((out / "trained" / "classify" / "blind_baseline.json").read_text())
    held_out = json.loads((out / "trained" / "classify" / "metrics.json").read_text())[0]
    return {
        "generated_by": "python benchmarks/readme_demo.py",
        "date": date.today().isoformat(),
        "versions": {"logan": logan.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "threads": config.get("demo", {}).get("threads")},
        "settings": {"seed": config["seed"], **{key: config["demo"][key] for key in
                     ("n_members", "n_nonmembers", "epochs")}, "n_reference": config["data"]["reference_set_size"],
                     "k": k, "rule": selection["rule"], "selection_metric": selection["selection_metric"],
                     "split": selection["split"]["mode"], "n_metrics": len(config["img_metrics"]["metrics_to_use"]),
                     "std_grid": sorted({float(s) for group in config["noise"]["std_sets"] for s in group})},
        "seconds": summary["seconds"],
        "held_out": {"n_members": held_out["n_members"], "n_nonmembers": held_out["n_nonmembers"]},
        "optimal_std": {model: {part: entry["optimal_std"] for part, entry in json.loads(
            (out / model / "tune" / "optimal_std.json").read_text())["per_part"].items()} for model in table},
        "table": table,
        "min_gap": min_gap,
        "blind": {key: blind[key] for key in ("auc", "auc_lower_bound", "shifted")},
        "table_text": (out / "demo_table.txt").read_text(),
    }


# ---------------------------------------------------------------------------------------- the block

def excerpt(table_text: str) -> str:
    """The demo table with only the EXCERPT metrics' rows (title, header and baseline line kept)."""
    lines = table_text.rstrip("\n").splitlines()
    kept = [line for line in lines[2:] if line.startswith("model-free") or line.split()[1:2] in ([m] for m in EXCERPT)]
    return "\n".join(lines[:2] + kept)


def _auc(row: dict) -> str:
    return f"{row['auc']:.2f} [{row['auc_ci_low']:.2f}, {row['auc_ci_high']:.2f}]"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_block(n: dict[str, Any]) -> str:
    """The README block: the table excerpt and the sentences, every number and claim from `n`."""
    return "\n".join([
        f"{BEGIN} generated by `python benchmarks/readme_demo.py` from a run; edit the script, not this block -->",
        "```", excerpt(n["table_text"]), "```", "", _settings(n), "", _memorised(n), _where_signal(n),
        _chosen_std(n), _baseline(n), END])


def _settings(n: dict[str, Any]) -> str:
    s, v = n["settings"], n["versions"]
    return (f"(An excerpt: `OUT/demo_table.txt` has all {s['n_metrics']} metrics. Default settings, seed {s['seed']}: "
            f"{s['n_members']} members, {s['n_nonmembers']} non-members, {s['n_reference']} reference images, "
            f"{s['epochs']} epochs; {n['seconds'] / 60:.0f} min on {n['machine']['cpus']} CPU cores when this block "
            f"was generated, with logan {v['logan']}, torch {v['torch']}, transformers {v['transformers']}, Python "
            f"{v['python']} (`benchmarks/readme_demo.json` has every number); the same seed gives the same numbers.) "
            "What it says, honestly (a signal = the AUC's 95 % interval lies above 0.5):")


def _memorised(n: dict[str, Any]) -> str:
    trained, control = n["table"]["trained"], n["table"]["control"]
    shown = [row["auc"] for part in control.values() for metric, row in part.items() if metric in EXCERPT]
    rows = [row for part in control.values() for row in part.values()]
    return ("- The membership is real and the model memorised it: the loss on the members' own captions (`ppl`, "
            f"`caption` part) separates held-out members with AUC {_auc(trained['caption']['ppl'])}; on the "
            f"untrained control the table's AUCs lie between {min(shown):.2f} and {max(shown):.2f}, and "
            f"{sum(row['auc_ci_low'] > 0.5 for row in rows)} of its {len(rows)} rows (all metrics) show a signal.")


def _where_signal(n: dict[str, Any]) -> str:
    trained, kl = n["table"]["trained"], DIVERGENCES[0]
    signal = [p for p in trained if trained[p][kl]["auc_ci_low"] > 0.5]
    none = [p for p in trained if p not in signal]

    def shown(parts: list[str]) -> str:
        return _listing([f"{PART_NAMES[p]} ({_auc(trained[p][kl])})" for p in parts])

    text = f"- **LOGAN's KL divergence (`{kl}`) carries a signal on {shown(signal) if signal else 'no part'}**"
    text += ", on samples the std was not chosen on" + (f", **and none on {shown(none)}**" if none else "")
    if "img" in none:
        text += ("; the image-token positions are the ones the original scores: on a tiny VLM, noise on the image "
                 "changes their outputs for members and non-members alike")
    return text + "."


def _chosen_std(n: dict[str, Any]) -> str:
    parts, gap = list(n["table"]["trained"]), n["min_gap"]
    reached = [" / ".join(f"{gap[p]['auc'][m]:.3f}" for m in DIVERGENCES) + f" on {PART_NAMES[p]}"
               for p in ("caption", "desp") if p in gap]
    return (f"- The std each part's curve picks (`{n['settings']['rule']}`, unlabelled: the reference is a separate "
            "list): " + ", ".join(f"{PART_NAMES[p]} {n['optimal_std']['trained'][p]:g}" for p in parts)
            + ". The original README's min-gap rule, on the same folder and split (`selection.rule=min_gap`), picks "
            + ", ".join(f"{gap[p]['std']:g} on {PART_NAMES[p]}" for p in parts if p in gap)
            + (f", where the two divergences above reach {_listing(reached)}" if reached else "")
            + '. "Optimal std" below measures the rules on 20 held-out splits.')


def _baseline(n: dict[str, Any]) -> str:
    blind = n["blind"]
    verdict = ("so the AUCs above are membership, not distribution shift." if not blind["shifted"] else
               "above chance: on this run the split is distribution-shifted and the AUCs above are not membership "
               "alone.")
    return (f"- The members and non-members come from one generator: the model-free baseline's AUC is "
            f"{blind['auc']:.2f} (one-sided 95 % lower bound {blind['auc_lower_bound']:.2f}), {verdict}")


def rewrite(readme: str, block: str) -> str:
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no '{BEGIN} ... {END}' block to rewrite.")
    return readme[:start] + block + readme[end + len(END):]


# ------------------------------------------------------------------------------------------- main

def run_demo(folder: Path) -> Path:
    out = folder / "demo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "logan", "demo", f"path.output_dir={out}"], check=True, env=env)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="source", type=Path, default=None, help="a finished default `logan demo` folder")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.source or run_demo(Path(tmp))
        numbers = demo_numbers(out)
    NUMBERS.write_text(json.dumps(numbers, indent=1) + "\n")
    README.write_text(rewrite(README.read_text(), render_block(numbers)))
    sys.stdout.write(f"rewrote the demo block of {README} and {NUMBERS} from {out}\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main(sys.argv[1:]))
