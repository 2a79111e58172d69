"""Choosing the std on other samples than those scored: the split, holdout and crossfit classify, and the
label-informed flags of optimal_std.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import logan
from logan.api import configure
from logan.cli_help import describe_keys
from logan.errors import LoganError
from logan.pipeline.select import RULES, split_target
from logan.report.scoring import fold_mean_summary, roc_summary
from logan.results import load_scores

FAST = {"std_sets": [[0.0, 2.0, 20.0]], "batch_size": 4, "target_set_size": 16, "parts": ["img", "inst"]}


def frame(n_members: int, n_nonmembers: int) -> pd.DataFrame:
    images = [f"/data/m{i}.png" for i in range(n_members)] + [f"/data/n{i}.png" for i in range(n_nonmembers)]
    return pd.DataFrame({"sample_id": images, "label": [1] * n_members + [0] * n_nonmembers})


def test_the_split_is_seeded_stratified_and_independent_of_list_order() -> None:
    target = frame(11, 9)
    folds = split_target(target, 0.5, seed=3)
    labels = dict(zip(target.sample_id, target.label))
    assert sorted(folds[0] + folds[1]) == sorted(target.sample_id) and not set(folds[0]) & set(folds[1])
    assert [sum(labels[i] for i in f) for f in folds] == [6, 5]          # round(0.5 * 11) members in fold 0
    assert [sum(1 - labels[i] for i in f) for f in folds] == [4, 5]      # round(0.5 * 9) non-members
    shuffled = target.sample(frac=1.0, random_state=7)
    assert split_target(shuffled, 0.5, seed=3) == folds
    assert split_target(target, 0.5, seed=4) != folds
    small = split_target(target, 0.25, seed=3)
    assert [sum(labels[i] for i in f) for f in small] == [3, 8]
    with pytest.raises(LoganError, match="at least 2 non-members"):
        split_target(frame(4, 1), 0.5, seed=0)


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory) -> Path:
    """A tuning run whose reference set is the target's non-members (the seed's first mode)."""
    out = tmp_path_factory.mktemp("split") / "tune"
    logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers, reference=[],
               output_dir=out, **FAST)
    return out


def img_values(out: Path, std: float) -> pd.DataFrame:
    scores = load_scores(out, [std], k=1.0)
    return scores[(scores.part == "img") & (scores.metric == "max_k_no_norn_kl_div")].set_index("sample_id").value


def test_holdout_chooses_on_the_selection_part_and_classify_reports_the_rest(world, tuned: Path,
                                                                             tmp_path: Path) -> None:
    selected = logan.select(output_dir=tuned, **{"selection.split": "holdout"})
    split = selected.split
    target = pd.read_parquet(tuned / "datasets" / "target_dataset.parquet")
    assert split["mode"] == "holdout" and split["seed"] == 0 and split["fraction"] == 0.5
    assert split["selection"] == split_target(target, 0.5, 0)[0]
    assert sorted(split["selection"] + split["evaluation"]) == sorted(target.sample_id)
    # the curve: target = the selection part, reference = the selection part's non-members
    part_nonmembers = set(target[target.label == 0].sample_id) & set(split["selection"])
    assert selected.selection["n_target"] == 8 and selected.selection["n_reference"] == len(part_nonmembers) == 4
    values = img_values(tuned, 20.0)
    point = next(p for p in selected.selection["curves"]["max_k_no_norn_kl_div"] if p["std"] == 20.0)
    assert point["target_mean"] == pytest.approx(values[split["selection"]].mean())
    assert point["reference_mean"] == pytest.approx(values[sorted(part_nonmembers)].mean())
    flags = selected.label_informed
    assert flags["selection"] and flags["auc_on_other_samples"] and "selection part only" in flags["note"]

    result = logan.classify(std=str(tuned / "optimal_std.json"), per_part=True, output_dir=tmp_path / "classify")
    evaluation = target[target.sample_id.isin(split["evaluation"])]
    assert set(result.scores.sample_id) == set(evaluation.sample_id) == set(result.evaluated)
    members, nonmembers = int(evaluation.label.sum()), int((evaluation.label == 0).sum())
    assert (result.metrics.n_members == members).all() and (result.metrics.n_nonmembers == nonmembers).all()
    assert members + nonmembers == 8 and result.split == "holdout"
    row = result.metrics[(result.metrics.part == "img") & (result.metrics.metric == "max_k_no_norn_kl_div")
                         & (result.metrics.k == 1.0)].iloc[0]
    own = result.scores[(result.scores.part == "img") & (result.scores.metric == "max_k_no_norn_kl_div")
                        & (result.scores.k == 1.0)]
    assert len(own) == 8 and row.auc == pytest.approx(roc_auc_score(own.label, own.score))
    assert "held-out" in result.table()
    assert "How the std was chosen" in result.report.read_text()


def test_crossfit_scores_each_sample_at_the_std_chosen_on_the_other_fold(tuned: Path, tmp_path: Path) -> None:
    selected = logan.select(output_dir=tuned, **{"selection.split": "crossfit"})
    split = selected.split
    assert [len(f) for f in split["folds"]] == [8, 8] and len(split["fold_choices"]) == 2
    assert selected.selection["n_target"] == 16  # the top-level choice: on all samples, for reference
    # classify must read the folds' choices: make them differ so the assignment shows
    path = tuned / "optimal_std.json"
    saved = json.loads(path.read_text())
    saved["split"]["fold_choices"][0]["optimal_std"], saved["split"]["fold_choices"][1]["optimal_std"] = 2.0, 20.0
    (tmp_path / "crossfit.json").write_text(json.dumps(saved))
    (tmp_path / "config.json").write_text((tuned / "config.json").read_text())
    result = logan.classify(std=str(tmp_path / "crossfit.json"), dataset=str(tuned / "datasets" / "target_dataset.parquet"),
                            output_dir=tmp_path / "classify")
    scores = result.scores
    fold_of = {image: i for i, fold in enumerate(split["folds"]) for image in fold}
    assert len(scores) and set(scores.sample_id) == set(fold_of)
    expected = np.where(scores.sample_id.map(fold_of) == 0, 20.0, 2.0)  # fold 0 at fold 1's choice and back
    assert (scores["std"].to_numpy() == expected).all() and (scores.fold == scores.sample_id.map(fold_of)).all()
    rows = result.metrics[(result.metrics.metric == "max_k_no_norn_kl_div") & (result.metrics.k == 1.0)]
    assert len(rows) == 2  # one row per part, not one per std
    row = rows[rows.part == "img"].iloc[0]
    assert row.fold_std == [20.0, 2.0] and np.isnan(row["std"]) and row.n_members + row.n_nonmembers == 16
    per_fold = [roc_auc_score(g.label, g.score) for _, g in scores[(scores.part == "img") & (scores.k == 1.0) & (
        scores.metric == "max_k_no_norn_kl_div")].groupby("fold")]
    assert row.auc == pytest.approx(np.mean(per_fold)) and row.fold_auc == pytest.approx(per_fold)
    assert "20|2" in result.table()


def test_label_informed_flags_follow_the_reference_mode(world, tuned: Path, tmp_path: Path) -> None:
    same = logan.select(output_dir=tuned).selection  # the reference = the target's non-members, no split
    flags = same["label_informed"]
    assert same["reference_is_target_nonmembers"] and same["split"] is None
    assert flags["selection"] and flags["per_part"] and flags["alternatives"] == dict.fromkeys(RULES, True)
    assert not flags["auc_on_other_samples"] and "optimistic" in flags["note"]
    separate = logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers,
                          reference=[str(world.reference)], output_dir=tmp_path / "tune",
                          **{**FAST, "parts": ["img"], "std_sets": [[2.0, 20.0]]}).selection
    flags = separate["label_informed"]
    assert not separate["reference_is_target_nonmembers"]
    assert not flags["selection"] and not flags["per_part"] and flags["alternatives"] == dict.fromkeys(RULES, False)
    assert "no rule used membership labels" in flags["note"]


def test_classify_refuses_a_target_set_inside_the_selection_part(world, tuned: Path, tmp_path: Path) -> None:
    selected = logan.select(output_dir=tuned, **{"selection.split": "holdout"})
    from logan.data.saved import read_set, write_set

    target = read_set(tuned / "datasets" / "target_dataset.parquet")
    inside = target[target.sample_id.isin(selected.split["selection"])].reset_index(drop=True)
    write_set(tmp_path / "inside.parquet", inside, "target", [])  # a LOGAN set: reloaded as is
    with pytest.raises(LoganError, match="leaves no members and non-members"):
        logan.classify(std=str(tuned / "optimal_std.json"), dataset=str(tmp_path / "inside.parquet"),
                       output_dir=tmp_path / "classify")
    assert not (tmp_path / "classify").exists()


def test_the_demo_holds_out_by_default_unless_told(tmp_path: Path) -> None:
    assert configure("demo").selection.split == "holdout"
    assert configure("demo", ["selection.split=none"]).selection.split == "none"
    assert configure("tune").selection.split == "none"
    assert any(line.strip().startswith("selection.split=holdout") for line in describe_keys("demo", []))
    with pytest.raises(LoganError, match="selection.fraction=1.0 must lie strictly between 0 and 1"):
        configure("select", ["selection.fraction=1.0"])


def test_cross_fitted_values_are_fold_means_with_summed_counts() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30), np.zeros(30)]
    folds = [(labels, rng.normal(size=60) + shift * labels) for shift in (0.5, 2.0)]  # a weak and a strong fold
    out = fold_mean_summary(folds, bootstrap_seed=0)
    each = [roc_summary(*fold) for fold in folds]
    assert out["auc"] == pytest.approx(np.mean([e["auc"] for e in each])) and out["fold_auc"] == [e["auc"] for e in each]
    assert out["tpr_at_5pct_fpr"] == pytest.approx(np.mean([e["tpr_at_5pct_fpr"] for e in each]))
    assert (out["n_members"], out["n_nonmembers"]) == (60, 60)
    assert out["fp_at_5pct_fpr"] == sum(e["fp_at_5pct_fpr"] for e in each)
    assert out["tpr_at_5pct_fpr_estimable"] and not out["tpr_at_1pct_fpr_estimable"]  # 30 non-members per fold
    assert out["auc_ci_low"] < out["auc"] < out["auc_ci_high"]
