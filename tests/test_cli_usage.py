"""The command line as a new user meets it: help, version, config printing, typos, odd paths, where
output goes, the run log, exit codes, and the one source of configuration truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

import logan
from logan.cli_help import COMMAND_KEYS
from logan.config import RunConfig, walk

FAST = ["noise.std_sets=[[0.0,2.0]]", "img_metrics.parts=[img]", "inference.batch_size=4",
        "data.target_set_size=8"]
ODD = "café 数据 run#1 a'b a,b a(b"


def logan_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["logan", *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


def tune_args(world, out: Path, *extra: str) -> list[str]:
    return [f"target_model.model_path={world.model}", f"data.member_dataset={world.members}",
            f"data.nonmember_dataset={world.nonmembers}", *FAST, f"path.output_dir={out}", *extra]


# ---------------------------------------------------------------- help, version, --cfg job


@pytest.mark.parametrize("command", list(COMMAND_KEYS))
def test_command_help_lists_every_key_it_reads_with_default_and_meaning(command: str) -> None:
    result = logan_cli(command, "--help")
    assert result.returncode == 0 and not result.stderr
    keys = [name for name, _, _ in walk(RunConfig) if name.startswith(COMMAND_KEYS[command])
            or name in COMMAND_KEYS[command]]
    assert keys
    for name in keys:
        line = next((l for l in result.stdout.splitlines() if l.strip().startswith(f"{name}=")), None)
        assert line is not None, f"{command} --help does not list {name}"
    assert "exit codes: 0 done" in result.stdout
    assert logan_cli(command, "-h").stdout == result.stdout


def test_every_key_has_a_one_line_meaning() -> None:
    for name, _, spec in walk(RunConfig):
        text = spec.metadata.get("help", "")
        assert text and "\n" not in text, f"{name} has no one-line help"


def test_help_shows_the_chosen_preset_and_the_original_keys_apart() -> None:
    out = logan_cli("tune", "target_model=minigpt-4", "--help").stdout
    assert "target_model=auto, hf-vlm, llava-hf, llava-next" in out and "minigpt-4 (chosen)" in out
    assert re.search(r"target_model\.vocab_size=32000\s+real vocabulary", out)  # the preset's value
    legacy = out.split("kept so the original's scripts run", 1)[1]
    assert "path.cache_dir" not in legacy  # the Hugging Face cache: a setting of its own now
    for name in ("data.save_datasets", "data.augmentations.GaussianNoise.use",
                 "img_metrics.get_token_labels", "job_meta_params.job_type"):
        assert name in legacy


def test_version_and_python_dash_m() -> None:
    from importlib.metadata import version

    assert logan_cli("--version").stdout.strip() == f"logan {logan.__version__}"
    assert logan.__version__ == version("logan-mia")
    result = subprocess.run([sys.executable, "-m", "logan", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "commands:" in result.stdout


def test_cfg_job_prints_the_resolved_config_without_running(tmp_path: Path) -> None:
    out = tmp_path / "never"
    result = logan_cli("tune", "seed=7", "target_model=llava-next", f"path.output_dir={out}", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["seed"] == 7 and printed["target_model"]["conv_mode"] == "mistral_instruct"
    assert printed["path"]["output_dir"] == str(out) and not out.exists()
    assert logan_cli("tune", "--cfg", "all").returncode == 2


# ---------------------------------------------------------------- typos and bad values: one line, exit 2


@pytest.mark.parametrize("args, message", [
    (["tune", "data.target_set_sise=8"], "no key 'data.target_set_sise'. Did you mean 'data.target_set_size'?"),
    (["tune", "seed=abc"], "bad value in seed=abc"),
    (["tnue"], "unknown command 'tnue'. Did you mean 'tune'?"),
    (["tune", "target_model=minigpt4"], "Did you mean 'minigpt-4'"),
    (["tune", "data.save_datasets=false"], "data.save_datasets=false is not supported"),
    (["tune", "data.augmentations.GaussianNoise.use=false"], "GaussianNoise.use=false would attack without noise"),
    (["tune", "img_metrics.get_token_labels=5"], "get_token_labels is not supported"),
    (["classify", "job_meta_params.job_type=hyperparam_tuning"], "contradict each other"),
    (["tune", "noise.quantize=ceil"], "noise.quantize=ceil is not one of none, round, floor"),
])
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = logan_cli(*args, f"path.output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- runs: stdout, logan.log, printed paths


@pytest.fixture(scope="module")
def tuned_cli(world, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("usage") / ODD / "tune"
    result = logan_cli("tune", *tune_args(world, out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_any_path_works_as_typed(tuned_cli, world) -> None:
    out, _ = tuned_cli
    assert (out / "optimal_std.json").is_file() and ODD in str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["path"]["output_dir"] == str(out)


def test_tilde_means_home(world, tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    env_home.mkdir()
    result = subprocess.run(["logan", "tune", "path.output_dir=~/runs/x", "--cfg", "job"], capture_output=True,
                            text=True, env={**os.environ, "HOME": str(env_home)}, timeout=60)
    assert yaml.safe_load(result.stdout)["path"]["output_dir"] == str(env_home / "runs" / "x")


def test_results_go_to_stdout_and_logs_to_stderr(tuned_cli) -> None:
    out, result = tuned_cli
    assert result.stdout.startswith("optimal std = ")
    assert str(out / "optimal_std.json") in result.stdout
    assert " I logan" in result.stderr and result.stdout.splitlines()[0] not in result.stderr


def test_classify_table_is_on_stdout(tuned_cli, tmp_path: Path) -> None:
    tune_out, _ = tuned_cli
    out = tmp_path / "classify"
    result = logan_cli("classify", f"noise.std={tune_out / 'optimal_std.json'}", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^img\s+max_k_no_norn_kl_div\s", result.stdout, re.M)
    assert "model-free baseline: AUC" in result.stdout and "95% CI" not in result.stderr
    assert_printed_paths_exist(result, out, tune_out)


def assert_printed_paths_exist(result: subprocess.CompletedProcess, *roots: Path) -> None:
    """Every file path under `roots` that a command prints (stdout and stderr) exists."""
    text = result.stdout + result.stderr
    pattern = "|".join(re.escape(str(root)) for root in roots)
    paths = re.findall(rf"((?:{pattern})/[^\s,;:]*?\.(?:json|png|parquet|html|txt|log))(?=$|[\s,;:)])", text, re.M)
    assert paths
    missing = [p for p in paths if not Path(p).exists()]
    assert not missing, missing


def test_tune_prints_only_paths_that_exist(world, tmp_path: Path) -> None:
    result = logan_cli("tune", *tune_args(world, tmp_path / "tune"))
    assert result.returncode == 0, result.stderr
    assert_printed_paths_exist(result, tmp_path)


def test_the_error_that_stops_a_run_is_the_last_line_of_its_log(world, tuned_cli) -> None:
    out, _ = tuned_cli
    result = logan_cli("tune", *tune_args(world, out, "noise.quantize=round"))
    assert result.returncode == 2 and "differs in: quantize" in result.stderr
    last = (out / "logan.log").read_text().strip().splitlines()[-1]
    assert " ERROR " in last and "differs in: quantize" in last
    assert (out / "optimal_std.json").is_file()  # the finished results stay


# ---------------------------------------------------------------- one source of configuration truth


def test_every_default_is_defined_once() -> None:
    """The dataclasses hold every default; YAML holds only the model presets, each setting only what differs."""
    conf = files("logan.conf")
    yaml_files = sorted(str(p.relative_to(Path(str(conf)))) for p in Path(str(conf)).rglob("*.yaml"))
    assert [f for f in yaml_files if not f.startswith("target_model/")] == ["config.yaml"]
    top = yaml.safe_load((Path(str(conf)) / "config.yaml").read_text())
    assert set(top) == {"defaults"}
    defaults = {name: value for name, value, _ in walk(RunConfig)}
    for name in yaml_files[1:]:
        preset = yaml.safe_load((Path(str(conf)) / name).read_text())
        for key, value in preset.items():
            if key == "name":
                assert value == Path(name).stem
                continue
            assert f"target_model.{key}" in defaults, f"{name}: {key} is not a key"
            assert value != defaults[f"target_model.{key}"], f"{name} repeats the default of {key}"
