"""Names from the seed's configs whose loaders are not in this release: fail loudly, never fall back."""

from __future__ import annotations

from typing import NoReturn

from logan.errors import LoganError
from logan.models.registry import register_model

_HINT = {
}


@register_model(*_HINT)
class PlannedModel:
    """Stands for a model family whose loader has not landed yet."""

    @classmethod
    def check(cls, cfg) -> NoReturn:  # noqa: ANN001 - never returns
        raise LoganError(
            f"target_model={cfg.name} is not supported yet: its checkpoint loader is not in this release. "
            f"For now, {_HINT[cfg.name]}."
        )

    def __init__(self, cfg, device, dtype) -> NoReturn:  # noqa: ANN001 - never returns
        self.check(cfg)
