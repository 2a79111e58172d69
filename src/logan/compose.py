"""Compose a run's configuration: the typed schema, a model preset and `key=value` overrides.

The one module that touches Hydra and OmegaConf. The schema and every default are the dataclasses of
`logan.config` (stored in Hydra's ConfigStore); the YAML files in `logan/conf/target_model/` are the
model-family presets (`target_model=NAME`), and a model registered by a plugin is a preset too.

Overrides use Hydra's grammar (`group=option`, `a.b=value`, lists as `[x,y]`), with two additions:

- every key is checked against the schema first: a misspelt key is one line with a suggestion;
- keys that hold a path or free text (`path.output_dir`, `data.member_dataset`, `prompt.text`, ...)
  take their value exactly as typed: `path.output_dir=/data/café/run#1` or `prompt.text=Describe it,
  briefly.` need no quoting (a leading `~` in a path means home; `null` still means none; a value
  wrapped whole in quotes is unquoted). Inside list values Hydra's quoting applies:
  `data.reference_datasets_list=[a.json,'my list, v2.json']`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from logan.config import RunConfig, is_number, walk
from logan.errors import LoganError, did_you_mean, unknown

SCHEMA = "logan_schema"
GROUPS = ("target_model",)  # config groups with presets: `group=option`


@dataclass(frozen=True)
class Override:
    """One `key=value` argument, split."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Override:
        key, sep, value = text.partition("=")
        key = key.strip()
        if key.startswith("~"):
            raise LoganError(f"'{text}': removing keys is not supported; set the key to null instead.")
        key = key.lstrip("+")  # Hydra's "append" marker: every key exists in the schema already
        if not sep or not key:
            raise LoganError(
                f"'{text}' is not a key=value override (e.g. path.output_dir=runs/a); "
                "'logan <command> --help' lists every key."
            )
        return cls(key, value)


@functools.cache
def leaf_keys() -> dict[str, dataclasses.Field]:
    """Every dotted key of the schema and its field."""
    return {name: spec for name, _, spec in walk(RunConfig)}


@functools.cache
def _hints() -> dict[str, Any]:
    """The type hint of every dotted key."""
    out: dict[str, Any] = {}

    def visit(cls: type, prefix: str) -> None:
        for name, hint in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(hint):
                visit(hint, f"{prefix}{name}.")  # type: ignore[arg-type]
            else:
                out[f"{prefix}{name}"] = hint

    visit(RunConfig, "")
    return out


def presets(group: str = "target_model") -> list[str]:
    """The options of a config group: the packaged YAML presets and, for models, every registered name."""
    names = {p.name[:-5] for p in files("logan.conf").joinpath(group).iterdir() if p.name.endswith(".yaml")}
    if group == "target_model":
        from logan.models.registry import available_models

        names |= set(available_models())
    return sorted(names)


def check_key(key: str, fields: Mapping[str, dataclasses.Field]) -> None:
    """A dotted key must exist in the schema (any key below a free-form dict such as target_model.model)."""
    if key in fields or key in GROUPS:
        return
    if any(key.startswith(f"{name}.") and typing.get_origin(_hints()[name]) is dict for name in fields):
        return
    groups = {name.rsplit(".", 1)[0] for name in fields if "." in name}
    if key in groups:
        raise LoganError(
            f"'{key}' is a group of keys, not a key: set one of its keys, e.g. "
            f"{next(n for n in fields if n.startswith(key + '.'))}=..."
        )
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = sorted(
        n.rsplit(".", 1)[-1] for n in fields if (n.rsplit(".", 1)[0] if "." in n else "") == parent
    )
    listed = f" Keys of '{parent}': {', '.join(siblings)}." if parent in groups else ""
    raise LoganError(
        f"no key '{key}'.{did_you_mean(key, fields)}{listed} ('logan <command> --help' lists every key.)"
    )


