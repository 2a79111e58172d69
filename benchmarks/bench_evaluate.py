"""Evaluation next to scoring: one `logan classify` process timed from start to exit, by phase.

    python benchmarks/bench_evaluate.py                                   # CPU: tiny LLaVA, 300 images x 16 stds
    python benchmarks/bench_evaluate.py --src before=/tmp/before/src --src after=src   # two source trees
    python benchmarks/bench_evaluate.py --device cuda --model llava-7b    # GPU: LLaVA-1.5-7B's shape

Builds a model and a labelled target set once (not timed), then for every source tree (`--src
LABEL=DIR`, put first on PYTHONPATH of the timed process; default: the tree this script runs from)
and every part setting (`--parts img,default`: the image part alone, then the default four parts; 18
metrics x 12 K each) runs `logan classify` at `--stds` noise levels on a fresh output folder and
reports seconds per phase: start-up (Python, imports, data checks), loading the model, descriptions and
inputs, scoring (every forward, the divergences, the Parquet writing), and the evaluation after it —
metrics with their bootstrap intervals, plots, report.html, and the rest (reading the scores, the
model-free baseline, scores.parquet and the other files). The phases are timed inside the process by
wrapping the pipeline's own functions, looked up by name, so an older tree is timed the same way.

`tiny` is the demo's tiny LLaVA (untrained) on the demo's synthetic scenes; `llava-7b` and `small`
are bench_tune.py's random-weight checkpoints on 640 x 480 JPEGs (see its docstring). Prints a table;
`--json FILE` saves the numbers. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# functions whose time is a phase: (module, name) -> phase; a phase timed twice in a run adds up
PHASES = {
    ("logan.pipeline.classify", "open_model"): "load model",
    ("logan.pipeline.classify", "work_items"): "descriptions + inputs",
    ("logan.pipeline.classify", "run_stds"): "scoring (forwards, metrics, writing)",
    ("logan.pipeline.merge", "evaluate"): "evaluation, in all",
    ("logan.report.evaluate", "metric_rows"): "metrics + bootstrap CIs",
    ("logan.report.evaluate", "roc_curves"): "plots",
    ("logan.report.evaluate", "score_histograms"): "plots",
    ("logan.report.evaluate", "write_report"): "report.html",
}
EVALUATION_PARTS = ("metrics + bootstrap CIs", "plots", "report.html")


# ------------------------------------------------------------------------------ the timed process

def child(timings_file: Path, argv: list[str]) -> int:
    """Run `logan` with `argv` in this process, every phase function wrapped by a timer."""
    import importlib

    spent: dict[str, float] = {}

    def timed(phase: str, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - started
        return wrapper

    for (module, name), phase in PHASES.items():
        loaded = importlib.import_module(module)
        if hasattr(loaded, name):
            setattr(loaded, name, timed(phase, getattr(loaded, name)))
    from logan.cli import main

    code = main(argv)
    timings_file.write_text(json.dumps(spent))
    return code


# ----------------------------------------------------------------------------------------- setup

def tiny_setup(work: Path, n_images: int) -> tuple[list[str], dict[str, str]]:
    """The demo's untrained tiny LLaVA and its scenes: (model overrides, member / non-member lists)."""
    from logan.data.synthetic import make_split, vocabulary
    from logan.models.tiny import TinySpec, build_tiny_llava

    half = n_images // 2
    lists = make_split(work / "data", {"members": half, "nonmembers": n_images - half}, size=64, seed=0)
    model = work / "tiny"
    if not (model / "logan_tiny.json").exists():
        captions = [e["caption"] for p in lists.values() for e in json.loads(p.read_text())]
        build_tiny_llava(model, vocabulary() + captions, TinySpec(image_size=32, hidden=96, intermediate=192), seed=0)
    return [f"target_model.model_path={model}"], {k: str(v) for k, v in lists.items()}


def checkpoint_setup(work: Path, n_images: int, model_name: str) -> tuple[list[str], dict[str, str]]:
    """bench_tune.py's random-weight checkpoint of `model_name` and its JPEG lists."""
    import torch
    from bench_tune import SHAPES, save_checkpoint, write_lists

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = SHAPES[model_name]
    save_checkpoint(work / model_name, shape, device)
    lists = write_lists(work / "data", n_images, 0)
    return ([f"target_model.model_path={work / model_name}", f"target_model.vocab_size={shape['real_vocab']}"],
            {k: str(v) for k, v in lists.items()})


