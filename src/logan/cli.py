"""`logan <command> [key=value ...]`: the command line, a thin layer over `logan.api`.

Results (tables, the selected std, file paths) go to stdout, logs to stderr. Exit codes: 0 done;
1 an unexpected error (a bug: the traceback says where); 2 bad input or configuration (one line says
what to fix, and nothing half-written is left); 130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

EXIT_CODES = (
    "exit codes: 0 done; 1 unexpected error (a bug: please report the traceback); 2 bad input or "
    "configuration (one line says what to fix); 130 interrupted (rerun the same command to resume)"
)
JOB_TYPES = {"hyperparam_tuning": "tune", "evaluation": "classify", "tune_and_eval": "tune"}
HELP_FLAGS = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        sys.stdout.write(usage())
        return 0
    if argv[0] == "--version":
        from logan import __version__

        sys.stdout.write(f"logan {__version__}\n")
        return 0
    try:
        command, args = _split_command(argv)
    except ValueError as exc:
        return _fail(str(exc))
    if command == "list":
        return _guarded(lambda: _list(args))
    if any(a in HELP_FLAGS for a in args):
        return _guarded(
            lambda: sys.stdout.write(command_help(command, [a for a in args if a not in HELP_FLAGS]))
        )
    if "--cfg" in args:
        return _guarded(lambda: _print_config(command, args))
    _setup_logging()
    return _guarded(lambda: _run(command, args))


def _run(command: str, args: list[str]) -> None:
    from logan import api

    result = api.run(command, args)
    if result is not None:
        sys.stdout.write(result.summary().rstrip() + "\n")


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command word (or the original's `job_meta_params.job_type=...`) and the rest."""
    from logan.api import COMMANDS
    from logan.errors import did_you_mean

    command, args = (
        (argv[0], argv[1:]) if "=" not in argv[0] and not argv[0].startswith("-") else (None, argv)
    )
    for arg in args:
        if arg.startswith("job_meta_params.job_type="):
            job = arg.split("=", 1)[1].strip().lower()
            if job not in JOB_TYPES:
                raise ValueError(
                    f"job_meta_params.job_type={job} is unknown; use one of {', '.join(JOB_TYPES)}."
                )
            if command is not None and command != JOB_TYPES[job]:
                raise ValueError(
                    f"'logan {command}' with job_meta_params.job_type={job} (= logan {JOB_TYPES[job]}) "
                    "contradict each other: give one of them."
                )
            command = JOB_TYPES[job]
    if command is None:
        raise ValueError("no command given: 'logan --help' lists them (e.g. logan tune key=value ...).")
    if command not in (*COMMANDS, "list"):
        raise ValueError(
            f"unknown command '{command}'.{did_you_mean(command, [*COMMANDS, 'list'])} "
            f"Commands: {', '.join([*COMMANDS, 'list'])}."
        )
    return command, args


def _list(args: list[str]) -> None:
    from logan.pipeline.listing import main as listing

    sys.stdout.write(listing(args).rstrip() + "\n")


def _print_config(command: str, args: list[str]) -> None:
    """`--cfg job`: the resolved configuration, without running."""
    from dataclasses import asdict

    from logan.api import configure
    from logan.compose import to_yaml
    from logan.errors import LoganError

    at = args.index("--cfg")
    if args[at + 1 : at + 2] != ["job"]:
        raise LoganError(
            "--cfg takes 'job': 'logan <command> [key=value ...] --cfg job' prints the resolved config."
        )
    overrides = args[:at] + args[at + 2 :]
    config = asdict(configure(command, overrides))
    config.pop("resolved", None)  # written by a run, not a setting
    sys.stdout.write(to_yaml(config))


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s | %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("transformers", "httpx", "huggingface_hub", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _guarded(action: Any) -> int:
    """Run `action`; bad input is one line on stderr and exit code 2."""
    from logan.errors import LoganError

    try:
        action()
    except LoganError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("logan: interrupted; rerun the same command to resume.\n")
        return 130
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":
            return _fail(
                "out of GPU memory; rerun the same command with a smaller inference.batch_size "
                "(and generation.batch_size), e.g. half the current value."
            )
        raise
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"logan: error: {' '.join(message.split())}\n")
    return 2


def usage() -> str:
    from logan.api import COMMANDS

    lines = [
        "usage: logan <command> [key=value ...]   (logan <command> --help: its keys and defaults)",
        "",
        "LOGAN: low-Gaussian-noise membership inference on vision-language models.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {spec.purpose}" for name, spec in COMMANDS.items()]
    lines += [
        f"  {'list':<10} `logan list models` / `logan list metrics`: what is available (plugins too)",
        "",
        "options: --help (-h), --version, <command> ... --cfg job (print the resolved config, do not run)",
        "",
        "examples:",
        "  logan demo",
        "  logan tune target_model.model_path=DIR data.member_dataset=M.json data.nonmember_dataset=N.json "
        "path.output_dir=runs/tune",
        "  logan classify noise.std=runs/tune/optimal_std.json path.output_dir=runs/classify",
        "  logan compare runs/classify runs/classify_other",
        "",
        EXIT_CODES,
    ]
    return "\n".join(lines) + "\n"


def command_help(command: str, overrides: list[str]) -> str:
    """`logan <command> --help`: purpose, config groups, and every key with its default and meaning."""
    from logan.api import COMMANDS
    from logan.cli_help import describe_keys

    spec = COMMANDS[command]
    name = {"prepare": " NAME", "compare": " RUN RUN ..."}.get(command, "")
    lines = [f"usage: logan {command}{name} [key=value ...] [--cfg job]", "", spec.purpose, ""]
    lines += describe_keys(command, overrides)
    return "\n".join([*lines, "", EXIT_CODES]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
