"""hf-vlm families at their real shape (random weights, built on the GPU from config values written here):
LOGAN's engine next to the plain Hugging Face forwards users write, on the same images, in the same run.

    python benchmarks/bench_families.py --family qwen2-vl-7b --family gemma-3-4b     # GPU (H200: ~5 min each)
    python benchmarks/bench_families.py --tiny                                       # CPU, tiny shapes: tests the script

Rows per family (images of the family's native size: 448 x 448 -> 256 Qwen2-VL tokens, 896 x 896 -> Gemma 3's 256):
- `HF per-image loop`: what users write: per image the processor, then transformers' own forward (batch 1,
  eager, every position's logits), once clean and once per std (`--default-stds` values).
- `HF batched forward`: the same forward on batches of LOGAN's batch size, inputs made beforehand, blocks
  compiled as LOGAN compiles them: the family's own rate, the target LOGAN's img-only run is held to (>= 85 %).
- `LOGAN img`: `run_stds` as `logan tune` runs it (host threads, writers; by default all 32 std values of the
  seed's grid per batch, as tune does), img part, LOGAN's nine divergences, compiled blocks, fused kernel, kept
  prefix where the family allows it.
- `LOGAN default`: parts img / inst / desp / inst_desp with the 18 default metrics (aug_kld: 4 more passes per
  image; `--default-stds` values, 4 by default); descriptions (32 tokens) generated first, timed apart.
- `divergences alone`: the nine divergences on one batch of image rows at the real vocabulary (152k Qwen2,
  262k Gemma 3), against one forward of that batch: where the vocabulary moves the cost.
fwd/s counts forwards (LOGAN: the clean pass + one per std); pairs/s counts (image, std) pairs; % peak is the
executed matrix FLOPs (FlopCounterMode, one forward) against the H200's measured bf16 rate. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # hf_families: the test folders' builders

import hf_families
from bench_engine import (
    BF16_PEAK,
    DEFAULT_STDS,
    INSTRUCTION,
    LOGAN_METRICS,
    Meter,
    logan_run,
    make_images,
    run_config,
)
from hf_families import Shape

from logan.config import DEFAULT_METRICS, ModelConfig
from logan.data.images import load_image
from logan.engine import Engine, EngineSettings, WorkItem
from logan.metrics import fused
from logan.models import hf_vlm
from logan.models.contract import TokenBatch
from logan.perturb import perturb_pixels
from logan.pipeline.describe import describe


@dataclass(frozen=True)
class Family:
    build: str          # hf_families builder
    shape: Shape
    real_vocab: int     # len(tokenizer) of the real checkpoint: the vocabulary LOGAN's softmax runs over
    image_size: int     # native input side: no resize on the host, the real image-token count


# config.json values of Qwen/Qwen2-VL-7B-Instruct and google/gemma-3-4b-it (nothing is downloaded)
QWEN2_VL_7B = Family("qwen2_vl", Shape(
    text={"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
          "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
          "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
    vision={"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16, "mlp_ratio": 4},
    image={"size": {"shortest_edge": 3136, "longest_edge": 12845056}}, weights=False), 151657, 448)
GEMMA3_4B_LAYERS = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)]
GEMMA3_4B = Family("gemma3", Shape(
    text={"vocab_size": 262208, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
          "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
          "sliding_window": 1024, "max_position_embeddings": 131072, "layer_types": GEMMA3_4B_LAYERS,
          "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    vision={"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
            "image_size": 896, "patch_size": 14},
    config={"mm_tokens_per_image": 256}, image={"size": {"height": 896, "width": 896}},
    processor={"image_seq_length": 256}, weights=False), 262145, 896)
FAMILIES = {"qwen2-vl-7b": QWEN2_VL_7B, "gemma-3-4b": GEMMA3_4B}
TINY = {"qwen2-vl-7b": Family("qwen2_vl", Shape(weights=False), 0, 56),  # built as the real ones are
        "gemma-3-4b": Family("gemma3", Shape(weights=False), 0, 64)}


def on_device(model_class, folder, cfg, device, dtype, family, **options):
    """Stands in for hf.load_checked: the model built from the folder's config straight on the device, with
    transformers' random initialisation (no weights on disk, nothing copied through the host)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class.from_config(config, dtype=dtype).eval()
    projection = getattr(getattr(model.model, "multi_modal_projector", None), "mm_input_projection_weight", None)
    if projection is not None:  # Gemma 3 initialises it to zeros: the image would not reach the text model
        torch.nn.init.normal_(projection, std=0.02)
    return model, device


