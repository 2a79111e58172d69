"""Models: the narrow adapter interface (base.py), the registry, one file per model family."""

from logan.models.registry import available_models, load_model, register_model

__all__ = ["available_models", "load_model", "register_model"]
