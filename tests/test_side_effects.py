"""LOGAN leaves the caller's process as it found it: importing it, tuning, classifying, training.

A notebook that imports LOGAN and runs it must keep its matplotlib backend, torch's threads and random
state, torch.compile's configuration, transformers' progress bars, warnings filters, environment and
logging. Each check runs in a fresh interpreter: it records that state, does the work, records it again
and prints what differs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_llava_original import FULL, full_bin, load, settings, sp_model, tiny  # noqa: F401 - tiny checkpoints
from test_minigpt4 import files  # noqa: F401 - tiny checkpoints

from logan.models.base import EagerFallback, hf_progress_bars_off, resolve_compile
from logan.models.minigpt4 import MiniGPT4
from logan.threads import torch_threads

# Records the process-wide state a library could change. Third-party packages LOGAN uses are imported
# before the first record, so what they do when imported is not counted against LOGAN.
SNAPSHOT = r'''
import faulthandler, gc, hashlib, importlib, json, locale, logging, os, random, signal, socket, sys, threading, warnings
import matplotlib, numpy as np, pandas as pd, PIL.Image, scipy.stats, torch, tqdm, transformers
import sklearn.ensemble, sklearn.metrics, sklearn.model_selection  # sklearn.metrics draws from `random`
import torch._dynamo, torch._inductor.config
from transformers.utils import logging as hf_logging

# a first run's third-party imports, made now: what libraries do when they are first imported (warnings
# filters, loggers) is not counted against LOGAN when they are imported lazily during its run
for name in json.loads(open(os.environ["PRELOAD"]).read()) if os.environ.get("PRELOAD") else []:
    if name.split(".")[0] not in ("logan", "__main__", "__mp_main__"):
        try:
            importlib.import_module(name)
        except Exception:
            pass

HUB = importlib.import_module("huggingface_hub.utils.tqdm").progress_bar_states
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD]


def loggers():
    named = {name: obj for name, obj in logging.root.manager.loggerDict.items() if isinstance(obj, logging.Logger)}
    return {name: (obj.level, [repr(h) for h in obj.handlers], obj.propagate, obj.disabled)
            for name, obj in {"": logging.root, **named}.items()}


def snapshot():
    backends = torch.backends
    state = {
        "matplotlib backend": dict.__getitem__(matplotlib.rcParams, "backend"),
        "matplotlib rcParams": {k: repr(v) for k, v in dict.items(matplotlib.rcParams)},
        "pyplot imported": "matplotlib.pyplot" in sys.modules,
        "torch threads": (torch.get_num_threads(), torch.get_num_interop_threads()),
        "torch rng": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
        "torch flags": (torch.get_default_dtype(), torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                        torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision(),
                        backends.cudnn.benchmark, backends.cudnn.deterministic, backends.cudnn.allow_tf32,
                        backends.cuda.matmul.allow_tf32, backends.mkldnn.enabled,
                        backends.cuda.flash_sdp_enabled(), backends.cuda.mem_efficient_sdp_enabled()),
        "dynamo config": {k: repr(v) for k, v in torch._dynamo.config.get_config_copy().items()},
        "inductor config": {k: repr(v) for k, v in torch._inductor.config.get_config_copy().items()},
        "transformers": (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), dict(HUB)),
        "warnings filters": [repr(f) for f in warnings.filters],
        "environment": dict(os.environ),
        "cwd": os.getcwd(),
        "loggers": loggers(),
        "logging disabled": logging.root.manager.disable,
        "numpy": (np.geterr(), np.get_printoptions(), hashlib.sha256(repr(np.random.get_state()).encode()).hexdigest()),
        "python random": hashlib.sha256(repr(random.getstate()).encode()).hexdigest(),
        "pandas": {k: pd.get_option(k) for k in ("display.max_rows", "display.max_columns", "display.width")},
        "sys": (sys.getrecursionlimit(), sys.excepthook, threading.excepthook, sys.stdout, sys.stderr, list(sys.path),
                sys.getswitchinterval()),
        "signals": [signal.getsignal(s) for s in SIGNALS],
        "gc": (gc.isenabled(), gc.get_threshold()),
        "faulthandler": faulthandler.is_enabled(),
        "socket timeout": socket.getdefaulttimeout(),
        "locale": locale.setlocale(locale.LC_ALL),
        "threads": sorted(t.name for t in threading.enumerate() if t.name != "tqdm_monitor"),
    }
    return json.loads(json.dumps(state, default=repr))


def differences(before, after):
    out = {}
    for key in before:
        if key == "loggers":  # new loggers: LOGAN's pass records on unchanged; a library imported late has its own
            changed = {n: v for n, v in after[key].items() if n in before[key] and before[key][n] != v}
            changed.update({n: v for n, v in after[key].items() if n not in before[key]
                            and n.split(".")[0] == "logan" and v != [0, [], True, False]})
            if changed:
                out[key] = changed
        elif isinstance(before[key], dict) and isinstance(after[key], dict):
            pairs = {k: [before[key].get(k), after[key].get(k)] for k in set(before[key]) | set(after[key])}
            changed = {k: pair for k, pair in pairs.items() if pair[0] != pair[1]}
            if changed:
                out[key] = changed
        elif isinstance(before[key], list) and before[key] != after[key]:
            out[key] = {"added": [x for x in after[key] if x not in before[key]],
                        "removed": [x for x in before[key] if x not in after[key]], "order changed": True}
        elif before[key] != after[key]:
            out[key] = [before[key], after[key]]
    return out
'''


def run_checked(body: str, tmp_path: Path, preload: bool = False) -> dict:
    """Run SNAPSHOT + `body` (which sets `before` and `after`) in a fresh interpreter; what differs.

    preload: run it once first and import that run's modules (LOGAN's excepted) before the check's
    first snapshot."""
    script = tmp_path / "side_effects.py"
    script.write_text(SNAPSHOT + textwrap.dedent(body) + "\nprint('DIFF ' + json.dumps(differences(before, after)))\n"
                      "open('modules.json', 'w').write(json.dumps(list(sys.modules)))\n")
    # a backend other than LOGAN's old Agg, so that switching backends shows
    env = {**os.environ, "MPLBACKEND": "pdf", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("first", "check") if preload else ("check",):
        folder = tmp_path / name
        folder.mkdir()
        if name == "check" and preload:
            env["PRELOAD"] = str(tmp_path / "first" / "modules.json")
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=folder,
                              timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-4000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("DIFF ")][-1]
    return json.loads(line[len("DIFF "):])


def test_importing_every_logan_module_changes_nothing(tmp_path: Path) -> None:
    diff = run_checked('''
        import pkgutil, logan
        before = snapshot()
        names = [m.name for m in pkgutil.walk_packages(logan.__path__, "logan.") if m.name != "logan.__main__"]
        for name in names:
            importlib.import_module(name)
        assert len(names) > 30 and "logan.report.plots" in sys.modules
        after = snapshot()
    ''', tmp_path)
    assert diff == {}


def test_tune_classify_and_training_leave_the_process_as_they_found_it(world, tmp_path: Path) -> None:
    model = world.model
    diff = run_checked(f'''
        import shutil
        from pathlib import Path
        import logan
        from logan.data.synthetic import vocabulary
        from logan.models.tiny import TinySpec, build_tiny_llava
        from logan.models.train import train_captioner

        # a user's own settings, which must survive
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))
        warnings.filterwarnings("ignore", message="a user filter")
        torch.manual_seed(1234)
        before = snapshot()
        out = Path("runs")
        tuned = logan.tune(model_path={str(model)!r}, members={str(world.members)!r},
                           nonmembers={str(world.nonmembers)!r}, parts=["img", "desp", "caption"],
                           std_sets=[[0.0, 2.0, 20.0]], batch_size=4, target_set_size=16,
                           output_dir=out / "tune", **{{"generation.num_gen_tokens": 4}})
        result = logan.classify(std=str(tuned.output_dir / "optimal_std.json"), output_dir=out / "classify")
        assert (out / "tune" / "tuning_curve.png").exists() and len(result.metrics)
        # the demo's model building and training step
        tiny = build_tiny_llava(out / "tiny", vocabulary(), TinySpec(image_size=32, hidden=32), seed=0)
        members = json.loads(Path({str(world.members)!r}).read_text())[:4]
        train_captioner(tiny, [(e["image"], e["caption"]) for e in members], "Describe this image.",
                        epochs=2, learning_rate=1e-3, batch_size=2, seed=0)
        after = snapshot()
    ''', tmp_path, preload=True)
    assert diff == {}


def test_loading_the_other_families_keeps_torch_random_state(files, tiny, full_bin) -> None:  # noqa: F811
    """llava-hf is loaded above; the families that build their modules before reading the checkpoint must
    not draw their discarded initial values from the caller's random state."""
    before = torch.get_rng_state()
    for variant in ("pretrain_llama2", "pretrain_vicuna0"):
        MiniGPT4(files.cfg(variant), torch.device("cpu"), torch.float32)
    load(settings(FULL, model_path=str(full_bin), vision_tower=str(tiny.clip_dir)))
    assert torch.equal(torch.get_rng_state(), before)


