"""How many CPU threads torch uses for LOGAN's own work (`inference.threads`), only while a call runs.

torch's intra-op thread count is one setting for the whole process. LOGAN leaves it as the caller has
it unless asked: `torch_threads(n)` sets it to n when a command starts and puts the caller's count
back when the command returns or fails, so a notebook finds torch as it left it.

Why ask: torch's OpenMP threads wait for each other by spinning between operations. Beside other busy
processes on the same cores, a waiting thread burns the share of the cores its process is given, and
a thread that is not running holds up the others at every operation; on small models that is most of
the time (`benchmarks/README.md`, "The demo beside other busy processes": 3-4x the CPU time and wall
time at 2 threads on 2 shared cores). One thread has nobody to wait for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` while the block runs, then the caller's count again;
    0 or None leaves them alone (torch is not even imported then)."""
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
