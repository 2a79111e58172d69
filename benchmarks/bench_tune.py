"""The seed's tuning run end to end: `logan tune` as a user runs it, on a checkpoint saved on disk, timed.

    python benchmarks/bench_tune.py                                   # CPU: a small LLaVA, 24 + 24 images
    python benchmarks/bench_tune.py --model llava-7b --images 300 --reference 300      # GPU: the seed's run
    python benchmarks/bench_tune.py --model llava-7b --parts default                   # + the default parts

The checkpoint is written first (not timed) in Hugging Face format: `llava-7b` is LLaVA-1.5-7B's exact
shape (CLIP ViT-L/14-336 + Llama-7B, vocabulary 32064 of which 32000 are scored) with random float16
weights, built from configs (nothing is downloaded), with the tiny word-level tokenizer of
`logan.models.tiny`; `small` is the same layout at a CPU-sized width and vocabulary (2048 rows, 2000
scored: the nine divergences over 32000 entries take ~0.5 s per (image, std) pair on 2 CPU cores).
Then one `logan tune` process runs the seed's setting: a target set of `--images` (half members), a
separate reference set of `--reference` images, the default grid (32 std values in 4 sets of 8), on
640 x 480 JPEGs, and is timed from its start to its exit: Python start-up, loading
the checkpoint, compilation, descriptions, every forward, the Parquet writing, `select` and its plots.
Stages come from the run's own log (`logan.log`). Prints a table; `--json FILE` saves the numbers.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import LLAVA_7B, make_images, random_llava_7b

SMALL = {
    **LLAVA_7B,
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "intermediate": 256,
    "vocab": 2048,
    "real_vocab": 2000,
    "image_size": 112,
    "patch": 14,
    "vision_hidden": 64,
    "vision_layers": 2,
    "vision_heads": 4,
    "vision_intermediate": 128,
}
SHAPES = {"llava-7b": LLAVA_7B, "small": SMALL}


def save_checkpoint(folder: Path, shape: dict, device: torch.device) -> float:
    """A random-weight LLaVA of `shape` saved as a llava-hf folder (float16 weights); returns seconds."""
    if (folder / "config.json").exists():
        return 0.0
    started = time.perf_counter()
    adapter = random_llava_7b(device, torch.float16, folder, shape)
    folder.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(folder)
    adapter.tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(adapter.transform.to_config(), indent=2) + "\n"
    )
    del adapter
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return time.perf_counter() - started


def write_lists(folder: Path, n_target: int, n_reference: int) -> dict[str, Path]:
    """Members, non-members (half the target set each) and a separate reference pool, as JSON lists."""
    items = make_images(folder / "images", n_target + n_reference, (640, 480))
    half = n_target // 2
    groups = {
        "members": (items[:half], 1),
        "nonmembers": (items[half:n_target], 0),
        "reference": (items[n_target:], 0),
    }
    paths = {}
    for name, (chosen, label) in groups.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps([{"image": it.image, "label": label} for it in chosen]))
    return paths


def tune_command(
    model: Path,
    vocab: int,
    lists: dict[str, Path],
    n_target: int,
    n_reference: int,
    parts: str,
    out: Path,
    extra: list[str],
) -> list[str]:
    part_args = [] if parts == "default" else [f"img_metrics.parts=[{parts}]"]
    if parts != "default":  # LOGAN's nine divergences (the default list adds the VL-MIA baselines)
        from logan.metrics.registry import all_metrics

        nine = sorted(n for n, s in all_metrics().items() if s.needs == "noise")
        part_args += [
            f"img_metrics.metrics_to_use=[{','.join(nine)}]",
            f"img_metrics.get_proc_meta_metrics=[{','.join(n + '_tkn_vals' for n in nine)}]",
        ]
    return [
        sys.executable,
        "-m",
        "logan.cli",
        "tune",
        "target_model=llava-hf",
        f"target_model.model_path={model}",
        f"target_model.vocab_size={vocab}",
        f"data.member_dataset={lists['members']}",
        f"data.nonmember_dataset={lists['nonmembers']}",
        f"data.target_set_size={n_target}",
        f"data.reference_datasets_list=[{lists['reference']}]",
        f"data.reference_set_size={n_reference}",
        *part_args,
        f"path.output_dir={out}",
        *extra,
    ]


def run_timed(command: list[str], log_file: Path) -> dict:
    """Run `command`, sampling its host RSS (and the GPU's used memory) until it exits."""
    peak = {"rss": 0, "gpu": 0}
    cuda = torch.cuda.is_available()
    base = torch.cuda.mem_get_info() if cuda else None
    started = time.perf_counter()
    with open(log_file, "w") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        watched = psutil.Process(proc.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                try:
                    tree = [watched, *watched.children(True)]
                    peak["rss"] = max(peak["rss"], sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass
                if cuda:
                    free, _ = torch.cuda.mem_get_info()
                    peak["gpu"] = max(peak["gpu"], base[0] - free)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        stop.set()
        thread.join()
    return {
        "exit": code,
        "seconds": time.perf_counter() - started,
        "host_rss_gib": peak["rss"] / 2**30,
        "gpu_used_gib": peak["gpu"] / 2**30 if cuda else None,
    }


def stages(run_log: Path, wall: float, started: float) -> dict[str, float]:
    """Seconds per stage from the run's logan.log timestamps (start = process start)."""
    stamps = []
    for line in run_log.read_text().splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)", line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append((when, match.group(2)))
    out: dict[str, float] = {}

    def first(pattern: str) -> float | None:
        return next((t for t, text in stamps if re.search(pattern, text)), None)

    begun, loaded = first(r"^target set: ") or started, first(r"^loaded ")
    probed, scored = first(r"inference.batch_size=auto:"), first(r"^tune \d+ std values: ")
    described = next(
        (
            float(m.group(1))
            for m in (re.search(r"^generated \d+ descriptions in ([\d.]+) s", text) for _, text in stamps)
            if m
        ),
        0.0,
    )
    out["start-up, data sets, checks"] = begun - started
    if loaded:
        out["load checkpoint"] = loaded - begun
    if loaded and probed:
        out["descriptions"] = described
        out["compile + batch-size probe"] = max(0.0, probed - loaded - described)
    if probed and scored:
        out["forwards, metrics, writing"] = scored - probed
    if scored:
        out["select, curves, plots, exit"] = started + wall - scored
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", choices=sorted(SHAPES), default=None, help="default: llava-7b on CUDA, else small"
    )
    p.add_argument("--images", type=int, default=None, help="target set size (default 300 GPU, 48 CPU)")
    p.add_argument("--reference", type=int, default=None, help="reference set size (default = --images)")
    p.add_argument(
        "--parts",
        default="img",
        help="'img' (LOGAN's nine divergences on the image tokens), a "
        "comma list of parts, or 'default' (the seed's parts and the 18 default metrics)",
    )
    p.add_argument("--work", default=None, help="folder for the checkpoint, images and runs (kept; reused)")
    p.add_argument(
        "--cold",
        action="store_true",
        help="drop the OS page cache before the run (root), so the "
        "checkpoint is read from disk, not from memory",
    )
    p.add_argument("--json", default=None)
    p.add_argument("extra", nargs="*", help="more overrides for logan tune, e.g. inference.compile=false")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_name = args.model or ("llava-7b" if device.type == "cuda" else "small")
    n_target = args.images or (300 if device.type == "cuda" else 48)
    n_reference = args.reference or n_target
    work = Path(args.work or tempfile.mkdtemp(prefix="logan-bench-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    import transformers

    report: dict = {
        "command": " ".join(["bench_tune.py", *argv]),
        "model": model_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "target": n_target,
        "reference": n_reference,
        "parts": args.parts,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    report["checkpoint_seconds"] = save_checkpoint(work / model_name, SHAPES[model_name], device)
    report["checkpoint_gib"] = (
        sum(f.stat().st_size for f in (work / model_name).glob("*.safetensors")) / 2**30
    )
    lists = write_lists(work / "data", n_target, n_reference)
    out = work / f"run_{args.parts.replace(',', '-')}_{int(time.time())}"
    command = tune_command(
        work / model_name,
        SHAPES[model_name]["real_vocab"],
        lists,
        n_target,
        n_reference,
        args.parts,
        out,
        args.extra,
    )
    report["tune_command"] = " ".join(command[1:])
    report["page_cache"] = "as left by writing the checkpoint"
    if args.cold:
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            report["page_cache"] = "dropped before the run (checkpoint read from disk)"
        except OSError as exc:
            report["page_cache"] = f"could not be dropped ({exc.strerror})"
    started = time.time()
    report.update(run_timed(command, work / f"{out.name}.log"))
    if report["exit"] != 0:
        sys.stderr.write((work / f"{out.name}.log").read_text()[-4000:])
        return 1
    report["stages"] = stages(out / "logan.log", report["seconds"], started)
    stds = json.loads((out / "config.json").read_text())["noise"]["std_sets"]
    report["std_values"] = sum(len(group) for group in stds)
    report["samples"] = len(_samples(out))
    report["pairs"] = report["samples"] * report["std_values"]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


def _samples(out: Path) -> list[str]:
    import pandas as pd

    frames = [pd.read_parquet(p) for p in (out / "datasets").glob("*.parquet")]
    return sorted(set(pd.concat(frames).image))


def print_table(r: dict) -> None:
    print(
        f"\n`logan tune`, {r['model']} on {r['device']}, torch {r['torch']}, transformers {r['transformers']}, "
        f"{r['cpus']} CPUs; parts={r['parts']}"
    )
    print(
        f"{r['samples']} images (target {r['target']} + reference {r['reference']}) x {r['std_values']} std "
        f"values = {r['pairs']} (image, std) pairs; checkpoint {r['checkpoint_gib']:.1f} GiB on disk, page cache "
        f"{r['page_cache']}\n"
    )
    print("| stage | seconds |\n|---|---:|")
    for name, seconds in r["stages"].items():
        print(f"| {name} | {seconds:.1f} |")
    gpu = f", GPU memory used at most {r['gpu_used_gib']:.1f} GiB" if r["gpu_used_gib"] is not None else ""
    print(
        f"| **end to end (process start to exit)** | **{r['seconds']:.1f}** ({r['seconds'] / 60:.2f} min) |"
    )
    print(
        f"\n{r['pairs'] / r['seconds']:.1f} (image, std) pairs/s end to end; host RSS peak "
        f"{r['host_rss_gib']:.2f} GiB{gpu}."
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