def test_torch_threads_are_set_for_the_block_and_restored() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="inside"), torch_threads(other):
        raise ValueError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_a_failed_compilation_runs_eagerly_without_changing_dynamo_config(caplog) -> None:
    import torch._dynamo

    def no_compiler(graph, inputs):
        raise RuntimeError("no C++ compiler here")

    def sine(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) + 1

    def cosine(x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x) + 1

    suppress = torch._dynamo.config.suppress_errors
    assert resolve_compile("auto", torch.device("cuda")) is True  # deciding to compile changes nothing
    fallback = EagerFallback("a test function")
    first, second = (fallback.compile(fn, backend=no_compiler) for fn in (sine, cosine))
    x = torch.linspace(-1, 1, 8)
    with caplog.at_level(logging.WARNING, logger="logan.models.base"):
        assert torch.equal(first(x), sine(x))
        assert torch.equal(second(x), cosine(x))  # compiled together: eager too, without another try
    assert fallback.failed
    warned = ("torch.compile failed for a test function (RuntimeError: no C++ compiler here); running eagerly "
              "from now on (inference.compile=false skips the attempt)")
    assert [r.getMessage() for r in caplog.records if "eagerly" in r.getMessage()] == [warned]
    assert torch._dynamo.config.suppress_errors == suppress
    working = EagerFallback("a working function")
    assert torch.equal(working.compile(sine, backend="eager")(x), sine(x)) and not working.failed


def test_checkpoint_loading_keeps_the_callers_progress_bar_settings() -> None:
    import importlib

    from transformers.utils import logging as hf_logging

    hub = importlib.import_module("huggingface_hub.utils.tqdm").progress_bar_states
    was, states = hf_logging.is_progress_bar_enabled(), dict(hub)
    try:
        for enabled in (True, False):
            (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
            hub["some.group"] = not enabled
            expected = dict(hub)
            with hf_progress_bars_off():
                assert not hf_logging.is_progress_bar_enabled()
            assert hf_logging.is_progress_bar_enabled() is enabled and dict(hub) == expected
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
        hub.clear()
        hub.update(states)


def test_opening_a_dataset_keeps_the_callers_datasets_progress_bar_setting() -> None:
    import datasets

    from logan.data.sources import datasets_bars_off

    was = not datasets.are_progress_bars_disabled()
    try:
        for enabled in (True, False):
            (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
            with datasets_bars_off():
                assert datasets.are_progress_bars_disabled()
            assert datasets.are_progress_bars_disabled() is not enabled
    finally:
        (datasets.enable_progress_bars if was else datasets.disable_progress_bars)()
