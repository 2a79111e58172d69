"""`logan list models` / `logan list metrics`: what can be named in a run, and where each name comes from.

    logan list models     # every target_model name: description, built-in or plugin distribution
    logan list metrics    # every img_metrics.metrics_to_use name: needs, aggregate, orientation, origin

Plugins (`logan.plugins`) are imported here to read their descriptions; one that fails to import is
shown as such, with a warning naming its distribution, and the rest is listed as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from logan import plugins
from logan.errors import LoganError, did_you_mean
from logan.metrics.registry import all_metrics
from logan.models.registry import available_models, get_model_factory, origin

log = logging.getLogger(__name__)

BROKEN = "(does not load: see the warning)"


def main(args: list[str]) -> str:
    """The table for `logan list <args>` (args: ["models"] or ["metrics"]), as text for stdout."""
    listers = {"models": models_table, "metrics": metrics_table}
    if len(args) != 1 or args[0] not in listers:
        what = f"cannot list '{' '.join(args)}'." if args else "logan list needs what to list."
        hint = did_you_mean(args[0], listers) if len(args) == 1 else ""
        raise LoganError(f"{what}{hint} Use: logan list models, or logan list metrics.")
    return listers[args[0]]()


def models_table() -> str:
    rows = []
    for name in available_models():
        try:
            description = plugins.summary(get_model_factory(name))
        except LoganError as exc:  # a plugin that does not import: say so, list the rest
            log.warning("%s", exc)
            description = BROKEN
        rows.append((name, origin(name), description))
    return table(("model", "from", "description"), rows)


def metrics_table() -> str:
    rows = [
        (s.name, s.needs, s.aggregate, s.orientation, s.origin, s.description) for s in all_metrics().values()
    ]
    return table(("metric", "needs", "aggregate", "orientation", "from", "description"), rows)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns two spaces apart (the last one unpadded), one line per row."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join([*(str(c).ljust(w) for c, w in zip(r, widths)), str(r[-1])]) for r in (header, *rows)]
    return "\n".join(line.rstrip() for line in lines) + "\n"
