"""Reliability: killed runs resume to identical results, one clear error per bad input, locks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from logan.cli import main

SMALL = ["img_metrics.parts=[img,desp]", "noise.std_sets=[[0.0,2.0],[20.0]]", "inference.batch_size=4",
         "img_metrics.metrics_to_use=[max_k_no_norn_kl_div,max_k_renyi_divergence_2,ppl]",
         "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals,max_k_renyi_divergence_2_tkn_vals,"
         "ppl_tkn_vals]"]


def logan(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"LOGAN_FAULT": fault} if fault else {})}
    env.pop("LOGAN_FAULT", None) if not fault else None
    return subprocess.run(["logan", *args], capture_output=True, text=True, env=env, timeout=600)


def scores_of(run: Path) -> pd.DataFrame:
    frames = []
    for folder in sorted((run / "per_std").iterdir()):
        frame = pd.read_parquet(folder / "scores.parquet")
        frames.append(frame.assign(folder=folder.name))
    return pd.concat(frames).sort_values(["folder", "sample_id", "part", "metric", "k"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_run(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "reference"
    result = logan(["tune", *world.overrides(out, *SMALL)])
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("fault", ["model_loaded:1", "describe:1", "batch:3", "std_finish:2", "combine:2",
                                   "combine:4", "json:4"])  # combine:4 = after the run's last std
def test_killed_tune_resumes_to_identical_results(world, reference_run: Path, tmp_path: Path, fault: str) -> None:
    out = tmp_path / "killed"
    killed = logan(["tune", *world.overrides(out, *SMALL)], fault=fault)
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "per_std").glob("*/done.json")
                       if not p.parent.name.startswith(".")}  # a temporary folder is not finished
    rerun = logan(["tune", *world.overrides(out, *SMALL)])
    assert rerun.returncode == 0, rerun.stderr
    for name, mtime in finished_before.items():  # nothing already complete was recomputed
        assert (out / "per_std" / name / "done.json").stat().st_mtime_ns == mtime
    assert not list(out.rglob(".*.tmp")) and not (out / ".logan.lock").exists()
    pd.testing.assert_frame_equal(scores_of(out), scores_of(reference_run))
    ours, theirs = (json.loads((r / "optimal_std.json").read_text()) for r in (out, reference_run))
    assert ours["optimal_std"] == theirs["optimal_std"] and ours["curves"] == theirs["curves"]


@pytest.mark.parametrize("rerun_chunk", [4, 8])
def test_a_killed_tune_resumes_at_its_first_unfinished_chunk(world, reference_run: Path, tmp_path: Path,
                                                             rerun_chunk: int) -> None:
    """16 samples in batches of 4, a chunk per batch: killed in the second chunk, the rerun keeps the
    first chunk of every std (3 stds + the baselines) and gives the uninterrupted run's results; a rerun
    with another chunk length discards the unfinished chunks and still gives them."""
    out = tmp_path / "chunks"
    killed = logan(["tune", *world.overrides(out, *SMALL, "inference.checkpoint_every=4")], fault="batch:6")
    assert killed.returncode == -9
    partial = out / "per_std" / ".partial"
    kept = sorted(p.parent for p in partial.glob("*/chunk_*/done.json"))
    assert len(kept) == 4 and {p.name for p in kept} == {"chunk_00000"}
    assert not list((out / "per_std").glob("std_*/done.json"))  # no std is complete yet
    rerun = logan(["tune", *world.overrides(out, *SMALL, f"inference.checkpoint_every={rerun_chunk}")])
    assert rerun.returncode == 0, rerun.stderr
    log = (out / "logan.log").read_text()
    if rerun_chunk == 4:
        assert "1 of 4 chunks already done" in log
    else:
        assert "discarding the unfinished chunks" in log
    assert not partial.exists()
    pd.testing.assert_frame_equal(scores_of(out), scores_of(reference_run))


def test_killed_classify_resumes_to_identical_results(world, reference_run: Path, tmp_path: Path) -> None:
    args = [f"target_model.model_path={world.model}", *SMALL,
            f"data.dataset={reference_run / 'datasets' / 'target_dataset.parquet'}", "noise.std=[2.0,20.0]",
            f"data.reference_datasets_list=[{world.reference}]", "verdict.fpr=0.2"]   # verdicts read the reference
    clean = logan(["classify", *args, f"path.output_dir={tmp_path / 'clean'}"])
    assert clean.returncode == 0, clean.stderr
    killed = logan(["classify", *args, f"path.output_dir={tmp_path / 'killed'}"], fault="std_finish:1")
    assert killed.returncode == -9
    rerun = logan(["classify", *args, f"path.output_dir={tmp_path / 'killed'}"])
    assert rerun.returncode == 0, rerun.stderr
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("clean", "killed"))
    assert a == b
    verdicts = [pd.read_csv(tmp_path / n / "verdicts.csv") for n in ("clean", "killed")]
    assert len(verdicts[0]) == 2 * 16 and set(verdicts[0]["std"]) == {2.0, 20.0}   # each image at each std
    pd.testing.assert_frame_equal(*verdicts)


def test_a_live_lock_refuses_and_a_stale_lock_is_taken_over(world, tmp_path: Path, capsys) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    lock = out / ".logan.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    args = ["tune", *world.overrides(out, *SMALL[:3], "img_metrics.parts=[img]")]
    assert main(args) == 2
    assert "another logan run" in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert main(args) == 0  # the owner is gone: stale
    lock.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    old = time.time() - 3600
    os.utime(lock, (old, old))
    shutil.rmtree(out / "per_std")
    assert main(args) == 0  # not touched for an hour: stale even from another host
    assert not lock.exists()


def _bad_image(world, tmp_path: Path) -> list[str]:
    entries = json.loads(world.members.read_text())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    entries[3]["image"] = str(broken)
    path = tmp_path / "members.json"
    path.write_text(json.dumps(entries))
    return [f"data.member_dataset={path}", "data.target_set_size=24"]


def _json_list(tmp_path: Path, content: str, key: str = "data.member_dataset") -> list[str]:
    path = tmp_path / "list.json"
    path.write_text(content)
    return [f"{key}={path}"]


def _parquet_without_label(tmp_path: Path) -> list[str]:
    path = tmp_path / "set.parquet"
    pd.DataFrame({"image": ["a.png"]}).to_parquet(path)
    return [f"data.dataset={path}"]


def _not_a_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "empty_model").mkdir()
    return [f"target_model.model_path={tmp_path / 'empty_model'}"]


def _missing_key(world, tmp_path: Path) -> list[str]:
    broken = tmp_path / "broken_model"
    shutil.copytree(world.model, broken)
    weights = load_file(broken / "model.safetensors")
    weights.pop(next(k for k in weights if "lm_head" in k))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    return [f"target_model.model_path={broken}"]


CATALOGUE = {
    "corrupt image": (_bad_image, "broken.png"),
    "JSON not a list": (lambda w, t: _json_list(t, '{"image": "a.png", "label": 1}'), "must be a JSON list"),
    "wrong label": (lambda w, t: _json_list(t, '[{"image": "a.png", "label": 3}]'), "is not 1 (member) or 0"),
    "empty set": (lambda w, t: _json_list(t, "[]"), "is empty"),
    "not JSON": (lambda w, t: _json_list(t, "[{oops"), "is not valid JSON"),
    "parquet without label": (lambda w, t: _parquet_without_label(t), "has no label column 'label' (columns: image)"),
    "reference distribution sum": (lambda w, t: [f"data.reference_datasets_list=[{w.reference},{w.nonmembers}]",
                                                 "data.reference_set_sample_distribution=[0.5,0.6]"], "sum to 1.0"),
    "reference distribution length": (lambda w, t: [f"data.reference_datasets_list=[{w.reference},{w.nonmembers}]",
                                                    "data.reference_set_sample_distribution=[1.0]"], "one proportion"),
    "non-numeric std": (lambda w, t: ["noise.std_sets=[[abc]]"], "not a number"),
    "model folder not a checkpoint": (lambda w, t: _not_a_checkpoint(t), "no config.json"),
    "checkpoint with a missing key": (_missing_key, "missing keys"),
    "unknown metric": (lambda w, t: ["img_metrics.metrics_to_use=[max_k_no_norn_kl]"], "Did you mean"),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_catalogue(world, tmp_path: Path, capsys, case: str) -> None:
    make, message = CATALOGUE[case]
    extra = make(world, tmp_path)
    out = tmp_path / "out"
    keys = {e.split("=")[0] for e in extra}
    args = [a for a in world.overrides(out, "img_metrics.parts=[img]") if a.split("=")[0] not in keys] + extra
    if any(e.startswith("data.dataset=") for e in extra):
        args = [a for a in args if not a.startswith(("data.member_dataset", "data.nonmember_dataset"))]
    code = main(["tune", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len([line for line in err.splitlines() if line.startswith("logan: error")]) == 1
    assert "Traceback" not in err
    assert not out.exists()  # nothing written


def test_output_folder_of_another_run_is_refused(world, reference_run: Path, capsys) -> None:
    before = sorted(p.name for p in reference_run.iterdir())
    code = main(["classify", f"target_model.model_path={world.model}", "noise.std=2.0", *SMALL,
                 f"data.dataset={reference_run / 'datasets' / 'target_dataset.parquet'}",
                 f"path.output_dir={reference_run}"])
    assert code == 2
    assert "holds the results of 'logan tune'" in capsys.readouterr().err
    assert sorted(p.name for p in reference_run.iterdir()) == before


def test_out_of_gpu_memory_names_a_batch_size(world, tmp_path: Path, capsys, monkeypatch) -> None:
    from logan.models.llava_hf import LlavaHF

    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(LlavaHF, "forward_logits", boom)
    code = main(["tune", *world.overrides(tmp_path / "oom", "img_metrics.parts=[img]", "inference.batch_size=8")])
    err = capsys.readouterr().err
    assert code == 2 and "inference.batch_size=4" in err and "Traceback" not in err
