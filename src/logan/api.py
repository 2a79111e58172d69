"""LOGAN's Python API: every command as a function that returns a typed result (the CLI calls these).

    import logan

    tuned = logan.tune(model_path="/models/llava-1.5-7b-hf", members="members.json",
                       nonmembers="nonmembers.json", parts=["img"], output_dir="runs/tune")
    result = logan.classify(std=tuned.output_dir / "optimal_std.json", output_dir="runs/classify")
    result.metrics            # a DataFrame: metric, part, std, k, auc, tpr_at_1pct_fpr, ...
    result.roc("max_k_no_norn_kl_div", "img").tpr
    logan.compare(["runs/classify", "runs/other"]).table   # runs side by side

Each function takes the command line's `key=value` strings as a list (`logan.classify(["noise.std=4",
...])`) and keyword arguments: the short names in `SETTINGS` or any dotted key as `**{"data.n_nm_ratio":
0.3}` (keyword values are Python values and win over the strings). Bad input raises `LoganError` with
one line saying what to fix. Logging goes through the `logging` module as configured by the caller (the
CLI logs INFO to stderr); the run folder's logan.log records it, and the error that stops a run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logan.errors import LoganError, did_you_mean

if TYPE_CHECKING:
    from logan.config import RunConfig
    from logan.runs import ClassifyResult, CompareResult, DemoResult, PrepareResult, Result, TuneResult

# keyword argument -> dotted config key (a group name: the preset of that group)
SETTINGS: dict[str, str] = {
    "output_dir": "path.output_dir",
    "model": "target_model",
    "model_path": "target_model.model_path",
    "revision": "target_model.revision",
    "members": "data.member_dataset",
    "nonmembers": "data.nonmember_dataset",
    "dataset": "data.dataset",
    "reference": "data.reference_datasets_list",
    "target_set_size": "data.target_set_size",
    "std": "noise.std",
    "std_sets": "noise.std_sets",
    "per_part": "noise.per_part",
    "parts": "img_metrics.parts",
    "metrics": "img_metrics.metrics_to_use",
    "prompt": "prompt.text",
    "batch_size": "inference.batch_size",
    "device": "device",
    "dtype": "dtype",
    "seed": "seed",
}


@dataclass(frozen=True)
class Command:
    """A command: the module that implements it and the function there that runs it."""

    module: str
    function: str
    loads_weights: bool = False

    def run(self, cfg: RunConfig) -> Any:
        return getattr(importlib.import_module(self.module), self.function)(cfg)

    @property
    def purpose(self) -> str:
        """The first paragraph of the module's docstring (without importing it: `--help` stays instant)."""
        import ast
        from importlib.util import find_spec

        spec = find_spec(self.module)
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
        doc = (ast.get_docstring(ast.parse(source)) or "").split("\n\n")[0].replace("\n", " ")
        return doc.split("`: ", 1)[1] if doc.startswith("`logan") and "`: " in doc else doc


COMMANDS: dict[str, Command] = {
    "tune": Command("logan.pipeline.tune", "tune", loads_weights=True),
    "select": Command("logan.pipeline.select", "select"),
    "classify": Command("logan.pipeline.classify", "classify", loads_weights=True),
    "demo": Command("logan.pipeline.demo", "demo"),
    "prepare": Command("logan.pipeline.prepare", "prepare"),
    "merge": Command("logan.pipeline.merge", "merge"),
    "compare": Command("logan.pipeline.compare", "compare"),
}


def configure(
    command: str, overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None
) -> RunConfig:
    """The validated configuration `command` would run with (what `--cfg job` prints)."""
    from logan.compose import command_defaults, compose, explicit_keys
    from logan.config import RunConfig

    if command not in COMMANDS:
        raise LoganError(
            f"unknown command '{command}'.{did_you_mean(command, COMMANDS)} Commands: {', '.join(COMMANDS)}."
        )
    overrides = command_overrides(command, overrides)
    dotted = _dotted(settings or {})
    groups = {k: v for k, v in dotted.items() if k == "target_model"}
    for name, value in groups.items():
        if not isinstance(value, str):
            raise LoganError(f"{name} names a preset: give its name as a string, e.g. model='llava-hf'.")
        overrides.insert(0, f"{name}={value}")
        del dotted[name]
    explicit = explicit_keys(overrides, dotted)
    cfg = RunConfig.from_dict(compose(overrides, command_defaults(command, overrides, dotted)))
    if command == "classify":
        from logan.pipeline.classify import inherit_tuning

        cfg = inherit_tuning(cfg, explicit)
    elif command == "select":
        from logan.pipeline.select import inherit_selection

        cfg = inherit_selection(cfg, explicit)
    return cfg


def command_overrides(command: str, overrides: Sequence[str]) -> list[str]:
    """A command's arguments as overrides: `prepare NAME source=DIR ...` names its converter and takes its
    own keys bare (they become prepare.*); `compare RUN RUN ...` takes its run folders bare (compare.runs)."""
    if command == "prepare":
        from logan.pipeline.prepare import prepare_overrides

        return prepare_overrides(list(overrides))
    if command == "compare":
        from logan.pipeline.compare import compare_overrides

        return compare_overrides(list(overrides))
    return list(overrides)


