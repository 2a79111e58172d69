"""LOGAN's CPU work alone and beside other busy processes: wall time, CPU time, the fair-share expectation.

    python benchmarks/bench_contention.py                    # a reduced demo, torch threads as they are vs 1
    python benchmarks/bench_contention.py --workload tune --hogs 2 --repeats 5
    python benchmarks/bench_contention.py --variant "" --variant "inference.threads=1 inference.prefetch=0"

Each run is `python -m logan <command> ...` in a fresh output folder, started in its own session, as if
typed in its own terminal (with the kernel's autogroup scheduling, Linux shares the cores between
sessions first), alone or beside N hogs (`python -c` loops, each in its own session, that end with
this script). Alone and beside runs alternate, so background load falls on both. Per variant (extra
overrides for every run) the table shows the medians of the wall time alone and beside the hogs, their
ratio, the ratio fair sharing predicts, and the CPU time the run used: a run whose CPU time grows
beside the hogs spends it waiting (spinning), not working.

Fair share: alone the run keeps u = CPU time / wall time cores busy; beside N hogs on C cores, with
the cores shared equally between the N + 1 sessions, it gets C / (N + 1) of them, so the expected
ratio is max(1, u (N + 1) / C).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# a hog: pure-Python CPU work that stops when this script is gone (its parent changes)
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(10**6): pass"
DEMO = ["demo.n_members=32", "demo.n_nonmembers=32", "demo.epochs=20", "demo.std_sets=[[1.0,8.0,64.0,512.0]]"]
TUNE_STDS = "noise.std_sets=[[0.5,2.0,8.0,32.0,128.0,512.0]]"
DEFAULT_VARIANTS = ["inference.threads=0", "inference.threads=1"]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}


@dataclass
class Run:
    wall: float
    cpu: float
    load: float  # 1-minute load average when the run started


def workload(kind: str, prepared: Path, out: Path) -> list[str]:
    """The command line of one run (without the variant's overrides)."""
    if kind == "demo":
        return ["demo", *DEMO, f"path.output_dir={out}"]
    data, model = prepared / "data", prepared / "model"
    return ["tune", "target_model=llava-hf", f"target_model.model_path={model}",
            f"data.member_dataset={data / 'members.json'}", f"data.nonmember_dataset={data / 'nonmembers.json'}",
            "data.target_set_size=64", "data.n_nm_ratio=0.5", "data.reference_set_size=32",
            f"data.reference_datasets_list=[{data / 'reference.json'}]",
            "img_metrics.parts=[img,inst,desp,inst_desp,caption]", "inference.batch_size=32",
            "generation.batch_size=32", TUNE_STDS, f"path.output_dir={out}"]


def prepare(kind: str, folder: Path) -> None:
    """The tune workload's data and trained tiny LLaVA, made once, as the demo makes them."""
    if kind != "tune":
        return
    from logan.api import configure
    from logan.pipeline.demo import make_data, make_models

    cfg = configure("demo", [*DEMO, f"path.output_dir={folder}"])
    make_models(cfg, folder, make_data(cfg, folder / "data"))


def timed(args: list[str], log: Path) -> Run:
    """One `python -m logan` run in its own session: wall time, CPU time (user + system, all threads)."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, "-m", "logan", *args], env={**os.environ, **ENV},
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        sys.stderr.write(log.read_text()[-3000:])
        raise SystemExit(f"logan {args[0]} failed (status {status}); its log is above")
    return Run(wall, usage.ru_utime + usage.ru_stime, load)


def beside(hogs: int, args: list[str], log: Path) -> Run:
    """`timed(args)` with `hogs` busy processes running beside it."""
    running = [subprocess.Popen([sys.executable, "-c", HOG], start_new_session=True) for _ in range(hogs)]
    try:
        return timed(args, log)
    finally:
        for hog in running:
            hog.kill()
            hog.wait()


def table(results: dict[str, dict[int, list[Run]]], hogs: int, cores: int) -> list[str]:
    header = (f"{'variant':<40} {'alone s':>8} {f'+{hogs} hogs s':>10} {'ratio':>6} {'fair':>5} "
              f"{'CPU s alone':>11} {f'CPU s +{hogs}':>9}")
    rows = [header]
    for name, by in results.items():
        alone, busy = (statistics.median(r.wall for r in by[n]) for n in (0, hogs))
        cpu_alone, cpu_busy = (statistics.median(r.cpu for r in by[n]) for n in (0, hogs))
        fair = max(1.0, cpu_alone / alone * (hogs + 1) / cores)
        rows.append(f"{name or '(defaults)':<40} {alone:8.1f} {busy:10.1f} {busy / alone:6.2f} {fair:5.2f} "
                    f"{cpu_alone:11.1f} {cpu_busy:9.1f}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("demo", "tune"), default="demo")
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", help=(
        f"overrides added to every run of this variant (repeatable; default: {' and '.join(DEFAULT_VARIANTS)})"))
    opts = parser.parse_args()
    variants = opts.variant if opts.variant is not None else DEFAULT_VARIANTS
    cores = len(os.sched_getaffinity(0))
    results: dict[str, dict[int, list[Run]]] = {v: {0: [], opts.hogs: []} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(opts.workload, root / "prepared")
        for repeat in range(opts.repeats):
            for variant in variants:
                for hogs in (0, opts.hogs):
                    out = root / f"run_{repeat}_{variants.index(variant)}_{hogs}"
                    args = workload(opts.workload, root / "prepared", out) + shlex.split(variant)
                    run = beside(hogs, args, root / f"{out.name}.log")
                    results[variant][hogs].append(run)
                    print(f"# {variant or '(defaults)'}, {hogs} hogs: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU, "
                          f"load {run.load:.2f} at the start", file=sys.stderr, flush=True)
    import torch

    loads = sorted(r.load for by in results.values() for runs in by.values() for r in runs)
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    machine = (f"machine: {platform.machine()}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} "
               f"threads by default), autogroup {autogroup.read_text().strip() if autogroup.exists() else 'n/a'}; "
               f"1-min load average at the runs' starts: {loads[0]:.2f} to {loads[-1]:.2f} (median "
               f"{statistics.median(loads):.2f})")
    lines = [f"logan {opts.workload}, {opts.repeats} runs per cell (medians), beside {opts.hogs} hogs", machine,
             *table(results, opts.hogs, cores)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
