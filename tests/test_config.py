"""Typed configuration: validation messages, the std grid, `noise.std` parsing, the packaged Hydra config."""

from __future__ import annotations

import json
import math

import pytest

from logan.compose import compose
from logan.config import PARTS, RunConfig, parse_std_values
from logan.errors import LoganError
from logan.models.registry import available_models, check_model
from logan.pipeline.common import read_std_argument

# ---------------------------------------------------------------- unknown keys and parts


def test_defaults_validate():
    cfg = RunConfig.from_dict({})
    assert cfg.data.n_nm_ratio == 0.5 and cfg.img_metrics.parts == ["img", "inst", "desp", "inst_desp"]
    assert RunConfig.from_dict({"data": None}).data.target_set_size == 300
    assert RunConfig.from_dict({}) == RunConfig.from_dict(compose([]))  # the dataclasses are the defaults


def test_unknown_top_level_key_suggests_the_close_one():
    with pytest.raises(LoganError, match=r"unknown config key 'sed'\. Did you mean 'seed'\?"):
        RunConfig.from_dict({"sed": 1})


def test_unknown_nested_key_names_the_full_path_and_suggests():
    with pytest.raises(LoganError) as info:
        RunConfig.from_dict({"data": {"member_datset": "m.json"}})
    message = str(info.value)
    assert "unknown config key 'data.member_datset'" in message
    assert "Did you mean 'member_dataset'?" in message
    assert "Keys of 'data':" in message and "nonmember_dataset" in message


def test_unknown_deep_key():
    with pytest.raises(LoganError, match=r"data\.augmentations\.GaussianNoise\.sdt.*Did you mean 'std'"):
        RunConfig.from_dict({"data": {"augmentations": {"GaussianNoise": {"sdt": [1.0]}}}})


def test_unknown_key_without_a_close_match_lists_the_valid_keys():
    with pytest.raises(LoganError) as info:
        RunConfig.from_dict({"noise": {"zzzzzz": 1}})
    assert "Did you mean" not in str(info.value)
    assert "std_sets" in str(info.value) and "quantize" in str(info.value)


def test_group_given_a_scalar_is_an_error():
    with pytest.raises(LoganError, match="'noise' must be a group of keys"):
        RunConfig.from_dict({"noise": 3})


def test_unknown_part_names_the_valid_parts():
    with pytest.raises(LoganError) as info:
        RunConfig.from_dict({"img_metrics": {"parts": ["img", "imgg"]}})
    message = str(info.value)
    assert "unknown part 'imgg'" in message and "Did you mean 'img'?" in message
    assert "Valid parts: " + ", ".join(PARTS) in message


def test_empty_parts_is_an_error():
    with pytest.raises(LoganError, match="img_metrics.parts is empty"):
        RunConfig.from_dict({"img_metrics": {"parts": []}})


@pytest.mark.parametrize("raw,match", [
    ({"data": {"target_set_size": 1}}, "too small"),
    ({"data": {"target_set_size": "many"}}, "not a valid int"),
    ({"data": {"target_set_size": 2.5}}, "not a valid int"),
    ({"data": {"n_nm_ratio": "half"}}, "not a valid float"),
    ({"noise": {"quantize": "ceil"}}, "noise.quantize=ceil"),
    ({"noise": {"space": "latent"}}, "noise.space=latent"),
    ({"noise": {"draws": 0}}, "noise.draws=0"),
    ({"inference": {"batch_size": 0}}, "batch_size"),
    ({"generation": {"batch_size": 0}}, "batch_size"),
    ({"img_metrics": {"ratio": [0.0, 1.5]}}, "Max-K% ratio"),
    ({"selection": {"k": -0.1}}, "selection.k"),
])
def test_value_checks(raw, match):
    with pytest.raises(LoganError, match=match):
        RunConfig.from_dict(raw)


def test_light_coercion():
    data = {"target_set_size": 12.0, "n_nm_ratio": "0.25"}
    cfg = RunConfig.from_dict({"data": data, "seed": "3", "demo": {"control": "false"}})
    assert cfg.data.target_set_size == 12 and isinstance(cfg.data.target_set_size, int)
    assert cfg.data.n_nm_ratio == 0.25
    assert cfg.demo.control is False
    assert cfg.seed == 3


# ---------------------------------------------------------------- std grid


