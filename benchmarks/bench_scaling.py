"""Multi-GPU scaling of LOGAN's tuning work on a random-weight LLaVA-1.5-7B-shaped model.

Each process builds the same random-weight model (same seed) on its own GPU, takes its shard of the
images with LOGAN's own sharding rule (`logan.distributed.shard_of`) and runs the engine over every
std; rank 0 gathers the per-sample scores. Run once on one GPU and once under torchrun, then compare:

    python benchmarks/bench_scaling.py --images 512 --save one.json
    torchrun --nproc-per-node=2 benchmarks/bench_scaling.py --images 512 --save two.json
    python benchmarks/bench_scaling.py --compare one.json two.json       # prints the table

The end-to-end CLI path under torchrun (shard folders, merge, select) is tested on CPU with gloo in
tests/test_distributed.py; this script measures the GPU throughput of the same sharded work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import INSTRUCTION, make_images, random_llava_7b  # noqa: E402

from logan.distributed import shard_of  # noqa: E402
from logan.engine import Engine, EngineSettings  # noqa: E402

STDS = [0.5, 1.1, 2.6, 6.2, 15.0, 37.0, 91.0, 220.0]
METRICS = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2"]


def run(args: argparse.Namespace) -> None:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("nccl")
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    work = Path(tempfile.gettempdir()) / "logan_scaling"
    if rank == 0:
        make_images(work / "images", args.images, (480, 360))  # written once, then read by every rank
    if world > 1:
        torch.distributed.barrier()
    items = make_images(work / "images", args.images, (480, 360))
    mine = [it for it in items if shard_of(it.sample_id, world) == rank]
    adapter = random_llava_7b(device, torch.bfloat16, work)
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=METRICS, instruction=INSTRUCTION,
                                            batch_size=args.batch_size))
    for _ in engine.run(mine[: args.batch_size], STDS[:1]):  # warm-up (kernels, allocator)
        pass
    torch.cuda.synchronize()
    if world > 1:
        torch.distributed.barrier()
    started = time.perf_counter()
    scores: dict[str, float] = {}
    for std, results in engine.run(mine, STDS):
        for res in results:
            for (_, metric), values in res.tokens.items():
                if metric in METRICS:
                    scores[f"{res.sample_id}|{std}|{metric}"] = float(values.mean())
    torch.cuda.synchronize()
    if world > 1:
        torch.distributed.barrier()
    seconds = time.perf_counter() - started
    gathered = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(gathered, scores)
    else:
        gathered = [scores]
    if rank == 0:
        merged = {k: v for part in gathered for k, v in part.items()}
        pairs = args.images * len(STDS)
        Path(args.save).write_text(json.dumps({
            "gpus": world, "images": args.images, "stds": len(STDS), "seconds": seconds, "pairs_per_s": pairs / seconds,
            "gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "scores": merged}))
        print(f"{world} GPU(s): {pairs} (image, std) pairs in {seconds:.1f} s = {pairs / seconds:.1f} pairs/s")
    if world > 1:
        torch.distributed.destroy_process_group()


def compare(one_path: str, many_path: str) -> None:
    one, many = json.loads(Path(one_path).read_text()), json.loads(Path(many_path).read_text())
    keys = sorted(one["scores"])
    same_keys = keys == sorted(many["scores"])
    a = np.array([one["scores"][k] for k in keys])
    b = np.array([many["scores"].get(k, np.nan) for k in keys])
    rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))
    speedup = many["pairs_per_s"] / one["pairs_per_s"]
    print(f"model: random-weight LLaVA-1.5-7B shape, bf16, img part, {one['images']} images x {one['stds']} stds")
    print(f"GPU: {one['gpu']}, torch {one['torch']}")
    print("| GPUs | seconds | (image, std) pairs/s | speed-up | efficiency |")
    print("|---|---|---|---|---|")
    print(f"| 1 | {one['seconds']:.1f} | {one['pairs_per_s']:.1f} | 1.00 | 1.00 |")
    print(f"| {many['gpus']} | {many['seconds']:.1f} | {many['pairs_per_s']:.1f} | {speedup:.2f} | "
          f"{speedup / many['gpus']:.2f} |")
    print(f"same samples x stds: {same_keys}; max relative difference of per-sample scores: {rel:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--save", default="scaling.json")
    parser.add_argument("--compare", nargs=2)
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
