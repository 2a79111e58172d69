"""The CLI end to end through the installed console script: tune -> select -> classify, and bad input.

The files a run writes are checked against each other and against numbers computed here from the
per-sample scores (AUC, TPR at low FPR, balanced accuracy, curve means, Max-K% of the per-token values)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from logan import validate_results
from logan.cli import main
from logan.metrics import all_metrics

ROW_KEYS = {"metric", "part", "std", "auc", "acc", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr", "n_members", "n_nonmembers"}
PARTS = ["img", "inst", "desp", "inst_desp", "caption"]
LOGAN = sorted(n for n, spec in all_metrics().items() if spec.needs == "noise")  # the per-std divergences
RATIOS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # img_metrics.ratio's default
GRID = [0.0, 2.0, 20.0, 200.0]  # world.overrides' noise.std_sets
MEMBER_WHEN_HIGH = {"aug_kld"}  # VL-MIA's convention; divergences, losses and entropies: low = member
FPR = {"5pct": 0.05, "1pct": 0.01, "0.1pct": 0.001}
# one sample scored in two runs of other batch layouts and sequence lengths (tests/test_engine.py, SAME)
SAME = {"rtol": 1e-5, "atol": 1e-8}


def logan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["logan", *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=600)


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def by_hand(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and TPR at FPR <= t over every threshold (member when score >= threshold)."""
    member = labels.astype(bool)
    thresholds = np.r_[np.inf, np.unique(scores)]
    tpr = np.array([(scores[member] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~member] >= t).mean() for t in thresholds])
    out = {"acc": float(np.max((tpr + 1 - fpr) / 2))}
    out |= {f"tpr_at_{key}_fpr": float(tpr[fpr <= t].max()) for key, t in FPR.items()}
    return out


def assert_rows_match_scores(rows: list[dict], scores: pd.DataFrame, ci_k: float) -> None:
    """Every metrics.json row is what its own per-sample scores give."""
    groups = scores.groupby(["std", "part", "metric", "k"])
    assert len(rows) == groups.ngroups
    for row in rows:
        group = groups.get_group((row["std"], row["part"], row["metric"], row["k"]))
        labels, score = group.label.to_numpy(), group.score.to_numpy()
        where = (row["std"], row["part"], row["metric"], row["k"])
        assert (row["n_members"], row["n_nonmembers"], row["n_dropped"]) == (int(labels.sum()),
                                                                              int((labels == 0).sum()), 0), where
        assert row["auc"] == pytest.approx(roc_auc_score(labels, score), abs=1e-12), where
        for key, value in by_hand(labels, score).items():
            assert row[key] == pytest.approx(value, abs=1e-12), (where, key)
        for key, t in FPR.items():
            assert row[f"tpr_at_{key}_fpr_estimable"] == (row["n_nonmembers"] * t >= 1), where
        if np.isclose(row["k"], ci_k):
            assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"], where
        else:
            assert "auc_ci_low" not in row, where
        sign = "+" if row["metric"] in MEMBER_WHEN_HIGH else "-"
        assert row["orientation"] == f"higher score = member (score = {sign}value)", where


def assert_oriented(scores: pd.DataFrame) -> None:
    """score = -value (members diverge less, have lower loss), except aug-KL: score = +value."""
    high = scores.metric.isin(MEMBER_WHEN_HIGH).to_numpy()
    assert high.any() and (~high).any()
    np.testing.assert_array_equal(scores.score[high], scores.value[high])
    np.testing.assert_array_equal(scores.score[~high], -scores.value[~high])


def table_aucs(stdout: str) -> dict[tuple[str, str], float]:
    """(part, metric) -> AUC of the result table printed on stdout."""
    out = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[0] in PARTS and fields[1] in all_metrics():
            out[(fields[0], fields[1])] = float(fields[3])
    return out


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tune"
    result = logan("tune", *world.overrides(out))
    assert result.returncode == 0, result.stderr
    return out