def _unquoted(value: str) -> str:
    """A value wrapped whole in matching quotes loses them (Hydra's quoting, still accepted)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            parsed = OverridesParser.create().parse_override(f"k={value}").value()
        except Exception:  # noqa: BLE001 - not Hydra quoting after all: keep the value as typed
            return value
        if isinstance(parsed, str):
            return parsed
    return value


def _is_verbatim(key: str, value: str, fields: Mapping[str, dataclasses.Field]) -> bool:
    """Whether a value is taken as typed rather than parsed by Hydra's grammar."""
    if key not in fields or value.strip() == "null":
        return False
    if fields[key].metadata.get("verbatim"):
        return True
    if (
        _hints().get(key) is Any
    ):  # e.g. noise.std, data.reference_datasets_list: a path unless a list / number
        text = value.strip()
        return not (text.startswith("[") or is_number(text))
    return False


def _listed(item: Override, fields: Mapping[str, dataclasses.Field]) -> str:
    """A single value given to a list key is a list of one (`img_metrics.parts=img`)."""
    text = item.value.strip()
    is_list = item.key in fields and typing.get_origin(_hints()[item.key]) is list
    return (
        f"[{item.value}]" if is_list and text and not text.startswith("[") and text != "null" else item.value
    )


def _register() -> None:
    """The schema and the plugin models' presets in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name=SCHEMA, node=RunConfig)
    packaged = {
        p.name[:-5]
        for p in files("logan.conf").joinpath("target_model").iterdir()
        if p.name.endswith(".yaml")
    }
    for name in set(presets("target_model")) - packaged:
        store.store(group="target_model", name=name, node={"name": name})


def compose(overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved plain config of the schema + a preset + `overrides` (strings, as on the command line)
    + `settings` (dotted key -> Python value, applied last). Raises LoganError on any bad key or value."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = leaf_keys()
    parsed = [Override.parse(text) for text in overrides]
    for item in parsed:
        check_key(item.key, fields)
        if item.key in GROUPS and item.value not in presets(item.key):
            raise unknown(item.key, item.value, presets(item.key))
    for name in settings or {}:
        check_key(name, fields)
    verbatim = {o.key: _unquoted(o.value) for o in parsed if _is_verbatim(o.key, o.value, fields)}
    # a key below a free-form dict (target_model.model.*) may be new there: Hydra's add-or-override
    hydra_args = [
        f"{'' if o.key in fields or o.key in GROUPS else '++'}{o.key}={_listed(o, fields)}"
        for o in parsed
        if o.key not in verbatim
    ]
    _register()
    try:
        with initialize_config_module(config_module="logan.conf", version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=hydra_args)
        for name, value in verbatim.items():
            OmegaConf.update(cfg, name, value, merge=False)
        raw = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise LoganError(_one_line(exc)) from None
    assert isinstance(raw, dict)
    plain = typing.cast("dict[str, Any]", raw)  # a composed config's keys are its field names
    for name, value in (settings or {}).items():
        _set(plain, name, value)
    return plain


def explicit_keys(overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None) -> set[str]:
    """The dotted keys (and groups) a caller set, as opposed to defaults."""
    return {Override.parse(text).key for text in overrides} | set(settings or {})


def command_defaults(
    command: str, overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`settings` with the command's own defaults (`config.COMMAND_DEFAULTS`) for the keys the caller left out."""
    from logan.config import COMMAND_DEFAULTS

    given = explicit_keys(overrides, settings)
    return {
        **{k: v for k, v in COMMAND_DEFAULTS.get(command, {}).items() if k not in given},
        **(settings or {}),
    }


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node = raw
    for name in path:
        node = node.setdefault(name, {})
    node[last] = value


def _one_line(exc: Exception) -> str:
    """Hydra's / OmegaConf's multi-line message as one line that names the override and the reason."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = str(exc.__cause__).strip().splitlines()[0] if exc.__cause__ and str(exc.__cause__).strip() else ""
    if first.startswith("Error merging override "):
        return f"bad value in {first.removeprefix('Error merging override ')}: {(cause or 'not valid for this key').rstrip('.')}."
    return (
        f"bad override: {first}{'; ' + cause if cause else ''} (Hydra's override grammar: key=value, lists as "
        "[a,b]; 'logan <command> --help' lists every key)."
    )


def to_yaml(config: dict[str, Any]) -> str:
    """A plain config as YAML (what `--cfg job` prints)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config))
