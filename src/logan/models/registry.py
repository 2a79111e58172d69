"""Model registry: `@register_model("name")` on an adapter class, plus one line in `_MODULES`.

Modules are imported only when their model is asked for, so `logan --help` stays instant and a
family's heavy dependencies load only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from logan.errors import unknown

if TYPE_CHECKING:
    import torch

    from logan.config import ModelConfig
    from logan.models.base import VLMAdapter

# name -> module that registers it (the one line to add for a new family)
_MODULES: dict[str, str] = {
    "llava-hf": "logan.models.llava_hf",
    "llava-next": "logan.models.llava_next",
    "llava-v1.5-7b": "logan.models.llava_original",
    "llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5": "logan.models.llava_original",
    "minigpt-4": "logan.models.minigpt4",
}
_REGISTERED: dict[str, Callable[..., VLMAdapter]] = {}


def register_model(*names: str) -> Callable:
    """Class decorator: make an adapter loadable as `target_model=<name>`."""

    def wrap(factory: Callable) -> Callable:
        for name in names:
            _REGISTERED[name] = factory
        return factory

    return wrap


def available_models() -> list[str]:
    return sorted(_MODULES)


def get_model_factory(name: str) -> Callable[..., VLMAdapter]:
    if name not in _MODULES:
        raise unknown("target_model", name, _MODULES)
    importlib.import_module(_MODULES[name])
    return _REGISTERED[name]


def check_model(cfg: ModelConfig) -> None:
    """Validate the model settings (name, paths) before a run writes anything."""
    get_model_factory(cfg.name).check(cfg)


def load_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> VLMAdapter:
    """Instantiate the adapter named by `cfg.name` (raises a clear error for unknown names)."""
    return get_model_factory(cfg.name)(cfg, device, dtype)
