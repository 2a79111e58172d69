"""Per-image verdicts: p-values against the reference set, the decision at an FPR and its support, checked
on hand-made arrays; then `logan classify` end to end on the tiny world, labelled and unlabelled, and
the report it writes (the settings used, the one-line verdict, the best rows marked, the histograms'
layout)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import logan
from logan.cli import main
from logan.errors import LoganError
from logan.models.base import resolve_device, resolve_dtype
from logan.report.plots import histogram_figure
from logan.report.verdicts import calibrate, decide, p_values, support, verdict_table

SMALL = {"std_sets": [[2.0, 20.0]], "batch_size": 4, "target_set_size": 16, "parts": ["img", "inst"],
         "img_metrics.metrics_to_use": ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2", "ppl"],
         "img_metrics.get_proc_meta_metrics": ["max_k_no_norn_kl_div_tkn_vals", "max_k_renyi_divergence_2_tkn_vals",
                                               "ppl_tkn_vals"]}
FPR = 0.2   # 8 reference images (the world's list) resolve no smaller FPR


# --- p-values, decisions, calibration -------------------------------------------------------------------
def test_p_values_count_the_reference_scores_at_or_above() -> None:
    reference = np.array([3.0, 1.0, 4.0, 2.0])
    p = p_values(np.array([0.0, 2.0, 2.5, 4.0, 5.0, np.nan]), reference)
    # at or above: 4, 3 (2 ties), 2, 1 (4 ties), 0 of the 4 reference scores; (1 + count) / (1 + 4)
    np.testing.assert_allclose(p[:5], [5 / 5, 4 / 5, 3 / 5, 2 / 5, 1 / 5])
    assert np.isnan(p[5])


def test_an_image_in_the_reference_is_compared_with_the_others() -> None:
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    p = p_values(np.array([4.0, 1.0, 4.0]), reference, own=np.array([True, True, False]))
    # its own score left out: (1 + 0) / (1 + 3) for the largest, (1 + 3) / (1 + 3) for the smallest
    np.testing.assert_allclose(p, [1 / 4, 4 / 4, 2 / 5])


def test_decisions_at_the_fpr() -> None:
    p = np.array([1 / 100, 3 / 300, 2 / 100, 0.0100001, np.nan])
    assert decide(p, 0.01).tolist() == ["member", "member", "non-member", "non-member", "n/a"]


def test_calibration_of_99_reference_scores_at_1_percent() -> None:
    reference = np.arange(99, dtype=float)
    c = calibrate(reference, 0.01)
    # one image in 100 may lie above every reference score: the threshold is the largest
    assert (c.n_ref, c.threshold, c.expected_fpr) == (99, 98.0, 0.01)
    assert decide(p_values(np.array([98.5, 98.0]), reference), 0.01).tolist() == ["member", "non-member"]
    # each reference image against the other 98: the largest gets p = 1 / 99 > 1 %
    assert (c.realised_fpr, c.n_ref_flagged, c.support) == (0.0, 0, "unsupported")
    assert c.message.startswith("99 reference images cannot support FPR 1 %") and "no image can" not in c.message


def test_too_few_reference_images_are_said_so() -> None:
    level, message = support(1000, 0.0001)
    assert level == "unsupported"
    assert message.startswith("1000 reference images cannot support FPR 0.01 %: ")
    assert "no image can be called member" in message and "at least 10000 reference images" in message
    c = calibrate(np.linspace(0, 1, 1000), 0.0001)
    assert c.threshold == np.inf and c.realised_fpr == 0.0 and c.expected_fpr == 0.0
    assert support(200, 0.01)[0] == "imprecise" and "relative standard error near 71 %" in support(200, 0.01)[1]
    assert support(1000, 0.01) == ("ok", "")


@pytest.mark.parametrize("n, fpr", [(200, 0.01), (1000, 0.01), (57, 0.1), (8, 0.2)])
def test_the_realised_fpr_is_the_rule_on_the_reference(n: int, fpr: float) -> None:
    reference = np.random.default_rng(n).normal(size=n)
    c = calibrate(reference, fpr)
    # by hand: reference image i is called member when (#{j != i: r_j >= r_i} + 1) / n <= fpr
    flagged = sum((np.sum(np.delete(reference, i) >= r) + 1) / n <= fpr + 1e-12 for i, r in enumerate(reference))
    assert c.n_ref_flagged == flagged and c.realised_fpr == flagged / n <= fpr
    assert c.expected_fpr <= fpr


def test_the_threshold_is_the_p_value_rule() -> None:
    rng = np.random.default_rng(1)
    for fpr, n in [(0.01, 300), (0.05, 40), (0.1, 9), (0.3, 5)]:
        reference = np.round(rng.normal(size=n), 1)   # ties on purpose
        scores = np.round(rng.normal(size=500) + 1, 1)
        c = calibrate(reference, fpr)
        called = decide(p_values(scores, reference), fpr) == "member"
        np.testing.assert_array_equal(called, scores > c.threshold)


def test_tied_reference_scores() -> None:
    c = calibrate(np.full(4, 5.0), 0.5)
    assert c.threshold == 5.0 and c.realised_fpr == 0.0   # each tie has all four at or above it
    assert decide(p_values(np.array([5.0, 5.1]), np.full(4, 5.0)), 0.5).tolist() == ["non-member", "member"]


def test_verdict_table_per_std_with_labels_where_known() -> None:
    target = pd.DataFrame({"sample_id": ["a", "b", "c", "d", "r1"] * 2, "image": list("abcdr") * 2,
                           "label": [1, 1, 0, -1, 0] * 2, "part": "img", "metric": "m", "k": 1.0,
                           "std": [1.0] * 5 + [2.0] * 5,
                           "score": [9.0, 0.5, 9.5, np.nan, 3.0, 1.0, 2.0, 3.0, 4.0, 0.0]})
    reference = pd.DataFrame({"sample_id": ["r1", "r2", "r3", "r4"] * 2, "std": [1.0] * 4 + [2.0] * 4,
                              "score": [3.0, 2.0, 1.0, np.nan, 0.0, 0.0, 0.0, 0.0]})
    table, per_std = verdict_table(target, reference, 0.25)
    assert len(table) == 10 and list(table.sample_id) == list(target.sample_id)
    first = table[table["std"] == 1.0]
    # std 1: three finite reference scores (3, 2, 1); r1 is one of them and is compared with (2, 1)
    np.testing.assert_allclose(first.p_value.to_numpy(), [1 / 4, 4 / 4, 1 / 4, np.nan, 1 / 3])
    assert first.verdict.tolist() == ["member", "non-member", "member", "n/a", "non-member"]
    assert first.label.isna().tolist() == [False, False, False, True, False]
    assert first.in_reference.tolist() == [False, False, False, False, True]
    one, two = per_std
    assert (one["n_ref"], one["n_ref_dropped"], one["n_flagged"], one["n_undetermined"]) == (3, 1, 2, 1)
    assert one["labelled"] == {"n_members": 2, "n_nonmembers": 2, "members_flagged": 1, "nonmembers_flagged": 1,
                               "tpr": 0.5, "fpr": 0.5}
    # std 2: four reference scores of 0; r1 (0) left out is tied with the other three
    np.testing.assert_allclose(table[table["std"] == 2.0].p_value.to_numpy(), [1 / 5] * 4 + [3 / 3])
    assert two["n_flagged"] == 4 and two["threshold"] == 0.0


# --- the histograms' layout ------------------------------------------------------------------------------
def test_histogram_titles_clear_the_axis_labels_above_them() -> None:
    rng = np.random.default_rng(0)
    curves = {f"part{i}: max_k_renyi_divergence_025 (AUC 0.6{i})": (np.r_[np.ones(30), np.zeros(30)],
                                                                    rng.normal(size=60)) for i in range(5)}
    fig = histogram_figure(curves)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    axes = [ax for ax in fig.axes if ax.axison]
    titles = [a.title.get_window_extent(renderer) for a in axes]
    x_axes = [a.xaxis.get_tightbbox(renderer) for a in axes]   # tick labels and the axis label
    assert len(axes) == 5
    for i in (3, 4):   # second row: the panel above is i - 3
        assert not titles[i].overlaps(x_axes[i - 3]), i


# --- classify end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verdicts") / "tune"
    logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers,
               reference=[str(world.reference)], output_dir=out, **SMALL)
    return out


@pytest.fixture(scope="module")
def labelled(tuned, tmp_path_factory):
    out = tmp_path_factory.mktemp("verdicts") / "classify"
    result = logan.classify(std=str(tuned / "optimal_std.json"), output_dir=out, **{"verdict.fpr": FPR})
    return result


def by_hand(score: float, reference: np.ndarray) -> float:
    return (1 + sum(r >= score for r in reference)) / (1 + len(reference))


def test_classify_scores_the_reference_and_gives_every_target_image_a_verdict(labelled, tuned) -> None:
    out = labelled.output_dir
    optimal = json.loads((tuned / "optimal_std.json").read_text())
    reference = pd.read_parquet(out / "datasets" / "reference_dataset.parquet")
    pd.testing.assert_frame_equal(reference, pd.read_parquet(tuned / "datasets" / "reference_dataset.parquet"))
    target = pd.read_parquet(out / "datasets" / "target_dataset.parquet")
    verdicts = labelled.verdicts
    assert sorted(verdicts.sample_id) == sorted(target.sample_id)   # one row per target image
    assert set(verdicts.part) == {optimal["part"]} and set(verdicts.metric) == {optimal["selection_metric"]}
    assert set(verdicts["std"]) == {optimal["optimal_std"]} and set(verdicts.k) == {1.0}
    assert (verdicts.label.astype(int) == verdicts.sample_id.map(dict(zip(target.sample_id, target.label)))).all()
    # the reference set's scores come from the same run, at the same std: p-values recounted from them
    per_std = pd.read_parquet(out / "per_std" / f"std_{optimal['optimal_std']!r}" / "scores.parquet")
    chosen = per_std[(per_std.part == optimal["part"]) & (per_std.metric == optimal["selection_metric"])
                     & (per_std.k == 1.0)]
    ref_scores = -chosen[chosen.sample_id.isin(reference.sample_id)].value.to_numpy()   # a divergence: score = -value
    assert len(ref_scores) == len(reference) == 8
    mine = verdicts.set_index("sample_id")
    for row in chosen[chosen.sample_id.isin(target.sample_id)].itertuples():
        assert mine.score[row.sample_id] == pytest.approx(-row.value, rel=1e-9)
        assert mine.p_value[row.sample_id] == pytest.approx(by_hand(-row.value, ref_scores), abs=1e-12)
    assert (verdicts.verdict == np.where(verdicts.p_value <= FPR, "member", "non-member")).all()
    summary = json.loads((out / "verdicts.json").read_text())
    (entry,) = summary["per_std"]
    assert (summary["fpr"], entry["n_ref"], entry["n_target"]) == (FPR, 8, 16)
    assert entry["n_flagged"] == int((verdicts.verdict == "member").sum())
    assert entry["support"] == "imprecise" and "8 reference images support FPR 20 % only roughly" in entry["message"]
    members = verdicts[verdicts.label == 1]
    assert entry["labelled"]["tpr"] == pytest.approx((members.verdict == "member").mean())


def test_classify_prints_the_verdicts_and_checks_them_against_the_labels(labelled) -> None:
    text = labelled.summary()
    entry = json.loads((labelled.output_dir / "verdicts.json").read_text())["per_std"][0]
    check = entry["labelled"]
    assert re.search(rf"verdicts \(img, \w+, K = 1, std [\d.]+\): {entry['n_flagged']} of 16 images called member at "
                     rf"FPR 20 % \(realised FPR [\d.]+ % on 8 reference images\); against the labels: TPR "
                     rf"{check['tpr']:.3f} \({check['members_flagged']} of 8 members\), FPR {check['fpr']:.3f}", text)
    assert "note: 8 reference images support FPR 20 % only roughly" in text


def settings_of(report: str) -> dict[str, str]:
    table = re.search(r"<table class='settings'>(.*?)</table>", report, re.DOTALL).group(1)
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table)}


def test_the_report_shows_what_the_run_used_and_marks_the_best_rows(labelled, tuned) -> None:
    report = labelled.report.read_text()
    settings = settings_of(report)
    plan = json.loads((labelled.output_dir / "std_plan.json").read_text())
    assert settings["target set"].startswith("16 images: 8 members, 8 non-members; from ")   # not 300
    assert settings["reference set"].startswith("8 known non-members; from ")
    assert settings["noise std"] == f"{plan['stds'][0]:g} (from {tuned / 'optimal_std.json'}, selection.split=none)"
    assert settings["parts"] == "img, inst"    # the tuning run's, inherited
    metrics = json.loads((labelled.output_dir / "config.json").read_text())["img_metrics"]["metrics_to_use"]
    assert settings["metrics"] == f"{len(metrics)}: {', '.join(metrics)}"
    assert set(labelled.metrics.metric) == set(metrics)
    device = resolve_device("auto")
    assert settings["model"].endswith(f"{str(resolve_dtype('auto', device)).removeprefix('torch.')} on {device}")
    assert "K" in settings and "std_sets" not in report
    # the one-line verdict: the best LOGAN row and the baseline's AUC, and the verdict count
    rows = labelled.metrics[(labelled.metrics.needs == "noise") & (labelled.metrics.k == 1.0)]
    best = rows.loc[rows.auc.idxmax()]
    line = re.search(r"<p class='verdict'>(.*?)</p>", report).group(1)
    assert f"<b>{best.metric}</b> on {best.part}" in line and f"AUC <b>{best.auc:.3f}</b>" in line
    assert f"[95 % CI {best.auc_ci_low:.2f}&ndash;{best.auc_ci_high:.2f}]" in line
    assert f"vs {labelled.blind['auc']:.3f}" in line and "model-free baseline" in line
    flagged = int((labelled.verdicts.verdict == "member").sum())
    assert f"<b>{flagged} of 16</b> images called member at FPR 20 %" in line
    # each part's best LOGAN row is marked, and only those
    marked = re.findall(r"<tr class='best'><td>(\w+)</td><td>&#9733; (\w+)</td>", report)
    per_part = {part: group.loc[group.auc.idxmax(), "metric"] for part, group in rows.groupby("part")}
    assert dict(marked) == per_part and len(marked) == 2
    assert "K is the Max-K% ratio" in report and "<h2>Per-image verdicts</h2>" in report


def test_unlabelled_images_get_verdicts_and_no_auc_table(tuned, labelled, tmp_path, capsys) -> None:
    target = pd.read_parquet(tuned / "datasets" / "target_dataset.parquet")
    images = [*target.path[target.label == 1][:3], *target.path[target.label == 0][:2]]
    listed = tmp_path / "unknown.json"
    listed.write_text(json.dumps([{"image": images[0]}, {"image": images[1], "label": None},
                                  {"image": images[2], "label": -1}] + [{"image": i} for i in images[3:]]))
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, image in enumerate(images):
        shutil.copy(image, folder / f"{i}_{Path(image).name}")
    for source in (listed, folder):
        out = tmp_path / f"classify_{source.stem}"
        assert main(["classify", f"noise.std={tuned / 'optimal_std.json'}", f"data.dataset={source}",
                     f"verdict.fpr={FPR}", f"path.output_dir={out}"]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("no AUC table: the target set holds no labelled")
        assert "verdicts (img, " in printed and "of 5 images called member at FPR 20 %" in printed
        result = logan.load_run(out)
        assert json.loads((out / "metrics.json").read_text()) == [] and result.metrics.empty
        doc = logan.validate_results(out)   # an empty AUC table still has every column
        assert doc["metrics"]["auc"] == [] and doc["verdicts"]["per_std"][0]["n_target"] == 5
        verdicts = result.verdicts
        assert len(verdicts) == 5 and verdicts.label.isna().all()
        assert verdicts.verdict.isin(["member", "non-member"]).all()
        # the same images at the same std against the same reference set as the labelled run: its p-values
        before = labelled.verdicts.set_index("sample_id").p_value
        np.testing.assert_allclose(verdicts.p_value, before[verdicts.sample_id].to_numpy())
        report = (out / "report.html").read_text()
        assert "No AUC: the target set holds no labelled" in report
        assert settings_of(report)["target set"].startswith("5 images: 0 members, 0 non-members, 5 unlabelled")


def test_an_unlabelled_target_needs_a_reference_set(world, tmp_path) -> None:
    listed = tmp_path / "unknown.json"
    listed.write_text(json.dumps([{"image": e["image"]} for e in json.loads(world.members.read_text())[:3]]))
    with pytest.raises(LoganError, match="no known non-members to compare its images with: give a reference set"):
        logan.classify(model_path=world.model, dataset=str(listed), std=2.0, output_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_classify_folder_of_an_earlier_logan_is_refused(labelled, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(labelled.output_dir, old)
    fingerprint = json.loads((old / "run_fingerprint.json").read_text())
    del fingerprint["fingerprint"]["reference_scored"]   # as written before the reference set was scored
    (old / "run_fingerprint.json").write_text(json.dumps(fingerprint))
    (old / "verdicts.csv").unlink()
    config = json.loads((old / "config.json").read_text())
    with pytest.raises(LoganError, match="classify run of an earlier LOGAN, which scored the target set only.*new "
                                         "path.output_dir"):
        logan.classify(std=config["noise"]["std"], output_dir=old, **{"verdict.fpr": FPR})
    with pytest.raises(LoganError, match="has no verdicts.csv"):
        _ = logan.load_run(old).verdicts
    assert logan.load_run(old).metrics.equals(labelled.metrics)   # the rest still reads


def test_verdict_keys_must_name_what_the_run_scores(tuned, tmp_path) -> None:
    with pytest.raises(LoganError, match="verdict.part=caption is not in img_metrics.parts"):
        logan.classify(std=str(tuned / "optimal_std.json"), output_dir=tmp_path / "c", **{"verdict.part": "caption"})
    with pytest.raises(LoganError, match=r"verdict.fpr=0(\.0)? must lie strictly between 0 and 1"):
        logan.classify(std=str(tuned / "optimal_std.json"), output_dir=tmp_path / "c", **{"verdict.fpr": 0})


def test_every_image_gets_its_verdict_under_holdout_and_crossfit() -> None:
    """AUCs leave out the samples the std was chosen on; the per-image verdicts do not (an image someone asks
    about always gets an answer), and under crossfit an image outside both folds keeps each std."""
    from logan.pipeline.common import StdPlan

    rows = pd.DataFrame(
        {
            "sample_id": ["a", "a", "b", "b", "c", "c"],
            "part": ["img"] * 6,
            "std": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
        }
    )
    holdout = StdPlan([1.0, 2.0], None, split="holdout", chosen_on=frozenset({"a"}))
    assert holdout.mask(rows).tolist() == [False, False, True, True, True, True]
    assert holdout.mask(rows, every_sample=True).all()
    crossfit = StdPlan(
        [1.0, 2.0],
        None,
        split="crossfit",
        folds=((frozenset({"a"}), {"img": 2.0}), (frozenset({"b"}), {"img": 1.0})),
    )
    assert crossfit.mask(rows).tolist() == [False, True, True, False, False, False]
    assert crossfit.mask(rows, every_sample=True).tolist() == [False, True, True, False, True, True]
