"""Scoring throughput: the original's loop next to LOGAN's engine, on the same images and std values.

    python benchmarks/bench_engine.py                                   # CPU, the tiny LLaVA (about a minute)
    python benchmarks/bench_engine.py --model llava-7b --device cuda    # GPU, a random-weight LLaVA-1.5-7B
    python benchmarks/bench_engine.py --rss 100,2000                    # host RSS of `logan tune`, CPU

(a) `original`: the original's shape of work: batches of 8, a 32-token description generated per
image, then per std one forward of prompt + image + description with the LM head on every position,
and the per-token KL computed on the host. (b) `logan`: `run_stds` (the engine and the result
writers, as `logan tune` runs them) on the img part with LOGAN's nine divergences, eager and with
`inference.compile`. Also: the plain forward alone (forwards/s), the divergence noise floor of the
model's dtype (clean vs clean in other batch positions) against the divergence of each std of the
default grid, and (`--default-config`) the seed's default parts and metrics with their description
generation, extrapolated to a 300 + 300-image, 32-std tuning run.

`llava-7b` is LLaVA-1.5-7B's exact shape (CLIP ViT-L/14-336 + Llama-7B: hidden 4096, 32 layers, 32
heads, intermediate 11008, vocabulary 32064) with random weights, built on the device from configs
(nothing is downloaded), and the tiny word-level tokenizer of `logan.models.tiny`. TFLOP/s counts the
executed matrix products (torch's FlopCounterMode on one forward). Prints a table; `--json FILE`
saves every number. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from PIL import Image

from logan.config import ModelConfig, RunConfig
from logan.data.images import load_image, sample_id
from logan.engine import Engine, EngineSettings, WorkItem
from logan.metrics import fused
from logan.metrics.registry import all_metrics
from logan.models.base import compile_repeated_blocks
from logan.models.contract import ImageBatch, TokenBatch, collate
from logan.models.llava_hf import LlavaHF
from logan.models.preprocess import ImageTransform
from logan.models.tiny import TinySpec, _tokenizer, build_tiny_llava
from logan.perturb import perturb_pixels
from logan.pipeline.common import run_stds

INSTRUCTION = "Describe this image concisely."
LOGAN_METRICS = sorted(n for n, s in all_metrics().items() if s.needs == "noise")
DEFAULT_STDS = [0.005, 0.0078, 0.012, 0.019, 0.03, 0.046, 0.072, 0.11, 0.18, 0.28, 0.43, 0.67, 1.1, 1.6, 2.6,
                4.0, 6.2, 9.8, 15.0, 24.0, 37.0, 58.0, 91.0, 140.0, 220.0, 340.0, 540.0, 840.0, 1300.0, 2100.0,
                3200.0, 5000.0]
BF16_PEAK = 790e12  # dense bf16 matrix rate measured on the H200 (KINDS.md)


# ----------------------------------------------------------------------------------------- models

def build_model(kind: str, device: torch.device, dtype: torch.dtype, work: Path) -> LlavaHF:
    if kind == "tiny":
        folder = build_tiny_llava(work / "tiny", [INSTRUCTION], TinySpec(image_size=64, patch_size=8, hidden=64))
        return LlavaHF(ModelConfig(model_path=str(folder)), device, dtype)
    return random_llava_7b(device, dtype, work)


LLAVA_7B = {"hidden": 4096, "layers": 32, "heads": 32, "intermediate": 11008, "vocab": 32064, "real_vocab": 32000,
            "image_size": 336, "patch": 14, "vision_hidden": 1024, "vision_layers": 24, "vision_heads": 16,
            "vision_intermediate": 4096}


def random_llava_7b(device: torch.device, dtype: torch.dtype, work: Path, shape: dict = LLAVA_7B) -> LlavaHF:
    """LLaVA-1.5-7B's shape with random weights, on the device, behind the llava-hf adapter."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from logan.models.base import TEMPLATES

    tok = _tokenizer([INSTRUCTION, *(t for pair in TEMPLATES.values() for t in pair)])
    image_token = tok.convert_tokens_to_ids("<image>")
    n_image = (shape["image_size"] // shape["patch"]) ** 2
    config = LlavaConfig(
        text_config={"model_type": "llama", "vocab_size": shape["vocab"], "hidden_size": shape["hidden"],
                     "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
                     "num_key_value_heads": shape["heads"], "intermediate_size": shape["intermediate"],
                     "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "pad_token_id": tok.pad_token_id,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "tie_word_embeddings": False},
        vision_config={"model_type": "clip_vision_model", "image_size": shape["image_size"],
                       "patch_size": shape["patch"], "hidden_size": shape["vision_hidden"],
                       "num_hidden_layers": shape["vision_layers"], "num_attention_heads": shape["vision_heads"],
                       "intermediate_size": shape["vision_intermediate"], "projection_dim": 768,
                       "hidden_act": "quick_gelu"},
        image_token_index=image_token, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", image_seq_length=n_image, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    adapter = LlavaHF.__new__(LlavaHF)
    adapter.model, adapter.tokenizer, adapter.device, adapter.dtype = model, tok, device, dtype
    side = shape["image_size"]
    adapter.conv_mode, adapter.transform, adapter.path = "llava_v1", ImageTransform(side, crop_hw=(side, side)), work
    adapter.image_token_id, adapter.n_image_tokens, adapter.real_vocab = image_token, n_image, shape["real_vocab"]
    adapter.bos_token_id, adapter.eos_token_id, adapter.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return adapter


def make_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[WorkItem]:
    """n smooth random JPEGs of (width, height), as WorkItems keyed by content as a run keys them
    (alternating labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    items = []
    for i in range(n):
        path = folder / f"img_{i:05d}.jpg"
        if not path.exists():
            coarse = rng.uniform(0, 255, (height // 32 + 1, width // 32 + 1, 3)).astype(np.uint8)
            img = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
            noisy = np.clip(np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (height, width, 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(path, quality=90)
        items.append(WorkItem(sample_id(path.read_bytes()), i % 2, size=size, image=str(path)))
    return items


# -------------------------------------------------------------------------------------- measuring

class Meter:
    """Wall time, peak device memory and peak host RSS (sampled) of a block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.process = psutil.Process()

    @contextmanager
    def measure(self, record: dict):
        stop = threading.Event()
        peak = [self.process.memory_info().rss]

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], self.process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield record
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            record["seconds"] = time.perf_counter() - started
            stop.set()
            sampler.join()
            record["host_rss_gib"] = max(peak[0], self.process.memory_info().rss) / 2**30
            if self.device.type == "cuda":
                record["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30


def forward_flops(adapter: LlavaHF, tokens: TokenBatch, pixels: ImageBatch, positions: torch.Tensor) -> float:
    """Matrix-product FLOPs of one forward_logits of a single sequence."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        adapter.forward_logits(tokens, pixels, positions)
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------ (a)

def original_loop(adapter: LlavaHF, items: list[WorkItem], stds: list[float], gen_tokens: int) -> dict:
    """The original's shape: batch 8, generate, one full forward per std, KL on the host."""
    model, batch_size, pairs, forwards = adapter.model, 8, 0, 0
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        arrays = [load_image(it.source) for it in batch]
        prompts = [adapter.encode(INSTRUCTION, None, image_size=it.size) for it in batch]
        clean = adapter.image_batch([a.astype(np.float32) for a, _ in arrays])
        described = adapter.generate(TokenBatch.build(prompts, adapter.pad_token_id, "left"), clean, gen_tokens)
        full = [adapter.encode(INSTRUCTION, d or [adapter.eos_token_id], image_size=it.size)
                for d, it in zip(described, batch)]
        tokens = TokenBatch.build(full, adapter.pad_token_id, "right")
        mask = tokens.attention_mask

        def logits(pixels: ImageBatch, tokens: TokenBatch = tokens) -> torch.Tensor:
            with torch.inference_mode():
                out = model(input_ids=tokens.input_ids.to(adapter.device),
                            attention_mask=tokens.attention_mask.to(adapter.device),
                            **pixels.to(adapter.device, adapter.dtype)).logits
            return out[..., : adapter.real_vocab].float().cpu()

        reference = torch.log_softmax(logits(clean), -1)
        forwards += len(batch)
        for std in stds:
            noisy = [perturb_pixels(a, std, seed=0, key=key) for a, key in arrays]
            logq = torch.log_softmax(logits(adapter.image_batch(noisy)), -1)
            kl = (reference.exp() * (reference - logq)).sum(-1) * mask  # per token, on the host
            kl.numpy()
            pairs += len(batch)
            forwards += len(batch)
    return {"pairs": pairs, "forwards": forwards}


# ------------------------------------------------------------------------------------------ (b)

def run_config(out: Path, parts: list[str], metrics: list[str], batch_size, compile: bool, workers: int,
               metric_kernel: str = "auto") -> RunConfig:
    return RunConfig.from_dict({
        "path": {"output_dir": str(out)},
        "img_metrics": {"parts": parts, "metrics_to_use": metrics,
                        "get_proc_meta_metrics": [m + "_tkn_vals" for m in metrics],
                        "get_raw_meta_metrics": ["losses"], "get_proc_meta_examples": None,
                        "get_raw_meta_examples": None, "get_raw_images": 0},
        "prompt": {"text": INSTRUCTION},
        "inference": {"batch_size": batch_size, "compile": compile, "workers": workers, "metric_kernel": metric_kernel},
    })


def logan_run(adapter: LlavaHF, items: list[WorkItem], stds: list[float], cfg: RunConfig, out: Path) -> dict:
    """run_stds as `logan tune` calls it (writers included); one std set."""
    target = pd.DataFrame({"sample_id": [it.sample_id for it in items], "image": [it.source for it in items],
                           "label": [it.label for it in items]})
    run_stds(cfg, adapter, items, stds, out, target, desc="bench")
    return {"pairs": len(items) * len(stds), "forwards": len(items) * (len(stds) + 1)}


def plain_forward(adapter: LlavaHF, items: list[WorkItem], batch: int, repeats: int) -> dict:
    """forward_logits alone on one img-only batch (no metrics, no host work): forwards/s."""
    layout, pixels = _img_batch(adapter, items, batch)
    return _timed_forwards(adapter, layout, pixels, repeats)


def _img_batch(adapter: LlavaHF, items: list[WorkItem], batch: int) -> tuple:
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=["max_k_no_norn_kl_div"], instruction=INSTRUCTION))
    chosen = (items * (batch // len(items) + 1))[:batch]
    pixels = adapter.image_batch([load_image(it.source)[0].astype(np.float32) for it in chosen])
    return engine._layout(chosen, "gen"), pixels


def _timed_forwards(adapter: LlavaHF, layout, pixels: ImageBatch, repeats: int) -> dict:
    layout.logits(adapter, pixels)  # warm-up (and compilation)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        layout.logits(adapter, pixels)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    return {"forwards": layout.tokens.input_ids.shape[0] * repeats, "seconds": time.perf_counter() - started}


def prefix_reuse(adapter: LlavaHF, items: list[WorkItem], batch: int, repeats: int) -> dict[str, float]:
    """Compiled img-only forwards without, then with inference.reuse_prefix: forwards/s, and how far the
    logits move (the prefix's keys come from a batch-1 eager pass instead of each batch's own)."""
    layout, pixels = _img_batch(adapter, items, batch)
    adapter.prepare_inference(compile=True)
    full = _timed_forwards(adapter, layout, pixels, repeats)
    want = layout.logits(adapter, pixels).float()
    adapter.prepare_inference(reuse_prefix=True)
    kept = _timed_forwards(adapter, layout, pixels, repeats)
    got = layout.logits(adapter, pixels).float()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="none")
    return {"prefix tokens": len(layout.tokens.prefix), "sequence tokens": layout.tokens.input_ids.shape[1],
            "full fwd/s": full["forwards"] / full["seconds"], "kept fwd/s": kept["forwards"] / kept["seconds"],
            "max |logit change|": float((got - want).abs().max()), "mean KL per token": float(kl.sum(-1).mean()),
            "max KL per token": float(kl.sum(-1).max())}


def metrics_only(adapter: LlavaHF, compiled: bool, rows: int, repeats: int = 3, row_chunk: int = 2048,
                 metric_kernel: str = "torch") -> dict:
    """LOGAN's nine divergences alone on `rows` random token rows (one img-only step of `rows` / 576 images):
    the fused Triton kernel, or PyTorch `row_chunk` rows at a time."""
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=LOGAN_METRICS, instruction=INSTRUCTION,
                                            compile=compiled, row_chunk=row_chunk, metric_kernel=metric_kernel))
    generator = torch.Generator(adapter.device).manual_seed(0)
    clean = torch.randn(rows, adapter.real_vocab, generator=generator, device=adapter.device).mul(3).to(adapter.dtype)
    noisy = (clean.float() + 0.05 * torch.randn(clean.shape, generator=generator, device=adapter.device)).to(adapter.dtype)
    seq = adapter.encode(INSTRUCTION, None, text_after_image=False)
    per = adapter.n_image_tokens
    layout = engine._layout([WorkItem("x", 0)] * (rows // per), "gen")
    assert layout.n_valid == rows and seq.n_image == per
    engine._token_values("noise", clean.view(rows // per, per, -1), noisy.view(rows // per, per, -1), layout)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        engine._token_values("noise", clean.view(rows // per, per, -1), noisy.view(rows // per, per, -1), layout)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    return {"pairs": rows // per, "seconds": seconds}


def compile_shapes(adapter: LlavaHF, items: list[WorkItem], modes: list[str], full: int = 64,
                   last: int = 24) -> dict[str, dict]:
    """The compiled blocks with static shapes (a new batch size recompiles them) and/or dynamic ones:
    first call at `full` samples, forwards/s there, first call at `last` samples (a run's last batch).
    For compile times without a warm cache, time one mode per process with fresh TORCHINDUCTOR_CACHE_DIR
    and TRITON_CACHE_DIR."""
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=["max_k_no_norn_kl_div"], instruction=INSTRUCTION))
    one = adapter.image_input(load_image(items[0].source)[0].astype(np.float32))
    out = {}

    def sync() -> None:
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()

    for name, dynamic in (("static", None), ("dynamic", True)):
        if name not in modes:
            continue
        torch._dynamo.reset()
        compile_repeated_blocks(adapter.model, dynamic=dynamic)
        row = {}
        for size in (full, last):
            layout = engine._layout([items[0]] * size, "gen")
            batch = collate([one] * size)
            sync()
            started = time.perf_counter()
            layout.logits(adapter, batch)
            sync()
            row[f"first call at {size} (s)"] = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(3):
                layout.logits(adapter, batch)
            sync()
            row[f"fwd/s at {size}"] = 3 * size / (time.perf_counter() - started)
        out[name] = row
    return out


def kernel_configs(adapter: LlavaHF, rows: int, repeats: int = 3) -> dict[tuple[int, int], float]:
    """Seconds per call of the fused kernel on `rows` random rows, per (BLOCK, warps)."""
    generator = torch.Generator(adapter.device).manual_seed(0)
    clean = torch.randn(rows, adapter.real_vocab, generator=generator, device=adapter.device).mul(3).to(adapter.dtype)
    noisy = (clean.float() + 0.05 * torch.randn(clean.shape, generator=generator, device=adapter.device)).to(adapter.dtype)
    index, targets = torch.arange(rows, device=adapter.device), torch.full((rows,), -1, device=adapter.device)
    out = {}
    for block, warps in ((256, 2), (512, 2), (512, 4), (1024, 4), (1024, 8), (2048, 8)):
        fused.fused_values(clean, noisy, index, targets, block, warps)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            fused.fused_values(clean, noisy, index, targets, block, warps)
        torch.cuda.synchronize()
        out[(block, warps)] = (time.perf_counter() - started) / repeats
    return out


def kernel_agreement(adapter: LlavaHF, rows: int = 4096) -> dict[float, dict[str, float]]:
    """Largest relative difference of the fused kernel's values from PyTorch's (eager, float32) per metric,
    on random rows at three noise scales."""
    out = {}
    per = adapter.n_image_tokens
    for scale in (0.01, 0.3, 5.0):
        generator = torch.Generator(adapter.device).manual_seed(1)
        clean = torch.randn(rows, adapter.real_vocab, generator=generator, device=adapter.device).mul(3)
        noisy = clean + scale * torch.randn(clean.shape, generator=generator, device=adapter.device)
        values = {}
        for kernel in ("torch", "triton"):
            engine = Engine(adapter, EngineSettings(parts=["img"], metrics=LOGAN_METRICS, instruction=INSTRUCTION,
                                                    metric_kernel=kernel))
            layout = engine._layout([WorkItem("x", 0)] * (rows // per), "gen")
            shape = (rows // per, per, -1)
            values[kernel] = engine._token_values("noise", clean[: layout.n_valid].view(shape).to(adapter.dtype),
                                                  noisy[: layout.n_valid].view(shape).to(adapter.dtype), layout)
        floor = {"_nll": 1e-4}  # an NLL near 0 is a cancellation in either float32 implementation
        out[scale] = {name: float(((values["triton"][name] - ref).abs() / ref.abs().clamp(min=floor.get(name, 1e-30)))
                                  .max()) for name, ref in values["torch"].items()}
    return out


# ------------------------------------------------------------------------------------- numerics

def numerics(adapter: LlavaHF, items: list[WorkItem], stds: list[float]) -> dict:
    """Noise floor of the dtype (clean vs clean in other batch layouts) against each std's divergence."""
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=["max_k_no_norn_kl_div"],
                                            instruction=INSTRUCTION, batch_size=len(items)))
    floor = engine.noise_floor(items)
    per_std = {}
    for std, results in engine.run(items, stds):
        values = np.concatenate([r.tokens[("img", "max_k_no_norn_kl_div")] for r in results])
        per_std[std] = {"median": float(np.median(values)), "mean": float(values.mean())}
    worst = max(float(v.max()) for v in floor.values())
    resolved = [s for s in stds if per_std[s]["median"] > 100 * worst]
    return {"floor": {k: {"max": float(v.max()), "median": float(np.median(v))} for k, v in floor.items()},
            "per_std": per_std, "smallest_std_100x_floor": resolved[0] if resolved else None}


# ----------------------------------------------------------------------------------------- RSS

def rss_scan(counts: list[int], work: Path) -> dict:
    """Peak RSS of `logan tune` (tiny LLaVA, img, 2 std values, CPU) for each number of images."""
    import subprocess

    from logan.data.synthetic import make_split, vocabulary

    largest = max(counts)
    lists = make_split(work / "data", {"members": largest // 2 + 1, "nonmembers": largest // 2 + 1}, size=96, seed=0)
    captions = [e["caption"] for p in lists.values() for e in json.loads(p.read_text())]
    model = build_tiny_llava(work / "tiny", vocabulary() + captions, TinySpec(image_size=32, hidden=32), seed=0)
    out = {}
    for n in counts:
        cmd = ["logan", "tune", "target_model=llava-hf", f"target_model.model_path={model}",
               f"data.member_dataset={lists['members']}", f"data.nonmember_dataset={lists['nonmembers']}",
               f"data.target_set_size={n}", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]",
               "noise.std_sets=[[1.0,4.0]]", "img_metrics.parts=[img]", "device=cpu", "inference.batch_size=auto",
               f"path.output_dir={work / f'rss_{n}'}"]
        started = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        if child.returncode:
            raise RuntimeError(child.stderr.read()[-2000:])
        out[n] = {"peak_rss_gib": peak / 2**30, "seconds": time.perf_counter() - started}
    return out


# ---------------------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny", "llava-7b"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--images", type=int, default=None, help="images for LOGAN (default 32 CPU, 128 GPU)")
    p.add_argument("--original-images", type=int, default=16, help="images for the original's loop")
    p.add_argument("--stds", type=int, default=8, help="std values (the first of the default grid's every 4th)")
    p.add_argument("--batch-size", default="auto")
    p.add_argument("--image-size", default="640x480")
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--modes", default=None, help="engine modes to time: eager, compile (default: eager on the "
                   "CPU, eager,compile on CUDA)")
    p.add_argument("--skip-original", action="store_true")
    p.add_argument("--default-config", action="store_true", help="also time the seed's default parts + metrics")
    p.add_argument("--numerics", default=None, help="dtypes (e.g. bfloat16,float16,float32): noise floor vs "
                   "per-std divergence in each")
    p.add_argument("--default-images", type=int, default=64, help="images for --default-config")
    p.add_argument("--rss", default=None, help="comma-separated image counts: peak RSS of `logan tune` on the CPU")
    p.add_argument("--row-chunks", default=None, help="comma-separated row chunks: time the nine divergences "
                   "(compiled on CUDA) at each, then stop")
    p.add_argument("--compile-shapes", default=None, help="static,dynamic: compile time and speed of the "
                   "blocks with static shapes (a new batch size recompiles) and with dynamic ones")
    p.add_argument("--prefix", action="store_true", help="compiled img-only forwards at batch 64 without and "
                   "with inference.reuse_prefix: speed and how far the logits move")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    report: dict = {"command": " ".join([Path(sys.argv[0]).name, *argv]), "torch": torch.__version__,
                    "python": platform.python_version(), "cpus": os.cpu_count()}
    import transformers

    report["transformers"] = transformers.__version__

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")

    work = Path(tempfile.mkdtemp(prefix="logan-bench-"))
    if args.rss:
        report["rss"] = rss_scan([int(n) for n in args.rss.split(",")], work)
        save()
        print_rss(report)
        return 0

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report["dtype"] = str(dtype).replace("torch.", "")
    meter = Meter(device)
    started = time.perf_counter()
    adapter = build_model(args.model, device, dtype, work)
    report["build_seconds"] = time.perf_counter() - started
    if args.compile_shapes:
        items = make_images(work / "images", 1, (640, 480))
        for name, row in compile_shapes(adapter, items, args.compile_shapes.split(",")).items():
            print(f"{name:<18} " + ", ".join(f"{key} {value:.1f}" for key, value in row.items()))
        return 0
    if args.prefix:
        items = make_images(work / "images", 8, (640, 480))
        result = prefix_reuse(adapter, items, 64 if device.type == "cuda" else 8, 8 if device.type == "cuda" else 2)
        print("\n".join(f"{name:<20} {value:.4g}" for name, value in result.items()))
        return 0
    if args.row_chunks:
        rows_per_step = adapter.n_image_tokens * (64 if device.type == "cuda" else 16)
        for chunk in (int(c) for c in args.row_chunks.split(",")):
            r = metrics_only(adapter, device.type == "cuda", rows_per_step, row_chunk=chunk)
            print(f"PyTorch, row_chunk {chunk:5d}: {r['pairs'] / r['seconds']:8.1f} pairs/s "
                  f"({1000 * r['seconds'] / r['pairs']:.2f} ms per (image, std) pair)")
        if fused.available(device):
            r = metrics_only(adapter, False, rows_per_step, metric_kernel="triton")
            print(f"fused Triton kernel:      {r['pairs'] / r['seconds']:8.1f} pairs/s "
                  f"({1000 * r['seconds'] / r['pairs']:.2f} ms per (image, std) pair)")
            for (block, warps), seconds in kernel_configs(adapter, rows_per_step).items():
                print(f"  BLOCK {block:5d}, {warps} warps: {1000 * seconds / (rows_per_step // adapter.n_image_tokens):.3f} "
                      "ms per pair")
            for scale, worst in kernel_agreement(adapter).items():
                print(f"noise {scale:g}: largest relative difference, fused vs PyTorch: "
                      + ", ".join(f"{name.replace('max_k_', '')} {value:.1e}" for name, value in worst.items()))
        return 0
    width, height = (int(v) for v in args.image_size.split("x"))
    n_images = args.images or (128 if device.type == "cuda" else 32)
    items = make_images(work / "images", max(n_images, args.original_images), (width, height))
    stds = DEFAULT_STDS[::max(1, len(DEFAULT_STDS) // args.stds)][: args.stds]
    report.update(model=args.model, images=n_images, stds=stds, image_size=args.image_size)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)

    one = adapter.encode(INSTRUCTION, None, text_after_image=False)
    pixels = adapter.image_batch([load_image(items[0].source)[0].astype(np.float32)])
    report["sequence_tokens"] = len(one.input_ids)
    report["flops_per_forward"] = forward_flops(adapter, TokenBatch.build([one], adapter.pad_token_id), pixels,
                                                torch.arange(one.image_start, one.image_end)[None])
    rows: dict[str, dict] = {}
    report["rows"] = rows

    if not args.skip_original:
        with meter.measure(rows.setdefault("(a) original loop: batch 8, generate, host KL", {})) as r:
            r.update(original_loop(adapter, items[: args.original_images], stds, args.gen_tokens))
        save()
    modes = (args.modes or ("eager,compile" if device.type == "cuda" else "eager")).split(",")
    for mode in [m for m in modes if m]:
        compiled = mode == "compile"
        if compiled:
            adapter.prepare_inference(compile=True)
        warm, first, timed = {}, work / f"warm_{mode}", work / f"run_{mode}"
        with meter.measure(warm):  # compilation, batch_size=auto's probe
            logan_run(adapter, items[:n_images], stds[:1],
                      run_config(first, ["img"], LOGAN_METRICS, batch_size, compiled, args.workers), first)
        report[f"warmup_{mode}_seconds"] = warm["seconds"]
        name = f"(b) LOGAN engine, img, 9 metrics, {mode}, {fused.resolve('auto', device)} metrics"
        with meter.measure(rows.setdefault(name, {})) as r:
            r.update(logan_run(adapter, items[:n_images], stds,
                               run_config(timed, ["img"], LOGAN_METRICS, batch_size, compiled, args.workers), timed))
        rows[name]["batch_size"] = _resolved_batch(adapter, batch_size)
        plain = plain_forward(adapter, items, 64 if device.type == "cuda" else 16, 4 if device.type == "cuda" else 2)
        rows[f"plain forward_logits, img, {mode}"] = plain
        rows[f"9 metrics alone (one step), PyTorch {mode}"] = metrics_only(
            adapter, compiled, adapter.n_image_tokens * (64 if device.type == "cuda" else 16))
        if fused.available(device):
            rows["9 metrics alone (one step), fused Triton kernel"] = metrics_only(
                adapter, False, adapter.n_image_tokens * 64, metric_kernel="triton")
        save()
    if args.numerics:  # blocks run eagerly here: changing the dtype recompiles nothing
        report["numerics"] = {}
        with torch.compiler.set_stance("force_eager"):
            for name in args.numerics.split(","):
                adapter.model.to(getattr(torch, name))
                adapter.dtype = getattr(torch, name)
                report["numerics"][name] = numerics(adapter, items[:8], DEFAULT_STDS)
                save()
        adapter.model.to(dtype)
        adapter.dtype = dtype
    if args.default_config:
        default_config(adapter, items[:args.default_images], stds[:4], meter, rows, work, batch_size,
                       "compile" in modes)
        save()
    print_table(report)
    return 0


def _resolved_batch(adapter: LlavaHF, batch_size) -> int | str:
    from logan.engine import _AUTO_SIZES

    if batch_size != "auto":
        return batch_size
    sizes = _AUTO_SIZES.get(adapter, {})
    return list(sizes.values())[-1] if sizes else (16 if adapter.device.type == "cpu" else "auto")


def default_config(adapter: LlavaHF, items: list[WorkItem], stds: list[float], meter: Meter, rows: dict, work: Path,
                   batch_size, compiled: bool) -> None:
    """The seed's default parts and metric list: descriptions generated once (batch 8), then run_stds."""
    from dataclasses import replace as dc_replace

    metrics = ["max_k_no_norn_kl_div", "max_k_renyi_05_kl_div", "max_k_renyi_1_kl_div", "max_k_renyi_2_kl_div",
               "max_k_renyi_inf_kl_div", "max_k_renyi_divergence_025", "max_k_renyi_divergence_05",
               "max_k_renyi_divergence_2", "max_k_renyi_divergence_4", "ppl", "mink", "mink_plus_plus",
               "max_prob_gap", "max_k_renyi_05_entro", "max_k_renyi_1_entro", "max_k_renyi_inf_entro",
               "mod_renyi_1_entro", "aug_kld"]
    with meter.measure(rows.setdefault("describe: 32 tokens, generation batch 8", {})) as r:
        described = []
        for start in range(0, len(items), 8):
            batch = items[start:start + 8]
            prompts = [adapter.encode(INSTRUCTION, None, image_size=it.size) for it in batch]
            pixels = adapter.image_batch([load_image(it.source)[0].astype(np.float32) for it in batch])
            described += adapter.generate(TokenBatch.build(prompts, adapter.pad_token_id, "left"), pixels, 32)
        r.update(images=len(items))
    items = [dc_replace(it, description=tuple(d)) for it, d in zip(items, described)]
    cfg = run_config(work / "default", ["img", "inst", "desp", "inst_desp"], metrics, batch_size, compiled, 0)
    logan_run(adapter, items, stds[:1], cfg, work / "default_warm")
    with meter.measure(rows.setdefault("(b) LOGAN, default parts + 18 metrics (aug_kld)", {})) as r:
        r.update(logan_run(adapter, items, stds, cfg, work / "default"))
        r["forwards"] = len(items) * (len(stds) + 1 + 4)  # clean + noisy + aug_kld's four augmentations


def print_table(report: dict) -> None:
    flops = report["flops_per_forward"]
    lines = [(f"{report['model']} on {report['device']} ({report['dtype']}), torch {report['torch']}, "
              f"transformers {report['transformers']}, {report['cpus']} CPUs; {report['sequence_tokens']}-token "
              f"img-only sequences, {flops / 1e12:.2f} TFLOP per forward; {report['images']} images x "
              f"{len(report['stds'])} std values ({report['image_size']} JPEG)"),
             f"{'run':<58} {'pairs/s':>8} {'fwd/s':>7} {'TFLOP/s':>8} {'% peak':>6} {'GPU GiB':>8} {'RSS GiB':>8}"]
    for name, r in report["rows"].items():
        seconds = r["seconds"]
        pairs = r.get("pairs")
        tflops = flops * r.get("forwards", 0) / seconds / 1e12
        lines.append(f"{name:<58} {pairs / seconds if pairs else float('nan'):8.2f} "
                     f"{r.get('forwards', 0) / seconds:7.2f} {tflops:8.1f} {100 * tflops * 1e12 / BF16_PEAK:6.1f} "
                     f"{r.get('gpu_peak_gib', float('nan')):8.1f} {r.get('host_rss_gib', float('nan')):8.2f}")
    rows = report["rows"]
    original = next((r for k, r in rows.items() if k.startswith("(a)")), None)
    best = max((r["pairs"] / r["seconds"] for k, r in rows.items() if k.startswith("(b) LOGAN engine")), default=None)
    if original and best:
        lines.append(f"LOGAN / original: {best / (original['pairs'] / original['seconds']):.1f}x")
    if best:
        minutes = 600 * 32 / best / 60
        lines.append(f"img-only 300 + 300 images x 32 std at the best rate: {minutes:.1f} min of scoring")
    default = rows.get("(b) LOGAN, default parts + 18 metrics (aug_kld)")
    describe = rows.get("describe: 32 tokens, generation batch 8")
    if default and describe:
        per_forward = default["seconds"] / default["forwards"]
        estimate = 600 * describe["seconds"] / describe["images"] + 600 * (32 + 1 + 4) * per_forward
        lines.append(f"default parts + metrics, 300 + 300 images x 32 std (estimate): {estimate / 60:.1f} min "
                     f"(describe {600 * describe['seconds'] / describe['images'] / 60:.1f} min)")
    for key in [k for k in report if k.startswith("warmup_")]:
        lines.append(f"{key}: {report[key]:.1f} s")
    for dtype, num in report.get("numerics", {}).items():
        floor = ", ".join(f"{k}: max {v['max']:.1e}, median {v['median']:.1e}" for k, v in num["floor"].items())
        lines.append(f"{dtype}: noise floor (per-token KL, clean vs clean in another layout): {floor}")
        lines.append(f"{dtype}: median per-token KL per std: " + ", ".join(
            f"{s:g}: {v['median']:.1e}" for s, v in num["per_std"].items()))
        lines.append(f"{dtype}: smallest std whose median KL exceeds 100x the floor's max: "
                     f"{num['smallest_std_100x_floor']}")
        exact = report["numerics"].get("float32")
        if exact is not None and dtype != "float32":
            stds = list(num["per_std"])
            off = [s for s in stds if not 0.5 <= num["per_std"][s]["median"] / max(
                exact["per_std"][s]["median"], 1e-30) <= 2.0]
            agree = next((s for s in stds if all(o < s for o in off)), None)
            lines.append(f"{dtype}: median KL within 2x of float32's from std {agree} up (below: rounding, "
                         "not noise, sets the divergence)")
    print("\n".join(lines))


def print_rss(report: dict) -> None:
    print(f"peak RSS of `logan tune` (tiny LLaVA, img, 2 std values, CPU, torch {report['torch']})")
    for n, r in report["rss"].items():
        print(f"{n:>6} images: {r['peak_rss_gib']:.3f} GiB  ({r['seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
