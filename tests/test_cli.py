"""The CLI end to end through the installed console script: tune -> select -> classify, and bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from logan.cli import main

ROW_KEYS = {"metric", "part", "std", "auc", "acc", "tpr_at_5pct_fpr", "tpr_at_1pct_fpr", "n_members", "n_nonmembers"}


def logan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["logan", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "tune"
    result = logan("tune", *world.overrides(out))
    assert result.returncode == 0, result.stderr
    return out


def test_tune_writes_the_contract(tuned: Path) -> None:
    datasets = tuned / "datasets"
    for name in ("member_target_dataset", "non_member_target_dataset", "target_dataset", "reference_dataset"):
        frame = pd.read_parquet(datasets / f"{name}.parquet")
        assert {"sample_id", "label", "path", "origin", "row"} <= set(frame.columns)
    target = pd.read_parquet(datasets / "target_dataset.parquet")
    assert len(target) == 16 and int(target.label.sum()) == 8 and target.sample_id.str.startswith("sha256:").all()
    reference = pd.read_parquet(datasets / "reference_dataset.parquet")
    assert set(reference.sample_id) == set(target[target.label == 0].sample_id)  # reference_datasets_list=[]
    provenance = json.loads((tuned / "provenance.json").read_text())
    assert [d["key"] for d in provenance["datasets"]] == ["data.member_dataset", "data.nonmember_dataset"]
    assert provenance["datasets"][0]["used"] == {"members": 8, "nonmembers": 0}
    assert provenance["models"]["target_model.model_path"]["path"] == str(Path(provenance["models"][
        "target_model.model_path"]["value"]).resolve())
    optimal = json.loads((tuned / "optimal_std.json").read_text())
    assert {"optimal_std", "selection_metric", "rule", "curves"} <= set(optimal)
    assert optimal["optimal_std"] in (2.0, 20.0, 200.0)
    for points in optimal["curves"].values():
        assert [p["std"] for p in points] == [0.0, 2.0, 20.0, 200.0]
        assert {"std", "target_mean", "reference_mean", "gap"} <= set(points[0])
        assert points[0]["gap"] == 0.0 and points[0]["target_mean"] == 0.0
    assert (tuned / "tuning_curve.png").stat().st_size > 1000
    for std in (0.0, 2.0, 20.0, 200.0):
        folder = tuned / "per_std" / f"std_{std!r}"
        assert (folder / "done.json").exists()
        tokens = pd.read_parquet(folder / "tokens.parquet")
        assert set(tokens.part) == {"img", "inst", "desp", "inst_desp", "caption"}
        assert set(pd.read_parquet(folder / "losses.parquet").columns) >= {"clean_loss", "noisy_loss"}
    descriptions = json.loads((tuned / "descriptions.json").read_text())
    assert len(descriptions) == 16 and all(len(d["ids"]) <= 6 for d in descriptions.values())


def test_select_alone_reproduces_tune(tuned: Path) -> None:
    before = json.loads((tuned / "optimal_std.json").read_text())
    result = logan("select", f"path.output_dir={tuned}", "img_metrics.parts=[img,inst,desp,inst_desp,caption]")
    assert result.returncode == 0, result.stderr
    assert json.loads((tuned / "optimal_std.json").read_text())["optimal_std"] == before["optimal_std"]


def test_classify_at_optimal_std(world, tuned: Path, tmp_path: Path) -> None:
    out = tmp_path / "classify"
    result = logan("classify", "target_model=llava-hf", f"target_model.model_path={world.model}",
                   f"data.dataset={tuned / 'datasets' / 'target_dataset.parquet'}",
                   f"noise.std={tuned / 'optimal_std.json'}", "img_metrics.parts=[img,inst]",
                   f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "metrics.json").read_text())
    optimal = json.loads((tuned / "optimal_std.json").read_text())["optimal_std"]
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    assert {r["std"] for r in rows} == {optimal}
    assert {r["part"] for r in rows} == {"img", "inst"}
    assert all(r["n_members"] == 8 and r["n_nonmembers"] == 8 for r in rows)
    scores = pd.read_parquet(out / "scores.parquet")
    logan_rows = scores[scores.metric.str.startswith("max_k_")]
    assert len(logan_rows) and (logan_rows.score == -logan_rows.value).all()  # members diverge less
    aug = scores[scores.metric == "aug_kld"]
    assert len(aug) and (aug.score == aug.value).all()  # VL-MIA's orientation: higher KL = member
    assert (out / "report.html").stat().st_size > 10_000 and (out / "histograms.png").exists()
    blind = json.loads((out / "blind_baseline.json").read_text())
    assert 0.0 <= blind["auc"] <= 1.0 and blind["verdict"]
    assert (out / "roc.png").exists()


def test_classify_accepts_a_std_list_and_json_lists(world, tmp_path: Path) -> None:
    out = tmp_path / "classify"
    result = logan("classify", f"target_model.model_path={world.model}", f"data.member_dataset={world.members}",
                   f"data.nonmember_dataset={world.nonmembers}", "data.target_set_size=8", "noise.std=[1.0,10.0]",
                   "img_metrics.parts=[img]", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "metrics.json").read_text())
    assert {r["std"] for r in rows} == {1.0, 10.0}


def test_original_job_type_spelling(world, tmp_path: Path) -> None:
    out = tmp_path / "orig"
    result = logan("job_meta_params.job_type=hyperparam_tuning", *world.overrides(out)[:-4],
                   "data.augmentations.GaussianNoise.std=[1.0]", "img_metrics.parts=[img]",
                   "inference.batch_size=4", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "optimal_std.json").read_text())["optimal_std"] == 1.0


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
    assert message in stderr
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if "error" in line]) == 1
    assert not out.exists() or not any(out.iterdir())


def test_help_is_instant_and_lists_commands() -> None:
    result = logan("--help")
    assert result.returncode == 0
    assert all(c in result.stdout for c in ("tune", "select", "classify", "demo"))