def per_std_scores(run: Path, std: float) -> pd.DataFrame:
    return pd.read_parquet(run / "per_std" / f"std_{std!r}" / "scores.parquet")


def test_tune_writes_the_target_and_reference_sets(world, tuned: Path) -> None:
    datasets = tuned / "datasets"
    for name in ("member_target_dataset", "non_member_target_dataset", "target_dataset", "reference_dataset"):
        frame = pd.read_parquet(datasets / f"{name}.parquet")
        assert {"sample_id", "label", "path", "origin", "row"} <= set(frame.columns)
    target = pd.read_parquet(datasets / "target_dataset.parquet")
    assert len(target) == 16 and int(target.label.sum()) == 8 and target.sample_id.is_unique
    assert target.sample_id.str.startswith("sha256:").all()
    listed = {e["image"]: 1 for e in json.loads(world.members.read_text())}
    listed |= {e["image"]: 0 for e in json.loads(world.nonmembers.read_text())}
    assert all(listed[path] == label for path, label in zip(target.path, target.label))  # drawn from the lists
    members = pd.read_parquet(datasets / "member_target_dataset.parquet")
    nonmembers = pd.read_parquet(datasets / "non_member_target_dataset.parquet")
    assert list(members.sample_id) == list(target[target.label == 1].sample_id) and set(members.label) == {1}
    assert list(nonmembers.sample_id) == list(target[target.label == 0].sample_id) and set(nonmembers.label) == {0}
    reference = pd.read_parquet(datasets / "reference_dataset.parquet")
    assert set(reference.sample_id) == set(nonmembers.sample_id)  # reference_datasets_list=[]
    assert set(pd.read_parquet(datasets / "full_dataset.parquet").sample_id) == set(target.sample_id)
    provenance = json.loads((tuned / "provenance.json").read_text())
    assert [d["key"] for d in provenance["datasets"]] == ["data.member_dataset", "data.nonmember_dataset"]
    assert provenance["datasets"][0]["used"] == {"members": 8, "nonmembers": 0}
    assert provenance["models"]["target_model.model_path"]["path"] == str(Path(provenance["models"][
        "target_model.model_path"]["value"]).resolve())


