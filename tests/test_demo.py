"""A fast variant of `logan demo`: the trained model leaks membership, the untrained control does not."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from logan import validate_results
from logan.api import run


def best_auc(rows: list[dict], part: str) -> float:
    return max(r["auc"] for r in rows if r["part"] == part and r["metric"].startswith("max_k_") and r["k"] == 1.0)


def test_fast_demo_separates_trained_from_control(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run("demo", [f"path.output_dir={out}", "demo.n_members=60", "demo.n_nonmembers=60", "demo.epochs=150",
                 "demo.std_sets=[[2.0,8.0,32.0]]", "img_metrics.parts=[img,desp]", "generation.num_gen_tokens=24"])
    summary = json.loads((out / "demo_summary.json").read_text())
    trained = json.loads((out / "trained" / "classify" / "metrics.json").read_text())
    control = json.loads((out / "control" / "classify" / "metrics.json").read_text())
    # the membership truth is real: members are exactly the training images
    members = {e["image"] for e in json.loads((out / "data" / "members.json").read_text())}
    assert len(members) == 60
    # LOGAN on the caption tokens separates members of the trained model, not of the untrained copy
    assert best_auc(trained, "caption") > 0.65
    assert best_auc(trained, "caption") > best_auc(control, "caption") + 0.1
    # the loss baseline beside it (clean NLL of the caption) sees the memorisation too
    loss = [r for r in trained if r["metric"] == "ppl" and r["part"] == "caption" and r["k"] == 1.0]
    assert loss and loss[0]["auc"] > 0.9
    # the members and non-members come from one distribution: a model-free classifier cannot tell them apart
    blind = json.loads((out / "trained" / "classify" / "blind_baseline.json").read_text())
    assert 0.3 < blind["auc"] < 0.7 and blind["shifted"] is False
    # the summary shows no TPR that classify marks not estimable (60 non-members cannot resolve 1 % FPR)
    for best in summary["best"].values():
        assert best["tpr_at_1pct_fpr"] is None and best["tpr_at_1pct_fpr_estimable"] is False
        assert best["tpr_at_5pct_fpr"] is not None
    assert set(summary["optimal_std"]) == {"trained", "control"}
    assert (out / "demo_table.txt").read_text().count("\n") > 10
    # results.json: the table's rows, the generated data, links to each run's own results.json (all valid)
    results = validate_results(out)
    assert results["command"] == "demo" and results["table"] == (out / "demo_table.txt").read_text().splitlines()
    assert results["provenance"]["data"]["members"]["entries"] == 60
    for name, rows in (("trained", trained), ("control", control)):
        for link in results["runs"][name].values():
            assert validate_results(out / link)["command"] in ("tune", "classify")
        table = [r for r in zip(results["comparison"]["model"], results["comparison"]["part"],
                                results["comparison"]["metric"], results["comparison"]["auc"]) if r[0] == name]
        assert table == [(name, r["part"], r["metric"], r["auc"]) for r in rows if r["k"] == 1.0]


# ------------------------------------------------- the README's demo block is what a fresh default run prints

ROOT = Path(__file__).resolve().parents[1]
# a fresh run may differ from the one the README was generated from by other CPUs' float rounding:
AUC_TOLERANCE, TPR_TOLERANCE, STD_STEPS = 0.03, 0.05, 1  # std: equal or one step apart on the std grid
NOT_NUMBERS = {"generated_by", "date", "versions", "machine", "seconds", "table_text"}  # of this machine, this day


def readme_demo():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import readme_demo

    return readme_demo


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `logan demo` with the default settings, as the README's block was made (minutes on 2 cores)."""
    out = tmp_path_factory.mktemp("default_demo") / "demo"
    run("demo", [f"path.output_dir={out}"])
    return out


def parse_table(text: str) -> tuple[dict[tuple[str, str, int], tuple[str, ...]], float]:
    """(part, metric, model column) -> (std, AUC, TPR@5%, TPR@1%) of a demo table, and the baseline's AUC."""
    rows, blind = {}, float("nan")
    for line in text.splitlines()[2:]:
        if line.startswith("model-free"):
            blind = float(re.search(r"AUC ([\d.]+)", line).group(1))
        elif line.strip():
            part, metric, *cells = line.split()
            for i in range(0, len(cells), 4):
                rows[(part, metric, i // 4)] = tuple(cells[i:i + 4])
    return rows, blind


def grid_steps(a: float, b: float, grid: list[float]) -> int:
    """How many steps of the std grid lie between two std values (as printed, so to the nearest grid value)."""
    def at(x: float) -> int:
        return min(range(len(grid)), key=lambda i: abs(np.log(grid[i] / x)) if x > 0 and grid[i] > 0 else abs(grid[i] - x))

    return abs(at(a) - at(b))


def number_differences(want: object, got: object, grid: list[float], path: tuple[str, ...] = ()) -> list[str]:
    """Where `got` differs from `want` beyond the stated tolerances (std values by grid steps)."""
    if isinstance(want, dict):
        return [d for key in want if key not in NOT_NUMBERS
                for d in number_differences(want[key], (got or {}).get(key), grid, (*path, key))]
    if isinstance(want, float) and not isinstance(want, bool):
        if got is None:
            return [f"{'.'.join(path)}: {want} vs missing"]
        if any("std" in key for key in path):
            far = grid_steps(want, got, grid) > STD_STEPS
        else:
            far = abs(want - got) > (TPR_TOLERANCE if any("tpr" in key for key in path) else AUC_TOLERANCE)
        return [f"{'.'.join(path)}: {want} vs {got}"] if far else []
    return [] if want == got else [f"{'.'.join(path)}: {want!r} vs {got!r}"]


@pytest.mark.slow
def test_readme_demo_block_is_a_fresh_default_run(default_demo: Path) -> None:
    script = readme_demo()
    readme = (ROOT / "README.md").read_text()
    recorded = json.loads((ROOT / "benchmarks" / "readme_demo.json").read_text())
    # the README's block is exactly what the script renders from the recorded numbers (sentences included)
    assert script.rewrite(readme, script.render_block(recorded)) == readme
    fresh = script.demo_numbers(default_demo)
    grid = recorded["settings"]["std_grid"]
    assert number_differences(recorded, fresh, grid) == []
    # and its table is the fresh run's table, row by row, within the tolerances
    block = readme[readme.index(script.BEGIN):readme.index(script.END)]
    shown, shown_blind = parse_table(block.split("```")[1].strip("\n"))
    printed, printed_blind = parse_table((default_demo / "demo_table.txt").read_text())
    assert len(shown) == 2 * len(script.EXCERPT) * len(fresh["table"]["trained"])
    for key, (std, auc, tpr5, tpr1) in shown.items():
        p_std, p_auc, p_tpr5, p_tpr1 = printed[key]
        assert grid_steps(float(std), float(p_std), grid) <= STD_STEPS, key
        assert abs(float(auc) - float(p_auc)) <= AUC_TOLERANCE, key
        for mine, theirs in ((tpr5, p_tpr5), (tpr1, p_tpr1)):
            assert (mine == "n/e") == (theirs == "n/e"), key
            assert mine == "n/e" or abs(float(mine) - float(theirs)) <= TPR_TOLERANCE, key
    assert abs(shown_blind - printed_blind) <= AUC_TOLERANCE
    # every file the README's demo section names is written
    section = readme[readme.index("## What `logan demo` shows"):readme.index("## Running LOGAN on your model")]
    for name in re.findall(r"`OUT/([^`]+\.(?:png|txt|json|html))`", section):
        assert (default_demo / name).is_file(), name
