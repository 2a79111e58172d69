"""A fast variant of `logan demo`: the trained model leaks membership, the untrained control does not."""

from __future__ import annotations

import json
from pathlib import Path

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