@pytest.mark.parametrize("bad", [-1.0, -0.001, "abc", None, float("nan"), float("inf"), [1.0]])
def test_bad_std_in_std_sets(bad):
    with pytest.raises(LoganError, match="noise.std_sets"):
        RunConfig.from_dict({"noise": {"std_sets": [[0.0, 1.0], [2.0, bad]]}})


def test_std_sets_are_floats():
    cfg = RunConfig.from_dict({"noise": {"std_sets": [[0, 1], ["2.5"]]}})
    assert cfg.std_sets() == [[0.0, 1.0], [2.5]]
    assert all(isinstance(s, float) for group in cfg.std_sets() for s in group)


def test_original_gaussian_noise_std_overrides_std_sets():
    raw = {"noise": {"std_sets": [[1.0, 2.0], [3.0]]},
           "data": {"augmentations": {"GaussianNoise": {"std": [0.5, 7, 9.0]}}}}
    assert RunConfig.from_dict(raw).std_sets() == [[0.5, 7.0, 9.0]]
    raw["data"]["augmentations"]["GaussianNoise"]["std"] = None
    assert RunConfig.from_dict(raw).std_sets() == [[1.0, 2.0], [3.0]]
    raw["data"]["augmentations"]["GaussianNoise"]["std"] = [1.0, -2.0]
    with pytest.raises(LoganError, match="a noise std must be a finite number >= 0"):
        RunConfig.from_dict(raw)


def test_parse_std_values():
    assert parse_std_values(2) == [2.0]
    assert parse_std_values([0, "1.5", 3]) == [0.0, 1.5, 3.0]
    with pytest.raises(LoganError, match="is empty"):
        parse_std_values([])
    with pytest.raises(LoganError, match="not a number"):
        parse_std_values(["x"])


# ---------------------------------------------------------------- classify's noise.std


def test_read_std_argument_accepts_numbers_and_lists():
    assert read_std_argument(0.5) == [0.5]
    assert read_std_argument(3) == [3.0]
    assert read_std_argument("0.25") == [0.25]
    assert read_std_argument([0.1, 2]) == [0.1, 2.0]
    assert read_std_argument(0) == [0.0]


def test_read_std_argument_reads_an_optimal_std_file(tmp_path):
    path = tmp_path / "optimal_std.json"
    path.write_text(json.dumps({"optimal_std": 0.072, "rule": "min_gap"}))
    assert read_std_argument(str(path)) == [0.072]


@pytest.mark.parametrize("value,match", [
    (None, "noise.std is not set"),
    ("garbage", "neither a number nor an existing optimal_std.json"),
    ([], "is empty"),
    (-1.0, "finite number >= 0"),
    ([1.0, "x"], "not a number"),
    ({"a": 1}, "not a number"),
])
def test_read_std_argument_rejects_garbage(value, match):
    with pytest.raises(LoganError, match=match):
        read_std_argument(value)


@pytest.mark.parametrize("content", [json.dumps({"std": 1.0}), json.dumps([1.0]), "not json",
                                     json.dumps({"optimal_std": "abc"})])
def test_read_std_argument_rejects_a_bad_file(tmp_path, content):
    path = tmp_path / "optimal_std.json"
    path.write_text(content)
    with pytest.raises(LoganError, match="no 'optimal_std' number"):
        read_std_argument(str(path))


@pytest.mark.parametrize("value", ["-1.0", "NaN", "Infinity"])
def test_read_std_argument_validates_the_file_value(tmp_path, value):
    path = tmp_path / "optimal_std.json"
    path.write_text('{"optimal_std": %s}' % value)
    with pytest.raises(LoganError):
        read_std_argument(str(path))


# ---------------------------------------------------------------- the packaged Hydra config


@pytest.fixture(scope="module")
def default_raw():
    return compose(["img_metrics.parts=[img]"])


def test_composed_default_config_is_accepted(default_raw):
    assert isinstance(default_raw, dict)
    cfg = RunConfig.from_dict(default_raw)
    assert cfg.img_metrics.parts == ["img"]
    assert cfg.target_model.name == "llava-hf"
    assert len([m for m in cfg.img_metrics.metrics_to_use if m.startswith("max_k_renyi_div")
                or m.endswith("_kl_div")]) == 9  # the nine LOGAN metrics, then the VL-MIA baselines
    assert {m + "_tkn_vals" for m in cfg.img_metrics.metrics_to_use} == set(cfg.img_metrics.get_proc_meta_metrics)
    assert cfg.noise.quantize == "none" and cfg.noise.space == "pixel"


