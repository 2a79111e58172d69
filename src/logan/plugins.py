"""Plugins: model adapters and metrics from other installed distributions, found through entry points.

A distribution declares them in its pyproject.toml:

    [project.entry-points."logan.models"]
    my-vlm = "my_package.adapter:MyAdapter"     # target_model.name=my-vlm; a VLMAdapter subclass

    [project.entry-points."logan.metrics"]
    my-family = "my_package.metrics"            # a module whose import runs @register_metric

Entry points are read from the installed metadata (no plugin code runs) and a plugin is imported only
when one of its names is used or listed. Built-in names win over a plugin's. A plugin that fails to
import becomes one LoganError line naming its distribution and entry point.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from logan.errors import LoganError

MODELS = "logan.models"
METRICS = "logan.metrics"
BUILT_IN = "built-in"


@dataclass(frozen=True)
class Plugin:
    """One entry point of a plugin distribution."""

    entry_point: EntryPoint

    @property
    def name(self) -> str:
        return self.entry_point.name

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return dist.metadata["Name"] if dist is not None else "an unknown distribution"

    @property
    def origin(self) -> str:
        """The distribution's name and version, as listings show where a name comes from."""
        dist = self.entry_point.dist
        return f"{self.distribution} {dist.version}" if dist is not None else self.distribution

    def __str__(self) -> str:
        ep = self.entry_point
        return f"entry point {ep.group} '{ep.name} = {ep.value}' of {self.origin}"

    def load(self) -> Any:
        """Import the entry point's object (a module or a class), or raise one LoganError line."""
        try:
            return self.entry_point.load()
        except Exception as exc:  # a plugin's import may fail in any way; the user needs one clear line
            raise self.error(f"fails to import ({one_line(exc)})") from exc

    def error(self, problem: str) -> LoganError:
        return LoganError(
            f"plugin {self} {problem}; fix or reinstall {self.distribution} "
            f"(or pip uninstall {self.distribution})."
        )


def find(group: str) -> list[Plugin]:
    """The installed entry points of `group` (read from metadata; nothing is imported), by name."""
    return sorted((Plugin(ep) for ep in entry_points(group=group)), key=lambda p: (p.name, p.origin))


def summary(obj: object) -> str:
    """The first line of an object's own docstring (not inherited: a subclass without one has none)."""
    doc = getattr(obj, "__doc__", None)
    lines = inspect.cleandoc(doc).splitlines() if isinstance(doc, str) else []
    return lines[0].strip() if lines else ""


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` of an exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
