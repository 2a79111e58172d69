"""Plugins: a model adapter and a metric family from another installed distribution (entry points), the
listing of names, and the checks `register_metric` / `register_model` make when something registers.

The end-to-end test builds a real wheel of a tiny plugin offline, installs it into a fresh virtual
environment layered on this one, and runs `logan tune` there with the plugin's model and metric by name.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from logan.errors import LoganError
from logan.metrics import registry
from logan.metrics.registry import get_metric, register_metric
from logan.models import registry as model_registry
from logan.models.base import VLMAdapter
from logan.models.llava_hf import LlavaHF
from logan.models.registry import get_model_factory, register_model
from logan.pipeline import listing

PLUGIN_DIST, PLUGIN_VERSION = "logan-toy-plugin", "0.3.1"
PLUGIN_MODEL, PLUGIN_METRIC = "toy-llava", "toy_mean_abs_logit_change"
ADAPTER_DOC = "Toy LLaVA from a plugin distribution: llava-hf's adapter under another name."
METRIC_DOC = "Mean absolute change of the logits between the clean and the noisy pass."

PYPROJECT = f"""\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{PLUGIN_DIST}"
version = "{PLUGIN_VERSION}"

[project.entry-points."logan.models"]
{PLUGIN_MODEL} = "logan_toy_plugin.adapter:ToyLlava"

