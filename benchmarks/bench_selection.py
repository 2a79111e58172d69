"""Which selection rule and K choose a std that holds up on samples it was not chosen on.

    python benchmarks/bench_selection.py OUT                      # OUT: a finished `logan demo` folder
    python benchmarks/bench_selection.py OUT --model control --splits 50 --ks 0,0.1,0.5,1.0

On the demo's tuning run (`OUT/<model>/tune`: every std of the grid on the whole target set and the
reference set), for each of `--splits` seeded 50/50 splits of the target set, stratified by label
(`logan.pipeline.select.split_target`, as `selection.split=holdout` draws them): the curve of `--metric`
at Max-K ratio K on the selection half (`select.curve_point`), the std each rule picks on it
(`select.pick`), and the AUC of the same metric at that std and K on the evaluation half. Two reference
modes: the demo's separate list of known non-members (no membership labels used) and the selection
half's non-members (the seed's first mode: label-informed). The last row is the std that is best on
the evaluation half itself: a bound no rule can know, for scale.

Prints the mean held-out AUC over the splits (± its standard deviation) and the median std chosen.
Nothing is recomputed through the model; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from logan.data.sets import SET_FILES, read_list
from logan.metrics.registry import get_metric
from logan.pipeline.select import RULES, curve_point, pick, split_target
from logan.report.scoring import roc_summary
from logan.results import done_stds, std_folder

REFERENCES = {"separate list": "separate", "selection half's non-members": "target"}


def load(tune: Path, metric: str, parts: list[str], ks: list[float]) -> dict[tuple[str, float], dict[float, pd.DataFrame]]:
    """(part, K) -> std -> that std's per-sample values (columns sample_id, label, value)."""
    out: dict[tuple[str, float], dict[float, pd.DataFrame]] = {}
    for std in done_stds(tune):
        if std <= 0:
            continue
        frame = pd.read_parquet(std_folder(tune, std) / "scores.parquet", filters=[("metric", "==", metric)])
        frame = frame[frame.part.isin(parts)]
        for k in ks:
            at_k = frame[np.isclose(frame.k, k)]
            for part, rows in at_k.groupby("part"):
                out.setdefault((part, k), {})[std] = rows[["sample_id", "value"]].reset_index(drop=True)
    return out


def held_out_auc(values: pd.DataFrame, samples: list[str], labels: dict[str, int], sign: float) -> float:
    rows = values[values.sample_id.isin(samples)]
    return roc_summary(rows.sample_id.map(labels).to_numpy(), sign * rows.value.to_numpy())["auc"]


def measure(tune: Path, metric: str, parts: list[str], ks: list[float], splits: int,
            fraction: float) -> pd.DataFrame:
    """One row per split x reference mode x rule (or the evaluation-half bound) x K x part."""
    target = read_list(tune / "datasets" / SET_FILES["target"], "target set")
    separate = set(read_list(tune / "datasets" / SET_FILES["reference"], "reference set").image)
    labels = dict(zip(target.image, target.label.astype(int)))
    values = load(tune, metric, parts, ks)
    sign = get_metric(metric).sign
    rows = []
    for seed in range(splits):
        selection, evaluation = split_target(target, fraction, seed)
        chosen_on = set(selection)
        for (part, k), by_std in values.items():
            aucs = {std: held_out_auc(v, evaluation, labels, sign) for std, v in by_std.items()}
            best = max(aucs, key=lambda s: aucs[s] if np.isfinite(aucs[s]) else -1)
            rows.append({"seed": seed, "reference": "-", "rule": "best on evaluation half", "k": k, "part": part,
                         "std": best, "auc": aucs[best]})
            for name, mode in REFERENCES.items():
                reference = separate if mode == "separate" else {s for s in chosen_on if labels[s] == 0}
                points = [curve_point(std, v, chosen_on, reference) for std, v in sorted(by_std.items())]
                for rule in RULES:
                    std = pick(points, rule)
                    rows.append({"seed": seed, "reference": name, "rule": rule, "k": k, "part": part, "std": std,
                                 "auc": aucs[std]})
    return pd.DataFrame(rows)


def table(results: pd.DataFrame, parts: list[str]) -> str:
    """Mean ± sd of the held-out AUC and the median chosen std, per reference x rule x K (rows) and part."""
    cells = results.groupby(["reference", "rule", "k", "part"], sort=False).agg(
        auc=("auc", "mean"), sd=("auc", "std"), std=("std", "median"))
    lines = [f"{'reference':<29} {'rule':<24} {'K':>4}" + "".join(f" {p:>20}" for p in parts)]
    for (reference, rule, k), group in cells.groupby(level=[0, 1, 2], sort=False):
        line = f"{reference:<29} {rule:<24} {k:>4g}"
        for part in parts:
            c = group.xs(part, level="part").iloc[0] if part in group.index.get_level_values("part") else None
            line += f" {c.auc:>6.3f} ± {c.sd:.3f} [{c['std']:>5g}]" if c is not None else f" {'-':>20}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="a finished `logan demo` folder")
    parser.add_argument("--model", default="trained", help="trained | control")
    parser.add_argument("--metric", default="max_k_no_norn_kl_div", help="the curve's metric, scored at the std it picks")
    parser.add_argument("--parts", default="caption,desp,img,inst")
    parser.add_argument("--ks", default="0,0.1,0.5,1.0", help="Max-K ratios (each must be one of the run's)")
    parser.add_argument("--splits", type=int, default=20, help="seeded stratified splits averaged over")
    parser.add_argument("--fraction", type=float, default=0.5, help="the selection half's share")
    args = parser.parse_args(argv)
    tune = args.demo / args.model / "tune"
    parts, ks = args.parts.split(","), [float(k) for k in args.ks.split(",")]
    results = measure(tune, args.metric, parts, ks, args.splits, args.fraction)
    target = read_list(tune / "datasets" / SET_FILES["target"], "target set")
    n = len(split_target(target, args.fraction, 0)[1])
    sys.stdout.write(f"{tune}: {args.metric}; {args.splits} stratified splits (seeds 0-{args.splits - 1}), std "
                     f"chosen on the selection part, AUC on the {n} held-out samples\nheld-out AUC mean ± sd over "
                     "the splits [median std chosen]\n" + table(results, parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