def classify_args(model: list[str], lists: dict[str, str], n_images: int, stds: list[float], parts: str,
                  device: str, out: Path, extra: list[str]) -> list[str]:
    part_args = [] if parts == "default" else [f"img_metrics.parts=[{parts}]"]
    return ["classify", "target_model=llava-hf", *model, f"data.member_dataset={lists['members']}",
            f"data.nonmember_dataset={lists['nonmembers']}", f"data.target_set_size={n_images}",
            "data.n_nm_ratio=0.5", f"noise.std=[{','.join(f'{s:g}' for s in stds)}]", *part_args,
            f"device={device}", f"path.output_dir={out}", *extra]


def timed_run(src: Path, args: list[str], out: Path) -> dict:
    """One classify process on `src`: whole-process seconds and the phases measured inside it."""
    timings = out.parent / f"{out.name}.timings.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(timings), "--", *args],
                            check=False, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"logan classify failed on {src}:\n{result.stderr[-4000:]}")
    phases = json.loads(timings.read_text())
    inside = sum(v for k, v in phases.items() if k in ("load model", "descriptions + inputs",
                                                       "scoring (forwards, metrics, writing)", "evaluation, in all"))
    phases["start-up, data, checks, exit"] = wall - inside
    phases["evaluation: the rest"] = phases["evaluation, in all"] - sum(phases.get(k, 0.0) for k in EVALUATION_PARTS)
    return {"whole process": wall, **phases}


# ---------------------------------------------------------------------------------------- report

ROWS = ["whole process", "start-up, data, checks, exit", "load model", "descriptions + inputs",
        "scoring (forwards, metrics, writing)", "evaluation, in all", "metrics + bootstrap CIs", "plots",
        "report.html", "evaluation: the rest"]


def print_table(report: dict) -> None:
    runs = report["runs"]
    print(f"\n`logan classify`, {report['model']} on {report['device']}: {report['images']} images x "
          f"{len(report['stds'])} std values; {report['machine']}\n")
    print("| seconds | " + " | ".join(f"{r['parts']}, {r['src']}" for r in runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for row in ROWS:
        bold = row in ("whole process", "scoring (forwards, metrics, writing)", "evaluation, in all")
        cells = [f"{r['seconds'].get(row, float('nan')):.1f}" for r in runs]
        label = ("  " if row in (*EVALUATION_PARTS, "evaluation: the rest") else "") + row
        print(f"| {'**' + label + '**' if bold else label} | " + " | ".join(f"**{c}**" if bold else c for c in cells)
              + " |")
    ratio = [r["seconds"]["evaluation, in all"] / r["seconds"]["scoring (forwards, metrics, writing)"] for r in runs]
    print("| evaluation / scoring | " + " | ".join(f"{x:.2f}" for x in ratio) + " |")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(Path(argv[1]), argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny", "small", "llava-7b"], default=None,
                   help="default: llava-7b with --device cuda, else tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--images", type=int, default=300, help="target set size (half members)")
    p.add_argument("--stds", type=int, default=16, help="std values, spread over the default grid")
    p.add_argument("--parts", default="img,default", help="comma list of settings: a part name, or 'default'")
    p.add_argument("--src", action="append", default=None, metavar="LABEL=DIR",
                   help="a source tree to time (repeatable); default: this checkout's src")
    p.add_argument("--work", default=None, help="folder for the model, images and runs (kept; reused)")
    p.add_argument("--json", default=None)
    p.add_argument("extra", nargs="*", help="more overrides for logan classify")
    args = p.parse_args(argv)

    from bench_engine import DEFAULT_STDS

    model_name = args.model or ("llava-7b" if args.device == "cuda" else "tiny")
    stds = DEFAULT_STDS[:: max(1, len(DEFAULT_STDS) // args.stds)][: args.stds]
    trees = [tuple(s.split("=", 1)) for s in args.src] if args.src else [("this tree", str(HERE.parent / "src"))]
    work = Path(args.work or tempfile.mkdtemp(prefix="logan-bench-evaluate-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = tiny_setup if model_name == "tiny" else lambda w, n: checkpoint_setup(w, n, model_name)
    model, lists = setup(work, args.images)
    import torch

    report: dict = {"command": " ".join(["bench_evaluate.py", *argv]), "model": model_name,
                    "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                    "images": args.images, "stds": stds, "torch": torch.__version__,
                    "python": platform.python_version(), "runs": [],
                    "machine": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                               f"torch {torch.__version__}, Python {platform.python_version()}"}
    for parts in args.parts.split(","):
        for label, src in trees:
            out = work / f"run_{parts}_{label.replace(' ', '_')}_{int(time.time())}"
            seconds = timed_run(Path(src).resolve(), classify_args(model, lists, args.images, stds, parts, args.device,
                                                                   out, args.extra), out)
            report["runs"].append({"parts": parts, "src": label, "seconds": seconds})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main(sys.argv[1:]))
