"""The batched engine: (image, std) work through a model, per-token metrics reduced on the device.

For each batch of samples the clean pass runs once and is reused for every std of the set; every
noisy pass has exactly the clean pass's batch layout (same rows, same padding), so kernel numerics
cannot masquerade as divergence and std = 0 gives exactly 0. Only per-token scalars leave the device.

A sample may need two token sequences ("variants"): the generated description (`desp`, `inst_desp`)
and the data's own caption (`caption`). `img` and `inst` are read from whichever variant runs (the
text after them cannot change them in a causal model); an `img`-only run stops the sequence after
the image tokens and generates nothing.

Keeping the device busy:

- host work (decoding, noise, preprocessing, pinning) runs in a background thread (`logan.prefetch`)
  that uses a pool of `workers` threads and stays at most `prefetch` steps ahead (memory stays flat
  in the number of images);
- a batch's token layout goes to the device once; every step's per-token values come back with a
  non-blocking copy, and a step's results are handed out only after the next step's passes are
  queued, so the device does not wait for the host's Max-K% and Parquet work;
- metrics are reduced in float32 on the device: LOGAN's divergences in one fused Triton kernel
  (`metric_kernel="triton"`, `metrics/fused.py`), any other per-std metric on row chunks of a fixed
  size (`row_chunk`), optionally through `torch.compile` (a fixed shape: it compiles once); the
  metrics computed once per batch (clean pass, augmentations) run eagerly;
- `batch_size="auto"` takes the largest power of two up to `max_batch_size` whose clean + noisy
  passes and metrics fit in device memory (probed on the longest samples), 16 on the CPU.

Numerics: the clean and the noisy pass of a sample run in the same batch position of the same batch
shape, so they see identical kernels, whatever the dtype. Clean and noisy copies of one sample are
never packed into one forward: in another batch position or batch shape the same clean input gives
slightly different logits (`noise_floor` measures that divergence), which in bf16 / fp16 can exceed
the divergence of the smallest std values. Filling batches with distinct samples gives the same
throughput for any run with more images than one batch.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from logan.augment import N_AUGMENTATIONS, augment
from logan.data.images import image_size, load_image, source_bytes
from logan.errors import LoganError
from logan.metrics import fused, original
from logan.metrics.pair import TokenPair
from logan.metrics.registry import TokenMetric, get_metric
from logan.models.base import EagerFallback, VLMAdapter
from logan.models.contract import PIXELS, Encoded, ImageBatch, ImageInput, TokenBatch, collate, pinned
from logan.perturb import normalized_noise, perturb_pixels
from logan.prefetch import Prefetch

log = logging.getLogger(__name__)

TEXT_PARTS = {"desp": "gen", "inst_desp": "gen", "caption": "cap"}
AUTO_CPU_BATCH = 16  # batch_size="auto" on the CPU
MEMORY_HEADROOM = 0.90  # batch_size="auto": the probe's peak must stay under this share of device memory


@dataclass(frozen=True)
class WorkItem:
    """One image to score, with the token ids that follow the instruction in each variant."""

    sample_id: str
    label: int
    description: tuple[int, ...] | None = None
    caption: tuple[int, ...] | None = None
    size: tuple[int, int] | None = None  # (width, height) of the original image
    image: str | bytes | None = None  # the image file or its bytes (None: sample_id is the file's path)

    @property
    def source(self) -> str | bytes:
        """What `load_image` reads for this sample."""
        return self.sample_id if self.image is None else self.image


@dataclass
class EngineSettings:
    parts: list[str]
    metrics: list[str]
    instruction: str
    batch_size: int | str = 8  # samples per forward, or "auto"
    draws: int = 1
    quantize: str = "none"
    space: str = "pixel"
    seed: int = 0
    row_chunk: int = 2048  # token rows per metric reduction
    compile: bool = False  # torch.compile the per-std metric reduction (PyTorch kernel)
    metric_kernel: str = "torch"  # "triton": LOGAN's divergences in one fused kernel (`metrics.fused`)
    max_batch_size: int = 64  # upper bound for batch_size="auto"
    workers: int = 0  # host threads for decoding / noise / preprocessing (0: up to 8)
    prefetch: int = 2  # host steps prepared ahead of the model (0: inline, no thread)
    compat: str = "logan"  # img_metrics.compat: LOGAN's metric definitions, or the original's


@dataclass
class SampleResult:
    """Per-token values of one sample at one std: {(part, metric): values}, losses, perturbed image."""

    sample_id: str
    label: int
    tokens: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    losses: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    image: np.ndarray | None = None


def variants_for(parts: list[str]) -> dict[str, list[str]]:
    """Which token sequence serves each part: {variant: parts}."""
    wanted = {TEXT_PARTS[p] for p in parts if p in TEXT_PARTS}
    base = "cap" if wanted == {"cap"} else "gen"
    plan: dict[str, list[str]] = {}
    for part in parts:
        plan.setdefault(TEXT_PARTS.get(part, base), []).append(part)
    return plan


def auto_batch_size(trial: Callable[[int], None], start: int) -> int:
    """The first of start, start/2, ..., 1 for which `trial(size)` runs without exhausting device memory."""
    size = max(1, int(start))
    while True:
        try:
            trial(size)
            return size
        except torch.OutOfMemoryError:
            pass  # handled below, once the failed attempt's tensors are released
        if size == 1:
            raise LoganError(
                "out of GPU memory even at inference.batch_size=1; use a smaller dtype "
                "(dtype=bfloat16) or a GPU with more memory."
            )
        log.info("batch size %d does not fit in device memory; trying %d", size, size // 2)
        size //= 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_AUTO_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {work signature: size}


class _Make(Protocol):
    """The float pixels a pass reads, made from an image and its content key (which seeds any noise)."""

    def __call__(self, image: np.ndarray, /, *, key: int) -> np.ndarray: ...


class Engine:
    """Runs clean + noisy passes over batches of samples and yields per-sample per-token results."""

    def __init__(self, model: VLMAdapter, settings: EngineSettings) -> None:
        self.model = model
        self.settings = settings
        specs = [get_metric(name, compat=settings.compat) for name in settings.metrics]
        self.by_need: dict[str, dict[str, TokenMetric]] = {
            need: {m.name: m.fn for m in specs if m.needs == need} for need in ("noise", "clean", "augment")
        }
        self.plan = variants_for(settings.parts)
        if settings.space == "normalized" and model.traits.channel_axis is None:
            raise LoganError(
                "noise.space=normalized adds noise to the colour channels of the model's pixel tensor, "
                "but this family flattens its pixels into patches; use noise.space=pixel."
            )
        groups = {
            "noise": {**self.by_need["noise"], _NLL: _noisy_nll},
            "clean": {**self.by_need["clean"], f"{_NLL}_clean": _clean_nll},
            "augment": self.by_need["augment"],
        }
        # the per-std metrics the fused kernel computes; the rest (and the once-per-batch groups) in PyTorch
        self._fused = (
            [name for name in groups["noise"] if name in fused.OUTPUTS]
            if (settings.metric_kernel == "triton")
            else []
        )
        self._fused_rows = [
            (name, fused.OUTPUTS.index(name)) for name in self._fused
        ]  # rows of the kernel's output
        groups["noise"] = {name: fn for name, fn in groups["noise"].items() if name not in self._fused}
        self._reducers = {
            group: (list(fns), _reducer(list(fns.values()), settings.compile and group == "noise"))
            for group, fns in groups.items()
            if fns
        }
        self.workers = settings.workers or max(1, min(8, os.cpu_count() or 1))
        self.resolved_batch_size: int | None = (
            settings.batch_size if isinstance(settings.batch_size, int) else None
        )

    def encode(self, item: WorkItem, variant: str) -> Encoded:
        parts = self.plan[variant]
        instruction = self.settings.instruction
        size = item.size
        if size is None and not self.model.traits.fixed_image_tokens:
            size = image_size(source_bytes(item.source))
        if variant == "cap":
            return self.model.encode(instruction, list(item.caption or ()), image_size=size)
        needs_text = any(p != "img" for p in parts)
        continuation = list(item.description or ()) if {"desp", "inst_desp"} & set(parts) else None
        return self.model.encode(instruction, continuation, text_after_image=needs_text, image_size=size)

    def batches(self, items: list[WorkItem]) -> list[list[WorkItem]]:
        """The batches `items` run in: longest samples first, `batch_size` per batch (deterministic)."""
        if not items:
            return []
        order = sorted(items, key=lambda it: -max(len(self.encode(it, v).input_ids) for v in self.plan))
        size = self.batch_size(order)
        return [order[i : i + size] for i in range(0, len(order), size)]

    def run(
        self,
        items: list[WorkItem],
        stds: list[float],
        save_images: set[str] | None = None,
        desc: str = "forward",
    ) -> Iterator[tuple[float, list[SampleResult]]]:
        """Yield (std, results of one batch) for every batch and std; samples run longest first."""
        batches = self.batches(items)
        with tqdm(total=len(batches) * len(stds), desc=desc, unit="step", leave=False) as bar:
            yield from self.run_batches(batches, stds, save_images, bar)

    def run_batches(
        self,
        batches: list[list[WorkItem]],
        stds: list[float],
        save_images: set[str] | None = None,
        bar: tqdm | None = None,
    ) -> Iterator[tuple[float, list[SampleResult]]]:
        """`run` over batches made by `batches`: each batch's clean pass once, then every std; `bar` advances
        by one per (batch, std)."""
        if not batches:
            return
        host = self._host_steps(batches, stds, save_images or set())
        pending: _Step | None = None
        with Prefetch(host, self.settings.prefetch) as steps:
            for batch in batches:
                for step in self._run_batch(batch, stds, steps):
                    if pending is not None:  # the next step is queued on the device: finish this one
                        yield pending.result()
                        if bar is not None:
                            bar.update(1)
                    pending = step
        if pending is not None:
            yield pending.result()
            if bar is not None:
                bar.update(1)

    def batch_size(self, order: list[WorkItem]) -> int:
        """The batch size to run with (`auto`: probed once per model and work shape)."""
        if self.resolved_batch_size is not None:
            return self.resolved_batch_size
        s = self.settings
        if s.batch_size != "auto":
            raise LoganError(f"inference.batch_size={s.batch_size} is neither a positive integer nor auto.")
        start = min(s.max_batch_size, len(order))
        if self.model.device.type != "cuda":
            self.resolved_batch_size = min(AUTO_CPU_BATCH, start)
            log.info("inference.batch_size=auto: %d samples per forward (CPU)", self.resolved_batch_size)
            return self.resolved_batch_size
        key = (
            tuple(sorted(self._reducers)),
            tuple(self._fused),
            tuple(sorted(self.plan)),
            start,
            max(len(self.encode(order[0], v).input_ids) for v in self.plan),
        )
        sizes = _AUTO_SIZES.setdefault(self.model, {})
        if key not in sizes:
            sizes[key] = auto_batch_size(lambda b: self._probe(order[:b]), start)
            log.info("inference.batch_size=auto: %d samples per forward", sizes[key])
        self.resolved_batch_size = sizes[key]
        return sizes[key]

    def _probe(self, batch: list[WorkItem]) -> None:
        """One batch's clean pass, a noisy pass and every metric, as a run holds them at its peak."""
        device = self.model.device
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        pixels = self.model.image_batch([load_image(it.source)[0].astype(np.float32) for it in batch])
        layouts = {v: self._layout(batch, v) for v in self.plan}
        clean = {v: layout.logits(self.model, pixels) for v, layout in layouts.items()}
        for variant, layout in layouts.items():
            self._token_values("clean", clean[variant], None, layout)
            self._token_values("noise", clean[variant], layout.logits(self.model, pixels), layout)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
        if peak > MEMORY_HEADROOM * total:
            raise torch.OutOfMemoryError(f"peak {peak / 2**30:.1f} GiB of {total / 2**30:.1f} GiB")

    def _layout(self, batch: list[WorkItem], variant: str) -> _Layout:
        sequences = [self.encode(it, variant) for it in batch]
        return _Layout.build(sequences, self.plan[variant], self.model.pad_token_id, self.settings.compat).to(
            self.model.device
        )

    def _run_batch(self, batch: list[WorkItem], stds: list[float], steps: Prefetch) -> Iterator[_Step]:
        host: _BatchInput = next(steps)
        layouts = {v: self._layout(batch, v) for v in self.plan}
        clean = {v: layout.logits(self.model, host.batch) for v, layout in layouts.items()}
        fixed = self._std_independent(host, layouts, clean)
        draws = self.settings.draws
        for std in stds:
            results = [SampleResult(it.sample_id, it.label) for it in batch]
            sums: dict[str, dict[str, torch.Tensor]] = {v: {} for v in layouts}
            for draw in range(draws):
                noisy: _NoisyInput = next(steps)
                if draw == 0:
                    for res, image in zip(results, noisy.saved):
                        res.image = image
                for variant, layout in layouts.items():
                    values = self._token_values(
                        "noise", clean[variant], layout.logits(self.model, noisy.batch), layout
                    )
                    _accumulate(sums[variant], values)
            mean = {v: {k: t / draws for k, t in values.items()} for v, values in sums.items()}
            yield _Step(std, results, layouts, _ToHost(mean), fixed)

    def _std_independent(
        self, host: _BatchInput, layouts: dict[str, _Layout], clean: dict[str, torch.Tensor]
    ) -> _ToHost:
        """Per-token values that do not depend on the std: clean-pass metrics and the augmentation KLs."""
        fixed = {v: self._token_values("clean", clean[v], None, layout) for v, layout in layouts.items()}
        if "augment" in self._reducers:
            sums: dict[str, dict[str, torch.Tensor]] = {v: {} for v in layouts}
            for images in host.augmented:
                for variant, layout in layouts.items():
                    _accumulate(
                        sums[variant],
                        self._token_values(
                            "augment", clean[variant], layout.logits(self.model, images), layout
                        ),
                    )
            for variant in layouts:
                fixed[variant].update({k: v / N_AUGMENTATIONS for k, v in sums[variant].items()})
        return _ToHost(fixed)

    def _host_steps(
        self, batches: list[list[WorkItem]], stds: list[float], save: set[str]
    ) -> Iterator[_BatchInput | _NoisyInput]:
        """Everything the device needs from the host, in the order the batches consume it."""
        s = self.settings
        with ThreadPoolExecutor(self.workers, thread_name_prefix="logan-host") as pool:
            for batch in batches:
                loaded = list(pool.map(lambda it: load_image(it.source), batch))
                images, keys = [image for image, _ in loaded], [key for _, key in loaded]
                kept = [it.sample_id in save for it in batch]
                clean, _ = self._inputs(pool, images, keys, None, lambda img, key: img.astype(np.float32))
                augmented = [
                    collate(
                        self._inputs(pool, images, keys, None, partial(augment, index=index, seed=s.seed))[0]
                    )
                    for index in range(N_AUGMENTATIONS if "augment" in self._reducers else 0)
                ]
                yield _BatchInput(collate(clean), augmented)
                for std in stds:
                    for draw in range(s.draws):
                        if s.space == "normalized":
                            noisy = list(pool.map(partial(self._normalized, std=std, draw=draw), clean, keys))
                            yield _NoisyInput(collate(noisy), [None] * len(batch))
                            continue
                        inputs, saved = self._inputs(
                            pool,
                            images,
                            keys,
                            kept if draw == 0 else None,
                            partial(perturb_pixels, std=std, seed=s.seed, draw=draw, quantize=s.quantize),
                        )
                        yield _NoisyInput(collate(inputs), saved)

    def _inputs(
        self,
        pool: ThreadPoolExecutor,
        images: list[np.ndarray],
        keys: list[int],
        kept: list[bool] | None,
        make: _Make,
    ) -> tuple[list[ImageInput], list[np.ndarray | None]]:
        """The model's pixel input of make(image, key=key) for each image, made in the pool, and the uint8 copies of
        the `kept` ones."""

        def one(args: tuple[np.ndarray, int, bool]) -> tuple[ImageInput, np.ndarray | None]:
            image, key, keep = args
            floats = make(image, key=key)
            saved = np.clip(np.rint(floats), 0, 255).astype(np.uint8) if keep else None
            return self.model.image_input(floats), saved

        done = list(pool.map(one, zip(images, keys, kept or [False] * len(images))))
        return [inputs for inputs, _ in done], [saved for _, saved in done]

    def _normalized(self, clean: ImageInput, key: int, std: float, draw: int) -> ImageInput:
        """`noise.space=normalized`: noise of `std` grey levels added to the model's pixel tensor."""
        shape = tuple(clean.tensors[PIXELS].shape)
        axis = self.model.traits.channel_axis
        assert axis is not None  # __init__ refuses noise.space=normalized for a family without one
        return clean.plus(
            normalized_noise(
                shape,
                std,
                self.model.image_std,
                seed=self.settings.seed,
                key=key,
                draw=draw,
                channel_axis=axis,
            )
        )

    def _token_values(
        self, group: str, clean: torch.Tensor, other: torch.Tensor | None, layout: _Layout
    ) -> dict[str, torch.Tensor]:
        """Per-token values of a metric group on the valid positions (flattened)."""
        vocab = clean.shape[-1]
        clean_rows = clean.reshape(-1, vocab)
        other_rows = other.reshape(-1, vocab) if other is not None else None
        # (a model spread over several GPUs returns its logits on the last one)
        index, all_targets = (
            t.to(clean.device, non_blocking=True) for t in (layout.index, layout.flat_targets)
        )
        values: dict[str, torch.Tensor] = {}
        if group == "noise" and self._fused:
            assert other_rows is not None  # the noise group always compares with the noisy pass
            out = fused.fused_values(
                clean_rows, other_rows, index, all_targets, original=self.settings.compat == "original"
            )
            values = {name: out[row] for name, row in self._fused_rows}
        if group in self._reducers:
            values.update(self._reduced(group, clean_rows, other_rows, layout, index, all_targets))
        return values

    def _reduced(
        self,
        group: str,
        clean_rows: torch.Tensor,
        other_rows: torch.Tensor | None,
        layout: _Layout,
        index: torch.Tensor,
        all_targets: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """A group's PyTorch metrics on the valid rows, `row_chunk` rows at a time."""
        names, reduce = self._reducers[group]
        chunk, out = self.settings.row_chunk, []
        if layout.n_valid == 0:
            return {name: torch.zeros(0, device=clean_rows.device) for name in names}
        dense = layout.n_valid == clean_rows.shape[0]  # every row is scored (img-only): slices, no gather
        compiled = self.settings.compile and group == "noise"
        for start in range(0, layout.n_valid, chunk):
            targets = all_targets[start : start + chunk]
            n = targets.shape[0]
            if dense and (n == chunk or not compiled):
                rows: slice | torch.Tensor = slice(start, start + n)
            else:
                rows = index[start : start + chunk]
                if compiled and n < chunk:  # one fixed shape: the compiled reduction compiles once
                    rows = torch.nn.functional.pad(rows, (0, chunk - n))
                    targets = torch.nn.functional.pad(targets, (0, chunk - n), value=-1)
            values = reduce(clean_rows[rows], other_rows[rows] if other_rows is not None else None, targets)
            out.append(values[:, :n])
        stacked = torch.cat(out, 1) if len(out) != 1 else out[0]
        return dict(zip(names, stacked))

    def noise_floor(
        self, items: list[WorkItem], metric: str = "max_k_no_norn_kl_div"
    ) -> dict[str, np.ndarray]:
        """Per-token `metric` between clean passes of the same samples in other batch layouts.

        "position": the batch in reverse order (same shape, other rows); "batch_size": each sample
        alone. Zero where the kernels give identical rows. The engine never compares across layouts;
        this is the error it would make if it did (e.g. packing clean and noisy copies in one forward).
        """
        fn = get_metric(metric).fn
        inputs = [self.model.image_input(load_image(it.source)[0].astype(np.float32)) for it in items]
        pixels = collate(inputs)
        reverse = list(range(len(items)))[::-1]
        out: dict[str, list[np.ndarray]] = {"position": [], "batch_size": []}
        for variant in self.plan:
            base = self._layout(items, variant)
            reference = _rows(base, base.logits(self.model, pixels))
            flipped = self._layout([items[i] for i in reverse], variant)
            turned = _rows(flipped, flipped.logits(self.model, collate([inputs[i] for i in reverse])))[::-1]
            alone = [
                _rows(layout, layout.logits(self.model, collate([inputs[i]])))[0]
                for i, layout in enumerate(self._layout([it], variant) for it in items)
            ]
            for name, others in (("position", turned), ("batch_size", alone)):
                for ref, other in zip(reference, others):
                    out[name].append(fn(TokenPair(ref, other)).cpu().numpy())
        return {name: np.concatenate(values) for name, values in out.items()}


_NLL = fused.NOISY_NLL  # internal: per-token NLL of the targets, reported as the raw meta metric `losses`


def _clean_nll(pair: TokenPair) -> torch.Tensor:
    return -pair.target_logp


def _noisy_nll(pair: TokenPair) -> torch.Tensor:
    return -torch.log_softmax(pair.noisy_logits, -1).gather(-1, pair.targets.unsqueeze(-1)).squeeze(-1)


def _reducer(fns: list[TokenMetric], compile: bool) -> Callable[..., torch.Tensor]:
    """(clean rows, other rows or None, targets; -1 = the clean argmax) -> [len(fns), rows] float32."""

    def reduce(clean: torch.Tensor, other: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        targets = torch.where(targets < 0, clean.argmax(-1), targets)
        pair = TokenPair(clean, other, targets)
        return torch.stack([fn(pair).float() for fn in fns])

    return EagerFallback("the metric reduction").compile(reduce, dynamic=False) if compile else reduce


def _accumulate(sums: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        sums[name] = sums[name] + value if name in sums else value


def _rows(layout: _Layout, logits: torch.Tensor) -> list[torch.Tensor]:
    """Each row's logits at its valid positions."""
    return [logits[row, :count] for row, count in enumerate(layout.valid.sum(1).tolist())]


@dataclass
class _BatchInput:
    batch: ImageBatch  # the clean images
    augmented: list[ImageBatch]  # the VL-MIA augmentations (aug_kld only)


@dataclass
class _NoisyInput:
    batch: ImageBatch
    saved: list[np.ndarray | None]  # uint8 noisy images of the samples whose images are saved


class _ToHost:
    """Per-token values on their way to the host: the copy is queued now and waited for in `get()`."""

    def __init__(self, values: dict[str, dict[str, torch.Tensor]]) -> None:
        self._values = {
            v: {k: t.to("cpu", non_blocking=True) for k, t in d.items()} for v, d in values.items()
        }
        self._events = []
        for device in {t.device for d in values.values() for t in d.values() if t.is_cuda}:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            self._events.append(event)
        self._numpy: dict[str, dict[str, np.ndarray]] | None = None

    def get(self) -> dict[str, dict[str, np.ndarray]]:
        if self._numpy is None:
            for event in self._events:
                event.synchronize()
            self._numpy = {v: {k: t.numpy() for k, t in d.items()} for v, d in self._values.items()}
        return self._numpy


@dataclass
class _Step:
    """One (batch, std) whose passes are queued; `result()` waits for its values and splits them up."""

    std: float
    results: list[SampleResult]
    layouts: dict[str, _Layout]
    values: _ToHost
    fixed: _ToHost

    def result(self) -> tuple[float, list[SampleResult]]:
        values, fixed = self.values.get(), self.fixed.get()
        for variant, layout in self.layouts.items():
            layout.scatter(self.results, {**values[variant], **fixed[variant]})
        return self.std, self.results


@dataclass
class _Layout:
    """A right-padded batch of one variant and where each part's rows sit among the gathered rows."""

    sequences: list[Encoded]
    parts: list[str]
    tokens: TokenBatch  # ids and side inputs (on the device), the mask (on the host), the prefix
    positions: torch.Tensor  # [B, S] logit positions gathered (each sample's scored rows, padded)
    valid: torch.Tensor  # [B, S] bool
    targets: torch.Tensor  # [B, S] next-token ids (-1 = argmax of the clean logits)
    part_slices: list[dict[str, slice]]
    index: torch.Tensor  # [n_valid] flat indices of the valid rows of [B * S]
    flat_targets: torch.Tensor  # [n_valid]
    compat: str = "logan"  # img_metrics.compat: whose slicing the parts follow

    @property
    def n_valid(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def build(cls, sequences: list[Encoded], parts: list[str], pad_id: int, compat: str = "logan") -> _Layout:
        tokens = TokenBatch.build(sequences, pad_id, "right")
        spans, slices, target_rows = [], [], []
        for seq in sequences:
            span, target, part_slices = _scored_rows(seq, parts, compat)
            spans.append(span)
            target_rows.append(target)
            slices.append(part_slices)
        width = max(len(s) for s in spans)
        positions = torch.zeros((len(sequences), width), dtype=torch.long)
        valid = torch.zeros((len(sequences), width), dtype=torch.bool)
        targets = torch.full((len(sequences), width), -1, dtype=torch.long)
        for row, (span, target) in enumerate(zip(spans, target_rows)):
            positions[row, : len(span)] = torch.from_numpy(span)
            valid[row, : len(span)] = True
            targets[row, : len(span)] = torch.from_numpy(target)
        index = valid.flatten().nonzero().squeeze(1)
        return cls(
            sequences,
            parts,
            tokens,
            positions,
            valid,
            targets,
            slices,
            index,
            targets.flatten()[index],
            compat,
        )

    def to(self, device: torch.device) -> _Layout:
        """The tensors the device reads, moved there once per batch (the mask and bookkeeping stay)."""
        if device.type == "cpu":
            return self
        positions, index, flat_targets = (
            pinned(t).to(device, non_blocking=True) for t in (self.positions, self.index, self.flat_targets)
        )
        return replace(
            self, tokens=self.tokens.to(device), positions=positions, index=index, flat_targets=flat_targets
        )

    def logits(self, model: VLMAdapter, images: ImageBatch) -> torch.Tensor:
        images.check(self.tokens)
        return model.forward_logits(self.tokens, images, self.positions)

    def scatter(self, results: list[SampleResult], per_metric: dict[str, np.ndarray]) -> None:
        """Split flattened per-token values back into per-sample, per-part arrays (NLLs become losses);
        under the original's convention its metrics that loop over rows drop each part's last row."""
        counts = self.valid.sum(1).tolist()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        clean_nll, noisy_nll = per_metric.pop(f"{_NLL}_clean"), per_metric.pop(_NLL)
        scored = original.loop_rows if self.compat == "original" else lambda name, rows: rows
        for row, res in enumerate(results):
            lo = offsets[row]
            for part, sl in self.part_slices[row].items():
                span = slice(lo + sl.start, lo + sl.stop)
                for name, values in per_metric.items():
                    res.tokens[(part, name)] = values[scored(name, span)].astype(np.float32)
                rows = scored(_NLL, span)
                n = rows.stop - rows.start
                res.losses[part] = (
                    float(clean_nll[rows].mean()) if n else float("nan"),
                    float(noisy_nll[rows].mean()) if n else float("nan"),
                    n,
                )


def _scored_rows(
    seq: Encoded, parts: list[str], compat: str
) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
    """The rows one sequence gathers: (positions, targets; -1 = the clean argmax), each (position, target)
    once, in position order, and each part's slice of them.

    A position that two parts score against different targets is gathered twice: under LOGAN's slicing the
    last image row is scored against its own clean argmax for `img` and predicts the first instruction
    token for `inst`, so a part's values never depend on which other parts run (one more row per sample,
    in the same forward pass; an img-only run gathers exactly the image rows)."""
    keyed = {}
    for part in parts:
        positions, targets = seq.part_positions(part, compat)
        targets = np.full(len(positions), -1, dtype=np.int64) if targets is None else targets
        keyed[part] = (positions.astype(np.int64) << 32) | (targets + 1)  # sorts by position, then target
    keys = np.concatenate(list(keyed.values()))
    if len(keyed) > 1:  # one part's keys are already sorted and unique
        keys = np.unique(keys)
    slices = {}
    for part, part_keys in keyed.items():
        start = int(np.searchsorted(keys, part_keys[0])) if len(part_keys) else 0
        slices[part] = slice(start, start + len(part_keys))
    return keys >> 32, (keys & 0xFFFFFFFF) - 1, slices
