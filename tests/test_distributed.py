"""Data parallelism: SLURM-style shards and torchrun ranks give the single-process results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from logan.api import run
from logan.distributed import shard_of

FAST = ["img_metrics.parts=[img,desp]", "noise.std_sets=[[0.0,2.0],[20.0]]", "inference.batch_size=4",
        "img_metrics.metrics_to_use=[max_k_no_norn_kl_div,ppl]",
        "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals,ppl_tkn_vals]"]


def table(run_dir: Path, name: str = "scores.parquet") -> pd.DataFrame:
    frames = [pd.read_parquet(f / name).assign(folder=f.name) for f in sorted((run_dir / "per_std").iterdir())
              if (f / name).exists()]
    keys = [c for c in ("folder", "sample_id", "part", "metric", "k") if c in frames[0].columns]
    return pd.concat(frames).sort_values(keys).reset_index(drop=True)


def assert_same_results(a: Path, b: Path) -> None:
    for name in ("scores.parquet", "losses.parquet"):
        left, right = table(a, name), table(b, name)
        numeric = left.select_dtypes("number").columns
        pd.testing.assert_frame_equal(left.drop(columns=numeric), right.drop(columns=numeric))
        np.testing.assert_allclose(left[numeric].to_numpy(float), right[numeric].to_numpy(float), rtol=2e-3, atol=1e-9)
    ours, theirs = (json.loads((r / "optimal_std.json").read_text()) for r in (a, b))
    assert ours["optimal_std"] == theirs["optimal_std"]


@pytest.fixture(scope="module")
def single(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "single"
    run("tune", world.overrides(out, *FAST))
    return out


def test_shards_split_the_images_deterministically(world) -> None:
    images = [e["image"] for e in json.loads(world.members.read_text())]
    owners = [shard_of(img, 3) for img in images]
    assert owners == [shard_of(img, 3) for img in images] and set(owners) == {0, 1, 2}


def test_job_array_shards_merge_to_the_single_process_results(world, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "array"
    run("tune", world.overrides(out, *FAST, "data.num_shards=2", "data.shard_id=1"))
    assert not (out / "optimal_std.json").exists()  # shard 0 has not run: nothing merged yet
    run("tune", world.overrides(out, *FAST, "data.num_shards=2", "data.shard_id=0"))  # the last one merges
    assert (out / "optimal_std.json").exists()
    assert_same_results(out, single)
    descriptions = json.loads((out / "descriptions.json").read_text())
    assert len(descriptions) == 16


def test_a_killed_shard_reruns_alone_and_logan_merge_finishes(world, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = world.overrides(out, *FAST, "data.num_shards=2")
    env = {**os.environ, "LOGAN_FAULT": "batch:2"}
    killed = subprocess.run(["logan", "tune", *args, "data.shard_id=0"], env=env, capture_output=True, text=True)
    assert killed.returncode == -9
    run("tune", [*args, "data.shard_id=1"])
    assert not (out / "optimal_std.json").exists()
    shard1 = sorted((out / "shards").glob("shard_0001_of_0002/per_std/*/done.json"))
    stamps = [p.stat().st_mtime_ns for p in shard1]
    run("tune", [*args, "data.shard_id=0"])  # only shard 0 works again
    assert [p.stat().st_mtime_ns for p in shard1] == stamps
    assert_same_results(out, single)
    shutil.rmtree(out / "per_std")
    (out / "optimal_std.json").unlink()
    (out / "results.json").unlink()
    run("merge", [f"path.output_dir={out}"])
    assert_same_results(out, single)
    assert json.loads((out / "results.json").read_text())["command"] == "tune"  # merge finishes it as tune would


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_ranks_on_gloo_give_the_single_process_results(world, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "torchrun"
    env = {k: v for k, v in os.environ.items() if k != "LOGAN_FAULT"} | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29731", "-m",
         "logan.cli", "tune", *world.overrides(out, *FAST), "device=cpu"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard_0000_of_0002", "shard_0001_of_0002"]
    assert_same_results(out, single)


def test_device_map_auto_runs_the_same_attack(world, single: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    out = tmp_path / "device_map"
    run("tune", world.overrides(out, *FAST, "target_model.device_map=auto"))
    assert_same_results(out, single)