def load(family: Family, work: Path, device: torch.device, dtype: torch.dtype) -> hf_vlm.HFVLM:
    folder = work / family.build
    if not folder.exists():
        hf_families.BUILDERS[family.build](folder, shape=family.shape)
    cfg = ModelConfig(name="hf-vlm", model_path=str(folder), conv_mode="chat_template",
                      vocab_size=family.real_vocab or None)
    if family.shape.weights is False:
        hf_vlm.load_checked = on_device
    return hf_vlm.HFVLM(cfg, device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def processor_inputs(adapter: hf_vlm.HFVLM, images: list[np.ndarray]) -> dict:
    """What users pass their model: the processor's output for these images (uint8) and the chat prompt."""
    prompt = adapter.prompt(INSTRUCTION)
    bos = adapter.tokenizer.bos_token
    out = adapter.processor(images=[[image] for image in images], text=[prompt] * len(images), return_tensors="pt",
                            input_data_format="channels_last", add_special_tokens=not (bos and prompt.startswith(bos)))
    return {k: v.to(adapter.device, adapter.dtype) if v.is_floating_point() else v.to(adapter.device)
            for k, v in out.items()}


def hf_loop(adapter: hf_vlm.HFVLM, items: list[WorkItem], stds: list[float]) -> dict:
    """Per image: the processor, then transformers' forward at batch 1, eager, clean and once per std."""
    forwards = 0
    with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
        for item in items:
            image, key = load_image(item.source)
            for std in [0.0, *stds]:
                noisy = np.clip(np.rint(perturb_pixels(image, std, seed=0, key=key)), 0, 255).astype(np.uint8)
                adapter.model(**processor_inputs(adapter, [noisy]), use_cache=False)
                forwards += 1
    return {"forwards": forwards, "pairs": len(items) * len(stds)}


def hf_batched(adapter: hf_vlm.HFVLM, items: list[WorkItem], batch: int, repeats: int) -> dict:
    """transformers' forward on one batch (inputs made beforehand), repeated: the family's own batched rate."""
    images = [load_image(it.source)[0] for it in (items * (batch // len(items) + 1))[:batch]]
    inputs = processor_inputs(adapter, images)
    with torch.inference_mode():
        adapter.model(**inputs, use_cache=False)  # warm-up (and compilation)
        sync(adapter.device)
        started = time.perf_counter()
        for _ in range(repeats):
            adapter.model(**inputs, use_cache=False)
        sync(adapter.device)
    return {"forwards": batch * repeats, "timed_seconds": time.perf_counter() - started}


def forward_flops(adapter: hf_vlm.HFVLM, item: WorkItem) -> dict[str, float]:
    """Matrix FLOPs of one forward: LOGAN's img-only forward_logits (image rows through the LM head), and
    transformers' forward on the whole prompt (every row through the LM head)."""
    from torch.utils.flop_counter import FlopCounterMode

    encoded = adapter.encode(INSTRUCTION, text_after_image=False, image_size=item.size)
    image = load_image(item.source)[0]
    aten = torch.ops.aten
    attention = {op: _attention_flops for op in (aten._scaled_dot_product_efficient_attention,
                                                 aten._scaled_dot_product_flash_attention,
                                                 aten._scaled_dot_product_cudnn_attention)}
    out = {}
    for name, forward in (
            ("logan", lambda: adapter.forward_logits(TokenBatch.build([encoded], adapter.pad_token_id),
                                                     adapter.image_batch([image.astype(np.float32)]),
                                                     torch.tensor([encoded.image_positions]))),
            ("hf", lambda: adapter.model(**processor_inputs(adapter, [image]), use_cache=False))):
        counter = FlopCounterMode(display=False, custom_mapping=attention)
        with counter, torch.inference_mode(), torch.compiler.set_stance("force_eager"):
            forward()
        out[name] = float(counter.get_total_flops())
    return out


def _attention_flops(query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...],
                     *args: object, out_shape: object = None, **kwargs: object) -> int:
    """Matrix FLOPs of one attention call [B, H, S, D] with grouped keys (fewer key / value heads than query
    heads, enable_gqa): Q K^T and the weighted values for every query head. torch's own formula refuses
    shapes whose head counts differ (Qwen2-VL, Gemma 3)."""
    batch, heads, queries, dim = query_shape
    return 2 * batch * heads * queries * key_shape[-2] * (dim + value_shape[-1])


def divergence_share(adapter: hf_vlm.HFVLM, items: list[WorkItem], batch: int, repeats: int = 5) -> dict:
    """The nine divergences of one img-only batch at the real vocabulary, and one forward of that batch."""
    kernel = fused.resolve("auto", adapter.device, (adapter.dtype, adapter.real_vocab))
    engine = Engine(adapter, EngineSettings(parts=["img"], metrics=LOGAN_METRICS, instruction=INSTRUCTION,
                                            metric_kernel=kernel, batch_size=batch))
    chosen = (items * (batch // len(items) + 1))[:batch]
    layout = engine._layout(chosen, "gen")
    images = adapter.image_batch([load_image(it.source)[0].astype(np.float32) for it in chosen])
    clean = layout.logits(adapter, images)
    noisy = clean + 0.05 * torch.randn_like(clean)
    timings = {}
    for name, step in (("forward", lambda: layout.logits(adapter, images)),
                       ("divergences", lambda: engine._token_values("noise", clean, noisy, layout))):
        step()
        sync(adapter.device)
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        sync(adapter.device)
        timings[name] = (time.perf_counter() - started) / repeats
    return {"kernel": kernel, "rows": layout.n_valid, **timings}


def timeline(trace: Path) -> dict:
    """What the device did during a profiled run (a Chrome trace of torch.profiler): the share of the wall
    time some kernel or copy ran, device time per kernel name, and the longest idle gaps."""
    events = json.loads(trace.read_text())["traceEvents"]
    device = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                    if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e)
    if not device:
        return {}
    busy, gaps, end = 0.0, [], device[0][0]
    per_name: dict[str, float] = {}
    for start, stop, kernel in device:
        per_name[kernel] = per_name.get(kernel, 0.0) + stop - start
        if start > end:
            gaps.append((start - end, start - device[0][0], kernel))
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    span = end - device[0][0]
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:15]
    return {"span_ms": span / 1e3, "busy_ms": busy / 1e3, "busy_share": busy / span,
            "idle_over_1ms": sum(g for g, _, _ in gaps if g > 1e3) / 1e3,
            "longest_gaps": [{"ms": g / 1e3, "at_ms": at / 1e3, "next": k[:60]} for g, at, k in sorted(gaps)[::-1][:10]],
            "kernels_ms": {k[:90]: v / 1e3 for k, v in top}}


def profiled(run, out: Path) -> dict:
    """`run()` under torch.profiler (CPU and CUDA activity); the trace is kept at `out`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
    prof.export_chrome_trace(str(out))
    return {"wall_s": wall, **timeline(out)}


def bench_family(name: str, family: Family, args: argparse.Namespace, work: Path, device: torch.device,
                 dtype: torch.dtype) -> dict:
    meter, rows = Meter(device), {}
    started = time.perf_counter()
    adapter = load(family, work, device, dtype)
    compile = device.type == "cuda"
    adapter.prepare_inference(compile=compile, reuse_prefix=True)
    setup = {"load_seconds": time.perf_counter() - started, "traits": str(adapter.traits),
             "real_vocab": adapter.real_vocab, "lm_head_rows": adapter.model.lm_head.out_features}
    side = family.image_size
    items = make_images(work / f"images_{side}", args.images, (side, side))
    stds = spread(args.stds)
    encoded = adapter.encode(INSTRUCTION, text_after_image=False, image_size=(side, side))
    setup.update(sequence_tokens=len(adapter.encode(INSTRUCTION, image_size=(side, side)).input_ids),
                 img_only_tokens=len(encoded.input_ids), image_tokens=encoded.n_image,
                 flops=forward_flops(adapter, items[0]))

    img = run_config(work / name / "img", ["img"], LOGAN_METRICS, args.batch_size, compile, 0)
    # warm-up on every image at one std: the timed run meets no shape (batch, last partial batch) compiled anew
    logan_run(adapter, items, stds[:1], img, work / name / "img_warm")
    with meter.measure(rows.setdefault("LOGAN img, 9 divergences", {})) as r:
        r.update(logan_run(adapter, items, stds, img, work / name / "img"))
    batch = setup["batch_size"] = img_batch(adapter, items, args, compile)  # probed by the run above: cached
    if args.profile:
        image, key = load_image(items[0].source)
        started = time.perf_counter()
        for i in range(8):
            adapter.image_input(perturb_pixels(image, stds[-1], seed=0, key=key, draw=i))
        setup["host_ms_per_image"] = (time.perf_counter() - started) / 8 * 1e3  # one thread: noise + processor
        few = spread(4)  # one batch x 4 std values: a trace small enough to read
        chosen = items[:batch]
        setup["profile"] = {"images": len(chosen), "stds": len(few), **profiled(
            lambda: logan_run(adapter, chosen, few, img, work / name / "img_profiled"),
            Path(args.profile) / f"{name}_img.trace.json")}
    for label, interval, workers in ([("switch interval 0.5 ms", 5e-4, 0), ("2 host workers", None, 2)]
                                     if args.variants else []):
        default_interval = sys.getswitchinterval()
        sys.setswitchinterval(interval or default_interval)
        try:
            variant = run_config(work / name / label, ["img"], LOGAN_METRICS, args.batch_size, compile, workers)
            with meter.measure(rows.setdefault(f"LOGAN img, {label}", {})) as r:
                r.update(logan_run(adapter, items, stds, variant, work / name / label))
        finally:
            sys.setswitchinterval(default_interval)
    with meter.measure(rows.setdefault(f"HF batched forward, batch {batch}, compiled blocks", {})) as r:
        r.update(hf_batched(adapter, items, batch, args.repeats))
    with meter.measure(rows.setdefault("HF per-image loop, batch 1, eager", {})) as r:
        r.update(hf_loop(adapter, items[: args.loop_images], spread(args.default_stds)))
    if not args.skip_default:
        cfg = run_config(work / name / "default", ["img", "inst", "desp", "inst_desp"], list(DEFAULT_METRICS),
                         args.batch_size, compile, 0)
        with meter.measure(rows.setdefault("describe: 32 tokens", {})) as r:
            sources = {it.sample_id: it.source for it in items}
            described = describe(cfg, adapter, sources, work / name / "descriptions.json")
            r.update(images=len(items))
        items = [replace(it, description=tuple(described[it.sample_id])) for it in items]
        logan_run(adapter, items, stds[:1], cfg, work / name / "default_warm")
        with meter.measure(rows.setdefault(f"LOGAN default parts, 18 metrics (aug_kld), {args.default_stds} stds", {})) as r:
            r.update(logan_run(adapter, items, spread(args.default_stds), cfg, work / name / "default"))
    setup["divergences"] = divergence_share(adapter, items, batch)
    return {"setup": setup, "rows": rows}


def spread(count: int) -> list[float]:
    """`count` std values spread over the seed's grid of 32 (all of them at 32)."""
    return DEFAULT_STDS[:: max(1, len(DEFAULT_STDS) // count)][:count]


def img_batch(adapter: hf_vlm.HFVLM, items: list[WorkItem], args: argparse.Namespace, compile: bool) -> int:
    """The engine's batch size for an img-only run, as run_stds had it (auto: probed once, then cached)."""
    kernel = fused.resolve("auto", adapter.device, (adapter.dtype, adapter.real_vocab))
    return Engine(adapter, EngineSettings(parts=["img"], metrics=LOGAN_METRICS, instruction=INSTRUCTION,
                                          batch_size=args.batch_size, compile=compile,
                                          metric_kernel=kernel)).batch_size(items)


def table(name: str, result: dict) -> str:
    s = result["setup"]
    flops = s["flops"]
    lines = [f"{name}: {s['img_only_tokens']}-token img-only sequences ({s['image_tokens']} image tokens; "
             f"{s['sequence_tokens']} with the prompt's end), {flops['logan'] / 1e12:.2f} TFLOP per LOGAN img "
             f"forward, {flops['hf'] / 1e12:.2f} per transformers forward (every row's logits), vocabulary "
             f"{s['real_vocab']} of {s['lm_head_rows']} rows, batch {s['batch_size']}, loaded in {s['load_seconds']:.0f} s; "
             f"{s['traits']}",
             f"{'run':52s} {'pairs/s':>8s} {'fwd/s':>8s} {'TFLOP/s':>8s} {'% peak':>7s} {'GPU GiB':>8s}"]
    plain = None
    for run, r in result["rows"].items():
        seconds = r.get("timed_seconds", r["seconds"])  # the batched forward: without its warm-up
        fwd = r.get("forwards", 0) / seconds
        pairs = r.get("pairs", float("nan")) / seconds if "pairs" in r else float("nan")
        plain = fwd if run.startswith("HF batched") else plain
        rate = fwd * flops["hf" if run.startswith("HF") else "logan"]
        lines.append(f"{run:52s} {pairs:8.2f} {fwd:8.2f} {rate / 1e12:8.1f} {100 * rate / BF16_PEAK:7.1f} "
                     f"{r.get('gpu_peak_gib', float('nan')):8.1f}" + (f"   ({r['images']} images in {seconds:.1f} s)"
                                                                      if "images" in r else ""))
    logan = result["rows"]["LOGAN img, 9 divergences"]
    if plain:
        lines.append(f"LOGAN img-only forwards / HF batched forwards: {100 * logan['forwards'] / logan['seconds'] / plain:.0f} % "
                     "(target >= 85 %)")
    d = s["divergences"]
    lines.append(f"divergences alone ({d['kernel']}): {1000 * d['divergences']:.1f} ms for {d['rows']} image rows at "
                 f"V = {s['real_vocab']}, one forward of the batch {1000 * d['forward']:.1f} ms: "
                 f"{100 * d['divergences'] / (d['forward'] + d['divergences']):.0f} % of a noisy step")
    if "profile" in s:
        lines.append(f"host work per image, one thread (noise + processor): {s['host_ms_per_image']:.1f} ms")
        lines.append("profiled LOGAN img run: " + json.dumps(s["profile"], indent=1))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", action="append", choices=sorted(FAMILIES), help="default: both")
    p.add_argument("--tiny", action="store_true", help="the tiny test shapes on the CPU: checks the script runs")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--images", type=int, default=None, help="images for LOGAN (default 128 GPU, 6 --tiny)")
    p.add_argument("--loop-images", type=int, default=None, help="images for the per-image loop (default 16, 2 --tiny)")
    p.add_argument("--stds", type=int, default=None, help="std values per image in the img-only runs (default 32, "
                   "the seed's grid, as `logan tune` runs it; 2 --tiny)")
    p.add_argument("--default-stds", type=int, default=None, help="std values per image in the default-parts run "
                   "(default 4, 2 --tiny)")
    p.add_argument("--batch-size", default="auto")
    p.add_argument("--repeats", type=int, default=None, help="batched forwards timed (default 10, 2 --tiny)")
    p.add_argument("--skip-default", action="store_true", help="skip the default parts + metrics run")
    p.add_argument("--json", default=None)
    p.add_argument("--variants", action="store_true", help="also LOGAN img with a 0.5 ms GIL switch interval, "
                   "and with 2 host workers")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also run LOGAN img on one batch x 4 std values under torch.profiler: "
                   "DIR/<family>_img.trace.json and a summary")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    small = args.tiny
    args.images = args.images or (6 if small else 128)
    args.loop_images = args.loop_images or (2 if small else 16)
    args.stds = args.stds or (2 if small else 32)
    args.default_stds = args.default_stds or (2 if small else 4)
    args.repeats = args.repeats or (2 if small else 10)
    if small and args.batch_size == "auto":
        args.batch_size = 4
    import transformers

    report = {"command": " ".join(["bench_families.py", *argv]), "torch": torch.__version__,
              "transformers": transformers.__version__, "device": str(device), "dtype": str(dtype),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "families": {}}
    print(f"{report['gpu'] or 'CPU'}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{str(dtype).replace('torch.', '')}; {args.images} images x {args.stds} std values", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_families_") as tmp:
        for name in args.family or sorted(FAMILIES):
            family = (TINY if small else FAMILIES)[name]
            result = bench_family(name, family, args, Path(tmp), device, dtype)
            report["families"][name] = result
            print(table(name + (" (tiny)" if small else ""), result), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