[project.entry-points."logan.metrics"]
toy = "logan_toy_plugin.metrics"
"""
ADAPTER = f'''\
import logging

from logan.models.llava_hf import LlavaHF


class ToyLlava(LlavaHF):
    """{ADAPTER_DOC}"""

    def __init__(self, cfg, device, dtype):
        super().__init__(cfg, device, dtype)
        logging.getLogger(__name__).info("ToyLlava loaded %s", cfg.model_path)
'''
METRICS = f'''\
from logan.metrics.registry import register_metric


@register_metric("{PLUGIN_METRIC}")
def mean_abs_logit_change(pair):
    """{METRIC_DOC}"""
    return (pair.clean - pair.noisy).abs().mean(-1)
'''


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a virtual environment with this one's packages plus the toy plugin's wheel."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    package = source / "logan_toy_plugin"
    package.mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text(ADAPTER)
    (package / "metrics.py").write_text(METRICS)
    dist, env = root / "dist", root / "env"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", dist, source)
    assert built.returncode == 0, built.stdout + built.stderr
    made = run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", *dist.glob("*.whl"))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def test_the_plugin_environment_lists_the_plugin_and_the_built_ins(plugin_env: Path) -> None:
    code = "from logan.pipeline.listing import main; print(main(['models'])); print(main(['metrics']))"
    listed = run(plugin_env, "-c", code)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    origin = f"{PLUGIN_DIST} {PLUGIN_VERSION}"
    assert origin in rows[PLUGIN_MODEL] and ADAPTER_DOC in rows[PLUGIN_MODEL]
    assert rows[PLUGIN_METRIC].split()[1:3] == ["noise", "max_k"]
    assert origin in rows[PLUGIN_METRIC] and METRIC_DOC in rows[PLUGIN_METRIC]
    assert "built-in" in rows["llava-hf"] and "built-in" in rows["ppl"]


def test_the_base_environment_does_not_see_the_plugin(world, tmp_path: Path) -> None:
    assert PLUGIN_MODEL not in listing.main(["models"]) and PLUGIN_METRIC not in listing.main(["metrics"])
    refused = run(sys.executable, "-m", "logan.cli", "tune", *world.overrides(tmp_path / "out"),
                  f"target_model.name={PLUGIN_MODEL}")
    assert refused.returncode == 2 and f"unknown target_model '{PLUGIN_MODEL}'" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_a_tune_run_uses_the_plugin_model_and_metric_by_name(plugin_env: Path, world, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    metrics = [PLUGIN_METRIC, "max_k_no_norn_kl_div"]
    result = run(plugin_env, "-m", "logan.cli", "tune", f"target_model={PLUGIN_MODEL}",
                 f"target_model.model_path={world.model}", f"data.member_dataset={world.members}",
                 f"data.nonmember_dataset={world.nonmembers}", "data.target_set_size=8",
                 "data.n_nm_ratio=0.5",
                 "data.reference_datasets_list=[]", "noise.std_sets=[[0.0,30.0]]", "img_metrics.parts=[img]",
                 f"img_metrics.metrics_to_use=[{','.join(metrics)}]",
                 f"img_metrics.get_proc_meta_metrics=[{','.join(m + '_tkn_vals' for m in metrics)}]",
                 "inference.batch_size=4", f"path.output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert f"ToyLlava loaded {world.model}" in (out / "logan.log").read_text()  # the plugin's adapter ran
    for std in (0.0, 30.0):
        frame = pd.read_parquet(out / "per_std" / f"std_{std!r}" / "scores.parquet")
        toy = frame[frame.metric == PLUGIN_METRIC]
        assert set(frame.metric) == set(metrics) and toy.sample_id.nunique() == 8
        if std == 0.0:
            assert (toy.value == 0).all()  # identical passes: no change at all
        else:
            assert (toy.value > 0).all()
    assert PLUGIN_METRIC in json.loads((out / "optimal_std.json").read_text())["curves"]


# ---- registration-time checks -------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    registry.all_metrics()
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))
    monkeypatch.setattr(model_registry, "_REGISTERED", dict(model_registry._REGISTERED))


def noisy_change(pair):
    """Mean absolute logit change."""
    return (pair.clean - pair.noisy).abs().mean(-1)


@pytest.mark.parametrize(("settings", "named"), [
    ({"needs": "gradients"}, "needs='gradients'"),
    ({"aggregate": "top_k"}, "aggregate='top_k'"),
    ({"member_when": "lower"}, "Did you mean 'low'?"),
])
def test_a_metric_with_settings_the_engine_lacks_fails_when_it_registers(scratch_registry, settings,
                                                                         named) -> None:
    with pytest.raises(LoganError, match="register_metric") as error:
        register_metric("test_bad_settings", **settings)(noisy_change)
    assert named in str(error.value) and "\n" not in str(error.value)
    assert "test_bad_settings" not in registry._METRICS


@pytest.mark.parametrize("fn", [lambda pair, other: pair.clean.sum(-1), lambda: None])
def test_a_metric_must_take_exactly_the_token_pair(scratch_registry, fn) -> None:
    with pytest.raises(LoganError, match="exactly one argument"):
        register_metric("test_bad_signature")(fn)


def test_a_clean_metric_that_reads_the_noisy_pass_fails_when_it_registers(scratch_registry) -> None:
    with pytest.raises(LoganError, match=r"pair.noisy is None.*TypeError"):
        register_metric("test_reads_noise", needs="clean")(noisy_change)
    assert "test_reads_noise" not in registry._METRICS


def test_a_metric_must_return_one_value_per_token(scratch_registry) -> None:
    with pytest.raises(LoganError, match=r"shape \(\)"):
        register_metric("test_scalar")(lambda pair: pair.kl.sum())
    with pytest.raises(LoganError, match="returns float"):
        register_metric("test_float")(lambda pair: 0.0)


@pytest.mark.parametrize("name", ["_private", "a,b", "x_tkn_vals", ""])
def test_a_metric_name_must_survive_an_override_list(scratch_registry, name) -> None:
    with pytest.raises(LoganError, match="metric name"):
        register_metric(name)(noisy_change)


def test_a_metric_registered_in_a_notebook_is_used_and_listed(scratch_registry) -> None:
    register_metric("test_change", member_when="high")(noisy_change)
    spec = get_metric("test_change")
    assert spec.description == "Mean absolute logit change." and spec.origin == f"module {__name__}"
    assert spec.sign == 1.0
    pair = registry._trial_pair("noise")[1]
    assert torch.equal(spec.fn(pair), (pair.clean - pair.noisy).abs().mean(-1))
    row = next(line for line in listing.main(["metrics"]).splitlines() if line.startswith("test_change "))
    assert row.split()[1:4] == ["noise", "max_k", "high"] and "Mean absolute logit change." in row


def test_a_plugin_metric_cannot_take_a_built_in_name(scratch_registry, monkeypatch, caplog) -> None:
    monkeypatch.setattr(registry, "_loading", "some-plugin 1.0")
    with caplog.at_level(logging.WARNING):
        register_metric("ppl", needs="noise")(noisy_change)
    assert get_metric("ppl").origin == "built-in" and get_metric("ppl").needs == "clean"
    assert "ignoring metric 'ppl' of some-plugin 1.0: a built-in metric has that name" in caplog.text


def test_every_built_in_metric_has_a_description() -> None:
    specs = registry.all_metrics().values()
    built_in = [s for s in specs if s.fn.__module__.startswith("logan.")]
    assert len(built_in) == 28 and all(s.description and s.origin == "built-in" for s in built_in)


def test_register_model_takes_only_complete_adapters(scratch_registry) -> None:
    class NotAnAdapter:
        pass

    class Incomplete(VLMAdapter):
        pass

    with pytest.raises(LoganError, match="not a subclass of logan.models.base.VLMAdapter"):
        register_model("test-not-an-adapter")(NotAnAdapter)
    with pytest.raises(LoganError, match="abstract methods unimplemented"):
        register_model("test-incomplete")(Incomplete)
    with pytest.raises(LoganError, match="'llava-hf' is a built-in model name"):
        register_model("llava-hf")(type("Shadow", (LlavaHF,), {}))
    register_model("test-subclass")(type("Sub", (LlavaHF,), {"__doc__": "A subclass."}))
    assert get_model_factory("test-subclass").__name__ == "Sub"
    assert "test-subclass" in model_registry.available_models()


# ---- plugins that do not load -------------------------------------------------------------------------


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_registry) -> str:
    """An installed distribution (its metadata on sys.path) whose model and metric entry points fail to
    import; the registries forget it afterwards."""
    info = tmp_path / "logan_broken-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: logan-broken\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [logan.models]
        broken-vlm = logan_broken_missing.adapter:Adapter
        llava-hf = logan_broken_missing.adapter:Adapter

        [logan.metrics]
        broken = logan_broken_missing.metrics
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model_registry.plugin_models.cache_clear()
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_PLUGIN_FAILURES", [])
    yield "logan-broken 2.0"
    model_registry.plugin_models.cache_clear()


def test_a_broken_model_plugin_is_one_clear_error_when_used(broken_plugins, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        names = model_registry.available_models()
    assert "broken-vlm" in names and "ignoring entry point logan.models 'llava-hf" in caplog.text
    with pytest.raises(LoganError) as error:
        get_model_factory("broken-vlm")
    message = str(error.value)
    assert "'broken-vlm = logan_broken_missing.adapter:Adapter'" in message and broken_plugins in message
    assert "ModuleNotFoundError" in message and "\n" not in message
    assert get_model_factory("llava-hf") is LlavaHF  # the built-in name wins


def test_listing_survives_broken_plugins(broken_plugins, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        models = listing.main(["models"])
        metrics = listing.main(["metrics"])
    rows = {line.split()[0]: line for line in models.splitlines()}
    assert listing.BROKEN in rows["broken-vlm"] and broken_plugins in rows["broken-vlm"]
    assert "built-in" in rows["llava-hf"] and "max_k_no_norn_kl_div" in metrics
    assert "'broken = logan_broken_missing.metrics' of logan-broken 2.0 fails to import" in caplog.text
    with pytest.raises(LoganError, match="unknown metric 'broken_metric'.*logan-broken 2.0 fails to import"):
        get_metric("broken_metric")


def test_list_names_what_it_can_list() -> None:
    with pytest.raises(LoganError, match="Did you mean 'models'"):
        listing.main(["model"])
    with pytest.raises(LoganError, match="needs what to list"):
        listing.main([])
