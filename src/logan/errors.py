"""User-facing errors: one line that names the problem and the fix, exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LoganError(Exception):
    """An input or configuration problem the user can fix; printed as one line, exit code 2."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ' Did you mean X?' hint for an unknown name, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> LoganError:
    """Build the error for an unknown registry name, with a suggestion and the valid names."""
    choices = sorted(choices)
    return LoganError(
        f"unknown {kind} '{name}'.{did_you_mean(name, choices)} Valid names: {', '.join(choices)}."
    )


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2 images': a number with its noun in the right grammatical number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
