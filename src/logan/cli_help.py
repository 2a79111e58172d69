"""`logan <command> --help`: the command's config groups and keys, generated from the typed schema.

Every key is listed with its default (as composed, so `logan tune target_model=minigpt-4 --help` shows
that preset's values) and the one-line `help` of its field in `logan.config`; keys kept only for the
original's scripts are listed apart.
"""

from __future__ import annotations

from typing import Any

# the keys each command reads (prefixes of dotted keys)
COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "tune": (
        "path.",
        "target_model.",
        "data.",
        "noise.std_sets",
        "noise.quantize",
        "noise.space",
        "noise.draws",
        "img_metrics.",
        "prompt.",
        "generation.",
        "inference.",
        "selection.",
        "job_meta_params.",
        "seed",
        "device",
        "dtype",
        "tracking",
    ),
    "select": (
        "path.output_dir",
        "selection.",
        "img_metrics.parts",
        "img_metrics.metrics_to_use",
        "img_metrics.ratio",
        "tracking",
    ),
    "classify": (
        "path.",
        "target_model.",
        "data.dataset",
        "data.member_dataset",
        "data.nonmember_dataset",
        "data.target_set_size",
        "data.n_nm_ratio",
        "data.reference_",
        "data.shard_id",
        "data.num_shards",
        "noise.",
        "img_metrics.",
        "prompt.",
        "generation.",
        "inference.",
        "selection.k",
        "verdict.",
        "report.",
        "job_meta_params.",
        "seed",
        "device",
        "dtype",
        "tracking",
    ),
    "demo": (
        "path.output_dir",
        "demo.",
        "noise.std_sets",
        "noise.quantize",
        "img_metrics.",
        "prompt.",
        "selection.",
        "report.",
        "seed",
        "device",
        "dtype",
        "tracking",
    ),
    "prepare": ("path.output_dir", "prepare."),
    "merge": ("path.output_dir",),
    "compare": ("path.output_dir", "compare."),
}
WIDTH = 46  # column of the explanations


def describe_keys(command: str, overrides: list[str]) -> list[str]:
    """The help lines for `command`: config groups, keys by group, then the original's keys."""
    from logan.api import command_overrides
    from logan.compose import command_defaults, compose, presets
    from logan.config import walk

    overrides = command_overrides(command, overrides)
    composed = compose(overrides, command_defaults(command, overrides))
    lines = []
    if any(p.startswith("target_model") for p in COMMAND_KEYS[command]):
        chosen = composed["target_model"]["name"]
        options = ", ".join(f"{p}{' (chosen)' if p == chosen else ''}" for p in presets("target_model"))
        lines += ["config groups (switch with group=option):", f"  target_model={options}", ""]
    current, legacy = None, []
    lines.append("keys (key=default, then what it means; set any as key=value):")
    for name, _, spec in _keys_of(command, walk):
        value = _lookup(composed, name)
        if spec.metadata.get("legacy"):
            legacy.append(_line(name, value, spec.metadata))
            continue
        group = name.split(".")[0] if "." in name else "(top level)"
        if group != current:
            lines.append(f" {group}")
            current = group
        lines.append(_line(name, value, spec.metadata))
    if legacy:
        lines += [
            "",
            "kept so the original's scripts run (they work as there, or are refused with a reason):",
            *legacy,
        ]
    lines += [
        "",
        "paths and text (path.*, data.*_dataset, target_model.*_path, prompt.text, ...) are taken as typed: "
        "no quoting needed; a leading ~ is home. Inside lists, quote as Hydra does: [a.json,'b,c.json'].",
    ]
    return lines


def _keys_of(command: str, walk: Any) -> list[tuple[str, Any, Any]]:
    from logan.config import RunConfig

    prefixes = COMMAND_KEYS[command]
    return [(n, v, s) for n, v, s in walk(RunConfig) if n.startswith(prefixes) or n in prefixes]


def _lookup(composed: dict[str, Any], name: str) -> Any:
    node: Any = composed
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _line(name: str, value: Any, meta: dict[str, Any]) -> str:
    entry = f"  {name}={_short(value)}"
    if len(entry) >= WIDTH:  # a long default: the explanation on the next line
        return f"{entry}\n{' ' * WIDTH}{meta.get('help', '')}"
    return f"{entry}{' ' * (WIDTH - len(entry))}{meta.get('help', '')}"


def _short(value: Any) -> str:
    """A default as it would be typed, shortened when it is a long list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        text = "[" + ",".join(_short(v) for v in value) + "]"
        flat = [v for group in value for v in (group if isinstance(group, list) else [group])]
        if len(text) <= 40:
            return text
        if flat != value:
            return f"({len(flat)} values in {len(value)} sets, {_short(flat[0])} ... {_short(flat[-1])})"
        return f"[{_short(value[0])},...,{_short(value[-1])}] ({len(value)} values)"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_short(v)}" for k, v in value.items()) + "}"
    return str(value)
