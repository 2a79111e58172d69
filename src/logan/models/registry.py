"""Model registry: `@register_model("name")` on an adapter class, plus one line in `_MODULES`.

Modules are imported only when their model is asked for, so `logan --help` stays instant and a
family's heavy dependencies load only when used. Adapters of other installed distributions come
through the `logan.models` entry points (`logan.plugins`): the entry point's name is the model name,
its value the adapter class, imported when that name is used or listed; a built-in name wins.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from logan import plugins
from logan.errors import LoganError, unknown

if TYPE_CHECKING:
    import torch

    from logan.config import ModelConfig
    from logan.models.base import VLMAdapter

log = logging.getLogger(__name__)

# name -> module that registers it (the one line to add for a new family)
_MODULES: dict[str, str] = {
    "llava-hf": "logan.models.llava_hf",
    "llava-next": "logan.models.llava_next",
    "llava-v1.5-7b": "logan.models.llava_original",
    "llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5": "logan.models.llava_original",
    "minigpt-4": "logan.models.minigpt4",
    "hf-vlm": "logan.models.hf_vlm",
    "auto": "logan.models.hf_vlm",
}
_REGISTERED: dict[str, type[VLMAdapter]] = {}


def adapter_problem(cls: object) -> str | None:
    """Why `cls` cannot serve as an adapter (the engine instantiates it and calls VLMAdapter's methods)."""
    from logan.models.base import VLMAdapter

    if not isinstance(cls, type) or not issubclass(cls, VLMAdapter):
        return f"{cls!r} is not a subclass of logan.models.base.VLMAdapter"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        return f"{cls.__name__} leaves VLMAdapter's abstract methods unimplemented ({missing})"
    return None


def register_model(*names: str) -> Callable[[type[VLMAdapter]], type[VLMAdapter]]:
    """Class decorator: make an adapter loadable as `target_model=<name>` (checked here, not at run time)."""
    if not names or not all(isinstance(n, str) and n and n.strip() == n for n in names):
        raise LoganError(f"register_model{names!r}: give one or more non-empty model names.")

    def wrap(cls: type[VLMAdapter]) -> type[VLMAdapter]:
        problem = adapter_problem(cls)
        taken = [n for n in names if n in _MODULES and _MODULES[n] != cls.__module__]
        if taken:
            problem = f"'{taken[0]}' is a built-in model name; register the adapter under another name"
        if problem:
            raise LoganError(f"register_model({', '.join(map(repr, names))}): {problem}.")
        for name in names:
            _REGISTERED[name] = cls
        return cls

    return wrap


@cache
def plugin_models() -> dict[str, plugins.Plugin]:
    """name -> the `logan.models` entry point that provides it (built-in names and repeats are ignored)."""
    found: dict[str, plugins.Plugin] = {}
    for plugin in plugins.find(plugins.MODELS):
        if plugin.name in _MODULES:
            log.warning("ignoring %s: '%s' is a built-in model", plugin, plugin.name)
        elif plugin.name in found:
            log.warning(
                "ignoring %s: '%s' is already provided by %s", plugin, plugin.name, found[plugin.name]
            )
        else:
            found[plugin.name] = plugin
    return found


def available_models() -> list[str]:
    """Every model name: built-in, registered in this process, or an installed plugin's (nothing imported)."""
    return sorted({*_MODULES, *_REGISTERED, *plugin_models()})


def origin(name: str) -> str:
    """Where a model name comes from: "built-in", the plugin's distribution and version, or the module
    that registered it in this process."""
    if name in _MODULES:
        return plugins.BUILT_IN
    if name in plugin_models():
        return plugin_models()[name].origin
    return f"module {_REGISTERED[name].__module__}"


def get_model_factory(name: str) -> type[VLMAdapter]:
    """The adapter class of a model name, importing its module (or its plugin) now."""
    if name in _MODULES:
        importlib.import_module(_MODULES[name])
    elif name not in _REGISTERED:
        plugin = plugin_models().get(name)
        if plugin is None:
            raise unknown("target_model", name, available_models())
        cls = plugin.load()
        problem = adapter_problem(cls)
        if problem:
            raise plugin.error(f"does not give an adapter class: {problem}")
        _REGISTERED[name] = cls
    return _REGISTERED[name]


def check_model(cfg: ModelConfig) -> None:
    """Validate the model settings (name, paths) and the checkpoint files' integrity before a run writes
    or loads anything."""
    from logan.models.checkpoint_files import check_checkpoint_files

    get_model_factory(cfg.name).check(cfg)
    check_checkpoint_files(cfg)


def load_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> VLMAdapter:
    """Instantiate the adapter named by `cfg.name` (raises a clear error for unknown names)."""
    return get_model_factory(cfg.name)(cfg, device, dtype)