def test_tune_per_std_folders_agree_with_each_other(tuned: Path) -> None:
    """One scores row per (sample, part, metric, K), the Max-K% of tokens.parquet's per-token values, as
    many tokens as losses.parquet counts; exact zeros at std 0; one clean pass for every std."""
    target = pd.read_parquet(tuned / "datasets" / "target_dataset.parquet")
    label_of = dict(zip(target.sample_id, target.label))
    descriptions = json.loads((tuned / "descriptions.json").read_text())
    assert set(descriptions) == set(target.sample_id) and all(1 <= len(d["ids"]) <= 6 for d in descriptions.values())
    metrics = json.loads((tuned / "config.json").read_text())["img_metrics"]["metrics_to_use"]
    baselines = [m for m in metrics if m not in LOGAN]
    assert set(metrics) >= set(LOGAN) and baselines
    clean_losses = None
    for std in GRID:
        folder = tuned / "per_std" / f"std_{std!r}"
        assert json.loads((folder / "done.json").read_text())["n_samples"] == 16
        scores = per_std_scores(tuned, std)
        assert len(scores) == 16 * len(PARTS) * len(LOGAN) * len(RATIOS)
        assert not scores.duplicated(["sample_id", "part", "metric", "k"]).any()
        assert set(scores.sample_id) == set(target.sample_id) and set(scores.part) == set(PARTS)
        assert set(scores.metric) == set(LOGAN) and sorted(set(scores.k)) == RATIOS
        assert (scores.label == scores.sample_id.map(label_of)).all()
        if std == 0.0:  # every LOGAN metric on every part
            assert (scores.value == 0).all()
        else:  # 0 only where no token's argmax flips
            assert (scores.value[(scores.k == 1.0) & (scores.metric != "max_k_renyi_inf_kl_div")] > 0).all()
        tokens = pd.read_parquet(folder / "tokens.parquet").set_index(["sample_id", "part", "metric"])
        assert len(tokens) == 16 * len(PARTS) * len(LOGAN)
        values = tokens["values"].map(lambda v: np.asarray(v, dtype=np.float64))
        at = scores.set_index(["sample_id", "part", "metric", "k"]).value
        for k in (0.0, 0.3, 0.5, 1.0):  # Max-K%: the mean of the max(1, floor(K * n)) largest of n values
            expected = values.map(lambda v, k=k: np.sort(v)[::-1][:max(1, int(k * len(v)))].mean())
            got = at.xs(k, level="k").reindex(expected.index)
            np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=0)
        losses = pd.read_parquet(folder / "losses.parquet").set_index(["sample_id", "part"])
        assert len(losses) == 16 * len(PARTS)
        lengths = values.xs("max_k_no_norn_kl_div", level="metric").map(len)
        assert (losses.n_tokens.reindex(lengths.index) == lengths).all()
        assert all(losses.n_tokens[(image, "desp")] == len(d["ids"]) for image, d in descriptions.items())
        if clean_losses is None:  # std 0: the noisy pass is the clean pass
            np.testing.assert_allclose(losses.noisy_loss, losses.clean_loss, rtol=1e-6)
            clean_losses = losses.clean_loss
        else:  # one clean pass serves every std
            pd.testing.assert_series_equal(losses.clean_loss.sort_index(), clean_losses.sort_index())
    fixed = pd.read_parquet(tuned / "per_std" / "baselines" / "scores.parquet")
    assert len(fixed) == 16 * len(PARTS) * len(baselines) * len(RATIOS) and set(fixed.metric) == set(baselines)
    assert not fixed.duplicated(["sample_id", "part", "metric", "k"]).any()


def test_tuning_curves_and_optimal_std_follow_from_the_scores(tuned: Path) -> None:
    target = set(pd.read_parquet(tuned / "datasets" / "target_dataset.parquet").sample_id)
    reference = set(pd.read_parquet(tuned / "datasets" / "reference_dataset.parquet").sample_id)
    metrics = json.loads((tuned / "config.json").read_text())["img_metrics"]["metrics_to_use"]
    optimal = json.loads((tuned / "optimal_std.json").read_text())
    assert (optimal["rule"], optimal["part"], optimal["k"]) == ("max_tune_auc", "img", 1.0)  # the defaults
    assert optimal["selection_metric"] == metrics[0]
    assert list(optimal["curves"]) == [m for m in metrics if m in LOGAN] and set(optimal["per_part"]) == set(PARTS)
    at_k = {std: per_std_scores(tuned, std).query("k == 1.0") for std in GRID}  # K = selection.k
    curves = [(optimal["part"], metric, points) for metric, points in optimal["curves"].items()]
    curves += [(part, optimal["selection_metric"], entry["curve"]) for part, entry in optimal["per_part"].items()]
    for part, metric, points in curves:
        assert [p["std"] for p in points] == GRID
        for point in points:  # each point: the mean per-sample value over the target and the reference set
            scores = at_k[point["std"]]
            chosen = scores[(scores.part == part) & (scores.metric == metric)]
            target_mean = chosen.value[chosen.sample_id.isin(target)].mean()
            reference_mean = chosen.value[chosen.sample_id.isin(reference)].mean()
            assert point["target_mean"] == pytest.approx(target_mean, rel=1e-9, abs=1e-300), (part, metric, point)
            assert point["reference_mean"] == pytest.approx(reference_mean, rel=1e-9, abs=1e-300)
            assert point["gap"] == pytest.approx(point["target_mean"] - point["reference_mean"], rel=1e-9, abs=1e-300)
        assert points[0]["gap"] == 0.0 and points[0]["target_mean"] == 0.0
    candidates = optimal["curves"][optimal["selection_metric"]][1:]  # std > 0
    assert optimal["optimal_std"] == max(candidates, key=lambda p: p["tune_auc"])["std"]  # max_tune_auc
    assert optimal["alternatives"]["min_gap"] == min(candidates, key=lambda p: p["gap"])["std"]
    assert optimal["alternatives"]["max_abs_gap"] == max(candidates, key=lambda p: abs(p["gap"]))["std"]
    for part, entry in optimal["per_part"].items():
        assert entry["optimal_std"] == max(entry["curve"][1:], key=lambda p: p["tune_auc"])["std"], part
    assert is_png(tuned / "tuning_curve.png")
    # results.json: every part's curve of every divergence, the same points as the scores give
    results = validate_results(tuned)
    every = pd.DataFrame(results["curves"])
    assert sorted(set(zip(every.part, every.metric))) == sorted((p, m) for p in PARTS for m in metrics if m in LOGAN)
    for point in every.itertuples():
        scores = at_k[point.std]
        chosen = scores[(scores.part == point.part) & (scores.metric == point.metric)]
        assert point.target_mean == pytest.approx(chosen.value[chosen.sample_id.isin(target)].mean(), rel=1e-9,
                                                  abs=1e-300), point
        assert point.reference_mean == pytest.approx(chosen.value[chosen.sample_id.isin(reference)].mean(),
                                                     rel=1e-9, abs=1e-300), point


