"""Fault injection for crash-safety tests: `LOGAN_FAULT=<point>:<n>` SIGKILLs the process at the n-th
time it reaches `<point>` (e.g. `batch:3`, `std_finish:1`, `combine:1`, `json:2`, `model_loaded:1`, `describe:1`).

Unset (always, outside the tests), every call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("LOGAN_FAULT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