def run(
    command: str, overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None
) -> Result | None:
    """Run one command; returns its result read back from the run folder (None for a data-parallel shard
    that leaves the merge to another process)."""
    from logan.distributed import quiet_other_ranks, shard_info
    from logan.io import check_writable
    from logan.report.tracking import check_tracking
    from logan.runlog import run_log
    from logan.runs import load_run
    from logan.threads import torch_threads

    cfg = configure(command, overrides, settings)
    check_tracking(cfg.tracking)  # a tracker asked for but not installed stops here, before any work
    check_writable(cfg.output_dir)
    if command == "compare":  # before its log opens in a folder that might be a run's
        from logan.pipeline.compare import check_output

        check_output(cfg)
    spec = COMMANDS[command]
    if spec.loads_weights:  # the checkpoint comes off the disk while torch imports and the data is checked
        from logan.models.hub import local_model
        from logan.models.readahead import read_ahead, weight_files

        read_ahead(
            weight_files(local_model(cfg))
        )  # Hub ids resolved (commit recorded) before anything is written
    with (
        run_log(_log_folder(cfg, command)),
        torch_threads(cfg.inference.threads),
        quiet_other_ranks(shard_info(cfg.data)),
    ):
        returned = spec.run(cfg)
    if returned is None:
        return None
    return load_run(cfg.output_dir)


def _log_folder(cfg: RunConfig, command: str) -> Path:
    """Where this process's logan.log goes: its shard's folder in a data-parallel run."""
    if command in ("tune", "classify"):
        from logan.distributed import shard_info

        return shard_info(cfg.data).folder(cfg.output_dir)
    return cfg.output_dir


def _dotted(settings: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in settings.items():
        if "." in name or name in ("seed", "device", "dtype", "tracking"):
            out[name] = value
        elif name in SETTINGS:
            out[SETTINGS[name]] = value
        else:
            raise TypeError(
                f"unknown setting '{name}'.{did_you_mean(name, SETTINGS)} Settings: "
                f"{', '.join(SETTINGS)}, or any dotted key as **{{'data.n_nm_ratio': 0.3}}."
            )
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def _typed(command: str) -> Callable[..., Any]:
    def call(overrides: Sequence[str] = (), /, **settings: Any) -> Any:
        if isinstance(overrides, str):
            raise TypeError(f"logan.{command}() takes a list of 'key=value' strings, e.g. [{overrides!r}].")
        return run(command, overrides, settings)

    return call


def tune(overrides: Sequence[str] = (), /, **settings: Any) -> TuneResult | None:
    """Noise-level tuning: every std of noise.std_sets on the target and reference sets, then the optimal std."""
    return _typed("tune")(overrides, **settings)


def select(overrides: Sequence[str] = (), /, **settings: Any) -> TuneResult:
    """The optimal std of a tuning folder (output_dir=), by selection.rule / metric / part / k."""
    return _typed("select")(overrides, **settings)


def classify(overrides: Sequence[str] = (), /, **settings: Any) -> ClassifyResult | None:
    """Membership classification at noise.std (a number, a list, or a tuning run's optimal_std.json)."""
    return _typed("classify")(overrides, **settings)


def demo(overrides: Sequence[str] = (), /, **settings: Any) -> DemoResult:
    """Train a tiny LLaVA on known members and attack it end to end (a few minutes on a CPU)."""
    return _typed("demo")(overrides, **settings)


def prepare(name: str, overrides: Sequence[str] = (), /, **settings: Any) -> PrepareResult:
    """Convert a downloaded dataset (vlmia, llava-instruct, sharegpt4o) to LOGAN's JSON lists."""
    from logan.pipeline.prepare import PREPARE_KEYS

    settings = {f"prepare.{k}" if k in PREPARE_KEYS else k: v for k, v in settings.items()}
    return _typed("prepare")([name, *overrides], **settings)


def compare(runs: Sequence[str | Path], overrides: Sequence[str] = (), /, **settings: Any) -> CompareResult:
    """Finished runs side by side (tune, select, classify or demo folders): `.table` (a DataFrame: run, part,
    metric, std, k, auc, tpr_at_*), `.tuning`, `.wide()`, the ROC overlay; written to output_dir (default
    outputs/compare)."""
    if isinstance(runs, (str, Path)):
        raise TypeError(f"logan.compare() takes a list of run folders, e.g. [{str(runs)!r}, ...].")
    return _typed("compare")(overrides, **{"compare.runs": [str(run) for run in runs], **settings})


def merge(overrides: Sequence[str] = (), /, **settings: Any) -> Result:
    """Merge the shards of a data-parallel run (output_dir=) and finish it."""
    return _typed("merge")(overrides, **settings)
