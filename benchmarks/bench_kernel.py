"""The fused divergence kernel alone (`metrics/fused.py`): time per batch of token rows at a vocabulary size,
per launch configuration (BLOCK, warps), optionally next to another version of the kernel's file.

    python benchmarks/bench_kernel.py                                   # GPU: 16 384 rows at 32 000, 151 657, 262 145
    python benchmarks/bench_kernel.py --against old_fused_kernel.py     # A/B against another kernel file
    python benchmarks/bench_kernel.py --configs 512x4,256x4,512x8

Rows are bf16 logits like a model's (a few likely tokens, a long tail; noisy = clean + 0.05 N(0, 1)).
ms = mean of --repeats launches after one warm-up; G entries/s = rows x vocabulary / time; `max rel` = the
largest relative difference from the first kernel listed (the current one at its default configuration).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from functools import partial

import torch

from logan.metrics import fused, fused_kernel


def logits(rows: int, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    clean = torch.randn(rows, vocab, generator=g, device=device) * 4
    clean[:, :50] += 12
    noisy = clean + 0.05 * torch.randn(rows, vocab, generator=g, device=device)
    return clean.bfloat16(), noisy.bfloat16()


def launch(module, clean, noisy, rows, targets, block: int, warps: int) -> torch.Tensor:
    out = torch.empty((len(fused.OUTPUTS), rows.shape[0]), dtype=torch.float32, device=clean.device)
    module.divergences_kernel[(rows.shape[0],)](clean, noisy, clean.stride(0), noisy.stride(0), rows, targets, out,
                                                rows.shape[0], clean.shape[1], BLOCK=block, ORIGINAL=False,
                                                num_warps=warps)
    return out


def timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--vocab", default="32000,151657,262145")
    p.add_argument("--configs", default=",".join(dict.fromkeys([f"{fused.BLOCK}x{fused.WARPS}", "512x4", "256x2",
                                                                  "512x8", "1024x8"])),
                   help="BLOCKxWARPS launch shapes; the first is the reference of `max rel` (default: the current one first)")
    p.add_argument("--against", default=None, help="another fused_kernel.py to time beside the current one")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device("cuda")
    kernels = {"current": fused_kernel}
    if args.against:
        spec = importlib.util.spec_from_file_location("other_kernel", args.against)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        kernels["other"] = other
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    print(f"{torch.cuda.get_device_name(device)}, {args.rows} rows, bf16")
    print(f"{'vocab':>7s} {'kernel':8s} {'config':>8s} {'ms':>8s} {'G entries/s':>12s} {'max rel':>9s}")
    for vocab in (int(v) for v in args.vocab.split(",")):
        clean, noisy = logits(args.rows, vocab, device)
        rows = torch.arange(args.rows, device=device)
        targets = torch.full((args.rows,), -1, device=device, dtype=torch.long)
        first = None
        for name, module in kernels.items():
            for block, warps in configs:
                run = partial(launch, module, clean, noisy, rows, targets, block, warps)
                seconds = timed(run, args.repeats)
                out = run()
                first = out if first is None else first
                rel = ((out - first).abs() / first.abs().clamp(min=1e-30)).max().item()
                print(f"{vocab:7d} {name:8s} {f'{block}x{warps}':>8s} {1e3 * seconds:8.2f} "
                      f"{args.rows * vocab / seconds / 1e9:12.1f} {rel:9.1e}", flush=True)
        del clean, noisy
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
