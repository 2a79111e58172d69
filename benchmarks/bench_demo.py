"""Time `logan demo` end to end on this machine and print a table of its stages.

    python benchmarks/bench_demo.py                       # the default demo
    python benchmarks/bench_demo.py demo.n_members=60 demo.n_nonmembers=60 demo.epochs=150

Each run uses a fresh temporary output folder (nothing cached), the installed `logan` console script,
and reports wall-clock seconds per stage (from OUT/demo_summary.json) and in all.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(overrides: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        started = time.time()
        result = subprocess.run(["logan", "demo", f"path.output_dir={out}", *overrides],
                                capture_output=True, text=True)
        wall = time.time() - started
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-4000:])
            return result.returncode
        summary = json.loads((out / "demo_summary.json").read_text())
    import torch

    rows = [*summary["stages"].items(), ("total inside the demo", summary["seconds"]),
            ("wall clock incl. start-up", round(wall, 1))]
    width = max(len(name) for name, _ in rows)
    lines = [f"logan demo {' '.join(overrides) or '(defaults)'}",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads",
             f"{'stage':<{width}}  seconds", f"{'-' * width}  -------"]
    lines += [f"{name:<{width}}  {seconds:7.1f}" for name, seconds in rows]
    lines.append(f"optimal std: {summary['optimal_std']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