def test_default_std_grid_has_32_values_in_4_sets(default_raw):
    sets = RunConfig.from_dict(default_raw).std_sets()
    assert len(sets) == 4 and [len(s) for s in sets] == [8, 8, 8, 8]
    flat = [s for group in sets for s in group]
    assert len(set(flat)) == 32
    assert flat == sorted(flat) and flat[0] > 0 and all(math.isfinite(s) for s in flat)


def test_composed_overrides_reach_the_typed_config():
    raw = compose(["data.target_set_size=40", "noise.quantize=floor", "img_metrics.parts=[img,desp]",
                   "data.augmentations.GaussianNoise.std=[0.5,1.0]", "seed=7"])
    cfg = RunConfig.from_dict(raw)
    assert cfg.data.target_set_size == 40 and cfg.noise.quantize == "floor" and cfg.seed == 7
    assert cfg.img_metrics.parts == ["img", "desp"]
    assert cfg.std_sets() == [[0.5, 1.0]]


def test_composed_bad_part_is_rejected_by_the_typed_config():
    with pytest.raises(LoganError, match="unknown part 'caption2'"):
        RunConfig.from_dict(compose(["img_metrics.parts=[caption2]"]))


def test_minigpt4_composes_and_asks_for_its_checkpoint():
    raw = compose(["target_model=minigpt-4", "img_metrics.parts=[img]"])
    cfg = RunConfig.from_dict(raw)
    assert cfg.target_model.name == "minigpt-4"
    assert cfg.target_model.model["arch"] == "minigpt4"
    with pytest.raises(LoganError, match="target_model.ckpt is not set"):
        check_model(cfg.target_model)


@pytest.mark.parametrize("name", ["llava-v1.5-7b", "llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5", "llava-next"])
def test_every_seed_model_name_composes_and_asks_for_its_files(name):
    cfg = RunConfig.from_dict(compose([f"target_model={name}"]))
    assert cfg.target_model.name == name
    with pytest.raises(LoganError, match="model_path"):
        check_model(cfg.target_model)


def test_unknown_model_name_is_a_logan_error():
    cfg = RunConfig.from_dict({"target_model": {"name": "llava-hff"}})
    with pytest.raises(LoganError, match="unknown target_model 'llava-hff'.*Did you mean 'llava-hf'"):
        check_model(cfg.target_model)
    assert "llava-hf" in available_models() and "minigpt-4" in available_models()


# ---------------------------------------------------------------- speed options


def test_speed_options_default_to_auto_and_resolve_by_device():
    import torch

    from logan.models.base import resolve_compile
    from logan.pipeline.describe import generation_batch_size

    cfg = RunConfig.from_dict({})
    assert (cfg.inference.batch_size, cfg.inference.compile, cfg.generation.batch_size) == ("auto", "auto", "auto")
    composed = RunConfig.from_dict(compose([]))
    assert (composed.inference.batch_size, composed.inference.compile, composed.generation.batch_size) == (
        "auto", "auto", "auto") and composed.inference.checkpoint_every == 256
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_compile("auto", cpu) is False and resolve_compile(True, cpu) is True
    assert resolve_compile(False, gpu) is False
    assert generation_batch_size("auto", cpu) == 8 and generation_batch_size("auto", gpu) == 64
    assert generation_batch_size(3, gpu) == 3


@pytest.mark.parametrize("key, value, message", [
    ("inference.batch_size", 0, "inference.batch_size=0 is neither a positive integer nor auto"),
    ("inference.batch_size", "many", "inference.batch_size=many is neither"),
    ("generation.batch_size", 2.5, "generation.batch_size=2.5 is neither"),
    ("inference.compile", "sometimes", "inference.compile=sometimes is not one of true, false, auto"),
    ("inference.checkpoint_every", 0, "inference.checkpoint_every=0 must be at least 1"),
])
def test_bad_speed_options_are_one_clear_error(key, value, message):
    group, name = key.split(".")
    with pytest.raises(LoganError, match=message.replace(".", r"\.")):
        RunConfig.from_dict({group: {name: value}})