def test_select_alone_reproduces_tune(tuned: Path) -> None:
    before = json.loads((tuned / "optimal_std.json").read_text())
    result = logan("select", f"path.output_dir={tuned}", "img_metrics.parts=[img,inst,desp,inst_desp,caption]")
    assert result.returncode == 0, result.stderr
    assert json.loads((tuned / "optimal_std.json").read_text()) == before  # every curve point and choice
    assert result.stdout.startswith(f"optimal std = {before['optimal_std']:g} (max_tune_auc on part img, "
                                    f"{before['selection_metric']}, K = 1)")


def test_classify_at_optimal_std(world, tuned: Path, tmp_path: Path) -> None:
    out = tmp_path / "classify"
    result = logan("classify", "target_model=llava-hf", f"target_model.model_path={world.model}",
                   f"data.dataset={tuned / 'datasets' / 'target_dataset.parquet'}",
                   f"noise.std={tuned / 'optimal_std.json'}", "img_metrics.parts=[img,inst]",
                   f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    optimal = json.loads((tuned / "optimal_std.json").read_text())["optimal_std"]
    target = pd.read_parquet(out / "datasets" / "target_dataset.parquet")
    pd.testing.assert_frame_equal(target, pd.read_parquet(tuned / "datasets" / "target_dataset.parquet"))
    metrics = json.loads((out / "config.json").read_text())["img_metrics"]["metrics_to_use"]
    rows = json.loads((out / "metrics.json").read_text())
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert sorted((r["part"], r["metric"], r["k"]) for r in rows) == sorted(
        (p, m, k) for p in ("img", "inst") for m in metrics for k in RATIOS)  # one row each
    assert {r["std"] for r in rows} == {optimal}
    counts = (int(target.label.sum()), int((target.label == 0).sum()))
    assert counts == (8, 8) and all((r["n_members"], r["n_nonmembers"]) == counts for r in rows)

    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == len(target) * 2 * len(metrics) * len(RATIOS)
    assert not scores.duplicated(["sample_id", "std", "part", "metric", "k"]).any()
    assert (scores.label == scores.sample_id.map(dict(zip(target.sample_id, target.label)))).all()
    assert_oriented(scores)
    assert_rows_match_scores(rows, scores, ci_k=1.0)

    # the same samples at the same std as the tuning run (another batch size and sequence length): its values
    tune_scores = pd.concat([per_std_scores(tuned, optimal),
                             pd.read_parquet(tuned / "per_std" / "baselines" / "scores.parquet")])
    both = scores.merge(tune_scores.drop(columns=["image"], errors="ignore"), on=["sample_id", "part", "metric", "k"],
                        suffixes=("", "_tune"), validate="one_to_one")
    assert len(both) == len(scores)
    divergences = both.metric.isin(LOGAN)
    np.testing.assert_allclose(both.value[divergences], both.value_tune[divergences], **SAME)
    # the clean-pass baselines' differences of log-probabilities (Min-K%++'s variance, the top-2 gap) lose more
    # to rounding: up to 3.5e-4 relative measured
    np.testing.assert_allclose(both.value[~divergences], both.value_tune[~divergences], rtol=2e-3, atol=1e-8)

    printed = table_aucs(result.stdout)  # the table on stdout is metrics.json's at K = selection.k
    assert printed == {(r["part"], r["metric"]): pytest.approx(r["auc"], abs=5.01e-4) for r in rows if r["k"] == 1.0}
    blind = json.loads((out / "blind_baseline.json").read_text())
    assert (blind["n_members"], blind["n_nonmembers"]) == counts and 0.0 <= blind["auc"] <= 1.0
    assert blind["verdict"].startswith("ok" if abs(blind["auc"] - 0.5) < 0.1 else "WARNING")
    assert f"AUC {blind['auc']:.2f}" in blind["verdict"]
    assert (out / "report.html").stat().st_size > 10_000
    assert is_png(out / "roc.png") and is_png(out / "histograms.png")


def test_classify_accepts_a_std_list_and_json_lists(world, tmp_path: Path) -> None:
    out = tmp_path / "classify"
    result = logan("classify", f"target_model.model_path={world.model}", f"data.member_dataset={world.members}",
                   f"data.nonmember_dataset={world.nonmembers}", "data.target_set_size=8", "noise.std=[1.0,10.0]",
                   "img_metrics.parts=[img]", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    target = pd.read_parquet(out / "datasets" / "target_dataset.parquet")
    members = {e["image"] for e in json.loads(world.members.read_text())}
    nonmembers = {e["image"] for e in json.loads(world.nonmembers.read_text())}
    assert set(target[target.label == 1].path) < members and set(target[target.label == 0].path) < nonmembers
    assert (int(target.label.sum()), len(target)) == (4, 8)  # data.n_nm_ratio=0.5
    rows = json.loads((out / "metrics.json").read_text())
    assert {r["std"] for r in rows} == {1.0, 10.0} and {r["part"] for r in rows} == {"img"}
    assert all((r["n_members"], r["n_nonmembers"]) == (4, 4) for r in rows)
    scores = pd.read_parquet(out / "scores.parquet")
    metrics = json.loads((out / "config.json").read_text())["img_metrics"]["metrics_to_use"]
    assert len(scores) == 2 * 8 * len(metrics) * len(RATIOS)
    assert_oriented(scores)
    assert_rows_match_scores(rows, scores, ci_k=1.0)

    values = scores.pivot_table(index=["sample_id", "metric", "k"], columns="std", values="value")
    fixed = ~values.index.get_level_values("metric").isin(LOGAN)
    assert fixed.any()  # the std-independent baselines are the same numbers at every std
    np.testing.assert_array_equal(values[1.0][fixed], values[10.0][fixed])
    by_std = {std: {(r["metric"], r["k"]): {k: v for k, v in r.items() if k != "std"} for r in rows
                    if r["std"] == std and r["metric"] not in LOGAN} for std in (1.0, 10.0)}
    assert by_std[1.0] and by_std[1.0] == by_std[10.0]
    means = scores[scores.k == 1.0].groupby(["metric", "std"]).value.mean().unstack()
    for metric in LOGAN:  # ten times the noise, larger divergences
        assert means.loc[metric, 10.0] > means.loc[metric, 1.0] or (
            metric == "max_k_renyi_inf_kl_div" and means.loc[metric, 10.0] == means.loc[metric, 1.0] == 0), metric
    # report.plots=selected: plots at the std of the best LOGAN row only (every_std would draw both)
    best = max((r for r in rows if r["needs"] == "noise" and r["k"] == 1.0), key=lambda r: r["auc"])["std"]
    assert is_png(out / f"roc_std_{best:g}.png") and is_png(out / f"histograms_std_{best:g}.png")
    assert [p.name for p in out.glob("roc*.png")] == [f"roc_std_{best:g}.png"]


def test_original_job_type_spelling(world, tmp_path: Path) -> None:
    out = tmp_path / "orig"
    result = logan("job_meta_params.job_type=hyperparam_tuning", *world.overrides(out)[:-4],
                   "data.augmentations.GaussianNoise.std=[1.0]", "img_metrics.parts=[img]",
                   "inference.batch_size=4", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run_fingerprint.json").read_text())["command"] == "tune"
    # the original's grid key wins over noise.std_sets (still [[0,2],[20,200]] in these overrides)
    assert sorted(p.name for p in (out / "per_std").iterdir()) == ["baselines", "std_1.0"]
    optimal = json.loads((out / "optimal_std.json").read_text())
    assert optimal["optimal_std"] == 1.0 and optimal["part"] == "img" and set(optimal["per_part"]) == {"img"}
    assert all([p["std"] for p in points] == [1.0] for points in optimal["curves"].values())


@pytest.mark.parametrize("override, message", [
    ("data.member_dataset=/nonexistent/m.json", "not found"),
    ("img_metrics.metrics_to_use=[max_k_no_norm_kl_div]", "Did you mean 'max_k_no_norn_kl_div'"),
    ("img_metrics.get_proc_meta_metrics=[]", "_tkn_vals"),
    ("img_metrics.parts=[imgg]", "Did you mean 'img'"),
    ("target_model=minigpt-4", "target_model.ckpt is not set"),
    ("target_model=llava-hff", "Did you mean 'llava-hf'"),
    ("data.n_nm_ratio=1.5", "n_nm_ratio"),
    ("data.target_set_size=500", "holds 12"),
    ("noise.std_sets=[[-1.0]]", "std"),
    ("data.reference_datasets_list=[a.json,b.json]", "reference_set_sample_distribution"),
    ("nosuchkey=1", "no key 'nosuchkey'"),
    ("inference.metric_kernel=triton", "metric_kernel=triton needs a CUDA GPU"),
])
def test_bad_input_is_one_clear_line(world, tmp_path: Path, capsys, override: str, message: str) -> None:
    out = tmp_path / "bad"
    args = [a for a in world.overrides(out) if a.split("=")[0] != override.split("=")[0]] + [override]
    if override.startswith("target_model="):
        args = [a for a in args if not a.startswith("target_model.model_path")]
    code = main(["tune", *args])  # in-process: the same entry point as the console script
    stderr = capsys.readouterr().err
    assert code == 2
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("logan: error: ") and message in errors[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


def test_help_lists_every_command_and_imports_no_heavy_module() -> None:
    result, short = logan("--help"), logan("-h")
    assert result.returncode == short.returncode == 0 and result.stdout == short.stdout and not result.stderr
    section = result.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    purposes = dict(line.split(None, 1) for line in section)
    assert set(purposes) == {"tune", "select", "classify", "demo", "prepare", "merge", "compare", "list"}
    assert all(len(text.split()) >= 4 for text in purposes.values()), purposes  # each says what it does
    assert "exit codes: 0 done" in result.stdout
    # help is instant: it reads the commands' docstrings without importing torch, transformers or Hydra
    code = ("import sys; from logan.cli import main; main(['--help']); "
            "print(sorted({'torch', 'transformers', 'hydra', 'pandas'} & set(sys.modules)), file=sys.stderr)")
    probe = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stderr.strip() == "[]", probe.stderr
