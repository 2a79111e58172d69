"""`logan <command> [key=value ...]` - the only module that touches Hydra.

Commands: tune, select, classify, demo. Overrides use Hydra's grammar (`group=option`, `a.b=value`,
lists as `[x,y]`); the config groups ship inside the package (logan/conf). The original's
`job_meta_params.job_type=hyperparam_tuning|evaluation` also selects the command.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

COMMANDS = {
    "tune": ("logan.pipeline.tune", "noise-level tuning: every std of noise.std_sets, then select"),
    "select": ("logan.pipeline.select", "optimal std of a tuning folder (path.output_dir)"),
    "classify": ("logan.pipeline.classify", "membership classification at noise.std"),
    "demo": ("logan.pipeline.demo", "train a tiny LLaVA on known members and attack it, end to end"),
    "prepare": ("logan.pipeline.prepare", "vlmia / llava-instruct / sharegpt4o download -> JSON lists"),
    "merge": ("logan.pipeline.merge", "merge the shards of a data-parallel run, then select / evaluate"),
}
LOADS_WEIGHTS = {"tune", "classify"}
JOB_TYPES = {"hyperparam_tuning": "tune", "evaluation": "classify", "tune_and_eval": "tune"}

USAGE = "usage: logan <command> [key=value ...]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()
) + "\n\nexamples:\n  logan demo\n  logan tune target_model.model_path=DIR data.member_dataset=M.json " \
    "data.nonmember_dataset=N.json path.output_dir=OUT\n  logan classify target_model.model_path=DIR " \
    "data.dataset=OUT/datasets/target_dataset.parquet noise.std=OUT/optimal_std.json path.output_dir=OUT2\n"

log = logging.getLogger("logan")


def _check_group_choices(overrides: list[str]) -> None:
    """`group=option` must name a config file of that group: one clear line with a suggestion if not."""
    from importlib.resources import files

    from logan.errors import unknown

    conf = files("logan.conf")
    for override in overrides:
        key, _, value = override.partition("=")
        group = conf / key.lstrip("+~")
        if "." in key or not value or not group.is_dir():
            continue
        options = [p.name[:-5] for p in group.iterdir() if p.name.endswith(".yaml")]
        if value not in options:
            raise unknown(key.lstrip("+~"), value, options)


def compose(overrides: list[str]) -> dict[str, Any]:
    """Compose the packaged config with command-line overrides; returns a resolved plain dict."""
    _check_group_choices(overrides)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="logan.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    if argv and "=" not in argv[0]:
        return argv[0], argv[1:]
    for arg in argv:
        if arg.startswith("job_meta_params.job_type="):
            job = arg.split("=", 1)[1].strip().lower()
            return JOB_TYPES.get(job, f"job_type {job}"), argv
    return None, argv


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s | %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("transformers", "httpx", "huggingface_hub", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run(command: str, overrides: list[str]) -> Any:
    """Compose, build the typed config and run one command (raises LoganError on bad input)."""
    from logan.config import RunConfig

    if command == "prepare":  # `logan prepare vlmia source=DIR ...`: the name and bare keys are prepare.*
        from logan.pipeline.prepare import prepare_overrides

        overrides = prepare_overrides(overrides)
    raw = compose(overrides)
    cfg = RunConfig.from_dict(raw)
    if command in LOADS_WEIGHTS:  # the checkpoint comes off the disk while torch imports and the data is checked
        from logan.models.readahead import read_ahead, weight_files

        read_ahead(weight_files(cfg.target_model))
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, overrides = _split_command(argv)
    if command not in COMMANDS:
        from logan.errors import did_you_mean

        sys.stderr.write(f"logan: error: unknown command '{command}'.{did_you_mean(str(command), COMMANDS)} "
                         f"Commands: {', '.join(COMMANDS)}.\n")
        return 2
    _setup_logging()
    return _guarded(command, overrides)


def _guarded(command: str, overrides: list[str]) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from logan.errors import LoganError

    try:
        run(command, overrides)
    except LoganError as exc:
        return _fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"bad override: {first}")
    except KeyboardInterrupt:
        sys.stderr.write("logan: interrupted; rerun the same command to resume.\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - out-of-memory gets a one-line hint, the rest a traceback
        if type(exc).__name__ == "OutOfMemoryError":
            return _fail("out of GPU memory; rerun the same command with a smaller inference.batch_size "
                         "(and generation.batch_size), e.g. half the current value.")
        raise
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"logan: error: {' '.join(message.split())}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
